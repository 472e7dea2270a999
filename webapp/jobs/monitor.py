"""What the job page, the job list and the dashboard show live: a job's progress and
the health of its game, read from the database (the rules themselves are pure, in
``webapp.lib.health``); and the health guard's check, for the worker's watch loop."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from django.conf import settings
from django.core.cache import cache

from webapp.jobs.models import ACTIVE_STATUSES, Job, MetricPoint
from webapp.jobs.series import metrics_payload
from webapp.lib import health
from webapp.lib.downsample import DEFAULT_LIMIT

HEALTH_CACHE_S = 600
HEALTH_VERSION = 1  # part of the cache key: bump when Alarm changes shape
# The job list evaluates at most this many jobs (those with metrics, newest first).
LIST_HEALTH_MAX = 50


def thresholds() -> health.Thresholds:
    return health.Thresholds.from_settings(settings)


# The worker reports the collecting stage's count of teacher answers through the same
# ``step`` / ``total_steps`` fields as the trainer's steps; the stage says which it is.
# In "starting" the trainer has reported no step yet: the page shows step 0 until it
# does (the worker clears the collecting count then; rows written before it did may
# still hold it).
COLLECTING_STAGE = "collecting"
BATCH_STAGE = "teacher batch"  # collecting through the Batch API (worker.pipeline)
NOT_TRAINING_YET = frozenset({COLLECTING_STAGE, BATCH_STAGE, "starting"})


def _percent(done: int, total: int | None) -> int | None:
    return min(100, round(100 * done / total)) if total else None


def job_state(job: Job) -> dict:
    """Status, training step, progress and ETA: what the page updates on each poll.

    ``step`` / ``total_steps`` / ``progress`` are always training steps; ``answers``
    is the collecting stage's progress ({done, total, progress}), else None.
    """
    step, total = (0, None) if job.stage in NOT_TRAINING_YET else (job.step, job.total_steps)
    answers = None
    if job.stage in (COLLECTING_STAGE, BATCH_STAGE) and job.total_steps:
        done, of = f"{job.step:,}", f"{job.total_steps:,}"
        answers = {
            "done": job.step,
            "total": job.total_steps,
            "progress": _percent(job.step, job.total_steps),
            "line": f"teacher batch: {done} of {of} done"
            if job.stage == BATCH_STAGE
            else f"teacher answers {done} / {of}",
        }
    return {
        "id": job.pk,
        "name": job.name,
        "status": job.status,
        "status_display": job.get_status_display(),
        "active": job.status in ACTIVE_STATUSES,
        "stage": job.stage,
        "step": step,
        "total_steps": total,
        "progress": _percent(step, total),
        "answers": answers,
        "eta_seconds": job.eta_seconds,
        "eta": eta_text(job.eta_seconds) if job.status in ACTIVE_STATUSES else "",
    }


def eta_text(seconds: int | None) -> str:
    if seconds is None:
        return ""
    if seconds < 90:
        return "about a minute left" if seconds >= 30 else "less than a minute left"
    minutes = round(seconds / 60)
    if minutes < 90:
        return f"about {minutes} min left"
    hours, minutes = divmod(minutes, 60)
    return f"about {hours} h {minutes:02d} min left"


def recent_points(job: Job, window: int) -> tuple[dict[str, list], list[list]]:
    """The last ``window`` metric rows of the job as series, and their stage changes."""
    rows = list(
        MetricPoint.objects.filter(job=job)
        .order_by("-step")
        .values_list("step", "stage", "values")[:window]
    )
    rows.reverse()
    series: dict[str, list] = {}
    stages: list[list] = []
    for step, stage, values in rows:
        for name, value in values.items():
            series.setdefault(name, []).append([step, value])
        if not stages or stages[-1][1] != stage:
            stages.append([step, stage])
    return series, stages


def job_alarms(job: Job, use_cache: bool = True) -> list[health.Alarm]:
    """The alarms that fire on the job's recent metrics (cached until a new point arrives)."""
    newest = MetricPoint.objects.filter(job=job).order_by("-step").values_list("id", "step").first()
    if newest is None:
        return []
    t = thresholds()
    key = (
        f"gad:monitor:health:v{HEALTH_VERSION}:{job.pk}:{job.created_at.timestamp()}:"
        f"{newest[0]}:{hash(t)}"
    )
    if use_cache:
        cached = cache.get(key)
        if cached is not None:
            return cached
    series, stages = recent_points(job, t.points_needed)
    alarms = health.evaluate(series, stages, t)
    cache.set(key, alarms, HEALTH_CACHE_S)
    return alarms


def alarms_for_jobs(jobs: Iterable[Job], limit: int = LIST_HEALTH_MAX) -> dict[int, list]:
    """{job id: alarms} for the first ``limit`` of ``jobs`` that have metrics."""
    out, evaluated = {}, 0
    for job in jobs:
        if evaluated >= limit:
            break
        if job.step > 0 or job.status in ACTIVE_STATUSES:
            evaluated += 1
            alarms = job_alarms(job)
            if alarms:
                out[job.pk] = alarms
    return out


def live_payload(
    job: Job, after_step: int = -1, limit: int = DEFAULT_LIMIT, log_seen: str | None = None
) -> dict:
    """The page's metrics.json: the API's payload plus the job's state and health.

    With ``log_seen`` (the digest of the log the page shows, "" for none) it also has
    ``log``: the log's digest, and its text only when that differs, so that a page
    polling every few seconds is not sent the same 200 lines each time.
    """
    payload = {
        **metrics_payload(job, after_step, limit),
        "job": job_state(job),
        "health": [a.as_dict() for a in job_alarms(job)],
    }
    if log_seen is not None:
        digest = log_digest(job.log_tail)
        payload["log"] = {"digest": digest}
        if digest != log_seen:
            payload["log"]["text"] = job.log_tail
    return payload


def log_digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest() if text else ""


def guard_check(job: Job, guard: str | None) -> health.Decision | None:
    """The health guard's decision now (alarms evaluated afresh, not cached), for the
    worker's watch loop every ``GAD_GUARD_CHECK_S`` seconds; None when it does nothing."""
    if guard in (None, "", "off"):
        return None  # skip the queries entirely
    alarms = job_alarms(job, use_cache=False)
    action = health.guard_action(guard, alarms)
    return health.Decision(action, tuple(alarms)) if action else None
