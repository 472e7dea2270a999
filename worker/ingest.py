"""Copy what the trainer writes in its run directory into the database, as it appears.

The run directory is the contract (DESIGN.md): metrics.jsonl, samples.jsonl, and
checkpoints/step-N/ directories that appear only complete. Reads are incremental (a
byte offset per file, whole lines only) and the writes (``webapp.jobs.actions``, under
the job's claim) idempotent (upserts keyed by step), so a resumed run that rewrites
steps after its checkpoint simply replaces them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from webapp.jobs import actions, series, storage
from webapp.jobs.models import Job

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")


class JsonlTail:
    """New complete lines of a growing file since the last call."""

    def __init__(self, path: Path):
        self.path = path
        self.offset = 0

    def read(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1  # a line still being written waits for next time
        self.offset += end
        records = []
        for line in data[:end].splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn line from a killed trainer; the resumed run rewrites it
        return records


class RunIngest:
    def __init__(self, job: Job, run_dir: Path):
        self.job = job
        self.run_dir = run_dir
        self.metrics = JsonlTail(run_dir / "metrics.jsonl")
        self.samples = JsonlTail(run_dir / "samples.jsonl")
        self.known_steps = set(job.checkpoints.values_list("step", flat=True))
        self.last: dict = {}  # the newest metrics record
        self.total_steps: int | None = None
        self.stopped_reason: str | None = None

    def poll(self) -> int:
        """Ingest what is new; return how many records and checkpoints were added."""
        if self.total_steps is None:
            self.total_steps = _total_steps(self.run_dir)
        metrics, samples = self.metrics.read(), self.samples.read()
        points = []
        for record in metrics:
            if "event" in record:
                self._event(record)
            elif "step" in record:
                points.append(record)
        if points or samples:
            actions.record_metrics(self.job, points, samples)
        if points:
            # Keep the charts' down-sampled summary current as the points arrive: with a
            # shared cache (GAD_CACHE_URL) the page's first full request then reads
            # nothing but what came after this batch. Only an optimization: a cache
            # outage must not fail the job.
            try:
                series.job_summary(self.job)
            except Exception:
                log.warning(
                    "job %s: could not update the charts' summary", self.job.pk, exc_info=True
                )
        added = self._register_checkpoints()
        if added:
            storage.apply_retention(self.job)  # the team's "keep the last N", if it set one
        if points:
            self.last = points[-1]
        return len(points) + len(samples) + added

    def _event(self, record: dict) -> None:
        if record["event"] == "stopped":
            self.stopped_reason = record.get("reason", "stopped")

    def _register_checkpoints(self) -> int:
        root = self.run_dir / "checkpoints"
        if not root.is_dir():
            return 0
        added = 0
        for entry in sorted(root.iterdir()):
            match = STEP_DIR.match(entry.name)
            if not match or int(match[1]) in self.known_steps:
                continue
            step = int(match[1])
            student = entry / "student"
            if actions.register_checkpoint(self.job, step, str(student), _size(student)) is None:
                continue  # this worker lost the job: its successor registers it
            self.known_steps.add(step)
            added += 1
        return added


def _total_steps(run_dir: Path) -> int | None:
    """From progress.json, which the trainer writes when a run (or a resumed run) starts."""
    try:
        return int(json.loads((run_dir / "progress.json").read_text())["total_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())
