"""/api/v1/teams/{slug}/members: who is in a team, and (owners) adding, changing and
removing members, with the members page's form and checks (DESIGN.md, "REST API v1")."""

from __future__ import annotations

from ninja import Router, Schema, Status

from webapp.lib import pages
from webapp.lib.errors import ActionError, ApiError
from webapp.teams import access, actions
from webapp.teams.forms import MemberForm
from webapp.teams.models import Membership, Role

router = Router(tags=["teams"])
OWNER_ONLY = [Role.OWNER]


class MemberIn(Schema):
    user: str  # a username or an e-mail address
    role: Role = Role.MEMBER


class MemberOut(Schema):
    user_id: int
    username: str
    email: str
    role: str

    @staticmethod
    def resolve_username(obj: Membership) -> str:
        return obj.user.get_username()

    @staticmethod
    def resolve_email(obj: Membership) -> str:
        return obj.user.email


@router.get("/teams/{slug}/members", response=list[MemberOut], summary="The team's members")
def list_members(request, slug: str):
    team, _ = access.get_team(request.user, slug, roles=access.LAUNCH_ROLES)
    return Membership.objects.filter(team=team).select_related("user").order_by("role", "pk")


@router.put(
    "/teams/{slug}/members",
    response=MemberOut,
    summary="Add a person to the team or change their role (team owners)",
)
def set_member(request, slug: str, payload: MemberIn):
    team, _ = access.get_team(request.user, slug, roles=OWNER_ONLY)
    form = MemberForm({"user": payload.user, "role": payload.role})
    if not form.is_valid():
        raise ApiError(422, pages.form_problems(form))
    user = form.cleaned_data["user"]
    try:
        actions.set_membership(team, user, form.cleaned_data["role"])
    except ActionError as refused:
        raise ApiError(409, str(refused), "refused") from None
    return Membership.objects.select_related("user").get(team=team, user=user)


@router.delete(
    "/teams/{slug}/members/{int:user_id}",
    response={204: None},
    summary="Remove a person from the team (team owners; never its last owner)",
)
def remove_member(request, slug: str, user_id: int):
    team, _ = access.get_team(request.user, slug, roles=OWNER_ONLY)
    member = Membership.objects.filter(team=team, user_id=user_id).select_related("user").first()
    if member is None:
        raise ApiError(404, "That person is not in this team.")
    try:
        actions.remove_membership(team, member.user)
    except ActionError as refused:
        raise ApiError(409, str(refused), "refused") from None
    return Status(204, None)
