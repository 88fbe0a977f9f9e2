"""Quality scores, loss windows, CPU and the snapshot schema, without a network (counters in, figures out)."""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from sfuctl.server.cpu import CpuMeter
from sfuctl.server.quality import LOSS_INTERVALS, LossWindow, QualityMonitor, ScoreHistory, interval_score
from sfuctl.server.transport import ice_dtls_states
from sfuctl.stats_schema import FIELDS, validate_snapshot

DOCS = Path(__file__).resolve().parents[1] / "docs" / "stats.md"


@pytest.mark.parametrize(
    "packets, lost, repaired, score",
    [
        (100, 0, 0, 10),
        (100, 1, 0, 10),  # 0.99^4 = 0.96
        (100, 2, 0, 9),
        (100, 5, 0, 8),
        (100, 10, 0, 7),
        (100, 20, 0, 4),
        (100, 50, 0, 1),
        (100, 100, 0, 0),
        (100, 250, 0, 0),  # more lost than sent (a late report): capped
        (100, -4, 0, 10),  # duplicates outnumber losses
        (100, 0, 5, 10),  # a few repairs are nearly free
        (100, 0, 20, 6),  # many repairs cost: 20 x (1 - (1/1.2)^4) = 10.4 effective losses
        (100, 5, 20, 5),
        (1, 0, 0, 10),
    ],
)
def test_interval_score_follows_the_delivered_share_to_the_fourth_power(packets, lost, repaired, score):
    assert interval_score(packets, lost, repaired) == score


def test_interval_score_needs_packets():
    with pytest.raises(ValueError, match=r"^an interval score needs packets > 0, got 0$"):
        interval_score(0, 0)


@pytest.mark.parametrize(
    "scores, value",
    [
        ([10], 10),
        ([1, 2, 3, 4], 3),  # (1 + 4 + 9 + 16) / 10 = 3.0
        ([10, 10, 10, 0], 6),  # the newest weighs the most: 60 / 10
        ([0, 10, 10, 10], 9),  # 90 / 10
        ([0] * 8 + [10] * 8, 10),  # only the last 8 count
    ],
)
def test_score_history_is_a_weighted_average_favouring_recent_intervals(scores, value):
    history = ScoreHistory()
    for score in scores:
        history.add(score)
    assert history.value == value


def test_score_history_reset_forgets_everything():
    history = ScoreHistory()
    history.add(2)
    history.reset(0)
    assert history.value == 0
    assert history.add(10) == 10


def test_loss_window_measures_between_its_oldest_and_newest_points():
    window = LossWindow(intervals=2)
    assert window.fraction is None
    window.add(expected=1000, lost=10)
    assert window.fraction is None
    window.add(expected=1100, lost=20)
    assert window.fraction == pytest.approx(0.10)
    window.add(expected=1200, lost=20)
    assert window.fraction == pytest.approx(0.05)  # 10 of 200 over the last two intervals
    window.add(expected=1300, lost=20)
    assert window.fraction == 0.0  # the lossy interval left the window


@pytest.mark.parametrize(
    "points, fraction",
    [
        ([(100, 5), (100, 5)], 0.0),  # nothing expected: no loss
        ([(100, 5), (200, 0)], 0.0),  # duplicates made the cumulative count drop
        ([(100, 0), (110, 50)], 1.0),  # capped at everything
    ],
)
def test_loss_window_stays_within_zero_and_one(points, fraction):
    window = LossWindow()
    for expected, lost in points:
        window.add(expected, lost)
    assert window.fraction == fraction


def test_quality_monitor_of_a_sent_stream():
    monitor = QualityMonitor(idle_score=10)
    monitor.update(packets=0, expected=0, lost=0, reported_fraction=0.25)
    assert (monitor.score, monitor.fraction_lost) == (10, 0.25)  # one report: its own fraction stands in
    monitor.update(packets=100, expected=100, lost=10)
    assert (monitor.score, monitor.fraction_lost) == (7, pytest.approx(0.10))
    monitor.update(packets=100, expected=100, lost=10)
    assert monitor.score == 9  # nothing sent, nothing to blame: (1 x 7 + 2 x 10) / 3
    assert monitor.fraction_lost == pytest.approx(0.10)  # still within the window


def test_quality_monitor_of_a_received_stream_drops_to_zero_when_silent_and_recovers():
    monitor = QualityMonitor(idle_score=0)
    monitor.update(packets=0, expected=0, lost=0)
    monitor.update(packets=50, expected=50, lost=0)
    assert monitor.score == 10
    monitor.update(packets=50, expected=50, lost=0)
    assert monitor.score == 0
    monitor.update(packets=100, expected=100, lost=0)
    assert monitor.score == 10


def test_loss_window_length_is_the_documented_one():
    monitor = QualityMonitor(idle_score=10)
    monitor.update(packets=0, expected=0, lost=0)
    monitor.update(packets=100, expected=100, lost=50)
    for n in range(2, LOSS_INTERVALS + 1):
        monitor.update(packets=100 * n, expected=100 * n, lost=50)
    assert monitor.fraction_lost == pytest.approx(50 / (100 * LOSS_INTERVALS))
    monitor.update(packets=600, expected=100 * (LOSS_INTERVALS + 1), lost=50)
    assert monitor.fraction_lost == 0.0


def test_cpu_meter_reports_complete_windows():
    meter = CpuMeter(now=100.0, cpu_seconds=5.0)
    assert meter.sample(100.0, 5.0) == 0.0
    assert meter.sample(100.5, 5.1) == pytest.approx(20.0)  # running figure until a window completes
    assert meter.sample(101.0, 5.5) == pytest.approx(50.0)
    assert meter.sample(101.5, 6.5) == pytest.approx(50.0)  # window still open: the last complete one
    assert meter.sample(103.0, 7.0) == pytest.approx(75.0)  # 1.5 s of CPU in 2 s


@pytest.mark.parametrize(
    "state, selected, srtp, expected",
    [
        ("new", False, False, ("new", "new")),
        ("connecting", False, False, ("checking", "new")),
        ("connecting", True, False, ("connected", "connecting")),
        ("connected", True, True, ("connected", "connected")),
        ("failed", True, True, ("failed", "failed")),
        ("closed", False, False, ("closed", "closed")),
    ],
)
def test_ice_and_dtls_states_from_the_connection(state, selected, srtp, expected):
    assert ice_dtls_states(state, selected, srtp) == expected


# -- schema ---------------------------------------------------------------------------------------------------
def sample_snapshot() -> dict:
    """A snapshot with one of everything, values as a live server sends them."""
    stream = {"id": "x", "peer": "peer-a", "peer_name": "alice", "kind": "audio", "codec": "opus", "paused": False,
              "packets": 10, "bytes": 1000, "bitrate_bps": 8000, "packets_lost": 0, "fraction_lost": 0.0,
              "jitter_ms": 1.5, "rtt_ms": None, "nack_count": 0, "pli_count": 0, "fir_count": 0, "score": 10}  # fmt: skip
    producer = {**stream, "id": "p-1", "ssrc": None, "keyframes": 0, "consumers": 1, "audio_level_dbov": -30}
    consumer = {**stream, "id": "c-1", "peer": "peer-b", "peer_name": "bob", "producer_id": "p-1",
                "producer_peer": "peer-a", "producer_peer_name": "alice", "ssrc": 1234, "rtt_ms": 12.5,
                "retransmitted": 0, "retransmissions_refused": 0, "reports_received": 3, "producer_score": 10}  # fmt: skip
    transport = {"id": "t-1", "state": "connected", "ice_state": "connected", "dtls_state": "connected",
                 "srtp_profile": "SRTP_AEAD_AES_128_GCM", "remote_address": "127.0.0.1:5000", "ice_protocol": "udp", "producers": 1,
                 "consumers": 0, "bytes_received": 1, "bytes_sent": 1, "packets_received": 1, "packets_sent": 1,
                 "srtp_errors": 0, "invalid_rtcp": 0, "sctp_state": None, "data_channels": 0, "data_invalid": 0,
                 "transport_cc_packets": 0, "transport_feedback_sent": 0, "transport_feedback_received": 0,
                 "incoming_bitrate_bps": 8000, "max_incoming_bitrate_bps": None, "available_outgoing_bitrate_bps": None, "overuse_events": 0, "probe_clusters": 0, "probe_results": 0}  # fmt: skip
    server = {"uptime_s": 1.0, "rooms": 1, "peers": 2, "producers": 1, "consumers": 1, "transports": 2,
              "bitrate_in_bps": 8000, "bitrate_out_bps": 8000, "cpu_percent": 3.5, "rtc_port": 40000,
              "unknown_datagrams": 0, "loop_lag_p95_ms": 0.0, "tasks": 12, "tcp_connections": 0, "tcp_dropped": 0,
              "pipes": [{"worker": 1, "port": 41000, "remote_port": 41001, "streams_out": 1, "streams_in": 0,
                         "packets_sent": 10, "bytes_sent": 1000, "packets_received": 1, "bytes_received": 80,
                         "dropped_foreign": 0, "dropped_invalid": 0, "unknown_ssrc": 0, "invalid_rtcp": 0,
                         "rooms": 1}]}  # fmt: skip
    room = {"name": "demo", "peers": [{"id": "peer-a", "name": "alice", "worker": 0, "transports": [transport]}],
            "producers": [producer], "consumers": [consumer], "active_speaker": "peer-a",
            "data_producers": [{"id": "dp-1", "peer": "peer-a", "peer_name": "alice", "label": "chat", "stream_id": 0,
                                "messages_in": 5, "bytes_in": 50, "dropped": 1, "dropped_oversize": 0, "dropped_rate": 1,
                                "consumers": 1}],
            "data_consumers": [{"id": "dc-1", "peer": "peer-b", "data_producer": "dp-1", "label": "chat", "stream_id": 1,
                                "messages_out": 4, "bytes_out": 40, "dropped": 0}]}  # fmt: skip
    return {"version": 1, "time": 1700000000.5, "server": server, "rooms": [room]}


def test_sample_snapshot_is_valid():
    validate_snapshot(sample_snapshot())


@pytest.mark.parametrize(
    "path, value, message",
    [
        (("version",), 2, "snapshot.version: this sfuctl reads version 1, got 2"),
        (("server",), [], "snapshot.server: expected object, got list []"),
        (("server", "peers"), True, "snapshot.server.peers: expected int, got bool True"),
        (("server", "cpu_percent"), "3%", "snapshot.server.cpu_percent: expected number, got str '3%'"),
        (("server", "cpu_percent"), float("nan"), "snapshot.server.cpu_percent: expected number, got float nan"),
        (("rooms", 0, "name"), None, "snapshot.rooms[0].name: expected str, got null"),
        (("rooms", 0, "consumers", 0, "score"), 11, "snapshot.rooms[0].consumers[0].score: 11 outside 0..10"),
        (("rooms", 0, "consumers", 0, "fraction_lost"), -0.1, "snapshot.rooms[0].consumers[0].fraction_lost: -0.1 outside 0.0..1.0"),
        (("rooms", 0, "producers", 0, "packets"), 1.5, "snapshot.rooms[0].producers[0].packets: expected int, got float 1.5"),
        (("rooms", 0, "peers", 0, "transports", 0, "ice_state"), 3, "snapshot.rooms[0].peers[0].transports[0].ice_state: expected str, got int 3"),
    ],
)
def test_validator_names_the_first_broken_field(path, value, message):
    snapshot = sample_snapshot()
    target = snapshot
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ValueError) as error:
        validate_snapshot(snapshot)
    assert str(error.value) == message


def test_validator_reports_missing_fields_and_accepts_extra_ones():
    snapshot = sample_snapshot()
    snapshot["rooms"][0]["consumers"][0]["future_field"] = "fine"
    validate_snapshot(snapshot)
    del snapshot["rooms"][0]["consumers"][0]["rtt_ms"]
    with pytest.raises(ValueError, match=r"^snapshot\.rooms\[0\]\.consumers\[0\]\.rtt_ms: missing$"):
        validate_snapshot(snapshot)
    with pytest.raises(ValueError, match=r"^snapshot: expected object, got list$"):
        validate_snapshot([])


def test_nullable_fields_take_null():
    snapshot = copy.deepcopy(sample_snapshot())
    snapshot["rooms"][0]["consumers"][0]["rtt_ms"] = None
    snapshot["rooms"][0]["peers"][0]["transports"][0]["srtp_profile"] = None
    validate_snapshot(snapshot)


def test_docs_describe_every_field_of_every_object():
    text = DOCS.read_text()
    for kind, fields in FIELDS.items():
        section = re.search(rf"^### `{kind}`\n(.*?)(?=^##|\Z)", text, re.S | re.M)
        assert section is not None, f"docs/stats.md has no '### `{kind}`' section"
        documented = set(re.findall(r"^\| `(\w+)` \|", section.group(1), re.M))
        assert documented == set(fields), f"{kind}: documented {sorted(documented)} vs schema {sorted(fields)}"
