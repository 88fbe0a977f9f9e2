"""`sfuctl bots`: headless load-test peers publishing pre-encoded media and measuring what they receive."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import replace
from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from ..agents.controller import Controller
from ..agents.link import AgentsError, AgentsSettings, connect
from ..agents.report import agents_table
from ..bots.config import BotsConfig, default_processes, plan_bots
from ..bots.group import JoinEvent
from ..bots.impairment import ImpairmentConfig
from ..bots.observer import Observer
from ..bots.report import BotsReport, summary_table
from ..bots.runner import BotsError, ServerUnreachable, check_server, run_bots
from ..bots.stats import Sample
from ..media import default_cache_dir, default_media
from ..runtime import run
from ..units import format_bitrate
from .conventions import (
    STDOUT,
    Duration,
    command,
    json_option,
    make_console,
    on_stop_signals,
    print_error,
    write_output,
)

EXIT_OK = 0
EXIT_BOTS_FAILED = 1
EXIT_ERROR = 2


@command(
    short_help="Load the SFU with headless bots.",
    exit_codes={0: "every bot joined and ran", 1: "a bot failed (to join, or while running): see the report; or "
                "(--agents) Redis or an agent is unreachable or lost",
                2: "the server is unreachable, or a bad command line or setting"},
    epilog=(
        "Example: sfuctl bots --count 50 --rooms 10 --duration 60 --json report.json\n\n"
        "The same 5-peer call as a full mesh: sfuctl bots --count 5 --mesh --duration 30\n\n"
        "A server with access tokens: SFUCTL_AUTH_SECRET=... sfuctl bots --count 10 (one token minted per bot)\n\n"
        "Simulcast (3 encodings; a subscriber on 400 kb/s gets a lower one): "
        "sfuctl bots --count 2 --publishers 1 --simulcast --duration 30\n\n"
        "Active speaker (2 bots take 3-s turns talking; the report says how soon the server named each): "
        "sfuctl bots --count 6 --speakers 2 --duration 30\n\n"
        "Over TCP only (sfuctl serve --no-ice-udp --ice-tcp): sfuctl bots --count 4 --ice-tcp\n\n"
        "Over IPv6 (sfuctl serve --host ::1): sfuctl bots --url ws://[::1]:8080 --count 4\n\n"
        "Through the server's TURN relay (sfuctl serve --ice-server turn:...): sfuctl bots --count 4 --relay\n\n"
        "Impairment is approximate and applies per bot, both directions: --delay is added round-trip time."
    ),
)
@click.option("--url", envvar="SFUCTL_URL", default="ws://127.0.0.1:8080", show_default=True, help="Signaling URL of the SFU.")
@click.option("--whip", metavar="URL", default=None, help="Publish to this WHIP endpoint (any server) instead of --url; bots only publish.")
@click.option("--whep", metavar="URL", default=None, help="Play from this WHEP endpoint (any server) instead of --url; bots only receive.")
@click.option("--token", envvar="SFUCTL_WHIP_TOKEN", default=None, help="One access token (or --whip-token secret) for every bot: ?token= on the websocket, Bearer on --whip/--whep.")
@click.option("--auth-secret", envvar="SFUCTL_AUTH_SECRET", default=None, help="The server's --auth-secret: mint each bot its own token (its room, identity and role).")
@click.option("--count", type=click.IntRange(1, 10_000), default=10, show_default=True, help="Number of bots.")
@click.option("--rooms", type=click.IntRange(1), default=1, show_default=True, help="Spread bots over room-1..N.")
@click.option("--room", default=None, help="Put every bot in this room (instead of --rooms).")
@click.option("--publishers", type=click.IntRange(0), default=None, help="Publishers per room; the others only subscribe [default: all].")
@click.option("--audio/--no-audio", default=True, show_default=True, help="Publish audio.")
@click.option("--video/--no-video", default=True, show_default=True, help="Publish video.")
@click.option("--subscribe/--no-subscribe", default=True, show_default=True, help="Subscribe to the room's other producers.")
@click.option("--media", "media", multiple=True, type=click.Path(exists=True, dir_okay=False), help="Media file (VP8/H.264 IVF/WebM/MPEG-TS, Opus OGG/WebM); repeat for audio + video [default: generated test media].")
@click.option("--ramp", type=click.FloatRange(0.01, 1000), default=5.0, show_default=True, help="Joins per second.")
@click.option("--duration", type=Duration(0.1), default=None, help="How long to run, then leave (60, 45s, 2m) [default: until Ctrl-C].")
@click.option("--processes", type=click.IntRange(1, 256), default=None, help="OS processes to spread bots over [default: one per core].")
@json_option("Write the JSON report (docs/bots.md) to FILE, checked before the bots start.")
@click.option("--seed", type=int, default=None, help="Seed for SSRCs, timing and loss, for reproducible runs [default: random].")
@click.option("--loss", type=click.FloatRange(0, 1), default=0.0, show_default=True, help="Datagram loss per direction, 0-1.")
@click.option("--delay", type=click.FloatRange(0, 10_000), default=0.0, show_default=True, help="Added round-trip time in ms (half each way).")
@click.option("--jitter", type=click.FloatRange(0, 10_000), default=0.0, show_default=True, help="Extra random delay per datagram, 0..MS each way (order kept).")
@click.option("--bandwidth", type=click.FloatRange(8, 10_000_000), default=None, help="Token-bucket limit per direction in kb/s.")
@click.option("--decode", is_flag=True, help="Decode every received frame to prove it is intact (costs a decoder per stream).")
@click.option("--join-timeout", type=Duration(1, 600), default=20.0, show_default=True, help="Time before a bot that has not joined counts as failed (20s).")
@click.option("--data", "data_rate", type=click.FloatRange(0, 1000), default=0.0, show_default=True, help="Chat messages per second each publishing bot sends on a data channel through the SFU; every bot measures delivery, order and latency per sender (0: no data channels).")
@click.option("--mesh", is_flag=True, help="Connect the bots of each room to each other directly (a full mesh: one connection per pair); the server only relays their SDP.")
@click.option("--agents", "agents_url", metavar="REDIS_URL", envvar="SFUCTL_AGENTS", default=None, help="Run the bots on the `sfuctl agent`s registered at this Redis (redis://HOST:PORT), split by their cores.")
@click.option("--agents-secret", envvar="SFUCTL_AGENTS_SECRET", default=None, help="The secret the agents share, to sign the plans (or SFUCTL_AGENTS_SECRET).")
@click.option("--ice-restart-every", type=click.FloatRange(0.5, 86_400), default=None, metavar="SECONDS", help="Restart ICE on every joined bot's transports this often, each time from a new local port (a network change).")
@click.option("--speakers", type=click.IntRange(0), default=None, metavar="N", help="The first N publishing bots of each room take 3-s turns talking (audio levels, RFC 6464) and measure how fast the server names them the active speaker; the others stay silent.")
@click.option("--simulcast", is_flag=True, help="Publish the video as simulcast: every video --media file is an encoding, lowest first [default: 1280x720/640x360/320x180 test media].")
@click.option("--reconnect", is_flag=True, help="A bot that loses its server (signaling or media) joins its room again with backoff, e.g. on another cluster node (it always does on the server's `reconnect` notification).")
@click.option("--ice-tcp", is_flag=True, help="Reach the server over its ICE-TCP candidates (sfuctl serve --ice-tcp), as clients whose UDP is blocked do.")
@click.option("--relay", is_flag=True, help="Relay every transport through the TURN server the SFU hands out (serve --ice-server turn:...), as clients behind strict NATs do.")
def bots(
    url: str,
    whip: str | None,
    whep: str | None,
    token: str | None,
    auth_secret: str | None,
    count: int,
    rooms: int,
    room: str | None,
    publishers: int | None,
    audio: bool,
    video: bool,
    subscribe: bool,
    media: tuple[str, ...],
    ramp: float,
    duration: float | None,
    processes: int | None,
    json_path: Path | str | None,
    seed: int | None,
    loss: float,
    delay: float,
    jitter: float,
    bandwidth: float | None,
    decode: bool,
    join_timeout: float,
    data_rate: float,
    mesh: bool,
    agents_url: str | None,
    agents_secret: str | None,
    ice_restart_every: float | None,
    speakers: int | None,
    simulcast: bool,
    reconnect: bool,
    ice_tcp: bool,
    relay: bool,
) -> None:
    """Headless bots join rooms, publish pre-encoded audio/video (no encoding), subscribe to each other
    (no decoding) and report per-consumer loss, jitter, RTT, freezes and join times (RFC 3550). With
    --agents they run on load agents on other machines (docs/agents.md), with one report."""
    errors = make_console(stderr=True)
    if agents_url is not None and not agents_secret:
        sys.exit(_error("--agents needs --agents-secret (or SFUCTL_AGENTS_SECRET): the agents run only "
                        "plans signed with their secret"))
    agents = AgentsSettings(agents_url, agents_secret) if agents_url is not None and agents_secret else None
    if whip and whep:
        sys.exit(_error("give --whip or --whep, not both (run two sfuctl bots for both)"))
    mode = "whip" if whip else "whep" if whep else "websocket"
    try:
        config = BotsConfig(
            url=whip or whep or url,
            mode=mode,
            mesh=mesh,
            data_rate=data_rate,
            ice_restart_every=ice_restart_every,
            speakers=speakers,
            simulcast=simulcast,
            reconnect=reconnect,
            ice_tcp=ice_tcp,
            relay=relay,
            token=token,
            auth_secret=auth_secret,
            count=count,
            rooms=min(rooms, count),
            room=room,
            publishers=publishers,
            audio=audio,
            video=video,
            subscribe=subscribe,
            media=tuple(media),
            ramp=ramp,
            duration=duration,
            processes=min(processes or default_processes(), count),
            seed=seed if seed is not None else int.from_bytes(os.urandom(4), "big"),
            impairment=ImpairmentConfig(loss=loss, delay_ms=delay, jitter_ms=jitter, bandwidth_kbps=bandwidth),
            join_timeout=join_timeout,
            decode=decode,
            connect_timeout=min(10.0, join_timeout / 2),  # ICE/DTLS failures name themselves before the join times out
        )
    except ValueError as exc:
        sys.exit(_error(str(exc)))
    if mode == "websocket":  # an unreachable WHIP/WHEP endpoint is every bot's join error in the report
        try:
            run(check_server(config.url, timeout=5.0))
        except ServerUnreachable as exc:
            sys.exit(_error(unreachable(exc)))
    if not config.media and agents is None:  # agents make their own default media
        try:
            config = replace(config, media=_default_media(errors, config.simulcast))
        except OSError as exc:
            sys.exit(_error(f"cannot write test media to {default_cache_dir()}: {exc.strerror or exc}; "
                                    "set SFUCTL_CACHE_DIR or pass --media"))
    sys.exit(run(_run(config, json_path, errors, agents)))


def _default_media(console: Console, simulcast: bool = False) -> tuple[str, ...]:
    """The default test media (the simulcast set with `simulcast`), generated on first use behind a progress bar."""
    progress = Progress(
        TextColumn("making test media (once)"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=console, transient=True, disable=not console.is_terminal,
    )
    task = progress.add_task("media", total=None)

    def update(done: int, total: int) -> None:
        progress.start()  # shown only while media is being made: nothing when it is cached
        progress.update(task, completed=done, total=total)

    try:
        return default_media(simulcast, update)
    finally:
        progress.stop()


async def _run(config: BotsConfig, json_path: Path | str | None, console: Console, agents: AgentsSettings | None) -> int:
    stop = asyncio.Event()
    stopped_by: list[str] = []

    def on_signal(name: str) -> None:
        if not stop.is_set():
            console.print(f"{name}: every bot leaves, then the report…", highlight=False)
            stopped_by.append(name)
            stop.set()

    on_stop_signals(on_signal)
    progress = Progress(
        TextColumn("[bold]bots[/]"),
        BarColumn(bar_width=24),
        MofNCompleteColumn(),
        TextColumn("{task.fields[clock]}"),  # the run's clock: the bar's own stops once every bot has joined
        TextColumn("{task.fields[line]}"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    observer = _ProgressBar(progress, progress.add_task("bots", total=config.count, line="joining…", clock=clock(0.0)),
                            console)
    outcome = None
    try:
        with progress:
            if agents is None:
                report = await run_bots(config, observer, stop=stop)
            else:
                client = await connect(agents.url)
                try:
                    controller = Controller(client, agents.url, agents.secret)
                    report, outcome = await controller.run(config, plan_bots(config), stop=stop, observer=observer)
                finally:
                    await client.aclose()
    except ServerUnreachable as exc:
        return _error(unreachable(exc))
    except BotsError as exc:
        return _error(str(exc))
    except AgentsError as exc:
        print_error(str(exc))
        return EXIT_BOTS_FAILED
    # With the JSON report on stdout, the summary goes to stderr so that stdout stays one JSON document.
    table = summary_table(report, stopped_by[0] if stopped_by and report.stopped_by == "stop" else None)
    summary = console if json_path == STDOUT else make_console()
    summary.print(table)
    if outcome is not None:
        summary.print(agents_table(outcome))
    _print_failures(report, console)
    if json_path is not None:
        try:
            write_output(json_path, report.to_json())
        except OSError as exc:
            return _error(f"cannot write {json_path}: {exc.strerror or exc}")
        if json_path != STDOUT:
            console.print(f"report: {json_path}", highlight=False)
    if outcome is not None and outcome.error is not None:
        print_error(str(outcome.error))
        return EXIT_BOTS_FAILED
    return EXIT_BOTS_FAILED if report.failed else EXIT_OK


class _ProgressBar(Observer):
    """The bar counts the bots that settled (joined or failed); the run's clock and the live line follow the
    samples; an agent's warning is a line above the bar."""

    def __init__(self, progress: Progress, task: TaskID, console: Console) -> None:
        self.progress = progress
        self.task = task
        self.console = console
        self.settled = 0

    def joined(self, event: JoinEvent) -> None:
        self.settled += 1
        self.progress.update(self.task, completed=self.settled)

    def sample(self, t: float, sample: Sample) -> None:
        self.progress.update(self.task, line=live_line(sample), clock=clock(sample.elapsed))

    def warning(self, message: str) -> None:
        self.console.print(f"warning: {message}", highlight=False)


def unreachable(exc: ServerUnreachable) -> str:
    return f"cannot reach {exc.url} (is `sfuctl serve` running?)"


def _error(message: str) -> int:
    """The one error path: a single unwrapped line on stderr, exit code 2."""
    print_error(message)
    return EXIT_ERROR


def clock(seconds: float) -> str:
    """Elapsed time as H:MM:SS."""
    whole = int(seconds)
    return f"{whole // 3600}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def live_line(sample: Sample) -> str:
    """bots up, streams, aggregate bitrate, worst loss: one compact line."""
    total = sample.total
    worst = sample.worst_loss()
    parts = [
        f"{total.active} up" + (f", [red]{total.failed} failed[/]" if total.failed else ""),
        f"tx {total.streams_sent} streams {format_bitrate(total.sent_bitrate_bps)}",
        f"rx {total.streams_received} streams {format_bitrate(total.received_bitrate_bps)}",
    ]
    if worst is not None:
        parts.append(f"worst loss {worst[1]:.1%} ({worst[0]})")
    if total.rtt_ms is not None:
        parts.append(f"rtt {total.rtt_ms:.1f} ms")
    if total.freezes:
        parts.append(f"freezes {total.freezes}")
    return " · ".join(parts)


def _print_failures(report: BotsReport, console: Console, limit: int = 5) -> None:
    failed = [bot for bot in report.bots if bot["status"] == "failed"]
    for bot in failed[:limit]:
        console.print(f"{bot['name']} ({bot['room']}) failed: {bot['error']}", style="red", highlight=False, markup=False, soft_wrap=True)
    if len(failed) > limit:
        console.print(f"… and {len(failed) - limit} more failed bots (see the JSON report)", style="red", highlight=False)
