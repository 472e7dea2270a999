"""Every change to teams, memberships, quotas, usage and API tokens goes through here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Count, Q, Sum
from django.utils import timezone

from webapp.lib.errors import ActionError
from webapp.teams.models import (
    ApiToken,
    Membership,
    Quota,
    Role,
    TeacherSpend,
    Team,
    UsageKind,
    UsageRecord,
    hash_token,
)


class QuotaExceeded(ActionError):
    pass


def month_start(now: datetime | None = None) -> datetime:
    now = timezone.now() if now is None else now
    return now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)


@dataclass(frozen=True)
class MonthUsage:
    gpu_hours: Decimal
    teacher_tokens: int
    jobs_launched: int
    teacher_dollars: Decimal = Decimal(0)  # at the endpoints' prices (priced calls only)


def month_usage(team: Team, now: datetime | None = None) -> MonthUsage:
    start = month_start(now)
    sums = team.usage_records.filter(created_at__gte=start).aggregate(
        gpu=Sum("amount", filter=Q(kind=UsageKind.GPU_SECONDS)),
        tokens=Sum("amount", filter=Q(kind=UsageKind.TEACHER_TOKENS)),
        jobs=Count("id", filter=Q(kind=UsageKind.JOB_LAUNCH)),
        dollars=Sum("amount", filter=Q(kind=UsageKind.TEACHER_DOLLARS)),
    )
    return MonthUsage(
        gpu_hours=((sums["gpu"] or Decimal(0)) / Decimal(3600)).quantize(Decimal("0.01")),
        teacher_tokens=int(sums["tokens"] or 0),
        jobs_launched=sums["jobs"] or 0,
        teacher_dollars=(sums["dollars"] or Decimal(0)).quantize(Decimal("0.01")),
    )


@transaction.atomic
def create_team(name: str, slug: str, owner: User) -> Team:
    team = Team.objects.create(name=name, slug=slug)
    Quota.objects.create(team=team)
    Membership.objects.create(team=team, user=owner, role=Role.OWNER)
    return team


def set_membership(team: Team, user: User, role: str) -> Membership:
    with transaction.atomic():
        member, _ = Membership.objects.select_for_update().update_or_create(
            team=team, user=user, defaults={"role": role}
        )
        _ensure_an_owner_remains(team)
    return member


def remove_membership(team: Team, user: User) -> None:
    with transaction.atomic():
        Membership.objects.filter(team=team, user=user).delete()
        _ensure_an_owner_remains(team)


def _ensure_an_owner_remains(team: Team) -> None:
    # Checked inside the transaction, so the change rolls back if it orphans the team.
    if not Membership.objects.filter(team=team, role=Role.OWNER).exists():
        raise ActionError("A team needs at least one owner; make someone else owner first.")


def suspend_team(team: Team, reason: str) -> None:
    Team.objects.filter(pk=team.pk, suspended_at__isnull=True).update(
        suspended_at=timezone.now(), suspended_reason=reason[:200]
    )


def unsuspend_team(team: Team) -> None:
    Team.objects.filter(pk=team.pk).update(suspended_at=None, suspended_reason="")


def record_usage(team: Team, kind: str, amount: Decimal | int | float, job=None) -> UsageRecord:
    return UsageRecord.objects.create(team=team, kind=kind, amount=Decimal(str(amount)), job=job)


def check_launch_allowed(team: Team, now: datetime | None = None, count: int = 1) -> None:
    """Raise ``QuotaExceeded`` with the reason and the numbers, or return.

    ``count`` is the number of jobs about to start (two for a GAD + SeqKD pair).

    Call inside the transaction that creates the job, after locking the team's quota
    row with ``select_for_update`` (``lock_quota``), so concurrent launches serialize.
    """
    quota = check_may_spend(team, now)
    # Through the jobs app's relation to the team: teams sits below jobs and imports none
    # of its code.
    running = team.jobs.active().count()
    if running + count > quota.max_concurrent_jobs:
        raise QuotaExceeded(
            f"{running} of {quota.max_concurrent_jobs} concurrent jobs are already queued or "
            f"running{f' and this launch starts {count}' if count > 1 else ''}; wait for one "
            "to finish or cancel one."
        )


def check_may_spend(team: Team, now: datetime | None = None) -> Quota:
    """The launch check of every kind of work (jobs, evaluations, judge runs, sweeps):
    ``QuotaExceeded`` when the team is suspended or this month's GPU-hours or teacher
    tokens are spent, with the numbers; else the team's quota, read fresh."""
    team.refresh_from_db(fields=["suspended_at", "suspended_reason"])
    if team.is_suspended:
        reason = f": {team.suspended_reason}" if team.suspended_reason else ""
        raise QuotaExceeded(f"Team {team.name} is suspended{reason}. Contact an administrator.")
    quota = Quota.objects.get(team_id=team.pk)  # fresh: the admin may just have raised it
    usage = month_usage(team, now)
    if usage.gpu_hours >= quota.gpu_hours_per_month:
        raise QuotaExceeded(
            f"This month's GPU-hours are spent: {usage.gpu_hours} of "
            f"{quota.gpu_hours_per_month} h used."
        )
    if usage.teacher_tokens >= quota.teacher_tokens_per_month:
        raise QuotaExceeded(
            f"This month's teacher tokens are spent: {usage.teacher_tokens:,} of "
            f"{quota.teacher_tokens_per_month:,} used."
        )
    money = quota.teacher_dollars_per_month
    if money is not None and usage.teacher_dollars >= money:
        raise QuotaExceeded(
            f"This month's teacher spend is reached: ${usage.teacher_dollars:,.2f} of "
            f"${money:,.2f}."
        )
    full = storage_full(team, quota)
    if full:
        raise QuotaExceeded(full)
    return quota


GB = 10**9


def storage_used(team: Team) -> int:
    """Bytes the team keeps: its prompt sets (what their rows hold), the files waiting
    to be imported, its jobs' checkpoints and the hub models they start from (read
    through the apps' relations to the team: teams imports neither app)."""
    prompts = team.prompt_sets.aggregate(n=Sum("size_bytes"))["n"]
    staged = team.uploads.filter(status__in=["queued", "reading"]).aggregate(n=Sum("size_bytes"))
    checkpoints = team.jobs.aggregate(n=Sum("checkpoints__size_bytes"))["n"]
    # Each Hugging Face Hub model its jobs start from, once (the shared model cache).
    hub_models = dict(
        team.jobs.filter(student_bytes__gt=0).values_list("student_path", "student_bytes")
    )
    return (
        int(prompts or 0) + int(staged["n"] or 0) + int(checkpoints or 0) + sum(hub_models.values())
    )


def storage_full(team: Team, quota: Quota | None = None, adding: int = 0) -> str | None:
    """Why the team's storage cannot take ``adding`` more bytes (None: it can)."""
    quota = quota or Quota.objects.get(team_id=team.pk)
    used, limit = storage_used(team), quota.storage_gb * GB
    if used + adding <= limit:
        return None
    return (
        f"The team's storage is full: {used / GB:.2f} GB used of {quota.storage_gb} GB"
        + (f", and this adds {adding / GB:.2f} GB" if adding else "")
        + f"; free space at {_storage_page(team)} (what may go, largest first), or ask an "
        "administrator for more."
    )


def _storage_page(team: Team) -> str:
    from django.urls import reverse

    return reverse("team-storage", kwargs={"slug": team.slug})


def reserve_tokens(team: Team, wanted: int, job=None, per_token: Decimal | None = None) -> int:
    """Reserve up to ``wanted`` of the team's remaining teacher tokens this month; returns
    how many were granted (0 when none remain).

    With ``per_token`` (the endpoint's dearest token, in dollars) and a monthly limit in
    money, the grant is also bounded by the dollars left, and charged at that price.

    Atomic: under the quota row's lock, the grant is charged to the ledger at once, so two
    runs reserving at the same time can never be granted more than remains between them.
    ``settle_tokens`` corrects the charge to what was really spent.
    """
    with transaction.atomic():
        quota = lock_quota(team)
        usage = month_usage(team)
        remaining = int(quota.teacher_tokens_per_month) - usage.teacher_tokens
        money = quota.teacher_dollars_per_month
        if per_token and money is not None:
            remaining = min(remaining, int((money - usage.teacher_dollars) / per_token))
        granted = max(0, min(int(wanted), remaining))
        if granted:
            record_usage(team, UsageKind.TEACHER_TOKENS, granted, job=job)
            if per_token:
                record_usage(team, UsageKind.TEACHER_DOLLARS, granted * per_token, job=job)
    return granted


def settle_tokens(
    team: Team,
    reserved: int,
    spent: int,
    job=None,
    per_token: Decimal | None = None,
    cost: Decimal | None = None,
) -> None:
    """After a run: the ledger gets ``spent - reserved`` (a refund when negative), and,
    for a priced endpoint, the dollars reserved at ``per_token`` become ``cost``."""
    if spent != reserved:
        record_usage(team, UsageKind.TEACHER_TOKENS, spent - reserved, job=job)
    if per_token:
        held = reserved * per_token
        if cost is not None and cost != held:
            record_usage(team, UsageKind.TEACHER_DOLLARS, cost - held, job=job)


def lock_quota(team: Team) -> Quota:
    """Lock the team's quota row until the end of the current transaction."""
    return Quota.objects.select_for_update().get(team=team)


def create_api_token(user: User, name: str) -> tuple[ApiToken, str]:
    """Create a token; the plain token is returned once and never stored."""
    plain = ApiToken.generate()
    token = ApiToken.objects.create(
        user=user, name=name.strip() or "token", digest=hash_token(plain), hint=plain[:8]
    )
    return token, plain


def revoke_api_token(user: User, token_id: int) -> bool:
    return bool(
        ApiToken.objects.active().filter(pk=token_id, user=user).update(revoked_at=timezone.now())
    )


def authenticate_token(plain: str) -> User | None:
    token = (
        ApiToken.objects.active()
        .select_related("user")
        .filter(digest=hash_token(plain), user__is_active=True)
        .first()
    )
    if token is None:
        return None
    # One UPDATE per request is cheap; skip it when the stamp is recent enough.
    now = timezone.now()
    if token.last_used_at is None or (now - token.last_used_at).total_seconds() > 60:
        ApiToken.objects.filter(pk=token.pk).update(last_used_at=now)
    return token.user


def record_spend(team: Team, **fields) -> None:
    """What one paid teacher call spent (``TeacherSpend``: tokens by kind, cost, what
    it was for); the usage page and each run's page read these rows."""
    fields["label"] = str(fields.get("label", ""))[:300]
    fields["price_source"] = str(fields.get("price_source", ""))[:250]
    TeacherSpend.objects.create(team=team, **fields)
