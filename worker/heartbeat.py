"""A running job's heartbeat: its claim kept alive, its GPU leases renewed, its progress
and GPU time written, and a cancel or a spent quota noticed, every few seconds from a
thread of its own, however long a teacher call or a training step takes."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from webapp.jobs import actions
from webapp.jobs.models import Job
from webapp.nodes import actions as node_actions
from worker.claims import Renewal

HEARTBEAT_S = 3.0


class Cancelled(Exception):
    """A member cancelled the job: it ends ``cancelled`` (after the trainer saved)."""


class Paused(Exception):
    """The team's quota is spent: the job pauses, and resumes when the quota allows."""


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
        node_actions.renew(self.job)
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
