"""`sfuctl run` when the run itself fails (exit 1): a bad file named line by line, a server that does not
answer, an interrupted run whose outputs are still written and marked incomplete; and --validate."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .scenario_files import RUN, scenario_file, small_media


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return small_media(tmp_path_factory.mktemp("cli-media"))


def run(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*RUN, *args], capture_output=True, text=True, timeout=timeout)


def test_validate_checks_the_file_without_running_it(tmp_path: Path, media: tuple[str, str]) -> None:
    path = scenario_file(tmp_path, media, "30s", '"bots.join_failed" = ["count == 0"]\n')
    done = run(str(path), "--validate")
    assert done.returncode == 0
    assert done.stdout == f"{path}: valid · 2 bots in 1 room · 1 stage, 30 s · embedded server · 1 threshold\n"


def test_a_bad_file_exits_1_naming_each_line_and_still_leaves_junit_and_json(tmp_path: Path, media: tuple[str, str]) -> None:
    path = scenario_file(tmp_path, media, "3 secs", '"consumer.jitter" = ["p95 < 30"]\n"bots.join_ms" = ["p95 < 1 s"]\n')
    junit, report = tmp_path / "out.xml", tmp_path / "out.json"
    done = run(str(path), "--junit", str(junit), "--json", str(report))
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f'error: {path}:2: duration: bad duration \'3 secs\': write a number with a unit, e.g. "45s", "500ms" or "2m"',
        f"error: {path}:12: thresholds.\"consumer.jitter\": unknown metric 'consumer.jitter'; did you mean consumer.jitter_ms?",
        f"error: {path}:13: thresholds.\"bots.join_ms\"[0]: bad threshold 'p95 < 1 s': expected AGGREGATE OP NUMBER, "
        'e.g. "p95 < 0.01"',
    ]
    case = ET.parse(junit).getroot().find("testsuite/testcase")
    assert (case.get("name"), case.find("error").get("type")) == ("run", "invalid")
    assert json.loads(report.read_text())["status"] == "failed"
    assert run(str(path), "--validate").returncode == 1


def test_an_unreachable_server_exits_1(tmp_path: Path, media: tuple[str, str]) -> None:
    path = scenario_file(tmp_path, media, "3s", '"bots.join_failed" = ["count == 0"]\n')
    report = tmp_path / "out.json"
    done = run(str(path), "--url", "ws://127.0.0.1:9", "--json", str(report), "--quiet")
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "error: cannot reach ws://127.0.0.1:9 ([Errno 111] Connection refused): is `sfuctl serve` running there?"]
    assert "pass" not in done.stdout and "FAIL" not in done.stdout  # no table of verdicts that were never judged
    result = json.loads(report.read_text())
    assert (result["status"], result["complete"], result["server"]["url"]) == ("failed", False, None)
    assert run(str(path), "--url", "http://127.0.0.1:9").returncode == 2  # a bad command line


def test_ctrl_c_stops_the_run_and_writes_the_outputs_marked_incomplete(tmp_path: Path, media: tuple[str, str]) -> None:
    path = scenario_file(tmp_path, media, "60s", '"consumer.fraction_lost" = ["p95 < 0.05"]\n')
    outputs = [tmp_path / "out.json", tmp_path / "out.xml", tmp_path / "out.html"]
    process = subprocess.Popen(
        [*RUN, str(path), "--json", str(outputs[0]), "--junit", str(outputs[1]), "--html", str(outputs[2])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stdout is not None
        deadline = time.monotonic() + 30
        for line in process.stdout:  # plain lines: stdout is a pipe
            if "stage 1/1" in line or time.monotonic() > deadline:
                break
        process.send_signal(signal.SIGINT)
        rest, errors = process.communicate(timeout=40)
    finally:
        process.kill()
    assert process.returncode == 1, rest + errors
    assert "Ctrl-C: every bot leaves" in rest and "INCOMPLETE: interrupted" in rest
    assert "stopped by Ctrl-C" in rest  # the bots' summary names the signal, not "stop"

    result = json.loads(outputs[0].read_text())
    assert (result["status"], result["complete"], result["passed"], result["exit_code"]) == ("interrupted", False, False, 1)
    assert result["bots"]["stopped_by"] == "stop" and result["verdicts"][0]["samples"] > 0
    run_case = [c for c in ET.parse(outputs[1]).getroot().iter("testcase") if c.get("name") == "run"]
    assert run_case[0].find("error").get("type") == "interrupted"
    assert "INTERRUPTED" in outputs[2].read_text()
