"""One job, start to end: collecting → training → evaluating → succeeded.

Each stage is a function; ``run`` reads top to bottom. State changes go through
``webapp.jobs.actions`` (which refuse them once this worker has lost its claim); a
heartbeat thread keeps the claim alive, renews GPU leases, counts GPU time and notices
a cancel, independently of how long a teacher call or a training step takes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yaml
from django.conf import settings
from django.db import close_old_connections

from trainer.metrics import truncate_after
from trainer.teacher import collect
from webapp.jobs import actions, archive, monitor, references
from webapp.jobs.models import Job, JobAnswer, Status
from webapp.lib import health
from webapp.nodes import presence
from webapp.nodes.models import GpuLease
from webapp.promptsets.models import Prompt, Split, TeacherAnswer
from webapp.teams import actions as team_actions
from worker import leases
from worker.claims import Renewal
from worker.ingest import RunIngest, forget_after
from worker.leases import NoGpu
from worker.paid import paid_call
from worker.runner import (
    Rendezvous,
    TrainerProcess,
    bad_input_message,
    generate_argv,
    has_bad_input,
    log_tail,
    read_answers,
    trainer_argv,
    trainer_env,
    write_prompts,
)

log = logging.getLogger(__name__)

MEMBER_TASK = "gad.run_job_member"
HEARTBEAT_S = 3.0
POLL_S = 2.0
GRACE_S = 120.0  # after SIGTERM the trainer may finish its step and save before SIGKILL


class JobFailed(Exception):
    """Ends the job ``failed`` with this message (shown to members on the job page)."""


class Cancelled(Exception):
    pass


class Paused(Exception):
    pass


class GangLost(Exception):
    """A node of a multi-node job stopped (its worker or the node died, or it never
    joined): the job goes back to the queue and resumes from its last checkpoint."""


class GuardTripped(Exception):
    """The health guard fired: the trainer was stopped (after saving) on its decision."""

    def __init__(self, decision):
        super().__init__(decision.message)
        self.decision = decision


@dataclass
class Workspace:
    root: Path

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def prompts(self) -> Path:
        return self.root / "prompts.jsonl"

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def log(self) -> Path:
        return self.root / "train.log"


def workspace(job: Job) -> Workspace:
    root = archive.job_dir(job)
    root.mkdir(parents=True, exist_ok=True)
    return Workspace(root)


def worker_name() -> str:
    return f"{leases.node_name()}:{os.getpid()}"


# ----------------------------------------------------------------------------- the job


def run(job_id: int) -> str:
    """Run the job if this worker can claim it; return what happened, for the task log."""
    job = Job.objects.filter(pk=job_id).first()
    if job is None or job.status not in actions.ACTIVE_STATUSES:
        return "ended already"
    nodes = job_nodes(job)
    # This node counts even before its worker's first report reached the database.
    here_suffices = nodes == 1 and len(settings.GAD_WORKER_GPUS) >= job.gpus
    no_node = None if here_suffices else presence.gpu_problem(job.gpus, nodes)
    if no_node and nodes > 1:
        # The launch found the nodes; some worker is away (restarting, not up yet): wait.
        raise NoGpu(f"job {job.pk}: {no_node.removeprefix('gpus: ')}")
    if no_node:
        # No live node has that many GPUs: waiting would be forever.
        claimed = actions.claim(job_id, worker_name(), settings.GAD_HEARTBEAT_STALE_S)
        if claimed is not None:
            actions.finish(
                claimed, Status.FAILED, error="This job" + no_node.removeprefix("gpus: this job")
            )
        return "no node has the GPUs"
    held = _lease_gpus(job, nodes)
    here = leases.node_name()
    devices = [lease.gpu_index for lease in held if lease.node == here]
    gang = Gang.of(held, here)
    job = actions.claim(job_id, worker_name(), settings.GAD_HEARTBEAT_STALE_S)
    if job is None:
        leases.release(held)
        return "claimed by another worker, or cancelled"
    beat = Heartbeat(job, gpus=len(held))
    beat.start()
    space = workspace(job)
    unexpected = None
    try:
        try:
            collect_answers(job, beat)
            export_prompts(job, space)
            train(job, space, devices, beat, gang)
            evaluate(job, space, devices, beat)
            status, error, outcome = Status.SUCCEEDED, "", "succeeded"
        except Cancelled:
            status, error, outcome = Status.CANCELLED, "", "cancelled"
        except Paused as paused:
            actions.pause(job, str(paused))
            return "paused"
        except GangLost as lost:
            log.warning("job %s: %s; back to the queue", job.pk, lost)
            if actions.requeue(job, str(lost), settings.GAD_JOB_MAX_ATTEMPTS):
                return "requeued: a node of its gang was lost"
            return "failed: its gang was lost too many times"
        except GuardTripped as tripped:
            if tripped.decision.action == "pause":
                actions.guard_pause(job, tripped.decision.message)
                return "paused by the health guard"
            status, error, outcome = Status.FAILED, str(tripped), "stopped by the health guard"
        except JobFailed as failed:
            status, error, outcome = Status.FAILED, str(failed), "failed"
        except Exception as exc:
            status, error, outcome = Status.FAILED, traceback.format_exc(), "crashed"
            unexpected = exc
        actions.finish(job, status, error=error, log_tail=log_tail(space.log))
        if unexpected is not None:
            raise unexpected
        return outcome
    finally:
        beat.stop()
        leases.release(held)


def job_nodes(job: Job) -> int:
    """The nodes a GPU job spans (its config's ``nodes``); a CPU job runs on one."""
    return max(1, int(job.config.get("nodes") or 1)) if job.gpus > 0 else 1


def _lease_gpus(job: Job, nodes: int) -> list[GpuLease]:
    if job.gpus == 0:
        return []
    if nodes > 1:
        held = leases.acquire_gang(job, nodes, job.gpus)
        if held is None:
            raise NoGpu(
                f"job {job.pk} needs {job.gpus} free GPU(s) on each of {nodes} nodes, this "
                "one among them; not all are free (none is held while it waits)"
            )
        return held
    held = leases.acquire(job, settings.GAD_WORKER_GPUS, job.gpus)
    if held is None:
        raise NoGpu(f"job {job.pk} needs {job.gpus} GPU(s); this node has none free")
    return held


@dataclass(frozen=True)
class Gang:
    """The other nodes of a multi-node job (empty for one node), in node-rank order."""

    members: tuple[str, ...] = ()

    @classmethod
    def of(cls, held: list[GpuLease], here: str) -> Gang:
        return cls(tuple(sorted({lease.node for lease in held} - {here})))

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
                args=[job.pk, job.worker, self.nodes, rank, addr, port],
                queue=leases.node_queue(node),
            )
        return Rendezvous(self.nodes, 0, addr, port)


class Heartbeat:
    """The job's claim, kept alive by a ``worker.claims.Renewal`` beating every few
    seconds (which also renews the GPU leases and carries the progress); ``cancelled``
    turns true when the user cancels or the claim is lost.

    The beats go on after a cancel, while the trainer saves its last checkpoint: a
    job whose heartbeat stopped would look dead to the sweep.

    It also keeps the job's GPU time: the seconds spent inside ``gpu_time()`` times the
    job's GPUs, added to the job at each beat and, for the last part, when the block
    ends, so that a job shorter than one beat is charged too.
    """

    def __init__(self, job: Job, gpus: int, clock: Callable[[], float] = time.monotonic):
        self.job = job
        self.gpus = gpus
        self.clock = clock
        self.cancelled = False
        # Why the job must pause (its team's GPU-hours are spent), found at a beat.
        self.over_quota: str | None = None
        self.progress: dict = {}
        self._lock = threading.Lock()
        self._counting_since: float | None = None
        self._uncharged_s = 0.0
        self._not_yet_charged_s = 0.0  # GPU-seconds beaten since the last charge
        self._renewal = Renewal(self._beat, HEARTBEAT_S, f"heartbeat-{job.pk}")

    def start(self) -> None:
        self._renewal.start()

    def stop(self) -> None:
        self._renewal.stop()

    def _beat(self) -> bool:
        gpu_s = self._take_gpu_seconds()
        self.cancelled = actions.beat(self.job, gpu_seconds=gpu_s, **self.progress)
        self._not_yet_charged_s += gpu_s
        # The charge takes a row lock: only once a minute's worth has accrued.
        if self._not_yet_charged_s >= actions.CHARGE_EVERY_S:
            self._not_yet_charged_s = 0.0
            self.over_quota = self.over_quota or actions.charge_running(self.job)
        leases.renew(self.job)
        return True  # beat on, cancelled or not (see the class's docstring)

    @contextmanager
    def gpu_time(self) -> Iterator[None]:
        """Count the job's GPUs as busy for the duration of the block."""
        with self._lock:
            self._counting_since = self.clock()
        try:
            yield
        finally:
            with self._lock:
                self._uncharged_s += self.clock() - self._counting_since
                self._counting_since = None
            actions.beat(self.job, gpu_seconds=self._take_gpu_seconds())

    def _take_gpu_seconds(self) -> float:
        with self._lock:
            now = self.clock()
            if self._counting_since is not None:
                self._uncharged_s += now - self._counting_since
                self._counting_since = now
            seconds, self._uncharged_s = self._uncharged_s, 0.0
        return self.gpus * seconds

    @property
    def stopping(self) -> bool:
        return self.cancelled or self.over_quota is not None

    def check(self) -> None:
        if self.cancelled:
            raise Cancelled()
        if self.over_quota is not None:
            raise Paused(self.over_quota)


# ----------------------------------------------------------------------------- collecting


def collect_answers(job: Job, beat: Heartbeat) -> None:
    """Ask the teacher for the training prompts that have no answer yet."""
    missing = Prompt.objects.filter(
        prompt_set=job.prompt_set, split=Split.TRAIN, teacher_response__isnull=True
    )
    if job.prompt_set is None:
        raise JobFailed("The job's prompt set was deleted; run the job again with another one.")
    if not missing.exists():
        return
    if job.teacher is None:
        raise JobFailed("Some training prompts have no teacher answer and the job has no teacher.")
    actions.advance(job, Status.COLLECTING, stage="collecting")
    messages = list(missing.values_list("messages", flat=True).iterator())

    def progress(summary, orm) -> None:
        beat.check()
        beat.progress = {"step": summary.cached + summary.answered, "total_steps": summary.total}

    paid = paid_call(
        job.teacher,
        job.team,
        lambda spec, store, limits, on_progress: collect(
            messages, spec, store, limits, on_progress=on_progress
        ),
        job=job,
        on_progress=progress,
    )
    if paid.kind == "budget":
        raise Paused("Paused: the team's teacher tokens for this month are spent.")
    if paid.kind == "refused":
        raise JobFailed(paid.error)
    if paid.kind == "failed":
        raise JobFailed(f"Collecting teacher answers stopped: {paid.failure}")
    summary = paid.result
    assert summary is not None  # ran to the end
    log.info("job %s: %s", job.pk, summary.line())
    if summary.stopped == "budget":
        raise Paused(f"Paused: the team's teacher token budget ran out ({summary.line()}).")
    if summary.failed:
        raise JobFailed(
            f"{summary.failed} prompts got no answer after retries ({summary.line()}); "
            "run the job again to ask only for those."
        )


# ----------------------------------------------------------------------------- training


def export_prompts(job: Job, space: Workspace) -> int:
    """Write the training prompts with their teacher answers; unusable ones are left out."""
    fingerprint = job.teacher.fingerprint if job.teacher else None
    rows = Prompt.objects.filter(prompt_set=job.prompt_set, split=Split.TRAIN).order_by("index")
    written = 0
    tmp = space.prompts.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for chunk in _chunks(rows.values_list("pk", "messages", "teacher_response", "prompt_hash")):
            collected = _collected(fingerprint, [r[3] for r in chunk if r[2] is None])
            for pk, messages, teacher, key in chunk:
                answer = teacher if teacher is not None else collected.get(key)
                if answer is None:
                    continue  # flagged (empty, cut, refused): never trained on silently
                out.write(
                    json.dumps({"id": str(pk), "messages": messages, "teacher_response": answer})
                    + "\n"
                )
                written += 1
    tmp.replace(space.prompts)
    if written == 0:
        raise JobFailed(
            "No training prompt has a usable teacher answer (all were empty, cut or refused)."
        )
    return written


def _chunks(rows, size: int = 2000):
    chunk = []
    for row in rows.iterator(chunk_size=size):
        chunk.append(row)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _collected(fingerprint: str | None, hashes: list[str]) -> dict[str, str]:
    if not fingerprint or not hashes:
        return {}
    return dict(
        TeacherAnswer.objects.filter(
            fingerprint=fingerprint, prompt_hash__in=hashes, flag="ok"
        ).values_list("prompt_hash", "response")
    )


def write_config(job: Job, space: Workspace) -> None:
    config = {**job.config, "train_file": str(space.prompts), "output_dir": str(space.run_dir)}
    config["resume"] = "auto"
    # The student is checked again right before it is loaded: the stored config could have
    # been changed in the database since the launch.
    try:
        config["student"] = references.resolve(job.config.get("student", ""), job.team)
    except references.InvalidReference as refused:
        raise JobFailed(str(refused)) from None
    space.config.write_text(yaml.safe_dump(config, sort_keys=False))


def resume_step(run_dir: Path) -> int:
    """The step the trainer resumes from (``resume: auto``): its latest checkpoint that
    retention kept resumable."""
    from trainer.checkpoint import latest_checkpoint

    latest = latest_checkpoint(run_dir)
    return int(latest.name.removeprefix("step-")) if latest is not None else 0


def train(
    job: Job, space: Workspace, devices: list[int], beat: Heartbeat, gang: Gang = Gang()
) -> None:
    write_config(job, space)
    start = resume_step(space.run_dir)
    # Records past the checkpoint this attempt resumes from are replayed by the trainer:
    # drop them from the files and the database first, so nothing counts twice.
    truncate_after(space.run_dir, start)
    forget_after(job, start)
    # Collecting reported teacher answers through step / total_steps: training starts
    # with neither (the trainer reports its own), in stage "starting", also for a job
    # re-queued while it was collecting.
    fields: dict = {"stage": job.stage, "step": start}
    if job.stage in ("", "collecting"):
        fields.update(stage="starting", total_steps=None)
    actions.advance(job, Status.TRAINING, **fields)
    beat.progress = {}
    env = trainer_env(",".join(map(str, devices)))
    rendezvous = gang.start(job) if gang.members else None
    argv = trainer_argv(space.config, len(devices), rendezvous)
    launcher = len(devices) > 1 or rendezvous is not None
    proc = TrainerProcess(argv, space.root, space.log, env, launcher=launcher)
    watch = TrainingWatch(job, proc, RunIngest(job, space.run_dir), beat, gang)
    try:
        with beat.gpu_time():
            code = proc.watch(watch.tick, POLL_S)
    finally:
        watch.ingest.poll()
    watch.report()
    if beat.progress:  # the last of it, which the next beat would have carried
        actions.beat(job, **beat.progress)
    if watch.tripped is not None:
        raise GuardTripped(watch.tripped)
    if watch.gang_lost or (code != 0 and gang.members and not beat.stopping):
        lost = _lost_members(job, gang)
        presence.forget(lost)  # not chosen again until its worker reports itself
        if lost or watch.gang_lost:
            raise GangLost(watch.gang_lost or f"node(s) {', '.join(lost)} of the job were lost")
    beat.check()  # cancelled, or the GPU-hours ran out: the trainer stopped after saving
    if code == 2 or (code == 1 and proc.launcher and has_bad_input(space.log)):
        # torchrun exits 1 when a rank exits 2 (bad input): the rank's message is the point.
        raise JobFailed(bad_input_message(space.log))
    if code != 0 and gang.members and not has_bad_input(space.log):
        # The collectives failed with every member alive (a network fault, a rank's
        # crash): retried like a lost gang, bounded by GAD_JOB_MAX_ATTEMPTS.
        raise GangLost(f"the trainer exited with status {code} on a {gang.nodes}-node gang")
    if code != 0:
        raise JobFailed(
            f"The trainer exited with status {code}. Its last lines:\n{log_tail(space.log)}"
        )


class TrainingWatch:
    """What the worker does while the trainer runs: ingest its metrics, samples and
    checkpoints, report progress with the heartbeat, run the health guard, and stop
    the trainer (gracefully: it saves first) on a cancel or a tripped guard."""

    def __init__(
        self,
        job: Job,
        proc: TrainerProcess,
        ingest: RunIngest,
        beat: Heartbeat,
        gang: Gang = Gang(),
    ):
        self.job, self.proc, self.ingest, self.beat, self.gang = job, proc, ingest, beat, gang
        self.gang_lost = ""
        self.step_times: list[tuple[float, int]] = []
        self.tripped: health.Decision | None = None
        self.next_check = time.monotonic() + settings.GAD_GUARD_CHECK_S

    def tick(self) -> None:
        close_old_connections()
        lapsed = leases.lapsed_nodes(self.job, list(self.gang.members)) if self.gang.members else []
        if lapsed and not self.gang_lost:
            # Its ranks are stuck in a collective with the lost ones: no graceful stop.
            self.gang_lost = f"node(s) {', '.join(lapsed)} of the job stopped answering"
            log.warning("job %s: %s; stopping its trainer", self.job.pk, self.gang_lost)
            self.proc.kill()
            return
        saved = len(self.ingest.known_steps)
        self.ingest.poll()
        if len(self.ingest.known_steps) != saved:  # a new checkpoint: is storage full?
            full = team_actions.storage_full(self.job.team)
            if full and self.beat.over_quota is None:
                self.beat.over_quota = f"Paused: {full}"
        self.report()
        if self.beat.stopping or self.tripped is not None:
            self.proc.terminate()  # the trainer finishes its step, saves, exits
            if self.proc.kill_if_overdue(GRACE_S):
                log.warning("job %s: trainer ignored SIGTERM for %ss; killed", self.job.pk, GRACE_S)
        elif self.job.guard != "off" and time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + settings.GAD_GUARD_CHECK_S
            self.tripped = monitor.guard_check(self.job, self.job.guard)
            if self.tripped is not None:
                with open(self.proc.log_path, "a", encoding="utf-8") as f:
                    f.write(f"[health guard] {self.tripped.message}\n")

    def report(self) -> None:
        """The last ingested step, its stage and the ETA, carried by the next beat."""
        last = self.ingest.last
        if not last:
            return
        step = int(last["step"])
        self.step_times = (self.step_times + [(time.monotonic(), step)])[-20:]
        self.beat.progress = {
            "step": step,
            "stage": last.get("stage", ""),
            "total_steps": self.ingest.total_steps,
            "eta_seconds": _eta(self.step_times, self.ingest.total_steps),
            "log_tail": self.proc.tail(),
        }


def _eta(points: list[tuple[float, int]], total: int | None) -> int | None:
    if not total or len(points) < 2 or points[-1][1] == points[0][1]:
        return None
    rate = (points[-1][1] - points[0][1]) / (points[-1][0] - points[0][0])
    return max(0, round((total - points[-1][1]) / rate))


def _lost_members(job: Job, gang: Gang) -> list[str]:
    """After a multi-node attempt failed: which member nodes died. A member whose part
    ended gives its leases back; a dead one leaves them to lapse. Waits until each
    member did one or the other (at most a lease's life)."""
    members = list(gang.members)
    deadline = time.monotonic() + leases.LEASE_S + 5
    while leases.holding_nodes(job, members) and time.monotonic() < deadline:
        time.sleep(1.0)
    return leases.lapsed_nodes(job, members)


def run_member(job_id: int, claim: str, nodes: int, node_rank: int, addr: str, port: int) -> str:
    """This node's part of a multi-node job whose leading worker (``claim``) leased GPUs
    here: its torchrun joins the rendezvous, and runs while the leader's claim holds.
    Renewing this node's leases is how the leader knows this node is alive."""
    here = leases.node_name()
    job = Job.objects.filter(pk=job_id, worker=claim, status__in=actions.ACTIVE_STATUSES).first()
    held = list(GpuLease.objects.filter(job_id=job_id, node=here))
    if job is None or not held:
        return "the gang has moved on"
    leases.renew(job)  # check in at once: the leader gives up on nodes that do not
    space = workspace(job)
    devices = sorted(lease.gpu_index for lease in held)
    argv = trainer_argv(space.config, len(devices), Rendezvous(nodes, node_rank, addr, port))
    env = trainer_env(",".join(map(str, devices)))
    log_path = space.root / f"train-node{node_rank}-{here}.log"
    proc = TrainerProcess(argv, space.root, log_path, env, launcher=True)

    def tick() -> None:
        close_old_connections()
        leases.renew(job)
        row = Job.objects.filter(pk=job_id).values("worker", "status").first()
        if row is None or row["worker"] != claim or row["status"] not in actions.ACTIVE_STATUSES:
            proc.kill()  # the leader ended this attempt (or lost its claim)

    try:
        code = proc.watch(tick, POLL_S)
    finally:
        leases.release_node(job)  # "ended", as opposed to lapsed leases: "died"
    return f"node {node_rank} of job {job_id}: torchrun exited with status {code}"


# ----------------------------------------------------------------------------- evaluating


def evaluate(job: Job, space: Workspace, devices: list[int], beat: Heartbeat) -> None:
    """Answer the held-out prompts with the final checkpoint (greedy), if there are some,
    on the job's GPUs."""
    test = Prompt.objects.filter(prompt_set=job.prompt_set, split=Split.TEST).order_by("index")
    if not test.exists():
        return
    actions.advance(job, Status.EVALUATING, stage="evaluating")
    prompts, answers = space.root / "test.jsonl", space.root / "test-answers.jsonl"
    write_prompts(prompts, test.values_list("pk", "messages").iterator())
    max_tokens = job.config.get("max_response_tokens", 1536)
    argv = generate_argv(space.run_dir / "final", prompts, answers, max_tokens)
    # On the job's own GPUs (none for a CPU job), never on one another job holds.
    env = trainer_env(",".join(map(str, devices)))
    proc = TrainerProcess(argv, space.root, space.log, env)
    with beat.gpu_time():
        code = proc.watch(beat.check, POLL_S)
    if code != 0:
        raise JobFailed(f"Generating answers on the test prompts failed:\n{log_tail(space.log)}")
    JobAnswer.objects.bulk_create(
        [
            JobAnswer(job=job, prompt_id=pk, response=text, finish_reason=finish)
            for pk, text, finish in read_answers(answers)
        ],
        update_conflicts=True,
        unique_fields=["job", "prompt"],
        update_fields=["response", "finish_reason"],
    )
