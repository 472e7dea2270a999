"""Every change of a job's state goes through here (STYLE.md: one write path)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q, QuerySet
from django.utils import timezone

from webapp import claims, dispatch
from webapp.jobs.configs import JobSpec
from webapp.jobs.models import (
    ACTIVE_STATUSES,
    KEEP_FILE,
    Checkpoint,
    Download,
    Job,
    JobAnswer,
    JobEvent,
    MetricPoint,
    Sample,
    Status,
)
from webapp.lib.errors import ActionError
from webapp.lib.text import scrub
from webapp.nodes import presence
from webapp.promptsets.models import PromptSet
from webapp.teachers.models import TeacherEndpoint
from webapp.teams import actions as team_actions
from webapp.teams.models import Quota, UsageKind

RUN_JOB_TASK = "gad.run_job"
NAME_CHARS = 200  # Job.name's length


@dataclass
class LaunchRequest:
    name: str
    prompt_set: PromptSet
    teacher: TeacherEndpoint | None
    spec: JobSpec  # the student resolved, the shape, the configs (jobs.configs)
    guard: str = "off"  # what the health guard does when an alarm fires
    teacher_batch: bool = False  # collect through the Batch API


def event(job_id: int, kind: str, message: str, level: str = "info", **data) -> None:
    """Record what happened to the job (its events: the API's and, later, webhooks')."""
    JobEvent.objects.create(job_id=job_id, kind=kind, level=level, message=message, data=data)


def queue_for(gpus: int) -> str:
    """Workers consume the queue named for what they offer (see docs/deployment.md)."""
    return "gpu" if gpus > 0 else "cpu"


def launch(team, user, request: LaunchRequest) -> list[Job]:
    """Create the job (or the GAD + SeqKD pair) if the quota allows; enqueue after commit.

    The quota row is locked for the transaction, so concurrent launches are serialized
    and a quota of k concurrent jobs admits exactly k.
    """
    spec = request.spec
    longest = max(len(method) for method in spec.configs) + 3  # " (seqkd)"
    room = NAME_CHARS - (longest if len(spec.configs) > 1 else 0)
    if not request.name.strip() or len(request.name) > room:
        raise ActionError(
            f"name: 1 to {room} characters"
            + (
                " for a GAD + SeqKD pair (each job's name gets its method)"
                if room < NAME_CHARS
                else ""
            )
        )
    no_node = presence.gpu_problem(spec.gpus_per_node, spec.nodes)
    if no_node:
        raise ActionError(no_node)
    with transaction.atomic():
        team_actions.lock_quota(team)
        team_actions.check_launch_allowed(team, count=len(spec.configs))
        jobs = []
        for method, config in spec.configs.items():
            suffix = f" ({method})" if len(spec.configs) > 1 else ""
            jobs.append(
                Job.objects.create(
                    team=team,
                    created_by=user,
                    name=request.name + suffix,
                    method=method,
                    prompt_set=request.prompt_set,
                    teacher=request.teacher,
                    student=spec.student,
                    student_path=spec.student_path,
                    student_bytes=spec.student_bytes,
                    gpus=spec.gpus_per_node,
                    nodes=spec.nodes,
                    config=config,
                    guard=request.guard,
                    teacher_batch=request.teacher_batch,
                    retain_checkpoints=None if spec.own_retention else team.retain_checkpoints,
                )
            )
            team_actions.record_usage(team, UsageKind.JOB_LAUNCH, 1, job=jobs[-1])
            where = f"{spec.gpus_per_node} GPU(s) per node" if spec.gpus_per_node else "the CPU"
            event(jobs[-1].pk, "job.created", f"Launched by {user or 'the site'} on {where}.")
        if len(jobs) == 2:
            Job.objects.filter(pk=jobs[0].pk).update(pair=jobs[1])
            Job.objects.filter(pk=jobs[1].pk).update(pair=jobs[0])
            jobs[0].pair, jobs[1].pair = jobs[1], jobs[0]
        for job in jobs:
            RUN.enqueue_on_commit(job.pk)
    return jobs


def enqueue(job: Job) -> bool:
    """Send the job to its queue; False (and the job flagged unsent) if the broker is down."""
    return RUN.enqueue(job.pk)


def cancel(job: Job) -> Job:
    """A job not yet running is cancelled now; a running one is asked to stop.

    The worker sees ``cancel_requested``, sends SIGTERM to the trainer (which saves a
    checkpoint) and ends the job ``cancelled``.
    """
    now = timezone.now()
    waiting = [Status.QUEUED, Status.PAUSED]
    with transaction.atomic():
        cancelled_now = Job.objects.filter(pk=job.pk, status__in=waiting).update(
            status=Status.CANCELLED, cancel_requested=True, finished_at=now
        )
        if cancelled_now:
            # A paused or re-queued job may have trained already: its GPU time is due.
            charge_gpu_time(Job.objects.get(pk=job.pk))
            event(job.pk, "job.cancelled", "Cancelled before it ran again.")
    if not cancelled_now and Job.objects.filter(pk=job.pk, status__in=ACTIVE_STATUSES).update(
        cancel_requested=True
    ):
        event(job.pk, "job.cancel_requested", "Cancel requested: the worker saves and stops.")
    job.refresh_from_db()
    return job


def mark_final(checkpoint: Checkpoint) -> None:
    """The job's model of choice; its weights are marked to survive retention
    (``keep_weights: final_and_marked``, trainer.checkpoint.prune)."""
    Job.objects.filter(pk=checkpoint.job_id).update(final_checkpoint=checkpoint)
    step_dir = Path(checkpoint.path).parent
    if step_dir.is_dir():
        (step_dir / KEEP_FILE).write_text("marked final on the job page\n")


def record_download(checkpoint: Checkpoint, user, path: str = "") -> Download:
    """``path``: one file of it (the files API); empty for the whole directory's tar."""
    job = checkpoint.job
    label = f"{job.team.slug}: {job.name} (job {job.pk}) step {checkpoint.step}"
    return Download.objects.create(checkpoint=checkpoint, user=user, path=path, label=label)


# ----------------------------------------------------------------------------- worker side
# A worker holds the job by its claim (webapp.claims), renewed with each heartbeat. Each
# write below filters on that claim: a worker that lost it (its heartbeat stopped and
# the sweep handed the job on) changes nothing any more.


def _lease_s() -> float:
    return float(settings.GAD_HEARTBEAT_STALE_S)


def _held(job: Job, **more) -> QuerySet[Job]:
    """The job while this worker holds it: the filter of every write it makes."""
    return claims.holding(Job.objects.filter(**more), job.pk, job.claimed_by)


def claim(job_id: int, worker: str) -> Job | None:
    """Take the job for this worker, unless another live worker holds it or it has ended."""
    claimable = Job.objects.filter(status__in=ACTIVE_STATUSES, cancel_requested=False)
    if not claims.take(claimable, job_id, worker, _lease_s(), attempts=F("attempts") + 1):
        return None
    Job.objects.filter(pk=job_id, started_at__isnull=True).update(started_at=timezone.now())
    job = Job.objects.select_related("team", "prompt_set", "teacher").get(pk=job_id)
    event(job_id, "job.started", f"Started on {worker} (attempt {job.attempts}).")
    return job


def still_held(job: Job) -> bool:
    """This worker still holds the job and it is still running (a multi-node job's
    member asks, to know whether to go on)."""
    return _held(job, status__in=ACTIVE_STATUSES).exists()


def advance(job: Job, status: str, **fields) -> bool:
    """Move a claimed job to ``status`` (collecting, training, evaluating)."""
    moved = bool(_held(job, status__in=ACTIVE_STATUSES).update(status=status, **fields))
    if moved:
        event(job.pk, f"job.{status}", f"{Status(status).label}.")
    return moved


def beat(job: Job, gpu_seconds: float = 0.0, **fields) -> bool:
    """Heartbeat with progress: the claim renewed, the GPU time added. Returns whether
    the job must stop: a cancel was requested, or the claim was lost."""
    added = F("gpu_seconds") + gpu_seconds
    claims.renew(Job.objects.all(), job.pk, job.claimed_by, _lease_s(), gpu_seconds=added, **fields)
    row = Job.objects.filter(pk=job.pk).values("claimed_by", "cancel_requested").first()
    return row is None or row["cancel_requested"] or row["claimed_by"] != job.claimed_by


def finish(job: Job, status: str, error: str = "", log_tail: str | None = None) -> bool:
    """End the job (succeeded, failed, cancelled) and charge its GPU time to the team."""
    fields = {"status": status, "error": error, "finished_at": timezone.now()}
    if log_tail is not None:
        fields["log_tail"] = log_tail
    with transaction.atomic():
        rows = Job.objects.filter(status__in=ACTIVE_STATUSES)
        ended = claims.release(rows, job.pk, job.claimed_by, **fields)
        if ended:
            charge_gpu_time(Job.objects.get(pk=job.pk))
            level = "error" if status == Status.FAILED else "info"
            event(job.pk, f"job.{status}", error or f"{Status(status).label}.", level)
    return ended


def record_metrics(job: Job, points: list[dict], samples: list[dict]) -> bool:
    """Upsert the trainer's metric records (keyed by step and stage: a resumed run's
    rewrite replaces them) and add its samples, in one transaction, while this worker
    holds the job (the row lock keeps the sweep from handing it on meanwhile)."""
    context = {"step", "stage", "time"}
    with transaction.atomic():
        if not _held(job).select_for_update().exists():
            return False
        MetricPoint.objects.bulk_create(
            [
                MetricPoint(
                    job=job,
                    step=r["step"],
                    stage=r.get("stage", ""),
                    time=r.get("time"),
                    values={k: v for k, v in r.items() if k not in context},
                )
                for r in points
            ],
            batch_size=500,
            update_conflicts=True,
            unique_fields=["job", "step", "stage"],
            update_fields=["time", "values"],
        )
        Sample.objects.bulk_create(
            [
                Sample(
                    job=job,
                    step=r["step"],
                    stage=r.get("stage", ""),
                    data={k: scrub(v) for k, v in r.items() if k not in context},
                )
                for r in samples
                if "step" in r
            ],
            batch_size=200,
        )
    return True


def register_checkpoint(job: Job, step: int, path: str, size_bytes: int) -> Checkpoint | None:
    """A complete checkpoint directory the job's trainer saved (the student's HF
    directory at ``path``), with the stage its step trained in; None when this worker
    no longer holds the job."""
    if not _held(job).exists():
        return None
    stage = (
        MetricPoint.objects.filter(job=job, step=step).values_list("stage", flat=True).first()
    ) or ""
    checkpoint, created = Checkpoint.objects.update_or_create(
        job=job, step=step, defaults={"path": path, "stage": stage, "size_bytes": size_bytes}
    )
    if created:
        gb = size_bytes / 1e9
        event(job.pk, "checkpoint.saved", f"Saved step {step} ({gb:.2f} GB).", step=step)
    return checkpoint


def forget_after(job: Job, step: int) -> None:
    """Drop the metrics and samples past the checkpoint an attempt resumes from: the
    resumed run rewrites them, and nothing is counted twice."""
    with transaction.atomic():
        if _held(job).select_for_update().exists():
            MetricPoint.objects.filter(job=job, step__gt=step).delete()
            Sample.objects.filter(job=job, step__gt=step).delete()


def store_test_answers(job: Job, answers: Iterable[tuple[int, str, str]]) -> int:
    """The final checkpoint's answers to the held-out prompts (prompt id, answer, finish
    reason), upserted: the job's evaluating stage. Returns how many were stored."""
    rows = [
        JobAnswer(job=job, prompt_id=pk, response=scrub(text), finish_reason=finish)
        for pk, text, finish in answers
    ]
    with transaction.atomic():
        if not _held(job).select_for_update().exists():
            return 0
        JobAnswer.objects.bulk_create(
            rows,
            update_conflicts=True,
            unique_fields=["job", "prompt"],
            update_fields=["response", "finish_reason"],
        )
    return len(rows)


# A running job's GPU time is charged to the team once this much of it is uncharged
# (every minute for one GPU): the month's usage stays current, so the quota binds while
# the job runs, without a ledger row per heartbeat.
CHARGE_EVERY_S = 60.0


def charge_gpu_time(job: Job, at_least: float = 0.0) -> bool:
    """Charge the job's GPU time not charged yet (if it is more than ``at_least``
    seconds); returns whether something was charged. Row-locked: a heartbeat and the
    job's end never charge the same seconds twice."""
    with transaction.atomic():
        row = Job.objects.select_for_update().filter(pk=job.pk).select_related("team").first()
        if row is None:
            return False
        uncharged = round(row.gpu_seconds - row.gpu_seconds_charged, 3)
        if uncharged <= max(0.0, at_least):
            return False
        team_actions.record_usage(row.team, UsageKind.GPU_SECONDS, uncharged, job=row)
        Job.objects.filter(pk=row.pk).update(gpu_seconds_charged=row.gpu_seconds)
    return True


def charge_running(job: Job) -> str | None:
    """A running job's heartbeat: charge its GPU time (every ``CHARGE_EVERY_S``) and say
    why it must pause when the team's GPU-hours for the month are spent (else None)."""
    if not charge_gpu_time(job, at_least=CHARGE_EVERY_S):
        return None
    quota = Quota.objects.get(team_id=job.team_id)
    usage = team_actions.month_usage(job.team)
    if usage.gpu_hours >= quota.gpu_hours_per_month:
        return (
            f"Paused: the team's GPU-hours for this month are spent ({usage.gpu_hours} of "
            f"{quota.gpu_hours_per_month} h); it resumes from its last checkpoint when the "
            "quota allows."
        )
    return None


def pause(job: Job, reason: str) -> bool:
    """Quota spent mid-job: release the claim; the sweep resumes it when quota allows."""
    rows = Job.objects.filter(status__in=ACTIVE_STATUSES)
    paused = claims.release(rows, job.pk, job.claimed_by, status=Status.PAUSED, log_tail=reason)
    if paused:
        event(job.pk, "job.paused", reason, "warning", why="quota")
    return paused


def requeue(job: Job, reason: str, max_attempts: int) -> bool:
    """This attempt cannot go on (a node of its gang was lost): back to the queue to
    resume from the last checkpoint, possibly elsewhere; failed after ``max_attempts``.
    Returns whether it was queued again."""
    if job.attempts >= max_attempts:
        finish(job, Status.FAILED, error=f"{reason}; gave up after {job.attempts} attempts")
        return False
    rows = Job.objects.filter(status__in=ACTIVE_STATUSES)
    queued = claims.release(rows, job.pk, job.claimed_by, status=Status.QUEUED, log_tail=reason)
    if queued:
        event(job.pk, "job.requeued", reason, "warning")
        RUN.enqueue_on_commit(job.pk)
    return queued


def guard_pause(job: Job, reason: str) -> bool:
    """The health guard fired: pause until a person resumes it (not when quota allows)."""
    rows = Job.objects.filter(status__in=ACTIVE_STATUSES)
    paused = {"status": Status.PAUSED, "log_tail": reason, "guard_paused": True}
    done = claims.release(rows, job.pk, job.claimed_by, **paused)
    if done:
        event(job.pk, "job.paused", reason, "warning", why="health guard")
    return done


def resume_guarded(job: Job) -> bool:
    """A person looked at the alarm and lets the job go on: back to the queue."""
    resumed = Job.objects.filter(pk=job.pk, status=Status.PAUSED, guard_paused=True).update(
        status=Status.QUEUED, guard_paused=False
    )
    if resumed:
        event(job.pk, "job.resumed", "Resumed by a person after the health guard's alarm.")
        RUN.enqueue_on_commit(job.pk)
    return bool(resumed)


def _last_seen(job: Job) -> str:
    """When and where the job's worker last beat: its claim's end, less the lease."""
    if job.claimed_until is None:
        return f"last seen on {job.claimed_by or 'an unknown worker'}"
    seen = job.claimed_until - timedelta(seconds=_lease_s())
    return f"last seen {seen:%Y-%m-%d %H:%M:%S} UTC on {job.claimed_by or 'unknown'}"


def requeue_lost(lapsed: QuerySet[Job]) -> list[int]:
    """Jobs whose worker died (their claim lapsed: the heartbeat stopped): queued again
    to resume from their last checkpoint, failed after GAD_JOB_MAX_ATTEMPTS, cancelled
    when a cancel was waiting for the dead worker. The sweep's hand-on of ``RUN``."""
    max_attempts = settings.GAD_JOB_MAX_ATTEMPTS
    handled = []
    for job in lapsed.select_related("team"):
        with transaction.atomic():
            still = lapsed.filter(pk=job.pk)
            ended = {"claimed_by": "", "claimed_until": None, "finished_at": timezone.now()}
            if job.cancel_requested:
                # Nobody is left to stop: the worker died while the user cancelled.
                if still.update(status=Status.CANCELLED, **ended):
                    charge_gpu_time(job)
                    event(job.pk, "job.cancelled", "Cancelled (its worker was lost).")
                    handled.append(job.pk)
                continue
            if job.attempts >= max_attempts:
                reason = (
                    f"The job's worker was lost {job.attempts} times ({_last_seen(job)}); "
                    "giving up. Check the workers' logs, then run it again."
                )
                if still.update(status=Status.FAILED, error=reason, **ended):
                    charge_gpu_time(job)
                    event(job.pk, "job.failed", reason, "error")
                    handled.append(job.pk)
                continue
            if still.update(status=Status.QUEUED, claimed_by="", claimed_until=None):
                lost = f"Its worker was lost ({_last_seen(job)}): queued again to resume."
                event(job.pk, "job.requeued", lost, "warning")
                RUN.enqueue_on_commit(job.pk)
                handled.append(job.pk)
    return handled


def resume_paused() -> list[Job]:
    """Paused jobs whose team has quota again go back to the queue."""
    resumed = []
    paused = Job.objects.filter(status=Status.PAUSED, claimed_by="", guard_paused=False)
    for job in paused.select_related("team"):
        try:
            team_actions.check_launch_allowed(job.team, count=0)
        except team_actions.QuotaExceeded:
            continue
        if Job.objects.filter(pk=job.pk, status=Status.PAUSED, claimed_by="").update(
            status=Status.QUEUED
        ):
            event(job.pk, "job.resumed", "The team has quota again: queued to resume.")
            enqueue(job)
            resumed.append(job)
    return resumed


def abandon_active(team, reason: str) -> int:
    """Cancel every active job of a team at once (the demo's restart: its workers are
    gone), charging the GPU time each one used."""
    abandoned = 0
    for job in Job.objects.filter(team=team, status__in=ACTIVE_STATUSES):
        with transaction.atomic():
            if Job.objects.filter(pk=job.pk, status__in=ACTIVE_STATUSES).update(
                status=Status.CANCELLED,
                error=reason,
                finished_at=timezone.now(),
                claimed_by="",
                claimed_until=None,
            ):
                charge_gpu_time(Job.objects.get(pk=job.pk))
                event(job.pk, "job.cancelled", reason)
                abandoned += 1
    return abandoned


# The job's kind of work (webapp.dispatch): its task, on the queue its GPUs name; queued
# jobs wait for a worker; started ones (collecting, training, evaluating, and a queued
# one a worker has claimed) need a live one.
RUN = dispatch.register(
    dispatch.Kind(
        name="jobs",
        model=Job,
        task=RUN_JOB_TASK,
        queue=lambda job: queue_for(job.gpus),
        waiting=Q(status=Status.QUEUED),
        working=Q(status__in=ACTIVE_STATUSES - {Status.PAUSED}) & ~Q(claimed_by=""),
        on_lapsed=requeue_lost,
    )
)


def set_teacher_batch(job: Job, batch_id: str) -> None:
    """The Batch API batch the job's collection submitted ("" once it is read): kept so
    that a worker that restarts polls the same batch instead of paying for another."""
    Job.objects.filter(pk=job.pk).update(teacher_batch_id=batch_id)
    job.teacher_batch_id = batch_id
