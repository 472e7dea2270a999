"""Evaluation pages: the list, a new evaluation, its page (systems, generation
progress, and what the judging and annotation apps show of it), its status poll,
generating again, and deletion."""

from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.core.cache import cache
from django.http import HttpResponse, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.evaluation import actions, contamination, panels, results
from webapp.evaluation.access import evaluation_for
from webapp.evaluation.forms import EvaluationForm
from webapp.evaluation.models import EvalStatus, Evaluation
from webapp.lib import pages
from webapp.lib.errors import ActionError
from webapp.lib.pages import AuthenticatedRequest
from webapp.nodes import presence
from webapp.teams import access, spend

# ----------------------------------------------------------------------------- evaluations


@login_required
def evaluation_list(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    team = access.working_team(request, slug)
    evaluations = Evaluation.objects.filter(team=team).select_related("prompt_set", "created_by")
    return render(
        request,
        "evaluation/list.html",
        {
            "team": team,
            "evaluations": evaluations.prefetch_related("systems", "campaigns")[:200],
            **panels.list_context(request.user, team),
        },
    )


@login_required
def evaluation_create(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    team = access.working_team(request, slug)
    status = 200
    form = EvaluationForm(team, request.POST or None, initial=_from_jobs(request))
    if request.method == "POST":
        evaluation, status = pages.submit(
            form,
            lambda _: form.create(request.user),
        )
        if evaluation is not None:
            messages.success(request, f"Generating the answers of {evaluation.name}.")
            return redirect("evaluation", slug=team.slug, pk=evaluation.pk)
    return render(request, "evaluation/create.html", {"team": team, "form": form}, status=status)


def _from_jobs(request: AuthenticatedRequest) -> dict:
    """The jobs a job page's "Evaluate" link starts the form with: ?job=ID, repeatable
    (the form's choices keep only the team's)."""
    ids = [int(i) for i in request.GET.getlist("job") if i.isdecimal() and len(i) <= 18]
    return {"jobs": ids} if ids else {}


def _waiting(evaluation: Evaluation) -> str | None:
    """Why an evaluation's answers are not being generated: no live worker reads the
    generation queue."""
    if evaluation.status != EvalStatus.GENERATING or evaluation.claimed_by or evaluation.unsent:
        return None
    return presence.queue_problem(settings.GAD_EVAL_QUEUE)


def _cached(evaluation: Evaluation, name: str, compute):
    """``compute(evaluation)``, cached per evaluation and answer count: a large
    evaluation's scores take seconds."""
    answers = sum(s.num_answers for s in evaluation.systems.all())
    key = f"evaluation-{name}:{evaluation.pk}:{answers}"
    return cache.get_or_set(key, lambda: compute(evaluation), 24 * 3600)


def _comparisons(evaluation: Evaluation) -> list[dict] | None:
    """Each pair of systems' difference in each automatic score, with its interval."""
    if evaluation.status == EvalStatus.GENERATING:
        return None
    return _cached(evaluation, "comparisons", results.comparisons)


def _overlap(evaluation: Evaluation) -> dict | None:
    """The automatic scores, no judge needed: each system's mean length, and against the
    teacher's answers (when a teacher is among the systems) n-gram F1 and ROUGE-L.
    Cached per evaluation and answer count: a large evaluation's scores take seconds."""
    if evaluation.status == EvalStatus.GENERATING:
        return None
    found = _cached(evaluation, "overlap", results.diagnostics)
    if not found or not found["systems"]:
        return None
    ns = [str(n) for n in range(1, 5)]
    rows = [
        {**row, "f1": [row["ngram_f1"].get(n) for n in ns]}
        for row in found["systems"]
        if row["system"] != found["reference"]
    ]
    return {"reference": found["reference"], "ns": ns, "rows": rows}


def _contamination(evaluation: Evaluation) -> dict[str, object]:
    rows = contamination.of_evaluation(evaluation)
    return {"contaminated": bool(rows), "contamination": contamination.summary(evaluation, rows)}


@login_required
def evaluation_detail(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    evaluation = evaluation_for(request, slug, pk)
    return render(
        request,
        "evaluation/detail.html",
        {
            "team": evaluation.team,
            "evaluation": evaluation,
            "systems": evaluation.systems.all(),
            "waiting": _waiting(evaluation),
            "overlap": _overlap(evaluation),
            "comparisons": _comparisons(evaluation),
            "live": _live(evaluation),
            "test_set_sizes": results.test_set_sizes(evaluation),
            "teacher_spend": spend.line(spend.totals(evaluation.teacher_spend.all())),
            **_contamination(evaluation),
            **panels.detail_context(evaluation, request),
        },
    )


@login_required
@require_GET
def evaluation_status(request: AuthenticatedRequest, slug: str, pk: int) -> JsonResponse:
    """Generation progress, polled by the evaluation page while answers are generated."""
    evaluation = evaluation_for(request, slug, pk)
    systems = [
        {
            "id": s.pk,
            "status": s.status,
            "status_label": s.get_status_display(),
            "answers": s.num_answers,
            "progress": s.progress,
            "error": s.error,
        }
        for s in evaluation.systems.all()
    ]
    return JsonResponse(
        {
            "status": evaluation.status,
            "num_prompts": evaluation.num_prompts,
            "systems": systems,
            "live": _live(evaluation),
            **panels.status(evaluation),
        }
    )


def _live(evaluation: Evaluation) -> bool:
    """Something is still moving: answers generated, or a panel's work (a judge run)."""
    return evaluation.status == EvalStatus.GENERATING or panels.live(evaluation)


@login_required
@require_POST
def evaluation_generate(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    evaluation = evaluation_for(request, slug, pk)
    again = actions.request_generation(evaluation)
    if again:
        messages.success(request, f"Generating again for {again} system(s).")
    else:
        messages.info(request, "No failed system to generate again.")
    return redirect("evaluation", slug=slug, pk=pk)


@login_required
@require_POST
def evaluation_delete(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    evaluation = evaluation_for(request, slug, pk)
    if request.POST.get("confirm") != evaluation.name:
        messages.error(request, "Type the evaluation's name to confirm the deletion.")
        return redirect(reverse("evaluation", kwargs={"slug": slug, "pk": pk}) + "#delete")
    try:
        actions.delete_evaluation(evaluation)
    except ActionError as refused:
        messages.error(request, str(refused))
        return redirect(reverse("evaluation", kwargs={"slug": slug, "pk": pk}) + "#delete")
    messages.success(request, f"Deleted {evaluation.name} with its answers and votes.")
    return redirect("evaluations", slug=slug)
