"""Sending tasks to the workers: the web side's one door to the broker.

Tasks are sent by name (the web process does not import the workers' code), after the
transaction that wrote their row commits. When the broker cannot be reached (Redis
restarting, a network blip) the request must still succeed — its row is committed — so
a failed send is recorded on the row (``unsent``), the row's page says so, and the sweep
(celery beat, ``gad.sweep``) sends it again once the broker answers.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import timedelta

from django.db import models
from django.utils import timezone
from kombu.exceptions import OperationalError

log = logging.getLogger(__name__)


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


def send_for(rows: models.QuerySet, task: str, args: list, queue: str | None = None) -> bool:
    """Send the task of ``rows`` (one row, by pk) and record on them whether it went."""
    sent = send(task, args, queue)
    if sent:
        fields: dict[str, object] = {"unsent": False}
        if any(f.name == "sent_at" for f in rows.model._meta.get_fields()):
            fields["sent_at"] = timezone.now()  # for the sweep's lost-message check
        rows.update(**fields)
    else:
        rows.update(unsent=True)
    return sent


def resend_lost(
    rows: models.QuerySet, task: str, resend: Callable[[int], bool], after_s: float
) -> list[int]:
    """Rows waiting for a worker (``rows``: queued and unclaimed) whose task was sent
    more than ``after_s`` ago and never taken: a message lost inside the broker (a Redis
    restart without AOF). Sent again; a duplicate delivery is harmless (the claims)."""
    cutoff = timezone.now() - timedelta(seconds=after_s)
    lost = rows.filter(unsent=False).filter(
        models.Q(sent_at__lt=cutoff) | models.Q(sent_at__isnull=True, created_at__lt=cutoff)
    )
    candidates = list(lost.values_list("pk", flat=True))
    waiting = _waiting_in_broker() if candidates else set()
    resent = [pk for pk in candidates if (task, f"[{pk}]") not in waiting and resend(pk)]
    if resent:
        log.warning("resent %s %s: their tasks were lost", rows.model.__name__, resent)
    return resent


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
