"""Layer choice and the interim estimate, in virtual time (no sockets: the clock is a parameter)."""

from __future__ import annotations

import pytest

from sfuctl.server.allocator import Layer, Wish, allocate, choose, next_upgrade_bps
from sfuctl.server.interim_estimate import BACKOFF_MAX, BACKOFF_MIN, TRIAL_SECONDS, InterimEstimate

SIMULCAST = (Layer(150_000, 320, 180), Layer(500_000, 640, 360), Layer(1_500_000, 1280, 720))
AUDIO = Wish("a", "audio", (Layer(40_000),))


def video(cid: str, **kwargs) -> Wish:
    return Wish(cid, "video", SIMULCAST, **kwargs)


@pytest.mark.parametrize(
    ("wishes", "available", "expected"),
    [
        # Nothing limits: every consumer at its cap.
        ([AUDIO, video("v")], None, {"a": 0, "v": 2}),
        ([video("v", preferred=1)], None, {"v": 1}),
        ([video("v", preferred=7)], None, {"v": 2}),
        ([video("v", max_size=(320, 180))], None, {"v": 0}),
        ([video("v", max_size=(400, 200))], None, {"v": 1}),  # the smallest layer not upscaled
        ([video("v", max_size=(4000, 4000))], None, {"v": 2}),
        ([video("v", max_size=(1280, 720), preferred=1)], None, {"v": 1}),
        # A layer the publisher stopped sending (no bitrate while a lower one has one) is never chosen.
        ([Wish("v", "video", (*SIMULCAST[:2], Layer(0, 1280, 720)))], None, {"v": 1}),
        ([Wish("v", "video", (*SIMULCAST[:2], Layer(0, 1280, 720)), preferred=2)], 5_000_000, {"v": 1}),
        # 400 kb/s: audio first, then the layer that fits.
        ([AUDIO, video("v")], 400_000, {"a": 0, "v": 0}),
        ([AUDIO, video("v")], 600_000, {"a": 0, "v": 1}),
        ([AUDIO, video("v")], 1_540_000, {"a": 0, "v": 2}),
        # Less than even the lowest layers: everyone still gets layer 0.
        ([AUDIO, video("v"), video("w")], 10_000, {"a": 0, "v": 0, "w": 0}),
        # Priority decides who goes up first; every video consumer gets its lowest layer before anyone rises.
        ([video("lo", priority=1), video("hi", priority=5)], 950_000, {"lo": 0, "hi": 1}),
        ([video("lo", priority=1), video("hi", priority=5)], 2_000_000, {"lo": 1, "hi": 2}),
        # One layer at a time, round robin: two equal consumers both rise to 1 before either reaches 2.
        ([video("v"), video("w")], 1_500_000, {"v": 1, "w": 1}),
        # A plain (single-layer) stream is layer 0 whatever the budget.
        ([Wish("p", "video", (Layer(550_000),))], 100_000, {"p": 0}),
    ],
)
def test_allocate(wishes, available, expected) -> None:
    assert allocate(wishes, available) == expected


def test_unmeasured_layers_fit_any_budget() -> None:
    wish = Wish("v", "video", (Layer(0), Layer(0), Layer(0)))
    assert allocate([wish], 1.0) == {"v": 2}


def test_next_upgrade_bps_is_the_total_with_one_more_layer() -> None:
    wishes = [AUDIO, video("v", priority=2), video("w", preferred=0)]
    assert next_upgrade_bps(wishes, {"a": 0, "v": 0, "w": 0}) == 40_000 + 500_000 + 150_000
    assert next_upgrade_bps(wishes, {"a": 0, "v": 2, "w": 0}) is None


def lossy_reports(estimate: InterimEstimate, start: float, count: int, loss: float, sent: float) -> float:
    for i in range(count):
        estimate.on_report(loss, sent, start + i)
    return start + count - 1  # the time of the last report


def test_one_bad_report_is_a_burst_two_step_down() -> None:
    e = InterimEstimate()
    assert e.available_bps(0) is None and not e.wants_probe(100)
    e.on_report(0.5, 1_000_000, 1.0)
    assert e.available_bps(1.0) is None
    e.on_report(0.05, 1_000_000, 2.0)  # a good report resets the count
    e.on_report(0.5, 1_000_000, 3.0)
    assert e.available_bps(3.0) is None
    e.on_report(0.6, 1_000_000, 4.0)
    assert e.available_bps(4.0) == pytest.approx(1_000_000 * 0.4 * 0.9)


def test_failed_trials_revert_and_back_off_from_10_to_60_seconds() -> None:
    e = InterimEstimate()
    t = lossy_reports(e, 0.0, 2, 0.7, 1_600_000)
    limit = e.available_bps(t)
    waits = []
    for _ in range(5):
        start = t
        while not e.wants_probe(t):
            e.on_report(0.0, limit, t)
            t += 1.0
        waits.append(t - start)
        e.start_probe(700_000, t)
        assert e.in_trial and e.available_bps(t) == 700_000
        t += 1.0
        e.on_report(0.3, 700_000, t)  # the trial overloads the link: one bad report reverts it
        assert not e.in_trial and e.available_bps(t) == limit
    assert waits == [BACKOFF_MIN, 2 * BACKOFF_MIN, 4 * BACKOFF_MIN, BACKOFF_MAX, BACKOFF_MAX]
    assert (e.trials, e.failed_trials) == (5, 5)


def test_a_kept_trial_holds_and_the_next_waits_its_backoff() -> None:
    e = InterimEstimate()
    t = lossy_reports(e, 0.0, 2, 0.5, 1_000_000)
    e.backoff = 40.0
    t += 40.0
    assert e.wants_probe(t)
    e.start_probe(900_000, t)
    e.on_report(0.0, 900_000, t + 1.0)
    assert e.in_trial
    e.on_report(0.01, 900_000, t + TRIAL_SECONDS)
    assert not e.in_trial and e.available_bps(t) == 900_000 and e.failed_trials == 0
    assert not e.wants_probe(t + TRIAL_SECONDS + 40.0 - 0.5)
    assert e.wants_probe(t + TRIAL_SECONDS + 40.0)


@pytest.mark.parametrize(("after_kept", "backoff"), [(3.0, 2 * BACKOFF_MIN), (BACKOFF_MIN + 20.0, BACKOFF_MIN)])
def test_a_step_down_soon_after_a_kept_trial_counts_as_failed(after_kept: float, backoff: float) -> None:
    e = InterimEstimate()
    t = lossy_reports(e, 0.0, 2, 0.5, 1_000_000) + BACKOFF_MIN
    e.start_probe(900_000, t)
    t += TRIAL_SECONDS
    e.on_report(0.0, 900_000, t)
    assert not e.in_trial
    lossy_reports(e, t + after_kept - 1, 2, 0.3, 900_000)
    assert e.available_bps(t) == pytest.approx(900_000 * 0.7 * 0.9)
    assert e.backoff == backoff and e.failed_trials == (1 if backoff > BACKOFF_MIN else 0)


def test_a_trial_that_fills_the_queue_reverts_before_any_loss() -> None:
    e = InterimEstimate()
    t = lossy_reports(e, 0.0, 2, 0.5, 1_000_000)
    for rtt in (40.0, 35.0, 50.0):
        t += 1.0
        e.on_report(0.0, 450_000, t, rtt_ms=rtt)
    t += BACKOFF_MIN
    e.start_probe(600_000, t)
    e.on_report(0.0, 600_000, t + 0.8, rtt_ms=130.0)  # within 100 ms of the floor (35 ms): kept going
    assert e.in_trial
    e.on_report(0.0, 600_000, t + 1.6, rtt_ms=140.0)
    assert not e.in_trial and e.failed_trials == 1 and e.backoff == 2 * BACKOFF_MIN


def test_remb_caps_the_loss_estimate() -> None:
    e = InterimEstimate()
    e.on_remb(300_000, 0.0)
    assert e.available_bps(0.0) == 300_000
    lossy_reports(e, 1.0, 2, 0.5, 200_000)
    assert e.available_bps(3.0) == pytest.approx(90_000)
    e.on_remb(2_000_000, 4.0)
    assert e.available_bps(4.0) == pytest.approx(90_000)


def test_choose_in_virtual_time_steps_down_tries_up_and_settles() -> None:
    """A 400 kb/s subscriber of a 3-layer producer: top first, then the low layer, failed trials back off."""
    link = 400_000
    wishes = [AUDIO, video("v")]
    e = InterimEstimate()
    history = []
    for second in range(120):
        now = float(second)
        layer = choose(wishes, e, now)["v"]
        history.append(layer)
        sent = AUDIO.layers[0].bitrate_bps + SIMULCAST[layer].bitrate_bps
        e.on_report(max(0.0, 1 - link / sent), sent, now + 0.5)
    assert history[:2] == [2, 2] and history[3] == 0
    trials = [s for s in range(1, 120) if history[s] > history[s - 1]]
    assert [b - a for a, b in zip(trials, trials[1:])] == [21, 41, 61][: len(trials) - 1]
    assert all(history[s + 1] == 0 for s in trials)  # each trial reverted at the next report
    assert history[-1] == 0


def test_lifting_the_limit_moves_up_through_trials() -> None:
    wishes = [AUDIO, video("v")]
    e = InterimEstimate()
    link = 400_000
    history = []
    for second in range(80):
        now = float(second)
        if second == 30:
            link = 10_000_000
        layer = choose(wishes, e, now)["v"]
        history.append(layer)
        sent = AUDIO.layers[0].bitrate_bps + SIMULCAST[layer].bitrate_bps
        e.on_report(max(0.0, 1 - link / sent), sent, now + 0.5)
    assert history[29] == 0
    assert 2 in history[30:60] and history[-1] == 2
