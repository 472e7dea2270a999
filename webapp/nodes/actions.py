"""Every write to the nodes' shared state: GPU leases and the workers' reports of
themselves (STYLE.md: one write path; the worker calls these).

A holder (a job, or an evaluation generating a model's answers) asking for k GPUs gets
k GPUs of a node that no other holder has. Leases live in the database (not in a
worker's memory) so that a worker that dies frees its GPUs when they expire and two
workers on one node never share one; their worker renews them with its heartbeat.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, models, transaction
from django.utils import timezone

from webapp.claims import node_name
from webapp.nodes import presence
from webapp.nodes.models import GpuLease, WorkerNode

LEASE_S = 30  # renewed with every heartbeat (every few seconds)


def _of(holder: models.Model) -> dict:
    """The lease's holder: ``job_id`` or ``evaluation_id``, by the holder's model name
    (the apps that hold GPUs sit above this one, which imports neither)."""
    return {f"{holder._meta.model_name}_id": holder.pk}


def acquire(holder: models.Model, gpus: list[int], count: int) -> list[GpuLease] | None:
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
            until = now + timedelta(seconds=LEASE_S)
            return GpuLease.objects.bulk_create(
                GpuLease(node=node, gpu_index=g, expires_at=until, **_of(holder))
                for g in free[:count]
            )
    except IntegrityError:
        return None  # another worker took one of them at the same moment


def acquire_gang(job: models.Model, nodes: int, per_node: int) -> list[GpuLease] | None:
    """All or nothing: ``per_node`` free GPUs on each of ``nodes`` live nodes, this node
    first (its worker leads the job), or no lease at all — a partial gang never holds
    GPUs while it waits. Other nodes' GPUs are the ones their workers report."""
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
                GpuLease(node=node, gpu_index=g, expires_at=until, **_of(job))
                for node in [here, *others[: nodes - 1]]
                for g in free[node][:per_node]
            )
    except IntegrityError:
        return None  # another worker took one of them at the same moment


def renew(holder: models.Model) -> None:
    """Renew the holder's leases on this node."""
    GpuLease.objects.filter(node=node_name(), **_of(holder)).update(
        expires_at=timezone.now() + timedelta(seconds=LEASE_S)
    )


def release(rows: Iterable[GpuLease]) -> None:
    """Release exactly these leases: never one another worker has taken since (after a
    lost claim, the worker taking the holder over may lease the same GPU again)."""
    GpuLease.objects.filter(pk__in=[row.pk for row in rows]).delete()


def release_node(job: models.Model) -> None:
    """A member's part of a multi-node job ended: give back this node's leases of the
    job ("ended", as opposed to lapsed leases: "died")."""
    GpuLease.objects.filter(node=node_name(), **_of(job)).delete()


# ----------------------------------------------------------------------------- workers


def report(name: str, node: str, queues: list[str], gpus: list[int]) -> None:
    """A live worker's report of itself (every ``presence.REPORT_EVERY_S``)."""
    now = timezone.now()
    WorkerNode.objects.update_or_create(
        name=name,
        defaults={"node": node, "queues": queues, "gpus": gpus, "last_seen": now},
        create_defaults={
            "node": node,
            "queues": queues,
            "gpus": gpus,
            "last_seen": now,
            "started_at": now,
        },
    )


def forget(nodes: list[str]) -> None:
    """Nodes found dead (a multi-node job lost them): not live until they report again."""
    if nodes:
        WorkerNode.objects.filter(node__in=nodes).delete()


def gone(name: str) -> None:
    """A worker stopping removes itself."""
    WorkerNode.objects.filter(name=name).delete()
