"""Sending work to the workers: the web side's one door to the broker, and the registry
of the kinds of work it sends.

Each kind of work (a job, an evaluation's generation, a judge run, a prompt import)
registers itself once, in its app's ``actions.py``: its model (a row that is ``Sent`` and
``claims.Claimed``), its task and queue, which of its rows wait for a worker, and which
must have one. Tasks are sent by name (the web process does not import the workers'
code), after the transaction that wrote their row commits. When the broker cannot be
reached (Redis restarting, a network blip) the request must still succeed — its row is
committed — so a failed send is recorded on the row (``unsent``), the row's page says
so, and the sweep (celery beat, ``gad.sweep``) walks the registry: it sends again what
never reached the broker or was lost inside it, and hands the rows whose worker died
(a lapsed claim) to another worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from typing import Any

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)


class Sent(models.Model):
    """Whether a row's task reached the broker, and when it was last sent."""

    # The task could not be sent (broker unreachable); the sweep sends it again.
    unsent = models.BooleanField(default=False)
    # When its task was last sent (or a worker re-sent it, waiting for GPUs): one waiting
    # unclaimed for longer than GAD_REQUEUE_AFTER_S lost its message; the sweep resends.
    sent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True


def send(task: str, args: list, queue: str | None = None) -> bool:
    """Send the task; False (logged) when the broker cannot be reached."""
    from webapp.celery import app

    try:
        app.send_task(task, args=args, queue=queue)
    except (OperationalError, OSError) as exc:
        log.warning("could not send %s%s to the broker (%s); the sweep will retry", task, args, exc)
        return False
    return True


def queue_of(task: str) -> str:
    """The queue a task sent without one goes to (settings.CELERY_TASK_ROUTES)."""
    from django.conf import settings

    route = settings.CELERY_TASK_ROUTES.get(task, {})
    return str(route.get("queue", settings.CELERY_TASK_DEFAULT_QUEUE))


@dataclass(frozen=True)
class Kind:
    """A kind of work a worker does on a row of ``model``, by task ``task`` (one argument:
    the row's id); ``name`` names its rows in the sweep's log and report.

    - ``queue`` is its queue, or a function of the row that says it;
    - ``waiting`` selects the rows waiting for a worker to take them (their message is
      due in a queue);
    - ``working`` selects the rows that must have a live holder: a lapsed claim there
      means a dead worker, and the row is handed on, with ``requeue`` written to it;
    - ``on_lapsed``, when set, replaces that hand-on for the rows it is given (a job
      counts its attempts and ends a cancelled one).
    """

    name: str
    model: type[models.Model]
    task: str
    queue: str | Callable[[Any], str]
    waiting: Q
    working: Q
    requeue: dict[str, Any] = field(default_factory=dict)
    on_lapsed: Callable[[models.QuerySet], list[int]] | None = None

    @property
    def rows(self) -> models.QuerySet:
        return self.model._default_manager.all()

    def queue_for(self, row: Any) -> str:
        return self.queue(row) if callable(self.queue) else self.queue

    def enqueue(self, pk: int) -> bool:
        """Send the row's task and record whether it went (``unsent``, ``sent_at``)."""
        rows = self.rows.filter(pk=pk)
        row = rows.first()
        if row is None:
            return False
        sent = send(self.task, [pk], self.queue_for(row))
        rows.update(**({"unsent": False, "sent_at": timezone.now()} if sent else {"unsent": True}))
        return sent

    def enqueue_on_commit(self, pk: int) -> None:
        """Send the row's task once the transaction that wrote the row commits."""
        transaction.on_commit(partial(self.enqueue, pk))

    def still_waiting(self, pk: int) -> None:
        """A worker sends the row's task again later (waiting for GPUs): it is alive, not
        a lost message for the sweep."""
        self.rows.filter(pk=pk).update(sent_at=timezone.now())

    def not_sent(self, pk: int) -> None:
        """The row's task could not be sent (a worker's retry, with the broker down): the
        sweep sends it."""
        self.rows.filter(pk=pk).update(unsent=True)

    # -------------------------------------------------------------------- the sweep

    def resend_unsent(self) -> list[int]:
        """Waiting rows whose task never reached the broker: sent again."""
        waiting = self.rows.filter(self.waiting, unsent=True)
        return [pk for pk in waiting.values_list("pk", flat=True) if self.enqueue(pk)]

    def resend_lost(self, after_s: float) -> list[int]:
        """Waiting, unclaimed rows whose task was sent more than ``after_s`` ago and
        never taken: a message lost inside the broker (a Redis restart without AOF).
        Sent again; a duplicate delivery is harmless (the claims)."""
        cutoff = timezone.now() - timedelta(seconds=after_s)
        lost = self.rows.filter(self.waiting, claimed_by="", unsent=False).filter(
            Q(sent_at__lt=cutoff) | Q(sent_at__isnull=True, created_at__lt=cutoff)
        )
        candidates = list(lost.values_list("pk", flat=True))
        held = _waiting_in_broker() if candidates else set()
        resent = [
            pk for pk in candidates if (self.task, f"[{pk}]") not in held and self.enqueue(pk)
        ]
        if resent:
            log.warning("resent %s %s: their tasks were lost", self.name, resent)
        return resent

    def requeue_lapsed(self) -> list[int]:
        """Working rows whose claim lapsed (their worker died, its task with it): handed
        to another worker. Returns their ids."""

        def lapsed() -> models.QuerySet:
            dead = Q(claimed_until__lt=timezone.now()) | Q(claimed_until__isnull=True)
            return self.rows.filter(self.working).filter(dead)

        if self.on_lapsed is not None:
            return self.on_lapsed(lapsed())
        requeued = []
        for pk in lapsed().values_list("pk", flat=True):
            with transaction.atomic():
                if lapsed().filter(pk=pk).update(claimed_by="", claimed_until=None, **self.requeue):
                    self.enqueue_on_commit(pk)
                    requeued.append(pk)
        return requeued


_kinds: dict[str, Kind] = {}


def register(kind: Kind) -> Kind:
    """Add a kind of work (keyed by its task); returns it, for its app to keep."""
    _kinds[kind.task] = kind
    return kind


def kinds() -> list[Kind]:
    return list(_kinds.values())


def _waiting_in_broker() -> set[tuple[str, str]]:
    """(task, args) of the messages Redis holds: the queues' lists and the delivered but
    unacknowledged ones. A row whose message a queue still holds, or a worker has (busy,
    or waiting to retry), is not lost. Empty when unknown (not Redis, unreachable)."""
    import json

    from webapp.celery import broker_redis

    try:
        broker = broker_redis()
        raw = [m for q in broker.keys("*") if broker.type(q) == b"list"
               for m in broker.lrange(q, 0, -1)]  # fmt: skip
        raw += [json.dumps(json.loads(v)[0]) for v in broker.hvals("unacked")]
    except Exception:  # go by time alone
        return set()
    held = set()
    for message in raw:
        try:
            headers = json.loads(message)["headers"]
            held.add((headers["task"], headers["argsrepr"]))
        except (ValueError, KeyError, TypeError):
            continue
    return held
