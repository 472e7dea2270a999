"""/api/v1/evaluations: an evaluation's systems and their state, for scripts (the judge
runs and sweeps are in ``webapp.judging.api``).

Members and owners only (like the pages): an evaluation names its systems, which
annotators must never see. Objects of another team are 404.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.http import HttpResponse, QueryDict
from ninja import Field, Router, Schema, Status

from webapp.evaluation import actions, contamination, results
from webapp.evaluation.forms import EvaluationForm
from webapp.evaluation.models import EvalStatus, Evaluation
from webapp.lib import pages
from webapp.lib.errors import ActionError, ApiError
from webapp.lib.numbers import ID, LARGEST
from webapp.lib.pagination import Limit, Offset, page
from webapp.teams import access, spend

router = Router(tags=["evaluations"])
ROLES = access.LAUNCH_ROLES


class SystemOut(Schema):
    id: int
    name: str
    kind: str
    status: str
    num_answers: int
    checkpoint: int | None
    step: int | None
    error: str

    @staticmethod
    def resolve_checkpoint(obj) -> int | None:
        return obj.checkpoint_id

    @staticmethod
    def resolve_step(obj) -> int | None:
        return obj.checkpoint.step if obj.checkpoint_id else None


class EvaluationOut(Schema):
    id: int
    team: str
    name: str
    status: str
    num_prompts: int
    test_sets: dict[str, int]
    created_at: datetime
    systems: list[SystemOut]
    sweep: int | None
    teacher_spend: dict[str, Any]  # its teacher answers and judge runs: teams.spend.totals

    @staticmethod
    def resolve_team(obj: Evaluation) -> str:
        return obj.team.slug

    @staticmethod
    def resolve_test_sets(obj: Evaluation) -> dict[str, int]:
        return results.test_set_sizes(obj)

    @staticmethod
    def resolve_systems(obj: Evaluation):
        return list(obj.systems.all())  # prefetched with their checkpoints (EVALUATIONS)

    @staticmethod
    def resolve_teacher_spend(obj: Evaluation) -> dict[str, Any]:
        return spend.totals(obj.teacher_spend.all())  # prefetched (EVALUATIONS)

    @staticmethod
    def resolve_sweep(obj: Evaluation) -> int | None:
        # The checkpoint sweep that made the evaluation, if one did: the judging app's
        # one-to-one row, read through its relation (getattr: its absence raises an
        # AttributeError subclass), as this app imports nothing above it.
        found = getattr(obj, "sweep", None)
        return found.pk if found is not None else None


class EvaluationDetailOut(EvaluationOut):
    # Per job it compares, how many of its prompts the job trained on: exact (normalised
    # text) and near (the set's groups of near duplicates). No row: none. Not in the list,
    # whose queries stay fixed in number.
    contamination: list[dict[str, Any]]
    # Each pair of systems (but the teacher, their reference) on each automatic score:
    # {"metric", "title", "a", "b", "n", "difference" (a − b), "low", "high" (paired
    # bootstrap 95%), "verdict" ("no clear difference" when the interval spans 0), "clear"}
    comparisons: list[dict[str, Any]]

    @staticmethod
    def resolve_contamination(obj: Evaluation) -> list[dict[str, Any]]:
        return contamination.of_evaluation(obj)

    @staticmethod
    def resolve_comparisons(obj: Evaluation) -> list[dict[str, Any]]:
        return results.comparisons(obj) if obj.status != EvalStatus.GENERATING else []


def _evaluations():
    """What EvaluationOut reads, in a fixed number of queries however many are listed."""
    return Evaluation.objects.select_related("team", "sweep").prefetch_related(
        "systems__checkpoint__job", "systems__job", "teacher_spend"
    )


def evaluation_for(request, evaluation_id: int) -> Evaluation:
    return access.get_object(_evaluations(), request.user, evaluation_id, ROLES)


class EvaluationIn(Schema):
    """The evaluation form's fields: its checks apply (webapp.evaluation.forms)."""

    team: str = Field(..., min_length=1)
    name: str = Field(..., min_length=1, max_length=200)
    prompt_set: int = ID
    prompt_choice: str = Field("test", pattern="^(test|all)$")
    limit: int | None = Field(None, ge=1, le=LARGEST)
    other_sets: list[int] = Field([], description="More test sets: a column each.")
    jobs: list[int] = Field([], description="Each job's final checkpoint (else its last).")
    include_base: bool = Field(True, description="Also each job's student before distillation.")
    checkpoints: list[int] = []
    teacher: int | None = Field(None, ge=1, le=LARGEST)
    model_paths: list[str] = Field([], description="Hub ids, checkpoint:ID or model:NAME.")
    max_new_tokens: int | None = Field(
        None, ge=1, description="Default: the largest max_response_tokens of the jobs."
    )
    auto_judge: int | None = Field(None, ge=1, le=LARGEST, description="Judge when ready.")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="None: greedy.")


@router.post(
    "/evaluations",
    response={201: EvaluationDetailOut},
    summary="Create an evaluation: generate each system's answers, then score (and judge)",
)
def create_evaluation(request, payload: EvaluationIn):
    team = access.team_for(request, payload.team, roles=ROLES)
    defaults = EvaluationForm(team, initial={"jobs": payload.jobs})
    data = QueryDict(mutable=True)
    fields = payload.dict(exclude={"team", "model_paths", "include_base"})
    if fields["max_new_tokens"] is None:
        fields["max_new_tokens"] = defaults.fields["max_new_tokens"].initial
    for key, value in fields.items():
        if isinstance(value, list):
            data.setlist(key, [str(v) for v in value])
        elif value is not None:
            data[key] = str(value)
    data["model_paths"] = "\n".join(payload.model_paths)
    if payload.include_base:
        data["include_base"] = "on"
    form = EvaluationForm(team, data)
    evaluation, _ = pages.submit(
        form,
        lambda _: form.create(request.user),
    )
    if evaluation is None:
        raise ApiError(422, pages.form_problems(form))
    return Status(201, evaluation_for(request, evaluation.pk))


@router.get("/evaluations", response=list[EvaluationOut], summary="Evaluations, newest first")
def list_evaluations(
    request, response: HttpResponse, team: str | None = None, limit: int = Limit,
    offset: int = Offset,
):  # fmt: skip
    rows = access.for_user(_evaluations(), request.user, roles=ROLES)
    if team:
        rows = rows.filter(team__slug=team)
    return page(request, response, rows.order_by("-created_at", "-pk"), limit, offset)


@router.get("/evaluations/{int:evaluation_id}", response=EvaluationDetailOut)
def get_evaluation(request, evaluation_id: int):
    return evaluation_for(request, evaluation_id)


class GenerateOut(Schema):
    systems: int  # how many failed systems generate again


@router.post(
    "/evaluations/{int:evaluation_id}/generate",
    response=GenerateOut,
    summary="Generate the failed systems' answers again",
)
def generate_again(request, evaluation_id: int):
    return {"systems": actions.request_generation(evaluation_for(request, evaluation_id))}


@router.delete(
    "/evaluations/{int:evaluation_id}",
    response={204: None},
    summary="Delete an evaluation with its answers, campaigns, votes and judge runs",
)
def delete_evaluation(request, evaluation_id: int):
    """409 while a worker writes to it (generating answers, a judge run)."""
    try:
        actions.delete_evaluation(evaluation_for(request, evaluation_id))
    except ActionError as refused:
        raise ApiError(409, str(refused), "still_needed") from None
    return Status(204, None)
