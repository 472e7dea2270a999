"""Where a run's numbers go: metrics.jsonl, samples.jsonl and the console.

Recipes get a `MetricsSink` passed in and never know where records end up; the worker may
pass its own sink (e.g. one that also writes to the database).
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import IO, Any, Protocol, TextIO

METRICS_FILE = "metrics.jsonl"
SAMPLES_FILE = "samples.jsonl"


class MetricsSink(Protocol):
    def metrics(self, record: dict[str, Any]) -> None: ...

    def samples(self, record: dict[str, Any]) -> None: ...

    def close(self) -> None: ...


def _clean(value: Any) -> Any:
    """JSON-safe: tensors to floats, non-finite floats to null (JSON has no NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


class NullSink:
    """Writes nothing: the sink of data-parallel ranks other than 0 (trainer.distributed)."""

    def metrics(self, record: dict[str, Any]) -> None:
        pass

    def samples(self, record: dict[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class FanOut:
    """Every record to several sinks: ``metrics.jsonl`` first, then the trackers."""

    def __init__(self, sinks: list[MetricsSink]):
        self.sinks = sinks

    def metrics(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.metrics(record)

    def samples(self, record: dict[str, Any]) -> None:
        for sink in self.sinks:
            sink.samples(record)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()


class JsonlSink:
    """Appends one JSON object per line and flushes, so a tailing reader sees whole lines."""

    def __init__(self, out_dir: str | Path):
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._metrics = open(self.dir / METRICS_FILE, "a", encoding="utf-8")  # noqa: SIM115
        self._samples = open(self.dir / SAMPLES_FILE, "a", encoding="utf-8")  # noqa: SIM115

    def metrics(self, record: dict[str, Any]) -> None:
        self._write(self._metrics, {k: _clean(v) for k, v in record.items()})

    def samples(self, record: dict[str, Any]) -> None:
        self._write(self._samples, record)

    @staticmethod
    def _write(f: IO[str], record: dict[str, Any]) -> None:
        f.write(json.dumps(record, ensure_ascii=False) + "\n")
        f.flush()

    def close(self) -> None:
        self._metrics.close()
        self._samples.close()


def truncate_after(out_dir: str | Path, step: int) -> None:
    """Drop records past `step` (written after the checkpoint a run resumes from), so the
    resumed files read as if the run had never stopped."""
    for name in (METRICS_FILE, SAMPLES_FILE):
        path = Path(out_dir) / name
        if not path.exists():
            continue
        kept = []
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a torn last line from a killed process
            if rec.get("step", 0) <= step and "event" not in rec:
                kept.append(line)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(x + "\n" for x in kept), encoding="utf-8")
        tmp.replace(path)


class Progress:
    """A tqdm bar on a terminal; plain log lines otherwise (worker logs, CI)."""

    SHOWN = ("d/loss", "d/acc", "g/sft_loss", "g/pg_loss", "reward/mean", "len/student_mean")

    def __init__(self, total: int, initial: int = 0, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.total = total
        self.bar: Any = None  # a tqdm bar (tqdm ships no type information)
        if getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=initial, file=self.stream, dynamic_ncols=True)

    def update(self, record: dict[str, Any]) -> None:
        shown = {k: record[k] for k in self.SHOWN if isinstance(record.get(k), float)}
        if self.bar is not None:
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
            self.bar.update(1)
            return
        parts = " ".join(f"{k}={v:.4g}" for k, v in shown.items())
        stamp = time.strftime("%H:%M:%S")
        print(
            f"[{stamp}] step {record['step']}/{self.total} {record['stage']} {parts}",
            file=self.stream,
            flush=True,
        )

    def log(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
