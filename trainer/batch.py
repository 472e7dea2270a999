"""Teacher answers through OpenAI's Batch API: half the price, within 24 hours.

The lifecycle, as OpenAI's Batch guide and the API reference give it:

1. the requests go up as one JSONL file (``files.create``, ``purpose="batch"``), a line
   per prompt: ``{"custom_id", "method": "POST", "url": "/v1/chat/completions",
   "body"}``; the custom id is the prompt's hash;
2. ``batches.create(input_file_id, endpoint="/v1/chat/completions",
   completion_window="24h")`` starts it; its id is handed to ``on_submit`` at once, so
   that whoever runs this keeps it (the web's job row, the CLI's answer cache) and a
   restarted worker polls the same batch instead of paying for a second;
3. ``batches.retrieve`` until the status is final (``completed``, ``expired``,
   ``failed``, ``cancelled``); ``request_counts`` (completed, failed, total) is the
   progress;
4. the output file (``files.content(output_file_id)``) holds a line per answered
   request, ``{"custom_id", "response": {"status_code": 200, "body": <chat
   completion>}, "error": null}``; the error file the others (a ``status_code`` other
   than 200, or an ``error`` such as ``batch_expired``). An expired batch still has an
   output file for what it finished.

Answers go into the same answer store as online ones (same fingerprint: the batch
asks exactly what ``collect`` would). Prompts the batch did not answer are asked online
by the caller (``collect`` skips what the store has), so every prompt ends answered or
flagged whatever the batch did.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import openai

from trainer.teacher import (
    Answer,
    Store,
    Summary,
    TeacherError,
    TeacherSpec,
    answer_of,
    classify,
    make_client,
    prompt_hash,
)

FINAL = ("completed", "expired", "failed", "cancelled")
ENDPOINT: Literal["/v1/chat/completions"] = "/v1/chat/completions"


@dataclass
class BatchProgress:
    batch_id: str = ""
    status: str = ""  # OpenAI's: validating, in_progress, finalizing, completed, ...
    done: int = 0  # requests answered (completed + failed)
    total: int = 0
    tokens: int = 0  # what the answers read so far spent (known once the batch ends)

    def line(self) -> str:
        return f"teacher batch: {self.done:,} of {self.total:,} done ({self.status})"


def batch_key(spec: TeacherSpec, prompts: Sequence[Sequence[dict[str, str]]]) -> str:
    """What a batch is for (these prompts of this teacher): where its id is kept."""
    hashes = sorted({prompt_hash(m) for m in prompts})
    return hashlib.sha256(json.dumps([spec.fingerprint, hashes]).encode()).hexdigest()[:32]


def batch_lines(prompts: Sequence[Sequence[dict[str, str]]], spec: TeacherSpec) -> bytes:
    """The batch's input file: a request per distinct prompt, keyed by its hash."""
    seen: dict[str, Sequence[dict[str, str]]] = {prompt_hash(m): m for m in prompts}
    lines = (
        json.dumps(
            {"custom_id": key, "method": "POST", "url": ENDPOINT, "body": spec.request_body(m)},
            ensure_ascii=False,
        )
        for key, m in seen.items()
    )
    return ("\n".join(lines) + "\n").encode()


async def collect_batch(
    prompts: Sequence[Sequence[dict[str, str]]],
    spec: TeacherSpec,
    store: Store,
    *,
    batch_id: str = "",
    on_submit: Callable[[str], None] = lambda batch_id: None,
    on_progress: Callable[[BatchProgress], None] | None = None,
    poll_s: float = 30.0,
    client: openai.AsyncOpenAI | None = None,
) -> Summary:
    """Answer ``prompts`` the store lacks through one batch (``batch_id``: the one a
    run before this one submitted), store what it answered, and return the summary
    (its tokens are the batch's). Raises TeacherError when the endpoint refuses the
    batch itself (no Batch API there, a bad key): the caller asks online instead."""
    fingerprint = spec.fingerprint
    by_hash = {prompt_hash(m): m for m in prompts}
    summary = Summary(total=len(by_hash))
    have = store.get_many(fingerprint, by_hash)
    summary.cached = len(have)
    wanted = [m for key, m in by_hash.items() if key not in have]
    own = client is None
    client = client or make_client(spec)
    started = time.monotonic()
    try:
        if not batch_id:
            if not wanted:
                return summary
            upload = await _call(
                spec,
                client.files.create(
                    file=("teacher.jsonl", batch_lines(wanted, spec)), purpose="batch"
                ),
            )
            batch = await _call(
                spec,
                client.batches.create(
                    input_file_id=upload.id, endpoint=ENDPOINT, completion_window="24h"
                ),
            )
            batch_id = batch.id
            on_submit(batch_id)
        progress = BatchProgress(batch_id)
        while True:
            batch = await _call(spec, client.batches.retrieve(batch_id))
            counts = batch.request_counts
            progress.status = batch.status
            if counts is not None:
                progress.done, progress.total = counts.completed + counts.failed, counts.total
            if on_progress:
                on_progress(progress)
            if batch.status in FINAL:
                break
            await asyncio.sleep(poll_s)
        summary.requested = progress.total
        summary.http_requests = progress.total
        for file_id in (batch.output_file_id, batch.error_file_id):
            if file_id:
                content = await _call(spec, client.files.content(file_id))
                _store_lines(content.text, spec, store, summary, set(by_hash))
        summary.failed = summary.total - summary.cached - summary.answered
        summary.stopped = "done" if batch.status == "completed" else batch.status
        return summary
    finally:
        summary.wall_s = time.monotonic() - started
        if own:
            await client.close()


async def _call(spec: TeacherSpec, request: Any) -> Any:
    try:
        return await request
    except openai.OpenAIError as exc:
        err = classify(exc, spec)
        raise TeacherError(f"the Batch API: {err}", "run", err.status) from None


def _store_lines(
    text: str, spec: TeacherSpec, store: Store, summary: Summary, asked: set[str]
) -> None:
    """Answered lines into the store; failed ones are left for the online retry."""
    for raw in text.splitlines():
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # a torn line: its prompt is asked again online
        if not isinstance(line, dict):
            continue
        key, response = line.get("custom_id"), line.get("response")
        if not isinstance(key, str) or key not in asked:
            continue
        if not isinstance(response, dict) or line.get("error"):
            continue
        if response.get("status_code") != 200 or not isinstance(response.get("body"), dict):
            continue
        answer: Answer = answer_of(key, spec, response["body"], 0.0)
        store.put(answer)
        summary.add(answer)
