"""run_bots: the library entry point. Runs the bots in this process, or spread over child processes
(`python -m sfuctl.bots.child`, one JSON object per line each way), and returns the BotsReport.

Mesh bots and SFU bots go to processes of their own whenever there are enough processes (split_plans), so
each process's CPU is one topology's.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from collections import deque
from collections.abc import Callable

from sfuctl.client.signaling import SignalingClient
from sfuctl.media import default_media
from sfuctl.tokens import scrub

from .config import BotPlan, BotsConfig, load_layers, load_tracks, plan_bots
from .group import BotGroup, JoinEvent
from .observer import Observer, RunObserver, notify
from .report import BotsReport, build_report, placeholder_bot
from .stats import BitratePeaks, RoomCounters, Sample, StreamSample, merge_counters

log = logging.getLogger(__name__)

CHILD_MODULE = "sfuctl.bots.child"
# Children load their media before the common start time; this is how long the parent waits for them.
CHILD_READY_TIMEOUT = 60.0
# After stop, how long bots get to leave and report before their process is terminated.
CHILD_LEAVE_TIMEOUT = 20.0
START_MARGIN = 0.2
LINE_LIMIT = 64 * 1024 * 1024  # a child's report is one line


class BotsError(Exception):
    """A run cannot start (unusable media or config); the message is one line for the user."""


class ServerUnreachable(BotsError):
    """The signaling URL does not answer."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(f"cannot reach {url} ({reason})")
        self.url = url
        self.reason = reason


async def check_server(url: str, timeout: float = 5.0) -> None:
    """Open and close one websocket; raise ServerUnreachable when that fails."""
    try:
        client = await SignalingClient.connect(url, timeout=timeout)
    except ConnectionError as exc:
        reason = str(exc).split(": ", 1)[-1] if ": " in str(exc) else str(exc)
        raise ServerUnreachable(scrub(url), reason) from None
    await client.close()


def media_paths(config: BotsConfig) -> list[str]:
    """The media files of a run: the configured ones, else the default media (made on first use)."""
    return list(config.media or default_media(config.simulcast))


async def run_bots(
    config: BotsConfig,
    observer: RunObserver | None = None,
    *,
    stop: asyncio.Event | None = None,
    plans: list[BotPlan] | None = None,
    start_at: float | None = None,
    child_processes: bool = False,
) -> BotsReport:
    """Run `config` until its duration ends or `stop` is set; every bot leaves cleanly, then the report.

    `observer` hears the start, each bot's join, a Sample every `config.sample_interval` seconds and, when it
    wants them, the per-stream rows of each interval. `plans` replaces plan_bots(config) (e.g. bots that leave
    at their own time). `start_at` (Unix time) is when the plans' offsets start counting (load agents start
    together); default: as soon as the bots are ready. Raises ServerUnreachable or BotsError before any bot
    starts. `child_processes` runs even a single process's bots in a child process, so that the caller's event
    loop stays responsive (a load agent's heartbeat).
    """
    stop = stop if stop is not None else asyncio.Event()
    observer = observer if observer is not None else Observer()
    if config.mode == "websocket":  # a WHIP/WHEP endpoint that does not answer is each bot's join error
        await check_server(config.url, config.connect_timeout)
    paths = await asyncio.to_thread(media_paths, config)
    try:
        tracks = load_tracks(paths, audio=config.audio, video=config.video)
        layers = load_layers(paths) if config.simulcast else ()
    except ValueError as exc:
        raise BotsError(str(exc)) from None
    plans = plans if plans is not None else plan_bots(config)
    loop = asyncio.get_running_loop()
    started_wall = time.time()
    started = time.monotonic()
    t0 = started  # until the first bot's start is known
    stopped_by = "stop"
    peaks = BitratePeaks()

    def on_counters(counters: dict[str, RoomCounters]) -> None:
        now = time.monotonic()
        sample = Sample.from_counters(now - started, counters)
        peaks.add(sample)
        observer.sample(now - t0, sample)

    def finish(reason: str) -> None:
        nonlocal stopped_by
        if not stop.is_set():
            stopped_by = reason
            stop.set()

    timers: list[asyncio.TimerHandle] = []

    def starting(delay: float) -> None:
        """The first bot starts in `delay` seconds: the duration counts from then."""
        nonlocal t0
        t0 = time.monotonic() + delay
        observer.started(t0)
        if config.duration:
            timers.append(loop.call_later(delay + config.duration, finish, "duration"))

    try:
        if config.processes == 1 and not child_processes:
            group = BotGroup(config, plans, tracks, layers=layers, observer=observer, on_counters=on_counters)
            delay = max(0.0, start_at - time.time()) if start_at is not None else 0.0
            starting(delay)
            bots = await group.run(stop, start_at=loop.time() + delay)
        else:
            bots = await _run_processes(config, plans, paths, stop, observer, on_counters, starting, start_at)
    finally:
        for timer in timers:
            timer.cancel()
    return build_report(
        config,
        bots,
        media=paths,
        started_at=started_wall,
        duration=time.monotonic() - started,
        stopped_by=stopped_by,
        peaks=peaks,
    )


class _Child:
    """One bot process and what it said."""

    def __init__(self, number: int, process: asyncio.subprocess.Process, plans: list[BotPlan]) -> None:
        self.number = number
        self.process = process
        self.plans = plans
        self.ready = asyncio.Event()
        self.error: str | None = None
        self.report: list[dict] | None = None
        self.joins: dict[int, JoinEvent] = {}
        self.stderr: deque[str] = deque(maxlen=20)

    def send(self, message: dict | str) -> None:
        stdin = self.process.stdin
        if stdin is None or stdin.is_closing() or self.process.returncode is not None:
            return
        stdin.write(((json.dumps(message) if isinstance(message, dict) else message) + "\n").encode())

    def failure(self) -> str:
        last = self.stderr[-1] if self.stderr else "no output"
        return f"bot process {self.number} exited with code {self.process.returncode} before reporting: {last}"


async def _run_processes(
    config: BotsConfig,
    plans: list[BotPlan],
    paths: list[str],
    stop: asyncio.Event,
    observer: RunObserver,
    on_counters: Callable[[dict[str, RoomCounters]], None],
    on_start: Callable[[float], None],
    start_at: float | None,
) -> list[dict]:
    count = min(config.processes, len(plans))
    shares = split_plans(plans, count)
    children: list[_Child] = []
    rounds: dict[int, list[dict[str, RoomCounters]]] = {}
    live = count  # processes still reporting

    def on_round(number: int, counters: dict[str, RoomCounters]) -> None:
        """Merge the n-th sample of every live process into one."""
        parts = rounds.setdefault(number, [])
        parts.append(counters)
        if len(parts) >= live:
            del rounds[number]
            notify(lambda: on_counters(merge_counters(parts)), "a sample")

    def on_reader_done(task: asyncio.Task) -> None:
        nonlocal live
        live -= 1

    for number in range(count):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", CHILD_MODULE,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,  # Ctrl-C reaches the parent only; it tells the children to stop
            limit=LINE_LIMIT,
        )
        child = _Child(number, process, shares[number])
        children.append(child)
        child.send({
            "config": config.to_dict(), "plans": [p.to_dict() for p in child.plans], "media": paths,
            "streams": observer.wants_streams,
        })
    readers = [asyncio.create_task(_read_child(c, observer, on_round)) for c in children]
    stderr_readers = [asyncio.create_task(_read_stderr(c)) for c in children]
    for task in readers:
        task.add_done_callback(on_reader_done)
    try:
        ready = asyncio.gather(*(c.ready.wait() for c in children))
        stopped = asyncio.ensure_future(stop.wait())
        await asyncio.wait([ready, stopped], timeout=CHILD_READY_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        ready.cancel()
        stopped.cancel()
        failed = [c.error for c in children if c.error]
        if failed:
            raise BotsError(failed[0])
        if not stop.is_set():
            if not all(c.ready.is_set() for c in children):
                raise BotsError(f"bot processes did not load their media within {CHILD_READY_TIMEOUT:g} s")
            now = time.time()
            start_at = max(start_at, now) if start_at is not None else now + START_MARGIN
            for child in children:
                child.send({"start": start_at})
            on_start(start_at - now)
            await stop.wait()
    finally:
        for child in children:
            child.send("stop")
        await asyncio.wait(readers, timeout=CHILD_LEAVE_TIMEOUT)
        await asyncio.gather(*(_reap(child.process) for child in children))
        for task in [*readers, *stderr_readers]:
            task.cancel()
        await asyncio.gather(*readers, *stderr_readers, return_exceptions=True)
    bots: list[dict] = []
    for child in children:
        if child.report is not None:
            bots.extend(child.report)
        else:
            bots.extend(placeholder_bot(plan, child.joins.get(plan.index), child.failure()) for plan in child.plans)
    return sorted(bots, key=lambda bot: bot["index"])


def split_plans(plans: list[BotPlan], count: int) -> list[list[BotPlan]]:
    """The plans of each of `count` processes (1 <= count <= len(plans)): with at least as many processes as
    kinds of bot (mesh or not), each process gets one kind only, the kinds getting processes in proportion
    to their bots (at least one each); within a kind, and with fewer processes, bots go round-robin."""
    kinds: dict[bool, list[BotPlan]] = {}
    for plan in plans:
        kinds.setdefault(plan.mesh, []).append(plan)
    if count < len(kinds):
        return [plans[number::count] for number in range(count)]
    shares = dict.fromkeys(kinds, 1)
    for _ in range(count - len(kinds)):  # each further process to the kind with the most bots per process
        busiest = max(kinds, key=lambda kind: len(kinds[kind]) / shares[kind])
        shares[busiest] += 1
    return [kinds[kind][number::shares[kind]] for kind in kinds for number in range(shares[kind])]


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Wait for a bot process to exit; terminate it, then kill it, when it does not."""
    for end in (None, process.terminate, process.kill):
        if process.returncode is not None:
            return
        if end is not None:
            end()
        try:
            await asyncio.wait_for(process.wait(), 5.0)
        except asyncio.TimeoutError:
            continue


async def _read_child(
    child: _Child,
    observer: RunObserver,
    on_round: Callable[[int, dict[str, RoomCounters]], None],
) -> None:
    stdout = child.process.stdout
    assert stdout is not None
    while True:
        line = await stdout.readline()
        if not line:
            break
        try:
            message = json.loads(line)
        except ValueError:
            child.stderr.append(line.decode(errors="replace").rstrip())
            continue
        kind = message.get("type")
        if kind == "ready":
            child.ready.set()
        elif kind == "error":
            child.error = message.get("message", "bot process failed")
            child.ready.set()
        elif kind == "join":
            event = JoinEvent(**message["event"])
            child.joins[event.index] = event
            notify(lambda: observer.joined(event), "a join")
        elif kind == "counters":
            rooms = {room: RoomCounters.from_dict(data) for room, data in message["rooms"].items()}
            on_round(message["n"], rooms)
        elif kind == "streams" and observer.wants_streams:
            rows = StreamSample.from_dict(message)
            notify(lambda: observer.streams(rows), "stream rows")
        elif kind == "report":
            child.report = message["bots"]
    await child.process.wait()
    child.ready.set()
    if child.report is None and child.error is None:
        child.error = child.failure()


async def _read_stderr(child: _Child) -> None:
    stderr = child.process.stderr
    assert stderr is not None
    while True:
        line = await stderr.readline()
        if not line:
            return
        text = line.decode(errors="replace").rstrip()
        if text:
            child.stderr.append(text)
            log.debug("bot process %d: %s", child.number, text)
