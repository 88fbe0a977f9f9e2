"""Controller: runs one plan over the live agents. Splits the bots by cores, sends each agent its signed
share, starts them all at one time read from Redis's clock, merges their per-second samples for the live
view, notices an agent that vanishes, stops them all on request, and gathers the bot records (and, for a
scenario, the histograms of what only the agents measured) into one result."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from dataclasses import asdict, dataclass, field, replace

from redis import asyncio as aioredis

from .. import __version__
from ..bots.config import BotPlan, BotsConfig, access_token
from ..bots.group import JoinEvent
from ..bots.observer import Observer, RunObserver
from ..bots.report import BotsReport, build_report, placeholder_bot
from ..bots.runner import CHILD_LEAVE_TIMEOUT, CHILD_READY_TIMEOUT
from ..bots.stats import BitratePeaks, RoomCounters, Sample, merge_counters
from ..scenario.histogram import LogHistogram
from ..scenario.metrics import BotInfo
from .cpu import BUSY_WARNING
from .link import (
    HEARTBEAT_TTL, INBOX_LENGTH, PREFIX, READ_BLOCK_MS, AgentsError, agent_key, inbox_key, redis_clock, run_key, sign,
)

START_MARGIN = 1.0  # s from sending the start time to it: the start message must reach every agent first
READY_TIMEOUT = CHILD_READY_TIMEOUT + 30.0  # agents check the server and load their media, then bot processes
LEAVE_TIMEOUT = CHILD_LEAVE_TIMEOUT + 15.0  # after a stop, how long agents get to send their records
CHECK_INTERVAL = 1.0  # s between two looks at the agents' heartbeats


@dataclass
class AgentRecord:
    """One agent of a run: who it is, its bots, how well it started on time, its machine's CPU over time."""

    name: str
    host: str
    cores: int
    version: str
    bots: int = 0
    joined: int = 0
    start_skew_ms: float | None = None  # at most this far from the common start (lateness + clock uncertainty)
    cpu: list[tuple[float, float]] = field(default_factory=list)  # (s since the start, % of all its cores)
    lost: bool = False
    error: str | None = None

    @property
    def cpu_busy_samples(self) -> int:
        return sum(1 for _, percent in self.cpu if percent > BUSY_WARNING)

    def to_dict(self) -> dict:
        percents = [percent for _, percent in self.cpu]
        return {
            "name": self.name, "host": self.host, "cores": self.cores, "version": self.version, "bots": self.bots,
            "joined": self.joined, "start_skew_ms": self.start_skew_ms, "lost": self.lost, "error": self.error,
            "cpu_max_percent": max(percents, default=None), "cpu_busy_samples": self.cpu_busy_samples,
            "cpu_series": {"t": [round(t, 3) for t, _ in self.cpu], "percent": percents},
        }


@dataclass(frozen=True)
class Measure:
    """What the agents measure for a scenario's thresholds: the window metrics' samples (each threshold as
    {metric, tags, after, live}; live ones also every second, for abort_on_fail), over `duration` s."""

    duration: float
    thresholds: list[dict]
    bots: dict[int, BotInfo]

    def body(self, plans: list[BotPlan]) -> dict:
        infos = {str(plan.index): asdict(self.bots[plan.index]) for plan in plans}
        return {"duration": self.duration, "thresholds": self.thresholds, "bots": infos}


@dataclass
class AgentsResult:
    """The run through agents: each agent, the merged histograms (per measured threshold, per window metric),
    the consumers' series, and why the run failed when an agent did."""

    agents: list[AgentRecord]
    thresholds: list[LogHistogram] = field(default_factory=list)
    metrics: dict[str, LogHistogram] = field(default_factory=dict)
    consumers: list[dict] = field(default_factory=list)
    error: str | None = None

    @property
    def start_skew_ms(self) -> float | None:
        skews = [a.start_skew_ms for a in self.agents if a.start_skew_ms is not None]
        return max(skews) if skews else None


async def registered(client: aioredis.Redis) -> list[dict]:
    """The agents whose registration has not expired, by name."""
    agents = []
    async for key in client.scan_iter(match=f"{PREFIX}:agent:*", count=100):
        if key.endswith(":inbox"):
            continue
        fields = await client.hgetall(key)
        if fields:
            agents.append(fields)
    return sorted(agents, key=lambda a: a["name"])


def split(plans: list[BotPlan], cores: list[int]) -> list[list[BotPlan]]:
    """Each agent's share in proportion to its cores: bot after bot to the agent with the fewest bots per core
    once it has it (the first on a tie), so that every agent gets bots of every room and of the whole ramp."""
    shares: list[list[BotPlan]] = [[] for _ in cores]
    for plan in plans:
        chosen = min(range(len(cores)), key=lambda i: (len(shares[i]) + 1) / cores[i])
        shares[chosen].append(plan)
    return shares


class Controller:
    """Runs plans over the agents registered at the Redis of `client`."""

    def __init__(self, client: aioredis.Redis, url: str, secret: str) -> None:
        self.client = client
        self.url = url
        self.secret = secret
        self.version = __version__
        self.latest: dict[str, list[LogHistogram]] = {}  # agent -> its latest histogram per live threshold

    def live(self, index: int) -> LogHistogram | None:
        """The merged latest histogram of the index-th live threshold (for abort_on_fail); None before any
        agent sent one."""
        if not self.latest:
            return None
        merged = LogHistogram()
        for histograms in self.latest.values():
            merged.merge(histograms[index])
        return merged

    async def agents(self) -> list[dict]:
        """The registered agents; AgentsError when there are none or one runs another sfuctl version."""
        agents = await registered(self.client)
        if not agents:
            raise AgentsError(f"no agent is registered at {self.url}: start `sfuctl agent --redis {self.url}` on each "
                              "load machine")
        other = [a for a in agents if a.get("version") != self.version]
        if other:
            names = ", ".join(f"{a['name']} (sfuctl {a.get('version')})" for a in other)
            raise AgentsError(f"agents of another version: {names}; this controller runs sfuctl {self.version}: "
                              "install the same version on every machine")
        return agents

    async def run(
        self,
        config: BotsConfig,
        plans: list[BotPlan],
        *,
        stop: asyncio.Event,
        observer: RunObserver | None = None,
        measure: Measure | None = None,
    ) -> tuple[BotsReport, AgentsResult]:
        """Run `plans` over the agents until their duration ends, `stop` is set or an agent fails; `observer`
        hears what run_bots would tell it (no per-stream rows: the agents keep those) and the warnings about
        busy or vanished agents."""
        agents = await self.agents()
        shares = split(plans, [max(1, int(a.get("cores") or 1)) for a in agents])
        run = _Run(self, config, measure, stop, observer if observer is not None else Observer())
        for fields, share in zip(agents, shares):
            if share:
                run.add(AgentRecord(fields["name"], fields.get("host", ""), int(fields.get("cores") or 1),
                                    fields.get("version", ""), bots=len(share)), share)
        started_wall = time.time()
        began = time.monotonic()
        try:
            await run.send_plans()
            if await run.wait_ready():
                await run.start()
                await run.follow()
        finally:
            await self.client.delete(run_key(run.id))  # everything in it has been read
        result = run.result()
        report = build_report(config, run.bots(), media=list(config.media), started_at=started_wall,
                              duration=time.monotonic() - began, stopped_by=run.stopped_by(), peaks=run.peaks)
        report.agents = [agent.to_dict() for agent in result.agents]
        return report, result


class _Run:
    """The state of one run on the controller's side."""

    def __init__(
        self, controller: Controller, config: BotsConfig, measure: Measure | None, stop: asyncio.Event, observer: RunObserver
    ) -> None:
        self.controller = controller
        self.client = controller.client
        self.config = config
        self.measure = measure
        self.stop = stop
        self.observer = observer
        self.peaks = BitratePeaks()  # the report's peak bitrates, from the merged samples
        self.id = uuid.uuid4().hex
        self.records: dict[str, AgentRecord] = {}
        self.shares: dict[str, list[BotPlan]] = {}
        self.reports: dict[str, dict] = {}
        self.joins: dict[str, dict[int, JoinEvent]] = {}
        self.ready: set[str] = set()
        self.rounds: dict[int, dict[str, dict[str, RoomCounters]]] = {}
        self.error: str | None = None
        self.last = "0-0"
        self.t0 = 0.0  # time.monotonic() of the common start
        self.stop_sent = False

    def add(self, record: AgentRecord, share: list[BotPlan]) -> None:
        self.records[record.name] = record
        self.shares[record.name] = share
        self.joins[record.name] = {}

    async def send(self, name: str, body: dict) -> None:
        await self.client.xadd(inbox_key(name), sign({**body, "run": self.id}, self.controller.secret),
                               maxlen=INBOX_LENGTH, approximate=True)

    async def send_plans(self) -> None:
        offset, _ = await redis_clock(self.client)
        # The server's auth secret stays here: each bot's plan carries its own token instead.
        config = {**self.config.to_dict(), "auth_secret": None}
        for name, share in self.shares.items():
            plans = [replace(plan, token=access_token(self.config, plan)) if self.config.auth_secret else plan for plan in share]
            await self.send(name, {
                "kind": "plan", "version": self.controller.version, "issued": time.time() + offset,
                "config": config, "plans": [plan.to_dict() for plan in plans],
                "measure": self.measure.body(share) if self.measure is not None else None,
            })

    async def send_stop(self) -> None:
        if not self.stop_sent:
            self.stop_sent = True
            for name, record in self.records.items():
                if not record.lost and name not in self.reports:
                    await self.send(name, {"kind": "stop"})

    async def wait_ready(self) -> bool:
        """Every agent checked the server and loaded its media; False when the run cannot start."""
        deadline = time.monotonic() + READY_TIMEOUT
        next_check = time.monotonic() + CHECK_INTERVAL
        while self.ready != set(self.records) and self.error is None:
            if self.stop.is_set():
                await self.send_stop()
                return False
            if time.monotonic() > deadline:
                late = ", ".join(sorted(set(self.records) - self.ready))
                raise AgentsError(f"agent(s) {late} did not get ready within {READY_TIMEOUT:g} s")
            await self.read()
            if time.monotonic() >= next_check:
                next_check = time.monotonic() + CHECK_INTERVAL
                await self.check_heartbeats(0.0)
        if self.error is not None:
            await self.send_stop()
            raise AgentsError(self.error)
        return True

    async def start(self) -> None:
        offset, _ = await redis_clock(self.client)
        at = time.time() + offset + START_MARGIN
        for name in self.records:
            await self.send(name, {"kind": "start", "at": at})
        self.t0 = time.monotonic() + (at - offset - time.time())
        self.observer.started(self.t0)

    async def follow(self) -> None:
        """Until every agent reported or was lost: samples, joins, heartbeats, the stop."""
        duration = self.config.duration
        deadline = None if duration is None else self.t0 + duration + LEAVE_TIMEOUT
        next_check = time.monotonic() + CHECK_INTERVAL
        while any(not r.lost and n not in self.reports for n, r in self.records.items()):
            if (self.stop.is_set() or self.error is not None) and not self.stop_sent:
                await self.send_stop()
                deadline = time.monotonic() + LEAVE_TIMEOUT
            await self.read()
            now = time.monotonic()
            if now >= next_check:
                next_check = now + CHECK_INTERVAL
                await self.check_heartbeats(now - self.t0)
            if deadline is not None and now > deadline:
                for name, record in self.records.items():
                    if not record.lost and name not in self.reports:
                        self.lose(name, f"agent {name} sent no records within {LEAVE_TIMEOUT:g} s of the end")
                break

    async def read(self) -> None:
        answer = await self.client.xread({run_key(self.id): self.last}, block=READ_BLOCK_MS, count=100)
        for _, entries in answer:
            for entry_id, fields in entries:
                self.last = entry_id
                name = fields.get("agent", "")
                if name in self.records:
                    self.handle(name, fields.get("type", ""), json.loads(fields.get("data", "{}")))

    def handle(self, name: str, kind: str, data: dict) -> None:
        record = self.records[name]
        if record.lost:
            return
        if kind == "ready":
            self.ready.add(name)
        elif kind in ("error", "refused"):
            self.fail(data.get("message") or f"agent {name} refused the plan: {data.get('reason')}")
            self.lose(name, None)
        elif kind == "started":
            record.start_skew_ms = round(data["late_ms"] + data["uncertainty_ms"], 3)
        elif kind == "join":
            event = JoinEvent(**data)
            self.joins[name][event.index] = event
            record.joined += event.joined
            self.observer.joined(event)
        elif kind == "sample":
            self.on_round(name, data)
        elif kind == "live":
            self.controller.latest[name] = [LogHistogram.from_dict(h) for h in data["histograms"]]
        elif kind == "report":
            self.reports[name] = data
            self.flush_rounds()

    def on_round(self, name: str, data: dict) -> None:
        record = self.records[name]
        t = time.monotonic() - self.t0
        if data.get("cpu") is not None:
            if data["cpu"] > BUSY_WARNING and not record.cpu_busy_samples:
                self.observer.warning(f"agent {name}: its machine's CPU is at {data['cpu']:.0f}% (over "
                                     f"{BUSY_WARNING:.0f}%): its bots may report false loss and jitter")
            record.cpu.append((t, data["cpu"]))
        rooms = {room: RoomCounters.from_dict(c) for room, c in data["rooms"].items()}
        self.rounds.setdefault(data["n"], {})[name] = rooms
        self.flush_rounds()

    def flush_rounds(self) -> None:
        """Give the observer each round every sampling agent has sent, in order."""
        sampling = {n for n, r in self.records.items() if not r.lost and n not in self.reports}
        for number in sorted(self.rounds):
            parts = self.rounds[number]
            if not sampling <= set(parts):
                break
            del self.rounds[number]
            t = time.monotonic() - self.t0
            sample = Sample.from_counters(t, merge_counters(list(parts.values())))
            self.peaks.add(sample)
            self.observer.sample(t, sample)

    async def check_heartbeats(self, elapsed: float) -> None:
        for name, record in self.records.items():
            if record.lost or name in self.reports or await self.client.exists(agent_key(name)):
                continue
            message = (f"agent {name} vanished {elapsed:.0f} s into the run (no heartbeat for {HEARTBEAT_TTL:g} s): "
                       f"its {record.bots} bots are marked failed")
            self.observer.warning(message)
            self.fail(message)
            self.lose(name, message)

    def fail(self, message: str) -> None:
        if self.error is None:
            self.error = message

    def lose(self, name: str, message: str | None) -> None:
        record = self.records[name]
        record.lost = True
        record.error = message or self.error
        self.controller.latest.pop(name, None)
        self.flush_rounds()

    def bots(self) -> list[dict]:
        bots: list[dict] = []
        for name, share in self.shares.items():
            report = self.reports.get(name)
            if report is not None and not self.records[name].lost:
                bots.extend(report["bots"])
                continue
            error = self.records[name].error or f"agent {name} sent no records"
            for plan in share:
                bot = placeholder_bot(plan, self.joins[name].get(plan.index), error)
                bot["agent"] = name
                bots.append(bot)
        return sorted(bots, key=lambda bot: bot["index"])

    def stopped_by(self) -> str:
        reports = [self.reports.get(name) for name in self.records]
        if self.error is None and reports and all(r is not None and r["stopped_by"] == "duration" for r in reports):
            return "duration"
        return "stop"

    def result(self) -> AgentsResult:
        result = AgentsResult(list(self.records.values()), error=self.error)
        if self.measure is None:
            return result
        result.thresholds = [LogHistogram() for _ in self.measure.thresholds]
        for name, report in self.reports.items():
            measured = report.get("measured")
            if measured is None or self.records[name].lost:
                continue
            for merged, part in zip(result.thresholds, measured["thresholds"]):
                merged.merge(LogHistogram.from_dict(part))
            for metric, part in measured["metrics"].items():
                result.metrics.setdefault(metric, LogHistogram()).merge(LogHistogram.from_dict(part))
            result.consumers.extend(measured["consumers"])
        return result
