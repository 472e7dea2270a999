"""LLM-judge runs of an evaluation and checkpoint sweeps (an evaluation of a job's
checkpoints, judged automatically)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from webapp.claims import Claimed
from webapp.dispatch import Sent
from webapp.evaluation.models import Evaluation


class JudgeRun(Claimed, Sent):
    """One LLM-as-judge run over an evaluation's answers (trainer.judge), by a team's
    teacher endpoint; its report (scores with 95% CIs, plus the no-judge diagnostics)
    is kept as JSON. The running task's claim is renewed while it runs: a second
    delivery leaves a held run alone; the sweep re-queues a run whose claim lapsed."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Judging"
        SUCCEEDED = "succeeded", "Done"
        FAILED = "failed", "Failed"
        # Stopped before passing its token cap; continuing raises the cap.
        PAUSED = "paused", "Paused at the token cap"

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="judge_runs")
    judge = models.ForeignKey(
        "teachers.TeacherEndpoint",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    judge_name = models.CharField(max_length=200, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED)
    forecast = models.JSONField(default=dict, blank=True)
    report = models.JSONField(null=True, blank=True)
    # By every delivery of the run's task (a worker lost, a paused run continued).
    tokens_used = models.PositiveBigIntegerField(default=0)
    token_cap = models.PositiveBigIntegerField(
        null=True,
        blank=True,
        help_text="The run pauses rather than spend more tokens than this; blank: "
        "1.5 times the forecast.",
    )
    # While running: {"phase": references | verdicts | retries, "done": n, "total": n}.
    progress = models.JSONField(default=dict, blank=True)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"judge run {self.pk} of evaluation {self.evaluation_id}"


class Sweep(models.Model):
    """A checkpoint sweep: every k-th checkpoint of a job (and the student before
    distillation, as step 0) answers a small test set and is judged, to pick the
    checkpoint with the best judge score whose answers stay under a length bound.

    The sweep is an evaluation (its systems, answers and judge runs) plus this row.
    """

    evaluation = models.OneToOneField(Evaluation, on_delete=models.CASCADE, related_name="sweep")
    job = models.ForeignKey("jobs.Job", on_delete=models.CASCADE, related_name="sweeps")
    every = models.PositiveIntegerField(
        default=1, help_text="Every k-th checkpoint (and the last)."
    )
    length_bound = models.FloatField(
        null=True,
        blank=True,
        help_text="Longest acceptable mean answer length, in words; blank: no bound.",
    )

    class Meta:
        ordering = ["-evaluation__created_at"]

    def __str__(self) -> str:
        return f"sweep of job {self.job_id}"
