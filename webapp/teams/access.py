"""The one place that decides who may see and change a team's objects.

Every view and API endpoint fetches team-owned objects through these helpers:
- an object of a team the user is not in is a 404 (never a 403: its existence is
  not revealed);
- an object the user may see but not change with their role is a 403, with a page
  that says why (annotators vote; they do not launch or change jobs).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.db import models
from django.http import Http404, HttpRequest

from webapp.teams.models import LAUNCH_ROLES, Membership, Role, Team

M = TypeVar("M", bound=models.Model)
AnyUser = User | AnonymousUser

ALL_ROLES = frozenset(Role)


class RoleRequired(PermissionDenied):
    """Raised when the user is in the team but their role may not do this."""

    def __init__(self, role: str, allowed: Iterable[str]):
        self.role = role
        self.allowed = sorted(allowed)
        names = " or ".join(Role(r).label.lower() for r in self.allowed)
        super().__init__(
            f"Your role in this team is {Role(role).label.lower()}; this needs {names}. "
            "Ask a team owner to change your role."
        )


def membership(user: AnyUser, team: Team) -> Membership | None:
    if not user.is_authenticated:
        return None
    return Membership.objects.filter(team=team, user=user).first()


def user_teams(user: AnyUser) -> models.QuerySet[Team]:
    if not user.is_authenticated:
        return Team.objects.none()
    return Team.objects.filter(memberships__user=user).order_by("name")


def _check_role(role: str, roles: Iterable[str]) -> None:
    allowed = frozenset(roles)
    if role not in allowed:
        raise RoleRequired(role, allowed)


def get_team(user: AnyUser, slug: str, roles: Iterable[str] = ALL_ROLES) -> tuple[Team, str]:
    """The team with this slug and the user's role in it; 404 if they are not in it."""
    member = (
        Membership.objects.select_related("team")
        .filter(team__slug=slug, user_id=user.pk or 0)
        .first()
    )
    if member is None:
        raise Http404("No such team.")
    _check_role(member.role, roles)
    return member.team, member.role


def working_team(request, slug: str) -> Team:
    """The team of a page that launches or changes things: members and owners only."""
    team, _ = get_team(request.user, slug, roles=LAUNCH_ROLES)
    return team


def team_for(request, slug: str, roles: Iterable[str] = ALL_ROLES) -> Team:
    """The team named by ``slug`` in an API request's body or query: 404 unless a
    member, 403 for the role."""
    team, _ = get_team(request.user, slug, roles=roles)
    return team


def for_user(
    queryset: models.QuerySet[M],
    user: AnyUser,
    team_field: str = "team",
    roles: Iterable[str] = ALL_ROLES,
) -> models.QuerySet[M]:
    """Restrict a queryset of team-owned objects to the user's teams where their role fits."""
    if not user.is_authenticated:
        return queryset.none()
    # One filter() call, so that user and role constrain the same membership row.
    return queryset.filter(
        **{
            f"{team_field}__memberships__user": user,
            f"{team_field}__memberships__role__in": list(roles),
        }
    )


def get_object(
    queryset: models.QuerySet[M],
    user: AnyUser,
    pk: object,
    roles: Iterable[str] = ALL_ROLES,
    team_field: str = "team",
    slug: str | None = None,
) -> M:
    """One team-owned object by primary key: 404 outside the user's teams, 403 for the role.

    The one helper of pages and the API. A page under ``/teams/<slug>/`` passes ``slug``:
    the object must then belong to that team, and the role is checked on the team first
    (a 403 page for an annotator, whether or not the object exists). ``queryset`` may
    carry ``select_related`` for what the caller will render.
    """
    if slug is not None:
        team, _ = get_team(user, slug, roles)
        try:
            return queryset.get(pk=pk, **{team_field: team})
        except (ObjectDoesNotExist, ValueError, TypeError):
            raise Http404("Not found.") from None
    try:
        obj = for_user(queryset, user, team_field).distinct().get(pk=pk)
    except (ObjectDoesNotExist, ValueError, TypeError):
        raise Http404("Not found.") from None
    owner: object = obj
    *path, last = team_field.split("__")  # e.g. "job__team" for a checkpoint
    for part in path:
        owner = getattr(owner, part)
    team_id = getattr(owner, f"{last}_id")
    role = Membership.objects.filter(team_id=team_id, user_id=user.pk or 0).values_list(
        "role", flat=True
    )[0]
    _check_role(role, roles)
    return obj


def team_object(
    request: HttpRequest,
    slug: str,
    rows: type[M] | models.QuerySet[M],
    pk: object,
    team_field: str = "team",
) -> M:
    """``get_object`` for a page that launches or changes things under
    ``/teams/<slug>/``: members and owners only. ``rows``: a model or a queryset."""
    queryset = rows if isinstance(rows, models.QuerySet) else rows._default_manager.all()
    return get_object(queryset, request.user, pk, LAUNCH_ROLES, team_field, slug=slug)


__all__ = [
    "ALL_ROLES",
    "LAUNCH_ROLES",
    "RoleRequired",
    "for_user",
    "get_object",
    "get_team",
    "membership",
    "team_object",
    "user_teams",
    "working_team",
]
