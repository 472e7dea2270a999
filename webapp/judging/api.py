"""/api/v1 judge runs and checkpoint sweeps: read the judge's Table 2 and a sweep's
proposal from a script, start a judge run or a sweep.

Members and owners only (like the pages). Objects of another team are 404.
"""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime
from typing import Any

from django.http import HttpResponse
from ninja import Field, Query, Router, Schema
from ninja import Status as HttpStatus

from webapp.evaluation.api import ROLES, evaluation_for
from webapp.evaluation.models import PromptChoice
from webapp.jobs.models import Job
from webapp.judging import actions, runs, sweep
from webapp.judging.models import Sweep
from webapp.lib.errors import ActionError, ApiError
from webapp.lib.numbers import ID, LARGEST
from webapp.lib.pagination import Limit, Offset, page
from webapp.promptsets.models import PromptSet
from webapp.teachers.models import TeacherEndpoint
from webapp.teams import access, spend
from webapp.teams.actions import QuotaExceeded

router = Router(tags=["evaluations"])


class JudgeRunOut(Schema):
    id: int
    judge: str
    status: str
    progress: dict[str, Any]
    forecast: dict[str, Any]
    tokens_used: int
    teacher_spend: dict[str, Any]  # tokens by kind and their price, teams.spend.totals
    token_cap: int | None
    error: str
    table: dict[str, Any] | None
    created_at: datetime
    finished_at: datetime | None

    @staticmethod
    def resolve_judge(obj) -> str:
        return obj.judge_name

    @staticmethod
    def resolve_table(obj) -> dict[str, Any] | None:
        return runs.table(obj)

    @staticmethod
    def resolve_teacher_spend(obj) -> dict[str, Any]:
        return spend.totals(obj.teacher_spend.all())

    @staticmethod
    def resolve_token_cap(obj) -> int | None:
        return runs.token_cap(obj)


class JudgeIn(Schema):
    judge: int = ID


class ContinueIn(Schema):
    # Default: twice the run's cap.
    token_cap: int | None = Field(None, ge=1, le=10**12, description="Tokens in all.")


class SweepIn(Schema):
    every: int = Field(1, ge=1, le=100_000)
    judge: int = ID
    prompt_set: int | None = Field(None, ge=1, le=LARGEST)  # default: the job's prompt set
    prompt_choice: str = PromptChoice.TEST
    limit: int | None = Field(sweep.DEFAULT_PROMPTS, ge=1, le=LARGEST)  # null: every prompt
    length_bound: float | None = Field(None, gt=0, le=10**9, allow_inf_nan=False)  # words


def _endpoint(team, pk: int, field: str) -> TeacherEndpoint:
    endpoint = TeacherEndpoint.objects.filter(team=team, pk=pk).first()
    if endpoint is None:
        raise ApiError(422, f"{field}: no teacher endpoint {pk} in team {team.slug}")
    return endpoint


@router.get(
    "/evaluations/{int:evaluation_id}/judge-runs",
    response=list[JudgeRunOut],
    summary="Judge runs, newest first, each with its Table 2 (columns = test sets)",
)
def list_judge_runs(
    request, response: HttpResponse, evaluation_id: int, limit: int = Limit, offset: int = Offset
):
    rows = evaluation_for(request, evaluation_id).judge_runs.all()
    return page(request, response, rows, limit, offset)


@router.post(
    "/evaluations/{int:evaluation_id}/judge-runs",
    response={201: JudgeRunOut},
    summary="Judge the answers with one of the team's endpoints (cost as forecast in the run)",
)
def start_judge_run(request, evaluation_id: int, payload: JudgeIn):
    evaluation = evaluation_for(request, evaluation_id)
    endpoint = _endpoint(evaluation.team, payload.judge, "judge")
    try:
        run = actions.launch(evaluation, endpoint, request.user)
    except QuotaExceeded as refused:
        raise ApiError(429, str(refused), "quota_exceeded") from None
    except ActionError as refused:
        raise ApiError(422, str(refused)) from None
    return HttpStatus(201, run)


@router.post(
    "/evaluations/{int:evaluation_id}/judge-runs/{int:run_id}/continue",
    response=JudgeRunOut,
    summary="Continue a judge run paused at its token cap, with the cap raised",
)
def continue_judge_run(request, evaluation_id: int, run_id: int, payload: ContinueIn):
    run = evaluation_for(request, evaluation_id).judge_runs.filter(pk=run_id).first()
    if run is None:
        raise ApiError(404, f"no judge run {run_id} in evaluation {evaluation_id}")
    try:
        return actions.continue_run(run, payload.token_cap)
    except QuotaExceeded as refused:
        raise ApiError(429, str(refused), "quota_exceeded") from None
    except ActionError as refused:
        raise ApiError(422, str(refused)) from None


@router.get(
    "/sweeps/{int:sweep_id}",
    summary="A checkpoint sweep: score and length per step, and the proposed checkpoint",
)
def get_sweep(
    request,
    sweep_id: int,
    bound: float | None = Query(None, gt=0, le=10**9, allow_inf_nan=False),
) -> dict[str, Any]:
    found = access.get_object(
        Sweep.objects.select_related("evaluation__team", "job"),
        request.user,
        sweep_id,
        ROLES,
        team_field="evaluation__team",
    )
    if bound is not None and bound <= 0:
        raise ApiError(422, "bound: must be a positive number of words")
    r = sweep.result(found, found.length_bound if bound is None else bound)
    best = r.proposal.point
    return {
        "id": found.pk,
        "job": found.job_id,
        "evaluation": found.evaluation_id,
        "every": found.every,
        "length_bound": r.bound,
        "status": found.evaluation.status,
        "judged": r.run is not None,
        "points": [asdict(p) for p in r.points],
        "proposal": {
            "step": best.step if best else None,
            "checkpoint": best.checkpoint_id if best else None,
            "message": r.proposal.message,
        },
    }


@router.post(
    "/jobs/{int:job_id}/sweeps",
    response={201: dict[str, int]},
    summary="Sweep a job's checkpoints: every k-th one answers a small test set, judged",
)
def start_sweep(request, job_id: int, payload: SweepIn):
    job = access.get_object(Job.objects.select_related("team"), request.user, job_id, ROLES)
    judge = _endpoint(job.team, payload.judge, "judge")
    prompt_set = job.prompt_set
    if payload.prompt_set is not None:
        prompt_set = PromptSet.objects.filter(team=job.team, pk=payload.prompt_set).first()
        if prompt_set is None:
            raise ApiError(422, f"prompt_set: no prompt set {payload.prompt_set} in the team")
    if prompt_set is None:
        raise ApiError(422, "prompt_set: the job's prompt set was deleted; name another")
    if payload.prompt_choice not in PromptChoice.values:
        raise ApiError(422, f"prompt_choice: must be one of {', '.join(PromptChoice.values)}")
    try:
        created = actions.create_sweep(
            job,
            request.user,
            every=payload.every,
            judge=judge,
            prompt_set=prompt_set,
            prompt_choice=payload.prompt_choice,
            limit=payload.limit,
            length_bound=payload.length_bound,
        )
    except QuotaExceeded as refused:
        raise ApiError(429, str(refused), "quota_exceeded") from None
    except ActionError as refused:
        raise ApiError(422, str(refused)) from None
    return HttpStatus(201, {"id": created.pk, "evaluation": created.evaluation_id})
