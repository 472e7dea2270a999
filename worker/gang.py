"""A job's GPUs, and a multi-node job's gang: the other nodes' workers, each running its
part of the job (one torchrun per node, meeting at node 0's rendezvous).

The leading worker (the one that claimed the job) leases GPUs on every node at once,
all or nothing (``webapp.nodes.actions.acquire_gang``), and sends each member node its
part on that node's own queue. A member renews its node's leases while its torchrun
runs: leases that lapse tell the leader the node died, and the job goes back to the
queue to resume from its last checkpoint.
"""

from __future__ import annotations

import os
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
from worker import hub_cache
from worker.leases import NoGpu, node_queue
from worker.runner import Exit, Rendezvous, TrainerProcess, trainer_argv, trainer_env
from worker.sandbox import Sandbox, SandboxUnavailable
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

    def start(self, job: Job, devices: list[int]) -> Rendezvous:
        """Send each member node its part of the job; return node 0's rendezvous (on
        ``devices``, this node's GPUs of the job)."""
        from webapp.celery import app

        addr = node_address()
        port = store_port(devices)
        for rank, node in enumerate(self.members, start=1):
            app.send_task(
                MEMBER_TASK,
                args=[job.pk, job.claimed_by, self.nodes, rank, addr, port, job.attempts],
                queue=node_queue(node),
            )
        return Rendezvous(self.nodes, 0, addr, port)

    def lost(self, job: Job) -> str:
        """Why the gang cannot go on while the trainer runs ("" while it can): a member's
        part failed (it says so before giving its leases back), or a member's leases
        lapsed (its worker or its node died; within ``LEASE_S``)."""
        if not self.members:
            return ""
        failed = self._failed(job)
        if failed:
            return failed
        lapsed = presence.lapsed_nodes(job, list(self.members))
        return f"node(s) {', '.join(lapsed)} of the job stopped answering" if lapsed else ""

    def _failed(self, job: Job) -> str:
        failed = presence.failed_members(job, list(self.members))
        return "; ".join(
            f"node {node}'s part of the job failed: {why}" for node, why in failed.items()
        )

    def check_after(self, job: Job, exit: Exit, lost: str, stopping: bool) -> None:
        """After the trainer ended: raise GangLost when a member died or its part failed
        (``lost``: the watch saw it and killed the trainer; or the trainer failed, not by
        a stop, and a member's part failed or its leases lapse). A dead node is not chosen
        again until its worker reports itself."""
        if not lost and (exit.ok or not self.members or stopping):
            return
        dead = self._lost_members(job)
        node_actions.forget(dead)
        lost = lost or self._failed(job)
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


class GangRefused(Exception):
    """This node's network settings cannot host a multi-node job; the message says what
    to set."""


# The interfaces NCCL and gloo open their connections on, where the site pins them.
IFNAME_SETTINGS = ("NCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME")


def node_address() -> str:
    """The address the other nodes reach this node's rendezvous store at.

    ``GAD_NODE_ADDR`` when set; else the address of the interface NCCL/gloo are pinned
    to; else the address this node reaches the broker from (the cluster's network).
    Never what ``gethostbyname(gethostname())`` gives on Debian and Ubuntu, whose
    /etc/hosts maps the host name to 127.0.1.1: the other nodes would connect to
    themselves. Raises GangRefused when a pinned interface does not exist here or does
    not carry GAD_NODE_ADDR."""
    pinned = {name: os.environ[name] for name in IFNAME_SETTINGS if os.environ.get(name)}
    found = {}
    for name, value in pinned.items():
        interface = value.lstrip("^=").split(",")[0]
        if value.startswith("^"):
            continue  # an exclusion list: nothing to check
        address = interface_address(interface)
        if address is None:
            raise GangRefused(
                f"{name}={value}, but this node has no interface {interface!r} with an IPv4 "
                "address; set it to the interface of the network between the GPU nodes "
                '(docs/deployment.md, "Multi-node network").'
            )
        found[name] = address
    wanted = settings.GAD_NODE_ADDR
    if wanted and found and wanted not in found.values():
        raise GangRefused(
            f"GAD_NODE_ADDR={wanted} is not on the interface "
            f"{', '.join(f'{k}={pinned[k]}' for k in found)} pins NCCL/gloo to "
            f"({', '.join(sorted(set(found.values())))}); set one or the other."
        )
    return wanted or next(iter(found.values()), None) or outward_address()


def interface_address(name: str) -> str | None:
    """An interface's IPv4 address (SIOCGIFADDR), or None."""
    import fcntl
    import struct

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(packed[20:24])


def outward_address() -> str:
    """This node's source address towards the broker (a UDP "connect" sends nothing)."""
    from urllib.parse import urlsplit

    from webapp.celery import app

    parts = urlsplit(str(app.conf.broker_url))
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    try:
        target = socket.getaddrinfo(host, port, socket.AF_INET, socket.SOCK_DGRAM)[0][4]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(target)
            return s.getsockname()[0]
    except OSError:
        return "127.0.0.1"


def store_port(devices: list[int]) -> int:
    """Rank 0's store port: ``GAD_GANG_PORT_BASE`` + this node's first GPU of the job.
    Two gangs never lead from the same GPU at once (leases are exclusive), so the port
    is the job's for as long as it holds the GPU: no free port probed, closed and
    hoped for (a race), and one fixed range for the firewall."""
    return settings.GAD_GANG_PORT_BASE + min(devices, default=0)


ONE_NODE = Gang()  # a job on one node: no member


def run_member(
    job_id: int, claim: str, nodes: int, node_rank: int, addr: str, port: int, attempt: int
) -> str:
    """This node's part of a multi-node job whose leading worker (``claim``, in the job's
    ``attempt``) leased GPUs here: its torchrun joins the rendezvous, and runs while the
    leader's claim holds. Renewing this node's leases is how the leader knows this node
    is alive; a part that fails says so before it gives them back, and the leader stops
    the job's other ranks at once."""
    job = Job.objects.filter(pk=job_id).first()
    held = presence.leases_here(job) if job is not None else []
    if job is None or (job.claimed_by, job.attempts) != (claim, attempt):
        return "the gang has moved on"
    if not held or not actions.still_held(job):
        return "the gang has moved on"
    node_actions.renew(job)  # check in at once: the leader gives up on nodes that do not
    space = workspace(job)
    devices = sorted(lease.gpu_index for lease in held)
    argv = trainer_argv(space.config, len(devices), Rendezvous(nodes, node_rank, addr, port))
    env = trainer_env(",".join(map(str, devices)))
    log_path = space.root / f"train-node{node_rank}-{node_name()}.log"
    # The student: what node 0's worker checked (it fails the job when it no longer may).
    try:
        student = hub_cache.readable(job.student_path)
        box = Sandbox(writable=(space.root,), readable=student, network=True)
        proc = TrainerProcess(argv, space.root, log_path, env, launcher=True, sandbox=box)
    except (SandboxUnavailable, hub_cache.NotFetched) as failed:
        presence.member_failed(job_id, attempt, f"it could not start: {failed}")
        node_actions.release_node(job)
        return f"node {node_rank} of job {job_id} could not start: {failed}"
    moved_on = False

    def tick() -> None:
        nonlocal moved_on
        close_old_connections()
        node_actions.renew(job)
        if not actions.still_held(job):
            moved_on = True
            proc.kill()  # the leader ended this attempt (or lost its claim)

    code = None
    try:
        code = proc.watch(tick, POLL_S).code
    finally:
        if code != 0 and not moved_on:  # a rank crashed here, or this worker is stopping
            why = (
                f"torchrun exited with status {code}" if code is not None else "its worker stopped"
            )
            presence.member_failed(job_id, attempt, f"{why} (log: {log_path.name})")
        node_actions.release_node(job)  # "ended", as opposed to lapsed leases: "died"
    return f"node {node_rank} of job {job_id}: torchrun exited with status {code}"
