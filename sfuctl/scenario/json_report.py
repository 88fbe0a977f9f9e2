"""The `--json` output of `sfuctl run` (schema `sfuctl.scenario.result/1`, docs/scenarios.md): the verdicts,
every metric's aggregates, per-room and per-consumer time series, the server's series, the topologies side by
side and the bots' report."""

from __future__ import annotations

import datetime
import json
from pathlib import Path

from .comparison import compare
from .metrics import METRICS, Recorder, summary_of
from .model import Scenario
from .runner import RunResult

SCHEMA = "sfuctl.scenario.result/1"


def result_dict(result: RunResult) -> dict:
    """Everything `sfuctl run` knows about the run, as JSON-ready data."""
    recorder = result.recorder
    report = result.report.to_dict() if result.report is not None else None
    return {
        "schema": SCHEMA,
        "scenario": scenario_dict(result.scenario),
        "status": result.status,
        "complete": result.complete,
        "error": result.error,
        "aborted_by": result.aborted_by,
        "passed": not result.failed_verdicts and result.complete,
        "exit_code": result.exit_code,
        "started_at": _iso(result.started_at),
        "duration_s": result.duration_s,
        "server": {"url": result.server_url, "embedded": result.embedded},
        "verdicts": [verdict.to_dict() for verdict in result.verdicts],
        "metrics": _metrics(result),
        "rooms": _rooms(recorder) if recorder is not None else {},
        "consumers": _consumers(result, report),
        "server_series": _server(recorder) if recorder is not None else {},
        "topologies": [row.to_dict() for row in compare(result.scenario, recorder)] if recorder is not None else [],
        "bots": report,
        "agents": _agents(result),
    }


def _metrics(result: RunResult) -> dict:
    """Every metric's aggregates over the whole run; through agents, the window metrics from their merged
    histograms."""
    recorder = result.recorder
    if recorder is None:
        return {}
    merged = result.agents.metrics if result.agents is not None else {}
    return {name: summary_of(merged[name], recorder.window(0.0)) if name in merged else recorder.summary(name)
            for name in METRICS}


def _agents(result: RunResult) -> dict | None:
    agents = result.agents
    if agents is None:
        return None
    return {"start_skew_ms": agents.start_skew_ms, "agents": [agent.to_dict() for agent in agents.agents]}


def scenario_dict(scenario: Scenario) -> dict:
    return {
        "name": scenario.name,
        "file": str(scenario.path),
        "description": scenario.description,
        "duration_s": scenario.duration,
        "topologies": list(scenario.topologies),
        "stages": [{"duration_s": s.duration, "bots": s.bots} for s in scenario.stages],
        "rooms": scenario.bots.rooms,
        "publishers": scenario.bots.publishers,
        "ramp": scenario.bots.ramp,
        "lifetime_s": scenario.bots.lifetime,
        "network": [
            {
                "name": group.name,
                "share": group.share,
                "rooms": list(group.rooms) if group.rooms is not None else None,
                "role": group.role,
                "timeline": [
                    {"at_s": step.at, "loss": step.impairment.loss, "delay_ms": step.impairment.delay_ms,
                     "jitter_ms": step.impairment.jitter_ms, "bandwidth_kbps": step.impairment.bandwidth_kbps}
                    for step in group.timeline()
                ],
            }
            for group in scenario.network
        ],
    }


def json_text(result: RunResult) -> str:
    """The --json document of a run."""
    return _text(result_dict(result))


def failure_json_text(scenario_file: Path, problems: list[str]) -> str:
    """The --json document of a scenario file that could not be read: status failed and the problems."""
    return _text({"schema": SCHEMA, "scenario": {"file": str(scenario_file)}, "status": "failed", "complete": False,
                  "error": "\n".join(problems), "passed": False, "exit_code": 1, "verdicts": []})


def _text(data: dict) -> str:
    return json.dumps(data, indent=1, allow_nan=False) + "\n"


def _iso(unix: float) -> str:
    return datetime.datetime.fromtimestamp(unix, datetime.timezone.utc).isoformat(timespec="seconds")


def _r(value: float | None, digits: int = 3) -> float | None:
    return None if value is None else round(value, digits)


def _rooms(recorder: Recorder) -> dict:
    return {
        room: {
            "t": [_r(p.t) for p in points],
            "active": [p.active for p in points],
            "sent_bps": [round(p.sent_bps) for p in points],
            "received_bps": [round(p.received_bps) for p in points],
            "fraction_lost": [_r(p.loss, 6) for p in points],
            "fraction_lost_before_recovery": [_r(p.loss_before_recovery, 6) for p in points],
            "jitter_ms": [_r(p.jitter_ms) for p in points],
            "rtt_ms": [_r(p.rtt_ms) for p in points],
            "freezes": [p.freezes for p in points],
        }
        for room, points in recorder.rooms.items()
    }


def _consumers(result: RunResult, report: dict | None) -> list[dict]:
    """Each consumer the bots had: recorded here, or by the load agents that ran them."""
    if result.agents is not None:
        return result.agents.consumers
    return result.recorder.consumer_entries(report) if result.recorder is not None else []


def _server(recorder: Recorder) -> dict:
    keys = ("cpu_percent", "bitrate_in_bps", "bitrate_out_bps", "rooms", "peers", "producers", "consumers")
    return {"t": [_r(t) for t, _ in recorder.server], **{k: [s[k] for _, s in recorder.server] for k in keys}}
