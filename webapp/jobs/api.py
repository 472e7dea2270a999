"""/api/v1/jobs and /api/v1/checkpoints (DESIGN.md, "REST API v1")."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.http import HttpResponse
from ninja import Field, Query, Router, Schema
from ninja import Status as HttpStatus
from pydantic import field_validator

from webapp.jobs import actions, costs, files, storage
from webapp.jobs.archive import (
    adapter_dir,
    checkpoint_response,
    tensorboard_dir,
    tensorboard_response,
    tracker_runs,
)
from webapp.jobs.configs import build_configs, job_plan, teacher_problem
from webapp.jobs.models import Checkpoint, Job, Sample, Status
from webapp.jobs.series import metrics_payload
from webapp.lib.errors import ActionError, ApiError
from webapp.lib.http import TooMany
from webapp.lib.numbers import ID, LARGEST, check_json_numbers
from webapp.lib.pagination import Limit, Offset, page
from webapp.promptsets.models import PromptSet
from webapp.teachers.models import TeacherEndpoint
from webapp.teams import access, spend
from webapp.teams.actions import QuotaExceeded
from webapp.teams.models import Role, Team

router = Router(tags=["jobs"])
ROLES = access.LAUNCH_ROLES


class JobIn(Schema):
    team: str
    name: str
    method: str  # gad | seqkd | pair
    prompt_set: int = ID
    teacher: int | None = Field(None, ge=1, le=LARGEST)
    student: str
    gpus: int = Field(1, ge=0, le=64, description="GPUs per node; 0: the CPU.")
    config: dict[str, Any] = {}
    guard: str = "off"  # off | pause | stop: what to do when a health alarm fires
    teacher_batch: bool = False  # collect missing answers through the Batch API

    @field_validator("config")
    @classmethod
    def _finite_numbers(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_json_numbers(value, "config")


class JobOut(Schema):
    id: int
    team: str
    name: str
    method: str
    status: str
    stage: str
    step: int
    total_steps: int | None
    error: str
    prompt_set: int | None
    teacher: int | None
    student: str
    gpus: int  # per node
    nodes: int
    pair: int | None
    cancel_requested: bool
    guard: str
    guard_paused: bool
    teacher_batch: bool
    final_checkpoint: int | None
    config: dict[str, Any]
    plan: dict[str, Any] | None  # per-GPU memory (trainer.plan); null for CPU jobs
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @staticmethod
    def resolve_team(obj: Job) -> str:
        return obj.team.slug

    @staticmethod
    def resolve_prompt_set(obj: Job) -> int | None:
        return obj.prompt_set_id

    @staticmethod
    def resolve_teacher(obj: Job) -> int | None:
        return obj.teacher_id

    @staticmethod
    def resolve_pair(obj: Job) -> int | None:
        return obj.pair_id

    @staticmethod
    def resolve_final_checkpoint(obj: Job) -> int | None:
        return obj.final_checkpoint_id

    @staticmethod
    def resolve_plan(obj: Job) -> dict[str, Any] | None:
        result = job_plan(obj)
        return result.as_dict() if result else None


class JobDetailOut(JobOut):
    trackers: dict[str, Any]  # where report_to sent the metrics (not in the list: file reads)
    teacher_spend: dict[str, Any]  # tokens by kind and their price, teams.spend.totals

    @staticmethod
    def resolve_teacher_spend(obj: Job) -> dict[str, Any]:
        return spend.totals(obj.teacher_spend.all())

    @staticmethod
    def resolve_trackers(obj: Job) -> dict[str, Any]:
        """{"tensorboard": the logs' download path or null, "mlflow"/"wandb" (when the
        trainer reported there): {"run_id", "url" (null: no page), …}}."""
        logs = f"/api/v1/jobs/{obj.pk}/tensorboard" if tensorboard_dir(obj) else None
        return {"tensorboard": logs, **tracker_runs(obj)}


class LaunchOut(Schema):
    id: int
    status: str
    pair: int | None = None


class CheckpointOut(Schema):
    id: int
    job: int
    step: int
    stage: str
    size_bytes: int
    created_at: datetime
    final: bool

    @staticmethod
    def resolve_job(obj: Checkpoint) -> int:
        return obj.job_id

    @staticmethod
    def resolve_final(obj: Checkpoint) -> bool:
        return obj.job.final_checkpoint_id == obj.pk


def _job(request, job_id: int) -> Job:
    return access.get_object(Job.objects.select_related("team"), request.user, job_id, ROLES)


def _checkpoint(request, checkpoint_id: int) -> Checkpoint:
    return access.get_object(
        Checkpoint.objects.select_related("job"),
        request.user,
        checkpoint_id,
        ROLES,
        team_field="job__team",
    )


def _launch_request(request, payload: JobIn) -> tuple[Any, actions.LaunchRequest]:
    """The team and the checked launch of ``payload``; ApiError 422 naming the field."""
    team = access.team_for(request, payload.team, roles=ROLES)
    if payload.method not in ("gad", "seqkd", "pair"):
        raise ApiError(422, f"method: must be gad, seqkd or pair (got {payload.method!r})")
    if payload.guard not in ("off", "pause", "stop"):
        raise ApiError(422, f"guard: must be off, pause or stop (got {payload.guard!r})")
    prompt_set = PromptSet.objects.filter(team=team, pk=payload.prompt_set).first()
    if prompt_set is None:
        raise ApiError(422, f"prompt_set: no prompt set {payload.prompt_set} in team {team.slug}")
    teacher = None
    if payload.teacher is not None:
        teacher = TeacherEndpoint.objects.filter(team=team, pk=payload.teacher).first()
        if teacher is None:
            raise ApiError(
                422, f"teacher: no teacher endpoint {payload.teacher} in team {team.slug}"
            )
    problem = teacher_problem(prompt_set, teacher)
    if problem:
        raise ApiError(422, f"teacher: {problem}")
    spec, errors = build_configs(
        team, payload.method, payload.student, payload.config, payload.gpus
    )
    if spec is None:
        raise ApiError(422, "; ".join(message for _, message in errors))
    launch = actions.LaunchRequest(
        payload.name, prompt_set, teacher, spec, payload.guard, payload.teacher_batch
    )
    return team, launch


@router.post("/jobs", response={201: LaunchOut}, summary="Launch a job (or a GAD + SeqKD pair)")
def launch_job(request, payload: JobIn):
    team, launch = _launch_request(request, payload)
    try:
        jobs = actions.launch(team, request.user, launch)
    except QuotaExceeded as refused:
        raise ApiError(429, str(refused), "quota_exceeded") from None
    except ActionError as refused:
        raise ApiError(422, str(refused)) from None
    return HttpStatus(201, {"id": jobs[0].pk, "status": jobs[0].status, "pair": jobs[0].pair_id})


@router.post(
    "/jobs/plan",
    summary="What a launch would cost: teacher tokens and dollars, GPU-hours (nothing saved)",
)
def plan_job(request, payload: JobIn) -> dict[str, Any]:
    """The same body as ``POST /jobs``, checked the same way; nothing is saved.

    ``teacher``: the answers still to buy (those in the set or cached for this teacher
    subtracted), their tokens (prompts at ~4 characters a token, answers at this
    teacher's earlier lengths or the answer budget) and price (``cost_usd``; at most
    ``at_most_usd`` if every answer used its whole budget); ``jobs``: per job of the
    launch (two for a pair), its rough GPU-hours and their basis; ``memory``: the plan
    per GPU."""
    _, launch = _launch_request(request, payload)
    return costs.launch_estimate(launch.spec, launch.prompt_set, launch.teacher)


@router.get("/jobs", response=list[JobOut], summary="Jobs of your teams, newest first")
def list_jobs(
    request, response: HttpResponse, team: str | None = None, status: str | None = None,
    limit: int = Limit, offset: int = Offset,
):  # fmt: skip
    rows = access.for_user(Job.objects.select_related("team"), request.user, roles=ROLES)
    if team:
        rows = rows.filter(team=access.team_for(request, team, roles=ROLES))
    if status:
        if status not in Status.values:
            raise ApiError(422, f"status: must be one of {', '.join(Status.values)}")
        rows = rows.filter(status=status)
    return page(request, response, rows.order_by("-created_at", "-pk"), limit, offset)


@router.get("/jobs/{int:job_id}", response=JobDetailOut)
def get_job(request, job_id: int):
    return _job(request, job_id)


@router.post("/jobs/{int:job_id}/cancel", response=JobOut)
def cancel_job(request, job_id: int):
    job = _job(request, job_id)
    if job.status not in actions.ACTIVE_STATUSES:
        raise ApiError(409, f"job {job.pk} has already ended ({job.status})")
    return actions.cancel(job)


@router.delete(
    "/jobs/{int:job_id}",
    response={204: None},
    summary="Delete an ended job with its checkpoints and run directory (team owners)",
)
def delete_job(request, job_id: int):
    job = access.get_object(Job.objects.all(), request.user, job_id, [Role.OWNER])
    try:
        storage.delete_job(job)
    except storage.StillNeeded as why:
        raise ApiError(409, str(why), "still_needed") from None
    return HttpStatus(204, None)


@router.post(
    "/jobs/{int:job_id}/resume",
    response=JobOut,
    summary="Resume a job the health guard paused (after a person looked at the alarm)",
)
def resume_job(request, job_id: int):
    job = _job(request, job_id)
    if not actions.resume_guarded(job):
        raise ApiError(409, f"Job {job.name!r} was not paused by the health guard.", "not_paused")
    job.refresh_from_db()
    return job


class JobEventOut(Schema):
    id: int
    created_at: datetime
    kind: str
    level: str
    message: str
    data: dict[str, Any]


@router.get(
    "/jobs/{int:job_id}/events",
    response=list[JobEventOut],
    summary="What happened to the job, oldest first: poll with after = the last id seen",
)
def job_events(
    request,
    job_id: int,
    after: int = Query(0, ge=0, le=LARGEST, description="Only events with a larger id."),
    limit: int = Limit,
):
    job = _job(request, job_id)
    return list(job.events.filter(id__gt=after).order_by("id")[:limit])


@router.get("/jobs/{int:job_id}/metrics", summary="Metric series since a step")
def job_metrics(request, job_id: int, after_step: int = Query(-1, ge=-1, le=LARGEST)):
    """Without after_step: every series down-sampled to at most ~2,000 points (min/max
    buckets keep the extremes); with it: the raw points after that step."""
    return metrics_payload(_job(request, job_id), after_step)


@router.get("/jobs/{int:job_id}/samples", summary="Samples written by the trainer")
def job_samples(request, job_id: int, step: int | None = Query(None, ge=0, le=LARGEST)):
    job = _job(request, job_id)
    rows = Sample.objects.filter(job=job)
    if step is not None:
        rows = rows.filter(step=step)
    return [
        {"step": s, "stage": stage, **data}
        for s, stage, data in rows.order_by("step", "id").values_list("step", "stage", "data")[:500]
    ]


@router.get("/jobs/{int:job_id}/checkpoints", response=list[CheckpointOut])
def job_checkpoints(
    request, response: HttpResponse, job_id: int, limit: int = Limit, offset: int = Offset
):
    rows = _job(request, job_id).checkpoints.select_related("job").order_by("step")
    return page(request, response, rows, limit, offset)


@router.get("/jobs/{int:job_id}/tensorboard", summary="Streamed .tar.gz of the TensorBoard logs")
def download_tensorboard(request, job_id: int):
    try:
        response = tensorboard_response(_job(request, job_id), request.user)
    except TooMany as busy:
        raise ApiError(429, str(busy), "rate_limited") from None
    if response is None:
        raise ApiError(404, "This job wrote no TensorBoard logs (report_to: [tensorboard]).")
    return response


@router.get("/checkpoints/{int:checkpoint_id}/download", summary="Streamed tar of the HF directory")
def download_checkpoint(request, checkpoint_id: int, part: str = "model"):
    """``part=adapter``: a LoRA job's adapter alone (peft format) instead of the merged model."""
    checkpoint = _checkpoint(request, checkpoint_id)
    _part_dir(checkpoint, part)  # 422 for an unknown part, 404 when its files are gone
    try:
        response = checkpoint_response(checkpoint, request.user, part)
    except TooMany as busy:
        raise ApiError(429, str(busy), "rate_limited") from None
    if response is None:  # removed since the check above
        raise ApiError(404, "The checkpoint's files are not on the data volume.")
    return response


class CheckpointFileOut(Schema):
    path: str
    size: int
    etag: str
    url: str


def _part_dir(checkpoint: Checkpoint, part: str):
    if part not in ("model", "adapter"):
        raise ApiError(422, f"part: 'model' or 'adapter' (got {part!r})")
    directory = adapter_dir(checkpoint) if part == "adapter" else Path(checkpoint.path)
    if directory is None or not directory.is_dir():
        what = "adapter" if part == "adapter" else "files"
        raise ApiError(404, f"The checkpoint's {what} are not on the data volume.")
    return directory


@router.get(
    "/checkpoints/{int:checkpoint_id}/files",
    response=list[CheckpointFileOut],
    summary="The checkpoint's files, each with its size, ETag and download URL",
)
def checkpoint_files(
    request, response: HttpResponse, checkpoint_id: int, part: str = "model",
    limit: int = Limit, offset: int = Offset,
):  # fmt: skip
    """``part=adapter``: a LoRA job's adapter directory instead of the merged model."""
    directory = _part_dir(_checkpoint(request, checkpoint_id), part)
    suffix = "?part=adapter" if part == "adapter" else ""
    base = request.build_absolute_uri(f"/api/v1/checkpoints/{checkpoint_id}/files/")
    listed = [
        {**vars(entry), "url": f"{base}{quote(entry.path)}{suffix}"}
        for entry in files.listing(directory)
    ]
    return page(request, response, listed, limit, offset)


@router.get(
    "/checkpoints/{int:checkpoint_id}/files/{path:path}",
    summary="One file of the checkpoint, with HTTP Range (206) and an ETag: downloads resume",
)
def checkpoint_file(request, checkpoint_id: int, path: str, part: str = "model"):
    checkpoint = _checkpoint(request, checkpoint_id)
    found = files.find(_part_dir(checkpoint, part), path)
    if found is None:
        raise ApiError(404, f"The checkpoint has no file {path!r} (GET …/files lists them).")
    try:
        response = files.file_response(request, found, request.user)
    except TooMany as busy:
        raise ApiError(429, str(busy), "rate_limited") from None
    if response.status_code == 200 or response.get("Content-Range", "").startswith("bytes 0-"):
        actions.record_download(checkpoint, request.user, path=path)  # not each resumed part
    return response


@router.delete(
    "/checkpoints/{int:checkpoint_id}",
    response={204: None},
    summary="Delete a checkpoint and its files (not a job's final one)",
)
def delete_checkpoint(request, checkpoint_id: int):
    """409 when it is still needed: the job's final model, a running job's resume point,
    or what an evaluation is generating from."""
    try:
        storage.delete_checkpoint(_checkpoint(request, checkpoint_id))
    except storage.StillNeeded as why:
        raise ApiError(409, str(why), "still_needed") from None
    return HttpStatus(204, None)


@router.post("/checkpoints/{int:checkpoint_id}/final", response=CheckpointOut)
def mark_final(request, checkpoint_id: int):
    checkpoint = _checkpoint(request, checkpoint_id)
    actions.mark_final(checkpoint)
    checkpoint.job.final_checkpoint_id = checkpoint.pk
    return checkpoint


class RetentionIO(Schema):
    retain_checkpoints: int | None = Field(
        None, ge=1, le=1000, description="Keep each new job's last N checkpoints; null: all."
    )


@router.get("/teams/{slug}/retention", response=RetentionIO, summary="The team's retention")
def get_retention(request, slug: str):
    return access.team_for(request, slug, roles=ROLES)


@router.put(
    "/teams/{slug}/retention",
    response=RetentionIO,
    summary="Set how many checkpoints new jobs keep (team owners)",
)
def set_retention(request, slug: str, payload: RetentionIO):
    """New jobs take it at launch unless their config sets keep_last or keep_weights; the
    worker then drops older checkpoints, never the final, marked or resume-state ones."""
    team = access.team_for(request, slug, roles=[Role.OWNER])
    Team.objects.filter(pk=team.pk).update(retain_checkpoints=payload.retain_checkpoints)
    return payload
