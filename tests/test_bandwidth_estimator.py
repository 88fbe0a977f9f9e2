"""The estimator against a simulated bottleneck (tests/link_simulation.py: virtual time, the real units)."""

import pytest

from sfuctl.rtc.bandwidth_estimator import START_BPS, BandwidthEstimator
from sfuctl.rtc.delay_based import NORMAL, OVERUSING, InterArrival, TrendlineDetector
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


def test_heavy_loss_caps_the_estimate_just_under_what_arrived() -> None:
    estimator = BandwidthEstimator()
    # 1000-byte packets every 10 ms (800 kb/s sent), one in five lost: 640 kb/s arrives
    results = [PacketResult(i * 0.01, None if i % 5 == 0 else 0.05 + i * 0.01, 1000, -1) for i in range(100)]
    estimator.on_feedback(results, 1.0)
    assert estimator.loss_fraction == pytest.approx(0.2)
    assert estimator.acked_bps == pytest.approx(640_000, rel=0.05)
    assert estimator.loss_cap_bps == pytest.approx(0.9 * estimator.acked_bps)
    estimator.on_feedback([PacketResult(1 + i * 0.01, 1.05 + i * 0.01, 1000, -1) for i in range(30)], 2.0)
    # No loss: the cap grows, and goes away once above the delay-based estimate (still near its 300 kb/s start)
    assert estimator.loss_fraction == 0 and estimator.loss_cap_bps is None
    assert estimator.available_bps == estimator.delay_bps


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
