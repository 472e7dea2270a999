"""Personal API tokens: shown once, stored hashed, revocable, creatable from the CLI."""

from __future__ import annotations

import io

import pytest
from django.core.management import CommandError, call_command

from webapp.teams.models import ApiToken, hash_token


def test_profile_creates_a_token_shown_once_and_stored_hashed(client, personas):
    client.force_login(personas.member)
    response = client.post("/profile/", {"name": "notebook"})
    body = response.content.decode()
    assert 'data-testid="new-token"' in body
    token = ApiToken.objects.get(user=personas.member)
    plain = body.split('data-testid="new-token">')[1].split("<")[0]
    assert plain.startswith("gad_") and hash_token(plain) == token.digest
    assert plain not in {token.digest, token.hint, token.name}

    again = client.get("/profile/").content.decode()
    assert plain not in again
    assert token.hint in again


def test_revoke_from_profile(client, personas):
    client.force_login(personas.member)
    client.post("/profile/", {"name": "x"})
    token = ApiToken.objects.get(user=personas.member)
    client.post(f"/profile/tokens/{token.pk}/revoke/")
    token.refresh_from_db()
    assert token.revoked_at is not None


def test_cannot_revoke_someone_elses_token(client, personas):
    client.force_login(personas.owner)
    client.post("/profile/", {"name": "mine"})
    token = ApiToken.objects.get(user=personas.owner)
    client.force_login(personas.outsider)
    client.post(f"/profile/tokens/{token.pk}/revoke/")
    token.refresh_from_db()
    assert token.revoked_at is None


def test_management_command_prints_a_working_token(client, personas):
    out = io.StringIO()
    call_command("create_api_token", "alice", "--name", "ci", stdout=out)
    plain = out.getvalue().strip()
    response = client.get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {plain}")
    assert response.json()["user"]["username"] == "alice"


def test_management_command_names_an_unknown_user(db):
    with pytest.raises(CommandError, match="No user named 'ghost'"):
        call_command("create_api_token", "ghost")
