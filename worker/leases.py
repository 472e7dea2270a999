"""GPU leases: a holder (a job, or an evaluation generating a model's answers) asking for
k GPUs gets k GPUs of this node that no other holder has."""

from __future__ import annotations

import socket
from datetime import timedelta
from typing import NoReturn

from celery import Task
from celery.exceptions import Reject
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.utils import timezone

from webapp.evaluation.models import Evaluation
from webapp.jobs.models import Job
from webapp.nodes.models import GpuLease

LEASE_S = 30  # renewed with every heartbeat (every few seconds)

Holder = Job | Evaluation


class NoGpu(Exception):
    """Not enough free GPUs on this node now; the task retries later."""


def retry_later(task: Task, rows: QuerySet) -> NoReturn:
    """Retry ``task`` after settings.GAD_GPU_RETRY_S. When the retry cannot be sent (the broker is
    down: Celery rejects the message instead), flag ``rows`` unsent, so that the sweep
    sends their task again rather than leaving them waiting for nobody."""
    try:
        task.retry(countdown=settings.GAD_GPU_RETRY_S)  # raises Retry once the retry is sent
    except Reject:
        rows.update(unsent=True)
        raise
    raise AssertionError("Task.retry returned")  # pragma: no cover


def node_name() -> str:
    return socket.gethostname()


def _of(holder: Holder) -> dict:
    return {"evaluation": holder} if isinstance(holder, Evaluation) else {"job": holder}


def acquire(holder: Holder, gpus: list[int], count: int) -> list[GpuLease] | None:
    """Lease ``count`` of this node's ``gpus`` for the holder, or None if not enough are
    free. The rows are what ``release`` gives back."""
    node = node_name()
    now = timezone.now()
    try:
        with transaction.atomic():
            GpuLease.objects.filter(node=node, expires_at__lt=now).delete()  # dead holders
            held = set(
                GpuLease.objects.select_for_update()
                .filter(node=node)
                .values_list("gpu_index", flat=True)
            )
            free = [g for g in gpus if g not in held]
            if len(free) < count:
                return None
            chosen = free[:count]
            until = now + timedelta(seconds=LEASE_S)
            return GpuLease.objects.bulk_create(
                GpuLease(node=node, gpu_index=g, expires_at=until, **_of(holder)) for g in chosen
            )
    except IntegrityError:
        return None  # another worker took one of them at the same moment


def renew(holder: Holder) -> None:
    GpuLease.objects.filter(node=node_name(), **_of(holder)).update(
        expires_at=timezone.now() + timedelta(seconds=LEASE_S)
    )


def release(rows: list[GpuLease]) -> None:
    """Release exactly these leases: never one another worker has taken since (after a
    lost claim, the worker taking the holder over may lease the same GPU again)."""
    GpuLease.objects.filter(pk__in=[row.pk for row in rows]).delete()
