"""The teacher answer store of trainer.teacher, kept in the site's database.

Shared by every job on every node: the same prompt asked of the same teacher (same
fingerprint) is never paid for twice. ``trainer.teacher.collect`` calls the store from
its event loop, where Django refuses ORM calls, so every call runs on one helper thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import TypeVar

from django.db import connection

from trainer.teacher import Answer
from webapp.promptsets.actions import save_teacher_answer
from webapp.promptsets.answers import load_answers
from webapp.teams.actions import month_usage, reserve_tokens, settle_tokens

T = TypeVar("T")


class OrmThread:
    """Runs ORM calls on a thread of its own (no event loop there), one at a time."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="orm")

    def call(self, fn: Callable[..., T], *args, **kwargs) -> T:
        return self._pool.submit(fn, *args, **kwargs).result()

    def close(self) -> None:
        # `connection` resolves per thread: close the helper thread's own connection.
        self._pool.submit(lambda: connection.close()).result()
        self._pool.shutdown()


class DbAnswerStore:
    def __init__(self, orm: OrmThread):
        self.orm = orm

    def get_many(self, fingerprint: str, hashes: Iterable[str]) -> dict[str, Answer]:
        return self.orm.call(load_answers, fingerprint, list(hashes))

    def put(self, answer: Answer) -> None:
        self.orm.call(save_teacher_answer, answer)

    def close(self) -> None:
        pass


def remaining_tokens(team, per_token: Decimal | None = None) -> int:
    """Teacher (and judge) tokens the team may still spend this month (at ``per_token``
    dollars each, also within a monthly limit in money)."""
    usage = month_usage(team)
    quota = team.quota
    quota.refresh_from_db()
    left = int(quota.teacher_tokens_per_month) - usage.teacher_tokens
    money = quota.teacher_dollars_per_month
    if per_token and money is not None:
        left = min(left, int((money - usage.teacher_dollars) / per_token))
    return left


class TokenReservation:
    """The tokens a collection or judge run may spend, reserved from the team's monthly
    budget before the requests go out (``teams.actions.reserve_tokens``: atomic, so runs
    at the same time share the remainder instead of each spending all of it).

    ``allow`` is the pool of the run's ``trainer.teacher.Budget``: called from the run's
    event loop before each request with the run's total so far; it reserves another
    chunk when the total would pass what is reserved. ``settle`` corrects the ledger to what was really spent,
    however the run ends.
    """

    CHUNK = 10_000  # reserved at a time: few lock round-trips, little held back

    def __init__(self, orm: OrmThread, team, job=None, per_token: Decimal | None = None):
        self.orm, self.team, self.job = orm, team, job
        self.per_token = per_token  # the endpoint's dearest token ($): money quotas
        self.reserved = 0

    def allow(self, total: int) -> bool:
        if total > self.reserved:
            wanted = max(self.CHUNK, total - self.reserved)
            self.reserved += self.orm.call(
                reserve_tokens, self.team, wanted, self.job, self.per_token
            )
        return total <= self.reserved

    def settle(self, spent: int, cost: Decimal | None = None) -> None:
        self.orm.call(
            settle_tokens, self.team, self.reserved, spent, self.job, self.per_token, cost
        )
        self.reserved = spent
