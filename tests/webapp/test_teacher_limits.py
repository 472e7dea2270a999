"""One rate limit per endpoint, shared by every worker (issue 24, item 2), and an
endpoint's allow-listed vendor options: settings on the page and in the API, and the
limit held by two jobs' collections and a judge run at once, as counted by the server.

The servers are loopback stand-ins for OpenAI's reasoning models
(tests/teacher/reasoning_server.py: max_completion_tokens, temperature 1 only, reasoning
tokens, OpenAI's x-ratelimit-* headers and 429 body)."""

from __future__ import annotations

import json
import threading

import pytest
from django.db import connection
from django.urls import reverse

import worker.teachers
from tests.teacher.reasoning_server import ReasoningModel
from tests.webapp.test_teachers import make_endpoint
from trainer.judge import JudgeItem, judge
from trainer.teacher import collect
from webapp.teachers import actions
from webapp.teachers.models import TeacherEndpoint
from webapp.teachers.specs import teacher_spec
from webapp.teams.actions import create_api_token
from worker.paid import paid_call


def api(client, token):
    def call(method: str, path: str, body: dict | None = None):
        return getattr(client, method)(
            f"/api/v1{path}",
            data=json.dumps(body) if body is not None else None,
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {token}",
        )

    return call


def test_limits_and_vendor_options_through_the_api(personas, client):
    call = api(client, create_api_token(personas.member, "t")[1])
    made = call(
        "post",
        "/teachers",
        {
            "team": personas.team.slug,
            "name": "gpt5",
            "base_url": "http://127.0.0.1:9/v1",
            "model": "gpt-5",
            "requests_per_minute": 500,
            "tokens_per_minute": 200_000,
            "concurrency": 8,
            "extra_body": {"verbosity": "low"},
        },
    )
    assert made.status_code == 201, made.content
    out = made.json()
    assert (out["requests_per_minute"], out["tokens_per_minute"], out["concurrency"]) == (
        500,
        200_000,
        8,
    )
    endpoint = TeacherEndpoint.objects.get(pk=out["id"])
    spec = teacher_spec(endpoint)
    assert spec.limits.requests_per_minute == 500 and spec.limits.concurrency == 8
    assert spec.limits.shared_url.startswith("redis://")  # the broker's: every worker's
    assert spec.request_body([{"role": "user", "content": "x"}])["verbosity"] == "low"

    bad = [
        ({"requests_per_minute": -5}, "requests_per_minute"),
        ({"concurrency": 10_000}, "concurrency"),
        ({"extra_body": {"n": 50}}, "extra_body.n"),  # 50 answers billed per prompt
        ({"extra_body": {"stream": True}}, "extra_body.stream"),
        ({"extra_body": {"top_k": "x" * 3000}}, "extra_body"),
    ]
    for body, field in bad:
        refused = call(
            "post",
            "/teachers",
            {
                **body,
                "team": personas.team.slug,
                "name": "b",
                "base_url": "http://127.0.0.1:9/v1",
                "model": "m",
            },
        )
        assert refused.status_code == 422, body
        assert field in refused.json()["detail"], refused.json()
    assert not TeacherEndpoint.objects.filter(name="b").exists()


def test_limits_on_the_page(personas, login):
    endpoint = make_endpoint(personas.team)
    browser = login(personas.member)
    url = reverse("teacher", args=[personas.team.slug, endpoint.pk])
    page = browser.get(url).content.decode()
    assert "Requests per minute" in page and "Vendor options" in page
    form = {"name": "local", "base_url": endpoint.base_url, "model": "tiny"}
    refused = browser.post(url, form | {"extra_body": '{"logprobs": true}'})
    assert refused.status_code == 422
    assert "not an allowed option" in refused.content.decode()
    saved = browser.post(
        url, form | {"requests_per_minute": "90", "concurrency": "4", "extra_body": '{"top_k": 5}'}
    )
    assert saved.status_code == 302
    endpoint.refresh_from_db()
    assert (endpoint.requests_per_minute, endpoint.concurrency) == (90, 4)
    assert endpoint.extra_body == {"top_k": 5}
    # Blank clears a per-minute limit; the form shows what is stored.
    browser.post(url, form | {"requests_per_minute": "", "extra_body": ""})
    endpoint.refresh_from_db()
    assert endpoint.requests_per_minute is None and endpoint.extra_body == {}


def test_test_connection_on_a_rate_limited_reasoning_model_says_ok(personas):
    """Its discovery (max_tokens refused, then the temperature) spends three of the
    four requests a 2-second window allows, and still says ok."""
    server = ReasoningModel(limit=4, window=2.0)
    try:
        endpoint = make_endpoint(
            personas.team, base_url=server.url, model=server.model, params={"temperature": 0.7}
        )
        actions.request_test(endpoint)
        worker.teachers.run_teacher_test(endpoint.pk)
        endpoint.refresh_from_db()
        assert endpoint.test_status == "ok", endpoint.test_error
        assert "uses max_completion_tokens" in endpoint.dialect_found()
        # Tested again inside the same window: the headers say no room, so it waits.
        actions.request_test(endpoint)
        worker.teachers.run_teacher_test(endpoint.pk)
        endpoint.refresh_from_db()
        assert endpoint.test_status == "ok", endpoint.test_error
    finally:
        server.close()
    assert server.statuses[429] == 0


def _busiest(times: list[float], window: float) -> int:
    """The most requests that arrived within any ``window`` seconds."""
    times = sorted(times)
    best, start = 0, 0
    for end, t in enumerate(times):
        while t - times[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


@pytest.mark.django_db(transaction=True)
def test_two_jobs_and_a_judge_run_share_the_endpoints_requests_per_minute(personas):
    """Three paid calls at once, each in its own thread and event loop as on three
    workers, on one endpoint of 120 requests per minute (2 a second): the server sees at
    most 2 a second between them, not 2 each."""
    server = ReasoningModel()
    rpm = 120
    try:
        endpoint = make_endpoint(
            personas.team,
            base_url=server.url,
            model=server.model,
            token_param="max_completion_tokens",
            temperature_mode="omit",
            requests_per_minute=rpm,
        )
        job_prompts = [
            [[{"role": "user", "content": f"Job {j} question {i}?"}] for i in range(8)]
            for j in range(2)
        ]
        items = [JudgeItem(f"p{i}", [{"role": "user", "content": f"Judge {i}?"}]) for i in range(2)]
        answers = {"student": {f"p{i}": "an answer" for i in range(2)}}
        calls = [
            lambda prompts=prompts: paid_call(
                endpoint,
                personas.team,
                lambda spec, store, budget, on_progress: collect(
                    prompts, spec, store, on_progress=on_progress, budget=budget
                ),
            )
            for prompts in job_prompts
        ]
        calls.append(
            lambda: paid_call(
                endpoint,
                personas.team,
                lambda spec, store, budget, on_progress: judge(
                    items, answers, spec, store, on_progress=on_progress, budget=budget
                ),
                role="judge",
                usage_of=lambda report: report.summary.usage,
            )
        )
        results: list = [None] * len(calls)

        def run(i: int) -> None:
            try:
                results[i] = calls[i]()
            finally:
                connection.close()  # this thread's own

        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    finally:
        server.close()
    assert all(r is not None and r.kind == "" for r in results), [r and r.error for r in results]
    assert results[0].result.usable == 8 and results[1].result.usable == 8
    times = server.times
    assert len(times) >= 16 + 2  # both jobs' prompts and the judge's calls
    for window in (1.0, 3.0, 5.0):
        assert _busiest(times, window) <= window * rpm / 60 + 1, (window, _busiest(times, window))


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("headers", [True, False], ids=["x-ratelimit-headers", "429s-only"])
def test_a_rate_limited_reasoning_model_from_test_connection_to_forty_answers(personas, headers):
    """The check the issue closes with: an endpoint left on "auto", a stand-in for a
    current reasoning model with a request-rate limit. Test connection says ok; a
    40-prompt collection then gets a non-empty answer for every prompt, and at most one
    request in five meets a 429."""
    server = ReasoningModel(limit=10, window=2.0, headers=headers, latency=0.02)
    try:
        endpoint = make_endpoint(personas.team, base_url=server.url, model=server.model)
        actions.request_test(endpoint)
        worker.teachers.run_teacher_test(endpoint.pk)
        endpoint.refresh_from_db()
        assert endpoint.test_status == "ok", endpoint.test_error
        prompts = [[{"role": "user", "content": f"Question {i}?"}] for i in range(40)]
        paid = paid_call(
            endpoint,
            personas.team,
            lambda spec, store, budget, on_progress: collect(
                prompts, spec, store, on_progress=on_progress, budget=budget
            ),
        )
    finally:
        server.close()
    assert paid.kind == "", paid.error
    from trainer.teacher import prompt_hash
    from webapp.promptsets.answers import load_answers

    answers = load_answers(paid.fingerprint, [prompt_hash(p) for p in prompts])
    assert len(answers) == 40 and all(a.flag == "ok" and a.response for a in answers.values())
    refused, sent = server.statuses[429], sum(server.statuses.values())
    if headers:  # the check the issue names: the provider's headers read before a 429
        assert refused * 5 <= sent, f"{refused} of {sent} requests met a 429"
    else:
        # Without headers the first window's burst is paid before the rate is learnt:
        # 12 of 54 (22%) in one CI run, 7 of 47 at the trainer's level
        # (tests/teacher/test_rate_limited.py). Bounded here, not at one in five.
        assert refused * 4 <= sent, f"{refused} of {sent} requests met a 429"
