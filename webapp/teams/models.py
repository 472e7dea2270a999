"""Teams, who belongs to them, what they may spend, and what they spent."""

from __future__ import annotations

import hashlib
import secrets
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.utils import timezone


class Team(models.Model):
    name = models.CharField(max_length=100)
    slug = models.SlugField(max_length=60, unique=True, help_text="Used in URLs and the API.")
    created_at = models.DateTimeField(default=timezone.now)
    suspended_at = models.DateTimeField(null=True, blank=True)
    suspended_reason = models.CharField(max_length=200, blank=True)
    retain_checkpoints = models.PositiveSmallIntegerField(
        null=True,
        blank=True,
        help_text="Default retention of the team's jobs: keep each job's last N checkpoints, "
        "plus its final and marked ones; empty: keep all (webapp.jobs.storage).",
    )

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_suspended(self) -> bool:
        return self.suspended_at is not None


class Role(models.TextChoices):
    OWNER = "owner", "Owner"
    MEMBER = "member", "Member"
    ANNOTATOR = "annotator", "Annotator"


# Roles allowed to launch, change or cancel jobs and to manage team data.
LAUNCH_ROLES = frozenset({Role.OWNER, Role.MEMBER})


class Membership(models.Model):
    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=20, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["team", "user"], name="one_membership_per_team")
        ]
        ordering = ["team__name", "user__username"]

    def __str__(self) -> str:
        return f"{self.user} in {self.team} ({self.role})"


class Quota(models.Model):
    """Limits per team. Monthly limits reset on the first of each calendar month (UTC)."""

    team = models.OneToOneField(Team, on_delete=models.CASCADE, related_name="quota")
    max_concurrent_jobs = models.PositiveIntegerField(
        default=2, help_text="Jobs that may be queued or running at once."
    )
    gpu_hours_per_month = models.DecimalField(
        max_digits=10, decimal_places=2, default=Decimal("100"), help_text="GPU-hours per month."
    )
    teacher_tokens_per_month = models.PositiveBigIntegerField(
        default=20_000_000, help_text="Teacher (and judge) tokens per month, prompt + completion."
    )
    teacher_dollars_per_month = models.DecimalField(
        max_digits=12,
        decimal_places=2,
        null=True,
        blank=True,
        help_text="Teacher (and judge) spend per month in US dollars, at the endpoints' "
        "prices; blank: no limit in money. Calls to an endpoint with no price count "
        "against the tokens only.",
    )
    storage_gb = models.PositiveIntegerField(
        default=200, help_text="Uploads, run directories and checkpoints."
    )
    hub_model_gb = models.PositiveIntegerField(
        default=80,
        help_text="The largest Hugging Face Hub model a job or an evaluation may start "
        "from (its weights, config and tokenizer); each one the team uses counts toward "
        "its storage.",
    )

    def __str__(self) -> str:
        return f"Quota of {self.team}"


class UsageKind(models.TextChoices):
    GPU_SECONDS = "gpu_seconds", "GPU-seconds"
    TEACHER_TOKENS = "teacher_tokens", "Teacher tokens"
    JOB_LAUNCH = "job_launch", "Job launched"
    TEACHER_DOLLARS = "teacher_dollars", "Teacher spend ($)"


class UsageRecord(models.Model):
    """An append-only ledger: quotas are checked against sums of these rows."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="usage_records")
    kind = models.CharField(max_length=20, choices=UsageKind.choices)
    amount = models.DecimalField(max_digits=20, decimal_places=3)
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="usage_records"
    )
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "kind", "created_at"])]

    def __str__(self) -> str:
        return f"{self.team}: {self.amount} {self.kind}"


class SpendPurpose(models.TextChoices):
    COLLECTION = "collection", "Teacher answers for a job"
    EVALUATION = "evaluation", "Teacher answers for an evaluation"
    JUDGE = "judge", "LLM judge"


class TeacherSpend(models.Model):
    """What one paid call to a teacher endpoint spent (a job's collection, an
    evaluation's teacher answers, a judge run): its tokens by kind and their price at
    the time. The team usage page and each run's page read these rows."""

    team = models.ForeignKey(Team, on_delete=models.CASCADE, related_name="teacher_spend")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    purpose = models.CharField(max_length=20, choices=SpendPurpose.choices)
    endpoint = models.ForeignKey(
        "teachers.TeacherEndpoint", null=True, blank=True, on_delete=models.SET_NULL
    )
    endpoint_name = models.CharField(max_length=100)  # kept when the endpoint is deleted
    model = models.CharField(max_length=200)
    job = models.ForeignKey(
        "jobs.Job", null=True, blank=True, on_delete=models.SET_NULL, related_name="teacher_spend"
    )
    evaluation = models.ForeignKey(
        "evaluation.Evaluation",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="teacher_spend",
    )
    judge_run = models.ForeignKey(
        "judging.JudgeRun",
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="teacher_spend",
    )
    label = models.CharField(max_length=300)  # what it was for, as the usage page says it
    prompt_tokens = models.PositiveBigIntegerField(default=0)
    completion_tokens = models.PositiveBigIntegerField(default=0)
    reasoning_tokens = models.PositiveBigIntegerField(default=0)
    cached_tokens = models.PositiveBigIntegerField(default=0)
    # None: the endpoint had no price (neither its own nor the site's default).
    cost = models.DecimalField(max_digits=14, decimal_places=6, null=True, blank=True)
    price_source = models.CharField(max_length=250, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["team", "created_at"])]

    def __str__(self) -> str:
        return f"{self.team}: {self.tokens} tokens of {self.endpoint_name} ({self.purpose})"

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


TOKEN_PREFIX = "gad_"


def hash_token(token: str) -> str:
    # Tokens carry 256 bits of randomness, so a plain SHA-256 cannot be brute-forced
    # and, unlike a password hash, lets us look the token up by its digest.
    return hashlib.sha256(token.encode()).hexdigest()


class ApiTokenQuerySet(models.QuerySet["ApiToken"]):
    def active(self) -> ApiTokenQuerySet:
        return self.filter(revoked_at__isnull=True)


class ApiToken(models.Model):
    """A personal REST API token. Only its digest is stored; the token is shown once."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens"
    )
    name = models.CharField(max_length=100)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    hint = models.CharField(
        max_length=16, editable=False, help_text="First characters, to tell tokens apart."
    )
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    objects = ApiTokenQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.name} ({self.hint}…)"

    @staticmethod
    def generate() -> str:
        return TOKEN_PREFIX + secrets.token_urlsafe(32)
