"""Human evaluation: systems and their answers, blind pairwise campaigns, votes.

An ``Evaluation`` fixes the test prompts and the systems to compare; a worker
generates every system's answer to every prompt (``SystemAnswer``). A ``Campaign``
compares pairs of those systems: each (prompt, pair) is an ``Item`` with a random,
recorded left/right order, given to k people (``Assignment``); each assignment gets at
most one live ``Vote``. Annotators only ever see opaque keys: no system, job or model
name reaches them.
"""

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


def new_key() -> str:
    """An opaque id for URLs and exports (~128 bits: not guessable, not enumerable)."""
    return secrets.token_urlsafe(16)


class EvalStatus(models.TextChoices):
    GENERATING = "generating", "Generating answers"
    READY = "ready", "Ready"
    FAILED = "failed", "Some answers failed"


class PromptChoice(models.TextChoices):
    TEST = "test", "The held-out test split"
    ALL = "all", "All prompts (a set uploaded as a test set)"


class Evaluation(models.Model):
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
    max_new_tokens = models.PositiveIntegerField(default=1536)
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
    # The generation task's claim: a second delivery of the task waits until it lapses.
    claimed_by = models.CharField(max_length=200, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # The task could not be sent (broker unreachable); the sweep sends it again.
    unsent = models.BooleanField(default=False)

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


class Campaign(models.Model):
    evaluation = models.ForeignKey(Evaluation, on_delete=models.CASCADE, related_name="campaigns")
    title = models.CharField(
        max_length=200, help_text="Shown to annotators: it must not name the systems."
    )
    overlap = models.PositiveSmallIntegerField(default=2, help_text="Annotators per item.")
    seed = models.BigIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(
        null=True, blank=True, help_text="A closed campaign takes no more votes."
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title

    @property
    def is_closed(self) -> bool:
        return self.closed_at is not None


class Pair(models.Model):
    """Two systems compared; results are stated from ``system_a``'s side (a wins / loses)."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="pairs")
    system_a = models.ForeignKey(System, on_delete=models.CASCADE, related_name="+")
    system_b = models.ForeignKey(System, on_delete=models.CASCADE, related_name="+")

    class Meta:
        ordering = ["campaign", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["campaign", "system_a", "system_b"], name="one_pair_per_campaign"
            ),
            models.CheckConstraint(
                condition=~Q(system_a=models.F("system_b")), name="pair_of_two_systems"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.system_a} vs {self.system_b}"


class Item(models.Model):
    """A prompt answered by both systems of a pair, with the order shown on screen."""

    key = models.CharField(max_length=32, unique=True, default=new_key, editable=False)
    pair = models.ForeignKey(Pair, on_delete=models.CASCADE, related_name="items")
    prompt = models.ForeignKey("promptsets.Prompt", on_delete=models.CASCADE, related_name="+")
    a_on_left = models.BooleanField(help_text="Drawn at random when the campaign was created.")

    class Meta:
        ordering = ["pair", "id"]
        constraints = [
            models.UniqueConstraint(fields=["pair", "prompt"], name="one_item_per_pair_prompt")
        ]

    def __str__(self) -> str:
        return self.key


class Assignment(models.Model):
    """One item for one person. ``key`` is the only id of it their pages carry."""

    key = models.CharField(max_length=32, unique=True, default=new_key, editable=False)
    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="assignments")
    item = models.ForeignKey(Item, on_delete=models.CASCADE, related_name="assignments")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    position = models.PositiveIntegerField(help_text="Order in this person's queue (shuffled).")
    skipped_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["campaign", "annotator", "position"]
        constraints = [
            # Nobody gets the same item twice.
            models.UniqueConstraint(fields=["item", "annotator"], name="one_assignment_per_person")
        ]
        indexes = [models.Index(fields=["campaign", "annotator", "position"])]

    def __str__(self) -> str:
        return self.key


class Choice(models.TextChoices):
    LEFT = "left", "Left better"
    TIE = "tie", "Tie"
    RIGHT = "right", "Right better"


class Vote(models.Model):
    """A person's judgement of an assignment. Undone votes are kept (``undone_at``)."""

    assignment = models.ForeignKey(Assignment, on_delete=models.CASCADE, related_name="votes")
    annotator = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+"
    )
    choice = models.CharField(max_length=5, choices=Choice.choices)
    comment = models.TextField(blank=True, max_length=2000)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # One live vote per assignment: a double submission fails here, whatever the client.
            models.UniqueConstraint(
                fields=["assignment"],
                condition=Q(undone_at__isnull=True),
                name="one_live_vote_per_assignment",
            )
        ]

    def __str__(self) -> str:
        return f"{self.choice} on {self.assignment_id}"


class JudgeRun(models.Model):
    """One LLM-as-judge run over an evaluation's answers (trainer.judge), by a team's
    teacher endpoint; its report (scores with 95% CIs, plus the no-judge diagnostics)
    is kept as JSON."""

    class Status(models.TextChoices):
        QUEUED = "queued", "Queued"
        RUNNING = "running", "Judging"
        SUCCEEDED = "succeeded", "Done"
        FAILED = "failed", "Failed"

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
    tokens_used = models.PositiveBigIntegerField(default=0)
    # While running: {"phase": references | verdicts | retries, "done": n, "total": n}.
    progress = models.JSONField(default=dict, blank=True)
    # The running task's claim, renewed while it runs: a second delivery of the task
    # leaves a held run alone; the sweep re-queues a run whose claim lapsed (worker lost).
    claimed_by = models.CharField(max_length=200, blank=True)
    claimed_until = models.DateTimeField(null=True, blank=True)
    # The task could not be sent (broker unreachable); the sweep sends it again.
    unsent = models.BooleanField(default=False)
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
