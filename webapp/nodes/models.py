"""The worker nodes' shared state: which GPU of which node is held, and by what.

Neutral ground between the apps whose work holds GPUs (jobs, evaluations): they do not
import each other through it.
"""

from __future__ import annotations

from django.db import models
from django.db.models import Q


class GpuLease(models.Model):
    """A GPU of a worker node held by a job, or by an evaluation generating a model's
    answers; expires unless its worker keeps renewing it.

    Leases live in the database (not in the worker's memory) so that a worker that dies
    frees its GPUs after ``expires_at`` and two workers on one node never share one.
    """

    node = models.CharField(max_length=200)
    gpu_index = models.PositiveSmallIntegerField()
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.CASCADE, related_name="gpu_leases"
    )
    evaluation = models.ForeignKey(
        "evaluation.Evaluation",
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="gpu_leases",
    )
    expires_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["node", "gpu_index"], name="one_lease_per_gpu"),
            models.CheckConstraint(
                condition=Q(job__isnull=False, evaluation__isnull=True)
                | Q(job__isnull=True, evaluation__isnull=False),
                name="gpu_lease_has_one_holder",
            ),
        ]

    def __str__(self) -> str:
        holder = f"job {self.job_id}" if self.job_id else f"evaluation {self.evaluation_id}"
        return f"GPU {self.gpu_index} of {self.node} for {holder}"


class WorkerNode(models.Model):
    """A running Celery worker, as it reports itself every few seconds: the node it runs
    on, the queues it consumes, the GPUs it may lease. Pages read it to say at once when
    no live worker serves what they enqueue, and launches to refuse a job that no node
    could ever run."""

    name = models.CharField(max_length=200, unique=True, help_text="Celery's worker name.")
    node = models.CharField(max_length=200, help_text="The host (GPU leases are per node).")
    queues = models.JSONField(default=list)
    gpus = models.JSONField(default=list, help_text="GPU indices it may lease.")
    started_at = models.DateTimeField()
    last_seen = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["node", "name"]

    def __str__(self) -> str:
        return self.name
