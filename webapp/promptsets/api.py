"""/api/v1/prompt-sets: upload (multipart), list, detail — same validation as the pages."""

from __future__ import annotations

import time
from datetime import datetime

from django.conf import settings
from django.http import HttpResponse
from ninja import Field, File, Form, Router, Schema, Status
from ninja.files import UploadedFile

from webapp.lib.errors import ActionError, ApiError
from webapp.lib.http import UPLOAD_WAITS
from webapp.lib.pagination import Limit, Offset, page
from webapp.promptsets import actions, contamination
from webapp.promptsets.ingest import UploadRejected, stage
from webapp.promptsets.models import PromptSet, Upload, UploadStatus
from webapp.teams import access

router = Router(tags=["prompt sets"])


class Contamination(Schema):
    exact: int = Field(description="Held-out prompts whose normalised text is a training prompt's")
    near: int = Field(description="Other held-out prompts with a near duplicate in training")
    checked: int = Field(description="Held-out prompts checked")


class SplitCounts(Schema):
    train: int
    test: int


class PromptSetOut(Schema):
    id: int
    team: str
    name: str
    num_prompts: int
    num_with_teacher: int
    num_duplicates: int
    num_dropped: int
    num_test: int
    source_name: str
    created_at: datetime
    split: SplitCounts
    contamination: Contamination

    @staticmethod
    def resolve_team(obj: PromptSet) -> str:
        return obj.team.slug

    @staticmethod
    def resolve_split(obj: PromptSet) -> dict[str, int]:
        return {"train": obj.num_prompts - obj.num_test, "test": obj.num_test}

    @staticmethod
    def resolve_contamination(obj: PromptSet) -> dict[str, int]:
        return contamination.of_split(obj)


class SplitIn(Schema):
    num_test: int = Field(ge=0, description="How many prompts to hold out")
    seed: int = Field(0, ge=0, description="Which ones, at random: the same seed, the same split")
    dedupe: bool = Field(
        True,
        description="Hold out only prompts with no exact or near duplicate in the set (the "
        "default), so that none also occurs in training",
    )


class UploadOut(Schema):
    upload: int
    status: str
    records_read: int
    status_url: str
    error: str
    problems: list[str]
    prompt_set: int | None


def _upload_out(upload: Upload) -> dict:
    return {
        "upload": upload.pk,
        "status": upload.status,
        "records_read": upload.records_read,
        "status_url": f"/api/v1/prompt-sets/uploads/{upload.pk}",
        "error": upload.error,
        "problems": upload.problems,
        "prompt_set": upload.prompt_set_id,
    }


@router.post(
    "",
    response={201: PromptSetOut, 202: UploadOut},
    summary="Upload a prompt file",
    description="A worker checks and imports the file. The answer waits for it (up to "
    "GAD_UPLOAD_WAIT_S): 201 with the prompt set, or 422 with the problems and their line "
    "numbers; a file still being imported then is 202 with its upload's status URL. Only a "
    "few uploads wait at once (per person and in all); past them the answer is 202 at once.",
)
def create_prompt_set(
    request,
    team: Form[str],
    file: File[UploadedFile],
    name: Form[str] = "",
    drop_duplicates: Form[bool] = False,
):
    owner = access.team_for(request, team, roles=access.LAUNCH_ROLES)
    try:
        upload = stage(owner, request.user, name, file, drop_duplicates)
    except UploadRejected as rejected:
        code = "too_large" if rejected.status == 413 else "invalid_file"
        raise ApiError(rejected.status, str(rejected), code) from None
    # A waiting request holds one of the web process's few threads: only a few may.
    with UPLOAD_WAITS.held(request.user.pk) as may_wait:
        deadline = time.monotonic() + (settings.GAD_UPLOAD_WAIT_S if may_wait else 0)
        while not upload.ended and time.monotonic() < deadline:
            time.sleep(0.2)  # the worker imports it; this request only waits
            upload.refresh_from_db()
    return _outcome(upload)


@router.get(
    "/uploads/{int:upload_id}",
    response={200: UploadOut, 201: PromptSetOut},
    summary="An upload being imported: its progress, then its prompt set (201) or problems",
)
def get_upload(request, upload_id: int):
    found = access.get_object(
        Upload.objects.select_related("prompt_set__team"),
        request.user,
        upload_id,
        access.LAUNCH_ROLES,
    )
    if not found.ended:
        return Status(200, _upload_out(found))
    return _outcome(found)


def _outcome(upload: Upload):
    if upload.status == UploadStatus.DONE and upload.prompt_set is not None:
        return Status(201, upload.prompt_set)
    if upload.status == UploadStatus.FAILED:
        detail = " ".join([upload.error, "; ".join(upload.problems)]).strip()
        raise ApiError(422, detail, "invalid_file")
    return Status(202, _upload_out(upload))


@router.get("", response=list[PromptSetOut], summary="Prompt sets of your teams")
def list_prompt_sets(
    request, response: HttpResponse, team: str | None = None, limit: int = Limit,
    offset: int = Offset,
):  # fmt: skip
    rows = access.for_user(
        PromptSet.objects.select_related("team"), request.user, roles=access.LAUNCH_ROLES
    )
    if team:
        rows = rows.filter(team=access.team_for(request, team, roles=access.LAUNCH_ROLES))
    return page(request, response, rows.order_by("-created_at", "-pk"), limit, offset)


@router.get("/{int:prompt_set_id}", response=PromptSetOut)
def get_prompt_set(request, prompt_set_id: int):
    return access.get_object(
        PromptSet.objects.select_related("team"), request.user, prompt_set_id, access.LAUNCH_ROLES
    )


@router.delete(
    "/{int:prompt_set_id}",
    response={204: None},
    summary="Delete a prompt set (409 while a running job uses it)",
)
def delete_prompt_set(request, prompt_set_id: int):
    try:
        actions.delete_prompt_set(get_prompt_set(request, prompt_set_id))
    except ActionError as refused:
        raise ApiError(409, str(refused), "still_needed") from None
    return Status(204, None)


@router.post(
    "/{int:prompt_set_id}/split",
    response=PromptSetOut,
    summary="Choose the held-out split (without duplicates of training prompts by default)",
)
def split_prompt_set(request, prompt_set_id: int, payload: SplitIn):
    found = access.get_object(
        PromptSet.objects.select_related("team"), request.user, prompt_set_id, access.LAUNCH_ROLES
    )
    try:
        return actions.set_test_split(found, payload.num_test, payload.seed, payload.dedupe)
    except ActionError as refused:
        raise ApiError(422, str(refused)) from None
