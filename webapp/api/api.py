"""REST API v1 (DESIGN.md, "REST API v1"): Bearer tokens, JSON errors of one shape.

Every error is ``{"error": "<code>", "detail": "<message>"}``; objects of another team
are 404 through ``webapp.teams.access``, exactly as on the pages.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from ninja import NinjaAPI, Schema
from ninja.errors import AuthenticationError, HttpError, ValidationError
from ninja.parser import Parser
from ninja.security import HttpBearer

from webapp.lib.errors import ApiError
from webapp.lib.http import client_ip
from webapp.teams import access, spend
from webapp.teams.actions import authenticate_token
from webapp.teams.models import Membership, Quota

log = logging.getLogger(__name__)

ERROR_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    422: "validation_error",
    429: "rate_limited",
}


class BearerToken(HttpBearer):
    """Bearer tokens, with the sign-in's limit on guessing: after GAD_LOGIN_FAILURE_LIMIT
    invalid tokens from one address (the client's, behind the trusted proxies), its
    invalid tokens are refused with 429 for GAD_LOGIN_LOCKOUT_MINUTES. The token is
    checked first: a valid one is never refused because someone else at the same
    address guessed wrong."""

    def authenticate(self, request: HttpRequest, token: str):
        user = authenticate_token(token)
        if user is not None:
            request.user = user
            return user
        address = client_ip(request)
        failures = f"gad:api-token-failures:{address}"
        minutes = settings.GAD_LOGIN_LOCKOUT_MINUTES
        if cache.get(failures, 0) >= settings.GAD_LOGIN_FAILURE_LIMIT:
            log.warning("API: invalid token from %s (locked out after failures)", address)
            raise HttpError(
                429,
                f"Too many invalid tokens from this address; try again in {minutes} minutes.",
            )
        if cache.add(failures, 1, timeout=minutes * 60) is False:
            cache.incr(failures)
        log.warning("API: invalid token from %s", address)
        return None


class StrictJSON(Parser):
    """Request bodies as JSON, refusing what the database or the maths cannot hold:
    NUL characters (PostgreSQL text), NaN and Infinity (not numbers), numbers of more
    than 4,300 digits and nesting deeper than Python's recursion (both raise in
    ``json.loads``). ninja answers any parse failure 400; the reason, kept on the
    request, becomes the error's detail (``_http_error``)."""

    def parse_body(self, request: HttpRequest) -> Any:
        try:
            data = json.loads(request.body, parse_constant=_not_a_number)
        except RecursionError:
            return self._refuse(request, "the JSON is nested too deeply")
        except ValueError as e:
            return self._refuse(request, f"the body is not valid JSON: {str(e).split(';')[0]}")
        where = _nul_in(data)
        if where is not None:
            return self._refuse(request, f"{where or 'the body'}: NUL characters are not allowed")
        return data

    @staticmethod
    def _refuse(request: HttpRequest, reason: str) -> Any:
        request.gad_body_problem = reason  # type: ignore[attr-defined]  # read by _http_error
        raise ValueError(reason)


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a number")


def _nul_in(value: Any, path: str = "") -> str | None:
    """The path of the first string (or key) holding a NUL character, or None."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            if "\x00" in str(key):
                return here
            found = _nul_in(item, here)
            if found is not None:
                return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _nul_in(item, f"{path}[{i}]")
            if found is not None:
                return found
    return None


api = NinjaAPI(
    title="GAD Studio API",
    version="1",
    description="Distil a black-box teacher into an open student with GAD. "
    "Authenticate with `Authorization: Bearer <token>` (create tokens on your profile page).",
    auth=BearerToken(),
    urls_namespace="api-v1",
    parser=StrictJSON(),
    openapi_url="/openapi.json",
    docs_url="/docs",
)


def error_response(status: int, detail: str, code: str | None = None) -> JsonResponse:
    return JsonResponse(
        {"error": code or ERROR_CODES.get(status, "error"), "detail": detail}, status=status
    )


@api.exception_handler(AuthenticationError)
def _unauthorized(request, exc):
    return error_response(
        401, "Missing or invalid token: send `Authorization: Bearer <token>` with an active token."
    )


@api.exception_handler(ValidationError)
def _invalid(request, exc: ValidationError):
    problems = []
    for err in exc.errors:
        where = ".".join(
            str(part) for part in err.get("loc", ()) if part not in ("body", "payload")
        )
        problems.append(f"{where}: {err.get('msg', 'invalid')}" if where else err.get("msg", ""))
    return error_response(422, "; ".join(problems) or "Invalid request.")


@api.exception_handler(HttpError)
def _http_error(request, exc: HttpError):
    detail = str(exc)
    problem = getattr(request, "gad_body_problem", None)
    if exc.status_code == 400 and problem:
        detail = f"Cannot parse the request body: {problem}."
    return error_response(exc.status_code, detail, getattr(exc, "code", None))


@api.exception_handler(Http404)
def _not_found(request, exc):
    return error_response(404, "Not found.")


@api.exception_handler(PermissionDenied)
def _forbidden(request, exc):
    return error_response(403, str(exc) or "Your role does not allow this.")


def api_not_found(request: HttpRequest) -> HttpResponse:
    return error_response(404, f"No API endpoint at {request.path}; see /api/v1/openapi.json.")


class TeamOut(Schema):
    id: int
    slug: str
    name: str
    role: str
    suspended: bool


class UserOut(Schema):
    id: int
    username: str
    email: str


class MeOut(Schema):
    user: UserOut
    teams: list[TeamOut]


@api.get("/me", response=MeOut, summary="The token's user and their teams with roles")
def me(request):
    rows = (
        Membership.objects.filter(user=request.user).select_related("team").order_by("team__name")
    )
    return {
        "user": request.user,
        "teams": [
            {
                "id": m.team.id,
                "slug": m.team.slug,
                "name": m.team.name,
                "role": m.role,
                "suspended": m.team.is_suspended,
            }
            for m in rows
        ],
    }


@api.get(
    "/teams/{slug}/usage",
    summary="A month of the team's teacher spend (members and owners)",
)
def team_usage(request, slug: str, month: str | None = None) -> dict:
    """``month``: YYYY-MM (default this month, UTC). Its total and its spend by what it
    was for, by user and by endpoint (tokens by kind; ``cost_usd`` over the priced
    calls, ``unpriced_calls`` the others), and the team's monthly limit in money."""
    team = access.team_for(request, slug, roles=access.LAUNCH_ROLES)
    found = spend.month_range(month)
    if found is None:
        raise ApiError(422, "month: use YYYY-MM, e.g. 2026-12")
    report = spend.month_report(team, *found)
    limit = Quota.objects.get(team=team).teacher_dollars_per_month
    report["dollars_per_month"] = None if limit is None else str(limit)
    return report


def _add_routers() -> None:
    # Imported here so that each app's router module can import this one's helpers.
    from webapp.annotation.api import router as campaigns
    from webapp.evaluation.api import router as evaluations
    from webapp.jobs.api import router as jobs
    from webapp.judging.api import router as judging
    from webapp.promptsets.api import router as prompt_sets
    from webapp.teachers.api import router as teachers
    from webapp.teachers.api import trackers_router as trackers
    from webapp.teams.api import router as teams

    api.add_router("/prompt-sets", prompt_sets)
    api.add_router("/teachers", teachers)
    api.add_router("/", jobs)
    api.add_router("/", evaluations)
    api.add_router("/", judging)
    api.add_router("/", campaigns)
    api.add_router("/", teams)
    api.add_router("/", trackers)


_add_routers()

__all__ = ["api", "api_not_found"]
