"""`sfuctl run SCENARIO`: a load scenario in, a verdict out (exit 0 pass, 99 a threshold failed, 1 the run failed)."""

from __future__ import annotations

import asyncio
import shlex
import sys
from pathlib import Path

import click
from rich.console import Console

from ..agents.link import AgentsError, AgentsSettings, connect
from ..agents.report import agents_table
from ..bots.report import summary_table
from ..runtime import run as run_loop
from ..scenario.comparison import compare, comparison_table
from ..scenario.html import render_html
from ..scenario.json_report import failure_json_text, json_text
from ..scenario.junit import failure_junit_text, junit_text
from ..scenario.live import PlainView, QuietView, TerminalView
from ..scenario.model import Scenario, ScenarioError, load_scenario
from ..scenario.runner import EXIT_RUN_FAILED, RunResult, run_scenario
from ..scenario.verdicts import outcome_line, verdict_table
from .conventions import (
    STDOUT,
    OutputPath,
    command,
    json_option,
    make_console,
    on_stop_signals,
    print_error,
    write_output,
)


def _url(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not value.startswith(("ws://", "wss://")):
        raise click.BadParameter(f"expected the server's signaling URL, ws://HOST:PORT, not {value!r}")
    return value


@command(
    short_help="Run a load scenario; exit 0 pass, 99 threshold failed, 1 run failed.",
    exit_codes={
        0: "every threshold held",
        99: "a threshold failed (or aborted the run with abort_on_fail)",
        1: "the run itself failed: a bad scenario file, a server that does not start or answer, bots that cannot "
           "join at all, Redis or an agent unreachable or lost; also a run interrupted by Ctrl-C or SIGTERM "
           "(outputs marked incomplete)",
    },
    epilog="Example: sfuctl run scenarios/smoke.toml --junit out/smoke.xml --html out/smoke.html",
)
@click.argument("scenario_file", metavar="SCENARIO", type=click.Path(dir_okay=False, path_type=Path))
@json_option("Write every metric, per-consumer time series and the verdicts as JSON to FILE (put --json last, "
             "or write --json=FILE, so that it does not take the scenario's name).")
@click.option("--junit", "junit_path", type=OutputPath(stdout=False), default=None, help="Write JUnit XML to FILE: one testcase per threshold.")
@click.option("--html", "html_path", type=OutputPath(stdout=False), default=None, help="Write a self-contained HTML report with plots to FILE.")
@click.option("--validate", is_flag=True, help="Only check the scenario file (exit 0 valid, 1 not).")
@click.option("--url", default=None, callback=_url, help="Use the server at this signaling URL instead of the scenario's.")
@click.option("--quiet", "-q", is_flag=True, help="No live view or progress lines; only the verdict.")
@click.option("--agents", "agents_url", metavar="REDIS_URL", envvar="SFUCTL_AGENTS", default=None, help="Run the bots on the `sfuctl agent`s registered at this Redis (redis://HOST:PORT); the server must be a URL they all reach.")
@click.option("--agents-secret", envvar="SFUCTL_AGENTS_SECRET", default=None, help="The secret the agents share, to sign the plans (or SFUCTL_AGENTS_SECRET).")
def run(
    scenario_file: Path,
    json_path: Path | str | None,
    junit_path: Path | None,
    html_path: Path | None,
    validate: bool,
    url: str | None,
    quiet: bool,
    agents_url: str | None,
    agents_secret: str | None,
) -> None:
    """Run the load scenario SCENARIO (a TOML file, docs/scenarios.md): start the embedded server (or use
    the scenario's or --url's), run the bots through the stages with a live view, then judge every
    threshold and print the verdict. With --agents the bots run on load agents on other machines
    (docs/agents.md) and the thresholds are judged on their merged samples. Output paths are checked before the
    run starts.
    """
    out = make_console(stderr=json_path == STDOUT)  # stdout holds only the JSON then
    try:
        scenario = load_scenario(scenario_file).with_url(url)
    except ScenarioError as exc:
        for problem in exc.problems:
            print_error(problem)
        if not validate:
            _write_failure(scenario_file, exc.problems, json_path, junit_path)
        sys.exit(EXIT_RUN_FAILED)
    if validate:
        out.print(f"{scenario_file}: valid · {describe(scenario)}", highlight=False, markup=False, soft_wrap=True)
        return
    agents = None
    if agents_url is not None:
        if not agents_secret:
            raise click.UsageError("--agents needs --agents-secret (or SFUCTL_AGENTS_SECRET): the agents run only "
                                   "plans signed with their secret")
        try:
            run_loop(_check_redis(agents_url))
        except AgentsError as exc:
            print_error(str(exc))
            sys.exit(EXIT_RUN_FAILED)
        agents = AgentsSettings(agents_url, agents_secret)
    if not quiet:
        where = f" · on the agents at {agents_url}" if agents_url else ""
        out.print(f"sfuctl run {scenario.name}: {describe(scenario)}{where}", highlight=False, markup=False)
    signals: list[str] = []
    result = run_loop(_run(scenario, out, quiet, agents, signals))
    args = sys.argv[1:]
    result.command = shlex.join(["sfuctl", *([] if args[:1] == ["run"] else ["run"]), *args])
    if result.status == "failed":  # the run never judged anything: the reason alone, no table of empty verdicts
        print_error(str(result.error))
    else:
        if result.report is not None and not quiet:
            out.print(summary_table(result.report, stopped_by(result, signals)))
        if result.agents is not None:
            out.print(agents_table(result.agents))
        out.print(verdict_table(result))
        if result.recorder is not None and "mesh" in scenario.topologies:
            out.print(comparison_table(compare(scenario, result.recorder)))
        out.print(outcome_line(result))
    code = result.exit_code
    for path, render in ((json_path, json_text), (junit_path, junit_text), (html_path, render_html)):
        if path is None:
            continue
        try:
            write_output(path, render(result))
        except OSError as exc:
            print_error(f"cannot write {path}: {exc.strerror or exc}")
            code = EXIT_RUN_FAILED
        else:
            if path != STDOUT:
                out.print(f"wrote {path}" + ("" if result.complete else f" (marked {result.status})"), highlight=False)
    sys.exit(code)


def describe(scenario: Scenario) -> str:
    """'10 bots in 2 rooms · 1 stage, 45 s · embedded server · 6 thresholds', with ' per topology (sfu, mesh)'
    after the rooms when the call does not only run through the SFU."""
    topologies = "" if scenario.topologies == ("sfu",) else f" per topology ({', '.join(scenario.topologies)})"
    return (f"{_count(scenario.max_bots, 'bot')} in {_count(scenario.bots.rooms, 'room')}{topologies} · "
            f"{_count(len(scenario.stages), 'stage')}, {scenario.duration:g} s · "
            f"{scenario.server.url or 'embedded server'} · {_count(len(scenario.thresholds), 'threshold')}")


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


async def _check_redis(url: str) -> None:
    """AgentsError in one line when the agents' Redis does not answer."""
    client = await connect(url)
    await client.aclose()


def stopped_by(result: RunResult, signals: list[str]) -> str | None:
    """What ended a run early, for the bots' summary title: the signal, or the threshold that aborted it."""
    if result.aborted_by:
        return f"abort_on_fail ({result.aborted_by})"
    return signals[0] if signals else None


async def _run(
    scenario: Scenario, console: Console, quiet: bool, agents: AgentsSettings | None, signals: list[str]
) -> RunResult:
    """Run with a live view; the name of a stop signal received goes into `signals`."""
    stop = asyncio.Event()
    if quiet:
        view: TerminalView | PlainView | QuietView = QuietView(scenario)
    elif console.is_terminal:
        view = TerminalView(scenario, console)
    else:
        view = PlainView(scenario, console)

    def on_signal(name: str) -> None:
        if not stop.is_set():  # a second signal is ignored while the bots leave (at most ~20 s)
            signals.append(name)
            view.stopping(name)
            stop.set()

    on_stop_signals(on_signal)
    with view:
        return await run_scenario(scenario, stop=stop, observer=view, agents=agents)


def _write_failure(
    scenario_file: Path, problems: list[str], json_path: Path | str | None, junit_path: Path | None
) -> None:
    """A scenario that cannot be read still leaves its outputs, so CI shows why."""
    for path, render in ((json_path, failure_json_text), (junit_path, failure_junit_text)):
        if path is not None:
            try:
                write_output(path, render(scenario_file, problems))
            except OSError as exc:
                print_error(f"cannot write {path}: {exc.strerror or exc}")
