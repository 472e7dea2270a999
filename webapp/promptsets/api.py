"""/api/v1/prompt-sets: upload (multipart), list, detail — same validation as the pages."""

from __future__ import annotations

from datetime import datetime

from ninja import File, Form, Router, Schema, Status
from ninja.files import UploadedFile

from webapp.api.common import ApiError, team_for
from webapp.promptsets.ingest import UploadRejected, ingest
from webapp.promptsets.models import PromptSet
from webapp.teams import access

router = Router(tags=["prompt sets"])


class PromptSetOut(Schema):
    id: int
    team: str
    name: str
    num_prompts: int
    num_with_teacher: int
    num_duplicates: int
    num_test: int
    source_name: str
    created_at: datetime

    @staticmethod
    def resolve_team(obj: PromptSet) -> str:
        return obj.team.slug


@router.post("", response={201: PromptSetOut}, summary="Upload a prompt file")
def create_prompt_set(request, team: Form[str], file: File[UploadedFile], name: Form[str] = ""):
    owner = team_for(request, team, roles=access.LAUNCH_ROLES)
    try:
        prompt_set = ingest(owner, request.user, name, file)
    except UploadRejected as rejected:
        code = "too_large" if rejected.status == 413 else "invalid_file"
        raise ApiError(rejected.status, str(rejected), code) from None
    return Status(201, prompt_set)


@router.get("", response=list[PromptSetOut], summary="Prompt sets of your teams")
def list_prompt_sets(request, team: str | None = None):
    rows = access.for_user(
        PromptSet.objects.select_related("team"), request.user, roles=access.LAUNCH_ROLES
    )
    if team:
        rows = rows.filter(team=team_for(request, team, roles=access.LAUNCH_ROLES))
    return rows


@router.get("/{int:prompt_set_id}", response=PromptSetOut)
def get_prompt_set(request, prompt_set_id: int):
    return access.get_object(
        PromptSet.objects.select_related("team"), request.user, prompt_set_id, access.LAUNCH_ROLES
    )
