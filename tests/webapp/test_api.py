"""REST API v1: bearer tokens, the error shape, /me, OpenAPI."""

from __future__ import annotations

import pytest

from webapp.teams.actions import create_api_token, revoke_api_token
from webapp.teams.models import ApiToken


@pytest.fixture
def token(personas):
    _, plain = create_api_token(personas.member, "script")
    return plain


def bearer(token: str) -> dict:
    return {"HTTP_AUTHORIZATION": f"Bearer {token}"}


def test_me_lists_user_and_teams_with_roles(client, personas, token):
    response = client.get("/api/v1/me", **bearer(token))
    assert response.status_code == 200
    body = response.json()
    assert body["user"]["username"] == "bob"
    assert body["teams"] == [
        {
            "id": personas.team.id,
            "slug": "acme",
            "name": "Acme",
            "role": "member",
            "suspended": False,
        }
    ]


@pytest.mark.parametrize("header", [None, "Bearer nope", "Token abc", "Bearer "])
def test_missing_or_bad_token_is_401_in_the_error_shape(client, personas, header):
    extra = {"HTTP_AUTHORIZATION": header} if header is not None else {}
    response = client.get("/api/v1/me", **extra)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "unauthorized"
    assert "Bearer" in body["detail"]


def test_revoked_token_stops_working(client, personas, token):
    assert client.get("/api/v1/me", **bearer(token)).status_code == 200
    revoke_api_token(personas.member, ApiToken.objects.get(user=personas.member).pk)
    assert client.get("/api/v1/me", **bearer(token)).status_code == 401


def test_inactive_user_token_is_rejected(client, personas, token):
    personas.member.is_active = False
    personas.member.save()
    assert client.get("/api/v1/me", **bearer(token)).status_code == 401


def test_token_use_is_stamped(client, personas, token):
    client.get("/api/v1/me", **bearer(token))
    assert ApiToken.objects.get(user=personas.member).last_used_at is not None


def test_unknown_api_path_is_json_404(client, personas, token):
    response = client.get("/api/v1/no-such-thing", **bearer(token))
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_openapi_schema_is_served_and_lists_me(client, db):
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    assert "/api/v1/me" in schema["paths"]
    assert any(
        "Bearer" in str(s) or "bearer" in str(s)
        for s in schema["components"]["securitySchemes"].values()
    )
