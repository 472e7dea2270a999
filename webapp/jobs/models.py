"""Training jobs. The state names are a contract (DESIGN.md, "Job states")."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from webapp.claims import Claimed
from webapp.dispatch import Sent


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


KEEP_FILE = "KEEP"  # trainer.checkpoint.KEEP_FILE: a checkpoint marked to keep

# A paused job holds its slot: it resumes by itself when the quota is raised.
ACTIVE_STATUSES = frozenset(
    {Status.QUEUED, Status.COLLECTING, Status.TRAINING, Status.EVALUATING, Status.PAUSED}
)
FINAL_STATUSES = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})


class JobQuerySet(models.QuerySet["Job"]):
    def active(self) -> JobQuerySet:
        return self.filter(status__in=ACTIVE_STATUSES)


class Job(Claimed, Sent):
    """A training job. A worker holds it by its claim (``webapp.claims``), renewed with
    each heartbeat; its task's delivery is tracked by ``webapp.dispatch``."""

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="jobs")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    name = models.CharField(max_length=200)
    method = models.CharField(max_length=10, choices=Method.choices)
    prompt_set = models.ForeignKey(
        "promptsets.PromptSet", null=True, on_delete=models.SET_NULL, related_name="jobs"
    )
    teacher = models.ForeignKey(
        "teachers.TeacherEndpoint",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="jobs",
    )
    student = models.CharField(
        max_length=500,
        help_text="The reference given at launch: a hub id, checkpoint:ID or model:NAME.",
    )
    student_path = models.CharField(
        max_length=1000,
        blank=True,
        help_text="What the student resolved to at launch (the hub id, or a checkpoint's or "
        "a registered model's directory): what the trainer loads; the worker checks it again.",
    )
    student_bytes = models.PositiveBigIntegerField(
        default=0,
        help_text="A hub student's size at launch (its model files), charged to the team's "
        "storage once per model; 0 for a checkpoint or a registered model.",
    )
    pair = models.ForeignKey(
        "self",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The other job of a GAD + SeqKD pair.",
    )
    cancel_requested = models.BooleanField(default=False)
    guard = models.CharField(
        max_length=10,
        default="off",
        choices=[("off", "Off"), ("pause", "Pause the job"), ("stop", "Stop the job")],
        help_text="What to do when a health alarm fires (the health guard).",
    )
    teacher_batch = models.BooleanField(
        default=False,
        help_text="Collect missing teacher answers through the Batch API (half the price, "
        "within 24 hours); what the batch does not answer is asked online.",
    )
    # The batch submitted for this job and not yet read: a restarted worker polls it.
    teacher_batch_id = models.CharField(max_length=100, blank=True)
    guard_paused = models.BooleanField(
        default=False, help_text="Paused by the health guard: waits for a person, not for quota."
    )
    # Keep only the last N checkpoints (plus the final and marked ones): the team's
    # default at launch, unless the config set keep_last or keep_weights. None: keep all.
    retain_checkpoints = models.PositiveSmallIntegerField(null=True, blank=True)
    final_checkpoint = models.ForeignKey(
        "Checkpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    log_tail = models.TextField(blank=True, help_text="The last lines of the trainer's log.")
    # How often a worker took it (a lost worker's job is taken again, up to a limit).
    attempts = models.PositiveSmallIntegerField(default=0)
    gpu_seconds = models.FloatField(default=0.0, help_text="GPU time used so far, all attempts.")
    gpu_seconds_charged = models.FloatField(
        default=0.0, help_text="The part of gpu_seconds already charged to the team."
    )
    eta_seconds = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(
        max_length=20, choices=Status.choices, default=Status.QUEUED, db_index=True
    )
    config = models.JSONField(default=dict, help_text="The resolved trainer config.")
    # The job's shape, stored at launch (its configs' nodes and gpus_per_node say the same).
    gpus = models.PositiveSmallIntegerField(default=1, help_text="GPUs per node; 0: the CPU.")
    nodes = models.PositiveSmallIntegerField(default=1, help_text="Nodes the job spans.")
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


class Checkpoint(models.Model):
    """A complete checkpoint directory on the shared data volume (registered by the worker)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="checkpoints")
    step = models.PositiveIntegerField()
    stage = models.CharField(max_length=20, blank=True)
    path = models.CharField(max_length=1000, help_text="The student's HF directory.")
    size_bytes = models.PositiveBigIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["job", "step"]
        constraints = [
            models.UniqueConstraint(fields=["job", "step"], name="one_checkpoint_per_step")
        ]

    def __str__(self) -> str:
        return f"{self.job.name} step {self.step}"


class JobEvent(models.Model):
    """What happened to a job, oldest first (``GET /api/v1/jobs/{id}/events``, like
    OpenAI's fine-tuning events): launched, started, each stage, checkpoints saved and
    deleted, paused, queued again, resumed, and how it ended."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="events")
    created_at = models.DateTimeField(default=timezone.now)
    kind = models.CharField(max_length=40, help_text="e.g. job.started, checkpoint.saved.")
    level = models.CharField(max_length=8, default="info", help_text="info, warning or error.")
    message = models.TextField()
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["id"]
        indexes = [models.Index(fields=["job", "id"])]

    def __str__(self) -> str:
        return f"{self.kind} of job {self.job_id}: {self.message[:60]}"


class Download(models.Model):
    """Who downloaded which checkpoint, when: model weights leaving the site are audited.
    The record outlives the checkpoint (deleted to free storage): its label says what it
    was."""

    checkpoint = models.ForeignKey(
        Checkpoint, null=True, blank=True, on_delete=models.SET_NULL, related_name="downloads"
    )
    label = models.CharField(max_length=300, blank=True, help_text="Team, job and step.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    # One file of it (GET /api/v1/checkpoints/{id}/files/{path}); empty: the whole tar.
    path = models.CharField(max_length=1000, blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        checkpoint = self.label or str(self.checkpoint)
        what = f"{self.path} of {checkpoint}" if self.path else checkpoint
        return f"{self.user} downloaded {what} at {self.created_at:%Y-%m-%d %H:%M}"


class MetricPoint(models.Model):
    """One optimizer step's metrics (names from GAD.md), as the trainer wrote them."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="metric_points")
    step = models.PositiveIntegerField()
    stage = models.CharField(max_length=20)
    time = models.FloatField(null=True)
    values = models.JSONField()

    class Meta:
        ordering = ["job", "step"]
        constraints = [
            models.UniqueConstraint(fields=["job", "step", "stage"], name="one_point_per_step")
        ]

    def __str__(self) -> str:
        return f"job {self.job_id} step {self.step}"


class Sample(models.Model):
    """A prompt with the teacher answer and the student's samples at one step."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="samples")
    step = models.PositiveIntegerField()
    stage = models.CharField(max_length=20, blank=True)
    data = models.JSONField()

    class Meta:
        ordering = ["job", "step", "id"]
        indexes = [models.Index(fields=["job", "step"])]

    def __str__(self) -> str:
        return f"sample of job {self.job_id} at step {self.step}"


class JobAnswer(models.Model):
    """The final checkpoint's answer to one held-out prompt (the job's evaluating stage)."""

    job = models.ForeignKey(Job, on_delete=models.CASCADE, related_name="answers")
    prompt = models.ForeignKey("promptsets.Prompt", on_delete=models.CASCADE, related_name="+")
    response = models.TextField()
    finish_reason = models.CharField(max_length=20, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["job", "prompt"], name="one_answer_per_prompt")
        ]

    def __str__(self) -> str:
        return f"answer of job {self.job_id} to prompt {self.prompt_id}"
