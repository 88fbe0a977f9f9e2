"""LogHistogram: percentiles of merged agents' samples within 1%, where per-agent percentiles go wrong."""

from __future__ import annotations

import random

import pytest

from sfuctl.bots.report import percentile
from sfuctl.scenario.histogram import RELATIVE_ERROR, LogHistogram
from sfuctl.scenario.thresholds import aggregate

# (what, agent A's samples, agent B's samples, A's p95, B's p95, the p95 of all the samples)
CASES = [
    ("one agent saturated", [20.0] * 80 + [400.0] * 20, [10.0] * 300, 400.0, 10.0, 20.0),
    ("small and large agent", [5000.0] * 30, [float(v) for v in range(100, 1100)], 5000.0, 1049.0, 1078.0),
    ("losses with zeros", [0.0] * 60 + [0.02] * 30 + [0.1] * 10, [0.0] * 200, 0.1, 0.0, 0.02),
    ("negative values", [-20.0] * 19 + [-1.0], [-2.0] * 20 + [4.0] * 2, -20.0, 4.0, -1.0),
]


@pytest.mark.parametrize(("what", "a", "b", "p95_a", "p95_b", "p95_all"), CASES, ids=[case[0] for case in CASES])
def test_the_merged_p95_is_that_of_all_samples_and_differs_from_each_agents(
    what: str, a: list[float], b: list[float], p95_a: float, p95_b: float, p95_all: float
) -> None:
    assert (percentile(a, 0.95), percentile(b, 0.95), percentile(a + b, 0.95)) == (p95_a, p95_b, p95_all)
    merged = LogHistogram.of(a)
    merged.merge(LogHistogram.from_dict(LogHistogram.of(b).to_dict()))  # as it travels between machines
    assert aggregate("p95", merged, 0) == pytest.approx(p95_all, rel=RELATIVE_ERROR)
    assert aggregate("p95", merged, 0) not in (p95_a, p95_b, (p95_a + p95_b) / 2)


def test_every_aggregate_of_merged_random_samples() -> None:
    a = [random.Random(1).uniform(3e5, 6e5) for _ in range(400)]
    b = [random.Random(2).lognormvariate(12, 1) for _ in range(700)]
    merged = LogHistogram.of(a)
    merged.merge(LogHistogram.of(b))
    for name in ("p50", "p90", "p95", "p99"):
        assert aggregate(name, merged, 0) == pytest.approx(aggregate(name, a + b, 0), rel=RELATIVE_ERROR), name
    for name in ("count", "sum", "min", "max", "avg", "rate"):
        assert aggregate(name, merged, 10) == pytest.approx(aggregate(name, a + b, 10), rel=1e-12), name


def test_an_empty_histogram_has_counts_but_no_percentile() -> None:
    empty = LogHistogram.from_dict(LogHistogram().to_dict())
    assert aggregate("count", empty, 1) == 0 and aggregate("sum", empty, 1) == 0
    assert aggregate("p95", empty, 1) is None and aggregate("min", empty, 1) is None
