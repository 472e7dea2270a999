"""Admin: teams with usage columns, the suspend action."""

from __future__ import annotations

import pytest

from webapp.teams import actions
from webapp.teams.models import Team, UsageKind


@pytest.fixture
def admin_client(client, personas, django_user_model):
    admin = django_user_model.objects.create_superuser("root", "root@example.com", "x")
    client.force_login(admin)
    return client


def test_team_changelist_shows_this_months_usage(admin_client, personas):
    actions.record_usage(personas.team, UsageKind.GPU_SECONDS, 7200)
    actions.record_usage(personas.team, UsageKind.TEACHER_TOKENS, 123456)
    body = admin_client.get("/admin/teams/team/").content.decode()
    assert "GPU-hours (month)" in body
    assert "2.00" in body
    assert "123,456" in body


def test_team_search_by_member(admin_client, personas):
    body = admin_client.get("/admin/teams/team/?q=carol").content.decode()
    assert "Acme" in body and ">Other<" not in body


def test_suspend_action_refuses_launches(admin_client, personas):
    admin_client.post(
        "/admin/teams/team/",
        {"action": "suspend", "_selected_action": [personas.team.pk]},
    )
    team = Team.objects.get(pk=personas.team.pk)
    assert team.is_suspended
    with pytest.raises(actions.QuotaExceeded, match="suspended"):
        actions.check_launch_allowed(team)


def test_team_change_page_has_quota_and_membership_inlines(admin_client, personas):
    body = admin_client.get(f"/admin/teams/team/{personas.team.pk}/change/").content.decode()
    assert "max_concurrent_jobs" in body
    assert "memberships-TOTAL_FORMS" in body
