"""The `sfuctl stats` view: a stats snapshot (docs/stats.md) rendered as rich renderables.

Dashboard keeps what only the client can keep (a short bitrate history per consumer, for the sparklines);
`view()` builds a renderable that picks its columns from the width it is given, 80 columns and up, and, given a
height (`max_lines`, a live view), fits in it: the worst rooms and streams first, "+N more" for the rest, the
header always on top. `rooms=True` gives one line per room instead of one per stream.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from .bots.stats import room_sort_key
from .units import format_bitrate

SPARK_BLOCKS = "▁▂▃▄▅▆▇█"
HISTORY = 12
ROOM_LINES = 4  # a room's blank line, title, table header and rule, before any stream row
WIDE = 120  # from this width on, the codec, the subscriber's bandwidth estimate and a sparkline get columns

# Row colouring: (warn, bad) thresholds of fields where higher is worse; the score is lower-is-worse.
THRESHOLDS: dict[str, tuple[float, float]] = {
    "fraction_lost": (0.005, 0.02),
    "jitter_ms": (20.0, 50.0),
    "rtt_ms": (150.0, 300.0),
}
SCORE_THRESHOLDS = (8, 5)  # below 8 warns, below 5 is bad
SEVERITY_STYLES = ("", "yellow", "bold red")

# --sort keys: each orders worst (or biggest) first; ties fall back to the peer names.
SORTS: dict[str, Callable[[dict], tuple]] = {
    "worst": lambda c: (-severity(c), c["score"], -c["fraction_lost"], _peers(c)),
    "score": lambda c: (c["score"], -c["fraction_lost"], _peers(c)),
    "loss": lambda c: (-c["fraction_lost"], c["score"], _peers(c)),
    "rtt": lambda c: (-(c["rtt_ms"] if c["rtt_ms"] is not None else -1.0), _peers(c)),
    "jitter": lambda c: (-c["jitter_ms"], _peers(c)),
    "bitrate": lambda c: (-c["bitrate_bps"], _peers(c)),
    "peer": lambda c: _peers(c),
}


def _peers(consumer: dict) -> tuple[str, str, str]:
    return (consumer["peer_name"], consumer["producer_peer_name"], consumer["kind"])


def severity(consumer: dict) -> int:
    """0 fine, 1 warn, 2 bad: the worst of the consumer's loss, jitter, RTT and score."""
    level = 0
    for field, (warn, bad) in THRESHOLDS.items():
        value = consumer.get(field)
        if value is not None:
            level = max(level, 2 if value > bad else 1 if value > warn else 0)
    warn, bad = SCORE_THRESHOLDS
    score = consumer["score"]
    return max(level, 2 if score < bad else 1 if score < warn else 0)


def kind_cell(consumer: dict) -> str:
    """The consumer's kind, with the simulcast layer it forwards ("video L1"; "L?" before its first keyframe)."""
    if "spatial_layer" not in consumer:
        return consumer["kind"]
    layer = consumer["spatial_layer"]
    return f"{consumer['kind']} L{'?' if layer is None else layer}"


def peer_pair(peer: str, source: str, width: int) -> str:
    """'bob ← alice' in at most `width` characters, shortening the longer name first."""
    if width < 5:
        raise ValueError(f"a peer pair needs a width of at least 5, got {width}")
    room = width - 3
    while len(peer) + len(source) > room:
        if len(peer) >= len(source):
            peer = peer[: len(peer) - 2] + "…"
        else:
            source = source[: len(source) - 2] + "…"
    return f"{peer} ← {source}"


def sparkline(values: list[float]) -> str:
    """Unicode blocks scaled to the largest value; all-zero history draws the lowest block."""
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK_BLOCKS[0] * len(values)
    last = len(SPARK_BLOCKS) - 1
    return "".join(SPARK_BLOCKS[min(last, int(v / top * last + 0.5))] for v in values)


class Dashboard:
    """Client-side state of the live view: each consumer's recent bitrates, keyed by consumer id."""

    def __init__(self, history: int = HISTORY) -> None:
        self.history = history
        self.bitrates: dict[str, deque[float]] = {}

    def update(self, snapshot: dict) -> None:
        """Record one snapshot's bitrates; consumers that are gone are forgotten."""
        seen: set[str] = set()
        for room in snapshot["rooms"]:
            for consumer in room["consumers"]:
                seen.add(consumer["id"])
                self.bitrates.setdefault(consumer["id"], deque(maxlen=self.history)).append(consumer["bitrate_bps"])
        for ident in [i for i in self.bitrates if i not in seen]:
            del self.bitrates[ident]

    def view(
        self, snapshot: dict | None, *, url: str, room: str | None = None, sort: str = "worst", banner: str | None = None,
        max_lines: int | None = None, rooms: bool = False,
    ) -> DashboardView:
        """A frame for `snapshot` (None: nothing received yet); `banner` is shown above it, e.g. 'reconnecting';
        `max_lines` fits it in that many lines; `rooms` shows one line per room."""
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}; expected one of {', '.join(SORTS)}")
        return DashboardView(self, snapshot, url=url, room=room, sort=sort, banner=banner, max_lines=max_lines,
                             rooms=rooms)


class DashboardView:
    """One frame of the dashboard; lays itself out for the width rich gives it."""

    def __init__(
        self, dashboard: Dashboard, snapshot: dict | None, *, url: str, room: str | None, sort: str, banner: str | None,
        max_lines: int | None = None, rooms: bool = False,
    ) -> None:
        self.dashboard = dashboard
        self.snapshot = snapshot
        self.url = url
        self.room = room
        self.sort = sort
        self.banner = banner
        self.max_lines = max_lines
        self.rooms = rooms

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        wide = options.max_width >= WIDE
        parts: list[RenderableType] = []
        if self.banner:
            parts.append(Text(self.banner, style="bold white on red"))
        if self.snapshot is None:
            parts.append(Text(f"waiting for the first snapshot from {self.url}", style="dim"))
            yield Group(*parts)
            return
        parts.extend(self._header(wide))
        rooms = [r for r in self.snapshot["rooms"] if self.room is None or r["name"] == self.room]
        if not rooms:
            parts.append(Text(f"no room named {self.room!r}" if self.room else "no rooms", style="dim"))
        elif self.rooms:
            parts.extend(self._rooms_overview(rooms))
        else:
            shown = self._fit(rooms, None if self.max_lines is None else self.max_lines - len(parts))
            for room, rows in shown:
                parts.extend(self._room(room, wide, rows))
            if len(shown) < len(rooms):
                parts.append(Text(f"+{len(rooms) - len(shown)} more rooms (the worst are shown; sfuctl stats --rooms "
                                  "lists them all)", style="dim"))
        yield Group(*parts)

    def _fit(self, rooms: list[dict], budget: int | None) -> list[tuple[dict, int]]:
        """(room, stream rows) to show within `budget` lines (None: all): when they do not all fit, the worst
        rooms first, each with at least one row; a room cut short ends with a "+N more streams" line."""
        if budget is None or sum(ROOM_LINES + max(1, len(r["consumers"])) for r in rooms) <= budget:
            return [(room, len(room["consumers"])) for room in rooms]
        ordered = sorted(rooms, key=_room_badness)
        least = ROOM_LINES + 2  # one row and its "+N more streams" line
        count = len(ordered)
        while count > 1 and count * least + (count < len(ordered)) > budget:
            count -= 1
        left = budget - (count < len(ordered))  # the "+N more rooms" line
        shown = []
        for index, room in enumerate(ordered[:count]):
            total = max(1, len(room["consumers"]))
            room_budget = left - (count - index - 1) * least  # the rooms after this one keep their least
            rows = total if ROOM_LINES + total <= room_budget else max(1, room_budget - ROOM_LINES - 1)
            shown.append((room, min(rows, len(room["consumers"]))))
            left -= ROOM_LINES + rows + (rows < total)
        return shown

    def _rooms_overview(self, rooms: list[dict]) -> list[RenderableType]:
        """One line per room, worst first: peers, streams, bitrate in and out, worst loss and score."""
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
        on_nodes = "cluster" in self.snapshot
        for header in ("room", *(("node",) if on_nodes else ()), "peers", "prod", "cons", "in", "out", "worst loss", "min score", "red/yellow"):
            table.add_column(header, justify="left" if header in ("room", "node") else "right", no_wrap=True)
        ordered = sorted(rooms, key=_room_badness)
        shown = ordered if self.max_lines is None else ordered[: max(1, self.max_lines - 6)]
        for room in shown:
            consumers = room["consumers"]
            levels = [severity(c) for c in consumers]
            table.add_row(
                room["name"], *((room.get("node", ""),) if on_nodes else ()), str(len(room["peers"])), str(len(room["producers"])), str(len(consumers)),
                format_bitrate(sum(p["bitrate_bps"] for p in room["producers"])),
                format_bitrate(sum(c["bitrate_bps"] for c in consumers)),
                f"{max((c['fraction_lost'] for c in consumers), default=0.0) * 100:.1f}%",
                str(min((c["score"] for c in consumers), default=10)),
                f"{levels.count(2)}/{levels.count(1)}",
                style=SEVERITY_STYLES[max(levels, default=0)],
            )
        if len(shown) < len(ordered):
            table.caption = f"+{len(ordered) - len(shown)} more rooms"
        return [Text(""), table]

    def _header(self, wide: bool) -> list[RenderableType]:
        server = self.snapshot["server"]
        stamp = time.strftime("%H:%M:%S", time.localtime(self.snapshot["time"]))
        title = Text.assemble(("sfuctl stats ", "bold"), (self.url, "cyan"), f"  {stamp}")
        if wide:
            title.append(f"  up {_duration(server['uptime_s'])}", style="dim")
        cluster = self.snapshot.get("cluster")
        if cluster is not None:  # one line per node, each sampled at its own time: never added up
            return [title, *(self._node_line(node, node["id"] == cluster["node"]) for node in cluster["nodes"])]
        return [title, self._totals(server), *self._pipes_line(server)]

    def _node_line(self, node: dict, here: bool) -> Text:
        name = Text.assemble(("node ", "dim"), (node["id"], "bold"), (" (this one)" if here else ""), "  ")
        if node["server"] is None:
            return name.append(node["error"] or "no answer", style="red")
        sampled = time.strftime("%H:%M:%S", time.localtime(node["time"])) + f".{int(node['time'] % 1 * 1000):03d}"
        return name.append_text(self._totals(node["server"])).append(f"  sampled {sampled}", style="dim")

    @staticmethod
    def _totals(server: dict) -> Text:
        return Text.assemble(
            ("rooms ", "dim"), str(server["rooms"]),
            ("  peers ", "dim"), str(server["peers"]),
            ("  prod ", "dim"), str(server["producers"]),
            ("  cons ", "dim"), str(server["consumers"]),
            ("  in ", "dim"), format_bitrate(server["bitrate_in_bps"]),
            ("  out ", "dim"), format_bitrate(server["bitrate_out_bps"]),
            ("  CPU ", "dim"), f"{server['cpu_percent']:.0f}%",
        )  # fmt: skip

    @staticmethod
    def _pipes_line(server: dict) -> list[RenderableType]:
        """One line for the pipes between workers (rooms spanning workers), yellow when one dropped datagrams."""
        pipes = [p for p in server.get("pipes", []) if p["streams_out"] or p["streams_in"]]
        if not pipes:
            return []
        dropped = sum(p["dropped_foreign"] + p["dropped_invalid"] + p["unknown_ssrc"] for p in pipes)
        ends = "  ".join(f"{p.get('from_worker', '?')}→{p['worker']} {p['streams_out']} streams {p['packets_sent']} pkts" for p in pipes)
        return [Text(f"pipes · {ends} · {dropped} dropped", style=SEVERITY_STYLES[1] if dropped else "dim")]

    def _room(self, room: dict, wide: bool, rows: int) -> list[RenderableType]:
        """The room's title line and its consumer table, cut to its first `rows` rows in --sort order."""
        producers = room["producers"]
        consumers = sorted(room["consumers"], key=SORTS[self.sort])
        workers = sorted({p.get("worker", 0) for p in room["peers"]})
        spans = f" on workers {','.join(map(str, workers))}" if len(workers) > 1 else ""
        title = Text.assemble(
            "\nroom ", (room["name"], "bold"), f" on node {room['node']}" if "node" in room else "",
            f" · {len(room['peers'])} peers{spans} · {len(producers)} producers ",
            f"{format_bitrate(sum(p['bitrate_bps'] for p in producers))} in · {len(consumers)} consumers ",
            f"{format_bitrate(sum(c['bitrate_bps'] for c in consumers))} out",
        )  # fmt: skip
        table = Table(box=box.SIMPLE_HEAD, show_edge=False, collapse_padding=True)
        pair_width = 34 if wide else 20
        table.add_column("peer ← from", no_wrap=True, overflow="ellipsis", max_width=pair_width)
        table.add_column("kind", no_wrap=True)
        if wide:
            table.add_column("codec", no_wrap=True)
        table.add_column("bitrate", justify="right", no_wrap=True)
        if wide:  # the server's estimate of what the subscriber's link takes (transport-cc), "–" without it
            table.add_column("estimate", justify="right", no_wrap=True)
            table.add_column("uplink", justify="right", no_wrap=True)  # what arrives from the publisher, all tracks
        table.add_column("loss", justify="right", no_wrap=True)
        table.add_column("jit ms", justify="right", no_wrap=True)
        table.add_column("rtt ms", justify="right", no_wrap=True)
        table.add_column("nack/pli", justify="right", no_wrap=True)
        table.add_column("score", justify="right", no_wrap=True)
        if wide:
            table.add_column(f"bitrate, last {self.dashboard.history}", no_wrap=True)
        if not consumers:
            table.caption = "no consumers"
        elif rows < len(consumers):
            table.caption = f"+{len(consumers) - rows} more streams"
        estimates, uplinks = subscriber_estimates(room), publisher_uplinks(room)
        for c in consumers[:rows]:
            estimate, uplink = estimates.get(c["peer"]), uplinks.get(c.get("producer_peer", ""))
            cells = [
                peer_pair(c["peer_name"], c["producer_peer_name"], pair_width),
                kind_cell(c),
                *([c["codec"]] if wide else []),
                format_bitrate(c["bitrate_bps"]),
                *([format_bitrate(estimate) if estimate is not None else "–"] if wide else []),
                *([format_bitrate(uplink) if uplink is not None else "–"] if wide else []),
                f"{c['fraction_lost'] * 100:.1f}%",
                f"{c['jitter_ms']:.1f}",
                "–" if c["rtt_ms"] is None else f"{c['rtt_ms']:.0f}",
                f"{c['nack_count']}/{c['pli_count']}",
                str(c["score"]),
            ]
            if wide:
                cells.append(sparkline(list(self.dashboard.bitrates.get(c["id"], ()))))
            table.add_row(*cells, style=SEVERITY_STYLES[severity(c)])
        return [title, table, *self._data_line(room)]

    @staticmethod
    def _data_line(room: dict) -> list[RenderableType]:
        """One line of data channel totals, yellow when messages were dropped; nothing without data channels."""
        producers, consumers = room.get("data_producers", []), room.get("data_consumers", [])
        if not producers:
            return []
        dropped = sum(p["dropped"] for p in producers) + sum(c["dropped"] for c in consumers)
        return [
            Text(
                f"data · {len(producers)} channels · {sum(p['messages_in'] for p in producers)} messages in · "
                f"{sum(c['messages_out'] for c in consumers)} relayed · {dropped} dropped",
                style=SEVERITY_STYLES[1] if dropped else "",
            )
        ]


def subscriber_estimates(room: dict) -> dict[str, float]:
    """Peer id -> the server's available outgoing bitrate towards it (its receive transport's estimate)."""
    estimates = {}
    for peer in room["peers"]:
        for transport in peer.get("transports", []):
            if transport.get("available_outgoing_bitrate_bps") is not None:
                estimates[peer["id"]] = transport["available_outgoing_bitrate_bps"]
    return estimates


def publisher_uplinks(room: dict) -> dict[str, float]:
    """Peer id -> what arrived from it over the server's last report interval on its send transports (its own
    send estimate at work: media, retransmissions and probes; every transport that carries producers)."""
    uplinks: dict[str, float] = {}
    for peer in room["peers"]:
        for transport in peer.get("transports", []):
            if transport.get("producers") and transport.get("incoming_bitrate_bps") is not None:
                uplinks[peer["id"]] = uplinks.get(peer["id"], 0.0) + transport["incoming_bitrate_bps"]
    return uplinks


def _room_badness(room: dict) -> tuple:
    """Worst room first: its worst stream's severity, then its lowest score, then the name."""
    consumers = room["consumers"]
    return (-max((severity(c) for c in consumers), default=0), min((c["score"] for c in consumers), default=10),
            room_sort_key(room["name"]))


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
