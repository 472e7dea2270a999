"""The teacher answer store of trainer.teacher, kept in the site's database.

Shared by every job on every node: the same prompt asked of the same teacher (same
fingerprint) is never paid for twice. ``trainer.teacher.collect`` calls the store from
its event loop, where Django refuses ORM calls, so every call runs on one helper thread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from typing import TypeVar

from django.db import connection

from trainer.teacher import Answer
from webapp.promptsets.answers import load_answers
from webapp.promptsets.models import TeacherAnswer

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
        self.orm.call(_save, answer)

    def close(self) -> None:
        pass


def _save(answer: Answer) -> None:
    values = asdict(answer)
    TeacherAnswer.objects.update_or_create(
        prompt_hash=values.pop("prompt_hash"),
        fingerprint=values.pop("fingerprint"),
        defaults=values,
    )


def remaining_tokens(team) -> int:
    """Teacher (and judge) tokens the team may still spend this month."""
    from webapp.teams import actions as team_actions

    used = team_actions.month_usage(team).teacher_tokens
    return int(team.quota.teacher_tokens_per_month) - used


class TokenMeter:
    """Charges a team for the tokens a collection or judge run spends, as it spends them.

    ``update`` is called from the run's progress callback, inside its event loop, so the
    ledger writes go through the OrmThread. Charging every ``CHARGE_EVERY`` tokens keeps
    the usage bars current; ``settle`` charges the rest when the run ends, however it ends.
    """

    CHARGE_EVERY = 10_000

    def __init__(self, orm: OrmThread, team, job=None):
        self.orm, self.team, self.job = orm, team, job
        self.charged = 0

    def update(self, total: int) -> None:
        if total - self.charged >= self.CHARGE_EVERY:
            self._charge(total)

    def settle(self, total: int) -> None:
        if total > self.charged:
            self._charge(total)

    def _charge(self, total: int) -> None:
        from webapp.teams.actions import record_usage
        from webapp.teams.models import UsageKind

        self.orm.call(
            record_usage, self.team, UsageKind.TEACHER_TOKENS, total - self.charged, job=self.job
        )
        self.charged = total
