"""Collect black-box teacher answers through any OpenAI-compatible chat API.

Three rules shape this module:

- **One wrapper** (`ask`) turns every failure into a `TeacherError` that says whether
  it is transient (retry), permanent for one prompt (record it, go on) or permanent
  for the whole run (stop at once: a bad key, an unknown model, an unreachable host).
- **Nothing is paid twice.** Each answer goes into a durable `AnswerStore` as it
  arrives, keyed by (prompt hash, teacher fingerprint); a rerun, or a run resumed after
  a crash, asks only for what is missing.
- **Nothing is used silently.** Empty answers, answers cut by ``max_tokens`` and
  refusals are stored with a flag, and the summary counts them.

Retries are tenacity's, not the ``openai`` client's ``max_retries``: every try must
take its place in the endpoint's shared rate limit again (``trainer.ratelimit``: a 429
on one worker holds them all), the run counts them, and "unreachable after retries" is
a run-level stop; the client's own loop allows none of that.
"""

from __future__ import annotations

import asyncio
import hashlib
import http
import json
import random
import re
import sqlite3
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from pathlib import Path
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

try:  # the HTTP client the openai package is built on (httpx2 from openai 3 on)
    import httpx2 as httpx
except ImportError:  # pragma: no cover - older openai releases
    import httpx  # type: ignore[no-redef]

from trainer.config import MAX_RESPONSE_TOKENS
from trainer.pricing import Usage
from trainer.ratelimit import Limiter, Limits, retry_after

Scope = Literal["transient", "prompt", "run"]
Flag = Literal["ok", "empty", "length", "refused", "error"]


# ---------------------------------------------------------------------------- identity


@dataclass(frozen=True)
class Sampling:
    """Sampling parameters sent with every request (None: the server's default)."""

    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = MAX_RESPONSE_TOKENS
    seed: int | None = None

    @cached_property
    def request_kwargs(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}


TOKEN_PARAMS = ("max_tokens", "max_completion_tokens")
REASONING_EFFORTS = ("minimal", "low", "medium", "high")
# Keys of the request body the product itself sets: extra_body may not replace them.
RESERVED_BODY_KEYS = frozenset(
    {"model", "messages", "stream", "n", "temperature", "top_p", "seed", "reasoning_effort",
     *TOKEN_PARAMS}
)  # fmt: skip


@dataclass(frozen=True)
class Dialect:
    """How an endpoint wants the sampling said.

    OpenAI's reasoning models (GPT-5, the o-series) refuse ``max_tokens`` ("Use
    'max_completion_tokens' instead", ``param``/``code`` in the 400 body) and any
    temperature but 1; vLLM, ``transformers serve`` and most servers accept both token
    parameters. ``extra_body``: a vendor's own options, sent as they are."""

    token_param: str = "max_tokens"
    send_temperature: bool = True  # False: the model accepts only its default
    reasoning_effort: str | None = None
    extra_body: tuple[tuple[str, Any], ...] = ()  # sorted items of a JSON object

    def __post_init__(self) -> None:
        if self.token_param not in TOKEN_PARAMS:
            raise ValueError(f"token_param must be one of {', '.join(TOKEN_PARAMS)}")
        if self.reasoning_effort is not None and self.reasoning_effort not in REASONING_EFFORTS:
            raise ValueError(f"reasoning_effort must be one of {', '.join(REASONING_EFFORTS)}")
        clash = RESERVED_BODY_KEYS & {k for k, _ in self.extra_body}
        if clash:
            raise ValueError(
                f"extra_body may not set {', '.join(sorted(clash))}: the endpoint's own "
                "settings say those"
            )

    @classmethod
    def of(cls, extra_body: dict[str, Any] | None = None, **fields: Any) -> Dialect:
        return cls(**fields, extra_body=tuple(sorted((extra_body or {}).items())))

    def body(self, sampling: Sampling) -> dict[str, Any]:
        """The sampling part of a request, in this dialect."""
        said = dict(sampling.request_kwargs)
        if "max_tokens" in said and self.token_param != "max_tokens":
            said[self.token_param] = said.pop("max_tokens")
        if not self.send_temperature:
            said.pop("temperature", None)
        if self.reasoning_effort:
            said["reasoning_effort"] = self.reasoning_effort
        return {**dict(self.extra_body), **said}

    def used(self, sampling: Sampling) -> Sampling:
        """The sampling the model actually uses: an omitted temperature is its default
        (None), whatever was asked; the token parameter's spelling changes nothing."""
        return sampling if self.send_temperature else replace(sampling, temperature=None)


@dataclass(frozen=True)
class TeacherSpec:
    base_url: str
    model: str
    api_key: str = field(default="", repr=False)  # never in reprs, logs or errors
    sampling: Sampling = Sampling()
    dialect: Dialect = Dialect()
    timeout: float = 120.0
    api_key_name: str = "the API key"  # how to tell the user where the key came from
    role: str = "teacher"  # what the endpoint is to the user, in messages ("judge")
    # The address the base URL's host was resolved to and checked at (the site's SSRF
    # rules): connections go there, whatever DNS answers later. "": resolve as usual.
    connect_to: str = ""
    # Who may read the answers: part of the fingerprint when set, so that two callers
    # with the same endpoint and sampling (two teams of a site) share no answers.
    scope: str = ""
    # How fast it may be asked, and where that limit is shared (not in the fingerprint).
    limits: Limits = Limits()

    @cached_property
    def fingerprint(self) -> str:
        """Same endpoint, model and sampling → same answers: the cache key's second half."""
        ident: dict[str, Any] = {
            "base_url": self.base_url.rstrip("/"),
            "model": self.model,
            # What the model used, not how it was spelled: switching the token parameter
            # keeps the cached answers; omitting the temperature is the model's default.
            "sampling": asdict(self.dialect.used(self.sampling)),
        }
        # Only what changes the answers, and only when set: an endpoint that says
        # neither keeps the fingerprint (and the cache) it had before dialects.
        if self.dialect.reasoning_effort:
            ident["reasoning_effort"] = self.dialect.reasoning_effort
        if self.dialect.extra_body:
            ident["extra_body"] = dict(self.dialect.extra_body)
        if self.scope:
            ident["scope"] = self.scope
        return _sha256(ident)[:32]

    def request_body(self, messages: Sequence[dict[str, str]]) -> dict[str, Any]:
        return {"model": self.model, "messages": list(messages), **self.dialect.body(self.sampling)}


def _sha256(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def prompt_hash(messages: Sequence[dict[str, str]]) -> str:
    return _sha256([{"role": m["role"], "content": m["content"]} for m in messages])


# ---------------------------------------------------------------------------- errors


class TeacherError(Exception):
    """A failed teacher call. ``permanent`` tells callers whether a retry can help."""

    def __init__(
        self,
        message: str,
        scope: Scope,
        status: int | None = None,
        retry_after: float | None = None,
        param: str | None = None,
    ):
        super().__init__(message)
        self.scope = scope
        self.status = status
        self.retry_after = retry_after
        self.param = param  # the request parameter the endpoint refused, if it said so

    @property
    def permanent(self) -> bool:
        return self.scope != "transient"


def classify(exc: Exception, spec: TeacherSpec) -> TeacherError:
    """Map an ``openai`` exception to a TeacherError with a message a user can act on."""
    where = f"{spec.role} {spec.model!r} at {spec.base_url}"
    if isinstance(exc, openai.APITimeoutError):
        return TeacherError(f"{where} did not answer within {spec.timeout:g} s", "transient")
    if isinstance(exc, openai.APIConnectionError):
        return TeacherError(f"cannot connect to {where}: {_cause(exc)}", "transient")
    if not isinstance(exc, openai.APIStatusError):
        return TeacherError(f"{where}: unexpected {type(exc).__name__}: {exc}", "transient")
    status = exc.status_code
    # The status and its reason only: the body is the remote server's text, and a
    # hostile endpoint could make it say anything on our pages (or echo the key).
    detail = _reason(status)
    if status in (401, 403):
        return TeacherError(
            f"{where} rejected {spec.api_key_name} (HTTP {status} {detail}); check that the "
            "key is valid and allowed to use this model",
            "run",
            status,
        )
    if status == 404:
        return TeacherError(
            f"{where} answered HTTP 404 {detail}; check the model name and that the base URL "
            "ends where the API starts (usually .../v1)",
            "run",
            status,
        )
    if status == 429:
        if "insufficient_quota" in _server_message(exc) or "quota" in str(getattr(exc, "code", "")):
            return TeacherError(
                f"{where}: the account's quota or credit is exhausted (HTTP 429)",
                "run",
                status,
            )
        return TeacherError(
            f"{where} is rate-limiting (HTTP 429)",
            "transient",
            status,
            retry_after(exc.response.headers),
        )
    if 300 <= status < 400:
        location = str(getattr(exc.response, "headers", {}).get("location", "elsewhere"))[:200]
        return TeacherError(
            f"{where} redirects (HTTP {status}) to {location}; redirects are not followed: "
            "use the final URL as the base URL",
            "run",
            status,
        )
    if status >= 500 or status in (408, 409):
        return TeacherError(
            f"{where} failed (HTTP {status} {detail})",
            "transient",
            status,
            retry_after(exc.response.headers),
        )
    refused = _refused_parameter(exc)
    ours = set(PARAMETER_ADVICE) | {key for key, _ in spec.dialect.extra_body}
    if refused is not None and refused[0] in ours:
        # The endpoint refuses how we ask, not this prompt: every other would fail too.
        param, code = refused
        return TeacherError(
            f"{where} refuses the parameter {param!r} ({code}, HTTP {status}); "
            f"{PARAMETER_ADVICE.get(param, 'remove it from the endpoint settings')}",
            "run",
            status,
            param=param,
        )
    # 400, 413, 422...: this prompt cannot be answered (context too long, refused).
    return TeacherError(f"HTTP {status} {detail}", "prompt", status)


# What to change when an endpoint refuses one of the parameters the product sends.
PARAMETER_ADVICE = {
    "max_tokens": "set the endpoint's token parameter to max_completion_tokens "
    "(OpenAI's reasoning models: GPT-5, the o-series)",
    "max_completion_tokens": "set the endpoint's token parameter to max_tokens",
    "temperature": "omit the temperature: the model accepts only its default",
    "top_p": "leave top_p blank: the model accepts only its default",
    "reasoning_effort": "leave reasoning_effort blank: the model does not reason",
    "seed": "leave the seed blank",
}
_PARAM = re.compile(r"[A-Za-z_][A-Za-z0-9_.\[\]]{0,63}")


def _refused_parameter(exc: openai.APIStatusError) -> tuple[str, str] | None:
    """(param, code) of a structured refusal of a request parameter, as OpenAI's API
    writes it: ``{"error": {"param": "max_tokens", "code": "unsupported_parameter"}}``
    (also ``unsupported_value``, ``invalid_value``). Parsed fields, checked to be plain
    names, never the server's free text."""
    body = exc.body if isinstance(exc.body, dict) else {}
    err = body.get("error", body)
    if not isinstance(err, dict):
        return None
    param, code = err.get("param"), err.get("code")
    if not isinstance(param, str) or not isinstance(code, str):
        return None
    if code not in ("unsupported_parameter", "unsupported_value", "invalid_value"):
        return None
    if not _PARAM.fullmatch(param) or not _PARAM.fullmatch(code):
        return None
    return param, code


def _cause(exc: Exception) -> str:
    cause = exc.__cause__ or exc.__context__
    return f"{type(cause).__name__}: {cause}" if cause else str(exc)


def _reason(status: int) -> str:
    try:
        return http.HTTPStatus(status).phrase
    except ValueError:
        return "(unknown status)"


def _server_message(exc: openai.APIStatusError) -> str:
    """The server's own error text: read to classify an error, never shown."""
    body = exc.body
    if isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:300]
        if isinstance(err, str):
            return err[:300]
    return str(exc.message)[:300]


# ---------------------------------------------------------------------------- the wrapper


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 6
    base_delay: float = 0.5
    max_delay: float = 30.0

    def delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(self.max_delay, retry_after)
        # Exponential backoff with jitter, so many workers don't retry in lockstep.
        return min(self.max_delay, self.base_delay * 2.0**attempt) * random.uniform(0.5, 1.0)

    def wait(self, state: RetryCallState) -> float:
        """tenacity's wait: ``delay`` for the try that just failed."""
        exc = state.outcome.exception() if state.outcome is not None else None
        after = exc.retry_after if isinstance(exc, TeacherError) else None
        return self.delay(state.attempt_number - 1, after)


@dataclass
class Answer:
    prompt_hash: str
    fingerprint: str
    response: str
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    flag: Flag
    error: str = ""
    latency_s: float = 0.0
    reasoning_tokens: int = 0  # hidden reasoning, part of completion_tokens
    cached_tokens: int = 0  # prompt tokens the provider served from its cache

    @property
    def spent(self) -> Usage:
        return Usage(
            self.prompt_tokens, self.completion_tokens, self.reasoning_tokens, self.cached_tokens
        )

    @property
    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


class PinnedTransport(httpx.AsyncBaseTransport):
    """Connects to the address that was checked, not to whatever DNS answers now (DNS
    rebinding): the URL's host stays in the Host header and is the TLS server name, so
    SNI and the certificate check are those of the host."""

    def __init__(self, host: str, address: str, inner: httpx.AsyncBaseTransport):
        self.host, self.address, self.inner = host, address, inner

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.host == self.host:
            request.url = request.url.copy_with(host=self.address)
            request.extensions = {**request.extensions, "sni_hostname": self.host}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


def make_client(spec: TeacherSpec) -> openai.AsyncOpenAI:
    # A redirect could carry the request (and its key) to a host nobody checked against
    # the SSRF rules: refuse it (classify() says to use the final URL).
    options: dict[str, Any] = {"follow_redirects": False}
    host = urlsplit(spec.base_url).hostname
    if spec.connect_to and host:
        options["transport"] = PinnedTransport(host, spec.connect_to, httpx.AsyncHTTPTransport())
    return openai.AsyncOpenAI(
        base_url=spec.base_url,
        # The client needs some key; an endpoint without one gets no Authorization header
        # at all (``ask`` omits it; local servers such as transformers serve accept that).
        api_key=spec.api_key or "no-key",
        timeout=spec.timeout,
        max_retries=0,
        http_client=openai.DefaultAsyncHttpxClient(**options),
    )


async def ask(
    client: openai.AsyncOpenAI,
    spec: TeacherSpec,
    messages: Sequence[dict[str, str]],
    retry: RetryPolicy = RetryPolicy(),
    on_retry: Callable[[TeacherError], None] | None = None,
    limiter: Limiter | None = None,
) -> Answer:
    """One chat completion, retried on transient failures; raises TeacherError.

    Each try waits for its place in ``limiter`` (the endpoint's rate limit; one of this
    call's own when None) and tells it the answer's headers and tokens."""
    key = prompt_hash(messages)
    estimate = estimate_tokens(messages, spec.sampling.max_tokens)
    own = limiter is None
    limiter = limiter or Limiter.of(spec.limits, spec.timeout)

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            on_retry(state.outcome.exception())  # type: ignore[arg-type]

    retrying = AsyncRetrying(
        stop=stop_after_attempt(retry.max_attempts),
        wait=retry.wait,
        retry=retry_if_exception(lambda exc: isinstance(exc, TeacherError) and not exc.permanent),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        async for attempt in retrying:
            with attempt:
                return await _ask_once(client, spec, messages, key, limiter, estimate)
    except TeacherError as last:
        if last.permanent:
            raise
        if last.status is None and "cannot connect" in str(last):
            # Nobody answers at that address: every other prompt would fail the same way.
            raise TeacherError(f"{last} (after {retry.max_attempts} attempts)", "run") from None
        raise TeacherError(
            f"{last} (gave up after {retry.max_attempts} attempts)", "transient"
        ) from None
    finally:
        if own:
            await limiter.close()
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


async def _ask_once(
    client: openai.AsyncOpenAI,
    spec: TeacherSpec,
    messages: Sequence[dict[str, str]],
    key: str,
    limiter: Limiter,
    estimate: int,
) -> Answer:
    # Without a key, no Authorization header at all (not the client's placeholder).
    options: Any = {} if spec.api_key else {"headers": {"Authorization": openai.Omit()}}
    async with limiter.slot(estimate) as slot:
        started = time.monotonic()
        try:
            # The client's generic POST: same transport, auth, errors and timeouts as
            # `chat.completions.create`, without its per-request introspection of typed
            # params and models (≈3 ms of CPU per call: half the collector's time at 64
            # requests in flight; see docs/benchmarks.md). The raw response, for the
            # rate-limit headers.
            response = await client.post(
                "/chat/completions",
                body=spec.request_body(messages),
                cast_to=httpx.Response,
                options=options,
            )
        except openai.APIStatusError as exc:
            slot.answered(exc.response.headers, exc.status_code, 0)
            raise classify(exc, spec) from None
        except openai.OpenAIError as exc:
            raise classify(exc, spec) from None
        try:
            completion = response.json()
        except ValueError:
            slot.answered(response.headers, response.status_code)
            raise TeacherError(
                f"{spec.role} {spec.model!r} at {spec.base_url} answered HTTP "
                f"{response.status_code} with a body that is not JSON",
                "transient",
                response.status_code,
            ) from None
        answer = answer_of(key, spec, completion, time.monotonic() - started)
        slot.answered(
            response.headers, response.status_code, answer.prompt_tokens + answer.completion_tokens
        )
        return answer


async def discover(
    spec: TeacherSpec,
    messages: Sequence[dict[str, str]],
    *,
    token_auto: bool,
    temperature_auto: bool,
    retry: RetryPolicy = RetryPolicy(max_attempts=3, max_delay=10.0),
) -> tuple[TeacherSpec, Answer]:
    """Ask once in ``spec``'s dialect; where a setting is automatic and the endpoint
    refuses that parameter (a structured 400's ``error.param``), ask again in the other
    dialect, at most once per parameter. Returns the spec that worked and its answer;
    raises the refusal (or any other failure) otherwise."""
    tried: set[str] = set()
    while True:
        client = make_client(spec)
        try:
            return spec, await ask(client, spec, messages, retry=retry)
        except TeacherError as refused:
            param, dialect = refused.param, spec.dialect
            other = None
            if param in TOKEN_PARAMS and token_auto:
                token = next(p for p in TOKEN_PARAMS if p != dialect.token_param)
                other = replace(dialect, token_param=token)
            elif param == "temperature" and temperature_auto:
                other = replace(dialect, send_temperature=False)
            if other is None or param in tried:
                raise
            tried.add(str(param))
            spec = replace(spec, dialect=other)
        finally:
            await client.close()


def answer_of(key: str, spec: TeacherSpec, completion: Any, latency: float) -> Answer:
    """An Answer from the chat-completion JSON (a dict; missing parts read as empty)."""
    completion = completion if isinstance(completion, dict) else {}
    choices = completion.get("choices") or [{}]
    choice = choices[0] if isinstance(choices[0], dict) else {}
    text = (choice.get("message") or {}).get("content") or ""
    finish = choice.get("finish_reason")
    usage = completion.get("usage") or {}
    flag: Flag = "ok"
    error = ""
    reasoning = _reasoning_tokens(usage)
    if finish == "content_filter":
        flag = "refused"
    elif finish == "length":
        flag = "length"
        if not text.strip() and reasoning:
            # The hidden reasoning spent the whole budget before a word was written.
            error = (
                f"the model's reasoning spent the whole budget ({reasoning} tokens) before "
                "it answered; raise max_tokens or lower the endpoint's reasoning_effort"
            )
    elif not text.strip():
        flag = "empty"
    return Answer(
        prompt_hash=key,
        fingerprint=spec.fingerprint,
        response=text,
        finish_reason=finish,
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        flag=flag,
        error=error,
        latency_s=round(latency, 4),
        reasoning_tokens=reasoning,
        cached_tokens=_detail(usage, "prompt_tokens_details", "cached_tokens"),
    )


def _reasoning_tokens(usage: Any) -> int:
    """``usage.completion_tokens_details.reasoning_tokens`` (OpenAI's reasoning models)."""
    return _detail(usage, "completion_tokens_details", "reasoning_tokens")


def _detail(usage: Any, part: str, name: str) -> int:
    """``usage[part][name]``, 0 where the server says nothing or something that is not
    a count (``prompt_tokens_details.cached_tokens``: input served from its cache)."""
    details = usage.get(part) if isinstance(usage, dict) else None
    value = details.get(name) if isinstance(details, dict) else None
    return value if isinstance(value, int) and 0 <= value < 10**9 else 0


# ---------------------------------------------------------------------------- the store


class Store(Protocol):
    """Where `collect` keeps answers: an `AnswerStore`, or the web app's database-backed
    equivalent."""

    def get_many(self, fingerprint: str, hashes: Iterable[str]) -> dict[str, Answer]: ...

    def put(self, answer: Answer) -> None: ...


class AnswerStore:
    """Durable answers keyed by (prompt hash, teacher fingerprint), in SQLite.

    Each answer is committed as it arrives (WAL mode), so a crash or Ctrl-C loses at
    most the requests that were in flight. Safe for several processes on one host; a
    multi-node site shares answers through its database instead (the worker's job).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # In WAL mode NORMAL survives a crash of this process (only a power cut can
        # lose the last commits) and saves an fsync per answer.
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(
            """CREATE TABLE IF NOT EXISTS answers (
                prompt_hash TEXT NOT NULL, fingerprint TEXT NOT NULL, response TEXT NOT NULL,
                finish_reason TEXT, prompt_tokens INTEGER NOT NULL,
                completion_tokens INTEGER NOT NULL, flag TEXT NOT NULL, error TEXT NOT NULL,
                latency_s REAL NOT NULL, created_at REAL NOT NULL,
                PRIMARY KEY (prompt_hash, fingerprint))"""
        )
        # Batches submitted and not yet read (trainer.batch): a rerun polls the same one.
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS batches (key TEXT PRIMARY KEY, batch_id TEXT NOT NULL, "
            "created_at REAL NOT NULL)"
        )

    def get_many(self, fingerprint: str, hashes: Iterable[str]) -> dict[str, Answer]:
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, Answer] = {}
        for start in range(0, len(wanted), 500):  # SQLite caps bound parameters
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                "SELECT prompt_hash, fingerprint, response, finish_reason, prompt_tokens, "
                "completion_tokens, flag, error, latency_s FROM answers "
                f"WHERE fingerprint = ? AND prompt_hash IN ({marks})",
                [fingerprint, *chunk],
            )
            for row in rows:
                found[row[0]] = Answer(*row)
        return found

    def put(self, answer: Answer) -> None:
        values = asdict(answer)
        self._db.execute(
            "INSERT OR REPLACE INTO answers VALUES (:prompt_hash, :fingerprint, :response, "
            ":finish_reason, :prompt_tokens, :completion_tokens, :flag, :error, :latency_s, "
            ":created_at)",
            {**values, "created_at": time.time()},
        )

    def batch(self, key: str) -> str:
        row = self._db.execute("SELECT batch_id FROM batches WHERE key = ?", [key]).fetchone()
        return row[0] if row else ""

    def keep_batch(self, key: str, batch_id: str) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO batches VALUES (?, ?, ?)", [key, batch_id, time.time()]
        )

    def forget_batch(self, key: str) -> None:
        self._db.execute("DELETE FROM batches WHERE key = ?", [key])

    def close(self) -> None:
        self._db.close()


# ---------------------------------------------------------------------------- rate limits


def prompt_tokens_estimate(messages: Sequence[dict[str, str]]) -> int:
    """A prompt's tokens: ~4 characters a token (the usual rule of thumb), plus the chat
    template's few per message."""
    return sum(len(m["content"]) for m in messages) // 4 + 8 * len(messages)


def estimate_tokens(messages: Sequence[dict[str, str]], max_tokens: int | None) -> int:
    """A request's tokens before it is sent (corrected after the answer): the prompt's,
    and the answer's budget (512 where none is set)."""
    return prompt_tokens_estimate(messages) + (max_tokens or 512)


# ---------------------------------------------------------------------------- collection


@dataclass
class Summary:
    total: int = 0  # distinct prompts asked for
    cached: int = 0  # already in the store before this run
    requested: int = 0  # prompts sent to the teacher in this run
    answered: int = 0  # stored in this run, any flag
    flagged: dict[str, int] = field(default_factory=dict)  # empty/length/refused/error
    failed: int = 0  # transient failures that exhausted retries (asked again next run)
    http_requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0  # of the completion tokens
    cached_tokens: int = 0  # of the prompt tokens
    wall_s: float = 0.0
    stopped: str = "done"  # done | budget | interrupted | error
    error: str = ""

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def usage(self) -> Usage:
        return Usage(
            self.prompt_tokens, self.completion_tokens, self.reasoning_tokens, self.cached_tokens
        )

    def add(self, answer: Answer) -> None:
        """An answer stored in this run: counted, its tokens and its flag."""
        self.answered += 1
        self.prompt_tokens += answer.prompt_tokens
        self.completion_tokens += answer.completion_tokens
        self.reasoning_tokens += answer.reasoning_tokens
        self.cached_tokens += answer.cached_tokens
        if answer.flag != "ok":
            self.flagged[answer.flag] = self.flagged.get(answer.flag, 0) + 1

    @property
    def missing(self) -> int:
        return self.total - self.cached - self.answered

    @property
    def usable(self) -> int:
        """Answers of this run that are not flagged (an answer, not an attempt)."""
        return self.answered - sum(self.flagged.values())

    def line(self) -> str:
        """The closing line: usable answers, not attempts (20 refused requests are "0/20
        answered, 20 flagged", never "20/20 answered")."""
        flags = ", ".join(f"{n} {k}" for k, n in sorted(self.flagged.items()) if n)
        flagged = sum(self.flagged.values())
        rate = self.answered / self.wall_s if self.wall_s else 0.0
        return (
            f"{self.cached + self.usable}/{self.total} answered ({self.cached} cached, "
            f"{self.usable} new), {flagged} flagged{f' ({flags})' if flags else ''}; "
            f"failed: {self.failed}; "
            f"{self.tokens:,} tokens ({self.prompt_tokens:,} prompt + "
            f"{self.completion_tokens:,} completion); {self.http_requests} requests, "
            f"{self.retries} retries; {self.wall_s:.1f} s ({rate:.1f} answers/s); "
            f"stopped: {self.stopped}"
        )


@dataclass
class Budget:
    """The tokens a run may spend: one object for collection, an evaluation's teacher
    answers and the judge alike (the judge's rounds share it: ``spent`` carries what the
    earlier ones spent).

    Before each request the run asks ``allow(total)`` with what it would have spent once
    the request is sent: its tokens so far, plus the estimates of the requests in flight
    and of this one. Two things may say no, and ``stopped_by`` records which did first:

    - ``"cap"``: the run's own cap, ``cap`` tokens in all, ``offset`` of which earlier
      attempts of the same work spent (a judge run continued, a redelivered task);
    - ``"pool"``: ``reserve``, a pool the run shares with others (a team's monthly
      tokens), called with the run's total; the caller reserves there, atomically,
      before the tokens are spent. The cap is asked first: a request it refuses reserves
      nothing of the pool.
    """

    cap: int | None = None
    offset: int = 0
    reserve: Callable[[int], bool] | None = None
    spent: int = 0  # by this run's earlier collections (the judge's rounds)
    stopped_by: str = ""

    def allow(self, total: int) -> bool:
        """``total``: what the current collection would have spent (``spent`` is added)."""
        total += self.spent
        if self.cap is not None and self.offset + total > self.cap:
            self.stopped_by = self.stopped_by or "cap"
            return False
        if self.reserve is not None and not self.reserve(total):
            self.stopped_by = self.stopped_by or "pool"
            return False
        return True


async def collect(
    prompts: Sequence[Sequence[dict[str, str]]],
    spec: TeacherSpec,
    store: Store,
    limits: Limits | None = None,
    retry: RetryPolicy = RetryPolicy(),
    on_progress: Callable[[Summary], None] | None = None,
    client: openai.AsyncOpenAI | None = None,
    budget: Budget | None = None,
) -> Summary:
    """Ask the teacher for every prompt the store lacks; return what happened.

    ``limits`` (else the spec's) say how fast: every request takes its place in that
    limit, which other processes share when it names a shared store.

    With a ``budget``, no request goes out that it does not allow (the summary then
    says ``stopped: budget``), and what this collection spent is added to its ``spent``.
    Raises TeacherError (scope "run") when the teacher cannot be used at all; the
    answers stored up to then are kept.
    """
    fingerprint = spec.fingerprint
    by_hash = {prompt_hash(m): m for m in prompts}
    summary = Summary(total=len(by_hash))
    have = store.get_many(fingerprint, by_hash)
    summary.cached = len(have)
    # A plain deque suffices: workers share one event loop and never await between
    # looking at the next prompt and taking it.
    pending: deque[str] = deque()
    for key in by_hash:
        if key not in have:
            pending.append(key)
    if on_progress:
        on_progress(summary)
    client = client or make_client(spec)
    limits = limits or spec.limits
    limiter = Limiter.of(limits, spec.timeout)
    started = time.monotonic()

    def counted_retry(err: TeacherError) -> None:
        summary.retries += 1

    in_flight = [0]  # estimated tokens of requests sent and not answered yet

    def over_budget(estimate: int) -> bool:
        # Counting what is in flight keeps concurrent requests from overshooting.
        return budget is not None and not budget.allow(summary.tokens + in_flight[0] + estimate)

    async def worker() -> None:
        while pending:
            messages = by_hash[pending[0]]  # taken only if it fits the budget
            estimate = estimate_tokens(messages, spec.sampling.max_tokens)
            if over_budget(estimate):
                summary.stopped = "budget"
                return
            key = pending.popleft()
            in_flight[0] += estimate
            summary.requested += 1
            try:
                answer = await ask(client, spec, messages, retry, counted_retry, limiter)
            except TeacherError as err:
                if err.scope == "run":
                    raise
                if err.scope == "transient":
                    summary.failed += 1  # not stored: the next run asks again
                else:
                    answer = Answer(key, fingerprint, "", None, 0, 0, "error", str(err))
                    store.put(answer)
                    summary.answered += 1
                    summary.flagged["error"] = summary.flagged.get("error", 0) + 1
            else:
                store.put(answer)
                summary.add(answer)
            finally:
                in_flight[0] -= estimate
                summary.wall_s = time.monotonic() - started
                if on_progress:
                    on_progress(summary)

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(max(1, min(limits.concurrency, len(pending)))):
                group.create_task(worker())
    except* TeacherError as failed:
        summary.stopped = "error"
        err = failed.exceptions[0]
        summary.error = str(err)
        raise err from None
    finally:
        # Every HTTP request is a first try or a counted retry.
        summary.http_requests = summary.requested + summary.retries
        summary.wall_s = time.monotonic() - started
        if budget is not None:
            budget.spent += summary.tokens
        await limiter.close()
        await client.close()
    return summary
