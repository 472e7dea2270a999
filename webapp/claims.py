"""Worker claims on rows with ``claimed_by`` / ``claimed_until`` (evaluations being
generated, judge runs being judged).

A task takes the row for a short lease, which a thread renews while it works; a second
delivery of the task finds the claim held and leaves the row alone; a worker that dies
lets the lease lapse, and the sweep (celery beat) queues the row's task again. Each is
one conditional UPDATE, so two workers can never both hold a row.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from functools import partial

from django.db import models, transaction
from django.db.models import Q
from django.utils import timezone


def take(rows: models.QuerySet, pk: int, worker: str, lease_s: float, **changes) -> bool:
    """Claim row ``pk`` of ``rows`` for ``lease_s`` seconds unless another worker holds
    it (``changes`` are written in the same UPDATE)."""
    now = timezone.now()
    free = Q(claimed_until__isnull=True) | Q(claimed_until__lt=now) | Q(claimed_by=worker)
    until = now + timedelta(seconds=lease_s)
    return bool(rows.filter(free, pk=pk).update(claimed_by=worker, claimed_until=until, **changes))


def renew(model: type[models.Model], pk: int, worker: str, lease_s: float) -> bool:
    """False when the claim was lost (it lapsed and another worker took the row)."""
    until = timezone.now() + timedelta(seconds=lease_s)
    return bool(model._default_manager.filter(pk=pk, claimed_by=worker).update(claimed_until=until))


def release(model: type[models.Model], pk: int, worker: str) -> None:
    model._default_manager.filter(pk=pk, claimed_by=worker).update(
        claimed_by="", claimed_until=None
    )


def held(rows: models.QuerySet) -> models.QuerySet:
    """Rows a live worker holds now."""
    return rows.filter(claimed_until__gte=timezone.now())


def requeue_lapsed(rows: models.QuerySet, enqueue: Callable[[int], object], **changes) -> list[int]:
    """Rows of ``rows`` whose claim lapsed, or that have none (``rows`` says which states
    need a holder): claim cleared (plus ``changes``), their task enqueued after commit.
    Returns their ids."""

    def lapsed() -> models.QuerySet:
        return rows.filter(Q(claimed_until__lt=timezone.now()) | Q(claimed_until__isnull=True))

    requeued = []
    for pk in lapsed().values_list("pk", flat=True):
        with transaction.atomic():
            if lapsed().filter(pk=pk).update(claimed_by="", claimed_until=None, **changes):
                transaction.on_commit(partial(enqueue, pk))
                requeued.append(pk)
    return requeued
