"""Copy what the trainer writes in its run directory into the database, as it appears.

The run directory is the contract (DESIGN.md): metrics.jsonl, samples.jsonl, and
checkpoints/step-N/ directories that appear only complete. Reads are incremental (a
byte offset per file, whole lines only) and writes idempotent (upserts keyed by step),
so a resumed run that rewrites steps after its checkpoint simply replaces them.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

from django.db import transaction

from webapp.jobs import series
from webapp.jobs.models import Checkpoint, Job, MetricPoint, Sample

log = logging.getLogger(__name__)

STEP_DIR = re.compile(r"^step-(\d+)$")
CONTEXT_KEYS = {"step", "stage", "time"}


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
        with transaction.atomic():
            self._upsert_metrics(points)
            self._add_samples(samples)
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
        if points:
            self.last = points[-1]
        return len(points) + len(samples) + added

    def _event(self, record: dict) -> None:
        if record["event"] == "stopped":
            self.stopped_reason = record.get("reason", "stopped")

    def _upsert_metrics(self, records: list[dict]) -> None:
        rows = [
            MetricPoint(
                job=self.job,
                step=r["step"],
                stage=r.get("stage", ""),
                time=r.get("time"),
                values={k: v for k, v in r.items() if k not in CONTEXT_KEYS},
            )
            for r in records
        ]
        MetricPoint.objects.bulk_create(
            rows,
            batch_size=500,
            update_conflicts=True,
            unique_fields=["job", "step", "stage"],
            update_fields=["time", "values"],
        )

    def _add_samples(self, records: list[dict]) -> None:
        rows = [
            Sample(job=self.job, step=r["step"], stage=r.get("stage", ""), data=_sample_data(r))
            for r in records
            if "step" in r
        ]
        Sample.objects.bulk_create(rows, batch_size=200)

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
            stage = (
                MetricPoint.objects.filter(job=self.job, step=step)
                .values_list("stage", flat=True)
                .first()
            ) or ""
            Checkpoint.objects.update_or_create(
                job=self.job,
                step=step,
                defaults={"path": str(student), "stage": stage, "size_bytes": _size(student)},
            )
            self.known_steps.add(step)
            added += 1
        return added


def _total_steps(run_dir: Path) -> int | None:
    """From progress.json, which the trainer writes when a run (or a resumed run) starts."""
    try:
        return int(json.loads((run_dir / "progress.json").read_text())["total_steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _sample_data(record: dict) -> dict:
    return {k: scrub(v) for k, v in record.items() if k not in CONTEXT_KEYS}


def scrub(value):
    """PostgreSQL's JSON cannot hold NUL characters, which an untrained model may emit."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items()}
    return value


def _size(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def forget_after(job: Job, step: int) -> None:
    """Drop rows past the checkpoint a run resumes from: the resumed run rewrites them."""
    MetricPoint.objects.filter(job=job, step__gt=step).delete()
    Sample.objects.filter(job=job, step__gt=step).delete()
