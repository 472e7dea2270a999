"""A person logs in with the browser and lands on their team's dashboard."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def test_demo_login_reaches_the_team_dashboard(live_server, page):
    from django.core.management import call_command

    call_command("demo_setup", password="demo-password")
    page.goto(f"{live_server.url}/")
    assert "/accounts/login/" in page.url
    page.fill("#id_username", "demo")
    page.fill("#id_password", "demo-password")
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/teams/demo/")
    assert page.locator("h1").inner_text() == "Demo team"
    assert page.get_by_role("progressbar").count() == 3


def test_wrong_password_is_refused_with_a_message(live_server, page):
    from django.core.management import call_command

    call_command("demo_setup", password="demo-password")
    page.goto(f"{live_server.url}/accounts/login/")
    page.fill("#id_username", "demo")
    page.fill("#id_password", "wrong")
    page.click("button[type=submit]")
    assert "didn't match" in page.locator(".msg.error").inner_text()
