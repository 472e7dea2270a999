"""Shape-preserving down-sampling of metric series: min/max buckets aligned on steps.

A series is a list of ``[step, value]`` in increasing step order. ``value`` is ``None``
where the trainer wrote a non-finite number (NaN and inf arrive as null): the chart must
show a gap there, never a zero, so nulls survive down-sampling.

Bucket ``i`` holds the steps ``[i*w, (i+1)*w)``, ``w`` being the smallest power of two
whose buckets span the series' steps in at most ``(limit - 2) // 3`` buckets. A bucket
keeps its lowest and its highest value (each with its step) and its first null; the
series keeps its first and last point. Hence:

- the extremes are always kept: a loss spike or a collapsed accuracy stays on the chart,
  which averaging or stride sampling would hide;
- at most ``3 * buckets + 2 <= limit`` points come out;
- a series of at most ``limit`` points comes back unchanged;
- buckets are aligned on steps, so when ``w`` doubles two buckets merge exactly: a
  ``SeriesSummary`` fed point by point ends where down-sampling everything at once
  ends. That is what lets the server keep one summary per job and add only new points.

Pure functions and a small dataclass; no Django.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import groupby

DEFAULT_LIMIT = 2000

# A bucket: [lowest step, lowest value, highest step, highest value, first null step];
# the value slots are None when the bucket holds only nulls, the last when it holds none.
Bucket = list


def max_buckets(limit: int) -> int:
    if limit < 5:
        raise ValueError(f"limit must be at least 5 (got {limit})")
    return (limit - 2) // 3


def bucket_width(first_step: int, last_step: int, buckets: int, at_least: int = 1) -> int:
    """The smallest power of two (>= ``at_least``) that spans the steps in ``buckets``."""
    width = max(1, at_least)
    while last_step // width - first_step // width + 1 > buckets:
        width *= 2
    return width


def summarize(points: Iterable[Sequence], width: int) -> dict[int, Bucket]:
    """Points (in step order) -> {bucket index: bucket} for buckets of ``width`` steps."""
    out: dict[int, Bucket] = {}
    for key, group in groupby(points, key=lambda p: p[0] // width):
        lo_s = lo_v = hi_s = hi_v = null_s = None
        for step, value in group:
            if value is None:
                if null_s is None:
                    null_s = step
            elif lo_v is None:
                lo_s = hi_s = step
                lo_v = hi_v = value
            elif value < lo_v:
                lo_s, lo_v = step, value
            elif value > hi_v:
                hi_s, hi_v = step, value
        bucket = [lo_s, lo_v, hi_s, hi_v, null_s]
        out[key] = merge(out[key], bucket) if key in out else bucket
    return out


def merge(a: Bucket, b: Bucket) -> Bucket:
    """Two buckets as one; ``a`` holds the earlier steps (it wins ties, like a scan does)."""
    if a[1] is None:
        lo_s, lo_v, hi_s, hi_v = b[0], b[1], b[2], b[3]
    elif b[1] is None:
        lo_s, lo_v, hi_s, hi_v = a[0], a[1], a[2], a[3]
    else:
        lo_s, lo_v = (a[0], a[1]) if a[1] <= b[1] else (b[0], b[1])
        hi_s, hi_v = (a[2], a[3]) if a[3] >= b[3] else (b[2], b[3])
    null_s = a[4] if a[4] is not None else b[4]
    return [lo_s, lo_v, hi_s, hi_v, null_s]


def rebucket(buckets: dict[int, Bucket], factor: int) -> dict[int, Bucket]:
    """Buckets of width ``w`` -> buckets of width ``w * factor`` (a power of two)."""
    out: dict[int, Bucket] = {}
    for key in sorted(buckets):
        new = key // factor
        out[new] = merge(out[new], buckets[key]) if new in out else buckets[key]
    return out


def bucket_points(buckets: dict[int, Bucket], first: Sequence, last: Sequence) -> list[list]:
    """The kept points in step order: each bucket's extremes and null, the ends of the series."""
    out: list[list] = [[first[0], first[1]]]
    for key in sorted(buckets):
        lo_s, lo_v, hi_s, hi_v, null_s = buckets[key]
        if lo_s is None:
            kept = []
        elif lo_s == hi_s:
            kept = [[lo_s, lo_v]]
        elif lo_s < hi_s:
            kept = [[lo_s, lo_v], [hi_s, hi_v]]
        else:
            kept = [[hi_s, hi_v], [lo_s, lo_v]]
        if null_s is not None:
            at = sum(1 for p in kept if p[0] < null_s)
            kept.insert(at, [null_s, None])
        for point in kept:
            if point[0] > out[-1][0]:  # the series' first point may be one of them
                out.append(point)
    if last[0] > out[-1][0]:
        out.append([last[0], last[1]])
    return out


@dataclass
class SeriesSummary:
    """One series, kept small as points arrive: raw while short, then min/max buckets."""

    limit: int = DEFAULT_LIMIT
    count: int = 0
    raw: list | None = field(default_factory=list)  # None once the series outgrew limit
    width: int = 0
    buckets: dict[int, Bucket] = field(default_factory=dict)
    first: list | None = None
    last: list | None = None

    def extend(self, points: Sequence[Sequence]) -> None:
        """Add points whose steps all come after the ones already added."""
        if not points:
            return
        if self.first is None:
            self.first = list(points[0])
        self.last = list(points[-1])
        self.count += len(points)
        if self.raw is not None:
            if self.count <= self.limit:
                self.raw.extend([p[0], p[1]] for p in points)
                return
            points = self.raw + list(points)
            self.raw = None
        width = bucket_width(self.first[0], self.last[0], max_buckets(self.limit), self.width)
        if self.buckets and width != self.width:
            self.buckets = rebucket(self.buckets, width // self.width)
        self.width = width
        for key, bucket in summarize(points, width).items():
            old = self.buckets.get(key)
            self.buckets[key] = bucket if old is None else merge(old, bucket)

    def points(self) -> list[list]:
        if self.raw is not None:
            return [list(p) for p in self.raw]
        assert self.first is not None and self.last is not None  # set by the first add
        return bucket_points(self.buckets, self.first, self.last)


def downsample(points: Sequence[Sequence], limit: int = DEFAULT_LIMIT) -> list[list]:
    """At most ``limit`` points of ``points`` (step order) keeping its shape; see above."""
    summary = SeriesSummary(limit=limit)
    summary.extend(points)
    return summary.points()
