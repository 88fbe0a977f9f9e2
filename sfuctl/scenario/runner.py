"""run_scenario: start the server (embedded, or use `url`), run the planned bots through the stages while
recording what they and the server measure, then judge every threshold.

The embedded server (embedded.py) runs in worker processes of its own, so the live view and the
bookkeeping here never stall its forwarding.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from ..agents.controller import AgentsResult, Controller, Measure
from ..agents.link import AgentsError, AgentsSettings, connect
from ..bots.config import BotPlan, BotsConfig, default_processes
from ..bots.group import JoinEvent
from ..bots.observer import Observer
from ..bots.report import BotsReport
from ..bots.runner import BotsError, ServerUnreachable, check_server, run_bots
from ..bots.stats import Sample, StreamSample
from ..client.stats import StatsFailure, watch
from ..media import default_media
from ..tokens import claims, mint
from .embedded import embedded_server
from .histogram import LogHistogram
from .metrics import Recorder
from .model import Scenario, Threshold
from .plan import plan_scenario
from .thresholds import aggregate

STATS_INTERVAL = 1.0
# The bots stay this much longer than the scenario, so that their sample at its very end is taken before
# anyone leaves; what they measure afterwards is not counted.
END_MARGIN = 0.5
# The stats stream reconnects with one admin token for the whole run; scenarios last at most a day.
STATS_TOKEN_TTL = 2 * 86_400.0
ABORT_CHECK_INTERVAL = 1.0

EXIT_PASSED = 0
EXIT_RUN_FAILED = 1
EXIT_THRESHOLD_FAILED = 99


class RunFailed(Exception):
    """The run itself failed (server unreachable or not starting, bots unable to start); one line."""


@dataclass(frozen=True)
class Verdict:
    """A threshold, what was measured (None: nothing to measure) over how many samples, and whether it held."""

    threshold: Threshold
    value: float | None
    samples: int
    passed: bool

    def to_dict(self) -> dict:
        threshold = self.threshold
        return {
            "metric": threshold.key,
            "expression": threshold.expression.text.strip(),
            "aggregate": threshold.expression.aggregate,
            "after_s": threshold.after,
            "abort_on_fail": threshold.abort_on_fail,
            "value": self.value,
            "samples": self.samples,
            "passed": self.passed,
        }


@dataclass
class RunResult:
    """The outcome: status (complete, aborted, interrupted or failed), verdicts and everything recorded."""

    scenario: Scenario
    status: str = "complete"
    error: str | None = None
    verdicts: list[Verdict] = field(default_factory=list)
    recorder: Recorder | None = None
    report: BotsReport | None = None
    server_url: str | None = None
    embedded: bool = False
    started_at: float = 0.0  # Unix time
    command: str = ""  # the command line that ran it, for the reports
    duration_s: float = 0.0
    aborted_by: str | None = None  # the threshold that stopped the run
    agents: AgentsResult | None = None  # the run went through load agents

    @property
    def complete(self) -> bool:
        return self.status == "complete"

    @property
    def failed_verdicts(self) -> list[Verdict]:
        return [v for v in self.verdicts if not v.passed]

    @property
    def exit_code(self) -> int:
        """0 every threshold passed, 99 one failed (or aborted the run), 1 the run failed or was interrupted."""
        if self.status in ("failed", "interrupted"):
            return EXIT_RUN_FAILED
        return EXIT_THRESHOLD_FAILED if self.failed_verdicts or self.aborted_by else EXIT_PASSED


class ScenarioObserver(Observer):
    """What a live view hears about a run: what the bots tell (a RunObserver, `sample`'s t counted from the
    scenario's start), then the scenario's own events; every method does nothing by default."""

    def media_progress(self, done: int, total: int) -> None:
        """Making the default media (once): `done` of `total` steps."""

    def server_ready(self, url: str, embedded: bool) -> None:
        """The server answers at `url` (embedded: the run started it)."""

    def snapshot(self, snapshot: dict) -> None:
        """The server's latest stats snapshot."""

    def server_lost(self, reason: str) -> None:
        """The stats stream broke; it reconnects."""

    def aborting(self, verdict: Verdict) -> None:
        """An abort_on_fail threshold failed: every bot leaves."""


class _Recording(Observer):
    """Records what the bots tell (samples, joins and per-stream rows), then tells the live view."""

    wants_streams = True

    def __init__(self, recorder: Recorder, view: ScenarioObserver) -> None:
        self.recorder = recorder
        self.view = view
        self.running = asyncio.Event()  # the plans' offsets count from recorder.t0

    def started(self, t0: float) -> None:
        self.recorder.t0 = t0
        self.running.set()
        self.view.started(t0)

    def sample(self, t: float, sample: Sample) -> None:
        self.recorder.on_sample(time.monotonic(), sample)
        self.view.sample(t, sample)

    def streams(self, sample: StreamSample) -> None:
        self.recorder.on_streams(time.monotonic(), sample)

    def joined(self, event: JoinEvent) -> None:
        self.recorder.on_join(time.monotonic(), event)
        self.view.joined(event)

    def warning(self, message: str) -> None:
        self.view.warning(message)


def evaluate(
    thresholds: tuple[Threshold, ...],
    recorder: Recorder,
    now: float | None = None,
    merged: dict[Threshold, LogHistogram] | None = None,
) -> list[Verdict]:
    """Judge each threshold on what `recorder` holds (`now`: seconds since the start, while the run goes), or
    on the histogram `merged` has for it (what load agents measured)."""
    verdicts = []
    for threshold in thresholds:
        values: list[float] | LogHistogram
        if merged is not None and threshold in merged:
            values = merged[threshold]
        else:
            values = recorder.values(threshold.metric, dict(threshold.tags), threshold.after, now)
        value = aggregate(threshold.expression.aggregate, values, recorder.window(threshold.after, now))
        verdicts.append(Verdict(threshold, value, len(values), threshold.expression.holds(value)))
    return verdicts


async def run_scenario(
    scenario: Scenario,
    *,
    stop: asyncio.Event | None = None,
    observer: ScenarioObserver | None = None,
    agents: AgentsSettings | None = None,
) -> RunResult:
    """Run `scenario` until its stages end, a threshold with abort_on_fail fails, or `stop` is set (then
    the result is 'interrupted'); with `agents`, the bots run on the load agents registered there. Never
    raises for the run's own failures: they are the result's `error`."""
    stop = stop if stop is not None else asyncio.Event()
    observer = observer if observer is not None else ScenarioObserver()
    result = RunResult(scenario, started_at=time.time())
    plans, infos = plan_scenario(scenario)
    recorder = result.recorder = Recorder(infos)
    began = time.monotonic()
    try:
        if agents is not None and scenario.server.url is None:
            raise RunFailed("the embedded server runs on this machine only: with --agents give a server every agent "
                            "can reach (--url ws://HOST:PORT or server.url in the scenario)")
        media = scenario.bots.media  # agents make their own default media
        if not media and agents is None:
            media = await asyncio.to_thread(_default_media, observer.media_progress, scenario.bots.simulcast)
        if stop.is_set():
            result.status = "interrupted"
        else:
            async with _server(scenario) as (url, embedded):
                result.server_url, result.embedded = url, embedded
                observer.server_ready(url, embedded)
                result.report = await _run(scenario, plans, media, url, recorder, stop, observer, result, agents)
    except RunFailed as exc:
        result.status, result.error = "failed", str(exc)
    result.duration_s = round(time.monotonic() - began, 3)
    if result.report is not None:
        end = 0.0
        if recorder.t0 is not None:
            end = recorder.end if math.isfinite(recorder.end) else min(scenario.duration, recorder.elapsed(time.monotonic()))
        recorder.finish(result.report.to_dict(), end)
        joined = result.report.total["joined"]
        if result.status == "complete" and joined == 0:
            errors = [bot["error"] for bot in result.report.bots if bot["error"]]
            result.status = "failed"
            result.error = "no bot could join" + (f": {errors[0]}" if errors else "")
    result.verdicts = evaluate(scenario.thresholds, recorder, merged=_merged(scenario, result.agents))
    return result


def _measured_by_agents(scenario: Scenario) -> list[Threshold]:
    """The thresholds on window metrics: only the agents hold those samples, so they send histograms."""
    return [t for t in scenario.thresholds if t.metric.timing == "window"]


def _merged(scenario: Scenario, agents: AgentsResult | None) -> dict[Threshold, LogHistogram] | None:
    if agents is None:
        return None
    histograms = agents.thresholds or [LogHistogram() for _ in _measured_by_agents(scenario)]
    return dict(zip(_measured_by_agents(scenario), histograms))


async def _run(
    scenario: Scenario,
    plans: list[BotPlan],
    media: tuple[str, ...],
    url: str,
    recorder: Recorder,
    stop: asyncio.Event,
    observer: ScenarioObserver,
    result: RunResult,
    agents: AgentsSettings | None,
) -> BotsReport:
    config = _bots_config(scenario, len(plans), media, url)
    recording = _Recording(recorder, observer)
    watch = _Watch(scenario, recorder, observer, recording, stop)
    tasks = [
        asyncio.create_task(watch.mark_end()),
        asyncio.create_task(watch.check_aborts()),
        asyncio.create_task(_stats(url, scenario.server.auth_secret, watch.on_snapshot, observer.server_lost)),
    ]
    try:
        if agents is None:
            report = await run_bots(config, recording, stop=stop, plans=plans)
        else:
            report, result.agents = await _run_on_agents(config, plans, agents, watch)
            if result.agents.error is not None:
                result.status, result.error = "failed", result.agents.error
                return report
    except AgentsError as exc:
        raise RunFailed(str(exc)) from None
    except ServerUnreachable as exc:
        raise RunFailed(f"{exc}: is the server running?") from None
    except BotsError as exc:
        raise RunFailed(str(exc)) from None
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    if watch.aborted:
        result.status, result.aborted_by = "aborted", watch.aborted[0].threshold.label
    elif report.stopped_by != "duration":
        result.status = "interrupted"
    return report


def _bots_config(scenario: Scenario, count: int, media: tuple[str, ...], url: str) -> BotsConfig:
    """The bots' settings for the scenario's `count` planned bots; RunFailed when they are not valid."""
    settings = scenario.bots
    seed = settings.seed if settings.seed is not None else int.from_bytes(os.urandom(4), "big")
    try:
        return BotsConfig(
            url=url,
            count=count,
            rooms=settings.rooms,
            publishers=settings.publishers,
            audio=settings.audio,
            video=settings.video,
            subscribe=settings.subscribe,
            media=media,
            simulcast=settings.simulcast,
            ramp=settings.ramp,
            duration=scenario.duration + END_MARGIN,
            # at least a process per topology, so that bots.cpu_percent never mixes them
            processes=max(len(scenario.topologies), min(settings.processes or default_processes(), count)),
            seed=seed,
            join_timeout=settings.join_timeout,
            data_rate=settings.data,
            speakers=settings.speakers,
            connect_timeout=min(10.0, settings.join_timeout / 2),
            auth_secret=scenario.server.auth_secret,
        )
    except ValueError as exc:
        raise RunFailed(str(exc)) from None


async def _run_on_agents(
    config: BotsConfig, plans: list[BotPlan], agents: AgentsSettings, watch: _Watch
) -> tuple[BotsReport, AgentsResult]:
    """Run the bots on the load agents registered at `agents.url`; they send the histograms of the thresholds
    only they can measure (`watch.controller` reads them live while the run goes)."""
    scenario, recorder = watch.scenario, watch.recorder
    client = await connect(agents.url)
    try:
        watch.controller = Controller(client, agents.url, agents.secret)
        measure = Measure(scenario.duration, [
            {"metric": t.metric.name, "tags": dict(t.tags), "after": t.after, "live": t.abort_on_fail}
            for t in _measured_by_agents(scenario)
        ], recorder.bots)
        return await watch.controller.run(config, plans, stop=watch.stop, observer=watch.recording, measure=measure)
    finally:
        await client.aclose()


class _Watch:
    """While a run goes: the server's snapshots into the recorder and the view, the end of its measured part, and
    the abort_on_fail thresholds judged every ABORT_CHECK_INTERVAL (the first that fails stops the run)."""

    def __init__(
        self, scenario: Scenario, recorder: Recorder, view: ScenarioObserver, recording: _Recording, stop: asyncio.Event
    ) -> None:
        self.scenario = scenario
        self.recorder = recorder
        self.view = view
        self.recording = recording
        self.stop = stop
        self.controller: Controller | None = None  # set when the bots run on load agents
        self.ended = asyncio.Event()  # the scenario's time is over or the run was stopped: no more samples count
        self.aborted: list[Verdict] = []

    def on_snapshot(self, snapshot: dict) -> None:
        self.recorder.on_snapshot(time.monotonic(), snapshot)
        self.view.snapshot(snapshot)

    async def mark_end(self) -> None:
        """The run's measured part ends with the scenario or when it is stopped, whichever comes first."""
        recorder = self.recorder
        if recorder.t0 is None:
            await self.recording.running.wait()
        remaining = self.scenario.duration - recorder.elapsed(time.monotonic())
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), max(0.0, remaining))
        recorder.end = min(self.scenario.duration, recorder.elapsed(time.monotonic()))
        self.ended.set()

    async def check_aborts(self) -> None:
        watched = [t for t in self.scenario.thresholds if t.abort_on_fail]
        while watched and not self.ended.is_set():
            await asyncio.sleep(ABORT_CHECK_INTERVAL)
            if self.recorder.t0 is None:
                continue
            now = self.recorder.elapsed(time.monotonic())
            merged = self._live()
            # through agents, a window metric is judged once they sent its samples
            due = tuple(t for t in watched if now >= t.after
                        and (merged is None or t.metric.timing != "window" or t in merged))
            failed = [v for v in evaluate(due, self.recorder, now, merged) if not v.passed]
            if failed and not self.ended.is_set():
                self.aborted.append(failed[0])
                self.view.aborting(failed[0])
                self.stop.set()
                return

    def _live(self) -> dict[Threshold, LogHistogram] | None:
        """The agents' latest histograms of the abort_on_fail thresholds they measure."""
        if self.controller is None:
            return None
        live = [t for t in _measured_by_agents(self.scenario) if t.abort_on_fail]
        return {threshold: histogram for index, threshold in enumerate(live)
                if (histogram := self.controller.live(index)) is not None}


async def _stats(url: str, auth_secret: str | None, on_snapshot: Callable[[dict], None], on_lost: Callable[[str], None]) -> None:
    """The server's stats stream for the live view and the server.* metrics (with an admin token minted
    from `auth_secret`); a refusal only ends the stream."""
    token = mint(auth_secret, claims(room=None, identity=None, ttl=STATS_TOKEN_TTL, admin=True)) if auth_secret else None
    with contextlib.suppress(StatsFailure):
        await watch(url, STATS_INTERVAL, None, on_snapshot, on_lost, token)


def _default_media(progress: Callable[[int, int], None], simulcast: bool = False) -> tuple[str, ...]:
    try:
        return default_media(simulcast, progress)
    except OSError as exc:
        raise RunFailed(f"cannot write the test media: {exc.strerror or exc}; set SFUCTL_CACHE_DIR or give "
                        "bots.media in the scenario") from None


@contextlib.asynccontextmanager
async def _server(scenario: Scenario) -> AsyncIterator[tuple[str, bool]]:
    """(url, embedded): the scenario's server, or the embedded one, stopped after."""
    url = scenario.server.url
    if url is not None:
        try:
            await check_server(url)
        except ServerUnreachable as exc:
            raise RunFailed(f"{exc}: is `sfuctl serve` running there?") from None
        yield url, False
        return
    async with contextlib.AsyncExitStack() as stack:
        try:
            url = await stack.enter_async_context(embedded_server(scenario.server.workers, scenario.server.auth_secret))
        except OSError as exc:
            raise RunFailed(f"the embedded server did not start: {exc}") from None
        yield url, True
