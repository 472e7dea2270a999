"""Metric series of a job, as the REST API and the job page both serve them.

``metrics_payload`` is the one function behind ``GET /api/v1/jobs/{id}/metrics`` and the
page's session-authenticated ``metrics.json``, so the two never diverge:

    {"series": {name: [[step, value], ...]}, "stages": [[first_step, stage], ...],
     "last_step": N}

- The full request (no ``after_step``, or ``after_step <= 0``) down-samples each
  series to at most ``limit`` points (``downsample.py``).
- An incremental request (``after_step=N``) returns the raw points after step N; only a
  client that fell far behind (more than ``limit`` new points in a series) gets them
  down-sampled too.

Reading 100,000 rows of JSON costs seconds (measured in bench/metrics_api.py), so the
full request keeps one ``JobSummary`` per job in Django's cache and reads only the rows
past the step it covers. The summary remembers the id and time of the row at its last
step: a resumed run deletes and rewrites the steps after its checkpoint, and a summary
that covered them is then thrown away and rebuilt.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from django.core.cache import cache

from webapp.jobs.models import Job, MetricPoint
from webapp.lib.downsample import DEFAULT_LIMIT, SeriesSummary, downsample

SUMMARY_VERSION = 1
SUMMARY_TIMEOUT_S = 24 * 3600
READ_CHUNK = 5000


@dataclass
class JobSummary:
    limit: int
    through_step: int = 0
    marker: tuple | None = None  # (id, time) of the row at through_step
    stages: list[list] = field(default_factory=list)
    series: dict[str, SeriesSummary] = field(default_factory=dict)

    def add(self, chunk: dict[str, list], stages: list[list]) -> None:
        for name, points in chunk.items():
            summary = self.series.get(name)
            if summary is None:
                summary = self.series[name] = SeriesSummary(limit=self.limit)
            summary.extend(points)
        for first_step, stage in stages:
            if not self.stages or self.stages[-1][1] != stage:
                self.stages.append([first_step, stage])


def metrics_payload(job: Job, after_step: int = -1, limit: int = DEFAULT_LIMIT) -> dict:
    """The job's metric series; see the module docstring."""
    if after_step > 0:
        series, stages, last = read_points(job, after_step)
        shown = {name: downsample(points, limit) for name, points in series.items()}
        return {
            "series": shown,
            "stages": stages,
            "last_step": after_step if last is None else last,
        }
    summary = job_summary(job, limit)
    return {
        "series": {name: s.points() for name, s in summary.series.items()},
        "stages": [list(s) for s in summary.stages],
        "last_step": summary.through_step or after_step,
    }


def read_points(job: Job, after_step: int = 0) -> tuple[dict[str, list], list[list], int | None]:
    """Raw points after a step: (series, stage changes, last step or None)."""
    series, stages, last, _ = _read(job, after_step)
    return series, stages, last


def job_summary(job: Job, limit: int = DEFAULT_LIMIT) -> JobSummary:
    key = f"gad:monitor:summary:v{SUMMARY_VERSION}:{job.pk}:{limit}"
    summary = cache.get(key)
    if summary is None or not _still_valid(job, summary):
        summary = JobSummary(limit=limit)
    series, stages, last, marker = _read(job, summary.through_step)
    if last is not None:
        summary.add(series, stages)
        summary.through_step, summary.marker = last, marker
        cache.set(key, summary, SUMMARY_TIMEOUT_S)
    return summary


def _still_valid(job: Job, summary: JobSummary) -> bool:
    if not summary.through_step:
        return True
    row = MetricPoint.objects.filter(job=job, step=summary.through_step)
    return list(row.values_list("id", "time")[:2]) == [summary.marker]


def _read(
    job: Job, after_step: int
) -> tuple[dict[str, list], list[list], int | None, tuple | None]:
    series: dict[str, list] = {}
    stages: list[list] = []  # [first step, stage] at each stage change
    last, marker = None, None
    rows = MetricPoint.objects.filter(job=job, step__gt=after_step).order_by("step")
    columns = ("id", "step", "stage", "time", "values")
    for pk, step, stage, time, values in rows.values_list(*columns).iterator(READ_CHUNK):
        for name, value in values.items():
            if type(value) is float and not math.isfinite(value):
                value = None  # JSON cannot carry NaN; the trainer writes null, SQLite may not
            points = series.get(name)
            if points is None:
                points = series[name] = []
            points.append([step, value])
        if not stages or stages[-1][1] != stage:
            stages.append([step, stage])
        last, marker = step, (pk, time)
    return series, stages, last, marker
