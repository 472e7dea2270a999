"""A job's GPUs, and a multi-node job's gang: the other nodes' workers, each running its
part of the job (one torchrun per node, meeting at node 0's rendezvous).

The leading worker (the one that claimed the job) leases GPUs on every node at once,
all or nothing (``webapp.nodes.actions.acquire_gang``), and sends each member node its
part on that node's own queue. A member renews its node's leases while its torchrun
runs: leases that lapse tell the leader the node died, and the job goes back to the
queue to resume from its last checkpoint.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import close_old_connections

from webapp.claims import node_name
from webapp.jobs import actions
from webapp.jobs.models import Job
from webapp.nodes import actions as node_actions
from webapp.nodes import presence
from webapp.nodes.models import GpuLease
from worker.leases import NoGpu, node_queue
from worker.runner import Exit, Rendezvous, TrainerProcess, trainer_argv, trainer_env
from worker.workspace import workspace

MEMBER_TASK = "gad.run_job_member"
POLL_S = 2.0


class GangLost(Exception):
    """A node of a multi-node job stopped (its worker or the node died, or it never
    joined): the job goes back to the queue and resumes from its last checkpoint."""


def lease_gpus(job: Job) -> list[GpuLease]:
    """The job's GPUs: ``job.gpus`` on this node, or on each of its ``job.nodes`` nodes
    (this one first); none for a CPU job. Raises NoGpu when they are not all free."""
    if job.gpus == 0:
        return []
    if job.nodes > 1:
        held = node_actions.acquire_gang(job, job.nodes, job.gpus)
        if held is None:
            raise NoGpu(
                f"job {job.pk} needs {job.gpus} free GPU(s) on each of {job.nodes} nodes, "
                "this one among them; not all are free (none is held while it waits)"
            )
        return held
    held = node_actions.acquire(job, settings.GAD_WORKER_GPUS, job.gpus)
    if held is None:
        raise NoGpu(f"job {job.pk} needs {job.gpus} GPU(s); this node has none free")
    return held


@dataclass(frozen=True)
class Gang:
    """The other nodes of a multi-node job (empty for one node), in node-rank order."""

    members: tuple[str, ...] = ()

    @classmethod
    def of(cls, held: list[GpuLease]) -> Gang:
        return cls(tuple(sorted({lease.node for lease in held} - {node_name()})))

    @property
    def nodes(self) -> int:
        return len(self.members) + 1

    def start(self, job: Job) -> Rendezvous:
        """Send each member node its part of the job; return node 0's rendezvous."""
        from webapp.celery import app

        addr = settings.GAD_NODE_ADDR or socket.gethostbyname(socket.gethostname())
        with socket.socket() as probe:  # a free port for rank 0's store
            probe.bind(("", 0))
            port = probe.getsockname()[1]
        for rank, node in enumerate(self.members, start=1):
            app.send_task(
                MEMBER_TASK,
                args=[job.pk, job.claimed_by, self.nodes, rank, addr, port],
                queue=node_queue(node),
            )
        return Rendezvous(self.nodes, 0, addr, port)

    def lapsed(self, job: Job) -> list[str]:
        """Members whose leases lapsed: their worker stopped renewing them (it died)."""
        return presence.lapsed_nodes(job, list(self.members)) if self.members else []

    def check_after(self, job: Job, exit: Exit, lost: str, stopping: bool) -> None:
        """After the trainer ended: raise GangLost when a member died (``lost``: the watch
        saw it and killed the trainer; or the trainer failed, not by a stop, and a
        member's leases lapse). A dead node is not chosen again until its worker reports
        itself."""
        if not lost and (exit.ok or not self.members or stopping):
            return
        dead = self._lost_members(job)
        node_actions.forget(dead)
        if dead or lost:
            raise GangLost(lost or f"node(s) {', '.join(dead)} of the job were lost")

    def _lost_members(self, job: Job) -> list[str]:
        """Which members died. A member whose part ended gives its leases back; a dead
        one leaves them to lapse. Waits until each member did one or the other (at most
        a lease's life)."""
        members = list(self.members)
        deadline = time.monotonic() + node_actions.LEASE_S + 5
        while presence.holding_nodes(job, members) and time.monotonic() < deadline:
            time.sleep(1.0)
        return presence.lapsed_nodes(job, members)


ONE_NODE = Gang()  # a job on one node: no member


def run_member(job_id: int, claim: str, nodes: int, node_rank: int, addr: str, port: int) -> str:
    """This node's part of a multi-node job whose leading worker (``claim``) leased GPUs
    here: its torchrun joins the rendezvous, and runs while the leader's claim holds.
    Renewing this node's leases is how the leader knows this node is alive."""
    job = Job.objects.filter(pk=job_id).first()
    held = presence.leases_here(job) if job is not None else []
    if job is None or job.claimed_by != claim or not held or not actions.still_held(job):
        return "the gang has moved on"
    node_actions.renew(job)  # check in at once: the leader gives up on nodes that do not
    space = workspace(job)
    devices = sorted(lease.gpu_index for lease in held)
    argv = trainer_argv(space.config, len(devices), Rendezvous(nodes, node_rank, addr, port))
    env = trainer_env(",".join(map(str, devices)))
    log_path = space.root / f"train-node{node_rank}-{node_name()}.log"
    proc = TrainerProcess(argv, space.root, log_path, env, launcher=True)

    def tick() -> None:
        close_old_connections()
        node_actions.renew(job)
        if not actions.still_held(job):
            proc.kill()  # the leader ended this attempt (or lost its claim)

    try:
        code = proc.watch(tick, POLL_S).code
    finally:
        node_actions.release_node(job)  # "ended", as opposed to lapsed leases: "died"
    return f"node {node_rank} of job {job_id}: torchrun exited with status {code}"
