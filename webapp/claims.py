"""Claims: which worker holds a row of work, and until when.

A job, an evaluation's generation, a judge run and a prompt import are each done by one
worker at a time. The worker takes the row (``take``) with a claim that lapses unless it
renews it (``renew``; ``worker.claims.Renewal`` renews from a thread of its own, whatever
the work is doing); a second delivery of the task finds the claim held and leaves the
row alone; a worker that dies lets its claim lapse, and the sweep hands the row to
another worker (``webapp.dispatch``). Each step is one conditional UPDATE, so two
workers can never both hold a row, and every write of the worker's filters on its claim
(``holding``): a worker that lost its claim changes nothing any more.
"""

from __future__ import annotations

import os
import socket
import threading
from datetime import timedelta

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone


class Claimed(models.Model):
    """A row a worker does work on (the fields of its claim)."""

    claimed_by = models.CharField(
        max_length=200, blank=True, help_text="The worker holding it (node:pid:thread)."
    )
    claimed_until = models.DateTimeField(
        null=True, blank=True, help_text="The claim lapses then unless its worker renews it."
    )

    class Meta:
        abstract = True


def node_name() -> str:
    """This node's name: ``GAD_NODE_NAME``, else the host name (GPU leases are per node)."""
    return settings.GAD_NODE_NAME or socket.gethostname()


def worker_name() -> str:
    """Who claims: the node, the process and the thread (a worker's solo pool runs its
    task in a thread of the process, and tests run a worker beside themselves)."""
    return f"{node_name()}:{os.getpid()}:{threading.get_native_id()}"


def _until(lease_s: float):
    return timezone.now() + timedelta(seconds=lease_s)


def take(rows: models.QuerySet, pk: int, worker: str, lease_s: float, **changes) -> bool:
    """Claim row ``pk`` of ``rows`` for ``lease_s`` seconds unless another worker holds
    it (``changes`` are written in the same UPDATE)."""
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=timezone.now())
    free |= Q(claimed_by=worker)
    until = _until(lease_s)
    return bool(rows.filter(free, pk=pk).update(claimed_by=worker, claimed_until=until, **changes))


def holding(rows: models.QuerySet, pk: int, worker: str) -> models.QuerySet:
    """Row ``pk`` of ``rows`` while ``worker`` holds it: the filter of every write the
    worker makes to it."""
    return rows.filter(pk=pk, claimed_by=worker)


def renew(rows: models.QuerySet, pk: int, worker: str, lease_s: float, **changes) -> bool:
    """Extend the claim (and write ``changes``); False when it was lost (it lapsed and
    another worker took the row, or the row ended)."""
    return bool(holding(rows, pk, worker).update(claimed_until=_until(lease_s), **changes))


def release(rows: models.QuerySet, pk: int, worker: str, **changes) -> bool:
    """Give the row back (writing ``changes``), if ``worker`` still holds it."""
    return bool(holding(rows, pk, worker).update(claimed_by="", claimed_until=None, **changes))


def held(rows: models.QuerySet) -> models.QuerySet:
    """Rows a live worker holds now."""
    return rows.filter(claimed_until__gte=timezone.now())


def lapsed(rows: models.QuerySet) -> models.QuerySet:
    """Rows whose claim lapsed: their worker stopped renewing it (it died)."""
    return rows.filter(claimed_until__lt=timezone.now())
