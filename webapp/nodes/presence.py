"""Which workers are alive, and what they offer (``WorkerNode`` rows the workers keep
current; ``worker.presence`` writes them)."""

from __future__ import annotations

import socket
from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from webapp.nodes.models import WorkerNode

REPORT_EVERY_S = 10
LIVE_S = 45  # a worker not heard from for this long is gone


def node_name() -> str:
    """This node's name: ``GAD_NODE_NAME``, else the host name (GPU leases are per node)."""
    return settings.GAD_NODE_NAME or socket.gethostname()


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


def report(name: str, node: str, queues: list[str], gpus: list[int]) -> None:
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
    WorkerNode.objects.filter(name=name).delete()
