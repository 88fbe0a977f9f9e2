"""Metrics: names and tag filters, and the Recorder's values from the bots' rows, the server's snapshots and
the bots' final report (time as data: no network)."""

from __future__ import annotations

import pytest

from sfuctl.bots.group import JoinEvent
from sfuctl.bots.stats import ConsumerRow, RoomCounters, Sample, SentRow, StreamSample
from sfuctl.scenario.metrics import METRICS, BotInfo, Recorder, parse_metric_key
from sfuctl.scenario.runner import evaluate
from sfuctl.scenario.model import Threshold
from sfuctl.scenario.thresholds import parse_expression

BOTS = {
    0: BotInfo("bot-1", "room-1", "lossy", True),
    1: BotInfo("bot-2", "room-1", "none", True),
}


@pytest.mark.parametrize(
    ("key", "name", "tags"),
    [
        ("consumer.jitter_ms", "consumer.jitter_ms", {}),
        ("consumer.jitter_ms{kind=video}", "consumer.jitter_ms", {"kind": "video"}),
        ("consumer.fraction_lost{ kind = audio , group=lossy }", "consumer.fraction_lost", {"kind": "audio", "group": "lossy"}),
        ("bots.join_ms{role=publisher}", "bots.join_ms", {"role": "publisher"}),
    ],
)
def test_metric_keys(key: str, name: str, tags: dict) -> None:
    metric, parsed = parse_metric_key(key)
    assert (metric.name, parsed) == (name, tags)


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("consumer.bitrate", "unknown metric 'consumer.bitrate'; did you mean consumer.bitrate_bps?"),
        ("nothing.like.it", "unknown metric 'nothing.like.it'; see docs/scenarios.md for the list"),
        ("bots.join_ms{kind=video}", "bots.join_ms has no tag 'kind'; its tags: room, group, role, topology"),
        ("consumer.jitter_ms{kind}", "bad tag filter 'kind' in 'consumer.jitter_ms{kind}': write tag=value"),
        ("consumer.jitter_ms{kind=a,kind=b}", "tag 'kind' is given twice in 'consumer.jitter_ms{kind=a,kind=b}'"),
        ("Consumer.Jitter", "bad metric 'Consumer.Jitter': expected NAME or NAME{tag=value,...}, e.g. consumer.jitter_ms{kind=video}"),
    ],
)
def test_bad_metric_keys(key: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_metric_key(key)
    assert str(error.value) == message


def recorder() -> Recorder:
    """Two bots; bot-1 (lossy) receives bot-2's video and audio for 4 s, bot-2 receives bot-1's video."""
    rec = Recorder(BOTS)
    rec.t0 = 100.0
    rec.on_join(100.1, JoinEvent(0, "bot-1", "room-1", True, 80.0, None))
    rec.on_join(100.3, JoinEvent(1, "bot-2", "room-1", True, 120.0, None))
    for second in range(1, 5):
        now = 100.0 + second
        lost = 5 if second >= 3 else 0  # bot-1's video loses 5 of 100 from t=3 on
        half = second == 1  # the audio consumer opened halfway through the first interval
        rec.on_streams(now, StreamSample(1.0, [
            ConsumerRow(0, "c-v1", "video", 70_000, 100, lost, lost * 2, second % 2, 150.0 * (second % 2), 0,
                        2.0 * second, 10.0, 1.0),
            ConsumerRow(0, "c-a1", "audio", 2_500 if half else 5_000, 50, 0, 0, 0, 0.0, 0, 1.0, 10.0, 0.5 if half else 1.0),
            ConsumerRow(1, "c-v2", "video", 60_000, 100, 0, 0, 0, 0.0, 0, 1.0, None, 1.0),
        ], [SentRow(0, "video", 70_000, 1.0), SentRow(1, "video", 60_000, 1.0), SentRow(1, "audio", 5_000, 1.0)]))
        rec.on_snapshot(now, {"server": {"cpu_percent": 10.0 * second, "bitrate_in_bps": 1e6, "bitrate_out_bps": 2e6,
                                         "rooms": 1, "peers": 2, "producers": 3, "consumers": 3, "transports": 4},
                              "rooms": [{"name": "room-1", "producers": [], "consumers": [
                                  {"kind": "video", "peer_name": "bot-1", "score": 10 - second, "fraction_lost": 0.0,
                                   "jitter_ms": 1.0, "rtt_ms": None, "bitrate_bps": 5e5}]}]})
    rec.end = 4.0
    return rec


def values(rec: Recorder, key: str, after: float = 0.0) -> list[float]:
    metric, tags = parse_metric_key(key)
    return rec.values(metric, tags, after)


@pytest.mark.parametrize(
    ("key", "after", "expected"),
    [
        # window metrics: one value per consumer over the window (over the time it was open)
        ("consumer.bitrate_bps", 0.0, [560_000.0, 40_000.0, 480_000.0]),
        ("consumer.bitrate_bps{kind=video}", 0.0, [560_000.0, 480_000.0]),
        ("consumer.fraction_lost{kind=video}", 0.0, [0.025, 0.0]),
        ("consumer.fraction_lost{kind=video}", 2.0, [0.05, 0.0]),  # rows from t=3 s on (middles 2.5, 3.5)
        ("consumer.fraction_lost_before_recovery{group=lossy,kind=video}", 2.0, [0.1]),
        ("consumer.fraction_lost{group=none}", 0.0, [0.0]),
        ("consumer.jitter_ms{kind=video,group=lossy}", 0.0, [5.0]),
        ("consumer.rtt_ms", 0.0, [10.0, 10.0]),  # bot-2 has no RTT yet: no value rather than 0
        ("consumer.freezes", 0.0, [2.0, 0.0]),  # video only
        ("consumer.freeze_ms{kind=video}", 0.0, [300.0, 0.0]),
        ("consumer.lost_frames", 0.0, [0.0, 0.0, 0.0]),
        ("producer.bitrate_bps{kind=audio}", 0.0, [40_000.0]),
        # bots over the time they were joined in the window (bot-1 from 0.1 s, bot-2 from 0.3 s)
        ("bots.received_bitrate_bps{group=lossy}", 0.0, [297_500 * 8 / 3.9]),
        ("bots.sent_bitrate_bps", 1.0, [210_000 * 8 / 3.0, 195_000 * 8 / 3.0]),
        # the topology a bot's room belongs to: every bot here is in the SFU's room-1
        ("bots.sent_bitrate_bps{topology=sfu}", 1.0, [210_000 * 8 / 3.0, 195_000 * 8 / 3.0]),
        ("bots.sent_bitrate_bps{topology=mesh}", 1.0, []),
        ("consumer.bitrate_bps{kind=video,topology=sfu}", 0.0, [560_000.0, 480_000.0]),
        # events: kept from `after` on
        ("bots.join_ms", 0.0, [80.0, 120.0]),
        ("bots.join_ms", 0.2, [120.0]),
        ("bots.join_failed", 0.0, []),
        # server samples, one per snapshot
        ("server.cpu_percent", 2.0, [20.0, 30.0, 40.0]),
        ("server.consumer.score{group=lossy}", 0.0, [9.0, 8.0, 7.0, 6.0]),
        ("server.consumer.score{topology=sfu}", 3.0, [7.0, 6.0]),
        ("server.consumer.score{topology=mesh}", 0.0, []),
        ("server.consumer.rtt_ms", 0.0, []),
    ],
)
def test_values(key: str, after: float, expected: list) -> None:
    assert sorted(values(recorder(), key, after)) == pytest.approx(sorted(expected))


def test_bot_cpu_is_one_value_per_room_and_bots_sample_while_bots_are_joined() -> None:
    rec = Recorder({})
    rec.t0 = 100.0
    for second, (sfu, mesh) in enumerate([(0, 0), (2, 3), (2, 3)], 1):  # joined bots in each room
        rec.on_sample(100.0 + second, Sample.from_counters(second, {
            "room-1": RoomCounters(active=sfu, cpu_s=0.05 * sfu, interval_s=0.5),
            "mesh-room-1": RoomCounters(active=mesh, cpu_s=0.15 * mesh, interval_s=0.5),
        }))
    rec.end = 3.0
    assert sorted(values(rec, "bots.cpu_percent")) == pytest.approx([10.0, 10.0, 30.0, 30.0])  # none while no bot
    assert values(rec, "bots.cpu_percent{topology=mesh}") == pytest.approx([30.0, 30.0])
    assert values(rec, "bots.cpu_percent{room=room-1}", after=2.5) == pytest.approx([10.0])


def test_the_final_report_replaces_the_live_join_events_and_adds_first_frames_errors_and_drops() -> None:
    rec = recorder()
    bot = {"index": 0, "joined": True, "status": "disconnected", "join_ms": 80.0, "joined_at_s": 0.5, "left_at_s": 4.0,
           "transports": 2, "errors": ["subscribe failed: x"], "consumers": [{"kind": "video", "first_frame_ms": 400.0, "first_frame_at_s": 0.5}]}
    failed = {"index": 1, "joined": False, "status": "failed", "join_ms": None, "joined_at_s": None, "left_at_s": None,
              "transports": 0, "errors": [], "consumers": []}
    rec.finish({"bots": [bot, failed]}, 4.0)
    assert values(rec, "bots.join_ms") == [80.0]
    assert values(rec, "bots.join_failed") == [1.0]
    assert values(rec, "bots.disconnected{group=lossy}") == [1.0]
    assert values(rec, "bots.errors") == [1.0]
    assert values(rec, "consumer.first_frame_ms{kind=video}") == [400.0]
    assert values(rec, "consumer.first_frame_ms{kind=video}", after=1.0) == []
    # the report's join time replaces the live one: bot-1 was joined from 0.5 s on
    assert values(rec, "bots.received_bitrate_bps{group=lossy}") == [pytest.approx(297_500 * 8 / 3.5)]


def test_rows_after_the_end_do_not_count() -> None:
    rec = recorder()
    rec.on_streams(106.0, StreamSample(1.0, [ConsumerRow(1, "c-v2", "video", 0, 100, 100, 100, 0, 0.0, 0, 1.0, None, 1.0)], []))
    assert values(rec, "consumer.fraction_lost{group=none}") == [0.0]


def test_evaluate_judges_each_threshold_and_nothing_measured_fails() -> None:
    rec = recorder()

    def threshold(key: str, text: str, after: float = 0.0) -> Threshold:
        metric, tags = parse_metric_key(key)
        return Threshold(key, metric, tuple(tags.items()), parse_expression(text), after)

    verdicts = evaluate((
        threshold("consumer.bitrate_bps{kind=video}", "p50 > 400000"),
        threshold("consumer.fraction_lost{kind=video}", "max < 0.01", after=2.0),
        threshold("bots.join_failed", "count == 0"),
        threshold("server.consumer.rtt_ms", "p95 < 100"),
        threshold("server.cpu_percent", "rate < 30"),
    ), rec)
    assert [(v.value, v.samples, v.passed) for v in verdicts] == [
        (480_000.0, 2, True), (0.05, 2, False), (0.0, 0, True), (None, 0, False), (25.0, 4, True)]


def test_every_metric_has_a_source_and_a_summary() -> None:
    rec = recorder()
    rec.finish({"bots": []}, 4.0)
    for name in METRICS:
        assert set(rec.summary(name)) == {"samples", "count", "sum", "min", "max", "avg", "p50", "p90", "p95", "p99"}
