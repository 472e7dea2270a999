"""Job tasks: run a job's pipeline; sweep for dead workers and resumable paused jobs."""

from __future__ import annotations

import logging

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings

from webapp.celery import app
from webapp.evaluation import actions as evaluation_actions
from webapp.jobs import actions
from webapp.jobs.models import Job
from webapp.judging import actions as judging
from webapp.nodes import presence
from webapp.promptsets import ingest
from worker import leases, pipeline

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
        leases.retry_later(self, Job.objects.filter(pk=job_id))
    except SoftTimeLimitExceeded:
        log.error("job %s hit the time limit of %s s", job_id, JOB_SOFT_LIMIT_S)
        raise
    log.info("job %s: %s", job_id, outcome)
    return outcome


@app.task(
    name=pipeline.MEMBER_TASK,
    soft_time_limit=JOB_SOFT_LIMIT_S,
    time_limit=JOB_SOFT_LIMIT_S + 600,
)
def run_job_member(
    job_id: int, claim: str, nodes: int, node_rank: int, addr: str, port: int
) -> str:
    """A member node's torchrun of a multi-node job (sent to this node's own queue by the
    job's leading worker). Not retried: if it is lost, the leader notices the lapsed
    leases and sends the whole job back to the queue."""
    outcome = pipeline.run_member(job_id, claim, nodes, node_rank, addr, port)
    log.info("job %s: %s", job_id, outcome)
    return outcome


@app.task(name="gad.sweep", soft_time_limit=60, time_limit=90)
def sweep() -> dict:
    """Re-queue jobs whose worker died (stale heartbeat); resume paused jobs with quota;
    re-queue evaluations whose generating worker died (lapsed claim); send again the
    tasks that never reached the broker."""
    try:
        presence.record_sweep()
    except Exception:  # the metrics must not stop the sweep
        log.warning("sweep: could not record itself for /metrics", exc_info=True)
    requeued, failed = actions.requeue_stale(
        settings.GAD_HEARTBEAT_STALE_S, settings.GAD_JOB_MAX_ATTEMPTS
    )
    resumed = actions.resume_paused()
    evaluations = evaluation_actions.requeue_lost_generation()
    judge_runs = judging.requeue_lost_runs()
    after = settings.GAD_REQUEUE_AFTER_S
    resent = (
        actions.resend_unsent()
        + evaluation_actions.resend_unsent()
        + judging.resend_unsent()
        + ingest.resend_unsent()
        + actions.resend_lost(after)
        + evaluation_actions.resend_lost(after)
        + judging.resend_lost(after)
    )
    if requeued or failed or resumed or evaluations or judge_runs or resent:
        log.warning(
            "sweep: requeued %s, failed %s, resumed %s, evaluations requeued %s, "
            "judge runs requeued %s, unsent tasks sent %s",
            [j.pk for j in requeued],
            [j.pk for j in failed],
            [j.pk for j in resumed],
            evaluations,
            judge_runs,
            len(resent),
        )
    return {
        "requeued": len(requeued),
        "failed": len(failed),
        "resumed": len(resumed),
        "evaluations": len(evaluations),
        "judge_runs": len(judge_runs),
        "resent": len(resent),
    }
