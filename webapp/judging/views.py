"""Judging pages: launching a judge run on an evaluation (and continuing one paused at
its token cap), and a job's checkpoint sweep."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.views.decorators.http import require_POST

from webapp.evaluation.access import evaluation_for
from webapp.evaluation.models import PromptChoice
from webapp.jobs.models import Job
from webapp.judging import actions, runs, sweep
from webapp.judging.forms import ContinueForm, SweepForm
from webapp.lib import pages
from webapp.lib.errors import ActionError
from webapp.lib.pages import AuthenticatedRequest
from webapp.teams import access


@login_required
@require_POST
def evaluation_judge(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    """Launch a judge run with one of the team's teacher endpoints (forecast shown first
    on the evaluation page, ``?judge=<id>``)."""
    evaluation = evaluation_for(request, slug, pk)
    chosen = request.POST.get("judge", "")
    endpoint = runs.judges(evaluation).filter(pk=int(chosen)).first() if chosen.isdigit() else None
    if endpoint is None:
        return HttpResponse(
            "Choose one of the team's teacher endpoints as the judge.",
            status=422,
            content_type="text/plain",
        )
    try:
        run = actions.launch(evaluation, endpoint, request.user)
    except ActionError as refused:
        return HttpResponse(str(refused), status=422, content_type="text/plain")
    messages.success(request, f"Judging with {endpoint.name} (run {run.pk}).")
    return redirect(reverse("evaluation", kwargs={"slug": slug, "pk": pk}) + "#judge")


@login_required
@require_POST
def judge_run_continue(
    request: AuthenticatedRequest, slug: str, pk: int, run_id: int
) -> HttpResponse:
    """Continue a run paused at its token cap, with the cap raised."""
    evaluation = evaluation_for(request, slug, pk)
    run = get_object_or_404(evaluation.judge_runs, pk=run_id)
    form = ContinueForm(request.POST)
    if not form.is_valid():
        return HttpResponse(form.errors.as_text(), status=422, content_type="text/plain")
    try:
        run = actions.continue_run(run, form.cleaned_data["token_cap"])
    except ActionError as refused:
        return HttpResponse(str(refused), status=422, content_type="text/plain")
    messages.success(request, f"Judge run {run.pk} continues, up to {run.token_cap:,} tokens.")
    return redirect(reverse("evaluation", kwargs={"slug": slug, "pk": pk}) + "#judge")


@login_required
def job_sweep(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    """Start a checkpoint sweep of a job (its earlier sweeps are listed on the same page)."""
    job = access.get_object(
        Job.objects.select_related("prompt_set", "team"),
        request.user,
        pk,
        access.LAUNCH_ROLES,
        slug=slug,
    )
    team = job.team
    status = 200
    if request.method == "POST":
        form = SweepForm(job, request.POST)
        created, status = pages.submit(
            form,
            lambda data: actions.create_sweep(
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
    return render(request, "judging/sweep_create.html", context, status=status)
