"""`sfuctl stats`: one stats snapshot of a running SFU (--once), or a live dashboard that rides out restarts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TextIO

import click
from rich.live import Live

from ..client.stats import StatsFailure, fetch_snapshot, watch
from ..dashboard import SORTS, Dashboard
from ..runtime import run
from .conventions import (
    STDOUT,
    CommandError,
    Duration,
    command,
    json_option,
    make_console,
)


@command(
    exit_codes={0: "done (or Ctrl-C)", 1: "the server's answer is not a version-1 snapshot",
                2: "the server is unreachable (with --once; the live views keep retrying and say so), "
                   "or a bad command line",
                3: "the server refused: it needs an admin access token (--token)"},
)
@click.option("--url", envvar="SFUCTL_URL", default="ws://127.0.0.1:8080", show_default=True, help="Signaling URL of the server.")
@click.option("--token", envvar="SFUCTL_TOKEN", default=None, help="An admin access token, for a server started with --auth-secret (sfuctl token create --admin).")
@click.option("--room", default=None, help="Show only this room.")
@click.option("--sort", type=click.Choice(list(SORTS)), default="worst", show_default=True, help="Row order within a room (worst first by default).")
@click.option("--interval", type=Duration(0.1, 60), default=1.0, show_default=True, help="Time between updates (1, 500ms, 2s).")
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@click.option("--rooms", is_flag=True, help="One line per room (worst first) instead of one per stream.")
@json_option("Write snapshots as JSON, one per line (docs/stats.md), instead of the dashboard.")
def stats(
    url: str, token: str | None, room: str | None, sort: str, interval: float, once: bool, rooms: bool,
    json_path: Path | str | None,
) -> None:
    """Watch a running SFU: per-consumer bitrate, loss, jitter, RTT, NACK/PLI and quality score.

    \b
    Examples:
      sfuctl stats --url ws://127.0.0.1:8080      # live dashboard, Ctrl-C to quit
      sfuctl stats --room demo --sort loss
      sfuctl stats --rooms                         # every room on one line each, worst first
      sfuctl stats --once --json | jq '.rooms[].consumers[] | {peer_name, fraction_lost, rtt_ms}'
      sfuctl stats --token "$(sfuctl token create --admin)"   # a server with --auth-secret
    """
    out = None if json_path in (None, STDOUT) else open(json_path, "w")  # noqa: SIM115 (closed below)
    try:
        if once:
            snapshot = run(fetch_snapshot(url, room, token=token))
            if json_path is not None:
                _json_line(snapshot, out)
            else:
                make_console().print(Dashboard().view(snapshot, url=url, room=room, sort=sort, rooms=rooms))
        elif json_path is not None:
            run(watch(url, interval, room, lambda s: _json_line(s, out), _warn_reconnecting, token))
        else:
            run(_live(url, room, sort, interval, token, rooms))
    except StatsFailure as exc:
        raise CommandError(str(exc), exc.status) from None
    except KeyboardInterrupt:
        pass
    finally:
        if out is not None:
            out.close()


def _json_line(snapshot: dict, out: TextIO | None) -> None:
    """One snapshot as one JSON line, flushed at once (a reader may follow the file or the pipe)."""
    click.echo(json.dumps(snapshot), file=out)
    if out is not None:
        out.flush()


def _warn_reconnecting(reason: str) -> None:
    click.echo(f"warning: {reason}; reconnecting", err=True)


class LiveView:
    """The dashboard on screen: redrawn in place on each snapshot, with a banner while disconnected."""

    def __init__(self, live: Live, url: str, room: str | None, sort: str, rooms: bool = False) -> None:
        self.live = live
        self.url = url
        self.room = room
        self.sort = sort
        self.rooms = rooms
        self.dashboard = Dashboard()
        self.snapshot: dict | None = None
        self.banner: str | None = None

    def on_snapshot(self, snapshot: dict) -> None:
        self.dashboard.update(snapshot)
        self.snapshot = snapshot
        self.banner = None
        self.redraw()

    def on_disconnected(self, reason: str) -> None:
        self.banner = f"reconnecting: {reason}" if self.url in reason else f"reconnecting to {self.url}: {reason}"
        self.redraw()

    def redraw(self) -> None:
        """Redraw in the terminal's height less one line, so that the header always shows."""
        view = self.dashboard.view(self.snapshot, url=self.url, room=self.room, sort=self.sort, banner=self.banner,
                                   max_lines=self.live.console.height - 1, rooms=self.rooms)
        self.live.update(view, refresh=True)


async def _live(url: str, room: str | None, sort: str, interval: float, token: str | None, rooms: bool) -> None:
    with Live(console=make_console(), auto_refresh=False, vertical_overflow="crop") as live:
        view = LiveView(live, url, room, sort, rooms)
        view.redraw()
        await watch(url, interval, room, view.on_snapshot, view.on_disconnected, token)
