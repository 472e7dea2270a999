"""Job pages: list, launch (and "run again with changes"), detail, cancel, checkpoints."""

from __future__ import annotations

import yaml
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import Http404, HttpRequest, HttpResponse, StreamingHttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_POST

from webapp.jobs import actions
from webapp.jobs.archive import checkpoint_response
from webapp.jobs.forms import LaunchForm, initial_from_config
from webapp.jobs.models import ACTIVE_STATUSES, Checkpoint, Job, Method, Status
from webapp.teams import access
from webapp.teams.actions import QuotaExceeded


def _team(request: HttpRequest, slug: str):
    team, _ = access.get_team(request.user, slug, roles=access.LAUNCH_ROLES)
    return team


@login_required
def job_list(request: HttpRequest, slug: str) -> HttpResponse:
    team = _team(request, slug)
    jobs = Job.objects.filter(team=team).select_related("prompt_set", "created_by")
    status, method = request.GET.get("status", ""), request.GET.get("method", "")
    if status in Status.values:
        jobs = jobs.filter(status=status)
    if method in Method.values:
        jobs = jobs.filter(method=method)
    return render(
        request,
        "jobs/list.html",
        {
            "team": team,
            "jobs": jobs[:200],
            "status": status,
            "method": method,
            "statuses": Status.choices,
            "methods": Method.choices,
        },
    )


@login_required
def job_launch(request: HttpRequest, slug: str) -> HttpResponse:
    team = _team(request, slug)
    status = 200
    if request.method == "POST":
        form = LaunchForm(team, request.POST)
        if form.is_valid():
            data = form.cleaned_data
            launch = actions.LaunchRequest(
                name=data["name"],
                prompt_set=data["prompt_set"],
                teacher=data["teacher"],
                student=data["student"],
                gpus=data["gpus"],
                configs=form.configs,
            )
            try:
                jobs = actions.launch(team, request.user, launch)
            except QuotaExceeded as refused:
                form.add_error(None, f"Launch refused: {refused}")
                status = 409
            else:
                names = " and ".join(j.name for j in jobs)
                messages.success(request, f"Queued {names}.")
                return redirect("job", slug=team.slug, pk=jobs[0].pk)
        else:
            status = 422
    else:
        form = LaunchForm(team, initial=_clone_initial(request, team))
    return render(request, "jobs/launch.html", {"team": team, "form": form}, status=status)


def _clone_initial(request: HttpRequest, team) -> dict:
    """ "Run again with changes": the form starts from another job's settings."""
    source_id = request.GET.get("from")
    if not source_id or not source_id.isdigit():
        return {"name": "", "gpus": 1}
    source = get_object_or_404(Job, team=team, pk=source_id)
    method = "pair" if source.pair_id else source.method
    return {
        "name": f"{source.name.removesuffix(f' ({source.method})')} (again)",
        "method": method,
        "prompt_set": source.prompt_set_id,
        "teacher": source.teacher_id,
        "student": source.student,
        "gpus": source.gpus,
        **initial_from_config(source.config),
    }


@login_required
def job_detail(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    team = _team(request, slug)
    job = get_object_or_404(
        Job.objects.select_related("prompt_set", "teacher", "pair", "created_by"), team=team, pk=pk
    )
    return render(
        request,
        "jobs/detail.html",
        {
            "team": team,
            "job": job,
            "active": job.status in ACTIVE_STATUSES,
            "config_yaml": yaml.safe_dump(job.config, sort_keys=False),
            "checkpoints": job.checkpoints.order_by("-step"),
            "progress": round(100 * job.step / job.total_steps) if job.total_steps else 0,
        },
    )


@login_required
@require_POST
def job_cancel(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    team = _team(request, slug)
    job = get_object_or_404(Job, team=team, pk=pk)
    job = actions.cancel(job)
    if job.status == Status.CANCELLED:
        messages.success(request, f"{job.name} is cancelled.")
    elif job.cancel_requested and job.status in ACTIVE_STATUSES:
        messages.success(request, f"Stopping {job.name}: it saves a checkpoint, then ends.")
    else:
        messages.error(request, f"{job.name} has already ended ({job.get_status_display()}).")
    return redirect("job", slug=team.slug, pk=job.pk)


def _checkpoint(request: HttpRequest, slug: str, pk: int) -> Checkpoint:
    team = _team(request, slug)
    return get_object_or_404(Checkpoint.objects.select_related("job"), job__team=team, pk=pk)


@login_required
def checkpoint_download(request: HttpRequest, slug: str, pk: int) -> StreamingHttpResponse:
    response = checkpoint_response(_checkpoint(request, slug, pk), request.user)
    if response is None:
        raise Http404("The checkpoint's files are no longer on the data volume.")
    return response


@login_required
@require_POST
def checkpoint_mark_final(request: HttpRequest, slug: str, pk: int) -> HttpResponse:
    checkpoint = _checkpoint(request, slug, pk)
    actions.mark_final(checkpoint)
    messages.success(request, f"Step {checkpoint.step} is now the job's final model.")
    return redirect("job", slug=slug, pk=checkpoint.job_id)
