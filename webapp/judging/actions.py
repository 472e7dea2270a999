"""Every change to judge runs and checkpoint sweeps goes through here: the web's
launches, and the worker's claim, progress and outcome of a run (each a conditional
UPDATE, so a worker that lost its claim cannot overwrite its successor's state)."""

from __future__ import annotations

from django.contrib.auth.models import User
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from webapp import claims, dispatch
from webapp.evaluation import actions as evaluation_actions
from webapp.evaluation.models import Evaluation, PromptChoice
from webapp.jobs.models import Job
from webapp.judging import runs, sweep
from webapp.judging.models import JudgeRun, Sweep
from webapp.lib import crypto
from webapp.lib.errors import ActionError
from webapp.promptsets.models import PromptSet
from webapp.teachers import ssrf
from webapp.teachers.models import TeacherEndpoint
from webapp.teams import actions as team_actions

JUDGE_TASK = "gad.judge_evaluation"
JUDGE_QUEUE = "cpu"


def launch_auto(evaluation_id: int) -> JudgeRun | None:
    """Start the evaluation's automatic judge once every system has its answers (called
    by the worker when generation ends). At most one automatic run per evaluation; a
    refusal (no longer usable endpoint) is recorded as a failed run, so the page says why.
    """
    with transaction.atomic():
        # Row lock: a redelivered generation task cannot start a second automatic run.
        evaluation = Evaluation.objects.select_for_update(of=("self",)).get(pk=evaluation_id)
        endpoint = evaluation.auto_judge
        if endpoint is None or evaluation.judge_runs.exists() or not runs.ready(evaluation):
            return None
        try:
            return launch(evaluation, endpoint, None)
        except ActionError as refused:
            return JudgeRun.objects.create(
                evaluation=evaluation,
                judge=endpoint,
                judge_name=endpoint.name,
                status=JudgeRun.Status.FAILED,
                error=str(refused),
            )


def launch(evaluation: Evaluation, endpoint: TeacherEndpoint, user) -> JudgeRun:
    if not runs.ready(evaluation):
        raise ActionError("Every system needs its answers before the judge can run.")
    if endpoint.team_id != evaluation.team_id:
        raise ActionError("Choose one of the team's teacher endpoints as the judge.")
    try:
        forecast = runs.forecast_for(evaluation, endpoint)
    except (ssrf.UnsafeURL, crypto.KeyUnreadable) as refused:
        raise ActionError(f"Judge {endpoint.name!r} cannot be used: {refused}") from None
    with transaction.atomic():
        team_actions.lock_quota(evaluation.team)
        team_actions.check_may_spend(evaluation.team)  # the judge spends teacher tokens
        run = JudgeRun.objects.create(
            evaluation=evaluation,
            judge=endpoint,
            judge_name=endpoint.name,
            forecast=runs.forecast_dict(forecast),
            created_by=user if getattr(user, "is_authenticated", False) else None,
        )
        JUDGE.enqueue_on_commit(run.pk)
    return run


def claim(run_id: int, worker: str, lease_s: float) -> bool:
    """Take a queued run, or a running one whose claim lapsed, for ``lease_s`` seconds."""
    live = JudgeRun.objects.filter(status__in=[JudgeRun.Status.QUEUED, JudgeRun.Status.RUNNING])
    return claims.take(live, run_id, worker, lease_s, status=JudgeRun.Status.RUNNING)


def renew(run_id: int, worker: str, lease_s: float) -> bool:
    """False when the claim was lost (it lapsed and another worker took the run)."""
    return claims.renew(JudgeRun.objects.all(), run_id, worker, lease_s)


def enqueue(run_id: int) -> bool:
    """Send the judge task; False (and the run flagged unsent) if the broker is down."""
    return JUDGE.enqueue(run_id)


def record_progress(run_id: int, state: dict, tokens: int) -> None:
    """The running run's phase and counts, for the page to poll."""
    JudgeRun.objects.filter(pk=run_id, status=JudgeRun.Status.RUNNING).update(
        progress=state, tokens_used=tokens
    )


def finish(run: JudgeRun, error: str, worker: str, *, paused: bool = False) -> bool:
    """Write the outcome, only while ``worker`` still holds the run (False if not).

    Paused (stopped at its token cap: ``continue_run`` goes on); failed when no answer
    was scored (no report, the judge's replies unreadable, or none scored), with why;
    else "Done", with ``error`` as a note when the run did not end normally."""
    report = run.report
    if paused:
        run.status = JudgeRun.Status.PAUSED
    elif (
        not report or not runs.n_scored(report) or report["summary"].get("stopped") == "unreadable"
    ):
        run.status = JudgeRun.Status.FAILED
        error = error or runs.nothing_scored_message(report)
    else:
        run.status = JudgeRun.Status.SUCCEEDED
    run.error = error
    run.finished_at = timezone.now()
    return claims.release(
        JudgeRun.objects.all(),
        run.pk,
        worker,
        status=run.status,
        error=error,
        finished_at=run.finished_at,
        report=run.report,
        tokens_used=run.tokens_used,
    )


def continue_run(run: JudgeRun, token_cap: int | None = None) -> JudgeRun:
    """Queue a paused run again with its token cap raised to ``token_cap`` (default
    ``runs.suggested_cap``); it asks the judge only for what is not answered yet."""
    with transaction.atomic():
        team_actions.lock_quota(run.evaluation.team)
        team_actions.check_may_spend(run.evaluation.team)
        locked = JudgeRun.objects.select_for_update().get(pk=run.pk)
        if locked.status != JudgeRun.Status.PAUSED:
            raise ActionError(
                f"Judge run {run.pk} is {locked.get_status_display().lower()}: only a run "
                "paused at its token cap can continue."
            )
        current = runs.token_cap(locked) or 0
        cap = runs.suggested_cap(locked) if token_cap is None else token_cap
        if cap <= max(locked.tokens_used, current):
            raise ActionError(
                f"Continue with a token cap above the current one ({current:,} tokens; "
                f"{locked.tokens_used:,} spent)."
            )
        JudgeRun.objects.filter(pk=run.pk).update(
            status=JudgeRun.Status.QUEUED, token_cap=cap, error="", finished_at=None
        )
        JUDGE.enqueue_on_commit(run.pk)
    run.refresh_from_db()
    return run


# ----------------------------------------------------------------------------- sweeps


def create_sweep(
    job: Job,
    user: User | None,
    *,
    every: int,
    judge: TeacherEndpoint,
    prompt_set: PromptSet,
    prompt_choice: str = PromptChoice.TEST,
    limit: int | None = sweep.DEFAULT_PROMPTS,
    length_bound: float | None = None,
    max_new_tokens: int | None = None,
) -> Sweep:
    """Save the sweep's evaluation (generation enqueued after commit, judged when ready)."""
    if every < 1:
        raise ActionError("Sweep every k-th checkpoint with k ≥ 1.")
    if judge.team_id != job.team_id:
        raise ActionError("Choose one of the team's teacher endpoints as the judge.")
    chosen = sweep.checkpoints_to_sweep(job, every)
    if not chosen:
        raise ActionError(f"Job {job.name!r} has no checkpoint yet; sweep it once it saves some.")
    if len(chosen) > sweep.MAX_CHECKPOINTS:
        raise ActionError(
            f"Every {every} of {job.checkpoints.count()} checkpoints is {len(chosen)}; a sweep "
            f"takes at most {sweep.MAX_CHECKPOINTS}. Sweep every {sweep.smallest_every(job)} or more."
        )
    if max_new_tokens is None:
        max_new_tokens = evaluation_actions.response_tokens(
            job.config.get(evaluation_actions.TOKENS_KEY)
        )
    systems = [
        evaluation_actions.base_system(job),
        *(evaluation_actions.checkpoint_system(c) for c in chosen),
    ]
    with transaction.atomic():
        evaluation = evaluation_actions.create_evaluation(
            job.team,
            user,
            name=f"Sweep of {job.name} (every {every} checkpoint{'s' if every > 1 else ''})",
            prompt_set=prompt_set,
            prompt_choice=prompt_choice,
            systems=systems,
            max_new_tokens=max_new_tokens,
            limit=limit,
            auto_judge=judge,
        )
        return Sweep.objects.create(
            evaluation=evaluation, job=job, every=every, length_bound=length_bound
        )


# A judge run's kind of work (webapp.dispatch): queued runs wait for a worker; running
# ones need a live one, and go back to the queue when handed on (the verdicts already
# paid for are in the answer store: the next delivery asks only for the rest).
JUDGE = dispatch.register(
    dispatch.Kind(
        name="judge_runs",
        model=JudgeRun,
        task=JUDGE_TASK,
        queue=JUDGE_QUEUE,
        waiting=Q(status=JudgeRun.Status.QUEUED),
        working=Q(status=JudgeRun.Status.RUNNING),
        requeue={"status": JudgeRun.Status.QUEUED},
    )
)
