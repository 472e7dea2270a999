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
  (``worker.answers``), its tokens charged to the team within its monthly budget.

Answers are upserted per (system, prompt) and only missing ones are generated, so a
redelivered task (worker lost, ``acks_late``) resumes where the last one stopped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from functools import partial
from pathlib import Path

from celery.exceptions import SoftTimeLimitExceeded
from django.conf import settings
from django.db import close_old_connections, connection
from django.utils import timezone

from trainer.judge import judge, reports_by_group
from trainer.teacher import Limits, TeacherError, collect
from webapp import env
from webapp.celery import app
from webapp.evaluation import actions, judging
from webapp.evaluation.models import Evaluation, JudgeRun, System, SystemKind
from webapp.jobs.models import JobAnswer
from webapp.promptsets.models import Prompt, TeacherAnswer
from webapp.teachers import crypto, ssrf
from webapp.teams.actions import record_usage
from webapp.teams.models import UsageKind
from worker import leases
from worker.answers import DbAnswerStore, OrmThread, TokenMeter, remaining_tokens
from worker.ingest import scrub
from worker.runner import (
    TrainerProcess,
    bad_input_message,
    generate_argv,
    log_tail,
    read_answers,
    write_prompts,
)
from worker.specs import teacher_spec
from worker.teachers import without_key

log = logging.getLogger(__name__)

SOFT_LIMIT_S = env.integer("GAD_EVAL_TIME_LIMIT_S", 24 * 3600, minimum=60)
# GPUs set aside for evaluation generation, outside the leased pool. Blank: a model's
# answers are generated on one GPU leased from the node's pool (GAD_WORKER_GPUS) like a
# job's, or on the CPU on a node without GPUs.
EVAL_GPUS = env.string("GAD_EVAL_GPUS", "") or ""
LEASE_S = 60.0
POLL_S = 1.0


class LostClaim(Exception):
    """Another worker took the evaluation over (our lease lapsed): stop, write nothing."""


class Lease(threading.Thread):
    """Renews a claim every few seconds, whatever the generation or judging is doing.

    ``renew()`` extends the claim by LEASE_S and says False once another worker holds it.
    """

    def __init__(self, renew, name: str):
        super().__init__(daemon=True, name=name)
        self.renew = renew
        self.lost = False
        self._halt = threading.Event()

    def run(self) -> None:
        try:
            while not self._halt.wait(LEASE_S / 4):
                if not self.renew():
                    self.lost = True
                    return
        finally:
            connection.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)

    def check(self) -> None:
        if self.lost:
            raise LostClaim()


def worker_name() -> str:
    return f"{leases.node_name()}:{os.getpid()}:{threading.get_ident()}"


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
        leases.renew(Evaluation(pk=evaluation_id))  # the GPU a model's generation holds
        return actions.renew(evaluation_id, name, LEASE_S)

    lease = Lease(renew, f"eval-lease-{evaluation_id}")
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
        log.info("%s; retrying in %s s", busy, leases.GPU_RETRY_S)
        leases.retry_later(self, Evaluation.objects.filter(pk=evaluation_id))
    log.info("evaluation %s: %s", evaluation_id, ", ".join(done) or "nothing to do")
    if (run := judging.launch_auto(evaluation_id)) is not None:
        log.info("evaluation %s: judge run %s %s", evaluation_id, run.pk, run.status)
    return ", ".join(done) or "nothing to do"


def _next_system(evaluation_id: int) -> System | None:
    """The teacher first: it needs no GPU, so it never waits behind a model that does."""
    waiting = actions.systems_to_generate(evaluation_id)
    waiting.sort(key=lambda s: s.kind != SystemKind.TEACHER)
    return waiting[0] if waiting else None


def generate_system(system: System, lease: Lease) -> System:
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
        or job.config.get("max_response_tokens", 1536) != evaluation.max_new_tokens
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


def model_answers(system: System, lease: Lease) -> str:
    prompts = reuse_job_answers(system, actions.missing_prompts(system))
    if not prompts:
        return ""
    evaluation = system.evaluation
    root = workspace(system)
    prompts_path, out = root / "prompts.jsonl", root / "answers.jsonl"
    write_prompts(prompts_path, ((p.pk, p.messages) for p in prompts))
    out.unlink(missing_ok=True)
    temperature = None if evaluation.greedy else evaluation.temperature
    argv = generate_argv(system.path, prompts_path, out, evaluation.max_new_tokens, temperature)
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", "TOKENIZERS_PARALLELISM": "false"}
    log_path = root / "generate.log"
    partial = out.with_name(out.name + ".tmp")  # trainer.generate writes here, then renames
    with generation_gpus(evaluation) as visible:
        environ["CUDA_VISIBLE_DEVICES"] = visible
        proc = TrainerProcess(argv, root, log_path, environ)
        try:
            while (code := proc.poll()) is None:
                lease.check()
                close_old_connections()
                actions.set_progress(system.pk, _count_lines(partial))
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:
                proc.kill()
    if code == 2:
        return bad_input_message(log_path)
    if code != 0:
        return f"`trainer generate` exited with status {code}. Its last lines:\n{log_tail(log_path, 20)}"
    actions.store_answers(system, read_answers(out))
    return ""


@contextmanager
def generation_gpus(evaluation: Evaluation) -> Iterator[str]:
    """CUDA_VISIBLE_DEVICES for a model's generation: the GPUs set aside for evaluation
    (GAD_EVAL_GPUS) when there are some; else, on a GPU node, one GPU leased from the
    pool the jobs lease from, held for the block and charged to the team as GPU time
    (leases.NoGpu when none is free: the task retries later, its system back to
    waiting); else "" (the CPU)."""
    if EVAL_GPUS or not settings.GAD_WORKER_GPUS:
        yield EVAL_GPUS
        return
    rows = leases.acquire(evaluation, settings.GAD_WORKER_GPUS, 1)
    if rows is None:
        raise leases.NoGpu(f"evaluation {evaluation.pk} needs a GPU; this node has none free")
    log.info("evaluation %s: generating on leased GPU %s", evaluation.pk, rows[0].gpu_index)
    started = time.monotonic()
    try:
        yield str(rows[0].gpu_index)
    finally:
        leases.release(rows)
        seconds = round(time.monotonic() - started, 3)
        record_usage(evaluation.team, UsageKind.GPU_SECONDS, seconds)


def _count_lines(path: Path) -> int:
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
    except FileNotFoundError:
        return 0


# ----------------------------------------------------------------------------- the teacher


def teacher_answers(system: System, lease: Lease) -> str:
    prompts = actions.missing_prompts(system)
    if not prompts:
        return ""
    endpoint, evaluation = system.teacher, system.evaluation
    if endpoint is None:
        return "The teacher endpoint was deleted; add the teacher to a new evaluation."
    team = evaluation.team
    decoding = {"max_tokens": evaluation.max_new_tokens}
    decoding["temperature"] = 0.0 if evaluation.greedy else evaluation.temperature
    spec = None
    try:
        spec = teacher_spec(endpoint, **decoding)
    except (ssrf.UnsafeURL, crypto.KeyUnreadable) as refused:
        return f"Teacher {endpoint.name!r} cannot be used: {refused}"
    budget = remaining_tokens(team)
    if budget <= 0:
        return "The team's teacher tokens for this month are spent."
    orm = OrmThread()
    meter = TokenMeter(orm, team)
    shown = [0.0]

    def progress(summary) -> None:
        lease.check()
        if time.monotonic() - shown[0] > POLL_S:
            shown[0] = time.monotonic()
            orm.call(actions.set_progress, system.pk, summary.cached + summary.answered)
        meter.update(summary.tokens)

    summary, error = None, ""
    try:
        summary = asyncio.run(
            collect(
                [p.messages for p in prompts],
                spec,
                DbAnswerStore(orm),
                Limits(max_total_tokens=budget),
                on_progress=progress,
            )
        )
    except* TeacherError as failed:
        error = without_key(f"The teacher failed: {failed.exceptions[0]}", endpoint, spec)
    except* LostClaim:
        raise LostClaim() from None
    finally:
        meter.settle(summary.tokens if summary else 0)
        orm.close()
    _store_teacher_answers(system, prompts, spec.fingerprint)
    if summary and summary.stopped == "budget":
        error = f"The team's teacher token budget ran out ({summary.line()})."
    return error


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
            (pk, scrub(a.response), a.finish_reason or a.flag)
            for a in answers
            for pk in by_hash[a.prompt_hash]
        ],
    )


# ----------------------------------------------------------------------------- the judge

JUDGE_SOFT_LIMIT_S = env.integer("GAD_JUDGE_TIME_LIMIT_S", 12 * 3600, minimum=60)


@app.task(
    name=judging.JUDGE_TASK,
    acks_late=True,
    reject_on_worker_lost=True,
    soft_time_limit=JUDGE_SOFT_LIMIT_S,
    time_limit=JUDGE_SOFT_LIMIT_S + 300,
)
def judge_evaluation(run_id: int) -> str:
    """Judge an evaluation's answers; the run always ends succeeded or failed.

    A redelivered task (worker lost) runs again: verdicts already paid for are cached.
    """
    name = worker_name()
    if not judging.claim(run_id, name, LEASE_S):
        return "skipped"  # deleted, finished, or running on a live worker
    run = JudgeRun.objects.select_related("evaluation__team", "judge").get(pk=run_id)
    lease = Lease(partial(judging.renew, run_id, name, LEASE_S), f"judge-lease-{run_id}")
    lease.start()
    try:
        error = run_judge(run, lease)
    except LostClaim:
        log.warning("judge run %s: claim lost to another worker; stopping", run_id)
        return "claim lost"
    except SoftTimeLimitExceeded:
        limit = f"Judging took longer than the time limit ({JUDGE_SOFT_LIMIT_S} s)."
        _finish_judge(run, limit, name)
        raise
    except Exception as exc:
        log.exception("judge run %s failed", run_id)
        error = f"Internal error in the worker ({type(exc).__name__}); see the worker log."
    finally:
        lease.stop()
    if not _finish_judge(run, error, name):
        return "claim lost"
    return run.status


def _judge_progress(run_id: int, state: dict, tokens: int) -> None:
    JudgeRun.objects.filter(pk=run_id, status=JudgeRun.Status.RUNNING).update(
        progress=state, tokens_used=tokens
    )


def _finish_judge(run: JudgeRun, error: str, worker: str) -> bool:
    """Write the outcome, only while this worker still holds the run (False if not)."""
    failed = bool(error) and not run.report
    run.status = JudgeRun.Status.FAILED if failed else JudgeRun.Status.SUCCEEDED
    run.error = error
    run.finished_at = timezone.now()
    return bool(
        JudgeRun.objects.filter(pk=run.pk, claimed_by=worker).update(
            status=run.status,
            error=error,
            finished_at=run.finished_at,
            report=run.report,
            tokens_used=run.tokens_used,
            claimed_by="",
            claimed_until=None,
        )
    )


def run_judge(run: JudgeRun, lease: Lease | None = None) -> str:
    """Fill ``run.report`` and ``run.tokens_used``; return an error message or ''."""
    endpoint, evaluation = run.judge, run.evaluation
    if endpoint is None:
        return "The judge endpoint was deleted; choose another judge."
    team = evaluation.team
    spec = None
    try:
        spec = teacher_spec(endpoint, role="judge")
    except (ssrf.UnsafeURL, crypto.KeyUnreadable) as refused:
        return f"Judge {endpoint.name!r} cannot be used: {refused}"
    budget = remaining_tokens(team)
    if budget <= 0:
        return "The team's teacher tokens for this month are spent."
    items, answers = judging.judge_inputs(evaluation)
    orm = OrmThread()
    meter = TokenMeter(orm, team)
    spent = [0]
    shown = {"at": 0.0, "phase": ""}

    def progress(p) -> None:
        if lease is not None:
            lease.check()  # another worker took the run over: stop asking the judge
        spent[0] = max(spent[0], p.tokens)
        meter.update(p.tokens)
        now = time.monotonic()
        if p.phase != shown["phase"] or now - shown["at"] > POLL_S or p.done == p.total:
            shown.update(at=now, phase=p.phase)
            state = {"phase": p.phase, "done": p.done, "total": p.total}
            orm.call(_judge_progress, run.pk, state, p.tokens)

    report, error = None, ""
    try:
        report = asyncio.run(
            judge(
                items,
                answers,
                spec,
                DbAnswerStore(orm),
                limits=Limits(max_total_tokens=budget),
                on_progress=progress,
            )
        )
    except* TeacherError as failed:
        error = without_key(f"The judge failed: {failed.exceptions[0]}", endpoint, spec)
    except* LostClaim:
        raise LostClaim() from None
    finally:
        total = report.summary.tokens if report else spent[0]
        meter.settle(total)
        orm.close()
        run.tokens_used = total
    if report is not None:
        data = report.to_dict()
        group_of, sizes = judging.test_sets(evaluation)
        data["test_set"] = ", ".join(sizes)
        data["test_sets"] = [
            {"name": name, "n_prompts": sizes[name], "systems": [asdict(r) for r in reports]}
            for name, reports in reports_by_group(report, group_of, sizes).items()
        ]
        data["diagnostics"] = judging.diagnostics(evaluation)
        run.report = data
        if report.summary.stopped == "budget":
            error = f"The team's teacher token budget ran out ({report.summary.line()})."
    return error
