"""Helpers shared by the API routers: team lookup through the access module, errors."""

from __future__ import annotations

from collections.abc import Iterable

from ninja.errors import HttpError

from webapp.teams import access
from webapp.teams.models import Team


def team_for(request, slug: str, roles: Iterable[str] = access.ALL_ROLES) -> Team:
    """The team named by ``slug`` in a request body or query: 404 unless a member, 403 for role."""
    team, _ = access.get_team(request.user, slug, roles=roles)
    return team


class ApiError(HttpError):
    """An HttpError carrying a machine-readable code beside the message."""

    def __init__(self, status: int, detail: str, code: str | None = None):
        super().__init__(status, detail)
        self.code = code
