"""Stats snapshots (docs/stats.md): the versioned schema and its validator, quality scores, loss windows, CPU.

Everything here runs once per interval or per request, never per packet. The per-stream pieces
(QualityMonitor, LossWindow, ScoreHistory) take counters, not clocks, so their tests are deterministic.
"""

from __future__ import annotations

import math
import time
from collections import deque
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .worker import Worker

SCHEMA_VERSION = 1
# Loss is averaged over this many report intervals (receiver reports for consumers, the server's own 1-s
# reports for producers): a single ~1-s interval of 50 audio packets moves in steps of 2 percentage points.
LOSS_INTERVALS = 5
SCORE_HISTORY = 8
MAX_SCORE = 10

# Field types of each object in a snapshot: "int", "number" (int or float), "str", "bool", "object", "array";
# a trailing "?" allows null. Fields may be added within a version; removing or retyping one bumps it.
FIELDS: dict[str, dict[str, str]] = {
    "snapshot": {"version": "int", "time": "number", "server": "object", "rooms": "array"},
    "server": {
        "uptime_s": "number",
        "rooms": "int",
        "peers": "int",
        "producers": "int",
        "consumers": "int",
        "transports": "int",
        "bitrate_in_bps": "number",
        "bitrate_out_bps": "number",
        "cpu_percent": "number",
        "rtc_port": "int",
        "unknown_datagrams": "int",
    },
    "room": {"name": "str", "peers": "array", "producers": "array", "consumers": "array"},
    "peer": {"id": "str", "name": "str", "transports": "array"},
    "transport": {
        "id": "str",
        "state": "str",
        "ice_state": "str",
        "dtls_state": "str",
        "srtp_profile": "str?",
        "remote_address": "str?",
        "producers": "int",
        "consumers": "int",
        "bytes_received": "int",
        "bytes_sent": "int",
        "packets_received": "int",
        "packets_sent": "int",
        "srtp_errors": "int",
        "invalid_rtcp": "int",
    },
    "producer": {
        "id": "str",
        "peer": "str",
        "peer_name": "str",
        "kind": "str",
        "codec": "str",
        "ssrc": "int?",
        "paused": "bool",
        "packets": "int",
        "bytes": "int",
        "bitrate_bps": "number",
        "packets_lost": "int",
        "fraction_lost": "number",
        "jitter_ms": "number",
        "rtt_ms": "number?",
        "nack_count": "int",
        "pli_count": "int",
        "fir_count": "int",
        "keyframes": "int",
        "consumers": "int",
        "score": "int",
    },
    "consumer": {
        "id": "str",
        "peer": "str",
        "peer_name": "str",
        "producer_id": "str",
        "producer_peer": "str",
        "producer_peer_name": "str",
        "kind": "str",
        "codec": "str",
        "ssrc": "int",
        "paused": "bool",
        "packets": "int",
        "bytes": "int",
        "bitrate_bps": "number",
        "packets_lost": "int",
        "fraction_lost": "number",
        "jitter_ms": "number",
        "rtt_ms": "number?",
        "nack_count": "int",
        "pli_count": "int",
        "fir_count": "int",
        "retransmitted": "int",
        "reports_received": "int",
        "score": "int",
        "producer_score": "int",
    },
}
# Where arrays and objects lead: (parent object, field) -> the object type of the value or of its items.
CHILDREN: dict[tuple[str, str], str] = {
    ("snapshot", "server"): "server",
    ("snapshot", "rooms"): "room",
    ("room", "peers"): "peer",
    ("room", "producers"): "producer",
    ("room", "consumers"): "consumer",
    ("peer", "transports"): "transport",
}
RANGES: dict[str, tuple[float, float]] = {
    "score": (0, MAX_SCORE),
    "producer_score": (0, MAX_SCORE),
    "fraction_lost": (0.0, 1.0),
}


# -- quality ---------------------------------------------------------------------------------------------
def interval_score(packets: int, lost: int, repaired: int = 0) -> int:
    """Score 0-10 of one interval, after mediasoup's RtpStream scores.

    `packets` were sent (or received) in the interval, `lost` of them never arrived, `repaired` were lost and
    recovered by a NACK retransmission. The delivered share is raised to the 4th power, so 1% loss still scores
    10, 5% scores 8 and 20% scores 4. A repaired packet is partly forgiven: the more repairs in the interval,
    the less each is forgiven ((1 / (1 + repaired share))^4). Retransmissions reuse the media SSRC here, so a
    receiver counts a repaired packet as received and `lost` holds only what stayed lost.
    """
    if packets <= 0:
        raise ValueError(f"an interval score needs packets > 0, got {packets}")
    lost = min(max(lost, 0), packets)
    repaired = max(repaired, 0)
    forgiven = (1.0 / (1.0 + repaired / packets)) ** 4
    effective_lost = min(packets, lost + repaired * (1.0 - forgiven))
    delivered = (packets - effective_lost) / packets
    return _round_half_up(delivered**4 * MAX_SCORE)


class ScoreHistory:
    """The reported score: a weighted average of the last interval scores, the newest weighing the most."""

    def __init__(self, initial: int = MAX_SCORE, length: int = SCORE_HISTORY) -> None:
        self._scores: deque[int] = deque(maxlen=length)
        self.value = initial

    def add(self, score: int) -> int:
        self._scores.append(score)
        weights = range(1, len(self._scores) + 1)
        total = sum(w * s for w, s in zip(weights, self._scores))
        self.value = _round_half_up(total / sum(weights))
        return self.value

    def reset(self, score: int) -> None:
        """Forget the history (the stream stopped or came back)."""
        self._scores.clear()
        self.value = score


class LossWindow:
    """Loss over the last few report intervals, from cumulative 'expected' and 'lost' counters (RFC 3550 6.4.1)."""

    def __init__(self, intervals: int = LOSS_INTERVALS) -> None:
        self._points: deque[tuple[int, int]] = deque(maxlen=intervals + 1)

    def add(self, expected: int, lost: int) -> None:
        self._points.append((expected, lost))

    @property
    def fraction(self) -> float | None:
        """Lost / expected between the oldest and newest point, 0..1; None before two points."""
        if len(self._points) < 2:
            return None
        (expected0, lost0), (expected1, lost1) = self._points[0], self._points[-1]
        expected = expected1 - expected0
        if expected <= 0:
            return 0.0
        return min(1.0, max(0.0, (lost1 - lost0) / expected))


class QualityMonitor:
    """Loss fraction and score of one stream, fed cumulative counters once per report interval.

    `idle_score` is the score of an interval without packets: 10 for a stream the server sends (nothing sent,
    nothing to blame, as in mediasoup) and 0 for one it receives (the publisher went silent).
    """

    def __init__(self, idle_score: int) -> None:
        self.idle_score = idle_score
        self.history = ScoreHistory()
        self.loss = LossWindow()
        self.fraction_lost = 0.0
        self._prior: tuple[int, int, int] | None = None  # packets, lost, repaired at the previous update
        self._idle = False

    @property
    def score(self) -> int:
        return self.history.value

    def update(self, *, packets: int, expected: int, lost: int, repaired: int = 0, reported_fraction: float | None = None) -> None:
        """Close an interval: `packets` handled so far, `expected`/`lost` as a receiver counts them, `repaired`.

        `reported_fraction` (a receiver report's own fraction) stands in until the window holds two points.
        """
        self.loss.add(expected, lost)
        window = self.loss.fraction
        self.fraction_lost = window if window is not None else (reported_fraction or 0.0)
        prior, self._prior = self._prior, (packets, lost, repaired)
        if prior is None:
            return
        packets_delta = packets - prior[0]
        if packets_delta <= 0:
            if self.idle_score == 0:
                self.history.reset(0)
                self._idle = True
            else:
                self.history.add(self.idle_score)
            return
        if self._idle:
            self.history.reset(MAX_SCORE)
            self._idle = False
        self.history.add(interval_score(packets_delta, lost - prior[1], repaired - prior[2]))


def _round_half_up(value: float) -> int:
    return int(math.floor(value + 0.5))


# -- process CPU ---------------------------------------------------------------------------------------------
class CpuMeter:
    """CPU use of this process in percent of one core, over windows of at least `min_interval` seconds."""

    def __init__(self, now: float, cpu_seconds: float, min_interval: float = 1.0) -> None:
        self._min_interval = min_interval
        self._since = (now, cpu_seconds)
        self._percent: float | None = None

    def sample(self, now: float, cpu_seconds: float) -> float:
        """The last complete window's figure (the running one until a window completes)."""
        start, cpu_start = self._since
        elapsed = now - start
        if elapsed >= self._min_interval:
            self._percent = max(0.0, (cpu_seconds - cpu_start) * 100.0 / elapsed)
            self._since = (now, cpu_seconds)
        elif self._percent is None:
            return max(0.0, (cpu_seconds - cpu_start) * 100.0 / elapsed) if elapsed > 0 else 0.0
        return self._percent


_PROCESS_CPU = CpuMeter(time.monotonic(), time.process_time())


def process_cpu_percent() -> float:
    """CPU use of this (server) process, in percent of one core."""
    return _PROCESS_CPU.sample(time.monotonic(), time.process_time())


# -- transport states --------------------------------------------------------------------------------------
def ice_dtls_states(state: str, ice_selected: bool, srtp_ready: bool) -> tuple[str, str]:
    """ICE and DTLS states from a connection's combined state, its selected pair and its SRTP keys."""
    if state in ("closed", "failed"):
        return state, state
    if state == "new":
        return "new", "new"
    if not ice_selected:
        return "checking", "new"
    return "connected", "connected" if srtp_ready else "connecting"


# -- snapshots ---------------------------------------------------------------------------------------------
def build_snapshot(worker: Worker, now: float, cpu_percent: float, room: str | None = None) -> dict:
    """The stats snapshot of a worker at wall-clock time `now`; `room` keeps only that room (totals stay whole)."""
    routers = list(worker.routers.values())
    peers = producers = consumers = 0
    bitrate_in = bitrate_out = 0.0
    for router in routers:
        peers += len(router.peers)
        for producer in router.producers.values():
            producers += 1
            bitrate_in += producer.meter.bitrate_bps
        for peer in router.peers.values():
            for consumer in peer.consumers.values():
                consumers += 1
                bitrate_out += consumer.meter.bitrate_bps
    worker_stats = worker.stats()
    return {
        "version": SCHEMA_VERSION,
        "time": round(now, 3),
        "server": {
            "uptime_s": round(max(0.0, now - worker.started_at), 1),
            "rooms": len(routers),
            "peers": peers,
            "producers": producers,
            "consumers": consumers,
            "transports": worker_stats["transports"],
            "bitrate_in_bps": round(bitrate_in),
            "bitrate_out_bps": round(bitrate_out),
            "cpu_percent": round(cpu_percent, 1),
            "rtc_port": worker_stats["rtc_port"],
            "unknown_datagrams": worker_stats["unknown_datagrams"],
        },
        "rooms": [router.stats() for router in routers if room is None or router.name == room],
    }


def validate_snapshot(snapshot: Any) -> None:
    """Raise ValueError naming the first field that breaks the schema of docs/stats.md."""
    _validate(snapshot, "snapshot", "snapshot")
    if snapshot["version"] != SCHEMA_VERSION:
        raise ValueError(f"snapshot.version: this sfuctl reads version {SCHEMA_VERSION}, got {snapshot['version']}")


def _validate(value: Any, kind: str, path: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected object, got {type(value).__name__}")
    for name, type_name in FIELDS[kind].items():
        where = f"{path}.{name}"
        if name not in value:
            raise ValueError(f"{where}: missing")
        field = value[name]
        nullable = type_name.endswith("?")
        type_name = type_name.rstrip("?")
        if field is None:
            if not nullable:
                raise ValueError(f"{where}: expected {type_name}, got null")
            continue
        if not _has_type(field, type_name):
            raise ValueError(f"{where}: expected {type_name}, got {type(field).__name__} {field!r}"[:200])
        if name in RANGES:
            low, high = RANGES[name]
            if not low <= field <= high:
                raise ValueError(f"{where}: {field} outside {low}..{high}")
        child = CHILDREN.get((kind, name))
        if child is not None:
            if type_name == "array":
                for index, item in enumerate(field):
                    _validate(item, child, f"{where}[{index}]")
            else:
                _validate(field, child, where)


def _has_type(value: Any, type_name: str) -> bool:
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, {"str": str, "bool": bool, "object": dict, "array": list}[type_name])
