"""Job pages: the team's dashboard, list, launch (and "run again with changes"), detail,
cancel, checkpoints; live monitoring: metrics.json for the charts, run comparison, the
samples viewer."""

from __future__ import annotations

from typing import Any

import yaml
from django.conf import settings
from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.http import (
    Http404,
    HttpResponse,
    JsonResponse,
)
from django.http.response import (
    HttpResponseBase,
)
from django.shortcuts import redirect, render
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from webapp.jobs import actions, costs, monitor, storage
from webapp.jobs.archive import (
    adapter_dir,
    checkpoint_response,
    tensorboard_dir,
    tensorboard_response,
    tracker_runs,
)
from webapp.jobs.configs import job_plan
from webapp.jobs.forms import LaunchForm, initial_from_config
from webapp.jobs.models import ACTIVE_STATUSES, Checkpoint, Job, Method, Sample, Status
from webapp.lib import samples as sample_views
from webapp.lib.charts import chart_config
from webapp.lib.downsample import DEFAULT_LIMIT
from webapp.lib.errors import ActionError
from webapp.lib.http import TooMany
from webapp.lib.pages import AuthenticatedRequest
from webapp.nodes import presence
from webapp.teams import access, spend
from webapp.teams import actions as team_actions
from webapp.teams.actions import QuotaExceeded
from webapp.teams.models import Role, Team


@login_required
def dashboard(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    """The team's home page: its running and recent jobs, and its quota."""
    team, role = access.get_team(request.user, slug)
    request.session["team"] = team.slug
    quota = team.quota
    usage = team_actions.month_usage(team)
    jobs = Job.objects.filter(team=team)
    # Annotators judge answers blind: job names (often the method's) are not theirs to see.
    shown = jobs if role in access.LAUNCH_ROLES else Job.objects.none()
    running = list(shown.active().order_by("-created_at")[:20])
    recent = list(shown.exclude(pk__in=[j.pk for j in running])[:10])
    health = monitor.alarms_for_jobs(running + recent)
    for job in running + recent:
        job.alarms = health.get(job.pk, [])  # type: ignore[attr-defined]  # for the template
        job.state = monitor.job_state(job)  # type: ignore[attr-defined]  # for the template
    context = {
        "team": team,
        "role": role,
        "quota": quota,
        "usage": usage,
        "running_jobs": running,
        "recent_jobs": recent,
        "can_open_jobs": role in access.LAUNCH_ROLES,
        "bars": _quota_bars(quota, usage, jobs.active().count()),
    }
    return render(request, "jobs/dashboard.html", context)


def _quota_bars(quota, usage, running: int) -> list[dict]:
    def bar(label: str, used, limit, unit: str = "") -> dict:
        pct = 0 if not limit else min(100, round(100 * float(used) / float(limit)))
        return {"label": label, "used": used, "limit": limit, "unit": unit, "pct": pct}

    return [
        bar("Concurrent jobs", running, quota.max_concurrent_jobs),
        bar("GPU-hours this month", usage.gpu_hours, quota.gpu_hours_per_month, " h"),
        bar("Teacher tokens this month", usage.teacher_tokens, quota.teacher_tokens_per_month),
    ]


@login_required
def job_list(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    team = access.working_team(request, slug)
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
            "jobs": _with_state(list(jobs[:200])),
            "status": status,
            "method": method,
            "statuses": Status.choices,
            "methods": Method.choices,
        },
    )


@login_required
def job_launch(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    team = access.working_team(request, slug)
    status = 200
    estimate = None
    if request.method == "POST":
        form = LaunchForm(team, request.POST)
        if form.is_valid():
            data = form.cleaned_data
            launch = actions.LaunchRequest(
                name=data["name"],
                prompt_set=data["prompt_set"],
                teacher=data["teacher"],
                spec=form.spec,
                guard=data["guard"] or "off",
                teacher_batch=data.get("teacher_batch", False),
            )
            if "estimate" in request.POST:
                # "What will it cost?": the form again with the estimate; nothing saved.
                estimate = costs.launch_estimate(launch.spec, launch.prompt_set, launch.teacher)
                context = {"team": team, "form": form, "estimate": estimate}
                return render(request, "jobs/launch.html", context)
            try:
                jobs = actions.launch(team, request.user, launch)
            except QuotaExceeded as refused:
                form.add_error(None, f"Launch refused: {refused}")
                status = 409
            except ActionError as refused:
                field, _, message = str(refused).partition(": ")
                form.add_error(field if field in ("name", "gpus") else None, message or field)
                status = 422
            else:
                names = " and ".join(j.name for j in jobs)
                messages.success(request, f"Queued {names}.")
                return redirect("job", slug=team.slug, pk=jobs[0].pk)
        else:
            status = 422
    else:
        form = LaunchForm(team, initial=_clone_initial(request, team))
    return render(request, "jobs/launch.html", {"team": team, "form": form}, status=status)


def _clone_initial(request: AuthenticatedRequest, team) -> dict:
    """ "Run again with changes": the form starts from another job's settings."""
    source_id = request.GET.get("from")
    if not source_id or not (source_id.isascii() and source_id.isdigit()):
        return {"name": "", "gpus": 1 if presence.most_gpus() else 0}
    source = access.team_object(request, team.slug, Job, source_id)
    method = "pair" if source.pair_id else source.method
    return {
        "name": f"{source.name.removesuffix(f' ({source.method})')} (again)",
        "method": method,
        "prompt_set": source.prompt_set_id,
        "teacher": source.teacher_id,
        "student": source.student,
        "gpus": source.gpus,
        "guard": source.guard,
        **initial_from_config(source.config),
    }


OWNER_ONLY = [Role.OWNER]  # deleting a whole job, its run directory included
EVENTS_SHOWN = 20  # the job page's latest events; GET /api/v1/jobs/{id}/events has them all


@login_required
def job_detail(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    job = access.team_object(
        request, slug, Job.objects.select_related("prompt_set", "teacher", "pair", "created_by"), pk
    )
    team = job.team
    checkpoints = list(job.checkpoints.order_by("-step"))
    served = next((c for c in checkpoints if c.pk == job.final_checkpoint_id), None)
    served = served or (checkpoints[0] if checkpoints else None)
    return render(
        request,
        "jobs/detail.html",
        {
            "team": team,
            "job": job,
            "active": job.status in ACTIVE_STATUSES,
            "config_yaml": yaml.safe_dump(job.config, sort_keys=False),
            "checkpoints": [(c, adapter_dir(c) is not None) for c in checkpoints],
            "use": _use_snippet(request, job, served),
            "events": list(job.events.order_by("-id")[:EVENTS_SHOWN]),
            "can_delete_job": job.status not in ACTIVE_STATUSES
            and getattr(access.membership(request.user, team), "role", None) == Role.OWNER,
            "alarms": monitor.job_alarms(job),
            "state": monitor.job_state(job),
            "log_digest": monitor.log_digest(job.log_tail),
            "monitor": _monitor_config(team, [job]),
            "poll_ms": _poll_ms(),
            "sample_steps": Sample.objects.filter(job=job).values("step").distinct().count(),
            "compare_url": _compare_url(team, [job, job.pair] if job.pair else [job]),
            "plan": job_plan(job),
            "storage_used": team_actions.storage_used(team),
            "tensorboard": tensorboard_dir(job) is not None,
            "tracker_runs": tracker_runs(job),
            "waiting": _waiting(job),
            "teacher_spend": spend.line(spend.totals(job.teacher_spend.all())),
        },
    )


def _use_snippet(request, job: Job, checkpoint: Checkpoint | None) -> dict[str, Any] | None:
    """What the job page's "download file by file and serve it" box fills in."""
    if checkpoint is None:
        return None
    return {
        "checkpoint": checkpoint,
        "dir": f"job{job.pk}-step-{checkpoint.step}",
        "files_url": request.build_absolute_uri(f"/api/v1/checkpoints/{checkpoint.pk}/files"),
    }


def _waiting(job: Job) -> str | None:
    """Why a queued job has not started: no live worker reads its queue, or every GPU
    of the nodes that could run it is leased (and by whom)."""
    if job.status != Status.QUEUED or job.unsent:
        return None
    return presence.queue_problem(actions.queue_for(job.gpus)) or presence.gpu_wait(job.gpus)


@login_required
@require_POST
def job_cancel(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    job = access.team_object(request, slug, Job, pk)
    team = job.team
    job = actions.cancel(job)
    if job.status == Status.CANCELLED:
        messages.success(request, f"{job.name} is cancelled.")
    elif job.cancel_requested and job.status in ACTIVE_STATUSES:
        messages.success(request, f"Stopping {job.name}: it saves a checkpoint, then ends.")
    else:
        messages.error(request, f"{job.name} has already ended ({job.get_status_display()}).")
    return redirect("job", slug=team.slug, pk=job.pk)


@login_required
@require_POST
def job_resume(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    """Resume a job the health guard paused, after a person has looked at the alarm."""
    job = access.team_object(request, slug, Job, pk)
    team = job.team
    if actions.resume_guarded(job):
        messages.success(request, f"{job.name} is queued again; it resumes from its checkpoint.")
    else:
        messages.error(request, f"{job.name} was not paused by the health guard.")
    return redirect("job", slug=team.slug, pk=job.pk)


def _checkpoint(request: AuthenticatedRequest, slug: str, pk: int) -> Checkpoint:
    return access.team_object(
        request, slug, Checkpoint.objects.select_related("job"), pk, team_field="job__team"
    )


@login_required
def checkpoint_download(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponseBase:
    part = "adapter" if request.GET.get("part") == "adapter" else "model"
    try:
        response = checkpoint_response(_checkpoint(request, slug, pk), request.user, part)
    except TooMany as busy:
        return HttpResponse(str(busy), status=429, content_type="text/plain; charset=utf-8")
    if response is None:
        raise Http404("The checkpoint's files are no longer on the data volume.")
    return response


@login_required
def job_tensorboard(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponseBase:
    """The job's TensorBoard logs as a .tar.gz (``report_to: [tensorboard]``)."""
    try:
        response = tensorboard_response(access.team_object(request, slug, Job, pk), request.user)
    except TooMany as busy:
        return HttpResponse(str(busy), status=429, content_type="text/plain; charset=utf-8")
    if response is None:
        raise Http404("This job wrote no TensorBoard logs (report_to: [tensorboard]).")
    return response


@login_required
@require_POST
def checkpoint_mark_final(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    checkpoint = _checkpoint(request, slug, pk)
    actions.mark_final(checkpoint)
    messages.success(request, f"Step {checkpoint.step} is now the job's final model.")
    back = request.POST.get("next", "")  # e.g. the checkpoint sweep it was chosen on
    if back and url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        return redirect(back)
    return redirect("job", slug=slug, pk=checkpoint.job_id)


@login_required
@require_POST
def checkpoint_delete(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    checkpoint = _checkpoint(request, slug, pk)
    try:
        storage.delete_checkpoint(checkpoint)
    except storage.StillNeeded as why:
        messages.error(request, str(why))
    else:
        messages.success(
            request,
            f"Deleted step {checkpoint.step}: {filesizeformat(checkpoint.size_bytes)} freed.",
        )
    back = request.POST.get("next", "")  # e.g. the storage page it was deleted from
    if back and url_has_allowed_host_and_scheme(back, {request.get_host()}, request.is_secure()):
        return redirect(back)
    return redirect("job", slug=slug, pk=checkpoint.job_id)


@login_required
@require_POST
def job_delete(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    job = access.get_object(Job.objects.all(), request.user, pk, OWNER_ONLY, slug=slug)
    try:
        storage.delete_job(job)
    except storage.StillNeeded as why:
        messages.error(request, str(why))
        return redirect("job", slug=slug, pk=pk)
    messages.success(request, f"Deleted job {job.name} and its files.")
    return redirect("jobs", slug=slug)


@login_required
def team_storage(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    """What the team's storage holds, largest first, with what may be deleted now (the
    storage-full message links here); owners set the retention new jobs inherit."""
    team = access.team_for(request, slug, access.LAUNCH_ROLES)
    problem = None
    if request.method == "POST":
        team = access.team_for(request, slug, OWNER_ONLY)
        retain, problem = _retention(request.POST.get("retain_checkpoints", ""))
        if problem is None:
            Team.objects.filter(pk=team.pk).update(retain_checkpoints=retain)
            messages.success(
                request,
                f"New jobs keep the last {retain} checkpoints, plus their final and marked ones."
                if retain
                else "New jobs keep all their checkpoints.",
            )
            return redirect("team-storage", slug=slug)
    checkpoints = Checkpoint.objects.filter(job__team=team).select_related("job")
    rows = [(c, storage.checkpoint_problem(c)) for c in checkpoints.order_by("-size_bytes", "pk")]
    role = getattr(access.membership(request.user, team), "role", None)
    return render(
        request,
        "jobs/storage.html",
        {
            "team": team,
            "rows": rows,
            "used": team_actions.storage_used(team),
            "freeable": sum(c.size_bytes for c, problem in rows if problem is None),
            "prompt_sets": team.prompt_sets.order_by("-size_bytes")[:20],
            "is_owner": role == Role.OWNER,
            "problem": problem,
        },
        status=422 if problem else 200,
    )


MAX_RETAIN = 1000


def _retention(raw: str) -> tuple[int | None, str | None]:
    """The retention a form gave (None: keep all), or why it cannot be read."""
    raw = raw.strip()
    if not raw:
        return None, None
    if raw.isdecimal() and 1 <= int(raw) <= MAX_RETAIN:
        return int(raw), None
    return None, (
        f"retain_checkpoints: a whole number from 1 to {MAX_RETAIN} (got {raw[:20]!r}), "
        "or empty to keep every checkpoint."
    )


# ----------------------------------------------------------------------------- monitoring


def _is_id(text: str) -> bool:
    return text.isdecimal() and len(text) <= 18  # fits a bigint; "²" is a digit, not decimal


def _poll_ms() -> int:
    """How often pages poll for new points (GAD_MONITOR_POLL_S, default 5 s)."""
    return max(200, round(1000 * float(getattr(settings, "GAD_MONITOR_POLL_S", 5))))


def _with_state(jobs: list[Job]) -> list[Job]:
    """Each job gets ``alarms``, the health banners the list shows under its name, and
    ``state``, its training progress apart from the teacher answers collected."""
    health = monitor.alarms_for_jobs(jobs)
    for job in jobs:
        job.alarms = health.get(job.pk, [])  # type: ignore[attr-defined]  # for the template
        job.state = monitor.job_state(job)  # type: ignore[attr-defined]  # for the template
    return jobs


def _compare_query(ids) -> str:
    """?jobs=1,2 with a literal comma: ids are digits, and the URL is meant to be read
    and shared (urlencode would write 1%2C2)."""
    return "?jobs=" + ",".join(str(i) for i in ids)


def _compare_url(team, jobs) -> str:
    return reverse("jobs-compare", kwargs={"slug": team.slug}) + _compare_query(j.pk for j in jobs)


def _monitor_config(team, jobs: list[Job]) -> dict:
    """What static/js/monitor.js needs: the charts, the jobs shown, the ones it may add."""

    def entry(job: Job) -> dict:
        return {
            "id": job.pk,
            "name": job.name,
            "method": job.method,
            "url": reverse("job-metrics", kwargs={"slug": team.slug, "pk": job.pk}),
            "page": reverse("job", kwargs={"slug": team.slug, "pk": job.pk}),
        }

    shown = {job.pk for job in jobs}
    others = Job.objects.filter(team=team).exclude(pk__in=shown).order_by("-created_at")[:50]
    return {
        "charts": chart_config(),
        "jobs": [entry(job) for job in jobs],
        "candidates": [entry(job) for job in others],
        "compare": reverse("jobs-compare", kwargs={"slug": team.slug}),
        "limit": DEFAULT_LIMIT,
    }


@login_required
def job_metrics(request: AuthenticatedRequest, slug: str, pk: int) -> JsonResponse:
    """The charts' data for the page (session auth); the same payload as the REST API's
    /api/v1/jobs/{id}/metrics, plus the job's progress and health."""
    job = access.team_object(request, slug, Job, pk)
    try:
        after_step = int(request.GET.get("after_step", -1))
    except ValueError:
        return JsonResponse({"error": "after_step must be an integer"}, status=400)
    # ?log=DIGEST: the job page follows the log too (see monitor.live_payload).
    payload = monitor.live_payload(job, after_step, log_seen=request.GET.get("log"))
    return JsonResponse(payload, json_dumps_params={"separators": (",", ":")})


@login_required
def jobs_compare(request: AuthenticatedRequest, slug: str) -> HttpResponse:
    """Several of the team's runs on the same charts: ?jobs=1,2 (a shareable URL).

    A job id that is not the team's is a 404, like any other object of another team.
    One GAD job with a SeqKD pair brings its pair along: the comparison every report shows.
    """
    team = access.working_team(request, slug)
    if "job" in request.GET:  # the page's own form: ?job=1&job=2 -> ?jobs=1,2
        picked = [j for j in request.GET.getlist("job") if _is_id(j)]
        return redirect(request.path + _compare_query(picked))
    raw = [part.strip() for part in request.GET.get("jobs", "").split(",") if part.strip()]
    if not all(_is_id(part) for part in raw):
        raise Http404("No such job.")
    ids = list(dict.fromkeys(int(part) for part in raw))[:10]
    found = Job.objects.filter(team=team, pk__in=ids).select_related("pair").in_bulk()
    if len(found) != len(ids):
        raise Http404("No such job.")
    jobs = [found[i] for i in ids]
    if len(jobs) == 1 and jobs[0].pair and jobs[0].pair.team_id == team.pk:
        jobs.append(jobs[0].pair)
    for job in jobs:
        job.alarms = monitor.job_alarms(job)  # type: ignore[attr-defined]  # for the template
    choices = Job.objects.filter(team=team).order_by("-created_at")[:50]
    return render(
        request,
        "jobs/compare.html",
        {
            "team": team,
            "jobs": jobs,
            "selected": {job.pk for job in jobs},
            "choices": choices,
            "monitor": _monitor_config(team, jobs),
            "poll_ms": _poll_ms(),
            "share_url": request.build_absolute_uri(_compare_url(team, jobs)) if jobs else "",
        },
    )


@login_required
def job_samples(request: AuthenticatedRequest, slug: str, pk: int) -> HttpResponse:
    """For one step: each prompt, the teacher's answer and the N student answers with
    their discriminator scores and advantages."""
    job = access.team_object(request, slug, Job, pk)
    team = job.team
    steps = list(
        Sample.objects.filter(job=job).order_by("step").values_list("step", flat=True).distinct()
    )
    asked = request.GET.get("step", "")
    if asked and not (_is_id(asked) and int(asked) in steps):
        raise Http404("No samples at that step.")
    step = int(asked) if asked else (steps[-1] if steps else None)
    rows = (
        list(Sample.objects.filter(job=job, step=step).order_by("id")[:50])
        if step is not None
        else []
    )
    prompts = [sample_views.prompt_view(row.data) for row in rows]
    index = steps.index(step) if step is not None else 0
    return render(
        request,
        "jobs/samples.html",
        {
            "team": team,
            "job": job,
            "steps": steps,
            "step": step,
            "stage": rows[0].stage if prompts else "",
            "std_norm": _std_norm(job),
            "prompts": prompts,
            "previous": steps[index - 1] if step is not None and index > 0 else None,
            "next": steps[index + 1] if step is not None and index + 1 < len(steps) else None,
        },
    )


def _std_norm(job: Job) -> bool:
    """Whether the job's advantages are in group standard deviations (gad.std_norm)."""
    gad = job.config.get("gad")
    return not isinstance(gad, dict) or gad.get("std_norm", True) is not False
