"""LayerDemand in virtual time: encodings nobody takes pause after the hold, wanted ones resume at once, a paused
encoding stays visible to the allocator at its last bitrate."""

from __future__ import annotations

from sfuctl.server.allocator import Layer, Wish, allocate
from sfuctl.server.layer_demand import PAUSE_HOLD, RESUME_GRACE, LayerDemand

RATES = [150_000.0, 500_000.0, 1_500_000.0]
SILENT = [150_000.0, 0.0, 0.0]  # what arrives once layers 1 and 2 are paused


def demand() -> tuple[LayerDemand, list[tuple[bool, ...]]]:
    changes: list[tuple[bool, ...]] = []
    return LayerDemand(3, changes.append), changes


def run(d: LayerDemand, wanted: set[int], start: float, seconds: float, rates: list[float] = RATES) -> float:
    """Rounds once a second from `start` for `seconds`; the time after the last."""
    t = start
    while t < start + seconds:
        d.update(wanted, rates, t)
        t += 1.0
    return t


def test_layers_nobody_takes_pause_after_the_hold_and_never_the_lowest() -> None:
    d, changes = demand()
    t = run(d, {0}, 0.0, PAUSE_HOLD)  # rounds at 0, 1, 2: not yet
    assert d.active == [True, True, True] and changes == []
    d.update(set(), RATES, t)  # nobody takes even the lowest: it stays
    assert d.active == [True, False, False] and changes == [(True, False, False)]
    assert d.pauses == [0, 1, 1]
    run(d, set(), t + 1, 5.0, SILENT)
    assert changes == [(True, False, False)]  # told once


def test_a_layer_wanted_again_within_the_hold_never_pauses() -> None:
    d, changes = demand()
    for t in range(20):  # the top layer taken every other second (a flapping allocation)
        d.update({0, 1} | ({2} if t % 2 else set()), RATES, float(t))
    assert changes == [] and d.active == [True, True, True]


def test_a_wanted_layer_resumes_at_once_and_is_held_at_its_bitrate_meanwhile() -> None:
    d, changes = demand()
    t = run(d, {0, 1}, 0.0, PAUSE_HOLD + 1)
    assert d.active == [True, True, False]
    t = run(d, {0, 1}, t, 10.0, [150_000.0, 500_000.0, 0.0])
    # Paused, the top layer still counts at what it sent: a consumer with room for it is allocated it.
    assert [d.bitrate(i, rate) for i, rate in enumerate([150_000.0, 500_000.0, 0.0])] == RATES
    layers = tuple(Layer(d.bitrate(i, rate)) for i, rate in enumerate([150_000.0, 500_000.0, 0.0]))
    assert allocate([Wish("c", "video", layers)], 3_000_000.0) == {"c": 2}
    assert allocate([Wish("c", "video", tuple(Layer(rate) for rate in [150_000.0, 500_000.0, 0.0]))], 3_000_000.0) == {"c": 1}
    d.want(2, t)  # the consumer's switch to it starts: resume now, not at the next round
    assert d.active == [True, True, True] and changes[-1] == (True, True, True)
    d.update({0, 1, 2}, [150_000.0, 500_000.0, 0.0], t + 1)  # no packet back yet: still held
    assert d.bitrate(2, 0.0) == RATES[2]
    d.update({0, 1, 2}, RATES, t + 2)  # its packets arrive: the measured bitrate takes over
    assert d.bitrate(2, 0.0) == 0.0 and d.bitrate(2, 1_400_000.0) == 1_400_000.0


def test_a_layer_the_publisher_does_not_resume_is_dropped_after_the_grace() -> None:
    d, _ = demand()
    t = run(d, {0, 1}, 0.0, PAUSE_HOLD + 1)
    d.want(2, t)
    t = run(d, {0, 1, 2}, t, RESUME_GRACE + 1, [150_000.0, 500_000.0, 0.0])
    assert d.active[2] and d.bitrate(2, 0.0) == 0.0  # seen as not sent, as a layer its publisher stopped itself


def test_a_layer_paused_while_not_sent_is_not_held() -> None:
    d, _ = demand()
    run(d, {0}, 0.0, PAUSE_HOLD + 1, [150_000.0, 500_000.0, 0.0])  # the publisher had stopped the top itself
    assert d.active == [True, False, False]
    assert d.bitrate(1, 0.0) == 500_000.0 and d.bitrate(2, 0.0) == 0.0


def test_a_paused_layer_is_held_at_its_mean_bitrate_not_its_last_intervals() -> None:
    d, _ = demand()
    for t in range(12):  # the top layer swings 1.2 / 1.8 Mb/s with its keyframes; taken until round 8
        rates = [150_000.0, 500_000.0, 1_800_000.0 if t % 2 else 1_200_000.0]
        d.update({0, 1, 2} if t < 8 else {0, 1}, rates, float(t))
    assert d.active == [True, True, False]  # paused at round 11, after an interval at 1.8 Mb/s
    assert 1_350_000 < d.bitrate(2, 0.0) < 1_650_000, d.bitrate(2, 0.0)
