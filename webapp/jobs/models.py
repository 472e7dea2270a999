"""Training jobs. The state names are a contract (DESIGN.md, "Job states")."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Method(models.TextChoices):
    GAD = "gad", "GAD"
    SEQKD = "seqkd", "SeqKD"


class Status(models.TextChoices):
    QUEUED = "queued", "Queued"
    COLLECTING = "collecting", "Collecting teacher answers"
    TRAINING = "training", "Training"
    EVALUATING = "evaluating", "Evaluating"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"
    PAUSED = "paused", "Paused (quota exhausted)"


# A paused job holds its slot: it resumes by itself when the quota is raised.
ACTIVE_STATUSES = frozenset(
    {Status.QUEUED, Status.COLLECTING, Status.TRAINING, Status.EVALUATING, Status.PAUSED}
)
FINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})


class JobQuerySet(models.QuerySet["Job"]):
    def active(self) -> JobQuerySet:
        return self.filter(status__in=ACTIVE_STATUSES)


class Job(models.Model):
    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    name = models.CharField(max_length=200)
    method = models.CharField(max_length=10, choices=Method.choices)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    config = models.JSONField(default=dict, help_text="The resolved trainer config.")
    gpus = models.PositiveSmallIntegerField(default=1)
    stage = models.CharField(max_length=20, blank=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    objects = JobQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "status"])]

    def __str__(self) -> str:
        return f"{self.name} ({self.method}, {self.status})"
