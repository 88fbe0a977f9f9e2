"""The metrics a scenario can put thresholds on, and the Recorder that collects their samples during a run.

Names are `source.field`, optionally filtered by tags: `consumer.fraction_lost{kind=video,group=lossy}`.
Times are seconds since the first bot's start. How each metric turns into samples (its `timing`):

- window: one value per stream (or bot) over the measured window [after, end], from the bots' per-second
  rows; a stream that was open for only part of the window counts over the part it was open.
- event: one value per event (a join, a first frame), kept when the event happened at or after `after`.
- sample: one value per object per stats snapshot of the server (every second), or per room per bots
  sample (bots.cpu_percent), kept from `after` on.
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from ..bots.group import JoinEvent
from ..bots.stats import Sample, StreamSample
from .histogram import LogHistogram
from .thresholds import aggregate
from .topology import topology_of

STREAM_TAGS = ("room", "kind", "group", "topology")
BOT_TAGS = ("room", "group", "role", "topology")
ROOM_TAGS = ("room", "topology")
KINDS = ("audio", "video")
ROLES = ("publisher", "subscriber")
NO_GROUP = "none"  # the `group` tag of bots in no network group
LATE = 0.5  # a bots sample is kept when it arrives at most this long after the end (pipes, scheduling)
MIN_JOINED_S = 2.0  # a bot joined for less of the window than this has no bots.*_bitrate_bps value


@dataclass(frozen=True)
class Metric:
    """A metric's name, unit, timing (window, event or sample), the tags it can be filtered by, and meaning."""

    name: str
    unit: str
    timing: str
    tags: tuple[str, ...]
    help: str


def _metrics(*rows: tuple[str, str, str, tuple[str, ...], str]) -> dict[str, Metric]:
    return {row[0]: Metric(*row) for row in rows}


METRICS: dict[str, Metric] = _metrics(
    ("consumer.bitrate_bps", "bit/s", "window", STREAM_TAGS, "received bitrate of each consumer (bots)"),
    ("consumer.fraction_lost", "0..1", "window", STREAM_TAGS, "loss after NACK recovery, lost / expected (RFC 3550)"),
    ("consumer.fraction_lost_before_recovery", "0..1", "window", STREAM_TAGS,
     "first transmissions missing when a later packet arrived: the loss of the path"),
    ("consumer.jitter_ms", "ms", "window", STREAM_TAGS, "mean of the per-second RFC 3550 interarrival jitter"),
    ("consumer.rtt_ms", "ms", "window", STREAM_TAGS, "mean round-trip time of the receiving bot's transport (STUN)"),
    ("consumer.freezes", "freezes", "window", STREAM_TAGS, "webrtc-stats freezeCount: waits of at least max(3 x mean, mean + 150 ms)"),
    ("consumer.freeze_ms", "ms", "window", STREAM_TAGS, "time spent frozen"),
    ("consumer.lost_frames", "frames", "window", STREAM_TAGS,
     "frames given up: still incomplete 1.5 s after a gap (0.1 s without NACK), so never shown"),
    ("consumer.first_frame_ms", "ms", "event", STREAM_TAGS,
     "from learning of the producer to its first keyframe (video) or packet (audio)"),
    ("producer.bitrate_bps", "bit/s", "window", STREAM_TAGS, "sent bitrate of each published track (bots)"),
    ("bots.join_ms", "ms", "event", BOT_TAGS, "websocket open to every transport connected, per joined bot"),
    ("bots.join_failed", "bots", "event", BOT_TAGS, "1 per bot that could not join"),
    ("bots.disconnected", "bots", "event", BOT_TAGS, "1 per joined bot dropped by the server or the network"),
    ("bots.errors", "errors", "event", BOT_TAGS,
     "1 per problem a joined bot met (a failed or rejected subscription, a lost transport), when it left"),
    ("bots.sent_bitrate_bps", "bit/s", "window", BOT_TAGS,
     "uplink bitrate of each bot (all its tracks) over the time it was joined"),
    ("bots.received_bitrate_bps", "bit/s", "window", BOT_TAGS,
     "downlink bitrate of each bot (all its consumers) over the time it was joined: missing streams lower it"),
    ("data.delivery_ratio", "0..1", "event", BOT_TAGS,
     "per receiving bot and sender: chat messages received / sequence numbers spanned (gaps are losses)"),
    ("data.out_of_order", "messages", "event", BOT_TAGS, "per receiving bot and sender: messages after a higher one"),
    ("data.latency_p50_ms", "ms", "event", BOT_TAGS, "per receiving bot and sender: median send-to-receive time"),
    ("data.latency_p95_ms", "ms", "event", BOT_TAGS, "per receiving bot and sender: 95th percentile of it"),
    ("speaker.named_ms", "ms", "event", BOT_TAGS,
     "per turn of a talking bot (bots.speakers): from the turn's start to the server naming it the active speaker"),
    ("speaker.missed", "turns", "event", BOT_TAGS,
     "1 per turn that ended with its talking bot neither named during it nor still the room's speaker"),
    ("speaker.misnamed", "times", "event", BOT_TAGS, "1 each time the server named a bot outside its turns"),
    ("bots.cpu_percent", "% of a core", "sample", ROOM_TAGS,
     "CPU of the bot processes per joined bot, % of a core: one value per room per bots sample"),
    ("server.cpu_percent", "% of a core", "sample", (), "CPU of the server process (all threads)"),
    ("server.bitrate_in_bps", "bit/s", "sample", (), "bitrate received from publishers"),
    ("server.bitrate_out_bps", "bit/s", "sample", (), "bitrate sent to subscribers"),
    ("server.rooms", "rooms", "sample", (), "open rooms"),
    ("server.peers", "peers", "sample", (), "joined peers"),
    ("server.producers", "producers", "sample", (), "producers"),
    ("server.consumers", "consumers", "sample", (), "consumers"),
    ("server.transports", "transports", "sample", (), "ICE/DTLS transports"),
    ("server.consumer.score", "0..10", "sample", STREAM_TAGS, "quality score of each consumer (server)"),
    ("server.consumer.fraction_lost", "0..1", "sample", STREAM_TAGS, "loss from the subscribers' receiver reports"),
    ("server.consumer.jitter_ms", "ms", "sample", STREAM_TAGS, "jitter from the subscribers' receiver reports"),
    ("server.consumer.rtt_ms", "ms", "sample", STREAM_TAGS, "RTT from the subscribers' receiver reports"),
    ("server.consumer.spatial_layer", "layer", "sample", STREAM_TAGS, "simulcast layer forwarded (0 = lowest)"),
    ("server.consumer.height", "pixels", "sample", STREAM_TAGS, "frame height of the simulcast layer forwarded"),
    ("server.consumer.layer_switches", "switches", "sample", STREAM_TAGS, "simulcast layer switches so far"),
    ("server.producer.score", "0..10", "sample", STREAM_TAGS, "quality score of each producer (server)"),
    ("server.producer.fraction_lost", "0..1", "sample", STREAM_TAGS, "loss the server sees from publishers"),
    ("server.producer.bitrate_bps", "bit/s", "sample", STREAM_TAGS, "bitrate the server receives per producer"),
)
SERVER_TOTALS = {
    "server.cpu_percent": "cpu_percent", "server.bitrate_in_bps": "bitrate_in_bps",
    "server.bitrate_out_bps": "bitrate_out_bps", "server.rooms": "rooms", "server.peers": "peers",
    "server.producers": "producers", "server.consumers": "consumers", "server.transports": "transports",
}
SERVER_OBJECTS = {
    "server.consumer.score": ("consumers", "score"), "server.consumer.fraction_lost": ("consumers", "fraction_lost"),
    "server.consumer.jitter_ms": ("consumers", "jitter_ms"), "server.consumer.rtt_ms": ("consumers", "rtt_ms"),
    # only simulcast consumers have these (others are skipped)
    "server.consumer.spatial_layer": ("consumers", "spatial_layer"), "server.consumer.height": ("consumers", "height"),
    "server.consumer.layer_switches": ("consumers", "layer_switches"),
    "server.producer.score": ("producers", "score"), "server.producer.fraction_lost": ("producers", "fraction_lost"),
    "server.producer.bitrate_bps": ("producers", "bitrate_bps"),
}
# data.* metrics: the field of each chat stream of a bot's report (sfuctl.bots.chat) they read.
DATA_FIELDS = {
    "data.delivery_ratio": "delivery_ratio", "data.out_of_order": "out_of_order",
    "data.latency_p50_ms": "latency_p50_ms", "data.latency_p95_ms": "latency_p95_ms",
}
_KEY = re.compile(r"(?P<name>[a-z0-9_.]+)(?:\{(?P<tags>[^{}]*)\})?")


def parse_metric_key(key: str) -> tuple[Metric, dict[str, str]]:
    """`consumer.jitter_ms{kind=video}` -> (its Metric, {"kind": "video"}); ValueError names the problem."""
    match = _KEY.fullmatch(key.strip())
    if match is None:
        raise ValueError(f"bad metric {key!r}: expected NAME or NAME{{tag=value,...}}, e.g. consumer.jitter_ms{{kind=video}}")
    name = match["name"]
    metric = METRICS.get(name)
    if metric is None:
        close = difflib.get_close_matches(name, METRICS, n=1)
        hint = f"did you mean {close[0]}?" if close else "see docs/scenarios.md for the list"
        raise ValueError(f"unknown metric {name!r}; {hint}")
    tags: dict[str, str] = {}
    for part in (match["tags"] or "").split(","):
        if not part.strip():
            continue
        tag, equals, value = (s.strip() for s in part.partition("="))
        if not equals or not tag or not value:
            raise ValueError(f"bad tag filter {part.strip()!r} in {key!r}: write tag=value")
        if tag not in metric.tags:
            allowed = ", ".join(metric.tags) if metric.tags else "none"
            raise ValueError(f"{name} has no tag {tag!r}; its tags: {allowed}")
        if tag in tags:
            raise ValueError(f"tag {tag!r} is given twice in {key!r}")
        tags[tag] = value
    return metric, tags


@dataclass(frozen=True)
class BotInfo:
    """What a bot is, for tags: name, room, network group (NO_GROUP when none), whether it publishes, and
    when it is planned to start and to leave (s; None: at the end)."""

    name: str
    room: str
    group: str
    publisher: bool
    start: float = 0.0
    stop: float | None = None

    @property
    def role(self) -> str:
        return "publisher" if self.publisher else "subscriber"

    @property
    def topology(self) -> str:
        return topology_of(self.room)


@dataclass
class StreamTrack:
    """The per-interval rows of one consumer (or one published track): parallel lists, one entry per row."""

    bot: int
    kind: str
    t: list[float] = field(default_factory=list)  # when the row's interval ended
    interval: list[float] = field(default_factory=list)  # its length
    seconds: list[float] = field(default_factory=list)  # how much of it the stream was open
    bytes: list[int] = field(default_factory=list)
    expected: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)
    lost_first: list[int] = field(default_factory=list)
    freezes: list[int] = field(default_factory=list)
    freeze_ms: list[float] = field(default_factory=list)
    lost_frames: list[int] = field(default_factory=list)
    jitter_ms: list[float | None] = field(default_factory=list)
    rtt_ms: list[float | None] = field(default_factory=list)

    def rows(self, after: float, end: float) -> list[int]:
        """Indexes of the rows whose middle is inside [after, end]."""
        return [i for i, (t, d) in enumerate(zip(self.t, self.interval)) if after <= t - d / 2 <= end]


@dataclass
class RoomPoint:
    """One room (or the total) in one bots sample."""

    t: float
    active: int
    sent_bps: float
    received_bps: float
    loss: float
    loss_before_recovery: float
    jitter_ms: float | None
    rtt_ms: float | None
    freezes: int
    cpu_percent: float | None


class Recorder:
    """Collects everything a run measures; `values()` gives a metric's samples for a threshold.

    Feed it on_streams / on_sample / on_snapshot while the run goes, finish(report) at the end. Times are
    seconds since the first bot's start (`t0`, on the time.monotonic() clock).
    """

    def __init__(self, bots: dict[int, BotInfo]) -> None:
        self.bots = bots
        self.by_name = {info.name: info for info in bots.values()}
        self.t0: float | None = None
        self.end: float = math.inf
        self.consumers: dict[str, StreamTrack] = {}
        self.sent: dict[tuple[int, str], StreamTrack] = {}
        self.rooms: dict[str, list[RoomPoint]] = {}
        self.server: list[tuple[float, dict]] = []
        # per snapshot: room -> (bitrate the server receives from its producers, sends to its consumers)
        self.server_rooms: list[tuple[float, dict[str, tuple[float, float]]]] = []
        self.server_objects: dict[str, list[tuple[float, float, dict[str, str]]]] = {m: [] for m in SERVER_OBJECTS}
        self.events: dict[str, list[tuple[float, float, dict[str, str]]]] = {}
        self.joined_at: dict[int, float] = {}  # bot -> when it joined (s)
        self.left_at: dict[int, float] = {}  # bot -> when it left (s), known from the final report
        self.transports: dict[int, int] = {}  # joined bot -> ICE/DTLS connections it had, from the final report
        self.report: dict | None = None

    def elapsed(self, now: float) -> float:
        return now - self.t0 if self.t0 is not None else 0.0

    # -- live feeds ---------------------------------------------------------------------------------------
    def on_streams(self, now: float, sample: StreamSample) -> None:
        t = self.elapsed(now)
        if self.t0 is None or t - sample.interval / 2 > self.end:
            return
        for row in sample.consumers:
            track = self.consumers.get(row.consumer_id)
            if track is None:
                track = self.consumers[row.consumer_id] = StreamTrack(row.bot, row.kind)
            track.t.append(t)
            track.interval.append(sample.interval)
            track.seconds.append(row.seconds)
            track.bytes.append(row.bytes)
            track.expected.append(row.expected)
            track.lost.append(row.lost)
            track.lost_first.append(row.lost_first)
            track.freezes.append(row.freezes)
            track.freeze_ms.append(row.freeze_ms)
            track.lost_frames.append(row.lost_frames)
            track.jitter_ms.append(row.jitter_ms)
            track.rtt_ms.append(row.rtt_ms)
        for row in sample.sent:
            track = self.sent.get((row.bot, row.kind))
            if track is None:
                track = self.sent[(row.bot, row.kind)] = StreamTrack(row.bot, row.kind)
            track.t.append(t)
            track.interval.append(sample.interval)
            track.seconds.append(row.seconds)
            track.bytes.append(row.bytes)

    def on_sample(self, now: float, sample: Sample) -> None:
        t = self.elapsed(now)
        if self.t0 is None or t > self.end + LATE:
            return
        for room in [*sample.rooms.values(), sample.total]:
            self.rooms.setdefault(room.room, []).append(
                RoomPoint(t, room.active, room.sent_bitrate_bps, room.received_bitrate_bps, room.loss,
                          room.loss_before_recovery, room.jitter_ms, room.rtt_ms, room.freezes, room.cpu_percent)
            )

    def on_snapshot(self, now: float, snapshot: dict) -> None:
        t = self.elapsed(now)
        if self.t0 is None or t < 0 or t > self.end:
            return
        self.server.append((t, snapshot["server"]))
        self.server_rooms.append((t, {
            room["name"]: (math.fsum(p["bitrate_bps"] for p in room["producers"]),
                           math.fsum(c["bitrate_bps"] for c in room["consumers"]))
            for room in snapshot["rooms"]
        }))
        for room in snapshot["rooms"]:
            for metric, (collection, key) in SERVER_OBJECTS.items():
                samples = self.server_objects[metric]
                for item in room[collection]:
                    value = item.get(key)
                    if value is not None:
                        samples.append((t, float(value), self._object_tags(room["name"], item)))

    def on_join(self, now: float, event: JoinEvent) -> None:
        """A bot joined or failed to: the bots.join_* events until finish() replaces them with the report's."""
        info = self.bots.get(event.index)
        if info is None:
            return
        tags = self.bot_tags(info)
        if event.joined and event.join_ms is not None:
            self.joined_at[event.index] = self.elapsed(now)
            self.events.setdefault("bots.join_ms", []).append((self.elapsed(now), event.join_ms, tags))
        elif not event.joined:
            self.events.setdefault("bots.join_failed", []).append((info.start, 1.0, tags))

    def _object_tags(self, room: str, item: dict) -> dict[str, str]:
        bot = self.by_name.get(item.get("peer_name", ""))
        return {"room": room, "kind": item["kind"], "group": bot.group if bot is not None else NO_GROUP,
                "topology": topology_of(room)}

    def finish(self, report: dict | None, end: float) -> None:
        """The run ended at `end` (s since the start): take the bots' final report for the event metrics."""
        self.end = min(self.end, end)
        self.report = report
        events: dict[str, list[tuple[float, float, dict[str, str]]]] = {
            "consumer.first_frame_ms": [], "bots.join_ms": [], "bots.join_failed": [], "bots.disconnected": [],
            "bots.errors": [], **{name: [] for name in DATA_FIELDS},
            "speaker.named_ms": [], "speaker.missed": [], "speaker.misnamed": [],
        }
        for bot in (report or {}).get("bots", []):
            info = self.bots.get(bot["index"])
            if info is None:
                continue
            tags = self.bot_tags(info)
            if bot["joined_at_s"] is not None:
                self.joined_at[bot["index"]] = bot["joined_at_s"]
            if bot["left_at_s"] is not None:
                self.left_at[bot["index"]] = bot["left_at_s"]
            if bot["joined"]:
                self.transports[bot["index"]] = bot["transports"]
                left = min(_or(bot["left_at_s"], self.end), self.end)
                events["bots.errors"].extend((left, 1.0, tags) for _ in bot["errors"])
            if bot["join_ms"] is not None and bot["joined"]:
                events["bots.join_ms"].append((_or(bot["joined_at_s"], info.start), bot["join_ms"], tags))
            if bot["status"] == "failed":
                events["bots.join_failed"].append((info.start, 1.0, tags))
            if bot["status"] == "disconnected":
                events["bots.disconnected"].append((_or(bot["left_at_s"], self.end), 1.0, tags))
            for stream in (bot.get("data") or {}).get("received", []):
                left = min(_or(bot["left_at_s"], self.end), self.end)
                for name, field_name in DATA_FIELDS.items():
                    if stream[field_name] is not None:
                        events[name].append((left, float(stream[field_name]), tags))
            speaker = bot.get("speaker")
            if speaker is not None:
                left = min(_or(bot["left_at_s"], self.end), self.end)
                events["speaker.named_ms"].extend((left, value, tags) for value in speaker["named_ms"])
                events["speaker.missed"].extend((left, 1.0, tags) for _ in range(speaker["missed"]))
                events["speaker.misnamed"].extend((left, 1.0, tags) for _ in range(speaker["misnamed"]))
            for consumer in bot["consumers"]:
                if consumer["first_frame_ms"] is not None:
                    events["consumer.first_frame_ms"].append(
                        (_or(consumer.get("first_frame_at_s"), info.start), consumer["first_frame_ms"],
                         {**tags, "kind": consumer["kind"]})
                    )
        self.events = events

    def bot_tags(self, info: BotInfo) -> dict[str, str]:
        return {"room": info.room, "group": info.group, "role": info.role, "topology": info.topology}

    # -- queries ------------------------------------------------------------------------------------------
    def values(self, metric: Metric, tags: dict[str, str], after: float = 0.0, now: float | None = None) -> list[float]:
        """The samples of `metric` matching `tags`, from `after` to the end of the run (or to `now`, s since
        the start, while it runs)."""
        name, end = metric.name, min(self.end, now if now is not None else math.inf)
        if metric.timing == "event":
            return [v for t, v, own in self.events.get(name, ()) if t >= after and _matches(own, tags)]
        if name in SERVER_TOTALS:
            key = SERVER_TOTALS[name]
            return [float(s[key]) for t, s in self.server if after <= t <= end]
        if name in SERVER_OBJECTS:
            return [v for t, v, own in self.server_objects[name] if after <= t <= end and _matches(own, tags)]
        if name.startswith("consumer."):
            field_name = name.removeprefix("consumer.")
            return [
                value
                for track in self.consumers.values()
                if _matches(self._stream_tags(track), tags)
                and (value := _consumer_value(track, field_name, track.rows(after, end))) is not None
            ]
        if name == "producer.bitrate_bps":
            return [
                value
                for track in self.sent.values()
                if _matches(self._stream_tags(track), tags)
                and (value := _bitrate(track, track.rows(after, end))) is not None
            ]
        if name in ("bots.sent_bitrate_bps", "bots.received_bitrate_bps"):
            tracks = self.sent.values() if name == "bots.sent_bitrate_bps" else self.consumers.values()
            return self._per_bot_bitrate(tracks, tags, after, end)
        if name == "bots.cpu_percent":
            return [
                point.cpu_percent
                for room, points in self.rooms.items()
                if room != "total" and _matches({"room": room, "topology": topology_of(room)}, tags)
                for point in points
                if point.cpu_percent is not None and after <= point.t <= end + LATE
            ]
        raise ValueError(f"no samples are recorded for {name}")

    def window(self, after: float, now: float | None = None) -> float:
        """Seconds measured from `after` to the end of the run (or to `now`, s since the start, while it runs)."""
        end = self.end if math.isfinite(self.end) else (now or 0.0)
        return max(0.0, end - after)

    def _stream_tags(self, track: StreamTrack) -> dict[str, str]:
        info = self.bots.get(track.bot)
        if info is None:
            return {"kind": track.kind}
        return {"room": info.room, "kind": track.kind, "group": info.group, "topology": info.topology}

    def _per_bot_bitrate(self, tracks: Iterable[StreamTrack], tags: dict[str, str], after: float, end: float) -> list[float]:
        """Each joined bot's bytes in the window over the seconds it was joined in the window (at least
        MIN_JOINED_S), so a stream it never got lowers its bitrate."""
        sent: dict[int, int] = {}
        for track in tracks:
            sent[track.bot] = sent.get(track.bot, 0) + sum(track.bytes[i] for i in track.rows(after, end))
        values = []
        for bot, joined in self.joined_at.items():
            info = self.bots.get(bot)
            if info is None or not _matches(self.bot_tags(info), tags):
                continue
            left = self.left_at.get(bot, info.stop if info.stop is not None else end)
            seconds = min(left, end) - max(joined, after)
            if seconds >= MIN_JOINED_S:
                values.append(sent.get(bot, 0) * 8 / seconds)
        return values

    def summary(self, name: str) -> dict:
        """Every aggregate of a metric over the whole run, untagged (for the JSON output)."""
        return summary_of(self.values(METRICS[name], {}, 0.0), self.window(0.0))

    def consumer_entries(self, report: dict | None) -> list[dict]:
        """Each consumer the bots had, with one entry per sample interval in each series (the JSON output)."""
        known = {c["consumer_id"]: c for bot in (report or {}).get("bots", []) for c in bot["consumers"]}
        out = []
        for consumer_id, track in self.consumers.items():
            info = self.bots.get(track.bot)
            final = known.get(consumer_id, {})
            out.append({
                "consumer_id": consumer_id,
                "bot": info.name if info is not None else None,
                "room": info.room if info is not None else None,
                "group": info.group if info is not None else None,
                "kind": track.kind,
                "producer_name": final.get("producer_name"),
                "series": consumer_series(track),
            })
        return out


SUMMARY_AGGREGATES = ("count", "sum", "min", "max", "avg", "p50", "p90", "p95", "p99")


def summary_of(values: list[float] | LogHistogram, window: float) -> dict:
    """Every aggregate of a metric's samples (or of a histogram of them) over a window of `window` s."""
    return {"samples": len(values), **{a: _round(aggregate(a, values, window)) for a in SUMMARY_AGGREGATES}}


def _matches(own: dict[str, str], wanted: dict[str, str]) -> bool:
    return all(own.get(tag, NO_GROUP if tag == "group" else None) == value for tag, value in wanted.items())


def _or(value: float | None, default: float) -> float:
    return default if value is None else value


def _bitrate(track: StreamTrack, rows: list[int]) -> float | None:
    seconds = sum(track.seconds[i] for i in rows)
    return sum(track.bytes[i] for i in rows) * 8 / seconds if seconds > 0 else None


def _consumer_value(track: StreamTrack, name: str, rows: list[int]) -> float | None:
    """One consumer's value of `consumer.<name>` over the rows of the window; None when it has none."""
    if not rows:
        return None
    if name == "bitrate_bps":
        return _bitrate(track, rows)
    if name in ("fraction_lost", "fraction_lost_before_recovery"):
        expected = sum(track.expected[i] for i in rows)
        lost = sum((track.lost if name == "fraction_lost" else track.lost_first)[i] for i in rows)
        return max(0, lost) / expected if expected > 0 else None
    if name in ("freezes", "freeze_ms"):
        return float(sum(getattr(track, name)[i] for i in rows)) if track.kind == "video" else None
    if name == "lost_frames":
        return float(sum(track.lost_frames[i] for i in rows))
    if name in ("jitter_ms", "rtt_ms"):
        values = [v for i in rows if (v := getattr(track, name)[i]) is not None]
        return math.fsum(values) / len(values) if values else None
    raise ValueError(f"unknown consumer metric {name!r}")


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def consumer_series(track: StreamTrack) -> dict:
    """Per interval: bitrate, loss after and before recovery, jitter, RTT, freezes and frozen time of one consumer."""
    rows = range(len(track.t))
    return {
        "t": [_rounded(track.t[i]) for i in rows],
        "bitrate_bps": [round(track.bytes[i] * 8 / track.seconds[i]) if track.seconds[i] > 0 else None for i in rows],
        "fraction_lost": [_rounded(max(0, track.lost[i]) / track.expected[i], 6) if track.expected[i] > 0 else None
                          for i in rows],
        "fraction_lost_before_recovery": [_rounded(track.lost_first[i] / track.expected[i], 6) if track.expected[i] > 0
                                          else None for i in rows],
        "jitter_ms": [_rounded(track.jitter_ms[i]) for i in rows],
        "rtt_ms": [_rounded(track.rtt_ms[i]) for i in rows],
        "freezes": [track.freezes[i] for i in rows],
        "freeze_ms": [_rounded(track.freeze_ms[i], 1) for i in rows],
    }


def _rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)
