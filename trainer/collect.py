"""`python -m trainer collect`: teacher answers for a prompt file, resumable and budgeted.

Writes OUT (JSONL, the input records plus ``response``, ``finish_reason``, ``usage``)
with the answers flagged ``ok`` only; answers that came back empty, cut by
``max_tokens``, refused or failed for good go to ``OUT.flagged.jsonl`` with their flag,
so none is used for training by accident.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from trainer.data import iter_records
from trainer.errors import BadInput
from trainer.teacher import (
    AnswerStore,
    Limits,
    Sampling,
    Summary,
    TeacherError,
    TeacherSpec,
    collect,
    prompt_hash,
)

DEFAULT_CACHE = Path(
    os.environ.get("GAD_TEACHER_CACHE", Path.home() / ".cache" / "gad-studio" / "teacher.sqlite")
)


@dataclass
class CollectArgs:
    prompts: str
    out: str
    base_url: str
    model: str
    api_key_env: str | None = None
    concurrency: int = 16
    max_tokens: int | None = 1536
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    rpm: float | None = None
    tpm: float | None = None
    max_total_tokens: int | None = None
    timeout: float = 120.0
    cache: str | None = None


def api_key(env_var: str | None) -> tuple[str, str]:
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


def _check(args: CollectArgs) -> None:
    if args.concurrency < 1:
        raise BadInput(f"--concurrency {args.concurrency}: must be at least 1")
    if args.max_tokens is not None and args.max_tokens < 1:
        raise BadInput(f"--max-tokens {args.max_tokens}: must be at least 1")
    if not args.base_url.startswith(("http://", "https://")):
        raise BadInput(f"--base-url {args.base_url!r}: must start with http:// or https://")
    if not Path(args.prompts).is_file():
        raise BadInput(f"prompt file {args.prompts} does not exist or is not a file")


def run_collect(args: CollectArgs) -> int:
    _check(args)
    records = list(iter_records(args.prompts))  # raises BadInput naming the line
    key, key_name = api_key(args.api_key_env)
    spec = TeacherSpec(
        base_url=args.base_url,
        model=args.model,
        api_key=key,
        api_key_name=key_name,
        sampling=Sampling(args.temperature, args.top_p, args.max_tokens, args.seed),
        timeout=args.timeout,
    )
    limits = Limits(args.concurrency, args.rpm, args.tpm, args.max_total_tokens)
    store = AnswerStore(args.cache or DEFAULT_CACHE)
    bar = _progress()
    summary = Summary()
    try:
        summary = asyncio.run(
            collect([r.messages for r in records], spec, store, limits, on_progress=bar.update)
        )
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
        written, flagged = _write_outputs(records, spec, store, Path(args.out))
        store.close()
    print(f"collect: {summary.line()}")
    print(f"collect: {written} answers written to {args.out}; {flagged} flagged")
    if summary.stopped == "budget":
        print(
            f"collect: stopped at the token budget ({args.max_total_tokens:,}); "
            f"{summary.missing} prompts still need an answer"
        )
    if summary.failed:
        print(
            f"collect: {summary.failed} prompts failed after retries; run the same command "
            "again to ask only for those",
            file=sys.stderr,
        )
        return 1
    return 0


def _write_outputs(records, spec: TeacherSpec, store: AnswerStore, out: Path) -> tuple[int, int]:
    answers = store.get_many(spec.fingerprint, (prompt_hash(r.messages) for r in records))
    flagged_path = out.with_name(out.name + ".flagged.jsonl")
    out.parent.mkdir(parents=True, exist_ok=True)
    written = flagged = 0
    tmp, tmp_flagged = (
        out.with_name(out.name + ".tmp"),
        flagged_path.with_name(flagged_path.name + ".tmp"),
    )
    with open(tmp, "w") as good, open(tmp_flagged, "w") as bad:
        for rec in records:
            answer = answers.get(prompt_hash(rec.messages))
            if answer is None:
                continue
            row = {"messages": rec.messages}
            if rec.id is not None:
                row["id"] = rec.id
            row.update(
                response=answer.response, finish_reason=answer.finish_reason, usage=answer.usage
            )
            if answer.flag == "ok":
                good.write(json.dumps(row, ensure_ascii=False) + "\n")
                written += 1
            else:
                row.update(flag=answer.flag, error=answer.error)
                bad.write(json.dumps(row, ensure_ascii=False) + "\n")
                flagged += 1
    os.replace(tmp, out)  # readers never see a half-written file
    if flagged:
        os.replace(tmp_flagged, flagged_path)
    else:
        tmp_flagged.unlink()
    return written, flagged


class _progress:
    """tqdm bar on a terminal: done / total, tokens, errors, rate."""

    def __init__(self) -> None:
        from tqdm import tqdm

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
