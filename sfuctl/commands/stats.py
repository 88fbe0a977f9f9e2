"""`sfuctl stats`: one stats snapshot of a running SFU (--once), or a live dashboard that rides out restarts."""

from __future__ import annotations

import asyncio
import json
from typing import Callable

import click
from rich.console import Console
from rich.live import Live

from ..client.signaling import SignalingClient, SignalingError
from ..dashboard import SORTS, Dashboard
from ..runtime import run
from ..server.stats import validate_snapshot

EXIT_BAD_SNAPSHOT = 1
EXIT_UNREACHABLE = 2
CONNECT_TIMEOUT = 5.0
RETRY_DELAYS = (0.5, 5.0)  # first and longest wait between reconnection attempts (doubling)


class StatsFailure(Exception):
    """Ends the command with a one-line message and an exit status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# -- library API ---------------------------------------------------------------------------------------------
async def fetch_snapshot(url: str, room: str | None = None, timeout: float = CONNECT_TIMEOUT) -> dict:
    """One snapshot via `getStats`; StatsFailure when the server is unreachable or its answer is unreadable."""
    try:
        client = await SignalingClient.connect(url, timeout=timeout)
    except ConnectionError as exc:
        raise StatsFailure(str(exc), EXIT_UNREACHABLE) from None
    try:
        snapshot = await client.request("getStats", timeout=timeout, **_room_param(room))
    except (SignalingError, asyncio.TimeoutError) as exc:
        raise StatsFailure(f"getStats failed on {url}: {exc or 'timed out'}", EXIT_UNREACHABLE) from None
    finally:
        await client.close()
    return _checked(snapshot, url)


async def watch(
    url: str,
    interval: float,
    room: str | None,
    on_snapshot: Callable[[dict], None],
    on_disconnected: Callable[[str], None],
) -> None:
    """Subscribe to the server's stats stream and hand over each snapshot, forever.

    A lost or refused connection calls on_disconnected(reason) and retries with a doubling delay; a server
    that refuses the subscription or sends an unreadable snapshot raises StatsFailure.
    """
    delay = RETRY_DELAYS[0]
    while True:
        try:
            client = await SignalingClient.connect(url, timeout=CONNECT_TIMEOUT)
        except ConnectionError as exc:
            on_disconnected(str(exc))
        else:
            try:
                await client.request("subscribeStats", interval=interval, **_room_param(room))
                delay = RETRY_DELAYS[0]
                while True:
                    on_snapshot(_checked(await _next_stats(client, max(5.0, 3 * interval)), url))
            except SignalingError as exc:
                if exc.code != "closed":
                    raise StatsFailure(f"{url} refused subscribeStats: {exc}", EXIT_BAD_SNAPSHOT) from None
                on_disconnected("the server closed the connection")
            except (ConnectionError, asyncio.TimeoutError) as exc:
                on_disconnected(str(exc) or "timed out")
            finally:
                await client.close()
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_DELAYS[1])


async def _next_stats(client: SignalingClient, timeout: float) -> dict:
    """The next 'stats' notification; ConnectionError when the connection closes or stays silent."""
    while True:
        getter = asyncio.ensure_future(client.notifications.get())
        closed = asyncio.ensure_future(client.closed.wait())
        done, pending = await asyncio.wait({getter, closed}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        if getter in done:
            method, params = getter.result()
            if method == "stats":
                return params
            continue
        raise ConnectionError("the server closed the connection" if closed in done else f"no stats for {timeout:.0f} s")


def _checked(snapshot: dict, url: str) -> dict:
    try:
        validate_snapshot(snapshot)
    except ValueError as exc:
        raise StatsFailure(f"{url} sent a snapshot this sfuctl cannot read ({exc})", EXIT_BAD_SNAPSHOT) from None
    return snapshot


def _room_param(room: str | None) -> dict:
    return {"room": room} if room else {}


# -- command ---------------------------------------------------------------------------------------------------
@click.command()
@click.option("--url", envvar="SFUCTL_URL", default="ws://127.0.0.1:8080", show_default=True, help="Signaling URL of the server.")
@click.option("--room", default=None, help="Show only this room.")
@click.option("--sort", type=click.Choice(list(SORTS)), default="worst", show_default=True, help="Row order within a room (worst first by default).")
@click.option("--interval", type=click.FloatRange(0.1, 60), default=1.0, show_default=True, help="Seconds between updates.")
@click.option("--once", is_flag=True, help="Print one snapshot and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print snapshots as JSON, one per line (docs/stats.md), not the dashboard.")
def stats(url: str, room: str | None, sort: str, interval: float, once: bool, as_json: bool) -> None:
    """Watch a running SFU: per-consumer bitrate, loss, jitter, RTT, NACK/PLI and quality score.

    \b
    Examples:
      sfuctl stats --url ws://127.0.0.1:8080      # live dashboard, Ctrl-C to quit
      sfuctl stats --room demo --sort loss
      sfuctl stats --once --json | jq '.rooms[].consumers[] | {peer_name, fraction_lost, rtt_ms}'
    Exit status: 0 done, 1 the server's answer is not a version-1 snapshot, 2 the server is unreachable
    (with --once; the live views keep retrying and say so).
    """
    try:
        if once:
            snapshot = run(fetch_snapshot(url, room))
            if as_json:
                click.echo(json.dumps(snapshot))
            else:
                Console().print(Dashboard().view(snapshot, url=url, room=room, sort=sort))
        elif as_json:
            run(watch(url, interval, room, lambda s: click.echo(json.dumps(s)), _warn_reconnecting))
        else:
            run(_live(url, room, sort, interval))
    except StatsFailure as exc:
        click.echo(f"sfuctl stats: {exc}", err=True)
        raise click.exceptions.Exit(exc.status) from None
    except KeyboardInterrupt:
        pass


def _warn_reconnecting(reason: str) -> None:
    click.echo(f"sfuctl stats: {reason}; reconnecting", err=True)


class LiveView:
    """The dashboard on screen: redrawn in place on each snapshot, with a banner while disconnected."""

    def __init__(self, live: Live, url: str, room: str | None, sort: str) -> None:
        self.live = live
        self.url = url
        self.room = room
        self.sort = sort
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
        view = self.dashboard.view(self.snapshot, url=self.url, room=self.room, sort=self.sort, banner=self.banner)
        self.live.update(view, refresh=True)


async def _live(url: str, room: str | None, sort: str, interval: float) -> None:
    with Live(console=Console(), auto_refresh=False, vertical_overflow="crop") as live:
        view = LiveView(live, url, room, sort)
        view.redraw()
        await watch(url, interval, room, view.on_snapshot, view.on_disconnected)
