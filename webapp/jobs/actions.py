"""Every change of a job's state goes through here (STYLE.md: one write path)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from functools import partial
from pathlib import Path

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from webapp import dispatch
from webapp.jobs.models import ACTIVE_STATUSES, Checkpoint, Download, Job, Status
from webapp.lib.errors import ActionError
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
    student: str
    gpus: int
    configs: dict[str, dict]  # method -> validated trainer config; two entries for a pair
    guard: str = "off"  # what the health guard does when an alarm fires


def queue_for(gpus: int) -> str:
    """Workers consume the queue named for what they offer (see docs/deployment.md)."""
    return "gpu" if gpus > 0 else "cpu"


def launch(team, user, request: LaunchRequest) -> list[Job]:
    """Create the job (or the GAD + SeqKD pair) if the quota allows; enqueue after commit.

    The quota row is locked for the transaction, so concurrent launches are serialized
    and a quota of k concurrent jobs admits exactly k.
    """
    longest = max(len(method) for method in request.configs) + 3  # " (seqkd)"
    room = NAME_CHARS - (longest if len(request.configs) > 1 else 0)
    if not request.name.strip() or len(request.name) > room:
        raise ActionError(
            f"name: 1 to {room} characters"
            + (
                " for a GAD + SeqKD pair (each job's name gets its method)"
                if room < NAME_CHARS
                else ""
            )
        )
    nodes = (
        max(int(c.get("nodes") or 1) for c in request.configs.values()) if request.configs else 1
    )
    no_node = presence.gpu_problem(request.gpus, nodes)
    if no_node:
        raise ActionError(no_node)
    with transaction.atomic():
        team_actions.lock_quota(team)
        team_actions.check_launch_allowed(team, count=len(request.configs))
        jobs = []
        for method, config in request.configs.items():
            suffix = f" ({method})" if len(request.configs) > 1 else ""
            jobs.append(
                Job.objects.create(
                    team=team,
                    created_by=user,
                    name=request.name + suffix,
                    method=method,
                    prompt_set=request.prompt_set,
                    teacher=request.teacher,
                    student=request.student,
                    gpus=request.gpus,
                    config=config,
                    guard=request.guard,
                )
            )
            team_actions.record_usage(team, UsageKind.JOB_LAUNCH, 1, job=jobs[-1])
        if len(jobs) == 2:
            Job.objects.filter(pk=jobs[0].pk).update(pair=jobs[1])
            Job.objects.filter(pk=jobs[1].pk).update(pair=jobs[0])
            jobs[0].pair, jobs[1].pair = jobs[1], jobs[0]
        for job in jobs:
            transaction.on_commit(partial(enqueue, job))
    return jobs


def enqueue(job: Job) -> bool:
    """Send the job to its queue; False (and the job flagged unsent) if the broker is down."""
    rows = Job.objects.filter(pk=job.pk)
    return dispatch.send_for(rows, RUN_JOB_TASK, [job.pk], queue_for(job.gpus))


def resend_lost(after_s: float) -> list[int]:
    """Queued jobs whose task message was lost in the broker: sent again (the sweep)."""
    waiting = Job.objects.filter(status=Status.QUEUED, worker="")
    return dispatch.resend_lost(
        waiting, RUN_JOB_TASK, lambda pk: enqueue(Job.objects.get(pk=pk)), after_s
    )


def resend_unsent() -> list[int]:
    """Queued jobs whose task never reached the broker: sent again. Run by the sweep."""
    waiting = Job.objects.filter(unsent=True, status=Status.QUEUED)
    return [job.pk for job in waiting if enqueue(job)]


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
    if not cancelled_now:
        Job.objects.filter(pk=job.pk, status__in=ACTIVE_STATUSES).update(cancel_requested=True)
    job.refresh_from_db()
    return job


def mark_final(checkpoint: Checkpoint) -> None:
    """The job's model of choice; its weights are marked to survive retention
    (``keep_weights: final_and_marked``, trainer.checkpoint.prune)."""
    Job.objects.filter(pk=checkpoint.job_id).update(final_checkpoint=checkpoint)
    step_dir = Path(checkpoint.path).parent
    if step_dir.is_dir():
        (step_dir / "KEEP").write_text("marked final on the job page\n")


def record_download(checkpoint: Checkpoint, user) -> Download:
    return Download.objects.create(checkpoint=checkpoint, user=user)


# ----------------------------------------------------------------------------- worker side
# Each update filters on the worker that claimed the job: a worker that lost its claim
# (its heartbeat went stale and the sweep re-queued the job) changes nothing any more.


def claim(job_id: int, worker: str, stale_after: float) -> Job | None:
    """Take the job for this worker, unless another live worker holds it or it has ended."""
    now = timezone.now()
    fresh = now - timedelta(seconds=stale_after)
    claimable = Job.objects.filter(
        pk=job_id, status__in=ACTIVE_STATUSES, cancel_requested=False
    ).exclude(heartbeat_at__gte=fresh)
    updated = claimable.update(worker=worker, heartbeat_at=now, attempts=F("attempts") + 1)
    if not updated:
        return None
    Job.objects.filter(pk=job_id, started_at__isnull=True).update(started_at=now)
    return Job.objects.select_related("team", "prompt_set", "teacher").get(pk=job_id)


def advance(job: Job, status: str, **fields) -> bool:
    """Move a claimed job to ``status`` (collecting, training, evaluating)."""
    return bool(
        Job.objects.filter(pk=job.pk, worker=job.worker, status__in=ACTIVE_STATUSES).update(
            status=status, **fields
        )
    )


def beat(job: Job, gpu_seconds: float = 0.0, **fields) -> bool:
    """Heartbeat with progress; returns whether a cancel was requested (or the claim lost)."""
    Job.objects.filter(pk=job.pk, worker=job.worker).update(
        heartbeat_at=timezone.now(), gpu_seconds=F("gpu_seconds") + gpu_seconds, **fields
    )
    row = Job.objects.filter(pk=job.pk).values("worker", "cancel_requested").first()
    return row is None or row["cancel_requested"] or row["worker"] != job.worker


def finish(job: Job, status: str, error: str = "", log_tail: str | None = None) -> bool:
    """End the job (succeeded, failed, cancelled) and charge its GPU time to the team."""
    fields = {"status": status, "error": error, "finished_at": timezone.now(), "heartbeat_at": None}
    if log_tail is not None:
        fields["log_tail"] = log_tail
    with transaction.atomic():
        ended = Job.objects.filter(pk=job.pk, worker=job.worker, status__in=ACTIVE_STATUSES).update(
            **fields
        )
        if ended:
            charge_gpu_time(Job.objects.get(pk=job.pk))
    return bool(ended)


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
    return bool(
        Job.objects.filter(pk=job.pk, worker=job.worker, status__in=ACTIVE_STATUSES).update(
            status=Status.PAUSED, worker="", heartbeat_at=None, log_tail=reason
        )
    )


def requeue(job: Job, reason: str, max_attempts: int) -> bool:
    """This attempt cannot go on (a node of its gang was lost): back to the queue to
    resume from the last checkpoint, possibly elsewhere; failed after ``max_attempts``.
    Returns whether it was queued again."""
    if job.attempts >= max_attempts:
        finish(job, Status.FAILED, error=f"{reason}; gave up after {job.attempts} attempts")
        return False
    queued = Job.objects.filter(pk=job.pk, worker=job.worker, status__in=ACTIVE_STATUSES).update(
        status=Status.QUEUED, worker="", heartbeat_at=None, log_tail=reason
    )
    if queued:
        transaction.on_commit(partial(enqueue, job))
    return bool(queued)


def guard_pause(job: Job, reason: str) -> bool:
    """The health guard fired: pause until a person resumes it (not when quota allows)."""
    return bool(
        Job.objects.filter(pk=job.pk, worker=job.worker, status__in=ACTIVE_STATUSES).update(
            status=Status.PAUSED, worker="", heartbeat_at=None, log_tail=reason, guard_paused=True
        )
    )


def resume_guarded(job: Job) -> bool:
    """A person looked at the alarm and lets the job go on: back to the queue."""
    resumed = Job.objects.filter(pk=job.pk, status=Status.PAUSED, guard_paused=True).update(
        status=Status.QUEUED, guard_paused=False
    )
    if resumed:
        transaction.on_commit(lambda: enqueue(job))
    return bool(resumed)


def requeue_stale(stale_after: float, max_attempts: int) -> tuple[list[Job], list[Job]]:
    """Jobs whose worker died: queue them again, or fail them after too many attempts."""
    cutoff = timezone.now() - timedelta(seconds=stale_after)
    stale = Job.objects.filter(status__in=ACTIVE_STATUSES, heartbeat_at__lt=cutoff).exclude(
        status=Status.PAUSED
    )
    requeued, failed = [], []
    for job in stale.select_related("team"):
        with transaction.atomic():
            if job.cancel_requested:
                # Nobody is left to stop: the worker died while the user cancelled.
                if Job.objects.filter(pk=job.pk, heartbeat_at__lt=cutoff).update(
                    status=Status.CANCELLED, finished_at=timezone.now(), heartbeat_at=None
                ):
                    charge_gpu_time(job)
                continue
            if job.attempts >= max_attempts:
                reason = (
                    f"The job's worker was lost {job.attempts} times (last seen "
                    f"{job.heartbeat_at:%Y-%m-%d %H:%M:%S} UTC on {job.worker or 'unknown'}); "
                    "giving up. Check the workers' logs, then run it again."
                )
                if Job.objects.filter(pk=job.pk, heartbeat_at__lt=cutoff).update(
                    status=Status.FAILED,
                    error=reason,
                    finished_at=timezone.now(),
                    heartbeat_at=None,
                ):
                    charge_gpu_time(job)
                    failed.append(job)
                continue
            if Job.objects.filter(pk=job.pk, heartbeat_at__lt=cutoff).update(
                status=Status.QUEUED, worker="", heartbeat_at=None
            ):
                transaction.on_commit(partial(enqueue, job))
                requeued.append(job)
    return requeued, failed


def resume_paused() -> list[Job]:
    """Paused jobs whose team has quota again go back to the queue."""
    resumed = []
    paused = Job.objects.filter(status=Status.PAUSED, worker="", guard_paused=False)
    for job in paused.select_related("team"):
        try:
            team_actions.check_launch_allowed(job.team, count=0)
        except team_actions.QuotaExceeded:
            continue
        if Job.objects.filter(pk=job.pk, status=Status.PAUSED, worker="").update(
            status=Status.QUEUED
        ):
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
                worker="",
                heartbeat_at=None,
            ):
                charge_gpu_time(Job.objects.get(pk=job.pk))
                abandoned += 1
    return abandoned
