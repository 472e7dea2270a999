"""Endpoints speak each model's dialect (issue 24, item 1: the trainer's part).

The paper's teacher family refuses ``max_tokens`` and any temperature but 1: every
answer used to fail, one "HTTP 400" at a time, and the collection's summary still said
they were answered. Tested against a loopback stand-in that answers as those models do
(tests/teacher/reasoning_server.py, with the sources it follows)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.teacher.reasoning_server import ReasoningModel
from trainer.ratelimit import Limits
from trainer.teacher import (
    AnswerStore,
    Dialect,
    RetryPolicy,
    Sampling,
    TeacherError,
    TeacherSpec,
    collect,
)

ROOT = Path(__file__).resolve().parents[2]
FAST = RetryPolicy(max_attempts=2, base_delay=0.01)
REASONING = Dialect(token_param="max_completion_tokens", send_temperature=False)


@pytest.fixture
def gpt5():
    server = ReasoningModel()
    yield server
    server.close()


def chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Question {i}?"}] for i in range(n)]


def run(spec: TeacherSpec, tmp_path, n: int = 20):
    store = AnswerStore(tmp_path / "answers.sqlite")
    return asyncio.run(collect(chats(n), spec, store, Limits(concurrency=4), retry=FAST))


def test_max_tokens_refused_stops_the_run_naming_the_parameter_and_the_fix(gpt5, tmp_path):
    spec = TeacherSpec(gpt5.url, gpt5.model, sampling=Sampling(max_tokens=512))
    with pytest.raises(TeacherError) as refused:
        run(spec, tmp_path)
    message = str(refused.value)
    assert refused.value.scope == "run"
    assert "refuses the parameter 'max_tokens' (unsupported_parameter, HTTP 400)" in message
    assert "max_completion_tokens" in message
    assert "Unsupported parameter" not in message  # the server's own text is never shown
    assert gpt5.statuses[400] <= 4  # one wave of in-flight requests, not 20 failures


def test_a_refused_temperature_says_to_omit_it(gpt5, tmp_path):
    sampling = Sampling(temperature=0.7, max_tokens=512)
    spec = TeacherSpec(gpt5.url, gpt5.model, sampling=sampling,
                       dialect=Dialect(token_param="max_completion_tokens"))  # fmt: skip
    with pytest.raises(TeacherError, match="'temperature' .*omit the temperature"):
        run(spec, tmp_path)


def test_in_the_models_dialect_every_prompt_is_answered(gpt5, tmp_path):
    spec = TeacherSpec(
        gpt5.url, gpt5.model, sampling=Sampling(temperature=0.7, max_tokens=512), dialect=REASONING
    )
    summary = run(spec, tmp_path)
    assert summary.answered == 20 and not summary.flagged
    sent = gpt5.bodies[-1]
    assert sent["max_completion_tokens"] == 512
    assert "max_tokens" not in sent and "temperature" not in sent


def test_reasoning_effort_and_vendor_options_are_sent(gpt5, tmp_path):
    dialect = Dialect.of(
        {"verbosity": "low"},
        token_param="max_completion_tokens",
        send_temperature=False,
        reasoning_effort="minimal",
    )
    spec = TeacherSpec(gpt5.url, gpt5.model, sampling=Sampling(max_tokens=512), dialect=dialect)
    run(spec, tmp_path, n=1)
    assert gpt5.bodies[-1]["reasoning_effort"] == "minimal"
    assert gpt5.bodies[-1]["verbosity"] == "low"
    with pytest.raises(ValueError, match="extra_body may not set max_tokens, model"):
        Dialect.of({"model": "other", "max_tokens": 9})


def test_the_cache_key_follows_the_sampling_used_not_its_spelling():
    sampling = Sampling(temperature=0.7, max_tokens=512)
    plain = TeacherSpec("http://t/v1", "m", sampling=sampling)
    # Before dialects, the fingerprint was this: endpoints that say none keep their cache.
    before = {"base_url": "http://t/v1", "model": "m", "sampling": asdict(sampling)}
    text = json.dumps(before, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    assert plain.fingerprint == hashlib.sha256(text.encode()).hexdigest()[:32]
    spelled = TeacherSpec("http://t/v1", "m", sampling=sampling,
                          dialect=Dialect(token_param="max_completion_tokens"))  # fmt: skip
    assert spelled.fingerprint == plain.fingerprint
    # An omitted temperature is the model's default, whatever was asked.
    omitted = TeacherSpec("http://t/v1", "m", sampling=sampling, dialect=REASONING)
    default = TeacherSpec("http://t/v1", "m", sampling=Sampling(max_tokens=512))
    assert omitted.fingerprint == default.fingerprint != plain.fingerprint
    effort = TeacherSpec("http://t/v1", "m", sampling=sampling,
                         dialect=Dialect(reasoning_effort="high"))  # fmt: skip
    assert effort.fingerprint != plain.fingerprint


def test_a_refused_message_field_is_still_one_prompts_problem():
    """Only the parameters the product sends make a run-wide refusal; a prompt's own
    fault (its messages) stays that prompt's."""
    import httpx
    import openai

    from trainer.teacher import classify

    body = {"error": {"message": "bad", "param": "messages", "code": "invalid_value"}}
    request = httpx.Request("POST", "http://t/v1/chat/completions")
    response = httpx.Response(400, json=body, request=request)
    error = openai.BadRequestError("bad", response=response, body=body)
    assert classify(error, TeacherSpec("http://t/v1", "m")).scope == "prompt"
    body["error"] |= {"param": "max_tokens<script>", "code": "unsupported_parameter"}
    assert classify(error, TeacherSpec("http://t/v1", "m")).scope == "prompt"  # not a name


def test_the_collect_cli_speaks_the_dialect_it_is_given(gpt5, tmp_path):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"q{i}"}) + "\n" for i in range(3)))
    argv = [sys.executable, "-m", "trainer", "collect", "--prompts", str(prompts),
            "--out", str(tmp_path / "out.jsonl"), "--base-url", gpt5.url,
            "--model", gpt5.model, "--cache", str(tmp_path / "c.sqlite"),
            "--max-tokens", "512", "--temperature", "0.7"]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def collect_cli(*more: str) -> subprocess.CompletedProcess:
        return subprocess.run([*argv, *more], capture_output=True, text=True, cwd=ROOT, env=env)

    # A dialect the user chose is kept: the refusal names the fix.
    refused = collect_cli("--token-param", "max_tokens")
    assert refused.returncode == 2 and "max_completion_tokens" in refused.stderr
    done = collect_cli("--token-param", "max_completion_tokens", "--omit-temperature")
    assert done.returncode == 0, done.stderr[-2000:]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 3
    # By default the refusals find the dialect: the run's first request goes alone, so
    # each costs about one (unbilled) refused request, and every prompt is asked once.
    (tmp_path / "c.sqlite").unlink()
    before = dict(gpt5.statuses)
    auto = collect_cli()
    assert auto.returncode == 0, auto.stderr[-2000:]
    assert "refuses max_tokens; using max_completion_tokens" in auto.stderr
    assert "accepts only its default temperature" in auto.stderr
    assert gpt5.statuses[200] - before.get(200, 0) == 3
    assert 2 <= gpt5.statuses[400] - before.get(400, 0) <= 4
    bad = collect_cli("--extra-body", "[1, 2]")
    assert bad.returncode == 2 and "--extra-body must be a JSON object" in bad.stderr


def test_an_answer_emptied_by_reasoning_is_flagged_with_advice(gpt5, tmp_path):
    spec = TeacherSpec(gpt5.url, gpt5.model, sampling=Sampling(max_tokens=32), dialect=REASONING)
    store = AnswerStore(tmp_path / "answers.sqlite")
    summary = asyncio.run(collect(chats(3), spec, store, retry=FAST))
    assert summary.flagged == {"length": 3} and summary.usable == 0
    # Answers, not attempts: nothing usable came back.
    assert summary.line().startswith("0/3 answered (0 cached, 0 new), 3 flagged (3 length)")
    (answer,) = store.get_many(spec.fingerprint, [next(iter(_hashes(chats(1))))]).values()
    assert answer.response == "" and answer.flag == "length"
    assert "reasoning spent the whole budget (32 tokens)" in answer.error
    assert "lower the endpoint's reasoning_effort" in answer.error


def _hashes(prompts):
    from trainer.teacher import prompt_hash

    return {prompt_hash(p) for p in prompts}
