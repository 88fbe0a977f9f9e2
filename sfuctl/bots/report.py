"""The end of a run: BotsReport (the JSON report, schema in docs/bots.md) and its summary table."""

from __future__ import annotations

import datetime
import json
from dataclasses import dataclass

from rich import box
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .config import BotPlan, BotsConfig
from .group import JoinEvent
from .stats import BitratePeaks, percentile, room_sort_key

SCHEMA = "sfuctl.bots.report/1"


@dataclass
class BotsReport:
    """Everything a run measured: per room and total summaries, and every bot with its consumers."""

    started_at: str
    duration_s: float
    stopped_by: str
    config: dict
    media: list[str]
    rooms: list[dict]
    total: dict
    bots: list[dict]
    agents: list[dict] | None = None  # the load agents that ran the bots (docs/agents.md)

    @property
    def failed(self) -> int:
        """Bots that tried to join and could not."""
        return sum(1 for bot in self.bots if bot["status"] == "failed")

    def to_dict(self) -> dict:
        return {
            "schema": SCHEMA,
            "started_at": self.started_at,
            "duration_s": self.duration_s,
            "stopped_by": self.stopped_by,
            "config": self.config,
            "media": self.media,
            "summary": {"rooms": self.rooms, "total": self.total},
            "bots": self.bots,
            "agents": self.agents,
        }

    def to_json(self) -> str:
        """The report as the JSON document of docs/bots.md."""
        return json.dumps(self.to_dict(), indent=1, allow_nan=False) + "\n"


def build_report(
    config: BotsConfig, bots: list[dict], *, media: list[str], started_at: float, duration: float, stopped_by: str,
    peaks: BitratePeaks | None = None,
) -> BotsReport:
    """The report of a run of `duration` seconds; `peaks` holds the highest per-interval bitrates seen live."""
    peaks = peaks if peaks is not None else BitratePeaks()
    rooms: dict[str, list[dict]] = {}
    for bot in bots:
        rooms.setdefault(bot["room"], []).append(bot)
    return BotsReport(
        started_at=datetime.datetime.fromtimestamp(started_at, datetime.timezone.utc).isoformat(timespec="seconds"),
        duration_s=round(duration, 3),
        stopped_by=stopped_by,
        config={**config.to_dict(), "token": _hidden(config.token), "auth_secret": _hidden(config.auth_secret)},  # never write secrets
        media=media,
        rooms=[summarize(name, rooms[name], duration, peaks) for name in sorted(rooms, key=room_sort_key)],
        total=summarize("total", bots, duration, peaks),
        bots=bots,
    )


def summarize(name: str, bots: list[dict], duration_s: float, peaks: BitratePeaks) -> dict:
    """One summary row: joins, streams, bitrate, pooled loss, jitter/RTT/join percentiles, freezes.

    Bitrates are a mean (bytes over the run's `duration_s`) and a peak (the highest sample interval, from
    `peaks`): a sum of each stream's own bitrate would add up streams that never flowed at the same time.
    """
    consumers = [c for bot in bots for c in bot["consumers"]]
    received = [c for c in consumers if c["packets"]]
    expected = sum(c["expected"] for c in consumers)
    lost = sum(max(0, c["packets_lost"]) for c in consumers)
    lost_first = sum(c["lost_before_recovery"] for c in consumers)
    joins = [bot["join_ms"] for bot in bots if bot["join_ms"] is not None]
    jitters = [c["jitter_ms"] for c in received]
    rtts = [bot["recv_rtt_ms"] for bot in bots if bot["recv_rtt_ms"] is not None]
    first_frames = [c["first_frame_ms"] for c in consumers if c["kind"] == "video" and c["first_frame_ms"] is not None]
    speakers = [bot["speaker"] for bot in bots if bot.get("speaker") is not None]
    named = [value for speaker in speakers for value in speaker["named_ms"]]
    sent_mean = _mean_bps(sum(s["bytes"] for bot in bots for s in bot["sent"]), duration_s)
    received_mean = _mean_bps(sum(c["bytes"] for c in consumers), duration_s)
    return {
        "room": name,
        "bots": len(bots),
        "joined": sum(1 for bot in bots if bot["joined"]),
        "failed": sum(1 for bot in bots if bot["status"] == "failed"),
        "streams_sent": sum(1 for bot in bots for s in bot["sent"] if s["packets"]),
        "streams_received": len(consumers),
        "sent_bitrate_bps": sent_mean,  # the mean, kept under its version-1 name
        "received_bitrate_bps": received_mean,
        "sent_mean_bps": sent_mean,
        "sent_peak_bps": peaks.sent.get(name, 0.0),
        "received_mean_bps": received_mean,
        "received_peak_bps": peaks.received.get(name, 0.0),
        "packets_sent": sum(s["packets"] for bot in bots for s in bot["sent"]),
        "packets_received": sum(c["packets"] for c in consumers),
        "fraction_lost": lost / expected if expected else 0.0,
        "fraction_lost_before_recovery": lost_first / expected if expected else 0.0,
        "jitter_p50_ms": percentile(jitters, 0.5),
        "jitter_p95_ms": percentile(jitters, 0.95),
        "rtt_p50_ms": percentile(rtts, 0.5),
        "rtt_p95_ms": percentile(rtts, 0.95),
        "freezes": sum(c["freezes"] for c in consumers),
        "freeze_ms": sum(c["freeze_ms"] for c in consumers),
        "first_frame_p50_ms": percentile(first_frames, 0.5),
        "first_frame_p95_ms": percentile(first_frames, 0.95),
        "join_p50_ms": percentile(joins, 0.5),
        "join_p95_ms": percentile(joins, 0.95),
        "speaker_turns": sum(speaker["turns"] for speaker in speakers),
        "speaker_named_p50_ms": percentile(named, 0.5),
        "speaker_named_p95_ms": percentile(named, 0.95),
        "speaker_missed": sum(speaker["missed"] for speaker in speakers),
        "speaker_misnamed": sum(speaker["misnamed"] for speaker in speakers),
    }


def _mean_bps(octets: int, seconds: float) -> float:
    return round(octets * 8 / seconds, 1) if seconds > 0 else 0.0


def placeholder_bot(plan: BotPlan, join: JoinEvent | None, error: str) -> dict:
    """The report entry of a bot whose process died before reporting."""
    joined = join is not None and join.joined
    return {
        "index": plan.index,
        "name": plan.name,
        "room": plan.room,
        "peer_id": None,
        "publisher": plan.publish,
        "subscriber": plan.subscribe,
        "impaired": plan.impaired,
        "mesh": plan.mesh,
        "transports": 0,
        "ice_restarts": 0,
        "reconnects": 0,
        "status": "disconnected" if joined else "failed",
        "joined": joined,
        "error": None if joined else error,
        "errors": [error] if joined else [],
        "join_ms": join.join_ms if join is not None else None,
        "joined_at_s": None,
        "left_at_s": None,
        "send_rtt_ms": None,
        "recv_rtt_ms": None,
        "sent": [],
        "consumers": [],
        "data": None,
        "speaker": None,
    }


SUMMARY_NOTE = ("bots: joined/planned · rx Mb/s: mean over the run (bytes received / run time) / peak (the highest "
                "1 s sum of concurrent streams) · loss: after NACK recovery / before it · RTT: ICE consent checks")


def summary_table(report: BotsReport, stopped_by: str | None = None) -> RenderableType:
    """Per room and total: bots joined/failed, streams, mean/peak bitrate, loss, jitter and join percentiles, RTT,
    freezes; then what the columns mean. `stopped_by` says how the run ended (e.g. "Ctrl-C") when the report's
    own word, "stop", is too vague."""
    table = Table(
        title=f"sfuctl bots · {report.duration_s:.0f} s · stopped by {stopped_by or report.stopped_by}",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        collapse_padding=True,
        show_edge=False,
    )
    headers = ("room", "bots", "streams\ntx/rx", "rx Mb/s\nmean/peak", "loss %\nafter/pre",
               "jitter ms\np50/p95", "RTT\nms", "freezes", "join ms\np50/p95")
    for header in headers:
        table.add_column(header, justify="left" if header == "room" else "right", no_wrap=True)
    rows = report.rooms + [report.total]
    for index, row in enumerate(rows):
        bots = f"{row['joined']}/{row['bots']}"
        table.add_row(
            row["room"],
            f"[red]{bots}[/]" if row["failed"] else bots,
            f"{row['streams_sent']}/{row['streams_received']}",
            f"{row['received_mean_bps'] / 1e6:.1f}/{row['received_peak_bps'] / 1e6:.1f}",
            f"{row['fraction_lost'] * 100:.2f}/{row['fraction_lost_before_recovery'] * 100:.2f}",
            f"{_ms(row['jitter_p50_ms'])}/{_ms(row['jitter_p95_ms'])}",
            _ms(row["rtt_p50_ms"]),
            str(row["freezes"]),
            f"{_ms(row['join_p50_ms'], 0)}/{_ms(row['join_p95_ms'], 0)}",
            style="bold" if index == len(rows) - 1 else None,
        )
    parts: list[RenderableType] = [table, Text(SUMMARY_NOTE, style="dim")]
    total = report.total
    if report.config.get("speakers") is not None:
        parts.append(Text(
            f"active speaker: {total['speaker_turns']} turns · named after "
            f"{_ms(total['speaker_named_p50_ms'], 0)}/{_ms(total['speaker_named_p95_ms'], 0)} ms p50/p95 · "
            f"{total['speaker_missed']} missed · {total['speaker_misnamed']} misnamed"
        ))
    return Group(*parts)


def _ms(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _hidden(secret: str | None) -> str | None:
    return "***" if secret else None
