"""How fast the product may ask one endpoint: one limit, shared by every process that asks.

Jobs, evaluations, judge runs and "Test connection" on several workers may all call one
endpoint with one key, and the provider counts them together. So the limit is one
``State`` per endpoint, kept where all of them see it (Redis: the broker's, unless
``GAD_LIMITER_URL`` names another) and changed in one atomic step per decision
(``RedisStore.transact``: WATCH/MULTI, retried on a conflict). Without a shared store (the
CLI without ``--limiter-url``) the same State lives in the process.

A request goes out only when all of these allow it (``State.take``):

- **hold**: nobody sends before the time a 429 asked us to wait (``retry-after-ms`` /
  ``retry-after``), so one worker's 429 stops every worker at once;
- **concurrency**: requests in flight, counted as leases that expire (a worker that dies
  mid-request gives its slot back after the request's timeout). Until the endpoint has
  answered once, one request at a time: its first answer tells the limits (below);
- **the provider's headers**: ``x-ratelimit-remaining-*`` / ``-reset-*`` (OpenAI's
  names; "Rate limits" guide) read on every answer. A request goes only while the
  requests (tokens) the provider says remain exceed those already in flight; the
  remainder refills towards ``x-ratelimit-limit-*`` by the time of the reset;
- **requests and tokens per minute**: the endpoint's settings, as GCRA without a burst
  (requests evenly spaced, so no 60 seconds hold more than the limit); for requests,
  also a rate learnt from 429s when the provider sends no headers (what answered
  between two 429s, over that time, less 10%).

Waiting is polling: ``take`` says how long to wait, and the caller asks again after.
Not FIFO, but no request is lost when a caller is cancelled while it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Protocol, TypeVar

T = TypeVar("T")

POLL_S = 0.05  # how soon to ask again when only other requests' answers can free a slot
MAX_WAIT_S = 1.0  # the longest sleep between two looks at the state
DEFAULT_HOLD_S = 1.0  # a 429 that says nothing about when to come back
IDLE_TTL_S = 900  # a shared state untouched this long is forgotten


@dataclass(frozen=True)
class Limits:
    """How fast a run may ask an endpoint: requests at once, per minute, tokens per
    minute; where the limit is shared (``shared_url``, a redis:// URL; "" for this process
    only) and under which name (``key``: the endpoint's)."""

    concurrency: int = 16
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    shared_url: str = field(default="", compare=False)
    key: str = ""


# ---------------------------------------------------------------------------- headers


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|us|µs|ns|h|m|s)")
_UNIT = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}


def parse_reset(value: str | None, now: float | None = None) -> float | None:
    """Seconds until a reset, as providers write it: OpenAI's Go durations ("1s", "6m0s",
    "20ms"), plain seconds ("0.5"), or an RFC 3339 / HTTP date (Anthropic's
    ``*-reset``). None when absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return sum(float(n) * _UNIT[u] for n, u in parts)
    now = time.time() if now is None else now
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text).timestamp()
        except (TypeError, ValueError):
            return None
    return max(0.0, when - now)


def retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds a 429 (or 503) asks us to wait: ``retry-after-ms``, else ``retry-after``
    (seconds or an HTTP date)."""
    try:
        if headers.get("retry-after-ms"):
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
    except ValueError:
        pass
    return parse_reset(headers.get("retry-after"))


def _number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


@dataclass
class Quota:
    """What the provider said of one kind ("requests" or "tokens") at ``at``."""

    remaining: float
    limit: float | None
    reset_at: float
    at: float

    def available(self, now: float, stepwise: bool = False) -> float:
        """Remaining now: refilled towards the limit by the reset, in a straight line
        (OpenAI's buckets refill continuously) or, ``stepwise``, all at the reset (a
        fixed window: learnt from its first 429)."""
        if now >= self.reset_at:
            return self.limit if self.limit is not None else float("inf")
        if stepwise or self.reset_at == float("inf"):
            return self.remaining
        if self.limit is None or self.limit <= self.remaining or self.reset_at <= self.at:
            return self.remaining
        rate = (self.limit - self.remaining) / (self.reset_at - self.at)
        return min(self.limit, self.remaining + rate * (now - self.at))

    def when(self, needed: float, now: float, stepwise: bool = False) -> float:
        """The time ``needed`` will be available (at the latest the reset; an unknown
        reset: soon, when another answer may tell)."""
        if self.reset_at == float("inf"):
            return now + POLL_S
        if (
            stepwise
            or self.limit is None
            or self.limit <= self.remaining
            or self.reset_at <= self.at
        ):
            return self.reset_at
        rate = (self.limit - self.remaining) / (self.reset_at - self.at)
        return min(self.reset_at, self.at + (needed - self.remaining) / rate)


def provider_quotas(headers: Mapping[str, str], now: float) -> dict[str, Quota]:
    """The ``x-ratelimit-*`` headers of one answer (any status), by kind."""
    found = {}
    for kind in ("requests", "tokens"):
        remaining = _number(headers.get(f"x-ratelimit-remaining-{kind}"))
        reset = parse_reset(headers.get(f"x-ratelimit-reset-{kind}"), time.time())
        if remaining is None or reset is None:
            continue
        limit = _number(headers.get(f"x-ratelimit-limit-{kind}"))
        found[kind] = Quota(remaining, limit, now + reset, now)
    return found


# ---------------------------------------------------------------------------- the state


@dataclass
class State:
    """One endpoint's limit, as every caller sees it (times are ``time.time()``)."""

    hold: float = 0.0  # nobody sends before this
    leases: dict[str, list[float]] = field(default_factory=dict)  # id -> [expires, tokens]
    tat_requests: float = 0.0  # GCRA's theoretical arrival times
    tat_learnt: float = 0.0
    tat_tokens: float = 0.0
    quotas: dict[str, Quota] = field(default_factory=dict)  # the provider's last word
    answered: bool = False  # one answer seen: more than one request may be in flight
    stepwise: bool = False  # the provider's windows refill at their reset, not before
    learnt_rpm: float | None = None  # from 429s, when the provider sends no headers
    since: float = 0.0  # start of the current span between two 429s
    ok_since: int = 0  # answers in that span
    span_ok: int = 0  # answers of the span the last 429 ended (late ones included)
    span_s: float = 0.0  # and its length
    learnt_before: float | None = None  # the learnt rate before that span
    holds: int = 0  # 429s in a row (without a retry-after: 1, 2, 4... s)

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> State:
        if not raw:
            return cls()
        data = json.loads(raw)
        data["quotas"] = {k: Quota(**q) for k, q in data.get("quotas", {}).items()}
        return cls(**data)

    def take(self, limits: Limits, lease: str, tokens: float, ttl: float, now: float) -> float:
        """0 and a lease taken (the request may go), or the seconds to wait first."""
        if self.hold > now:
            return self.hold - now
        self.leases = {k: v for k, v in self.leases.items() if v[0] > now}
        in_flight = len(self.leases)
        if in_flight >= (limits.concurrency if self.answered else 1):
            return POLL_S
        waits = []
        flying_tokens = sum(v[1] for v in self.leases.values())
        for kind, need in (("requests", in_flight + 1), ("tokens", flying_tokens + tokens)):
            quota = self.quotas.get(kind)
            if quota is None:
                continue
            if now >= quota.reset_at:
                if quota.limit is None:
                    del self.quotas[kind]
                    continue
                # A new window: the limit again, until an answer says more (not a burst
                # of everything the concurrency allows into a window of ``limit``).
                quota = self.quotas[kind] = Quota(quota.limit, quota.limit, float("inf"), now)
            if quota.available(now, self.stepwise) < need and (kind == "requests" or flying_tokens):
                # (A request larger than what remains goes when nothing else is in flight:
                # the provider judges it, not our estimate.)
                waits.append(max(POLL_S, quota.when(need, now, self.stepwise) - now))
        # (TAT, per minute, cost): evenly spaced, no burst, so that no minute (from any
        # moment) holds more than the limit, and providers that enforce a per-minute
        # limit per second ("quantized", OpenAI's guide) are not surprised either.
        gcra = [
            ("tat_requests", limits.requests_per_minute, 1.0),
            ("tat_learnt", self.learnt_rpm, 1.0),
            ("tat_tokens", limits.tokens_per_minute, tokens),
        ]
        for name, per_minute, _ in gcra:
            # GCRA with a tolerance of the request's own cost: it may go once the
            # theoretical arrival time of the one before has come.
            if per_minute and getattr(self, name) > now:
                waits.append(getattr(self, name) - now)
        if waits:
            return min(MAX_WAIT_S, max(waits))
        for name, per_minute, cost in gcra:
            if per_minute:
                setattr(self, name, max(getattr(self, name), now) + cost * 60.0 / per_minute)
        self.leases[lease] = [now + ttl, tokens]
        if not self.since:
            self.since = now
        return 0.0

    def done(
        self,
        limits: Limits,
        lease: str,
        now: float,
        headers: Mapping[str, str] | None,
        rejected: bool,
        refund: float,
    ) -> None:
        """A request ended: ``headers`` of its answer (None: no answer), ``rejected``
        when that was a 429, ``refund`` tokens estimated but not spent."""
        self.leases.pop(lease, None)
        if limits.tokens_per_minute and refund:
            self.tat_tokens = max(now, self.tat_tokens - refund * 60.0 / limits.tokens_per_minute)
        if headers is None:
            return
        self.answered = True
        if rejected and any(q.remaining < 1 <= q.available(now) for q in self.quotas.values()):
            # Refused although the last headers' refill said there was room: the
            # provider's window refills at its reset (a fixed window), not before.
            self.stepwise = True
        quotas = provider_quotas(headers, now)
        self.quotas.update(quotas)
        # A 429 (or an answer) while holding answers a request sent before the hold
        # began: it belongs to the span that the hold ended.
        holding = self.hold > now
        if not rejected:
            self.holds = 0
            if holding and self.span_s:
                self.span_ok += 1
                self._learn()
            else:
                self.ok_since += 1
            return
        wait = retry_after(headers)
        if wait is None:
            resets = [q.reset_at - now for q in quotas.values() if q.available(now) < 1]
            wait = max(resets) if resets else DEFAULT_HOLD_S * 2 ** min(self.holds, 5)
        self.hold = max(self.hold, now + wait)
        if not holding:
            self.holds += 1
            self.learnt_before = self.learnt_rpm
            self.span_ok, self.span_s = self.ok_since, max(1.0, self.hold - self.since)
            if not quotas:
                self._learn()
        self.since, self.ok_since = self.hold, 0

    def _learn(self) -> None:
        """No headers: the rate is what got through in the span a 429 ended, over the
        span (hold included), less 10%; half the last one if nothing got through."""
        if self.span_ok:
            rate = 0.9 * 60.0 * self.span_ok / self.span_s
            self.learnt_rpm = min(self.learnt_before or rate, rate)
        elif self.learnt_before:
            self.learnt_rpm = max(1.0, self.learnt_before / 2)


# ---------------------------------------------------------------------------- where it is kept


class Store(Protocol):
    async def transact(self, fn: Callable[[State], T]) -> T: ...

    async def close(self) -> None: ...


class LocalStore:
    """The state in this process (one event loop: each step runs without interruption)."""

    def __init__(self) -> None:
        self.state = State()

    async def transact(self, fn: Callable[[State], T]) -> T:
        return fn(self.state)

    async def close(self) -> None:
        pass


class RedisStore:
    """The state in Redis, under ``gad:ratelimit:<key>``, changed by optimistic
    transactions (WATCH the key, read, decide, MULTI/SET; again if another process wrote
    in between). Forgotten after IDLE_TTL_S untouched."""

    def __init__(self, url: str, key: str):
        import redis.asyncio

        self.redis = redis.asyncio.Redis.from_url(url)
        self.key = f"gad:ratelimit:{key}"

    async def transact(self, fn: Callable[[State], T]) -> T:
        import redis.exceptions

        async with self.redis.pipeline() as pipe:
            while True:
                try:
                    await pipe.watch(self.key)
                    state = State.from_json(await pipe.get(self.key))
                    result = fn(state)
                    pipe.multi()
                    pipe.set(self.key, state.to_json(), ex=IDLE_TTL_S)
                    await pipe.execute()
                    return result
                except redis.exceptions.WatchError:
                    continue

    async def close(self) -> None:
        await self.redis.aclose()


# ---------------------------------------------------------------------------- the limiter


class Slot:
    """One request's place in the limit: tell it how the request ended."""

    def __init__(self) -> None:
        self.headers: Mapping[str, str] | None = None
        self.rejected = False
        self.used: float | None = None

    def answered(
        self, headers: Mapping[str, str], status: int, used_tokens: float | None = None
    ) -> None:
        self.headers, self.rejected, self.used = headers, status == 429, used_tokens


class Limiter:
    """``async with limiter.slot(tokens) as slot:`` waits until the request may go."""

    def __init__(self, limits: Limits, store: Store | None = None, ttl: float = 150.0):
        self.limits = limits
        self.store = store or LocalStore()
        self.ttl = ttl  # a lease outlives its request's timeout

    @classmethod
    def of(cls, limits: Limits, timeout: float = 120.0) -> Limiter:
        """Shared when ``limits.shared_url`` says where, else in this process."""
        store = RedisStore(limits.shared_url, limits.key) if limits.shared_url else None
        return cls(limits, store, ttl=timeout + 30.0)

    @contextlib.asynccontextmanager
    async def slot(self, tokens: float = 0.0) -> AsyncIterator[Slot]:
        lease = uuid.uuid4().hex
        while True:
            wait = await self.store.transact(
                lambda s: s.take(self.limits, lease, tokens, self.ttl, time.time())
            )
            if wait <= 0:
                break
            await asyncio.sleep(wait)
        slot = Slot()
        try:
            yield slot
        finally:
            refund = tokens - slot.used if slot.used is not None else 0.0
            await asyncio.shield(
                self.store.transact(
                    lambda s: s.done(
                        self.limits, lease, time.time(), slot.headers, slot.rejected, refund
                    )
                )
            )

    async def close(self) -> None:
        await self.store.close()
