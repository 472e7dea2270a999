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


def test_ten_wrong_passwords_from_one_address_lock_it_out_with_a_message(
    client, personas, settings
):
    for _ in range(settings.GAD_LOGIN_FAILURE_LIMIT - 1):
        assert _sign_in(client, "alice", "wrong").status_code == 200  # the form again
    assert _sign_in(client, "alice", "wrong").status_code == 429  # the tenth locks
    # From that address, even the right password is refused for a while.
    response = _sign_in(client, "alice", personas.password)
    assert response.status_code == 429
    assert "Too many failed sign-ins" in response.content.decode()
    assert "_auth_user_id" not in client.session
    assert AccessFailureLog.objects.filter(username="alice").count() >= 10  # logged
    # Another person from a fresh address is not affected.
    assert _sign_in(client, "bob", personas.password, address="192.0.2.44").status_code == 302


def test_failures_for_a_username_from_many_addresses_do_not_lock_its_owner_out(
    client, personas, settings
):
    """The review's attack: 10 wrong passwords for "alice", each from another address,
    locked the real alice out (a lockout by username alone). Now each (username,
    address) pair and each address count apart: her own address is not locked."""
    for i in range(settings.GAD_LOGIN_FAILURE_LIMIT + 2):
        _sign_in(client, "alice", "wrong", address=f"203.0.113.{100 + i}")
    response = _sign_in(client, personas.owner.username, personas.password, "198.51.100.7")
    assert response.status_code == 302 and client.session["_auth_user_id"]


def test_one_address_guessing_many_usernames_is_locked_out(client, personas, settings):
    for i in range(settings.GAD_LOGIN_FAILURE_LIMIT):
        _sign_in(client, f"nobody{i}", "x", address="203.0.113.50")
    response = _sign_in(client, "bob", personas.password, address="203.0.113.50")
    assert response.status_code == 429
    assert AccessAttempt.objects.filter(ip_address="203.0.113.50").exists()


def test_invalid_api_tokens_lock_out_guesses_never_a_valid_token(client, personas, settings):
    """Ten invalid tokens from one address: its next invalid ones get 429 with the reason,
    but a valid token from the same address still works (it is checked first: the
    review saw a 429 for a valid token after someone else guessed wrong)."""
    good = create_api_token(personas.member, "script")[1]
    for i in range(settings.GAD_LOGIN_FAILURE_LIMIT):
        response = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer guess-{i}")
        assert response.status_code == 401
    response = client.get("/api/v1/me", HTTP_AUTHORIZATION="Bearer guess-again")
    assert response.status_code == 429
    assert response.json() == {
        "error": "rate_limited",
        "detail": f"Too many invalid tokens from this address; try again in "
        f"{settings.GAD_LOGIN_LOCKOUT_MINUTES} minutes.",
    }
    assert client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {good}").status_code == 200
    other = client.get("/api/v1/me", HTTP_AUTHORIZATION="Bearer x", REMOTE_ADDR="192.0.2.1")
    assert other.status_code == 401  # another address: its own count


def test_behind_trusted_proxies_the_limits_count_the_client_not_the_proxy(
    client, personas, settings
):
    """Behind a proxy every request comes from the proxy's address: the limits use the
    address the trusted proxy saw (X-Forwarded-For), so one client's guesses lock out
    that client, not everyone; with no trusted proxy the header is ignored (a client
    cannot pick an address per guess)."""
    proxy = {"REMOTE_ADDR": "10.0.0.2"}
    settings.GAD_TRUSTED_PROXIES = 1
    for i in range(settings.GAD_LOGIN_FAILURE_LIMIT):
        client.post(
            reverse("login"),
            {"username": f"n{i}", "password": "x"},
            HTTP_X_FORWARDED_FOR="203.0.113.7",
            **proxy,
        )
    locked = client.post(
        reverse("login"),
        {"username": "bob", "password": personas.password},
        HTTP_X_FORWARDED_FOR="203.0.113.7",
        **proxy,
    )
    assert locked.status_code == 429
    fine = client.post(
        reverse("login"),
        {"username": "bob", "password": personas.password},
        HTTP_X_FORWARDED_FOR="198.51.100.8",
        **proxy,
    )
    assert fine.status_code == 302  # another client behind the same proxy
    settings.GAD_TRUSTED_PROXIES = 0
    for i in range(settings.GAD_LOGIN_FAILURE_LIMIT):
        client.get(
            "/api/v1/me", HTTP_AUTHORIZATION=f"Bearer g{i}", HTTP_X_FORWARDED_FOR=f"192.0.2.{i}"
        )
    spoofed = client.get(
        "/api/v1/me", HTTP_AUTHORIZATION="Bearer g", HTTP_X_FORWARDED_FOR="192.0.2.200"
    )
    assert spoofed.status_code == 429  # the header changed nothing: one address guessed
