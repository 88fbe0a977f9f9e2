"""What `sfuctl run` shows while it runs.

On a terminal (TerminalView): a progress bar over the stages, the bots' live line, one line per room (so
every room shows even when the dashboard is taller than the screen) and the `sfuctl stats` dashboard fed by
the server's stats stream, redrawn twice a second; it is erased at the end, when the verdict is printed. Elsewhere, e.g. in CI (PlainView): a
plain line every few seconds and one per notable event, so logs stay readable.
"""

from __future__ import annotations

import time

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.segment import Segment
from rich.table import Table
from rich.text import Text

from ..bots.group import JoinEvent
from ..bots.stats import Sample
from ..dashboard import Dashboard
from ..units import format_bitrate
from .model import Scenario
from .runner import ScenarioObserver, Verdict

PLAIN_INTERVAL = 5.0  # seconds between the plain progress lines
REFRESH_PER_SECOND = 2
MAX_ROOM_LINES = 8
BAR_WIDTH = 40


def bots_line(sample: Sample) -> str:
    """Bots up, streams and bitrate each way, loss after and before NACK recovery, RTT, freezes."""
    total = sample.total
    parts = [
        f"{total.active}/{total.bots} up" + (f", {total.failed} failed" if total.failed else ""),
        f"tx {total.streams_sent} streams {format_bitrate(total.sent_bitrate_bps)}",
        f"rx {total.streams_received} streams {format_bitrate(total.received_bitrate_bps)}",
        f"loss {total.loss:.2%} (before NACK {total.loss_before_recovery:.2%})",
    ]
    if total.rtt_ms is not None:
        parts.append(f"rtt {total.rtt_ms:.1f} ms")
    parts.append(f"freezes {total.freezes}")
    return " · ".join(parts)


def rooms_table(sample: Sample, limit: int = MAX_ROOM_LINES) -> Table:
    """The bots' view per room: bots up, received bitrate, loss after / before NACK, jitter, RTT, freezes; over
    `limit` rooms, the worst `limit` and how many more."""
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True)
    for header in ("room", "up", "rx", "loss", "pre-NACK", "jit ms", "rtt ms", "freezes"):
        table.add_column(header, justify="left" if header == "room" else "right", no_wrap=True)
    rooms = list(sample.rooms.values())
    if len(rooms) > limit:  # the worst first: failed joins, then loss, then freezes
        rooms.sort(key=lambda room: (room.failed, room.loss, room.freezes), reverse=True)
    for room in rooms[:limit]:
        table.add_row(
            room.room, f"{room.active}/{room.bots}", format_bitrate(room.received_bitrate_bps), f"{room.loss:.2%}",
            f"{room.loss_before_recovery:.2%}", _ms(room.jitter_ms), _ms(room.rtt_ms), str(room.freezes),
            style="red" if room.failed else None,
        )
    if len(rooms) > limit:
        table.caption = f"+{len(rooms) - limit} more rooms (the worst are shown)"
    return table


class _Fit:
    """A renderable cut to one line less than the terminal, so the live view never scrolls (rich's Live
    draws everything once more when it stops, which would leave the overflow on screen)."""

    def __init__(self, renderable: RenderableType) -> None:
        self.renderable = renderable

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        lines = console.render_lines(self.renderable, options.update(height=None), pad=False)
        lines = lines[: max(1, console.height - 1)]
        for index, line in enumerate(lines):
            yield from line
            if index < len(lines) - 1:
                yield Segment.line()


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"


def stage_label(scenario: Scenario, t: float) -> str:
    index = scenario.stage_at(t)
    return f"stage {index + 1}/{len(scenario.stages)}: {scenario.stages[index].bots} bots"


class _Progress(ScenarioObserver):
    """What every view keeps (where the run is), and what it does by default: nothing. A view is a context
    manager around the run; `stopping("Ctrl-C")` is called when Ctrl-C or SIGTERM stops it."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.t0: float | None = None
        self.sample_: Sample | None = None

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def elapsed(self) -> float:
        return min(self.scenario.duration, time.monotonic() - self.t0) if self.t0 is not None else 0.0

    def started(self, t0: float) -> None:
        self.t0 = t0

    def stopping(self, signal_name: str) -> None:
        return None


class TerminalView(_Progress):
    """The live view on a terminal; use as a context manager around the run."""

    def __init__(self, scenario: Scenario, console: Console) -> None:
        super().__init__(scenario)
        self.console = console
        self.dashboard = Dashboard()
        self.snapshot_: dict | None = None
        self.url = ""
        self.status = "starting the server…"
        self.banner: str | None = None
        self.live = Live(console=console, get_renderable=self.render, refresh_per_second=REFRESH_PER_SECOND,
                         vertical_overflow="crop", transient=True)

    def __enter__(self) -> TerminalView:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.live.__exit__(None, None, None)

    def print(self, text: str, style: str | None = None) -> None:
        """A line above the live view."""
        self.live.console.print(text, style=style, highlight=False, markup=False, soft_wrap=True)

    # -- observer -----------------------------------------------------------------------------------------
    def media_progress(self, done: int, total: int) -> None:
        self.status = f"making the test media (once): {done * 100 // max(1, total)}%"

    def server_ready(self, url: str, embedded: bool) -> None:
        self.url = url
        self.status = f"server {url} ({'embedded' if embedded else 'given'}) · loading the bots…"

    def started(self, t0: float) -> None:
        super().started(t0)
        self.status = "running"

    def sample(self, t: float, sample: Sample) -> None:
        self.sample_ = sample

    def snapshot(self, snapshot: dict) -> None:
        self.dashboard.update(snapshot)
        self.snapshot_ = snapshot
        self.banner = None

    def joined(self, event: JoinEvent) -> None:
        if not event.joined:
            self.print(f"{event.name} ({event.room}) could not join: {event.error}", style="red")

    def server_lost(self, reason: str) -> None:
        self.banner = f"stats stream lost: {reason}; reconnecting"

    def aborting(self, verdict: Verdict) -> None:
        self.print(f"aborting: {verdict.threshold.label} failed (abort_on_fail); every bot leaves…", style="bold red")

    def warning(self, message: str) -> None:
        self.print(f"warning: {message}", style="yellow")

    def stopping(self, signal_name: str) -> None:
        self.print(f"{signal_name}: every bot leaves, then the verdict and the outputs (marked incomplete)…")

    # -- drawing ------------------------------------------------------------------------------------------
    def render(self) -> RenderableType:
        scenario = self.scenario
        t = self.elapsed()
        head = Table.grid(padding=(0, 1))
        head.add_column(no_wrap=True)
        head.add_column(max_width=BAR_WIDTH)
        head.add_column(no_wrap=True)
        head.add_row(
            Text.assemble(("sfuctl run ", "bold"), (scenario.name, "bold cyan")),
            ProgressBar(total=scenario.duration, completed=t),
            f"{t:.0f}/{scenario.duration:.0f} s · {stage_label(scenario, t)}",
        )
        parts: list[RenderableType] = [head]
        if self.t0 is None:
            parts.append(Text(self.status, style="dim"))
        elif self.sample_ is not None:
            parts.append(Text("bots " + bots_line(self.sample_)))
            if len(self.sample_.rooms) > 1:
                parts.append(rooms_table(self.sample_))
        else:
            parts.append(Text("bots joining…", style="dim"))
        if self.url:  # the dashboard gets the lines left, so that it cuts itself with "+N more"
            used = len(self.console.render_lines(Group(*parts), self.console.options, pad=False))
            left = max(1, self.console.height - 1 - used)
            parts.append(self.dashboard.view(self.snapshot_, url=self.url, banner=self.banner, max_lines=left))
        return _Fit(Group(*parts))


class PlainView(_Progress):
    """Progress as plain lines (stdout is not a terminal, e.g. CI)."""

    def __init__(self, scenario: Scenario, console: Console) -> None:
        super().__init__(scenario)
        self.console = console
        self.stage = -1
        self.next_line = 0.0
        self.server: dict | None = None
        self.media_announced = False

    def print(self, text: str) -> None:
        self.console.print(text, highlight=False, markup=False, soft_wrap=True)

    def media_progress(self, done: int, total: int) -> None:
        if not self.media_announced:
            self.media_announced = True
            self.print("making the test media (once)…")

    def server_ready(self, url: str, embedded: bool) -> None:
        self.print(f"server {url} ({'embedded' if embedded else 'given'})")

    def sample(self, t: float, sample: Sample) -> None:
        self.sample_ = sample
        stage = self.scenario.stage_at(t)
        if stage != self.stage:
            self.stage = stage
            self.print(f"[{t:5.1f} s] {stage_label(self.scenario, t)}")
        if t >= self.next_line:
            self.next_line = (t // PLAIN_INTERVAL + 1) * PLAIN_INTERVAL
            server = ""
            if self.server is not None:
                totals = self.server["server"]
                server = f" · server cpu {totals['cpu_percent']:.0f}% out {format_bitrate(totals['bitrate_out_bps'])}"
            self.print(f"[{t:5.1f}/{self.scenario.duration:.0f} s] {bots_line(sample)}{server}")

    def snapshot(self, snapshot: dict) -> None:
        self.server = snapshot

    def joined(self, event: JoinEvent) -> None:
        if not event.joined:
            self.print(f"{event.name} ({event.room}) could not join: {event.error}")

    def server_lost(self, reason: str) -> None:
        self.print(f"stats stream lost: {reason}; reconnecting")

    def aborting(self, verdict: Verdict) -> None:
        self.print(f"aborting: {verdict.threshold.label} failed (abort_on_fail); every bot leaves…")

    def stopping(self, signal_name: str) -> None:
        self.print(f"{signal_name}: every bot leaves, then the verdict and the outputs (marked incomplete)…")

    def warning(self, message: str) -> None:
        self.print(f"warning: {message}")


class QuietView(_Progress):
    """--quiet: nothing while the run goes."""
