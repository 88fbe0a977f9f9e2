"""The bots of one process: started on the ramp (and stopped at their own time when planned so), driven by one
tick timer and one pacer, sampled per interval; each sample gives the process's CPU time to the rooms in
proportion to their joined bots."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from sfuctl.encoded import EncodedTrack
from sfuctl.rtc.batching import TICK_INTERVAL  # NACK / PLI work and RTCP report checks
from sfuctl.rtc.dtls import DtlsCertificate

from .bot import Bot, BotEnv
from .http_bot import HttpBot
from .mesh import MeshBot
from .config import BotPlan, BotsConfig, access_token
from .observer import Observer, RunObserver, notify
from .pacer import Pacer
from .stats import RoomCounters, StreamSample

log = logging.getLogger(__name__)

LEAVE_TIMEOUT = 10.0


@dataclass(frozen=True)
class JoinEvent:
    """A bot finished joining, successfully or not (error set)."""

    index: int
    name: str
    room: str
    joined: bool
    join_ms: float | None
    error: str | None

    def to_dict(self) -> dict:
        return {
            "index": self.index, "name": self.name, "room": self.room, "joined": self.joined,
            "join_ms": self.join_ms, "error": self.error,
        }


class BotGroup:
    """Runs `plans` in this process from loop time `start_at` until `stop` is set; returns the bot reports.
    Joins and per-stream rows go to `observer`; each interval's counters to `on_counters` (run_bots makes the
    observer's samples of them, merged over the bot processes)."""

    def __init__(
        self,
        config: BotsConfig,
        plans: list[BotPlan],
        tracks: dict[str, EncodedTrack],
        *,
        layers: tuple[EncodedTrack, ...] = (),
        observer: RunObserver | None = None,
        on_counters: Callable[[dict[str, RoomCounters]], None] | None = None,
    ) -> None:
        self.config = config
        self.plans = plans
        self.tracks = tracks
        self.layers = layers
        self.observer = observer if observer is not None else Observer()
        self.on_counters = on_counters
        self.bots: list[Bot] = []
        self._loop = asyncio.get_running_loop()
        self._pacer = Pacer(self._loop)
        self._tick_timer: asyncio.TimerHandle | None = None
        self._sample_timer: asyncio.TimerHandle | None = None
        self._last_sample_at = 0.0
        self._last_cpu = 0.0  # time.process_time() at the last sample

    async def run(self, stop: asyncio.Event, start_at: float | None = None) -> list[dict]:
        loop = self._loop
        start = loop.time() if start_at is None else start_at
        env = BotEnv(
            url=self.config.url,
            tracks=self.tracks,
            layers=self.layers,
            certificate=DtlsCertificate.default(),
            pacer=self._pacer,
            impairment=self.config.impairment,
            seed=self.config.seed,
            connect_timeout=self.config.connect_timeout,
            join_timeout=self.config.join_timeout,
            rtcp_interval=self.config.rtcp_interval,
            decode=self.config.decode,
            data_rate=self.config.data_rate,
            started_at=time.monotonic() + (start - loop.time()),
            loop_started_at=start,
            access_token=lambda plan: access_token(self.config, plan),
            ice_restart_every=self.config.ice_restart_every,
            speakers=self.config.speakers,
            reconnect=self.config.reconnect,
            ice_tcp=self.config.ice_tcp,
            relay=self.config.relay,
            local_host=self.config.local_host,
        )
        self.bots = [_bot_class(self.config, plan)(plan, env) for plan in self.plans]
        tasks = [asyncio.create_task(self._run_bot(bot, stop, start)) for bot in self.bots]
        self._tick_timer = loop.call_at(start, self._tick)
        self._last_sample_at = start
        self._last_cpu = time.process_time()
        self._sample_timer = loop.call_at(start + self.config.sample_interval, self._sample)
        try:
            await stop.wait()
            await asyncio.wait(tasks, timeout=LEAVE_TIMEOUT)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._sample(final=True)
            for timer in (self._tick_timer, self._sample_timer):
                if timer is not None:
                    timer.cancel()
            self._pacer.close()
        now = time.monotonic()
        return [bot.report(now) for bot in self.bots]

    async def _run_bot(self, bot: Bot, stop: asyncio.Event, start: float) -> None:
        delay = start + bot.plan.start_offset - self._loop.time()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
                return  # stopped before this bot's turn: it never joins
            except asyncio.TimeoutError:
                pass
        elif stop.is_set():
            return
        leave = stop
        timer: asyncio.Task | None = None
        if bot.plan.stop_offset is not None:
            leave = asyncio.Event()
            timer = asyncio.create_task(_set_at(leave, stop, start + bot.plan.stop_offset))
        run = asyncio.create_task(bot.run(leave), name=bot.plan.name)
        joined = asyncio.create_task(bot.join_done.wait())
        try:
            await asyncio.wait([run, joined], return_when=asyncio.FIRST_COMPLETED)
            if bot.join_done.is_set():
                event = JoinEvent(bot.plan.index, bot.plan.name, bot.plan.room, bot.joined, bot.join_ms, bot.error)
                notify(lambda: self.observer.joined(event), "a join")
            await asyncio.shield(run)
        finally:
            joined.cancel()
            if timer is not None:
                timer.cancel()
            if not run.done():  # cancelled from outside: the bot still leaves
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)

    def _tick(self) -> None:
        now = time.monotonic()
        for bot in self.bots:
            if bot.status == "joined":
                try:
                    bot.tick(now)
                except Exception:  # periodic work of one bot must not stop the others
                    log.exception("periodic work of %s failed", bot.plan.name)
        self._tick_timer = self._loop.call_later(TICK_INTERVAL, self._tick)

    def _sample(self, final: bool = False) -> None:
        now = self._loop.time()
        if not final:
            self._sample_timer = self._loop.call_at(now + self.config.sample_interval, self._sample)
        interval = max(1e-3, now - self._last_sample_at)
        self._last_sample_at = now
        counters: dict[str, RoomCounters] = {}
        streams = StreamSample(interval) if self.observer.wants_streams else None
        clock = time.monotonic()
        for bot in self.bots:
            bot.collect(counters.setdefault(bot.plan.room, RoomCounters()), interval, streams, clock)
        cpu = time.process_time()
        share_cpu(counters, cpu - self._last_cpu, interval)
        self._last_cpu = cpu
        on_counters = self.on_counters
        if on_counters is not None:
            notify(lambda: on_counters(counters), "a sample")
        if streams is not None:
            notify(lambda: self.observer.streams(streams), "stream rows")


def _bot_class(config: BotsConfig, plan: BotPlan) -> type[Bot]:
    if plan.mesh:
        return MeshBot
    return Bot if config.mode == "websocket" else HttpBot


def share_cpu(counters: dict[str, RoomCounters], cpu_s: float, interval: float) -> None:
    """Give `cpu_s` seconds of CPU, used over `interval` seconds, to the rooms in proportion to their active
    (joined) bots; with none active it goes to no room."""
    active = sum(room.active for room in counters.values())
    for room in counters.values():
        room.interval_s = interval
        if active:
            room.cpu_s = cpu_s * room.active / active


async def _set_at(event: asyncio.Event, stop: asyncio.Event, at: float) -> None:
    """Set `event` at loop time `at`, or as soon as `stop` is set."""
    try:
        await asyncio.wait_for(stop.wait(), max(0.0, at - asyncio.get_running_loop().time()))
    except asyncio.TimeoutError:
        pass
    event.set()
