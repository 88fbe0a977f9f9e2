"""Agent: `sfuctl agent`. Registers in Redis (name, cores, CPU, version), waits for a signed plan, runs its
share of the bots exactly as a local run would (run_bots), streams its per-second samples and its final bot
records back to the controller, and waits again.

An agent runs one plan at a time, only from a controller that knows the shared secret and runs the same
sfuctl version; it refuses anything else in one line on the run's stream and in its own output.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable
from dataclasses import replace

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from .. import __version__
from ..bots.config import BotPlan, BotsConfig, load_tracks
from ..bots.group import JoinEvent
from ..bots.observer import Observer
from ..bots.runner import BotsError, check_server, media_paths, run_bots
from ..bots.stats import Sample, StreamSample
from ..scenario.histogram import LogHistogram
from ..scenario.metrics import METRICS, BotInfo, Recorder
from .cpu import BUSY_WARNING, MachineCpu
from .link import (
    HEARTBEAT_INTERVAL, HEARTBEAT_TTL, INBOX_LENGTH, READ_BLOCK_MS, RUN_TTL, AgentsError, agent_key, inbox_key,
    redis_clock, run_key, verify,
)

log = logging.getLogger(__name__)

PLAN_MAX_AGE = 60.0  # s: an older plan is a replay, not a controller waiting for an answer
START_TIMEOUT = 120.0  # s: a plan whose start does not come by then is dropped
CPU_WARNING_EVERY = 10.0  # s between two warnings of a busy machine
WINDOW_METRICS = tuple(name for name, metric in METRICS.items() if metric.timing == "window")


class Agent:
    """One load agent on the Redis at `url`; `say` prints a line for the operator."""

    def __init__(
        self, client: aioredis.Redis, url: str, name: str, secret: str, processes: int, say: Callable[[str], None]
    ) -> None:
        self.client = client
        self.url = url
        self.name = name
        self.secret = secret
        self.processes = processes
        self.say = say
        self.cores = os.cpu_count() or 1
        self.cpu = MachineCpu()
        self.cpu_percent: float | None = None
        self.current: AgentRun | None = None
        self._last_warning = -CPU_WARNING_EVERY

    async def serve(self, stop: asyncio.Event) -> None:
        """Register, then run the plans that come until `stop` is set; AgentsError when Redis goes away."""
        key = agent_key(self.name)
        if await self.client.exists(key):
            raise AgentsError(f"an agent named {self.name} is already registered at {self.url}: give each agent "
                              "its own --name")
        await self.client.delete(inbox_key(self.name))  # messages for an earlier agent of this name are void
        await self._heartbeat("idle")
        self.say(f"agent {self.name} registered at {self.url}: {self.cores} cores, {self.processes} bot "
                 f"process(es), sfuctl {__version__}; waiting for work")
        beats = asyncio.create_task(self._heartbeats(stop))
        reader = asyncio.create_task(self._read_inbox(stop))
        try:
            done, _ = await asyncio.wait([beats, reader], return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()  # a Redis failure ends the agent with its error
        finally:
            if self.current is not None:
                self.current.stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.current.task, START_TIMEOUT)
            for task in (beats, reader):
                task.cancel()
            await asyncio.gather(beats, reader, return_exceptions=True)
            with contextlib.suppress(RedisError, OSError):
                await self.client.delete(key)

    async def _heartbeat(self, state: str) -> None:
        key = agent_key(self.name)
        fields = {
            "name": self.name, "host": socket.gethostname(), "cores": self.cores, "processes": self.processes,
            "version": __version__, "state": state,
            "cpu_percent": "" if self.cpu_percent is None else self.cpu_percent,
        }
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.hset(key, mapping=fields)
            pipe.pexpire(key, int(HEARTBEAT_TTL * 1000))
            await pipe.execute()

    async def _heartbeats(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), HEARTBEAT_INTERVAL)
            self.cpu_percent = self.cpu.percent()
            busy = self.cpu_percent is not None and self.cpu_percent > BUSY_WARNING
            if busy and self.current is not None and time.monotonic() - self._last_warning >= CPU_WARNING_EVERY:
                self._last_warning = time.monotonic()
                self.say(f"warning: this machine's CPU is at {self.cpu_percent:.0f}% (over {BUSY_WARNING:.0f}%): "
                         "a saturated load generator reports false loss and jitter; use more agents or fewer bots")
            if not stop.is_set():
                await self._heartbeat("running" if self.current is not None else "idle")

    async def _read_inbox(self, stop: asyncio.Event) -> None:
        last = "0-0"
        while not stop.is_set():
            answer = await self.client.xread({inbox_key(self.name): last}, block=READ_BLOCK_MS, count=10)
            for _, entries in answer:
                for entry_id, fields in entries:
                    last = entry_id
                    await self._handle(fields)

    async def _handle(self, fields: dict[str, str]) -> None:
        try:
            body = verify(fields, self.secret)
        except AgentsError as exc:
            await self._refuse(fields, str(exc))
            return
        kind, run = body.get("kind"), body.get("run")
        current = self.current
        if kind == "plan":
            await self._take(body, fields)
        elif current is not None and run == current.run_id:
            if kind == "start" and not current.start_at.done():
                current.start_at.set_result(float(body["at"]))
            elif kind == "stop":
                current.stop.set()

    async def _take(self, body: dict, fields: dict[str, str]) -> None:
        if body.get("version") != __version__:
            await self._refuse(fields, f"agent {self.name} runs sfuctl {__version__} and the plan is for sfuctl "
                                       f"{body.get('version')}: install the same version on every machine")
            return
        offset, _ = await redis_clock(self.client)
        age = time.time() + offset - float(body.get("issued", 0))
        if age > PLAN_MAX_AGE:
            await self._refuse(fields, f"agent {self.name} got a plan issued {age:.0f} s ago (a replay?); ignored")
            return
        if self.current is not None:
            await self._refuse(fields, f"agent {self.name} is busy with run {self.current.run_id}")
            return
        self.current = AgentRun(self, body)
        self.current.task = asyncio.create_task(self._run(self.current))

    async def _run(self, run: AgentRun) -> None:
        self.say(f"run {run.run_id}: {len(run.plans)} bots against {run.config.url}")
        try:
            outcome = await run.execute()
        except (RedisError, OSError) as exc:
            outcome = f"lost Redis ({exc})"
        except Exception as exc:  # the agent goes on waiting for work; the controller hears of the error
            log.exception("run %s failed", run.run_id)
            outcome = f"failed: {exc}"
            with contextlib.suppress(RedisError, OSError):
                await run.post("error", {"message": f"agent {self.name}: {exc}"})
        finally:
            self.current = None
        self.say(f"run {run.run_id}: {outcome}; waiting for work")

    async def _refuse(self, fields: dict[str, str], reason: str) -> None:
        """Say why, here and (when the entry names a run) on that run's stream."""
        self.say(f"refused: {reason}")
        try:
            run = json.loads(fields.get("body", "{}")).get("run")
        except (ValueError, AttributeError):
            run = None
        if isinstance(run, str) and run.isalnum():
            await self.client.xadd(run_key(run), {"agent": self.name, "type": "refused",
                                                  "data": json.dumps({"reason": reason})})


class AgentRun:
    """One plan on this agent: load the media, say ready, start at the controller's time, report."""

    def __init__(self, agent: Agent, body: dict) -> None:
        self.agent = agent
        self.run_id: str = body["run"]
        config = BotsConfig.from_dict(body["config"])
        self.plans = [BotPlan.from_dict(plan) for plan in body["plans"]]
        kinds = len({plan.mesh for plan in self.plans})  # mesh and SFU bots keep processes of their own
        processes = max(kinds, min(agent.processes, len(self.plans)))
        self.config = replace(config, processes=processes)
        self.measure: dict | None = body.get("measure")
        self.start_at: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.stop = asyncio.Event()
        self.task: asyncio.Task | None = None
        self._queue: asyncio.Queue[tuple[str, dict] | None] = asyncio.Queue()

    async def post(self, kind: str, data: dict) -> None:
        key = run_key(self.run_id)
        async with self.agent.client.pipeline(transaction=False) as pipe:
            pipe.xadd(key, {"agent": self.agent.name, "type": kind, "data": json.dumps(data, allow_nan=False)})
            pipe.expire(key, RUN_TTL)
            await pipe.execute()

    async def _sender(self) -> None:
        """Posts in order what the bots' callbacks queue."""
        while (item := await self._queue.get()) is not None:
            await self.post(*item)

    async def execute(self) -> str:
        config = self.config
        try:
            if config.mode == "websocket":
                await check_server(config.url, config.connect_timeout)
            paths = await asyncio.to_thread(media_paths, config)
            await asyncio.to_thread(load_tracks, paths, audio=config.audio, video=config.video)
        except (BotsError, ValueError, OSError) as exc:
            await self.post("error", {"message": f"agent {self.agent.name}: {exc}"})
            return f"could not start: {exc}"
        config = replace(config, media=tuple(paths))
        await self.post("ready", {"bots": len(self.plans), "cores": self.agent.cores})
        started = asyncio.ensure_future(self.stop.wait())
        await asyncio.wait([self.start_at, started], timeout=START_TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if not self.start_at.done():
            await self.post("report", {"bots": [], "stopped_by": "stop", "measured": None})
            return "stopped before the start"
        offset, round_trip = await redis_clock(self.agent.client)
        local_start = self.start_at.result() - offset
        late = max(0.0, time.time() - local_start)
        await self.post("started", {"uncertainty_ms": round(round_trip / 2 * 1000, 3), "late_ms": round(late * 1000, 3),
                                    "offset_ms": round(offset * 1000, 3)})
        return await self._bots(config, local_start)

    async def _bots(self, config: BotsConfig, local_start: float) -> str:
        recorder = _recorder(self.measure)
        sender = asyncio.create_task(self._sender())
        live = [t for t in (self.measure or {}).get("thresholds", []) if t["live"]]
        stopped_at: list[float] = []

        async def note_stop() -> None:
            await self.stop.wait()
            stopped_at.append(time.monotonic())

        noting = asyncio.create_task(note_stop())
        try:
            report = await run_bots(config, _Relay(self.agent, self._queue, recorder, live), stop=self.stop,
                                    plans=self.plans, start_at=local_start, child_processes=True)
        finally:
            noting.cancel()
            self._queue.put_nowait(None)
            await sender
        data = report.to_dict()
        for bot in data["bots"]:
            bot["agent"] = self.agent.name
        message = {"bots": data["bots"], "stopped_by": report.stopped_by, "measured": None}
        if recorder is not None and self.measure is not None:
            end = self.measure["duration"]
            if stopped_at and recorder.t0 is not None:
                end = min(end, recorder.elapsed(stopped_at[0]))
            recorder.finish(data, end)
            message["measured"] = {
                "thresholds": [_histogram(recorder, t).to_dict() for t in self.measure["thresholds"]],
                "metrics": {name: LogHistogram.of(recorder.values(METRICS[name], {}, 0.0)).to_dict()
                            for name in WINDOW_METRICS},
                "consumers": recorder.consumer_entries(data),
            }
        await self.post("report", message)
        joined = sum(1 for bot in data["bots"] if bot["joined"])
        return f"done ({joined} of {len(self.plans)} bots joined, stopped by {report.stopped_by})"


class _Relay(Observer):
    """Queues the bots' samples (with the machine's CPU) and joins for the controller; for a scenario, records
    the joins and per-stream rows and queues the live thresholds' histograms after each interval."""

    def __init__(
        self, agent: Agent, queue: asyncio.Queue[tuple[str, dict] | None], recorder: Recorder | None, live: list[dict]
    ) -> None:
        self.agent = agent
        self.queue = queue
        self.recorder = recorder
        self.live = live
        self.rounds = iter(range(1 << 62))
        self.wants_streams = recorder is not None

    def started(self, t0: float) -> None:
        if self.recorder is not None:
            self.recorder.t0 = t0

    def sample(self, t: float, sample: Sample) -> None:
        data: dict = {"n": next(self.rounds), "rooms": {room: c.to_dict() for room, c in sample.counters.items()},
                      "cpu": self.agent.cpu_percent}
        self.queue.put_nowait(("sample", data))

    def joined(self, event: JoinEvent) -> None:
        if self.recorder is not None:
            self.recorder.on_join(time.monotonic(), event)
        self.queue.put_nowait(("join", event.to_dict()))

    def streams(self, sample: StreamSample) -> None:
        recorder = self.recorder
        if recorder is None:
            return
        now = time.monotonic()
        recorder.on_streams(now, sample)
        if self.live:  # with the rows just recorded (they come after the interval's sample)
            elapsed = recorder.elapsed(now)
            histograms = [_histogram(recorder, t, elapsed).to_dict() for t in self.live]
            self.queue.put_nowait(("live", {"histograms": histograms}))


def _recorder(measure: dict | None) -> Recorder | None:
    """A Recorder of this agent's bots, when the controller judges thresholds on their window metrics."""
    if measure is None:
        return None
    return Recorder({int(index): BotInfo(**info) for index, info in measure["bots"].items()})


def _histogram(recorder: Recorder, threshold: dict, now: float | None = None) -> LogHistogram:
    """The samples of one threshold's metric (window metrics: those the agent alone holds)."""
    values = recorder.values(METRICS[threshold["metric"]], threshold["tags"], threshold["after"], now)
    return LogHistogram.of(values)
