"""The estimator against a simulated bottleneck (tests/link_simulation.py: virtual time, the real units)."""

import random

import pytest

from sfuctl.rtc.bandwidth_estimator import START_BPS, BandwidthEstimator
from sfuctl.rtc.delay_based import NORMAL, OVERUSING, TRENDLINE_WINDOW, InterArrival, SlidingSlope, TrendlineDetector
from sfuctl.rtc.send_history import PacketResult
from tests.link_simulation import LinkSimulation


@pytest.mark.parametrize("capacity", [300_000, 1_000_000, 3_000_000])
def test_the_estimate_settles_within_25_percent_of_the_link_within_10_seconds(capacity: float) -> None:
    sim = LinkSimulation(lambda t: capacity)
    sim.run(16.0)
    settled = sim.estimates(10.0, 16.0)
    assert min(settled) >= 0.75 * capacity and max(settled) <= 1.25 * capacity, [round(b) for b in settled]
    assert sim.estimator.probe.results >= 2  # the initial probes came back


@pytest.mark.parametrize("capacity", [1_000_000, 3_000_000])
def test_the_estimate_drops_within_2_seconds_when_the_link_halves(capacity: float) -> None:
    sim = LinkSimulation(lambda t: capacity if t < 12.0 else capacity / 2)
    sim.run(18.0)
    assert max(sim.estimates(11.0, 12.0)) >= 0.75 * capacity
    after = sim.estimates(14.0, 18.0)
    assert max(after) <= 1.25 * capacity / 2 and min(after) >= 0.75 * capacity / 2, [round(b) for b in after]
    assert sim.estimator.overuse_events >= 1


def test_the_start_rate_and_the_initial_probes_at_3x_and_6x() -> None:
    estimator = BandwidthEstimator()
    assert estimator.available_bps == START_BPS
    clusters = estimator.probes(0.0)
    assert [c.bitrate_bps for c in clusters] == [3 * START_BPS, 6 * START_BPS]
    assert all(c.packets >= 5 and c.bytes > 0 for c in clusters)
    assert estimator.probes(0.1) == []  # no result yet: nothing more


def test_remb_caps_the_estimate() -> None:
    estimator = BandwidthEstimator()
    estimator.on_remb(100_000)
    assert estimator.available_bps == 100_000
    assert estimator.stats()["available_outgoing_bitrate_bps"] == 100_000


def feed(estimator: BandwidthEstimator, first: int, count: int, lost_every: int = 0) -> None:
    """Packets `first`.. (`count`) of 1000 bytes, one every 10 ms (800 kb/s), 50 ms one way, feedback about every
    10 (100 ms); every `lost_every`th lost."""
    for start in range(first, first + count, 10):
        results = [
            PacketResult(i * 0.01, None if lost_every and i % lost_every == 0 else 0.05 + i * 0.01, 1000, -1)
            for i in range(start, min(start + 10, first + count))
        ]
        estimator.on_feedback(results, results[-1].send_time + 0.06)


def test_sustained_heavy_loss_lowers_the_estimate_but_never_under_what_arrived() -> None:
    estimator = BandwidthEstimator(start_bps=1_000_000)
    estimator.on_rtt(0.05)
    feed(estimator, 0, 20, lost_every=5)  # one measurement (20 packets) of 20% loss: noise, nothing changes
    assert estimator.loss_fraction == pytest.approx(0.2) and estimator.loss_cap_bps is None
    before = estimator.available_bps
    feed(estimator, 20, 20, lost_every=5)  # the second in a row: the estimate x (1 - 0.2 / 2)
    assert estimator.loss_cap_bps == pytest.approx(0.9 * before, rel=0.03)
    feed(estimator, 40, 260, lost_every=5)  # it goes on: lower at most every 0.35 s, down to what arrived
    assert estimator.arrived_bps == pytest.approx(640_000, rel=0.03)
    assert estimator.loss_cap_bps == pytest.approx(estimator.arrived_bps)
    assert estimator.available_bps == pytest.approx(640_000, rel=0.03)
    cap = estimator.loss_cap_bps
    feed(estimator, 300, 100, lost_every=20)  # 5% loss: the cap holds
    assert estimator.loss_cap_bps == cap
    feed(estimator, 400, 300)  # no loss: it grows 8% a second
    assert estimator.loss_fraction == 0 and estimator.loss_cap_bps == pytest.approx(cap * 1.08**3, rel=0.03)
    feed(estimator, 700, 600)  # and goes once above the delay-based estimate
    assert estimator.loss_cap_bps is None
    assert estimator.available_bps == estimator.delay_bps


def test_the_feedback_rtt_includes_the_queue() -> None:
    estimator = BandwidthEstimator()
    # sent at 1.00..1.09, the newest received one (1.08) reported in feedback that came back at 1.45
    results = [PacketResult(1 + i * 0.01, None if i == 9 else 1.3 + i * 0.01, 1000, -1) for i in range(10)]
    estimator.on_feedback(results, 1.45)
    assert estimator.feedback_rtt == pytest.approx(0.37)


def test_a_growing_queue_is_detected_as_overuse_and_a_steady_one_is_not() -> None:
    steady, growing = TrendlineDetector(), TrendlineDetector()
    steady_groups, growing_groups = InterArrival(), InterArrival()
    states = {"steady": [], "growing": []}
    for index in range(60):
        send = index * 0.02
        for name, groups, detector, arrival in (
            ("steady", steady_groups, steady, send + 0.05),
            ("growing", growing_groups, growing, send + 0.05 + index * 0.004),  # 4 ms more per 20 ms
        ):
            deltas = groups.add(send, arrival)
            if deltas is not None:
                states[name].append(detector.update(*deltas))
    assert set(states["steady"]) == {NORMAL}
    assert OVERUSING in states["growing"]


def _least_squares(points: list[tuple[float, float]]) -> float:
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / sum((x - mean_x) ** 2 for x, _ in points)


@pytest.mark.parametrize("offset", [0.0, 3.6e7])  # x in ms: from the start, or ten hours on
def test_the_sliding_slope_is_the_least_squares_slope_of_its_last_points(offset: float) -> None:
    rng = random.Random(7)
    slope, points = SlidingSlope(TRENDLINE_WINDOW), []
    x, y = offset, offset / 10
    for _ in range(10 * TRENDLINE_WINDOW + 7):  # the anchor moves 10 times
        x += rng.uniform(0.25, 40.0)
        y += rng.uniform(-5.0, 6.0)
        slope.add(x, y)
        points = (points + [(x, y)])[-TRENDLINE_WINDOW:]
        if len(points) >= 2:
            assert slope.slope(99.0) == pytest.approx(_least_squares(points), rel=1e-7, abs=1e-9)
    assert len(slope) == TRENDLINE_WINDOW


def test_the_sliding_slope_of_points_at_one_x_is_the_fallback() -> None:
    slope = SlidingSlope(TRENDLINE_WINDOW)
    for index in range(10 + TRENDLINE_WINDOW):  # x stops moving at the 10th point: the last window is all at one x
        slope.add(100.0 + min(index, 10), float(index))
    assert slope.slope(0.5) == 0.5
    slope.add(111.0, 3.0)
    assert slope.slope(0.5) != 0.5
