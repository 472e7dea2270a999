"""Sending tasks to the workers: the web side's one door to the broker.

Tasks are sent by name (the web process does not import the workers' code), after the
transaction that wrote their row commits. When the broker cannot be reached (Redis
restarting, a network blip) the request must still succeed — its row is committed — so
a failed send is recorded on the row (``unsent``), the row's page says so, and the sweep
(celery beat, ``gad.sweep``) sends it again once the broker answers.
"""

from __future__ import annotations

import logging

from django.db import models
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


def send_for(rows: models.QuerySet, task: str, args: list, queue: str | None = None) -> bool:
    """Send the task of ``rows`` (one row, by pk) and record on them whether it went."""
    sent = send(task, args, queue)
    if sent:
        rows.filter(unsent=True).update(unsent=False)
    else:
        rows.update(unsent=True)
    return sent
