"""GPU leases: a holder (a job, or an evaluation generating a model's answers) asking for
k GPUs gets k GPUs of this node that no other holder has."""

from __future__ import annotations

from datetime import datetime, timedelta
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
from webapp.nodes.presence import node_name

LEASE_S = 30  # renewed with every heartbeat (every few seconds)

Holder = Job | Evaluation


class NoGpu(Exception):
    """Not enough free GPUs on this node now; the task retries later."""


def retry_later(task: Task, rows: QuerySet) -> NoReturn:
    """Retry ``task`` after settings.GAD_GPU_RETRY_S. When the retry cannot be sent (the broker is
    down: Celery rejects the message instead), flag ``rows`` unsent, so that the sweep
    sends their task again rather than leaving them waiting for nobody."""
    try:
        rows.update(sent_at=timezone.now())  # alive: not a lost message for the sweep
        task.retry(countdown=settings.GAD_GPU_RETRY_S)  # raises Retry once the retry is sent
    except Reject:
        rows.update(unsent=True)
        raise
    raise AssertionError("Task.retry returned")  # pragma: no cover


def node_queue(node: str) -> str:
    """The queue only the workers of ``node`` consume (the members of a multi-node job)."""
    return f"node.{node}"


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


def acquire_gang(job: Job, nodes: int, per_node: int) -> list[GpuLease] | None:
    """All or nothing: ``per_node`` free GPUs on each of ``nodes`` live nodes, this node
    first (its worker leads the job), or no lease at all — a partial gang never holds
    GPUs while it waits. Other nodes' GPUs are the ones their workers report."""
    from webapp.nodes import presence

    here = node_name()
    offered: dict[str, set[int]] = {here: set(settings.GAD_WORKER_GPUS)}
    for worker in presence.live_workers():
        if worker.node != here:
            offered.setdefault(worker.node, set()).update(worker.gpus or [])
    now = timezone.now()
    try:
        with transaction.atomic():
            GpuLease.objects.filter(expires_at__lt=now).delete()  # dead holders
            held: dict[str, set[int]] = {}
            for node, gpu in GpuLease.objects.select_for_update().values_list("node", "gpu_index"):
                held.setdefault(node, set()).add(gpu)
            free = {n: sorted(g - held.get(n, set())) for n, g in offered.items()}
            if len(free[here]) < per_node:
                return None
            others = sorted(n for n in free if n != here and len(free[n]) >= per_node)
            if len(others) < nodes - 1:
                return None
            until = now + timedelta(seconds=LEASE_S)
            return GpuLease.objects.bulk_create(
                GpuLease(node=node, gpu_index=g, expires_at=until, job=job)
                for node in [here, *others[: nodes - 1]]
                for g in free[node][:per_node]
            )
    except IntegrityError:
        return None  # another worker took one of them at the same moment


def renew(holder: Holder, node: str | None = None) -> None:
    """Renew the holder's leases on this node (``node``: that node's)."""
    GpuLease.objects.filter(node=node or node_name(), **_of(holder)).update(
        expires_at=timezone.now() + timedelta(seconds=LEASE_S)
    )


def lapsed_nodes(job: Job, nodes: list[str]) -> list[str]:
    """The gang's nodes whose worker stopped renewing its leases (it died, or its node):
    their leases are all past expiry. A member that ends its part releases its leases
    instead (``release_node``), so an empty node is not a lapsed one."""
    now = timezone.now()
    rows = GpuLease.objects.filter(job=job, node__in=nodes).values_list("node", "expires_at")
    latest: dict[str, datetime] = {}
    for node, expires in rows:
        latest[node] = max(latest.get(node, expires), expires)
    return [n for n in nodes if n in latest and latest[n] < now]


def holding_nodes(job: Job, nodes: list[str]) -> list[str]:
    """The gang's nodes that still hold leases for the job (alive or not yet lapsed)."""
    now = timezone.now()
    held = GpuLease.objects.filter(job=job, node__in=nodes, expires_at__gte=now)
    return sorted(set(held.values_list("node", flat=True)))


def release_node(job: Job) -> None:
    """A member's part ended: give back this node's leases of the job."""
    GpuLease.objects.filter(job=job, node=node_name()).delete()


def release(rows: list[GpuLease]) -> None:
    """Release exactly these leases: never one another worker has taken since (after a
    lost claim, the worker taking the holder over may lease the same GPU again)."""
    GpuLease.objects.filter(pk__in=[row.pk for row in rows]).delete()
