"""What the worker does while a job's trainer runs (``TrainingWatch.tick``, between
polls of the child process): ingest its metrics, samples and checkpoints, report the
progress with the heartbeat, run the health guard, and stop the trainer — gracefully,
it saves first — on a cancel, a spent quota or a tripped guard; or at once when a node
of its gang stopped answering."""

from __future__ import annotations

import logging
import time

from django.conf import settings
from django.db import close_old_connections

from webapp.jobs import monitor
from webapp.jobs.models import Job
from webapp.lib import health
from webapp.teams import actions as team_actions
from worker.gang import ONE_NODE, Gang
from worker.heartbeat import Heartbeat
from worker.ingest import RunIngest
from worker.runner import TrainerProcess

log = logging.getLogger(__name__)

GRACE_S = 120.0  # after SIGTERM the trainer may finish its step and save before SIGKILL


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
        gang: Gang = ONE_NODE,
    ):
        self.job, self.proc, self.ingest, self.beat, self.gang = job, proc, ingest, beat, gang
        self.gang_lost = ""
        self.step_times: list[tuple[float, int]] = []
        self.tripped: health.Decision | None = None
        self.next_check = time.monotonic() + settings.GAD_GUARD_CHECK_S

    def tick(self) -> None:
        close_old_connections()
        lost = self.gang.lost(self.job) if not self.gang_lost else ""
        if lost:
            # Its ranks wait in a collective for the gone ones (on NCCL until the process
            # group's timeout, two hours): no graceful stop, the job resumes from its
            # last checkpoint.
            self.gang_lost = lost
            log.warning("job %s: %s; stopping its trainer", self.job.pk, lost)
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
