"""Quota checks and usage accounting (the launch path of the jobs issue calls these)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import transaction

from webapp.jobs.models import Job, Status
from webapp.lib.errors import ActionError
from webapp.teams import actions
from webapp.teams.models import Membership, Role, UsageKind


def make_job(team, status=Status.QUEUED):
    return Job.objects.create(team=team, name="j", method="gad", status=status)


def test_fresh_team_may_launch(personas):
    actions.check_launch_allowed(personas.team)


def test_suspended_team_is_refused_with_the_reason(personas):
    actions.suspend_team(personas.team, "unpaid invoice")
    with pytest.raises(actions.QuotaExceeded, match="suspended: unpaid invoice"):
        actions.check_launch_allowed(personas.team)
    actions.unsuspend_team(personas.team)
    actions.check_launch_allowed(personas.team)


def test_concurrent_job_limit_counts_active_jobs_only(personas):
    Job.objects.filter(team=personas.team).delete()  # start from no job at all
    quota = personas.team.quota
    quota.max_concurrent_jobs = 2
    quota.save()
    make_job(personas.team, Status.TRAINING)
    make_job(personas.team, Status.SUCCEEDED)
    make_job(personas.team, Status.FAILED)
    actions.check_launch_allowed(personas.team)
    make_job(personas.team, Status.PAUSED)
    with pytest.raises(actions.QuotaExceeded, match="2 of 2 concurrent jobs"):
        actions.check_launch_allowed(personas.team)
    make_job(personas.other_team, Status.TRAINING)  # other teams do not count


def test_gpu_hours_of_this_month_only(personas):
    quota = personas.team.quota
    quota.gpu_hours_per_month = Decimal("1")
    quota.save()
    now = datetime(2026, 11, 15, tzinfo=UTC)
    old = actions.record_usage(personas.team, UsageKind.GPU_SECONDS, 7200)
    old.created_at = datetime(2026, 10, 31, 23, tzinfo=UTC)
    old.save()
    actions.check_launch_allowed(personas.team, now=now)
    rec = actions.record_usage(personas.team, UsageKind.GPU_SECONDS, 3600)
    rec.created_at = now - timedelta(days=1)
    rec.save()
    with pytest.raises(actions.QuotaExceeded, match=r"1\.00 of 1\.00 h used"):
        actions.check_launch_allowed(personas.team, now=now)


def test_teacher_token_budget(personas):
    quota = personas.team.quota
    quota.teacher_tokens_per_month = 1000
    quota.save()
    actions.record_usage(personas.team, UsageKind.TEACHER_TOKENS, 999)
    actions.check_launch_allowed(personas.team)
    actions.record_usage(personas.team, UsageKind.TEACHER_TOKENS, 1)
    with pytest.raises(actions.QuotaExceeded, match="1,000 of 1,000"):
        actions.check_launch_allowed(personas.team)


def test_month_usage_sums_by_kind(personas):
    actions.record_usage(personas.team, UsageKind.GPU_SECONDS, 5400)
    actions.record_usage(personas.team, UsageKind.TEACHER_TOKENS, 1234)
    actions.record_usage(personas.team, UsageKind.JOB_LAUNCH, 1)
    usage = actions.month_usage(personas.team)
    assert usage.gpu_hours == Decimal("1.50")
    assert usage.teacher_tokens == 1234
    assert usage.jobs_launched == 1


def test_lock_quota_holds_a_row_lock(personas):
    with transaction.atomic():
        quota = actions.lock_quota(personas.team)
        assert quota.team_id == personas.team.id


def test_last_owner_cannot_be_demoted_or_removed(personas):
    with pytest.raises(ActionError, match="at least one owner"):
        actions.set_membership(personas.team, personas.owner, Role.MEMBER)
    with pytest.raises(ActionError, match="at least one owner"):
        actions.remove_membership(personas.team, personas.owner)
    assert Membership.objects.get(team=personas.team, user=personas.owner).role == Role.OWNER


def test_owner_adds_a_member_by_email_from_the_page(client, personas, django_user_model):
    django_user_model.objects.create_user("erin", "erin@example.com", "x")
    client.force_login(personas.owner)
    response = client.post(
        "/teams/acme/members/", {"user": "ERIN@example.com", "role": "annotator"}
    )
    assert response.status_code == 302
    assert Membership.objects.get(team=personas.team, user__username="erin").role == "annotator"


def test_adding_an_unknown_user_says_so_next_to_the_field(client, personas):
    client.force_login(personas.owner)
    response = client.post("/teams/acme/members/", {"user": "ghost", "role": "member"})
    assert "No user named &#x27;ghost&#x27;" in response.content.decode()


def test_dashboard_shows_quota_bars_and_recent_jobs(client, personas):
    client.force_login(personas.member)
    body = client.get("/teams/acme/").content.decode()
    assert body.count('role="progressbar"') == 3
    assert personas.job.name in body and "No jobs yet" not in body

    Job.objects.filter(team=personas.team).delete()
    assert "No jobs yet" in client.get("/teams/acme/").content.decode()
