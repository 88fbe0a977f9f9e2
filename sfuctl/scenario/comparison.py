"""The topologies side by side: the same call through the SFU and as a full mesh, per peer.

Per topology, over its rooms, from `from_s` (the longest warm-up among the thresholds, 0 without any) to the
end of the run: the peers that joined; the ICE/DTLS connections each had (counted by the bots: 2 for an SFU
bot that publishes and subscribes, one per other peer in a mesh); uplink and downlink per peer (avg of
bots.sent_bitrate_bps and bots.received_bitrate_bps); the bot processes' CPU per peer (avg of
bots.cpu_percent); loss after NACK recovery (avg of consumer.fraction_lost); and the media the server
received from and sent to those rooms (mean over its stats snapshots of the rooms' producer and consumer
bitrates: 0 for a mesh, whose media never passes through the server).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from rich import box
from rich.console import Group
from rich.table import Table
from rich.text import Text

from ..units import format_bitrate
from .metrics import METRICS, Recorder
from .model import Scenario


@dataclass(frozen=True)
class TopologyRow:
    """One topology's call, per peer (None: nothing measured)."""

    topology: str
    rooms: tuple[str, ...]
    from_s: float
    peers: int
    transports_per_peer: float | None
    uplink_bps: float | None
    downlink_bps: float | None
    cpu_percent: float | None
    fraction_lost: float | None
    server_in_bps: float | None
    server_out_bps: float | None

    def to_dict(self) -> dict:
        data = asdict(self)
        data["rooms"] = list(self.rooms)
        return {key: round(value, 6) if isinstance(value, float) else value for key, value in data.items()}


def comparison_start(scenario: Scenario) -> float:
    """Where the comparison starts: the longest warm-up (`after`) among the thresholds."""
    return max((threshold.after for threshold in scenario.thresholds), default=0.0)


def compare(scenario: Scenario, recorder: Recorder) -> list[TopologyRow]:
    """One row per topology of the scenario, in its order, from what `recorder` holds after the run."""
    after = comparison_start(scenario)
    rows = []
    for topology in scenario.topologies:
        joined = [bot for bot in recorder.joined_at if recorder.bots[bot].topology == topology]
        rooms = scenario.rooms_of(topology)
        server_in, server_out = _server_media(recorder, rooms, after)
        rows.append(TopologyRow(
            topology=topology,
            rooms=tuple(rooms),
            from_s=after,
            peers=len(joined),
            transports_per_peer=_mean([recorder.transports[bot] for bot in joined if bot in recorder.transports]),
            uplink_bps=_average(recorder, "bots.sent_bitrate_bps", topology, after),
            downlink_bps=_average(recorder, "bots.received_bitrate_bps", topology, after),
            cpu_percent=_average(recorder, "bots.cpu_percent", topology, after),
            fraction_lost=_average(recorder, "consumer.fraction_lost", topology, after),
            server_in_bps=server_in,
            server_out_bps=server_out,
        ))
    return rows


def comparison_lines(rows: list[TopologyRow]) -> list[tuple[str, list[str]]]:
    """(label, one cell per topology) for each line of the printed and HTML tables."""
    lines: list[tuple[str, Callable[[TopologyRow], str]]] = [
        ("peers joined", lambda row: str(row.peers)),
        ("connections per peer", lambda row: _or_dash(row.transports_per_peer, lambda v: f"{v:.3g}")),
        ("uplink per peer", lambda row: _or_dash(row.uplink_bps, format_bitrate)),
        ("downlink per peer", lambda row: _or_dash(row.downlink_bps, format_bitrate)),
        ("bot CPU per peer", lambda row: _or_dash(row.cpu_percent, lambda v: f"{v:.1f}% of a core")),
        ("loss after NACK", lambda row: _or_dash(row.fraction_lost, lambda v: f"{v:.2%}")),
        ("server media in", lambda row: _or_dash(row.server_in_bps, format_bitrate)),
        ("server media out", lambda row: _or_dash(row.server_out_bps, format_bitrate)),
    ]
    return [(label, [cell(row) for row in rows]) for label, cell in lines]


def comparison_caption(rows: list[TopologyRow]) -> str:
    start = rows[0].from_s if rows else 0.0
    return (f"Averages over each topology's bots from {start:g} s on. A mesh peer has one connection per other "
            "peer and sends its media on each; its media never passes through the server, which only relays "
            "the signaling.")


def comparison_table(rows: list[TopologyRow]) -> Group:
    """The terminal table (one line per figure, one column per topology) and what it shows."""
    table = Table(title="topologies (per peer)", title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False,
                  show_edge=False, collapse_padding=True)
    table.add_column("", no_wrap=True)
    for row in rows:
        table.add_column(row.topology, justify="right", no_wrap=True)
    for label, cells in comparison_lines(rows):
        table.add_row(label, *cells)
    return Group(table, Text(comparison_caption(rows), style="dim"))


def _server_media(recorder: Recorder, rooms: list[str], after: float) -> tuple[float | None, float | None]:
    """Mean over the server's snapshots of the bitrate it received from / sent to `rooms` (a room it does not
    list carries nothing); None without snapshots."""
    snapshots = [by_room for t, by_room in recorder.server_rooms if after <= t <= recorder.end]
    if not snapshots:
        return None, None
    received = [math.fsum(by_room.get(room, (0.0, 0.0))[0] for room in rooms) for by_room in snapshots]
    sent = [math.fsum(by_room.get(room, (0.0, 0.0))[1] for room in rooms) for by_room in snapshots]
    return _mean(received), _mean(sent)


def _average(recorder: Recorder, metric: str, topology: str, after: float) -> float | None:
    return _mean(recorder.values(METRICS[metric], {"topology": topology}, after))


def _mean(values: Sequence[float]) -> float | None:
    return math.fsum(values) / len(values) if values else None


def _or_dash(value: float | None, fmt: Callable[[float], str]) -> str:
    return "–" if value is None else fmt(value)
