"""Every change of a job's state goes through here (STYLE.md: one write path)."""

from __future__ import annotations

from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from webapp.celery import app
from webapp.jobs.models import ACTIVE_STATUSES, Checkpoint, Download, Job, Status
from webapp.teams import actions as team_actions
from webapp.teams.models import UsageKind

RUN_JOB_TASK = "gad.run_job"


@dataclass
class LaunchRequest:
    name: str
    prompt_set: object
    teacher: object | None
    student: str
    gpus: int
    configs: dict[str, dict]  # method -> validated trainer config; two entries for a pair


def queue_for(gpus: int) -> str:
    """Workers consume the queue named for what they offer (see docs/deployment.md)."""
    return "gpu" if gpus > 0 else "cpu"


def launch(team, user, request: LaunchRequest) -> list[Job]:
    """Create the job (or the GAD + SeqKD pair) if the quota allows; enqueue after commit.

    The quota row is locked for the transaction, so concurrent launches are serialized
    and a quota of k concurrent jobs admits exactly k.
    """
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
                )
            )
            team_actions.record_usage(team, UsageKind.JOB_LAUNCH, 1, job=jobs[-1])
        if len(jobs) == 2:
            Job.objects.filter(pk=jobs[0].pk).update(pair=jobs[1])
            Job.objects.filter(pk=jobs[1].pk).update(pair=jobs[0])
            jobs[0].pair, jobs[1].pair = jobs[1], jobs[0]
        for job in jobs:
            transaction.on_commit(lambda job=job: enqueue(job))
    return jobs


def enqueue(job: Job) -> None:
    # By name: the web process does not import the worker's code.
    app.send_task(RUN_JOB_TASK, args=[job.pk], queue=queue_for(job.gpus))


def cancel(job: Job) -> Job:
    """A job not yet running is cancelled now; a running one is asked to stop.

    The worker sees ``cancel_requested``, sends SIGTERM to the trainer (which saves a
    checkpoint) and ends the job ``cancelled``.
    """
    now = timezone.now()
    waiting = [Status.QUEUED, Status.PAUSED]
    cancelled_now = Job.objects.filter(pk=job.pk, status__in=waiting).update(
        status=Status.CANCELLED, cancel_requested=True, finished_at=now
    )
    if not cancelled_now:
        Job.objects.filter(pk=job.pk, status__in=ACTIVE_STATUSES).update(cancel_requested=True)
    job.refresh_from_db()
    return job


def mark_final(checkpoint: Checkpoint) -> None:
    Job.objects.filter(pk=checkpoint.job_id).update(final_checkpoint=checkpoint)


def record_download(checkpoint: Checkpoint, user) -> Download:
    return Download.objects.create(checkpoint=checkpoint, user=user)
