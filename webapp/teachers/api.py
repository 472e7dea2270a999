"""REST API v1 for teacher endpoints (DESIGN.md, "REST API v1").

The API key is write-only: responses carry ``api_key_hint`` ("••••abcd") or null.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from django.http import HttpResponse
from ninja import Field, Router, Schema, Status
from pydantic import SecretStr, field_validator

from webapp.lib import crypto
from webapp.lib.errors import ApiError
from webapp.lib.numbers import check_json_numbers
from webapp.lib.pagination import Limit, Offset, page
from webapp.teachers import actions
from webapp.teachers.models import TeacherEndpoint
from webapp.teachers.params import PRICE_FIELDS
from webapp.teams import access

router = Router(tags=["teachers"])


class TeacherSettings(Schema):
    """What an endpoint is asked with, shared by creating and changing one."""

    # SecretStr: the parsed payload shows "**********" in reprs and error reports.
    api_key: SecretStr | None = Field(None, description="Write-only; stored encrypted.")
    params: dict[str, Any] | None = Field(
        None, description="Default sampling: temperature, top_p, max_tokens, seed."
    )

    token_param: Literal["auto", "max_tokens", "max_completion_tokens"] | None = Field(
        None,
        description="How the answer budget is sent; auto (default): what Test connection "
        "finds (GPT-5 and the o-series want max_completion_tokens).",
    )
    temperature_mode: Literal["auto", "honour", "omit"] | None = Field(
        None, description="omit: the model accepts only its default temperature."
    )
    reasoning_effort: Literal["", "minimal", "low", "medium", "high"] | None = Field(
        None, description="Reasoning models only; '' is the model's default."
    )
    extra_body: dict[str, Any] | None = Field(
        None,
        description="Vendor options sent with every request, from an allow-list "
        "(top_k, min_p, chat_template_kwargs, verbosity, ...); {} clears them.",
    )
    requests_per_minute: int | None = Field(
        None, description="Shared by every job, evaluation and judge run of the site; 0 clears."
    )
    tokens_per_minute: int | None = Field(None, description="As requests_per_minute.")
    concurrency: int | None = Field(None, description="Requests in flight at once (default 16).")
    price_input: Decimal | None = Field(
        None, description="$ per million input tokens; null: the site's default for the model."
    )
    price_output: Decimal | None = Field(None, description="$ per million output tokens.")
    price_cached_input: Decimal | None = Field(
        None, description="$ per million cached input tokens; null: billed as input."
    )
    batch_discount: Decimal | None = Field(None, description="The share a batch saves (0.5).")

    @field_validator("params", "extra_body")
    @classmethod
    def _finite_numbers(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return check_json_numbers(value, "params")

    def settings(self) -> dict[str, Any]:
        """The keyword arguments of create_endpoint and update_endpoint that it carries."""
        return {
            "api_key": self.api_key.get_secret_value() if self.api_key else None,
            "dialect": self.dialect(),
            "limits": self.limits(),
        }

    def dialect(self) -> dict[str, Any]:
        return {
            "token_param": self.token_param,
            "temperature_mode": self.temperature_mode,
            "reasoning_effort": self.reasoning_effort,
            "extra_body": self.extra_body,
        }

    def limits(self) -> dict[str, Any]:
        """The limits sent (0 clears a per-minute limit; absent: unchanged)."""
        sent = {
            "requests_per_minute": self.requests_per_minute,
            "tokens_per_minute": self.tokens_per_minute,
            "concurrency": self.concurrency,
        }
        sent |= {name: getattr(self, name) for name in PRICE_FIELDS}
        fields = self.model_fields_set
        per_minute = ("requests_per_minute", "tokens_per_minute")
        return {
            k: (None if v == 0 and k in per_minute else v)
            for k, v in sent.items()
            if k in fields and (v is not None or k != "concurrency")
        }


class TeacherIn(TeacherSettings):
    team: str = Field(description="The team's slug.")
    name: str
    base_url: str = Field(description="Where the OpenAI-compatible API starts, e.g. …/v1.")
    model: str


class LastTestOut(Schema):
    status: str = Field(description="'' (never tested), pending, ok or error.")
    latency_ms: int | None
    error: str
    error_kind: str = Field(description="transient, prompt or run; '' unless status is error.")
    tested_at: datetime | None


class TeacherOut(Schema):
    id: int
    team: str
    name: str
    base_url: str
    model: str
    api_key_hint: str | None = Field(description="'••••' and the key's last 4 characters.")
    params: dict[str, Any]
    token_param: str
    temperature_mode: str
    reasoning_effort: str
    extra_body: dict[str, Any]
    requests_per_minute: int | None
    tokens_per_minute: int | None
    concurrency: int
    price_input: Decimal | None
    price_output: Decimal | None
    price_cached_input: Decimal | None
    batch_discount: Decimal
    prices_from: str = Field(
        description="Where the prices in use come from: 'endpoint', 'site default for "
        "gpt-5*', or '' (no price: costs are not shown in money)."
    )
    dialect_found: str = Field(
        description="What the last Test connection found, e.g. 'uses max_completion_tokens; "
        "temperature fixed at its default (1); spends ~64 reasoning tokens per answer'."
    )
    last_test: LastTestOut
    created_at: datetime
    updated_at: datetime


def _out(endpoint: TeacherEndpoint) -> dict[str, Any]:
    return {
        "id": endpoint.pk,
        "team": endpoint.team.slug,
        "name": endpoint.name,
        "base_url": endpoint.base_url,
        "model": endpoint.model,
        "api_key_hint": endpoint.api_key_hint,
        "params": endpoint.params,
        "token_param": endpoint.token_param,
        "temperature_mode": endpoint.temperature_mode,
        "reasoning_effort": endpoint.reasoning_effort,
        "extra_body": endpoint.extra_body,
        "requests_per_minute": endpoint.requests_per_minute,
        "tokens_per_minute": endpoint.tokens_per_minute,
        "concurrency": endpoint.concurrency,
        **{name: getattr(endpoint, name) for name in PRICE_FIELDS},
        "prices_from": endpoint.prices()[1],
        "dialect_found": endpoint.dialect_found(),
        "last_test": endpoint.last_test(),
        "created_at": endpoint.created_at,
        "updated_at": endpoint.updated_at,
    }


def _get(request, teacher_id: int) -> TeacherEndpoint:
    return access.get_object(
        TeacherEndpoint.objects.select_related("team"),
        request.user,
        teacher_id,
        roles=access.LAUNCH_ROLES,
    )


@router.post("", response={201: TeacherOut}, summary="Register a teacher endpoint")
def create_teacher(request, payload: TeacherIn):
    crypto.hide_key_in_error_reports(request)
    team = access.team_for(request, payload.team, roles=access.LAUNCH_ROLES)
    try:
        endpoint = actions.create_endpoint(
            team,
            request.user,
            name=payload.name,
            base_url=payload.base_url,
            model=payload.model,
            params=payload.params,
            **payload.settings(),
        )
    except actions.InvalidField as exc:
        raise _refused(exc) from None
    return Status(201, _out(endpoint))


def _refused(exc: actions.InvalidField) -> ApiError:
    return ApiError(409 if isinstance(exc, actions.NameTaken) else 422, str(exc))


@router.get("", response=list[TeacherOut], summary="Teacher endpoints of your teams")
def list_teachers(
    request, response: HttpResponse, team: str | None = None, limit: int = Limit,
    offset: int = Offset,
):  # fmt: skip
    # One filter() call, so that user and role are matched on the same membership row.
    rows = TeacherEndpoint.objects.filter(
        team__memberships__user=request.user,
        team__memberships__role__in=access.LAUNCH_ROLES,
    )
    if team is not None:
        rows = rows.filter(team=access.team_for(request, team, roles=access.LAUNCH_ROLES))
    rows = rows.select_related("team").order_by("team__slug", "name", "pk")
    return [_out(e) for e in page(request, response, rows, limit, offset)]


@router.get("/{teacher_id}", response=TeacherOut, summary="One teacher endpoint")
def get_teacher(request, teacher_id: int):
    return _out(_get(request, teacher_id))


class TeacherPatch(TeacherSettings):
    """What to change: a field left out keeps its value. ``api_key`` replaces the key,
    ``remove_key`` drops it; a new base URL on another host drops the stored key unless a
    key comes with it (the key is bound to where it was entered for)."""

    name: str | None = None
    base_url: str | None = None
    model: str | None = None
    remove_key: bool = False


@router.patch("/{teacher_id}", response=TeacherOut, summary="Change a teacher endpoint")
def update_teacher(request, teacher_id: int, payload: TeacherPatch):
    crypto.hide_key_in_error_reports(request)
    endpoint = _get(request, teacher_id)
    sent = payload.model_fields_set
    try:
        endpoint = actions.update_endpoint(
            endpoint,
            name=payload.name if payload.name is not None else endpoint.name,
            base_url=payload.base_url if payload.base_url is not None else endpoint.base_url,
            model=payload.model if payload.model is not None else endpoint.model,
            params=payload.params if "params" in sent else endpoint.params,
            remove_key=payload.remove_key,
            **payload.settings(),
        )
    except actions.InvalidField as exc:
        raise _refused(exc) from None
    return _out(endpoint)


@router.delete(
    "/{teacher_id}",
    response={204: None},
    summary="Delete a teacher endpoint (409 while a running job or judge run uses it)",
)
def delete_teacher(request, teacher_id: int):
    try:
        actions.delete_endpoint(_get(request, teacher_id))
    except actions.InUse as refused:
        raise ApiError(409, str(refused), "still_needed") from None
    return Status(204, None)


@router.post(
    "/{teacher_id}/test", response={202: TeacherOut}, summary="Test the connection (async)"
)
def start_teacher_test(request, teacher_id: int):
    endpoint = _get(request, teacher_id)
    actions.request_test(endpoint)
    return Status(202, _out(endpoint))


# ----------------------------------------------------------------------------- trackers
# The team's own W&B and MLflow accounts (the trackers page): mounted at /api/v1/teams/.

trackers_router = Router(tags=["teams"])


class TrackersIn(Schema):
    """Like the page: a URL or entity left out is cleared, a key left out is kept."""

    wandb_entity: str = Field("", max_length=100)
    wandb_base_url: str = Field("", max_length=500)
    wandb_api_key: SecretStr | None = Field(None, description="Write-only; stored encrypted.")
    remove_wandb_key: bool = False
    mlflow_tracking_uri: str = Field("", max_length=500)
    mlflow_token: SecretStr | None = Field(None, description="Write-only; stored encrypted.")
    remove_mlflow_token: bool = False


class TrackersOut(Schema):
    wandb_entity: str
    wandb_base_url: str
    wandb_key_hint: str | None
    mlflow_tracking_uri: str
    mlflow_token_hint: str | None


@trackers_router.get("/teams/{slug}/trackers", response=TrackersOut, summary="Tracker accounts")
def get_trackers(request, slug: str):
    return actions.tracker_account(access.team_for(request, slug, roles=access.LAUNCH_ROLES))


@trackers_router.put(
    "/teams/{slug}/trackers",
    response=TrackersOut,
    summary="Set the team's W&B and MLflow accounts, which the workers sync runs to",
)
def set_trackers(request, slug: str, payload: TrackersIn):
    crypto.hide_key_in_error_reports(request)
    team = access.team_for(request, slug, roles=access.LAUNCH_ROLES)
    values = payload.dict(exclude={"wandb_api_key", "mlflow_token"})
    for key in ("wandb_api_key", "mlflow_token"):
        secret = getattr(payload, key)
        values[key] = secret.get_secret_value() if secret else ""
    try:
        return actions.save_trackers(team, **values)
    except actions.InvalidField as exc:
        raise ApiError(422, str(exc)) from None
