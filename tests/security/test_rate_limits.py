"""Sign-in and API tokens cannot be guessed at speed (docs/security.md, "Guessing"):
ten failures from one address, or for one username, lock it out for a while with a
clear message, and every attempt is logged."""

from __future__ import annotations

from axes.models import AccessAttempt, AccessFailureLog
from django.urls import reverse

from webapp.teams.actions import create_api_token


def _sign_in(client, username: str, password: str, address: str = "203.0.113.9"):
    return client.post(
        reverse("login"), {"username": username, "password": password}, REMOTE_ADDR=address
    )


def test_ten_wrong_passwords_lock_the_username_out_with_a_message(client, personas, settings):
    for _ in range(settings.GAD_LOGIN_FAILURE_LIMIT - 1):
        assert _sign_in(client, "alice", "wrong").status_code == 200  # the form again
    assert _sign_in(client, "alice", "wrong").status_code == 429  # the tenth locks
    # Even the right password, even from another address: the username is locked.
    response = _sign_in(client, "alice", personas.password, address="198.51.100.7")
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert AccessFailureLog.objects.filter(username="alice").count() >= 10  # logged
    # Another person from a fresh address is not affected.
    assert _sign_in(client, "bob", personas.password, address="192.0.2.44").status_code == 302


def test_one_address_guessing_many_usernames_is_locked_out(client, personas, settings):
    for i in range(settings.GAD_LOGIN_FAILURE_LIMIT):
        _sign_in(client, f"nobody{i}", "x", address="203.0.113.50")
    response = _sign_in(client, "bob", personas.password, address="203.0.113.50")
    assert response.status_code == 429
    assert AccessAttempt.objects.filter(ip_address="203.0.113.50").exists()


def test_ten_invalid_api_tokens_lock_the_address_out(client, personas, settings):
    good = create_api_token(personas.member, "script")[1]
    for i in range(settings.GAD_LOGIN_FAILURE_LIMIT):
        response = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer guess-{i}")
        assert response.status_code == 401
    response = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {good}")
    assert response.status_code == 429
    assert response.json() == {
        "error": "rate_limited",
        "detail": f"Too many invalid tokens from this address; try again in "
        f"{settings.GAD_LOGIN_LOCKOUT_MINUTES} minutes.",
    }
    other = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {good}", REMOTE_ADDR="192.0.2.1")
    assert other.status_code == 200
