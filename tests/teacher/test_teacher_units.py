"""The teacher wrapper's pieces: identity, error classification, store, rate limiter."""

from __future__ import annotations

import asyncio

import httpx2
import openai
import pytest

from trainer.teacher import (
    Answer,
    AnswerStore,
    Budget,
    RetryPolicy,
    Sampling,
    TeacherSpec,
    classify,
    prompt_hash,
)

SPEC = TeacherSpec("http://t.example/v1", "m", api_key="sk-secret-1234")


def status_error(status: int, body: dict | None = None, headers: dict | None = None):
    request = httpx2.Request("POST", "http://t.example/v1/chat/completions")
    response = httpx2.Response(status, request=request, headers=headers or {}, json=body or {})
    cls = {
        400: openai.BadRequestError,
        401: openai.AuthenticationError,
        403: openai.PermissionDeniedError,
        404: openai.NotFoundError,
        429: openai.RateLimitError,
    }.get(status, openai.InternalServerError)
    return cls("boom", response=response, body=body)


def test_fingerprint_changes_with_model_and_sampling_but_not_key():
    base = SPEC.fingerprint
    assert TeacherSpec("http://t.example/v1/", "m", api_key="other").fingerprint == base
    assert TeacherSpec("http://t.example/v1", "m2").fingerprint != base
    hot = TeacherSpec("http://t.example/v1", "m", sampling=Sampling(temperature=1.0))
    assert hot.fingerprint != base


def test_prompt_hash_depends_on_roles_and_content_only():
    a = [{"role": "user", "content": "hi"}]
    assert prompt_hash(a) == prompt_hash([{"content": "hi", "role": "user", "name": "x"}])
    assert prompt_hash(a) != prompt_hash([{"role": "system", "content": "hi"}])


def test_api_key_never_in_repr():
    assert "sk-secret" not in repr(SPEC)


@pytest.mark.parametrize(
    "status,scope",
    [
        (401, "run"),
        (403, "run"),
        (404, "run"),
        (429, "transient"),
        (500, "transient"),
        (503, "transient"),
        (400, "prompt"),
        (422, "prompt"),
    ],
)
def test_http_status_maps_to_scope(status, scope):
    err = classify(status_error(status, {"error": {"message": "why"}}), SPEC)
    assert err.scope == scope
    assert err.permanent == (scope != "transient")
    assert "sk-secret" not in str(err)


def test_401_message_names_the_key_and_what_to_check():
    spec = TeacherSpec(
        "http://t.example/v1", "m", api_key="sk-x", api_key_name="the API key in $TEACHER_KEY"
    )
    err = classify(status_error(401, {"error": {"message": "bad key"}}), spec)
    assert "$TEACHER_KEY" in str(err) and "check that the key is valid" in str(err)


def test_429_honours_retry_after_and_quota_exhaustion_is_permanent():
    err = classify(status_error(429, {}, {"retry-after": "3"}), SPEC)
    assert err.retry_after == 3.0 and err.scope == "transient"
    assert RetryPolicy().delay(0, err.retry_after) == 3.0
    quota = classify(status_error(429, {"error": {"message": "insufficient_quota"}}), SPEC)
    assert quota.scope == "run"


def test_timeouts_and_connection_errors_are_transient():
    request = httpx2.Request("POST", "http://t.example/v1/chat/completions")
    assert classify(openai.APITimeoutError(request=request), SPEC).scope == "transient"
    assert classify(openai.APIConnectionError(request=request), SPEC).scope == "transient"


def test_backoff_grows_is_jittered_and_bounded():
    policy = RetryPolicy(base_delay=1.0, max_delay=10.0)
    delays = [policy.delay(a, None) for a in range(8)]
    assert 0.5 <= delays[0] <= 1.0 and 4.0 <= delays[3] <= 8.0
    assert max(delays) <= 10.0


def test_store_round_trip_and_persistence(tmp_path):
    path = tmp_path / "answers.sqlite"
    store = AnswerStore(path)
    store.put(Answer("h1", "fp", "hello", "stop", 5, 2, "ok"))
    store.close()
    again = AnswerStore(path)
    got = again.get_many("fp", ["h1", "h2"])
    assert list(got) == ["h1"] and got["h1"].response == "hello"
    assert again.get_many("other-teacher", ["h1"]) == {}


def test_store_handles_more_keys_than_sqlite_parameters(tmp_path):
    store = AnswerStore(tmp_path / "a.sqlite")
    for i in range(1200):
        store.put(Answer(f"h{i}", "fp", "x", "stop", 1, 1, "ok"))
    assert len(store.get_many("fp", [f"h{i}" for i in range(1500)])) == 1200


def test_redirects_are_refused_not_followed(tmp_path):
    """A teacher URL that redirects could smuggle requests past the SSRF check."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from trainer.teacher import collect

    hits = []

    class Target(BaseHTTPRequestHandler):
        def do_POST(self):
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    target = ThreadingHTTPServer(("127.0.0.1", 0), Target)

    class Redirect(Target):
        def do_POST(self):
            self.send_response(307)
            self.send_header("Location", f"http://127.0.0.1:{target.server_port}/internal")
            self.send_header("Content-Length", "0")
            self.end_headers()

    redirect = ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    for server in (target, redirect):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        spec = TeacherSpec(f"http://127.0.0.1:{redirect.server_port}/v1", "m", timeout=5)
        store = AnswerStore(tmp_path / "a.sqlite")
        with pytest.raises(Exception) as caught:
            asyncio.run(collect([[{"role": "user", "content": "hi"}]], spec, store))
    finally:
        target.shutdown()
        redirect.shutdown()
    assert caught.value.scope == "run" and "use the final URL" in str(caught.value)
    assert hits == []


def test_a_budgets_cap_counts_earlier_attempts_and_is_asked_before_the_pool():
    asked = []

    def pool(total: int) -> bool:
        asked.append(total)
        return total <= 500

    budget = Budget(cap=100, offset=60, reserve=pool)
    assert budget.allow(40) and asked == [40]  # 60 spent before + 40 = the cap
    assert not budget.allow(41) and budget.stopped_by == "cap"
    assert asked == [40]  # the cap said no first: nothing was reserved of the pool


def test_a_budget_says_which_limit_stopped_the_run_and_carries_its_earlier_rounds():
    budget = Budget(reserve=lambda total: total <= 50)
    budget.spent = 30  # an earlier round of the same run (the judge's references)
    assert budget.allow(20) and not budget.allow(21)
    assert budget.stopped_by == "pool"
    assert Budget().allow(10**12)  # no cap, no pool: nothing stops it
