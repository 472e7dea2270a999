"""Collection against a real `transformers serve` teacher, through a fault-injecting proxy."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.teacher.faultproxy import FaultProxy
from trainer.ratelimit import Limits
from trainer.teacher import (
    AnswerStore,
    Budget,
    RetryPolicy,
    Sampling,
    TeacherError,
    TeacherSpec,
    collect,
    prompt_hash,
)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
FAST_RETRY = RetryPolicy(max_attempts=6, base_delay=0.05, max_delay=1.0)


def chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Tell me about topic {i}."}] for i in range(n)]


def spec_for(url: str, model: str, **kw) -> TeacherSpec:
    return TeacherSpec(url, model, sampling=Sampling(max_tokens=kw.pop("max_tokens", 6)), **kw)


def run_cli(
    *args: str, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "trainer", "collect", *args],
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_faults_are_retried_and_every_prompt_is_answered_once(teacher_server, tmp_path):
    url, model = teacher_server
    pattern = {2: "429", 4: "500", 7: "drop", 9: "stall", 12: "500", 15: "429"}
    with FaultProxy(url, schedule=lambda n, h: pattern.get(n, "pass"), stall_s=12.0) as proxy:
        store = AnswerStore(tmp_path / "a.sqlite")
        # Long enough that no answered request times out on a loaded machine; the
        # stalled one always does.
        spec = spec_for(proxy.url, model, timeout=5.0)
        prompts = chats(12)
        summary = asyncio.run(collect(prompts, spec, store, Limits(concurrency=4), FAST_RETRY))

    hashes = [prompt_hash(p) for p in prompts]
    assert len(store.get_many(spec.fingerprint, hashes)) == 12
    assert set(proxy.delivered) == set(hashes)
    assert all(count == 1 for count in proxy.delivered.values())
    assert summary.retries == sum(proxy.faults.values()) == len(pattern)
    assert summary.http_requests == proxy.requests == 12 + len(pattern)
    assert summary.answered == 12 and summary.failed == 0 and summary.stopped == "done"


def test_retry_after_is_honoured(teacher_server, tmp_path):
    url, model = teacher_server
    with FaultProxy(
        url, schedule=lambda n, h: "429" if n == 1 else "pass", retry_after=1.0
    ) as proxy:
        spec = spec_for(proxy.url, model)
        asyncio.run(collect(chats(1), spec, AnswerStore(tmp_path / "a.sqlite"), retry=FAST_RETRY))
    (first, _, action), (second, _, _) = proxy.times
    assert action == "429"
    assert second - first >= 0.95  # FAST_RETRY alone would have waited <= 0.05 s


def test_rerun_asks_only_for_what_is_missing(teacher_server, tmp_path):
    url, model = teacher_server
    store = AnswerStore(tmp_path / "a.sqlite")
    with FaultProxy(url) as proxy:
        spec = spec_for(proxy.url, model)
        asyncio.run(collect(chats(4), spec, store))
        summary = asyncio.run(collect(chats(6), spec, store))
    assert summary.cached == 4 and summary.requested == 2
    assert proxy.requests == 6 and max(proxy.received.values()) == 1


def test_a_prompt_the_teacher_rejects_is_recorded_and_the_run_goes_on(teacher_server, tmp_path):
    url, model = teacher_server
    prompts = chats(5)
    bad = prompt_hash(prompts[2])
    store = AnswerStore(tmp_path / "a.sqlite")
    with FaultProxy(url, schedule=lambda n, h: "400" if h == bad else "pass") as proxy:
        spec = spec_for(proxy.url, model)
        summary = asyncio.run(collect(prompts, spec, store, retry=FAST_RETRY))
        again = asyncio.run(collect(prompts, spec, store, retry=FAST_RETRY))
    assert summary.flagged["error"] == 1 and summary.answered == 5
    assert store.get_many(spec.fingerprint, [bad])[bad].flag == "error"
    assert again.requested == 0  # a permanent refusal is not paid for again
    assert proxy.received[bad] == 1


def test_token_budget_stops_cleanly(teacher_server, tmp_path):
    url, model = teacher_server
    store = AnswerStore(tmp_path / "a.sqlite")
    spec = spec_for(url, model)
    summary = asyncio.run(
        collect(chats(10), spec, store, Limits(concurrency=1), budget=Budget(cap=60))
    )
    assert summary.stopped == "budget"
    assert 0 < summary.answered < 10
    assert summary.tokens >= 60
    assert summary.missing == 10 - summary.answered


def test_unreachable_host_stops_the_run_after_retries(tmp_path):
    from tests.conftest import free_port

    spec = TeacherSpec(f"http://127.0.0.1:{free_port()}/v1", "m", timeout=1)
    with pytest.raises(TeacherError) as caught:
        asyncio.run(
            collect(
                chats(3),
                spec,
                AnswerStore(tmp_path / "a.sqlite"),
                retry=RetryPolicy(max_attempts=2, base_delay=0.01),
            )
        )
    assert caught.value.scope == "run" and "cannot connect" in str(caught.value)


def test_cli_collects_writes_outputs_and_flags_cut_answers(teacher_server, prompts_file, tmp_path):
    url, model = teacher_server
    out = tmp_path / "collected.jsonl"
    result = run_cli(
        "--prompts",
        str(prompts_file),
        "--out",
        str(out),
        "--base-url",
        url,
        "--model",
        model,
        "--max-tokens",
        "4",
        "--cache",
        str(tmp_path / "c.sqlite"),
    )
    assert result.returncode == 0, result.stderr
    # Answers, not attempts: every one came back cut, so none is usable.
    assert "0/12 answered (0 cached, 0 new), 12 flagged (" in result.stdout
    # A random tiny model never says EOS within 4 tokens: every answer is cut, so every
    # answer is flagged and none reaches the training file.
    flagged = [json.loads(line) for line in out.with_name(out.name + ".flagged.jsonl").open()]
    assert len(flagged) == 12 and {row["flag"] for row in flagged} <= {"length", "empty"}
    assert out.read_text() == ""
    assert all({"response", "finish_reason", "usage", "messages"} <= row.keys() for row in flagged)


def test_cli_401_stops_within_seconds_naming_the_key(teacher_server, prompts_file, tmp_path):
    url, model = teacher_server
    with FaultProxy(url, schedule=lambda n, h: "401") as proxy:
        result = run_cli(
            "--prompts",
            str(prompts_file),
            "--out",
            str(tmp_path / "o.jsonl"),
            "--base-url",
            proxy.url,
            "--model",
            model,
            "--api-key-env",
            "TEACHER_KEY",
            "--cache",
            str(tmp_path / "c.sqlite"),
            env={"TEACHER_KEY": "sk-leak-me"},
        )
        ended = time.monotonic()
    assert result.returncode == 2
    # From the first 401 to the exit: no back-off (the start-up and imports before it
    # depend on how loaded the machine is, so they are not counted).
    assert ended - proxy.times[0][0] < 5
    assert "$TEACHER_KEY" in result.stderr and "401" in result.stderr
    assert "sk-leak-me" not in result.stderr + result.stdout
    assert proxy.requests <= 16  # at most one wave of in-flight requests


@pytest.mark.parametrize(
    "args,message",
    [
        (["--prompts", "missing.jsonl"], "missing.jsonl"),
        (["--api-key-env", "NO_SUCH_VAR_X"], "NO_SUCH_VAR_X is not set"),
        (["--base-url", "ftp://x"], "--base-url"),
    ],
)
def test_cli_bad_input_exits_2_with_a_clear_message(prompts_file, tmp_path, args, message):
    base = {
        "--prompts": str(prompts_file),
        "--out": str(tmp_path / "o.jsonl"),
        "--base-url": "http://127.0.0.1:9/v1",
        "--model": "m",
    }
    flags = dict(zip(args[::2], args[1::2], strict=True))
    argv = [x for k, v in {**base, **flags}.items() for x in (k, v)]
    result = run_cli(*argv, "--cache", str(tmp_path / "c.sqlite"))
    assert result.returncode == 2
    assert message in result.stderr


def test_cli_malformed_line_is_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "ok"}\n{not json\n')
    result = run_cli(
        "--prompts",
        str(bad),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--base-url",
        "http://127.0.0.1:9/v1",
        "--model",
        "m",
    )
    assert result.returncode == 2
    assert "line 2" in result.stderr


def test_sigkill_halfway_then_rerun_pays_for_no_answer_twice(
    teacher_server, prompts_file, tmp_path
):
    url, model = teacher_server
    cache = tmp_path / "c.sqlite"
    killed = threading.Event()
    holder: dict[str, subprocess.Popen] = {}

    def kill_at_seventh(n: int) -> None:
        # With concurrency 1 the 7th request is the only one in flight, and it is
        # still inside the proxy's latency: its answer is never delivered.
        if n == 7 and not killed.is_set():
            holder["proc"].send_signal(signal.SIGKILL)
            holder["proc"].wait()  # dead, its socket closed, before the answer is sent
            killed.set()

    args = [
        "collect",
        "--prompts",
        str(prompts_file),
        "--out",
        str(tmp_path / "o.jsonl"),
        "--base-url",
        None,
        "--model",
        model,
        "--concurrency",
        "1",
        "--max-tokens",
        "4",
        "--cache",
        str(cache),
    ]
    with FaultProxy(url, latency=0.3) as proxy:
        args[args.index(None)] = proxy.url
        proxy.on_receive = kill_at_seventh
        holder["proc"] = subprocess.Popen(
            [sys.executable, "-m", "trainer", *args],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        holder["proc"].wait(timeout=120)
        assert killed.is_set() and holder["proc"].returncode == -signal.SIGKILL
        proxy.on_receive = None
        rerun = subprocess.run(
            [sys.executable, "-m", "trainer", *args],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert rerun.returncode == 0, rerun.stderr
    assert "6 cached" in rerun.stdout
    assert len(proxy.delivered) == 12
    assert max(proxy.delivered.values()) == 1  # no answer was paid for twice
    assert sum(proxy.received.values()) == 13  # only the killed in-flight request repeats
