"""`python -m trainer collect`, `judge` and `score`: from the flags (defined in
`trainer.cli`) to the calls, the printed tables and the exit status.

`trainer.cli` imports this module only for these commands: it loads the teacher's HTTP
client, which a training run does not need.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

from tqdm import tqdm

from trainer.batch import BatchProgress, batch_key, collect_batch
from trainer.collect import write_answers
from trainer.data import iter_records
from trainer.errors import BadInput
from trainer.judge import JudgeConfig, forecast_run, judge
from trainer.judge.run import JudgeProgress, load_answers, load_test_set
from trainer.metrics_text import whitespace_tokens
from trainer.ratelimit import Limits
from trainer.score import (
    SystemScores,
    format_report,
    load_systems,
    match_ids,
    read_answers,
    score_system,
)
from trainer.teacher import (
    TOKEN_PARAMS,
    AnswerStore,
    Budget,
    Dialect,
    Sampling,
    Summary,
    TeacherError,
    TeacherSpec,
    collect,
)

DEFAULT_CACHE = Path(
    os.environ.get("GAD_TEACHER_CACHE", Path.home() / ".cache" / "gad-studio" / "teacher.sqlite")
)

# ---------------------------------------------------------------------------- shared


def _teacher_spec(
    args: argparse.Namespace, role: str, sampling: Sampling | None = None
) -> TeacherSpec:
    """The endpoint of --base-url, --model, --api-key-env and --timeout; ``role`` names it
    in error messages ("teacher", "judge")."""
    key, key_name = _api_key(args.api_key_env)
    return TeacherSpec(
        base_url=args.base_url,
        model=args.model,
        api_key=key,
        api_key_name=key_name,
        sampling=sampling or Sampling(),
        dialect=_dialect(args),
        timeout=args.timeout,
        role=role,
        limits=_limits(args),
    )


def _limits(args: argparse.Namespace) -> Limits:
    """--concurrency, --rpm, --tpm; shared with every other process that names the same
    --limiter-url for the same base URL and model (the web's workers name their own)."""
    url = args.limiter_url or ""
    if url and urlsplit(url).scheme not in ("redis", "rediss", "unix"):
        raise BadInput(f"--limiter-url {url!r}: give a redis:// (or rediss://) URL")
    key = hashlib.sha256(f"{args.base_url.rstrip('/')}\n{args.model}".encode()).hexdigest()
    return Limits(args.concurrency, args.rpm, args.tpm, shared_url=url, key=f"cli:{key[:24]}")


def _dialect(args: argparse.Namespace) -> Dialect:
    extra: Any = {}
    if args.extra_body:
        try:
            extra = json.loads(args.extra_body)
        except ValueError as e:
            raise BadInput(
                f"--extra-body is not JSON ({e}); give an object, e.g. '{{\"top_k\": 20}}'"
            ) from None
        if not isinstance(extra, dict):
            raise BadInput("--extra-body must be a JSON object, e.g. '{\"top_k\": 20}'")
    try:
        return Dialect.of(
            extra,
            # "auto": max_tokens until the endpoint refuses it (_auto_dialect).
            token_param="max_tokens" if args.token_param == "auto" else args.token_param,
            send_temperature=not args.omit_temperature,
            reasoning_effort=args.reasoning_effort,
        )
    except ValueError as e:
        raise BadInput(f"--extra-body: {e}") from None


def _api_key(env_var: str | None) -> tuple[str, str]:
    """The key and how to name it. A variable named explicitly must be set."""
    if env_var:
        value = os.environ.get(env_var)
        if not value:
            raise BadInput(
                f"--api-key-env {env_var}: the environment variable {env_var} is not set; "
                f"export it with the teacher's API key, or leave --api-key-env out for a "
                "local server that needs no key"
            )
        return value, f"the API key in ${env_var}"
    return os.environ.get("OPENAI_API_KEY", ""), "the API key in $OPENAI_API_KEY"


def _at_least(minimum: float, flags: Mapping[str, float | None]) -> None:
    """BadInput for the first flag below ``minimum``; a flag left out (None) passes."""
    for flag, value in flags.items():
        if value is not None and value < minimum:
            raise BadInput(f"{flag} {value}: must be at least {minimum}")


def _check_base_url(base_url: str) -> None:
    if not base_url.startswith(("http://", "https://")):
        raise BadInput(f"--base-url {base_url!r}: must start with http:// or https://")


def _exit_status(command: str, failed: int, what: str) -> int:
    """1 when some calls failed after retries (the answer store makes a rerun ask only
    for those), else 0."""
    if failed:
        print(
            f"{command}: {failed} {what} failed after retries; run the same command again "
            "to ask only for those",
            file=sys.stderr,
        )
        return 1
    return 0


def _write_json(out: Path, payload: dict[str, Any]) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    os.replace(tmp, out)  # readers never see a half-written report


# ---------------------------------------------------------------------------- collect


def run_collect(args: argparse.Namespace) -> int:
    """Teacher answers for --prompts into --out; resumable from the answer store."""
    _at_least(1, {"--concurrency": args.concurrency, "--max-tokens": args.max_tokens})
    _check_base_url(args.base_url)
    if not Path(args.prompts).is_file():
        raise BadInput(f"prompt file {args.prompts} does not exist or is not a file")
    records = list(iter_records(args.prompts))  # raises BadInput naming the line
    sampling = Sampling(args.temperature, args.top_p, args.max_tokens, args.seed)
    spec = _teacher_spec(args, "teacher", sampling)
    budget = Budget(cap=args.max_total_tokens)
    store = AnswerStore(args.cache or DEFAULT_CACHE)
    bar = _CollectBar()
    summary = Summary()
    try:
        prompts = [r.messages for r in records]

        def run(spec: TeacherSpec) -> Summary:
            if args.batch:
                _collect_batch(args, prompts, spec, store)
            return asyncio.run(collect(prompts, spec, store, on_progress=bar.update, budget=budget))

        summary, spec = _in_its_dialect(args, spec, run, "collect")
    except TeacherError as err:
        bar.close()
        raise BadInput(f"teacher collection stopped: {err}") from None
    except KeyboardInterrupt:
        bar.close()
        print(
            f"interrupted: {bar.last.cached + bar.last.answered}/{bar.last.total} answers are "
            "stored; run the same command again to ask only for the rest",
            file=sys.stderr,
        )
        return 130
    finally:
        bar.close()
        written, flagged = write_answers(records, spec, store, Path(args.out))
        store.close()
    print(f"collect: {summary.line()}")
    print(f"collect: {written} answers written to {args.out}; {flagged} flagged")
    if summary.stopped == "budget":
        print(
            f"collect: stopped at the token budget ({args.max_total_tokens:,}); "
            f"{summary.missing} prompts still need an answer"
        )
    return _exit_status("collect", summary.failed, "prompts")


def _collect_batch(
    args: argparse.Namespace, prompts: list[Any], spec: TeacherSpec, store: AnswerStore
) -> None:
    """The Batch API first (trainer.batch); the batch's id is kept in the answer store
    until its answers are read, so an interrupted run polls the same batch."""
    key = batch_key(spec, prompts)
    said = [""]

    def show(progress: BatchProgress) -> None:
        if progress.line() != said[0]:
            said[0] = progress.line()
            print(f"collect: {said[0]}", file=sys.stderr, flush=True)

    summary = asyncio.run(
        collect_batch(
            prompts,
            spec,
            store,
            batch_id=store.batch(key),
            on_submit=lambda batch_id: store.keep_batch(key, batch_id),
            on_progress=show,
            poll_s=args.batch_poll,
        )
    )
    store.forget_batch(key)
    print(f"collect: batch: {summary.line()}", file=sys.stderr)
    if summary.failed:
        print(f"collect: {summary.failed} prompts the batch did not answer are asked online")


T = TypeVar("T")


def _in_its_dialect(
    args: argparse.Namespace, spec: TeacherSpec, run: Callable[[TeacherSpec], T], command: str
) -> tuple[T, TeacherSpec]:
    """``run(spec)``, again in the other dialect where the endpoint refused a parameter
    the flags left automatic: --token-param auto (max_completion_tokens for max_tokens)
    and, without --omit-temperature, a temperature it refuses (none is sent). A refused
    request is not billed, and the run's first request goes alone (the rate limit's
    slow start), so finding out costs one request at most; answers stored before are
    kept. A dialect the flags chose is never changed: the refusal names the fix."""
    tried: set[str] = set()
    while True:
        try:
            return run(spec), spec
        except TeacherError as refused:
            param, dialect = refused.param, spec.dialect
            if param in tried:
                raise
            if param in TOKEN_PARAMS and args.token_param == "auto":
                token = next(p for p in TOKEN_PARAMS if p != dialect.token_param)
                dialect = replace(dialect, token_param=token)
                said = (
                    f"the endpoint refuses {param}; using {token} "
                    f"(--token-param {token} says so up front)"
                )
            elif param == "temperature" and not args.omit_temperature:
                dialect = replace(dialect, send_temperature=False)
                said = (
                    "the endpoint accepts only its default temperature; sending none "
                    "(--omit-temperature says so up front)"
                )
            else:
                raise
            tried.add(str(param))
            print(f"{command}: {said}", file=sys.stderr, flush=True)
            spec = replace(spec, dialect=dialect)


class _CollectBar:
    """tqdm bar on a terminal: done / total, tokens, errors, rate."""

    def __init__(self) -> None:
        self.bar = tqdm(total=0, unit="answer", disable=None, dynamic_ncols=True)
        self.last = Summary()

    def update(self, summary: Summary) -> None:
        self.last = summary
        done = summary.cached + summary.answered
        if self.bar.total != summary.total:
            self.bar.total = summary.total
        self.bar.n = done
        errors = sum(n for k, n in summary.flagged.items() if k == "error") + summary.failed
        self.bar.set_postfix(tokens=f"{summary.tokens:,}", errors=errors, retries=summary.retries)

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------- judge


def run_judge(args: argparse.Namespace) -> int:
    """The forecast, the judge run, its table and (--out) the full report."""
    _at_least(
        1,
        {
            "--concurrency": args.concurrency,
            "--max-tokens": args.max_tokens,
            "--verdict-max-tokens": args.verdict_max_tokens,
            "--resamples": args.resamples,
            "--max-total-tokens": args.max_total_tokens,
        },
    )
    _at_least(0, {"--temperature": args.temperature, "--disagreement": args.disagreement})
    _check_base_url(args.base_url)
    items = load_test_set(args.prompts)
    answers = load_answers(items, args.answers, args.prompts)
    endpoint = _teacher_spec(args, "judge")
    config = JudgeConfig(
        reference_max_tokens=args.max_tokens,
        verdict_max_tokens=args.verdict_max_tokens,
        temperature=args.temperature,
        disagreement=args.disagreement,
        resamples=args.resamples,
        seed=args.seed,
    )
    budget = Budget(cap=args.max_total_tokens)
    store = AnswerStore(args.cache or DEFAULT_CACHE)
    try:
        print(f"judge: {forecast_run(items, answers, endpoint, store, config).line()}")
        bar = _JudgeBar()
        try:
            report, endpoint = _in_its_dialect(
                args,
                endpoint,
                lambda spec: asyncio.run(
                    judge(
                        items, answers, spec, store, config, on_progress=bar.update, budget=budget
                    )
                ),
                "judge",
            )
        finally:
            bar.close()
    except TeacherError as err:
        raise BadInput(f"the judge stopped the run: {err}") from None
    finally:
        store.close()
    report.test_set = Path(args.prompts).stem
    print(f"judge: {args.model} on {report.test_set} ({len(items)} prompts)")
    print(report.table())
    print(f"judge: {report.summary.line()}")
    if args.out:
        _write_json(Path(args.out), report.to_dict())
        print(f"judge: report written to {args.out}")
    if report.summary.stopped == "budget":
        unjudged = sum(s.n_unjudged for s in report.systems)
        print(
            f"judge: stopped at the token budget ({args.max_total_tokens:,}); {unjudged} "
            "answers are not judged yet: run again with a larger budget to judge only those"
        )
    if report.summary.stopped == "unreadable":
        print(
            f"judge: stopped early: the judge's replies could not be read "
            f"({report.summary.unreadable} of its first {config.probe_verdicts} verdicts, even "
            f"after a retry), e.g. {report.summary.unreadable_example!r}; choose a judge model "
            "that follows the verdict format",
            file=sys.stderr,
        )
        return 1
    return _exit_status("judge", report.summary.failed, "judge calls")


class _JudgeBar:
    """tqdm bar on a terminal, one round at a time: references, verdicts, retries."""

    def __init__(self) -> None:
        self.bar = tqdm(total=0, unit="call", disable=None, dynamic_ncols=True)
        self.phase = ""

    def update(self, p: JudgeProgress) -> None:
        if p.phase != self.phase:
            self.phase = p.phase
            self.bar.set_description(p.phase)
            self.bar.reset(total=p.total)
        self.bar.n = p.done
        self.bar.set_postfix(tokens=f"{p.tokens:,}", failed=p.failed)

    def close(self) -> None:
        self.bar.close()


# ---------------------------------------------------------------------------- score


def run_score(args: argparse.Namespace) -> int:
    """Lengths, distinct-n and (--reference) overlap with the teacher, per system."""
    systems = load_systems(args.answers)
    count, unit = (lambda text: len(whitespace_tokens(text))), "whitespace tokens"
    if args.tokenizer:
        from trainer.models import load_tokenizer  # torch: only for --tokenizer

        tok = load_tokenizer(args.tokenizer, what="tokenizer")
        count, unit = (lambda text: len(tok(text, add_special_tokens=False)["input_ids"])), "tokens"
    reference = ref_name = None
    rows: list[SystemScores] = []
    if args.reference:
        ref_rows = read_answers(args.reference, ("teacher_response", "response"))
        reference = {rid: row.text for rid, row in ref_rows.items()}
        ref_name = f"reference ({Path(args.reference).stem})"
        rows.append(score_system(ref_name, reference, None, count))
    for name, (path, answer_rows) in systems.items():
        answers = {rid: row.text for rid, row in answer_rows.items()}
        if reference is not None:
            match_ids(answers, ref_rows, f"reference file {args.reference}", f"answers file {path}")
        rows.append(score_system(name, answers, reference, count))
    print(format_report(rows, unit, ref_name))
    if args.out:
        _write_json(Path(args.out), {"unit": unit, "reference": args.reference,
                                      "systems": [asdict(r) for r in rows]})  # fmt: skip
        print(f"score: report written to {args.out}")
    return 0
