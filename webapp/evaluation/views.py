"""Evaluation pages.

Members and owners: evaluations (systems, generation progress), campaigns, results,
exports. Everyone in the team: their own annotation queue. Annotation pages are built
from ``queue.shown`` only and address items by the assignment's opaque key, so no
system, job or model name reaches an annotator (not in the HTML, not in a URL).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import (
    Http404,
    HttpRequest,
    HttpResponse,
    JsonResponse,
    StreamingHttpResponse,
)
from django.shortcuts import get_object_or_404, redirect, render
from django.template.loader import render_to_string
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from webapp.evaluation import actions, judging, queue, report, sweep
from webapp.evaluation.forms import CampaignForm, EvaluationForm, SweepForm, VoteForm
from webapp.evaluation.markdown import render as markdown
from webapp.evaluation.models import (
    Assignment,
    Campaign,
    EvalStatus,
    Evaluation,
    PromptChoice,
    Sweep,
)
from webapp.jobs.models import Job
from webapp.teams import access
from webapp.teams.actions import ActionError

T = TypeVar("T")


def _evaluation(request: HttpRequest, slug: str, pk: int) -> Evaluation:
    return get_object_or_404(
        Evaluation.objects.select_related("team", "prompt_set"),
        team=access.working_team(request, slug),
        pk=pk,
    )


def _campaign(request: HttpRequest, slug: str, pk: int) -> Campaign:
    return get_object_or_404(
        Campaign.objects.select_related("evaluation__team"),
        evaluation__team=access.working_team(request, slug),
        pk=pk,
    )


def _submit(form, create: Callable[[dict], T]) -> tuple[T | None, int]:
    """``create(cleaned_data)`` for a valid form: (what it made, 200). An invalid form,
    or an ActionError (shown as the form's error), gives (None, 422)."""
    if not form.is_valid():
        return None, 422
    try:
        return create(form.cleaned_data), 200
    except ActionError as refused:
        form.add_error(None, str(refused))
        return None, 422


def _wants_json(request: HttpRequest) -> bool:
    return request.headers.get("Accept", "").startswith("application/json")


# ----------------------------------------------------------------------------- evaluations


@login_required
def evaluation_list(request: HttpRequest, slug: str) -> HttpResponse:
    team = access.working_team(request, slug)
    evaluations = Evaluation.objects.filter(team=team).select_related("prompt_set", "created_by")
    return render(
        request,
        "evaluation/list.html",
        {
            "team": team,
            "evaluations": evaluations.prefetch_related("systems", "campaigns")[:200],
            "queue": queue.my_campaigns(request.user, team),
        },
    )


@login_required
def evaluation_create(request: HttpRequest, slug: str) -> HttpResponse:
    team = access.working_team(request, slug)
    status = 200
    form = EvaluationForm(team, request.POST or None)
    if request.method == "POST":
        evaluation, status = _submit(
            form,
            lambda data: actions.create_evaluation(
                team,
                request.user,
                name=data["name"],
                prompt_set=data["prompt_set"],
                prompt_choice=data["prompt_choice"],
                systems=form.systems,
                max_new_tokens=data["max_new_tokens"],
                temperature=data["temperature"],
                limit=data["limit"],
                other_sets=data["other_sets"],
                auto_judge=data["auto_judge"],
            ),
        )
        if evaluation is not None:
            messages.success(request, f"Generating the answers of {evaluation.name}.")
            return redirect("evaluation", slug=team.slug, pk=evaluation.pk)
    return render(request, "evaluation/create.html", {"team": team, "form": form}, status=status)


@login_required
def evaluation_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    evaluation = _evaluation(request, slug, pk)
    return render(
        request,
        "evaluation/detail.html",
        {
            "team": evaluation.team,
            "evaluation": evaluation,
            "systems": evaluation.systems.all(),
            "campaigns": evaluation.campaigns.all(),
            "can_campaign": evaluation.status != EvalStatus.GENERATING,
            **judging.page_context(evaluation, request.GET.get("judge")),
            **_sweep_context(evaluation, request.GET.get("bound")),
        },
    )


@login_required
def job_sweep(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Start a checkpoint sweep of a job (its earlier sweeps are listed on the same page)."""
    team = access.working_team(request, slug)
    job = get_object_or_404(Job.objects.select_related("prompt_set", "team"), team=team, pk=pk)
    status = 200
    if request.method == "POST":
        form = SweepForm(job, request.POST)
        created, status = _submit(
            form,
            lambda data: sweep.create_sweep(
                job,
                request.user,
                every=data["every"],
                judge=data["judge"],
                prompt_set=data["prompt_set"],
                prompt_choice=data["prompt_choice"],
                limit=data["limit"],
                length_bound=data["length_bound"],
            ),
        )
        if created is not None:
            messages.success(request, "Generating the checkpoints' answers; the judge follows.")
            return redirect("evaluation", slug=team.slug, pk=created.evaluation_id)
    else:  # "Update the plan" submits the form by GET: the steps and cost for its values
        form = SweepForm(job, request.GET if "every" in request.GET else None)
    values = form.cleaned_data if form.is_bound and form.is_valid() else None
    every = values["every"] if values else form["every"].initial
    prompt_set = values["prompt_set"] if values else job.prompt_set
    chosen = sweep.checkpoints_to_sweep(job, every)
    estimate = (
        sweep.sweep_forecast(
            job,
            every,
            prompt_set,
            values["prompt_choice"] if values else PromptChoice.TEST,
            values["limit"] if values else sweep.DEFAULT_PROMPTS,
        )
        if prompt_set is not None
        else None
    )
    context = {
        "team": team,
        "job": job,
        "form": form,
        "chosen": chosen,
        "estimate": estimate,
        "teacher_words": sweep.teacher_mean_words(job.prompt_set),
        "sweeps": job.sweeps.select_related("evaluation").order_by("-evaluation__created_at"),
    }
    return render(request, "evaluation/sweep_create.html", context, status=status)


def _sweep_context(evaluation: Evaluation, bound: str | None) -> dict:
    found = Sweep.objects.filter(evaluation=evaluation).select_related("job").first()
    return sweep.page_context(found, bound) if found else {}


@login_required
@require_GET
def evaluation_status(request: HttpRequest, slug: str, pk: int) -> JsonResponse:
    """Generation progress, polled by the evaluation page while answers are generated."""
    evaluation = _evaluation(request, slug, pk)
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
    runs = [judging.run_status(run) for run in evaluation.judge_runs.all()[:5]]
    return JsonResponse(
        {
            "status": evaluation.status,
            "num_prompts": evaluation.num_prompts,
            "systems": systems,
            "judge_runs": runs,
            "live": judging.live(evaluation),
        }
    )


@login_required
@require_POST
def evaluation_generate(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    evaluation = _evaluation(request, slug, pk)
    again = actions.request_generation(evaluation)
    if again:
        messages.success(request, f"Generating again for {again} system(s).")
    else:
        messages.info(request, "No failed system to generate again.")
    return redirect("evaluation", slug=slug, pk=pk)


@login_required
@require_POST
def evaluation_delete(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    evaluation = _evaluation(request, slug, pk)
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


@login_required
@require_POST
def evaluation_judge(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Launch a judge run with one of the team's teacher endpoints (forecast shown first
    on the evaluation page, ``?judge=<id>``)."""
    evaluation = _evaluation(request, slug, pk)
    chosen = request.POST.get("judge", "")
    endpoint = (
        judging.judges(evaluation).filter(pk=int(chosen)).first() if chosen.isdigit() else None
    )
    if endpoint is None:
        return HttpResponse(
            "Choose one of the team's teacher endpoints as the judge.",
            status=422,
            content_type="text/plain",
        )
    try:
        run = judging.launch(evaluation, endpoint, request.user)
    except ActionError as refused:
        return HttpResponse(str(refused), status=422, content_type="text/plain")
    messages.success(request, f"Judging with {endpoint.name} (run {run.pk}).")
    return redirect(reverse("evaluation", kwargs={"slug": slug, "pk": pk}) + "#judge")


@login_required
def campaign_create(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    evaluation = _evaluation(request, slug, pk)
    status = 200
    form = CampaignForm(evaluation, request.POST or None)
    if request.method == "POST":
        campaign, status = _submit(
            form,
            lambda data: actions.create_campaign(
                evaluation,
                request.user,
                title=data["title"],
                pairs=data["pairs"],
                annotators=list(data["annotators"]),
                overlap=data["overlap"],
                seed=data["seed"],
            ),
        )
        if campaign is not None:
            messages.success(request, f"Campaign {campaign.title!r} is open to its annotators.")
            return redirect("campaign", slug=slug, pk=campaign.pk)
    return render(
        request,
        "evaluation/campaign_create.html",
        {"team": evaluation.team, "evaluation": evaluation, "form": form},
        status=status,
    )


# ----------------------------------------------------------------------------- results


@login_required
@require_GET
def campaign_results(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """The results page; ``?fragment=1&v=V`` answers the page's poll: 204 while the
    votes are unchanged since version V, else the results block alone."""
    campaign = _campaign(request, slug, pk)
    fragment = request.GET.get("fragment") == "1"
    if fragment and request.GET.get("v") == report.version(campaign):
        return HttpResponse(status=204)
    context = {
        "team": campaign.evaluation.team,
        "campaign": campaign,
        "evaluation": campaign.evaluation,
        "results": report.results(campaign),
    }
    if fragment:
        return render(request, "evaluation/_results.html", context)
    return render(request, "evaluation/results.html", context)


@login_required
@require_POST
def campaign_close(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    """Close the campaign (no more votes; results final), or reopen it."""
    campaign = _campaign(request, slug, pk)
    action = request.POST.get("action")
    if action == "close":
        if actions.close_campaign(campaign):
            messages.success(
                request, "Closed: annotators can no longer vote; the results are final."
            )
    elif action == "reopen":
        if actions.reopen_campaign(campaign):
            messages.success(
                request, "Reopened: annotators can vote on their remaining items again."
            )
    else:
        messages.error(request, "Choose close or reopen.")
    return redirect("campaign", slug=slug, pk=pk)


@login_required
@require_GET
def campaign_export(request: HttpRequest, slug: str, pk: int) -> StreamingHttpResponse:
    campaign = _campaign(request, slug, pk)
    if request.GET.get("format") == "jsonl":
        lines, kind, ext = report.jsonl_lines(campaign), "application/x-ndjson", "jsonl"
    else:
        lines, kind, ext = report.csv_lines(campaign), "text/csv; charset=utf-8", "csv"
    response = StreamingHttpResponse(lines, content_type=kind)
    response["Content-Disposition"] = f'attachment; filename="campaign-{campaign.pk}-votes.{ext}"'
    return response


# ----------------------------------------------------------------------------- annotation


def _my_assignment(request: HttpRequest, slug: str, key: str) -> Assignment:
    """The user's own assignment: anyone else's (or an unknown key) is a 404."""
    team, _ = access.get_team(request.user, slug)
    return get_object_or_404(
        Assignment.objects.select_related("campaign", "item__pair"),
        key=key,
        annotator=request.user,
        campaign__evaluation__team=team,
    )


def _my_campaign(request: HttpRequest, slug: str, pk: int) -> Campaign:
    team, _ = access.get_team(request.user, slug)
    campaign = get_object_or_404(Campaign, evaluation__team=team, pk=pk)
    if not queue.mine(request.user, campaign).exists():
        raise Http404("No items of this campaign are assigned to you.")
    return campaign


@login_required
def annotate_home(request: HttpRequest, slug: str) -> HttpResponse:
    team, role = access.get_team(request.user, slug)
    return render(
        request,
        "evaluation/annotate_home.html",
        {"team": team, "role": role, "rows": queue.my_campaigns(request.user, team)},
    )


@login_required
@require_GET
def annotate_campaign(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    campaign = _my_campaign(request, slug, pk)
    nxt = queue.next_assignment(request.user, campaign)
    if nxt is not None:
        return redirect("annotate-item", slug=slug, key=nxt.key)
    return render(request, "evaluation/annotate.html", _screen(request, slug, campaign, None))


def _screen(request: HttpRequest, slug: str, campaign: Campaign, assignment) -> dict:
    """The annotation screen's context: one item (or none left) and the person's progress."""
    done, total = queue.progress(request.user, campaign)
    context = {
        "slug": slug,
        "campaign": campaign,
        "assignment": assignment,
        "done": done,
        "total": total,
        "percent": round(100 * done / total) if total else 100,
        "can_undo": queue.can_undo(request.user, campaign),
        "undo_url": reverse("annotate-undo", kwargs={"slug": slug, "pk": campaign.pk}),
    }
    if assignment is not None:
        shown = queue.shown(assignment)
        context |= {
            "turns": [
                {"role": m.get("role", "user"), "html": markdown(str(m.get("content", "")))}
                for m in shown["messages"]
            ],
            "left_html": markdown(shown["left"]),
            "right_html": markdown(shown["right"]),
            "vote_url": reverse("annotate-vote", kwargs={"slug": slug, "key": assignment.key}),
            "skip_url": reverse("annotate-skip", kwargs={"slug": slug, "key": assignment.key}),
            "item_url": reverse("annotate-item", kwargs={"slug": slug, "key": assignment.key}),
        }
    return context


def _to_next(request: HttpRequest, slug: str, campaign: Campaign, error: str | None = None):
    """After a vote, skip or refusal: the next item (JSON for the page's script, else a redirect)."""
    if _wants_json(request):
        nxt = queue.next_assignment(request.user, campaign)
        return _screen_json(request, slug, campaign, nxt, **({"error": error} if error else {}))
    return redirect("annotate-campaign", slug=slug, pk=campaign.pk)


def _screen_json(request: HttpRequest, slug: str, campaign: Campaign, assignment, **extra):
    context = _screen(request, slug, campaign, assignment)
    return JsonResponse(
        {
            "html": render_to_string("evaluation/_screen.html", context, request=request),
            "url": context.get("item_url")
            or reverse("annotate-campaign", kwargs={"slug": slug, "pk": campaign.pk}),
            "done": context["done"],
            "total": context["total"],
            **extra,
        }
    )


@login_required
@require_GET
def annotate_item(request: HttpRequest, slug: str, key: str) -> HttpResponse:
    assignment = _my_assignment(request, slug, key)
    if queue.has_live_vote(assignment) or assignment.campaign.is_closed:
        # Voted already (back button, an old tab): votes are final, go on to the next item
        # (or to the closed campaign's notice).
        return redirect("annotate-campaign", slug=slug, pk=assignment.campaign_id)
    return render(
        request, "evaluation/annotate.html", _screen(request, slug, assignment.campaign, assignment)
    )


@login_required
@require_POST
def annotate_vote(request: HttpRequest, slug: str, key: str) -> HttpResponse:
    assignment = _my_assignment(request, slug, key)
    campaign = assignment.campaign
    form = VoteForm(request.POST)
    if not form.is_valid():
        if _wants_json(request):
            return JsonResponse(
                {"error": "invalid", "detail": "Choose left, tie or right."}, status=422
            )
        return HttpResponse("Choose left, tie or right.", status=422, content_type="text/plain")
    try:
        actions.record_vote(
            assignment, request.user, form.cleaned_data["choice"], form.cleaned_data["comment"]
        )
    except (actions.AlreadyVoted, actions.CampaignClosed) as refused:
        campaign.refresh_from_db(fields=["closed_at"])  # closed while the vote was on its way
        if _wants_json(request):
            return _to_next(request, slug, campaign, error=str(refused))
        messages.info(request, str(refused))
    return _to_next(request, slug, campaign)


@login_required
@require_POST
def annotate_skip(request: HttpRequest, slug: str, key: str) -> HttpResponse:
    assignment = _my_assignment(request, slug, key)
    campaign = assignment.campaign
    if not queue.has_live_vote(assignment):
        try:
            actions.skip(assignment)
        except actions.CampaignClosed as refused:
            campaign.refresh_from_db(fields=["closed_at"])  # closed after the page loaded
            if _wants_json(request):
                return _to_next(request, slug, campaign, error=str(refused))
            messages.info(request, str(refused))
    return _to_next(request, slug, campaign)


@login_required
@require_POST
def annotate_undo(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    campaign = _my_campaign(request, slug, pk)
    try:
        assignment = actions.undo_last_vote(request.user, campaign)
    except ActionError as refused:
        if _wants_json(request):
            return _to_next(request, slug, campaign, error=str(refused))
        messages.error(request, str(refused))
        return redirect("annotate-campaign", slug=slug, pk=pk)
    if _wants_json(request):
        return _screen_json(request, slug, campaign, assignment)
    return redirect("annotate-item", slug=slug, key=assignment.key)
