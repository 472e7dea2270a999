"""Teacher answers through OpenAI's Batch API (issue 24, item 3), with the official
``openai`` client against a loopback server implementing ``/v1/files`` and
``/v1/batches`` as the API reference does (tests/teacher/batch_server.py)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.teacher.batch_server import BatchModel
from trainer.batch import collect_batch
from trainer.teacher import AnswerStore, Dialect, Sampling, TeacherSpec, collect, prompt_hash

ROOT = Path(__file__).resolve().parents[2]
REASONING = Dialect(token_param="max_completion_tokens", send_temperature=False)


def chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Question {i}?"}] for i in range(n)]


@pytest.fixture
def server():
    model = BatchModel(per_poll=5)
    yield model
    model.close()


def spec_of(server) -> TeacherSpec:
    return TeacherSpec(
        server.url, server.model, sampling=Sampling(max_tokens=512), dialect=REASONING
    )


class Died(Exception):
    """The worker process ending mid-batch."""


def test_a_restarted_worker_polls_the_same_batch_and_pays_once(server, tmp_path):
    spec, store = spec_of(server), AnswerStore(tmp_path / "a.sqlite")
    prompts = chats(12)
    kept: list[str] = []

    def die_after_first_look(progress) -> None:
        if progress.done:
            raise Died

    with pytest.raises(Died):
        asyncio.run(
            collect_batch(
                prompts,
                spec,
                store,
                on_submit=kept.append,
                on_progress=die_after_first_look,
                poll_s=0.01,
            )
        )
    assert len(kept) == 1 and len(server.batches) == 1
    seen = []
    summary = asyncio.run(
        collect_batch(prompts, spec, store, batch_id=kept[0], on_progress=seen.append, poll_s=0.01)
    )
    assert len(server.batches) == 1 and len(server.files) == 2  # one input, one output
    assert summary.answered == 12 and summary.failed == 0 and summary.stopped == "done"
    assert seen[-1].line() == "teacher batch: 12 of 12 done (completed)"
    answers = store.get_many(spec.fingerprint, [prompt_hash(p) for p in prompts])
    assert len(answers) == 12 and all(a.flag == "ok" and a.response for a in answers.values())
    assert summary.reasoning_tokens > 0
    assert server.chat_requests == 0  # every answer came through the batch


def test_lines_the_batch_did_not_answer_are_asked_online(tmp_path):
    server = BatchModel(per_poll=5, expire_after=1)
    try:
        spec, store = spec_of(server), AnswerStore(tmp_path / "a.sqlite")
        prompts = chats(12)
        summary = asyncio.run(collect_batch(prompts, spec, store, poll_s=0.01))
        assert summary.stopped == "expired" and summary.answered == 5 and summary.failed == 7
        online = asyncio.run(collect(prompts, spec, store))
        assert (online.cached, online.answered) == (5, 7)
        assert server.chat_requests == 7
    finally:
        server.close()


def test_the_cli_keeps_its_batch_across_a_kill(server, tmp_path):
    """``python -m trainer collect --batch``: killed mid-batch (SIGKILL, no cleanup),
    the same command again polls the batch it submitted, then writes every answer."""
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "Question {i}?"}}\n' for i in range(12)))
    out = tmp_path / "teacher.jsonl"
    server.per_poll = 1  # slow: 12 looks
    command = [
        sys.executable,
        "-m",
        "trainer",
        "collect",
        "--prompts",
        str(prompts),
        "--out",
        str(out),
        "--base-url",
        server.url,
        "--model",
        server.model,
        "--cache",
        str(tmp_path / "c.sqlite"),
        "--token-param",
        "max_completion_tokens",
        "--omit-temperature",
        "--max-tokens",
        "512",
        "--batch",
        "--batch-poll",
        "0.2",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.monotonic() + 60
    while not any(b["request_counts"]["completed"] >= 3 for b in server.batches.values()):
        assert time.monotonic() < deadline and first.poll() is None, first.stdout.read().decode()
        time.sleep(0.05)
    first.send_signal(signal.SIGKILL)
    first.wait()
    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stdout + second.stderr
    assert len(server.batches) == 1, "a second batch was paid for"
    assert "teacher batch: 12 of 12 done" in second.stderr + second.stdout
    assert len(out.read_text().splitlines()) == 12
    assert server.chat_requests == 0
