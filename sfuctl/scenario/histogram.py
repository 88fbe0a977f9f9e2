"""LogHistogram: a metric's samples as counts in fixed logarithmic buckets, mergeable across load agents.

Bucket i holds the values in (gamma^(i-1), gamma^i] with gamma = (1 + a) / (1 - a); a bucket answers with
2 gamma^i / (gamma + 1), which is within a (RELATIVE_ERROR) of every value in it. Buckets are the same on
every machine, so merging is adding counts: a percentile of the merged histogram is the percentile of all
the samples (to within a), which no combination of per-agent percentiles gives. Zero has a bucket of its
own and negative values mirror the positive ones; count, sum, min and max are kept exactly.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

RELATIVE_ERROR = 0.01  # the bound on a percentile's error
_GAMMA = (1 + RELATIVE_ERROR) / (1 - RELATIVE_ERROR)
_LOG_GAMMA = math.log(_GAMMA)


class LogHistogram:
    """Samples in fixed log buckets, with exact count, sum, min and max."""

    __slots__ = ("count", "sum", "min", "max", "zeros", "positive", "negative")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.zeros = 0
        self.positive: dict[int, int] = {}
        self.negative: dict[int, int] = {}

    @classmethod
    def of(cls, values: Iterable[float]) -> LogHistogram:
        histogram = cls()
        for value in values:
            histogram.add(value)
        return histogram

    def add(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        if value == 0:
            self.zeros += 1
            return
        buckets = self.positive if value > 0 else self.negative
        index = math.ceil(math.log(abs(value)) / _LOG_GAMMA)
        buckets[index] = buckets.get(index, 0) + 1

    def merge(self, other: LogHistogram) -> None:
        self.count += other.count
        self.sum += other.sum
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.zeros += other.zeros
        for mine, theirs in ((self.positive, other.positive), (self.negative, other.negative)):
            for index, count in theirs.items():
                mine[index] = mine.get(index, 0) + count

    def __len__(self) -> int:
        return self.count

    def percentile(self, fraction: float) -> float | None:
        """Nearest-rank percentile (fraction 0..1), within RELATIVE_ERROR; None without samples."""
        if not self.count:
            return None
        rank = max(1, math.ceil(fraction * self.count))
        seen = 0
        for sign, index, count in self._ascending():
            seen += count
            if seen >= rank:
                value = sign * 2 * _GAMMA ** index / (_GAMMA + 1) if sign else 0.0
                return min(self.max, max(self.min, value))
        return self.max

    def _ascending(self) -> Iterable[tuple[int, int, int]]:
        """(sign, bucket index, count) from the lowest value up."""
        for index in sorted(self.negative, reverse=True):
            yield -1, index, self.negative[index]
        if self.zeros:
            yield 0, 0, self.zeros
        for index in sorted(self.positive):
            yield 1, index, self.positive[index]

    def to_dict(self) -> dict:
        """JSON-ready; bucket indexes become strings."""
        return {
            "count": self.count, "sum": self.sum, "min": self.min if self.count else None,
            "max": self.max if self.count else None, "zeros": self.zeros,
            "positive": {str(k): v for k, v in self.positive.items()},
            "negative": {str(k): v for k, v in self.negative.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> LogHistogram:
        histogram = cls()
        histogram.count = int(data["count"])
        histogram.sum = float(data["sum"])
        if histogram.count:
            histogram.min, histogram.max = float(data["min"]), float(data["max"])
        histogram.zeros = int(data["zeros"])
        histogram.positive = {int(k): int(v) for k, v in data["positive"].items()}
        histogram.negative = {int(k): int(v) for k, v in data["negative"].items()}
        return histogram
