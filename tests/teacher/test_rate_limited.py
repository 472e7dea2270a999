"""One rate limit per endpoint (issue 24, item 2): a rate-limited reasoning model gets an
answer for every prompt, and few requests meet a 429, with or without the provider's
``x-ratelimit-*`` headers. The stand-in (tests/teacher/reasoning_server.py) answers as
OpenAI's reasoning models do, with OpenAI's rate-limit headers and 429 body."""

from __future__ import annotations

import asyncio

import pytest

from tests.teacher.reasoning_server import ReasoningModel
from trainer.ratelimit import Limits
from trainer.teacher import AnswerStore, Dialect, Sampling, TeacherSpec, collect, prompt_hash

REASONING = Dialect(token_param="max_completion_tokens", send_temperature=False)


def chats(n: int) -> list[list[dict[str, str]]]:
    return [[{"role": "user", "content": f"Question {i}?"}] for i in range(n)]


@pytest.mark.parametrize("headers", [True, False], ids=["x-ratelimit-headers", "429s-only"])
def test_a_rate_limited_model_answers_every_prompt_with_few_429s(tmp_path, headers):
    # 10 requests per 2 s; 40 prompts at 16 in flight would meet ~75% 429s unpaced.
    server = ReasoningModel(limit=10, window=2.0, headers=headers, latency=0.02)
    try:
        spec = TeacherSpec(
            server.url, server.model, sampling=Sampling(max_tokens=1024), dialect=REASONING
        )
        store = AnswerStore(tmp_path / "answers.sqlite")
        prompts = chats(40)
        summary = asyncio.run(collect(prompts, spec, store, Limits(concurrency=16)))
        answers = store.get_many(spec.fingerprint, [prompt_hash(p) for p in prompts])
    finally:
        server.close()
    refused, sent = server.statuses[429], sum(server.statuses.values())
    print(f"\n{summary.line()}\n429s: {refused} of {sent} requests")
    assert len(answers) == 40 and all(a.flag == "ok" and a.response for a in answers.values())
    assert summary.failed == 0
    assert refused * 5 <= sent, f"{refused} of {sent} requests met a 429"
    if headers:  # the headers say when to stop before the provider says no
        assert refused <= 3
