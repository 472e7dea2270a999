"""The one paid call to a team's teacher endpoint (collection, the teacher as a system of
an evaluation, the LLM judge).

Every paid call goes the same way: the endpoint's spec (its URL checked against SSRF
again, its key decrypted), the team's remaining monthly tokens as the run's budget, the
run itself in an event loop with the answer store and the token reservation on one ORM
thread (tokens reserved atomically before each request goes out), its typed failure turned into a message with the key masked, and the tokens
spent charged to the team however the run ends.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Generic, TypeVar

from trainer.pricing import Usage
from trainer.teacher import Budget, TeacherError, TeacherSpec
from webapp.lib import crypto
from webapp.teachers import ssrf
from webapp.teachers.models import KEY_MASK, TeacherEndpoint
from webapp.teachers.specs import teacher_spec
from webapp.teams.actions import record_spend
from worker.answers import DbAnswerStore, OrmThread, TokenReservation, remaining_tokens

R = TypeVar("R")
# run(spec, store, budget, on_progress) -> the coroutine of trainer.teacher.collect or
# trainer.judge.judge.
Run = Callable[[TeacherSpec, DbAnswerStore, Budget, Callable[[Any], None]], Coroutine[Any, Any, R]]

NO_BUDGET = "The team's teacher tokens for this month are spent."


@dataclass
class Paid(Generic[R]):
    """What a paid call gave: its result (None if it did not run or failed), the tokens
    charged, and, when it did not end normally, why.

    ``kind`` is "" (ran to the end), "refused" (the endpoint cannot be used), "budget"
    (nothing left to spend) or "failed" (the endpoint failed; ``failure`` is its error,
    key masked); ``error`` is the message for the page.
    """

    result: R | None = None
    fingerprint: str = ""  # the teacher's, under which its answers are stored
    tokens: int = 0
    kind: str = ""
    failure: str = ""
    error: str = ""
    stopped_by: str = ""  # the budget's say: "cap" (the run's own), "pool" (the team's)
    usage: Usage = field(default_factory=Usage)  # tokens by kind
    cost: Decimal | None = None  # at the endpoint's prices; None: it has none


def without_key(message: str, endpoint: TeacherEndpoint, spec: TeacherSpec | None) -> str:
    """``message`` with the key masked: a server may echo it in its error text."""
    if spec is None or not spec.api_key:
        return message
    return message.replace(spec.api_key, KEY_MASK + endpoint.api_key_last4)


@dataclass(frozen=True)
class Charge:
    """What a paid call is for, on the team's usage page: its purpose, what it belongs
    to (one of job, evaluation, judge_run) and who started it."""

    purpose: str  # teams.models.SpendPurpose
    label: str
    user: Any = None
    job: Any = None
    evaluation: Any = None
    judge_run: Any = None


def paid_call(
    endpoint: TeacherEndpoint,
    team,
    run: Run[R],
    *,
    role: str = "teacher",
    job=None,
    cap: int | None = None,
    spent_before: int = 0,
    on_progress: Callable[[Any, OrmThread], None] | None = None,
    usage_of: Callable[[R], Usage] = lambda result: result.usage,  # type: ignore[attr-defined]
    charge: Charge | None = None,
    batch: bool = False,
    **sampling: Any,
) -> Paid[R]:
    """Run ``run`` against ``endpoint`` within the team's budget and charge what it spends
    (to ``job`` as well, when given). Its ``Budget`` has the team's monthly tokens as its
    pool and, when given, ``cap`` tokens in all of which ``spent_before`` are spent.

    ``on_progress(progress, orm)`` is called from the run's event loop with each progress
    report (it may write through ``orm``, and raise to stop the run: cancel, lost
    claim); what it raises propagates unwrapped. ``sampling`` overrides the endpoint's
    stored sampling parameters.

    What it spent, by kind of token and at the endpoint's prices, is recorded for
    ``charge`` (a ``TeacherSpend`` row), and counts against a monthly limit in money.
    A run that failed before it reported its usage by kind is charged its tokens at
    the dearest price.
    """
    try:
        spec = teacher_spec(endpoint, role=role, **sampling)
    except (ssrf.UnsafeURL, crypto.KeyUnreadable) as refused:
        return Paid(
            kind="refused", error=f"{role.capitalize()} {endpoint.name!r} cannot be used: {refused}"
        )
    prices, price_source = endpoint.prices()
    per_token = prices.most_per_token if prices is not None else None
    if remaining_tokens(team, per_token) <= 0:
        return Paid(kind="budget", error=NO_BUDGET)
    orm = OrmThread()
    reservation = TokenReservation(orm, team, job=job, per_token=per_token)
    seen = [0]

    def progress(report) -> None:
        if on_progress is not None:
            on_progress(report, orm)
        seen[0] = max(seen[0], report.tokens)

    paid: Paid[R] = Paid(fingerprint=spec.fingerprint)
    budget = Budget(cap=cap, offset=spent_before, reserve=reservation.allow)
    try:
        paid.result = asyncio.run(run(spec, DbAnswerStore(orm), budget, progress))
    except BaseException as exc:
        failed, rest = _split(exc)
        if rest is not None:
            raise rest from None  # a stop from on_progress, the time limit, a bug
        paid.kind = "failed"
        paid.failure = without_key(str(failed), endpoint, spec)
        paid.error = f"The {role} failed: {paid.failure}"
    finally:
        usage = usage_of(paid.result) if paid.result is not None else Usage(completion=seen[0])
        paid.usage = usage
        paid.tokens = usage.total
        # ``batch``: answered through the Batch API, at its discount.
        paid.cost = prices.cost(usage, batch=batch) if prices is not None else None
        paid.stopped_by = budget.stopped_by
        reservation.settle(paid.tokens, paid.cost)
        if charge is not None and usage.total:
            orm.call(_record_spend, endpoint, team, charge, paid, price_source)
        orm.close()
    return paid


def _record_spend(endpoint: TeacherEndpoint, team, charge: Charge, paid: Paid, source: str) -> None:
    usage = paid.usage
    record_spend(
        team,
        user=charge.user,
        purpose=charge.purpose,
        endpoint=endpoint,
        endpoint_name=endpoint.name,
        model=endpoint.model,
        job=charge.job,
        evaluation=charge.evaluation,
        judge_run=charge.judge_run,
        label=charge.label,
        prompt_tokens=usage.prompt,
        completion_tokens=usage.completion,
        reasoning_tokens=usage.reasoning,
        cached_tokens=usage.cached,
        cost=paid.cost,
        price_source=source,
    )


def _split(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """(the endpoint's failure, None), or (None, what else stopped the run), out of the
    exception groups that the run's task groups wrap them in: a stop wins over a
    failure raised beside it."""
    if isinstance(exc, BaseExceptionGroup):
        teacher, rest = exc.split(TeacherError)
        if rest is not None:
            return None, _first(rest)
        return _first(teacher), None
    if isinstance(exc, TeacherError):
        return exc, None
    return None, exc


def _first(exc: BaseException | None) -> BaseException | None:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
