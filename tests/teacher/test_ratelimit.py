"""The shared rate limit's decisions (trainer.ratelimit.State), one step at a time.

Headers are as OpenAI sends them on every answer, 429s included ("Rate limits" guide,
"Rate limits in headers"): ``x-ratelimit-limit-requests: 60``,
``x-ratelimit-remaining-requests: 59``, ``x-ratelimit-reset-requests: 1s``,
``x-ratelimit-reset-tokens: 6m0s``; a 429 may add ``retry-after`` (seconds) and
``retry-after-ms`` (the openai client reads both: ``openai/_base_client.py``,
``_parse_retry_after_header``).
"""

from __future__ import annotations

import asyncio
import time

import pytest

from trainer.ratelimit import (
    MAX_WAIT_S,
    POLL_S,
    Limiter,
    Limits,
    RedisStore,
    State,
    parse_reset,
    retry_after,
)

TTL = 60.0


def take(state: State, limits: Limits, now: float, tokens: float = 0.0, lease: str = "") -> float:
    return state.take(limits, lease or f"l{len(state.leases)}-{now}", tokens, TTL, now)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5", 0.5)],
)
def test_reset_durations_as_providers_write_them(text, seconds):
    assert parse_reset(text) == pytest.approx(seconds)


def test_reset_as_a_timestamp_and_garbage():
    now = 1_800_000_000.0
    assert parse_reset("2027-01-15T08:00:10Z", now=1_800_000_000.0) is not None
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now + 30))
    assert parse_reset(stamp, now=now) == pytest.approx(30.0)
    assert parse_reset("soon") is None
    assert parse_reset("") is None


def test_retry_after_prefers_milliseconds():
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == pytest.approx(0.25)
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({}) is None


def test_one_request_at_a_time_until_the_endpoint_has_answered():
    state, limits = State(), Limits(concurrency=8)
    assert take(state, limits, 0.0) == 0
    assert take(state, limits, 0.0) == POLL_S  # its first answer tells the limits
    state.done(limits, next(iter(state.leases)), 0.1, {}, False, 0)
    for _ in range(8):
        assert take(state, limits, 0.2) == 0
    assert take(state, limits, 0.2) == POLL_S  # concurrency 8
    # A worker that died mid-request gives its slots back once their leases expire.
    assert take(state, limits, 0.2 + TTL + 1) == 0


def test_requests_per_minute_are_evenly_spaced():
    """No burst: whatever minute one looks at holds at most the limit."""
    state, limits = State(answered=True), Limits(concurrency=100, requests_per_minute=60)
    sent = [t for t in (i * 0.01 for i in range(300)) if take(state, limits, t) == 0]
    assert sent == pytest.approx([0.0, 1.0, 2.0])
    assert take(state, limits, 2.5) == pytest.approx(0.5)


def test_tokens_per_minute_counts_the_estimate_and_refunds_the_rest():
    state, limits = State(answered=True), Limits(concurrency=100, tokens_per_minute=6000)
    assert take(state, limits, 0.0, tokens=1000, lease="a") == 0  # 10 s worth
    assert take(state, limits, 0.0, tokens=1000) == pytest.approx(MAX_WAIT_S)
    state.done(limits, "a", 0.0, {}, False, refund=900)  # it used 100: 1 s worth
    assert take(state, limits, 1.0, tokens=800) == 0
    # A request larger than a minute's tokens still goes (alone), never waits for ever.
    big = State(answered=True)
    assert take(big, limits, 0.0, tokens=50_000) == 0


def test_a_429_holds_every_caller_for_its_retry_after():
    state, limits = State(answered=True), Limits()
    assert take(state, limits, 0.0, lease="a") == 0
    state.done(limits, "a", 0.0, {"retry-after-ms": "1500"}, True, 0)
    assert take(state, limits, 0.1) == pytest.approx(1.4)
    assert take(state, limits, 1.6) == 0


def test_the_providers_remaining_requests_bound_what_is_in_flight():
    state, limits = State(), Limits(concurrency=16)
    take(state, limits, 0.0, lease="first")
    # A fixed window of 3 requests per 10 s: 2 remain after the first.
    headers = {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "2",
        "x-ratelimit-reset-requests": "10s",
    }
    state.done(limits, "first", 0.0, headers, False, 0)
    assert take(state, limits, 0.0) == 0
    assert take(state, limits, 0.0) == 0
    wait = take(state, limits, 0.0)  # a third would be refused: wait, do not send
    assert 0 < wait <= 1.0
    # After the reset, the window is full again.
    assert take(state, limits, 10.5) == 0


def test_remaining_refills_towards_the_limit_by_the_reset():
    # OpenAI's buckets refill continuously: 60 rpm, 0 left, full again in 60 s.
    state, limits = State(answered=True), Limits()
    state.done(
        limits,
        "x",
        0.0,
        {
            "x-ratelimit-limit-requests": "60",
            "x-ratelimit-remaining-requests": "0",
            "x-ratelimit-reset-requests": "60s",
        },
        False,
        0,
    )
    assert take(state, limits, 0.5) > 0
    assert take(state, limits, 1.1) == 0  # one refilled after a second, not sixty


def test_a_fixed_window_is_learnt_from_a_429_the_refill_did_not_foresee():
    """The headers' refill is read as a straight line (OpenAI's buckets); a provider
    whose window refills all at once at its reset refuses what that line allowed: after
    that 429, nothing goes until the reset."""
    state, limits = State(answered=True), Limits()
    headers = {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "10s",
    }
    state.done(limits, "x", 0.0, headers, False, 0)
    assert take(state, limits, 1.5, lease="early") == 0  # the line says one refilled
    state.done(limits, "early", 1.6, {**headers, "x-ratelimit-reset-requests": "8.4s"}, True, 0)
    assert state.stepwise
    assert take(state, limits, 5.0) > 0  # the line would say four by now: not so
    assert take(state, limits, 10.1) == 0


def test_without_headers_the_rate_is_learnt_from_429s():
    state, limits = State(answered=True), Limits(concurrency=100)
    # 20 answers in the first second, then a 429 asking for 9 s more: 20 per 10 s.
    for i in range(20):
        assert take(state, limits, i * 0.05, lease=f"a{i}") == 0
        state.done(limits, f"a{i}", i * 0.05, {}, False, 0)
    take(state, limits, 1.0, lease="no")
    state.done(limits, "no", 1.0, {"retry-after": "9"}, True, 0)
    assert state.learnt_rpm == pytest.approx(0.9 * 60 * 20 / 10, rel=0.01)  # 108 rpm
    # After the hold, evenly spaced at that rate: not all at once.
    sent = [t for t in (10.0 + i * 0.1 for i in range(50)) if take(state, limits, t) == 0]
    assert len(sent) == 9  # 5 s at 108 rpm


def test_limiter_waits_in_the_event_loop():
    async def go() -> float:
        limiter = Limiter(Limits(concurrency=4, requests_per_minute=600))  # 10/s
        limiter.store.state.answered = True  # type: ignore[attr-defined]
        start = time.monotonic()
        for _ in range(3):
            async with limiter.slot():
                pass
        return time.monotonic() - start

    assert asyncio.run(go()) >= 0.19  # 0.1 s apart


def test_the_redis_store_is_shared_and_survives_contention(redis_url):
    """Two limiters (two workers) on one key: 40 requests at 600 rpm with a burst of 100
    all go, and the state counts every lease exactly once (no lost update)."""

    async def go() -> State:
        limits = Limits(concurrency=64, shared_url=redis_url, key=f"test:{time.time_ns()}")
        a, b = Limiter.of(limits), Limiter.of(limits)

        async def one(limiter: Limiter) -> None:
            async with limiter.slot() as slot:
                slot.answered({}, 200)

        await asyncio.gather(*(one(a if i % 2 else b) for i in range(40)))
        store = a.store
        assert isinstance(store, RedisStore)
        state = await store.transact(lambda s: s)
        await a.close()
        await b.close()
        return state

    state = asyncio.run(go())
    assert state.leases == {}  # every slot given back
    assert state.answered
