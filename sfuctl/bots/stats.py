"""Live aggregates of a run: RoomCounters (mergeable across processes) and the Sample handed to on_sample;
per-stream rows of each interval (StreamSample, handed to on_streams) for callers that keep time series."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import NamedTuple


@dataclass
class RoomCounters:
    """Sums over the bots of one room in one process for one sample interval.

    Gauges (bots, joined, ...), rates (bps) and interval deltas (expected, lost, lost_first, cpu_s) add up
    across processes; jitter and RTT carry sums and counts so their means merge exactly. cpu_s is the share
    of its process's CPU time the room's active bots used over the interval of `interval_s` seconds (the
    processes sample together, so their intervals merge by max).
    """

    bots: int = 0
    joined: int = 0
    failed: int = 0
    active: int = 0
    streams_sent: int = 0
    streams_received: int = 0
    sent_bps: float = 0.0
    received_bps: float = 0.0
    expected: int = 0
    lost: int = 0
    lost_first: int = 0
    jitter_sum: float = 0.0
    jitter_count: int = 0
    jitter_max: float = 0.0
    rtt_sum: float = 0.0
    rtt_count: int = 0
    freezes: int = 0
    freeze_ms: float = 0.0
    cpu_s: float = 0.0
    interval_s: float = 0.0

    def merge(self, other: RoomCounters) -> None:
        for f in fields(self):
            if f.name in ("jitter_max", "interval_s"):
                setattr(self, f.name, max(getattr(self, f.name), getattr(other, f.name)))
            else:
                setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> RoomCounters:
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def sample(self, room: str) -> RoomSample:
        return RoomSample(
            room=room,
            bots=self.bots,
            joined=self.joined,
            failed=self.failed,
            active=self.active,
            streams_sent=self.streams_sent,
            streams_received=self.streams_received,
            sent_bitrate_bps=self.sent_bps,
            received_bitrate_bps=self.received_bps,
            loss=max(0, self.lost) / self.expected if self.expected > 0 else 0.0,
            loss_before_recovery=max(0, self.lost_first) / self.expected if self.expected > 0 else 0.0,
            jitter_ms=self.jitter_sum / self.jitter_count if self.jitter_count else None,
            jitter_max_ms=self.jitter_max if self.jitter_count else None,
            rtt_ms=self.rtt_sum / self.rtt_count if self.rtt_count else None,
            freezes=self.freezes,
            freeze_ms=self.freeze_ms,
            cpu_percent=self.cpu_s / self.interval_s / self.active * 100 if self.active and self.interval_s else None,
        )


@dataclass(frozen=True)
class RoomSample:
    """One room (or the total) over the last sample interval.

    loss is RFC 3550 loss after NACK recovery over the interval, loss_before_recovery counts first
    transmissions that were missing; jitter and RTT are means over the room's consumers; freezes and
    freeze_ms are totals since the start. cpu_percent is the bot processes' CPU per active bot, % of a core
    (None without active bots).
    """

    room: str
    bots: int
    joined: int
    failed: int
    active: int
    streams_sent: int
    streams_received: int
    sent_bitrate_bps: float
    received_bitrate_bps: float
    loss: float
    loss_before_recovery: float
    jitter_ms: float | None
    jitter_max_ms: float | None
    rtt_ms: float | None
    freezes: int
    freeze_ms: float
    cpu_percent: float | None


@dataclass(frozen=True)
class Sample:
    """The periodic aggregate given to on_sample: per room and in total; `elapsed` seconds since the start;
    `counters`: the mergeable sums it was made of (what a load agent sends on)."""

    elapsed: float
    rooms: dict[str, RoomSample]
    total: RoomSample
    counters: dict[str, RoomCounters] = field(default_factory=dict, repr=False)

    @classmethod
    def from_counters(cls, elapsed: float, counters: dict[str, RoomCounters]) -> Sample:
        total = RoomCounters()
        for room in counters.values():
            total.merge(room)
        rooms = {name: c.sample(name) for name, c in sorted(counters.items(), key=lambda item: room_sort_key(item[0]))}
        return cls(elapsed=elapsed, rooms=rooms, total=total.sample("total"), counters=counters)

    def worst_loss(self) -> tuple[str, float] | None:
        """The room with the highest loss in this interval."""
        if not self.rooms:
            return None
        room = max(self.rooms.values(), key=lambda r: r.loss)
        return room.room, room.loss


class ConsumerRow(NamedTuple):
    """One consumer of a joined bot over one interval: deltas, the current jitter and RTT, and the seconds of
    the interval it was open (less than the interval for one that opened or closed meanwhile)."""

    bot: int
    consumer_id: str
    kind: str
    bytes: int
    expected: int
    lost: int
    lost_first: int
    freezes: int
    freeze_ms: float
    lost_frames: int
    jitter_ms: float | None
    rtt_ms: float | None
    seconds: float


class SentRow(NamedTuple):
    """One published track of a bot over one interval: RTP bytes sent, and the seconds it was sending."""

    bot: int
    kind: str
    bytes: int
    seconds: float


@dataclass
class StreamSample:
    """The streams of one process over one sample interval of `interval` seconds (rows are JSON lists)."""

    interval: float
    consumers: list[ConsumerRow] = field(default_factory=list)
    sent: list[SentRow] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"interval": self.interval, "consumers": self.consumers, "sent": self.sent}

    @classmethod
    def from_dict(cls, data: dict) -> StreamSample:
        return cls(
            data["interval"],
            [ConsumerRow(*row) for row in data["consumers"]],
            [SentRow(*row) for row in data["sent"]],
        )


def merge_counters(parts: list[dict[str, RoomCounters]]) -> dict[str, RoomCounters]:
    merged: dict[str, RoomCounters] = {}
    for part in parts:
        for room, counters in part.items():
            merged.setdefault(room, RoomCounters()).merge(counters)
    return merged


def room_sort_key(name: str) -> tuple[str, int, str]:
    """Sort key putting room-2 before room-10."""
    prefix, _, number = name.rpartition("-")
    return (prefix, int(number), name) if number.isdigit() else (name, 0, name)


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile (fraction 0..1) of the values; None when there are none."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class BitratePeaks:
    """The highest bitrate of one sample interval (~1 s) per room and in total, sent and received: a sum over
    the streams of that interval only, so bots that were never connected at the same time never add up."""

    def __init__(self) -> None:
        self.sent: dict[str, float] = {}
        self.received: dict[str, float] = {}

    def add(self, sample: Sample) -> None:
        for row in (*sample.rooms.values(), sample.total):
            self.sent[row.room] = max(self.sent.get(row.room, 0.0), row.sent_bitrate_bps)
            self.received[row.room] = max(self.received.get(row.room, 0.0), row.received_bitrate_bps)
