"""Length summaries and histograms, computed once at upload and stored as JSON."""

from __future__ import annotations

import math
from array import array


class LengthStats:
    """Collects lengths (compactly: 4 bytes each) and summarizes them."""

    def __init__(self) -> None:
        self.values = array("I")

    def add(self, length: int) -> None:
        self.values.append(length)

    def summary(self, bins: int = 30) -> dict:
        if not self.values:
            return {"count": 0}
        ordered = sorted(self.values)
        n = len(ordered)

        def pct(q: float) -> int:
            return ordered[min(n - 1, math.ceil(q * n) - 1)]

        # Bins cover up to the 99th percentile; the rest share one overflow bin, so
        # one giant prompt does not squash the histogram into a single bar.
        top = max(1, pct(0.99))
        width = max(1, math.ceil(top / bins))
        counts = [0] * (bins + 1)
        for v in ordered:
            counts[min(bins, v // width)] += 1
        return {
            "count": n,
            "mean": round(sum(ordered) / n, 1),
            "median": pct(0.5),
            "p95": pct(0.95),
            "max": ordered[-1],
            "bin_width": width,
            "counts": counts,
        }
