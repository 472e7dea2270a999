"""Every change to teacher endpoints goes through here: pages, the API and the worker.

The API key is write-only: it is encrypted here as it arrives, and only the worker
decrypts it, right before it calls the teacher. Functions that hold the plain key are
``sensitive_variables`` so that Django's error reports never show it.
"""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta
from functools import partial
from typing import Any

from django.contrib.auth.models import User
from django.db import IntegrityError, transaction
from django.db.models import ProtectedError
from django.utils import timezone
from django.views.decorators.debug import sensitive_variables

from webapp import dispatch
from webapp.lib import crypto
from webapp.lib.errors import ActionError
from webapp.teachers import ssrf
from webapp.teachers.models import (
    ConnectionStatus,
    ReasoningEffort,
    TeacherEndpoint,
    TemperatureMode,
    TokenParam,
    TrackerAccount,
)
from webapp.teachers.params import (
    LIMIT_RULES,
    PRICE_FIELDS,
    ParamError,
    clean_extra_body,
    clean_limits,
    clean_params,
    clean_prices,
)
from webapp.teams.models import Team

TEST_TASK = "gad.test_teacher"
# A test still pending after this long was lost (the task's hard limit is 90 s), so
# "Test connection" may enqueue a new one; before that, clicking again is a no-op.
PENDING_TIMEOUT = timedelta(seconds=120)
# Shorter keys show no characters at all: four of eight would give away half the key.
MIN_KEY_FOR_HINT = 12
MAX_KEY_LENGTH = 1000


class InvalidField(ActionError):
    """A refused value; ``field`` names it (``base_url``, ``params.temperature``...)."""

    def __init__(self, field: str, message: str):
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


class NameTaken(InvalidField):
    """Another endpoint of the team has this name (a conflict: HTTP 409 in the API)."""


class InUse(ActionError):
    """The endpoint cannot be deleted while jobs use it."""


def _validated(name: str, base_url: str, model: str, params: Any) -> dict[str, Any]:
    name, model = (name or "").strip(), (model or "").strip()
    if not name:
        raise InvalidField("name", "is required, e.g. 'gpt-4o-mini on OpenAI'")
    if len(name) > 100:
        raise InvalidField("name", "is longer than 100 characters")
    if not model:
        raise InvalidField("model", "is required: the model name the API expects, e.g. gpt-4o")
    if len(model) > 200:
        raise InvalidField("model", "is longer than 200 characters")
    if len((base_url or "").strip()) > 500:
        raise InvalidField("base_url", "is longer than 500 characters")
    try:
        base_url = ssrf.check_base_url(base_url or "")
        params = clean_params(params)
    except (ssrf.UnsafeURL, ParamError) as exc:
        raise InvalidField(exc.field, exc.message) from None
    return {"name": name, "base_url": base_url, "model": model, "params": params}


DIALECT_CHOICES = {
    "token_param": TokenParam,
    "temperature_mode": TemperatureMode,
    "reasoning_effort": ReasoningEffort,
}


def _dialect_fields(dialect: dict[str, Any] | None) -> dict[str, Any]:
    """The endpoint's dialect settings, each one of its choices, and its allow-listed
    ``extra_body`` (absent or None: unchanged)."""
    found: dict[str, Any] = {}
    for field, value in (dialect or {}).items():
        if field == "extra_body":
            if value is not None:
                try:
                    found[field] = clean_extra_body(value)
                except ParamError as exc:
                    raise InvalidField(exc.field, exc.message) from None
            continue
        choices = DIALECT_CHOICES.get(field)
        if choices is None:
            settings = [*DIALECT_CHOICES, "extra_body"]
            raise InvalidField(field, f"is not a setting; use {', '.join(settings)}")
        if value is None:
            continue
        if value not in choices.values:
            allowed = ", ".join(repr(v) for v in choices.values)
            raise InvalidField(field, f"must be one of {allowed}, not {str(value)[:40]!r}")
        found[field] = value
    return found


def _limit_fields(limits: dict[str, Any] | None) -> dict[str, Any]:
    """Requests and tokens per minute, requests in flight, and prices (absent:
    unchanged)."""
    unknown = sorted(set(limits or {}) - set(LIMIT_RULES) - set(PRICE_FIELDS))
    if unknown:
        names = ", ".join([*LIMIT_RULES, *PRICE_FIELDS])
        raise InvalidField(unknown[0], f"is not a limit or a price; use {names}")
    given = limits or {}
    try:
        return clean_limits({k: v for k, v in given.items() if k in LIMIT_RULES}) | clean_prices(
            {k: v for k, v in given.items() if k in PRICE_FIELDS}
        )
    except ParamError as exc:
        raise InvalidField(exc.field, exc.message) from None


def key_digest(plain: str) -> str:
    """A short one-way digest of a key (keys are long random strings: not guessable from
    it), for the answer cache's scope."""
    return hashlib.sha256(b"gad-studio-key:" + plain.encode()).hexdigest()[:16]


@sensitive_variables("api_key", "plain")
def _checked_key(field: str, api_key: str) -> str:
    plain = api_key.strip()
    if len(plain) > MAX_KEY_LENGTH:
        raise InvalidField(field, f"is longer than {MAX_KEY_LENGTH} characters")
    if not plain.isascii() or not plain.isprintable() or " " in plain:
        raise InvalidField(
            field, "contains spaces, line breaks or non-ASCII characters; paste the key alone"
        )
    return plain


@sensitive_variables("api_key", "plain")
def _set_key(endpoint: TeacherEndpoint, api_key: str) -> None:
    plain = _checked_key("api_key", api_key)
    endpoint.api_key_encrypted = crypto.encrypt(plain)
    endpoint.api_key_last4 = plain[-4:] if len(plain) >= MIN_KEY_FOR_HINT else ""
    endpoint.api_key_origin = ssrf.origin(endpoint.base_url)
    endpoint.api_key_digest = key_digest(plain)


def _clear_key(endpoint: TeacherEndpoint) -> None:
    endpoint.api_key_encrypted = ""
    endpoint.api_key_last4 = ""
    endpoint.api_key_origin = ""
    endpoint.api_key_digest = ""


def _clear_test(endpoint: TeacherEndpoint) -> None:
    endpoint.test_status = ""
    endpoint.test_latency_ms = None
    endpoint.test_error = ""
    endpoint.test_error_kind = ""
    endpoint.test_requested_at = None
    endpoint.tested_at = None


def _save(endpoint: TeacherEndpoint) -> None:
    try:
        with transaction.atomic():  # a savepoint: the caller's transaction stays usable
            endpoint.save()
    except IntegrityError:
        taken = TeacherEndpoint.objects.filter(team_id=endpoint.team_id, name=endpoint.name)
        if taken.exclude(pk=endpoint.pk).exists():
            raise NameTaken(
                "name",
                f"the team already has a teacher named {endpoint.name!r}; choose another name",
            ) from None
        raise


def _name_taken(team_id: int, name: str, exclude_pk: int | None = None) -> None:
    # Checked first for a friendly message; the unique constraint still decides races.
    if (
        TeacherEndpoint.objects.filter(team_id=team_id, name=name)
        .exclude(pk=exclude_pk or 0)
        .exists()
    ):
        raise NameTaken("name", f"the team already has a teacher named {name!r}; choose another")


@sensitive_variables("api_key")
def create_endpoint(
    team: Team,
    user: User | None,
    *,
    name: str,
    base_url: str,
    model: str,
    api_key: str | None = None,
    params: dict[str, Any] | None = None,
    dialect: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
) -> TeacherEndpoint:
    values = (
        _validated(name, base_url, model, params) | _dialect_fields(dialect) | _limit_fields(limits)
    )
    _name_taken(team.pk, values["name"])
    endpoint = TeacherEndpoint(team=team, created_by=user, **values)
    if api_key and api_key.strip():
        _set_key(endpoint, api_key)
    _save(endpoint)
    return endpoint


@sensitive_variables("api_key", "new_key")
def update_endpoint(
    endpoint: TeacherEndpoint,
    *,
    name: str,
    base_url: str,
    model: str,
    params: dict[str, Any] | None,
    api_key: str | None = None,
    remove_key: bool = False,
    dialect: dict[str, Any] | None = None,
    limits: dict[str, Any] | None = None,
) -> TeacherEndpoint:
    """Change the endpoint. A blank ``api_key`` keeps the stored key; ``remove_key`` drops it.

    A key is bound to the scheme, host and port it was entered for: a new base URL that
    points elsewhere drops the stored key unless a key is entered with it, so an edit can
    never send a team's key to a host its owner did not type it for.

    A change to where or how it connects forgets the last test result (a test still
    running then finds its row no longer pending and discards what it measured).
    """
    new_key = (api_key or "").strip()
    if new_key and remove_key:
        raise InvalidField("api_key", "either enter a new key or tick 'remove key', not both")
    values = (
        _validated(name, base_url, model, params) | _dialect_fields(dialect) | _limit_fields(limits)
    )
    _name_taken(endpoint.team_id, values["name"], exclude_pk=endpoint.pk)
    with transaction.atomic():
        row = TeacherEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        before = (row.base_url, row.model, row.params, row.api_key_encrypted, row.dialect())
        model_before = (row.base_url, row.model)
        for field, value in values.items():
            setattr(row, field, value)
        if new_key:
            _set_key(row, new_key)
        elif remove_key or (row.has_key and not row.key_goes_here):
            _clear_key(row)
        if (row.base_url, row.model) != model_before:
            # Another model, or another server: what the last test found is not its.
            row.found_token_param, row.found_temperature_fixed = "", False
            row.found_reasoning_tokens = None
        if (row.base_url, row.model, row.params, row.api_key_encrypted, row.dialect()) != before:
            _clear_test(row)
        _save(row)
    return row


def delete_endpoint(endpoint: TeacherEndpoint) -> None:
    with transaction.atomic():
        row = TeacherEndpoint.objects.select_for_update().get(pk=endpoint.pk)
        active = list(row.jobs.active().values_list("name", flat=True))
        if active:
            names = ", ".join(repr(n) for n in active[:3]) + (" …" if len(active) > 3 else "")
            raise InUse(
                f"Teacher {row.name!r} is used by {len(active)} active job(s) ({names}); "
                "cancel them or wait until they finish, then delete it."
            )
        try:
            row.delete()
        except ProtectedError as exc:
            raise InUse(
                f"Teacher {row.name!r} is kept by {len(exc.protected_objects)} past job(s) "
                "that used it, so it cannot be deleted."
            ) from None


def request_test(endpoint: TeacherEndpoint) -> bool:
    """Mark the endpoint's test pending and enqueue it; False if one is already running."""
    now = timezone.now()
    with transaction.atomic():
        started = (
            TeacherEndpoint.objects.filter(pk=endpoint.pk)
            .exclude(
                test_status=ConnectionStatus.PENDING,
                test_requested_at__gt=now - PENDING_TIMEOUT,
            )
            .update(
                test_status=ConnectionStatus.PENDING,
                test_requested_at=now,
                test_latency_ms=None,
                test_error="",
                test_error_kind="",
            )
        )
        if started:
            transaction.on_commit(partial(_enqueue_test, endpoint.pk))
    endpoint.refresh_from_db()
    return bool(started)


def _enqueue_test(endpoint_id: int) -> None:
    if not dispatch.send(TEST_TASK, [endpoint_id]):
        record_test_error(
            endpoint_id,
            "transient",
            "The workers' task queue cannot be reached, so no worker could run the test; "
            "try again in a minute.",
        )


def record_test_ok(endpoint_id: int, latency_ms: int, **found: Any) -> bool:
    """Write a successful test and what it found of the model's dialect (``found_*``);
    False if the row is no longer waiting for one."""
    return bool(
        TeacherEndpoint.objects.filter(pk=endpoint_id, test_status=ConnectionStatus.PENDING).update(
            test_status=ConnectionStatus.OK,
            test_latency_ms=latency_ms,
            test_error="",
            test_error_kind="",
            tested_at=timezone.now(),
            **{k: v for k, v in found.items() if k.startswith("found_")},
        )
    )


def record_test_error(endpoint_id: int, kind: str, message: str) -> bool:
    """Write a failed test with its kind (transient / prompt / run) and message."""
    return bool(
        TeacherEndpoint.objects.filter(pk=endpoint_id, test_status=ConnectionStatus.PENDING).update(
            test_status=ConnectionStatus.ERROR,
            test_latency_ms=None,
            test_error=message[:2000],
            test_error_kind=kind,
            tested_at=timezone.now(),
        )
    )


# ----------------------------------------------------------------------------- trackers

ENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def tracker_account(team) -> TrackerAccount:
    """The team's tracker accounts (unsaved and empty when it has none)."""
    return TrackerAccount.objects.filter(team=team).first() or TrackerAccount(team=team)


@sensitive_variables("wandb_api_key", "mlflow_token", "typed", "plain")
def save_trackers(
    team,
    *,
    wandb_entity: str = "",
    wandb_base_url: str = "",
    mlflow_tracking_uri: str = "",
    wandb_api_key: str = "",
    mlflow_token: str = "",
    remove_wandb_key: bool = False,
    remove_mlflow_token: bool = False,
) -> TrackerAccount:
    """Set the team's own W&B and MLflow accounts. Keys are write-only: blank keeps the
    stored one. URLs pass the SSRF check (the worker connects to them)."""
    account = tracker_account(team)
    entity = (wandb_entity or "").strip()
    if entity and not ENTITY.fullmatch(entity):
        raise InvalidField(
            "wandb_entity", "is a W&B team or user name: letters, digits, '_', '.', '-'"
        )
    urls = {}
    for field, url in (
        ("wandb_base_url", wandb_base_url),
        ("mlflow_tracking_uri", mlflow_tracking_uri),
    ):
        url = (url or "").strip()
        if len(url) > 500:
            raise InvalidField(field, "is longer than 500 characters")
        try:
            urls[field] = ssrf.check_base_url(url, field) if url else ""
        except ssrf.UnsafeURL as exc:
            raise InvalidField(exc.field, exc.message) from None
    account.wandb_entity = entity
    account.wandb_base_url = urls["wandb_base_url"]
    account.mlflow_tracking_uri = urls["mlflow_tracking_uri"]
    for field, typed, remove in (
        ("wandb_api_key", wandb_api_key, remove_wandb_key),
        ("mlflow_token", mlflow_token, remove_mlflow_token),
    ):
        encrypted, last4 = "", ""
        if not remove and not typed.strip():
            continue  # blank: the stored one stays
        if not remove:
            plain = _checked_key(field, typed)
            encrypted = crypto.encrypt(plain)
            last4 = plain[-4:] if len(plain) >= MIN_KEY_FOR_HINT else ""
        setattr(account, f"{field}_encrypted", encrypted)
        setattr(account, f"{field}_last4", last4)
    account.save()
    return account
