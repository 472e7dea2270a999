"""Evaluation tasks: generate every system's answers to an evaluation's prompts.

One task per evaluation (``gad.generate_answers``, by id). It claims the evaluation
with a short lease that a thread renews, so a second delivery waits instead of
generating the same answers twice; it then takes the evaluation's waiting systems one
after the other:

- a model (checkpoint, student before distillation, any path) answers through
  ``python -m trainer generate`` in a child process (``worker.runner``), greedy unless
  the evaluation sets a temperature; the final checkpoint's answers that the job's own
  evaluating stage already wrote (``JobAnswer``) are reused when they match;
- the teacher answers through ``trainer.teacher.collect`` with the shared answer cache
  through ``worker.paid.paid_call``, its tokens charged to the team within its
  monthly budget.

A second task, ``gad.judge_evaluation``, runs the LLM judge over the answers (a
``JudgeRun``), paid the same way.

Answers are upserted per (system, prompt) and only missing ones are generated, so a
redelivered task (worker lost, ``acks_late``) resumes where the last one stopped.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import Any

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections

from trainer.config import MAX_RESPONSE_TOKENS
from trainer.judge import judge, reports_by_group
from trainer.teacher import collect
from webapp.celery import app
from webapp.claims import worker_name
from webapp.evaluation import actions, results
from webapp.evaluation.models import Evaluation, System, SystemKind
from webapp.jobs import references
from webapp.jobs.models import JobAnswer
from webapp.judging import actions as judging_actions
from webapp.judging import runs
from webapp.judging.models import JudgeRun
from webapp.nodes import actions as node_actions
from webapp.promptsets.models import Prompt, TeacherAnswer
from webapp.teams.actions import record_usage
from webapp.teams.models import SpendPurpose, UsageKind
from worker import hub_cache, leases
from worker.claims import LostClaim, Renewal
from worker.paid import Charge, paid_call
from worker.runner import (
    TrainerProcess,
    generate_argv,
    read_answers,
    trainer_env,
    write_prompts,
)
from worker.sandbox import Sandbox, SandboxUnavailable

log = logging.getLogger(__name__)

SOFT_LIMIT_S = settings.GAD_EVAL_TIME_LIMIT_S
JUDGE_SOFT_LIMIT_S = settings.GAD_JUDGE_TIME_LIMIT_S
LEASE_S = 60.0
POLL_S = 1.0

__all__ = ["LostClaim", "generate_answers", "judge_evaluation", "run_judge"]


def renewal(renew, name: str) -> Renewal:
    """A claim of LEASE_S seconds, renewed four times per lease."""
    return Renewal(renew, LEASE_S / 4, name)


@app.task(
    name=actions.GENERATE_TASK,
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=SOFT_LIMIT_S,
    time_limit=SOFT_LIMIT_S + 300,
    max_retries=None,
)
def generate_answers(self, evaluation_id: int) -> str:
    if not Evaluation.objects.filter(pk=evaluation_id).exists():
        return "deleted"
    name = worker_name()
    if not actions.claim(evaluation_id, name, LEASE_S):
        # Held by a live worker: try again once its lease could have lapsed. It takes every
        # waiting system, including ones queued after it started, before it lets go.
        raise self.retry(countdown=LEASE_S)

    def renew() -> bool:
        node_actions.renew(Evaluation(pk=evaluation_id))  # the GPU a model's generation holds
        return actions.renew(evaluation_id, name, LEASE_S)

    lease = renewal(renew, f"eval-lease-{evaluation_id}")
    lease.start()
    done, busy = [], None
    try:
        while (system := _next_system(evaluation_id)) is not None:
            lease.check()
            done.append(f"{system.pk}:{generate_system(system, lease).status}")
    except LostClaim:
        log.warning("evaluation %s: claim lost to another worker; stopping", evaluation_id)
        return "claim lost"
    except leases.NoGpu as no_gpu:
        busy = no_gpu
    finally:
        lease.stop()
        actions.release(evaluation_id, name)
    if busy is not None:
        # Let go of the evaluation first, so that any worker may take it up again.
        log.info("%s; retrying in %s s", busy, settings.GAD_GPU_RETRY_S)
        leases.retry_later(self, actions.GENERATE, evaluation_id)
    log.info("evaluation %s: %s", evaluation_id, ", ".join(done) or "nothing to do")
    if (run := judging_actions.launch_auto(evaluation_id)) is not None:
        log.info("evaluation %s: judge run %s %s", evaluation_id, run.pk, run.status)
    return ", ".join(done) or "nothing to do"


def _next_system(evaluation_id: int) -> System | None:
    """The teacher first: it needs no GPU, so it never waits behind a model that does."""
    waiting = actions.systems_to_generate(evaluation_id)
    waiting.sort(key=lambda s: s.kind != SystemKind.TEACHER)
    return waiting[0] if waiting else None


def generate_system(system: System, lease: Renewal) -> System:
    """Generate the system's missing answers; it always ends done or failed."""
    if not actions.start_system(system):
        system.refresh_from_db()
        return system
    error = ""
    try:
        if system.kind == SystemKind.TEACHER:
            error = teacher_answers(system, lease)
        else:
            error = model_answers(system, lease)
    except LostClaim:
        raise
    except leases.NoGpu:
        actions.wait_for_gpu(system)
        raise
    except SoftTimeLimitExceeded:
        error = f"Generation took longer than the time limit ({SOFT_LIMIT_S} s)."
        actions.finish_system(system, error)
        raise
    except Exception as exc:
        # The message of an unknown error might quote anything; the traceback is logged.
        log.exception("evaluation %s system %s failed", system.evaluation_id, system.pk)
        error = f"Internal error in the worker ({type(exc).__name__}); see the worker log."
    return actions.finish_system(system, error)


# ----------------------------------------------------------------------------- models


def workspace(system: System) -> Path:
    root = Path(settings.GAD_DATA_DIR) / "evaluations" / str(system.evaluation_id)
    root = root / f"system-{system.pk}"
    root.mkdir(parents=True, exist_ok=True)
    return root


def reuse_job_answers(system: System, prompts: list[Prompt]) -> list[Prompt]:
    """Copy the job's own greedy test answers when they are this system's; return the rest.

    The job's evaluating stage answers with ``run/final`` (the last checkpoint), greedy,
    up to ``max_response_tokens``: the same answers only for that checkpoint and settings.
    """
    checkpoint, evaluation = system.checkpoint, system.evaluation
    if system.kind != SystemKind.CHECKPOINT or checkpoint is None or not evaluation.greedy:
        return prompts
    job = checkpoint.job
    last = job.checkpoints.order_by("-step").values_list("pk", flat=True).first()
    if (
        last != checkpoint.pk
        or job.config.get("max_response_tokens", MAX_RESPONSE_TOKENS) != evaluation.max_new_tokens
    ):
        return prompts
    found = {
        pk: (response, reason)
        for pk, response, reason in JobAnswer.objects.filter(
            job=job, prompt_id__in=[p.pk for p in prompts]
        ).values_list("prompt_id", "response", "finish_reason")
    }
    if found:
        actions.store_answers(system, [(pk, r, f) for pk, (r, f) in found.items()])
    return [p for p in prompts if p.pk not in found]


def model_answers(system: System, lease: Renewal) -> str:
    prompts = reuse_job_answers(system, actions.missing_prompts(system))
    if not prompts:
        return ""
    evaluation = system.evaluation
    try:
        model = model_of(system)
    except references.InvalidReference as refused:
        return refused.message
    root = workspace(system)
    prompts_path, out = root / "prompts.jsonl", root / "answers.jsonl"
    write_prompts(prompts_path, ((p.pk, p.messages) for p in prompts))
    out.unlink(missing_ok=True)
    temperature = None if evaluation.greedy else evaluation.temperature
    argv = generate_argv(model, prompts_path, out, evaluation.max_new_tokens, temperature)
    log_path = root / "generate.log"
    partial = out.with_name(out.name + ".tmp")  # trainer.generate writes here, then renames
    try:
        box = Sandbox(writable=(root,), readable=hub_cache.readable(model))
    except hub_cache.NotFetched as failed:
        return str(failed)
    with generation_gpus(evaluation) as visible:
        env = trainer_env(visible, HF_HUB_OFFLINE="1")
        try:
            proc = TrainerProcess(argv, root, log_path, env, sandbox=box)
        except SandboxUnavailable as missing:
            return f"This node cannot run `trainer generate`: {missing}"

        def tick() -> None:
            lease.check()
            close_old_connections()
            actions.set_progress(system.pk, _count_lines(partial))

        ended = proc.watch(tick, POLL_S)
    if not ended.ok:
        return ended.failure("`trainer generate`", lines=20)
    actions.store_answers(system, read_answers(out))
    return ""


def model_of(system: System) -> str:
    """What ``trainer generate`` loads for the system, checked again here: the stored
    reference could have been changed in the database since the evaluation was made
    (raises ``references.InvalidReference``)."""
    ref = system.path
    if system.kind == SystemKind.CHECKPOINT and system.checkpoint_id:
        ref = f"checkpoint:{system.checkpoint_id}"
    return references.resolve(ref, system.evaluation.team, "model")


@contextmanager
def generation_gpus(evaluation: Evaluation) -> Iterator[str]:
    """CUDA_VISIBLE_DEVICES for a model's generation: the GPUs set aside for evaluation
    (GAD_EVAL_GPUS) when there are some; else, on a GPU node, one GPU leased from the
    pool the jobs lease from, held for the block and charged to the team as GPU time
    (leases.NoGpu when none is free: the task retries later, its system back to
    waiting); else "" (the CPU)."""
    if settings.GAD_EVAL_GPUS or not settings.GAD_WORKER_GPUS:
        yield settings.GAD_EVAL_GPUS
        return
    rows = node_actions.acquire(evaluation, settings.GAD_WORKER_GPUS, 1)
    if rows is None:
        raise leases.NoGpu(f"evaluation {evaluation.pk} needs a GPU; this node has none free")
    log.info("evaluation %s: generating on leased GPU %s", evaluation.pk, rows[0].gpu_index)
    started = time.monotonic()
    try:
        yield str(rows[0].gpu_index)
    finally:
        node_actions.release(rows)
        seconds = round(time.monotonic() - started, 3)
        record_usage(evaluation.team, UsageKind.GPU_SECONDS, seconds)


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


# ----------------------------------------------------------------------------- the teacher


def teacher_answers(system: System, lease: Renewal) -> str:
    prompts = actions.missing_prompts(system)
    if not prompts:
        return ""
    endpoint, evaluation = system.teacher, system.evaluation
    if endpoint is None:
        return "The teacher endpoint was deleted; add the teacher to a new evaluation."
    shown = [0.0]

    def progress(summary, orm) -> None:
        lease.check()
        if time.monotonic() - shown[0] > POLL_S:
            shown[0] = time.monotonic()
            orm.call(actions.set_progress, system.pk, summary.cached + summary.answered)

    paid = paid_call(
        endpoint,
        evaluation.team,
        lambda spec, store, budget, on_progress: collect(
            [p.messages for p in prompts], spec, store, on_progress=on_progress, budget=budget
        ),
        on_progress=progress,
        charge=Charge(
            SpendPurpose.EVALUATION,
            f"teacher answers of evaluation {evaluation.name!r}",
            user=evaluation.created_by,
            evaluation=evaluation,
        ),
        max_tokens=evaluation.max_new_tokens,
        temperature=0.0 if evaluation.greedy else evaluation.temperature,
    )
    if paid.kind in ("refused", "budget"):
        return paid.error
    _store_teacher_answers(system, prompts, paid.fingerprint)
    if paid.result is not None and paid.result.stopped == "budget":
        return f"The team's teacher token budget ran out ({paid.result.line()})."
    return paid.error


def _store_teacher_answers(system: System, prompts: list[Prompt], fingerprint: str) -> None:
    by_hash: dict[str, list[int]] = {}
    for prompt in prompts:
        by_hash.setdefault(prompt.prompt_hash, []).append(prompt.pk)
    answers = TeacherAnswer.objects.filter(
        fingerprint=fingerprint, prompt_hash__in=list(by_hash)
    ).exclude(flag="error")
    actions.store_answers(
        system,
        [
            (pk, a.response, a.finish_reason or a.flag)
            for a in answers
            for pk in by_hash[a.prompt_hash]
        ],
    )


# ----------------------------------------------------------------------------- the judge


@app.task(
    name=judging_actions.JUDGE_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=JUDGE_SOFT_LIMIT_S,
    time_limit=JUDGE_SOFT_LIMIT_S + 300,
)
def judge_evaluation(run_id: int) -> str:
    """Judge an evaluation's answers; the run always ends succeeded, failed or paused
    (at its token cap).

    A redelivered task (worker lost) runs again: verdicts already paid for are cached.
    """
    name = worker_name()
    if not judging_actions.claim(run_id, name, LEASE_S):
        return "skipped"  # deleted, finished, or running on a live worker
    run = JudgeRun.objects.select_related("evaluation__team", "judge").get(pk=run_id)
    lease = renewal(partial(judging_actions.renew, run_id, name, LEASE_S), f"judge-lease-{run_id}")
    lease.start()
    paused = False
    try:
        error, paused = run_judge(run, lease)
    except LostClaim:
        log.warning("judge run %s: claim lost to another worker; stopping", run_id)
        return "claim lost"
    except SoftTimeLimitExceeded:
        limit = f"Judging took longer than the time limit ({JUDGE_SOFT_LIMIT_S} s)."
        judging_actions.finish(run, limit, name)
        raise
    except Exception as exc:
        log.exception("judge run %s failed", run_id)
        error = f"Internal error in the worker ({type(exc).__name__}); see the worker log."
    finally:
        lease.stop()
    if not judging_actions.finish(run, error, name, paused=paused):
        return "claim lost"
    return run.status


def run_judge(run: JudgeRun, lease: Renewal | None = None) -> tuple[str, bool]:
    """Fill ``run.report`` and ``run.tokens_used``; return (the message for the page or
    '', whether the run paused at its token cap)."""
    endpoint, evaluation = run.judge, run.evaluation
    if endpoint is None:
        return "The judge endpoint was deleted; choose another judge.", False
    items, answers = runs.judge_inputs(evaluation)
    # Tokens of earlier deliveries (a worker lost, a paused run continued) count too.
    cap, spent_before = runs.token_cap(run), run.tokens_used
    shown: dict[str, Any] = {"at": 0.0, "phase": ""}

    def progress(p, orm) -> None:
        if lease is not None:
            lease.check()  # another worker took the run over: stop asking the judge
        now = time.monotonic()
        if p.phase != shown["phase"] or now - shown["at"] > POLL_S or p.done == p.total:
            shown["at"], shown["phase"] = now, p.phase
            state = {"phase": p.phase, "done": p.done, "total": p.total}
            spent = spent_before + p.tokens
            orm.call(judging_actions.record_progress, run.pk, state, spent)

    paid = paid_call(
        endpoint,
        evaluation.team,
        lambda spec, store, budget, on_progress: judge(
            items, answers, spec, store, on_progress=on_progress, budget=budget
        ),
        role="judge",
        cap=cap,
        spent_before=spent_before,
        on_progress=progress,
        usage_of=lambda report: report.summary.usage,
        charge=Charge(
            SpendPurpose.JUDGE,
            f"judge run {run.pk} of evaluation {evaluation.name!r}",
            user=run.created_by,
            evaluation=evaluation,
            judge_run=run,
        ),
    )
    run.tokens_used = spent_before + paid.tokens
    report = paid.result
    if report is None:
        return paid.error, False
    data = report.to_dict()
    group_of, sizes = results.test_sets(evaluation)
    data["test_set"] = ", ".join(sizes)
    data["test_sets"] = [
        {"name": name, "n_prompts": sizes[name], "systems": [asdict(r) for r in reports]}
        for name, reports in reports_by_group(report, group_of, sizes).items()
    ]
    data["diagnostics"] = results.diagnostics(evaluation)
    run.report = data
    if report.summary.stopped == "unreadable":
        return runs.unreadable_message(data), False
    if report.summary.stopped == "budget" and cap is not None and paid.stopped_by == "cap":
        # The cap also turns a request away while others are in flight (their tokens
        # are reserved at their estimates): the run paused only if calls were left.
        if any(s.n_unjudged for s in report.systems):
            return runs.paused_message(run, cap), True
        return "", False
    if report.summary.stopped == "budget":
        return f"The team's teacher token budget ran out ({report.summary.line()}).", False
    return "", False
