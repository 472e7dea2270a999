"""Job tasks: run a job's pipeline (and a member node's part of one); the sweep, which
hands on the work of dead workers and sends again what the broker lost."""

from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from webapp import dispatch
from webapp.celery import app
from webapp.jobs import actions
from webapp.nodes import presence
from worker import gang, leases, pipeline

log = logging.getLogger(__name__)

JOB_SOFT_LIMIT_S = settings.GAD_JOB_TIME_LIMIT_S


@app.task(
    name=actions.RUN_JOB_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=JOB_SOFT_LIMIT_S,
    time_limit=JOB_SOFT_LIMIT_S + 600,
    max_retries=None,
)
def run_job(self, job_id: int) -> str:
    try:
        outcome = pipeline.run(job_id)
    except leases.NoGpu as busy:
        log.info("%s; retrying in %s s", busy, settings.GAD_GPU_RETRY_S)
        leases.retry_later(self, actions.RUN, job_id)
    except SoftTimeLimitExceeded:
        log.error("job %s hit the time limit of %s s", job_id, JOB_SOFT_LIMIT_S)
        raise
    log.info("job %s: %s", job_id, outcome)
    return outcome


@app.task(
    name=gang.MEMBER_TASK,
    soft_time_limit=JOB_SOFT_LIMIT_S,
    time_limit=JOB_SOFT_LIMIT_S + 600,
)
def run_job_member(
    job_id: int, claim: str, nodes: int, node_rank: int, addr: str, port: int, attempt: int
) -> str:
    """A member node's torchrun of a multi-node job (sent to this node's own queue by the
    job's leading worker). Not retried: if its part fails, or its node is lost, the
    leader stops the job's ranks and sends the whole job back to the queue."""
    outcome = gang.run_member(job_id, claim, nodes, node_rank, addr, port, attempt)
    log.info("job %s: %s", job_id, outcome)
    return outcome


@app.task(name="gad.sweep", soft_time_limit=60, time_limit=90)
def sweep() -> dict:
    """Walk every kind of work (``webapp.dispatch``): hand on the rows whose worker died
    (a lapsed claim: jobs resume from their checkpoint, evaluations and imports where
    they stopped, judge runs with what is paid for), and send again the tasks that never
    reached the broker or were lost inside it. Then resume the paused jobs whose team has
    quota again."""
    try:
        presence.record_sweep()
    except Exception:  # the metrics must not stop the sweep
        log.warning("sweep: could not record itself for /metrics", exc_info=True)
    after = settings.GAD_REQUEUE_AFTER_S
    found = {"resent": 0}
    for kind in dispatch.kinds():
        handed_on = kind.requeue_lapsed()
        resent = kind.resend_unsent() + kind.resend_lost(after)
        if handed_on or resent:
            log.warning(
                "sweep: %s %s handed on (worker lost), %s sent again", kind.name, handed_on, resent
            )
        found[kind.name] = len(handed_on)
        found["resent"] += len(resent)
    resumed = actions.resume_paused()
    if resumed:
        log.warning("sweep: resumed paused jobs %s", [j.pk for j in resumed])
    return found | {"resumed": len(resumed)}
