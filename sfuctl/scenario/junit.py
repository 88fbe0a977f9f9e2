"""The `--junit` output of `sfuctl run`: one testcase per threshold, so CI systems list each verdict; a run
that did not complete adds a `run` testcase with an error saying why."""

from __future__ import annotations

import datetime
import xml.etree.ElementTree as ET
from pathlib import Path

from .runner import RunResult, Verdict

RUN_CASE = "run"


def verdict_message(verdict: Verdict) -> str:
    """'p95 = 0.031 over 12 samples; needs < 0.02' (or why there is no value)."""
    expression = verdict.threshold.expression
    if verdict.value is None:
        return f"{expression.aggregate}: no value (nothing was measured); needs {expression.op} {expression.value:g}"
    return (f"{expression.aggregate} = {verdict.value:.6g} over {verdict.samples} samples; "
            f"needs {expression.op} {expression.value:g}")


def junit_tree(result: RunResult) -> ET.ElementTree:
    scenario = result.scenario
    incomplete = not result.complete
    failures = len(result.failed_verdicts)
    tests = len(result.verdicts) + incomplete
    time = f"{result.duration_s:.3f}"
    suites = ET.Element("testsuites", name="sfuctl run", tests=str(tests), failures=str(failures),
                        errors=str(int(incomplete)), time=time)
    suite = ET.SubElement(
        suites, "testsuite", name=scenario.name, tests=str(tests), failures=str(failures),
        errors=str(int(incomplete)), skipped="0", time=time,
        timestamp=datetime.datetime.fromtimestamp(result.started_at, datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    properties = ET.SubElement(suite, "properties")
    for name, value in (("scenario", str(scenario.path)), ("status", result.status),
                        ("server", result.server_url or ""), ("exit_code", str(result.exit_code))):
        ET.SubElement(properties, "property", name=name, value=value)
    if result.agents is not None:  # which agents ran the bots, each with its bots joined / planned
        ET.SubElement(properties, "property", name="agents", value=", ".join(
            f"{a.name} {a.joined}/{a.bots}" + (" lost" if a.lost else "") for a in result.agents.agents))
    for verdict in result.verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"{scenario.name}.{verdict.threshold.key}",
                             name=verdict.threshold.label, time="0")
        if not verdict.passed:
            ET.SubElement(case, "failure", type="threshold", message=verdict_message(verdict))
    if incomplete:
        case = ET.SubElement(suite, "testcase", classname=scenario.name, name=RUN_CASE, time=time)
        ET.SubElement(case, "error", type=result.status, message=_incomplete_reason(result))
    ET.indent(suites)
    return ET.ElementTree(suites)


def _incomplete_reason(result: RunResult) -> str:
    if result.status == "aborted":
        return f"aborted: {result.aborted_by} failed while the run went (abort_on_fail)"
    if result.status == "interrupted":
        return "interrupted (Ctrl-C or SIGTERM) before the end: the verdicts cover only the part that ran"
    return f"the run failed: {result.error}"


def junit_text(result: RunResult) -> str:
    """The --junit document of a run."""
    return _text(junit_tree(result))


def failure_junit_text(scenario_file: Path, problems: list[str]) -> str:
    """The --junit document of a scenario file that could not be read: one `run` testcase with the problems."""
    suites = ET.Element("testsuites", name="sfuctl run", tests="1", failures="0", errors="1", time="0")
    suite = ET.SubElement(suites, "testsuite", name=scenario_file.stem, tests="1", failures="0", errors="1",
                          skipped="0", time="0")
    case = ET.SubElement(suite, "testcase", classname=scenario_file.stem, name=RUN_CASE, time="0")
    error = ET.SubElement(case, "error", type="invalid", message=problems[0] if problems else "invalid scenario")
    error.text = "\n".join(problems)
    ET.indent(suites)
    return _text(ET.ElementTree(suites))


def _text(tree: ET.ElementTree) -> str:
    return ET.tostring(tree.getroot(), encoding="unicode", xml_declaration=True) + "\n"
