"""Prompt sets: uploaded prompts (and teacher answers that came with them)."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone

from webapp.claims import Claimed
from webapp.dispatch import Sent


class PromptSet(models.Model):
    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="prompt_sets")
    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    source_name = models.CharField(max_length=255, help_text="The uploaded file's name.")
    size_bytes = models.PositiveBigIntegerField(default=0)
    num_prompts = models.PositiveIntegerField(default=0)
    num_with_teacher = models.PositiveIntegerField(default=0)
    num_duplicates = models.PositiveIntegerField(default=0)
    num_dropped = models.PositiveIntegerField(
        default=0, help_text="Exact duplicates left out at upload (drop_duplicates)."
    )
    num_test = models.PositiveIntegerField(default=0, help_text="Prompts held out as a test set.")
    stats = models.JSONField(default=dict, help_text="Length histograms computed at upload.")

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.name

    @property
    def num_train(self) -> int:
        return self.num_prompts - self.num_test


class Split(models.TextChoices):
    TRAIN = "train", "Train"
    TEST = "test", "Test (held out)"


class Prompt(models.Model):
    prompt_set = models.ForeignKey(PromptSet, on_delete=models.CASCADE, related_name="prompts")
    index = models.PositiveIntegerField(help_text="Position in the uploaded file, from 0.")
    line = models.PositiveIntegerField(help_text="Line (or row) in the uploaded file.")
    external_id = models.CharField(max_length=200, blank=True)
    messages = models.JSONField()
    text = models.TextField(help_text="The messages as plain text, for search and preview.")
    prompt_hash = models.CharField(max_length=64, db_index=True)
    norm_hash = models.CharField(
        max_length=64, db_index=True, default="",
        help_text="sha256 of the text normalised (trainer.dedup): exact duplicates share it.",
    )  # fmt: skip
    dup_group = models.PositiveIntegerField(
        null=True, blank=True,
        help_text="The index of the first prompt of its group of exact and near duplicates "
        "in the set (its own index when it has none).",
    )  # fmt: skip
    # None: no answer yet; an empty string would be an (empty, flagged) answer.
    teacher_response = models.TextField(null=True, blank=True)  # noqa: DJ001
    split = models.CharField(max_length=5, choices=Split.choices, default=Split.TRAIN)

    class Meta:
        ordering = ["prompt_set", "index"]
        constraints = [
            models.UniqueConstraint(fields=["prompt_set", "index"], name="prompt_index_unique")
        ]
        indexes = [models.Index(fields=["prompt_set", "split", "index"])]

    def __str__(self) -> str:
        return f"{self.prompt_set_id}#{self.index}"


class TeacherAnswer(models.Model):
    """Collected teacher answers, shared by every job of the team that paid for them.

    Keyed like trainer.teacher's store: (prompt hash, teacher fingerprint = base URL +
    model + sampling + the team and its key's digest). The same prompt asked of the same
    teacher is never paid twice by a team, and no team reads another's answers.
    """

    prompt_hash = models.CharField(max_length=64)
    fingerprint = models.CharField(max_length=32)
    response = models.TextField()
    finish_reason = models.CharField(max_length=40, null=True)  # noqa: DJ001 - None: no choice
    prompt_tokens = models.PositiveIntegerField(default=0)
    completion_tokens = models.PositiveIntegerField(default=0)
    flag = models.CharField(max_length=10, help_text="ok, empty, length, refused or error")
    error = models.TextField(blank=True)
    latency_s = models.FloatField(default=0.0)
    # Hidden reasoning (usage.completion_tokens_details), part of completion_tokens.
    reasoning_tokens = models.PositiveIntegerField(default=0)
    # Prompt tokens the provider served from its cache (usage.prompt_tokens_details).
    cached_tokens = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["prompt_hash", "fingerprint"], name="one_answer_per_key"
            )
        ]

    def __str__(self) -> str:
        return f"{self.flag} answer {self.prompt_hash[:8]}@{self.fingerprint[:8]}"


class UploadStatus(models.TextChoices):
    QUEUED = "queued", "Waiting for a worker"
    READING = "reading", "Checking the file"
    DONE = "done", "Imported"
    FAILED = "failed", "Not imported"


class Upload(Claimed, Sent):
    """An uploaded prompt file on its way to a PromptSet: the web process stores it and a
    worker checks and imports it (``gad.import_prompts``), so a large or hostile file
    never ties up a web process. The page polls its progress and then shows the prompt
    set, or the problems with their line numbers. The importing worker holds it by a
    claim; if it dies, the sweep hands the import to another worker."""

    team = models.ForeignKey("teams.Team", on_delete=models.CASCADE, related_name="uploads")
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+"
    )
    name = models.CharField(max_length=200)
    filename = models.CharField(max_length=255)
    staging_path = models.CharField(max_length=1000)
    drop_duplicates = models.BooleanField(
        default=False, help_text="Leave out prompts that repeat an earlier one (normalised)."
    )
    size_bytes = models.PositiveBigIntegerField(default=0)
    status = models.CharField(
        max_length=10, choices=UploadStatus.choices, default=UploadStatus.QUEUED
    )
    records_read = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    problems = models.JSONField(default=list, blank=True)
    prompt_set = models.ForeignKey(
        PromptSet, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"upload of {self.filename}"

    @property
    def ended(self) -> bool:
        return self.status in (UploadStatus.DONE, UploadStatus.FAILED)
