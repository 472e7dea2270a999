"""Which workers are alive, and what they offer (``WorkerNode`` rows the workers keep
current; ``worker.presence`` writes them); and whether the sweep (celery beat's
``gad.sweep``) runs: each run records itself in the broker's Redis."""

from __future__ import annotations

import time
from datetime import datetime, timedelta

from django.utils import timezone

from webapp.celery import broker_redis
from webapp.claims import node_name
from webapp.nodes.models import GpuLease, WorkerNode

SWEEP_RUNS, SWEEP_LAST = "gad:sweep:runs", "gad:sweep:last"
REPORT_EVERY_S = 10
LIVE_S = 45  # a worker not heard from for this long is gone


def live_workers():
    return WorkerNode.objects.filter(last_seen__gte=timezone.now() - timedelta(seconds=LIVE_S))


def serves(queue: str) -> bool:
    """A live worker consumes ``queue``."""
    return any(queue in (w.queues or []) for w in live_workers())


def gpus_by_node() -> dict[str, int]:
    """Live nodes → how many GPUs their workers may lease (the union over a node's
    worker processes)."""
    found: dict[str, set[int]] = {}
    for worker in live_workers():
        found.setdefault(worker.node, set()).update(worker.gpus or [])
    return {node: len(gpus) for node, gpus in found.items()}


def most_gpus() -> int:
    return max(gpus_by_node().values(), default=0)


def gpu_problem(gpus: int, nodes_wanted: int = 1) -> str | None:
    """Why a job asking for ``gpus`` GPUs on each of ``nodes_wanted`` nodes could not run
    on the live nodes (None: they could)."""
    if gpus <= 0:
        return None
    nodes = gpus_by_node()
    most = max(nodes.values(), default=0)
    big_enough = sum(1 for count in nodes.values() if count >= gpus)
    if big_enough >= nodes_wanted:
        return None
    if most >= gpus:
        return (
            f"gpus: this job needs {gpus} GPU(s) on each of {nodes_wanted} nodes and "
            f"{big_enough} live node(s) have that many; lower nodes, or start workers on "
            "more nodes"
        )
    if not any(nodes.values()):
        return (
            f"gpus: this job needs {gpus} GPU(s) and no GPU worker is running on this site; "
            "launch it with 0 GPUs (a CPU worker), or start a GPU worker first"
        )
    return (
        f"gpus: this job needs {gpus} GPUs and the largest live node has {most}; ask for at "
        f"most {most}, or start a worker on a node with more"
    )


def queue_problem(queue: str) -> str | None:
    """Why work sent to ``queue`` would wait for nobody: no live worker consumes it
    (None: one does). Pages say it at once, rather than after a timeout."""
    workers = list(live_workers())
    if any(queue in (w.queues or []) for w in workers):
        return None
    start = f"celery -A webapp worker -Q {queue} (docs/deployment.md, Processes)"
    if not workers:
        return (
            f"No worker is running on this site: the task waits in the '{queue}' queue "
            f"until one starts: {start}."
        )
    read = sorted({q for w in workers for q in (w.queues or []) if not q.startswith("node.")})
    return (
        f"No running worker reads the '{queue}' queue (the running ones read "
        f"{', '.join(read) or 'nothing'}): the task waits until one does: {start}."
    )


def gpu_wait(gpus: int) -> str | None:
    """Why a queued task asking for ``gpus`` GPUs on one node waits although nodes have
    that many: who holds them. None when a node has enough free (it starts soon)."""
    if gpus <= 0:
        return None
    offered = {node: n for node, n in gpus_by_node().items() if n >= gpus}
    if not offered:
        return None  # gpu_problem's case: no node could ever run it
    leases = GpuLease.objects.filter(node__in=offered, expires_at__gt=timezone.now())
    taken: dict[str, int] = {}
    holders: dict[str, list[str]] = {}
    for lease in leases.select_related("job").order_by("gpu_index"):
        taken[lease.node] = taken.get(lease.node, 0) + 1
        holder = (
            f"job {lease.job.name!r} (#{lease.job_id})"
            if lease.job is not None
            else f"evaluation #{lease.evaluation_id}"
        )
        if holder not in holders.setdefault(lease.node, []):
            holders[lease.node].append(holder)
    busy = []
    for node, total in sorted(offered.items()):
        held = taken.get(node, 0)
        if total - held >= gpus:
            return None
        amount = f"all {total}" if held >= total else f"{held} of {total}"
        busy.append(f"{amount} on node {node} are leased by {', '.join(holders[node])}")
    return f"Waiting for {gpus} GPU{'s' if gpus > 1 else ''}: " + "; ".join(busy) + "."


# ----------------------------------------------------------------------------- leases


def lapsed_nodes(job, nodes: list[str]) -> list[str]:
    """The gang's nodes whose worker stopped renewing its leases (it died, or its node):
    their leases are all past expiry. A member that ends its part releases its leases
    instead (``actions.release_node``), so an empty node is not a lapsed one."""
    now = timezone.now()
    rows = GpuLease.objects.filter(job=job, node__in=nodes).values_list("node", "expires_at")
    latest: dict[str, datetime] = {}
    for node, expires in rows:
        latest[node] = max(latest.get(node, expires), expires)
    return [n for n in nodes if n in latest and latest[n] < now]


def holding_nodes(job, nodes: list[str]) -> list[str]:
    """The gang's nodes that still hold leases for the job (alive or not yet lapsed)."""
    held = GpuLease.objects.filter(job=job, node__in=nodes, expires_at__gte=timezone.now())
    return sorted(set(held.values_list("node", flat=True)))


GANG_FAILED_TTL_S = 86400


def _gang_failed_key(job_id: int, attempt: int) -> str:
    """One attempt's failed members: a worker re-claims a job under the same name, so the
    claim alone would carry an earlier attempt's failures over."""
    return f"gad:gang:{job_id}:{attempt}:failed"


def member_failed(job_id: int, attempt: int, why: str) -> None:
    """This node's part of a multi-node job failed (its torchrun exited with an error, or
    never started). Recorded before its leases are released, so that the leader tells it
    from a part that ended well and stops its own ranks at once: on NCCL they would
    otherwise wait in a collective for the gone ranks until the process group's timeout."""
    broker = broker_redis()
    key = _gang_failed_key(job_id, attempt)
    broker.hset(key, node_name(), why[:500])
    broker.expire(key, GANG_FAILED_TTL_S)


def failed_members(job, nodes: list[str]) -> dict[str, str]:
    """Members of the job's current attempt whose part failed → why (``member_failed``)."""
    raw = broker_redis().hgetall(_gang_failed_key(job.pk, job.attempts))
    found = {k.decode(): v.decode(errors="replace") for k, v in raw.items()}
    return {node: found[node] for node in nodes if node in found}


def leases_here(job) -> list[GpuLease]:
    """This node's leases of the job (a member node's GPUs, leased by its leader)."""
    return list(GpuLease.objects.filter(job=job, node=node_name()))


def record_sweep() -> None:
    """Called by each sweep run (worker side): its count and time, for /metrics and
    ``manage.py healthcheck sweep``."""
    broker = broker_redis()
    broker.incr(SWEEP_RUNS)
    broker.set(SWEEP_LAST, time.time())


def sweep_record(broker) -> tuple[int, float | None]:
    """(sweeps run, when the last one ran in epoch seconds or None) from ``broker``."""
    last = broker.get(SWEEP_LAST)
    return int(broker.get(SWEEP_RUNS) or 0), float(last) if last else None


def last_sweep() -> float | None:
    """When the last sweep ran (epoch seconds), None if never."""
    return sweep_record(broker_redis())[1]
