"""Evaluations: the test prompts, the systems compared on them, and their answers.

An ``Evaluation`` fixes the test prompts and the systems to compare; a worker
generates every system's answer to every prompt (``SystemAnswer``). What is done with
the answers lives in the apps beside this one: blind pairwise campaigns in
``webapp.annotation``, LLM-judge runs and checkpoint sweeps in ``webapp.judging``.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from trainer.config import MAX_RESPONSE_TOKENS
from webapp.claims import Claimed
from webapp.dispatch import Sent


class EvalStatus(models.TextChoices):
    GENERATING = "generating", "Generating answers"
    READY = "ready", "Ready"
    FAILED = "failed", "Some answers failed"


class PromptChoice(models.TextChoices):
    TEST = "test", "The held-out test split"
    ALL = "all", "All prompts (a set uploaded as a test set)"


class Evaluation(Claimed, Sent):
    """The generation of its systems' answers is held by one worker's claim (a second
    delivery of the task waits until it lapses); its task's delivery is tracked by
    ``webapp.dispatch``."""

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="evaluations")
    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    prompt_set = models.ForeignKey(
        "promptsets.PromptSet", null=True, on_delete=models.SET_NULL, related_name="evaluations"
    )
    prompt_choice = models.CharField(
        max_length=5, choices=PromptChoice.choices, default=PromptChoice.TEST
    )
    # The prompts are fixed at creation: a later change of the split does not move them.
    prompts = models.ManyToManyField("promptsets.Prompt", related_name="+")
    num_prompts = models.PositiveIntegerField(default=0)
    max_new_tokens = models.PositiveIntegerField(default=MAX_RESPONSE_TOKENS)
    temperature = models.FloatField(
        null=True, blank=True, help_text="None: greedy decoding (the paper's evaluation)."
    )
    status = models.CharField(
        max_length=12, choices=EvalStatus.choices, default=EvalStatus.GENERATING
    )
    auto_judge = models.ForeignKey(
        "teachers.TeacherEndpoint",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="Judged by this endpoint as soon as every system has its answers.",
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def greedy(self) -> bool:
        return self.temperature is None


class SystemKind(models.TextChoices):
    TEACHER = "teacher", "Teacher endpoint"
    CHECKPOINT = "checkpoint", "Job checkpoint"
    BASE = "base", "Student before distillation"
    PATH = "path", "Model path"


class SystemStatus(models.TextChoices):
    PENDING = "pending", "Waiting"
    RUNNING = "running", "Generating"
    DONE = "done", "Done"
    FAILED = "failed", "Failed"


class System(models.Model):
    """One model (or the teacher) whose answers are compared. Members see its name;
    annotators never do."""

    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="systems")
    name = models.CharField(max_length=300)
    kind = models.CharField(max_length=12, choices=SystemKind.choices)
    method = models.CharField(
        max_length=10, blank=True, help_text="gad or seqkd for a job's checkpoint."
    )
    teacher = models.ForeignKey(
        "teachers.TeacherEndpoint",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    checkpoint = models.ForeignKey(
        "jobs.Checkpoint", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    path = models.CharField(
        max_length=1000, blank=True, help_text="The model directory or hub id (not for a teacher)."
    )
    position = models.PositiveSmallIntegerField(default=0)
    status = models.CharField(
        max_length=10, choices=SystemStatus.choices, default=SystemStatus.PENDING
    )
    num_answers = models.PositiveIntegerField(default=0)
    progress = models.PositiveIntegerField(default=0, help_text="Answers of the running step.")
    error = models.TextField(blank=True)

    class Meta:
        ordering = ["evaluation", "position", "id"]

    def __str__(self) -> str:
        return self.name


class SystemAnswer(models.Model):
    system = models.ForeignKey(System, on_delete=models.CASCADE, related_name="answers")
    prompt = models.ForeignKey("promptsets.Prompt", on_delete=models.CASCADE, related_name="+")
    response = models.TextField()
    finish_reason = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["system", "prompt"], name="one_answer_per_system")
        ]

    def __str__(self) -> str:
        return f"answer of system {self.system_id} to prompt {self.prompt_id}"
