"""`sfuctl run` end to end on the embedded server with real bots: a passing run exits 0 and writes JSON,
JUnit (parsed back) and a self-contained HTML report; a failing threshold exits 99, and abort_on_fail
stops the run early."""

from __future__ import annotations

import json
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from .scenario_files import RUN, scenario_file, small_media

PASSING = """\
"bots.join_failed" = ["count == 0"]
"consumer.bitrate_bps{kind=video}" = { expect = ["p50 > 100000", "count == 2"], after = "1s" }
"consumer.fraction_lost" = ["p95 < 0.05"]
"consumer.first_frame_ms{kind=video}" = ["p95 < 5000"]
"server.consumers" = ["max == 4"]
"""


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    return small_media(tmp_path_factory.mktemp("run-media"))


def test_a_passing_run_exits_0_and_writes_every_output(tmp_path: Path, media: tuple[str, str]) -> None:
    path = scenario_file(tmp_path, media, "3s", PASSING)
    outputs = {kind: tmp_path / f"out.{kind}" for kind in ("json", "xml", "html")}
    done = subprocess.run(
        [*RUN, str(path), "--json", str(outputs["json"]), "--junit", str(outputs["xml"]), "--html", str(outputs["html"])],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "PASS: 6/6 thresholds held (exit 0)" in done.stdout

    result = json.loads(outputs["json"].read_text())
    assert (result["schema"], result["status"], result["complete"], result["passed"], result["exit_code"]) == (
        "sfuctl.scenario.result/1", "complete", True, True, 0)
    assert [v["passed"] for v in result["verdicts"]] == [True] * 6
    assert result["verdicts"][1]["value"] > 100000 and result["verdicts"][1]["samples"] == 2
    assert result["server"]["embedded"] and result["server"]["url"].startswith("ws://127.0.0.1:")
    assert result["metrics"]["consumer.bitrate_bps"]["samples"] == 4
    assert {c["kind"] for c in result["consumers"]} == {"audio", "video"}
    assert all(len(c["series"]["t"]) == len(c["series"]["bitrate_bps"]) >= 1 for c in result["consumers"])
    assert set(result["rooms"]) == {"room-1", "total"} and result["server_series"]["t"]
    assert result["bots"]["schema"] == "sfuctl.bots.report/1"

    suites = ET.parse(outputs["xml"]).getroot()
    suite = suites.find("testsuite")
    assert (suites.tag, suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("testsuites", "6", "0", "0")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases][:2] == ["bots.join_failed: count == 0",
                                                  "consumer.bitrate_bps{kind=video}: p50 > 100000"]
    assert all(c.find("failure") is None for c in cases)

    html = outputs["html"].read_text()
    assert html.startswith("<!DOCTYPE html>") and "PASS" in html and html.count("<svg") == 9  # bots' CPU too
    assert "UTC · sfuctl " in html and " cores)" in html and "<code>sfuctl run " in html
    assert 'class="limit"' in html and "consumer.fraction_lost: p95 &lt; 0.05" in html  # drawn on the loss plot
    assert "kb/s</td>" in html  # measured values with their unit
    assert "<h2>Worst streams" in html
    assert not re.search(r"https?://|<script|<link|@import|url\(|src=", html, re.IGNORECASE)


def test_a_failing_threshold_exits_99_and_abort_on_fail_stops_the_run(tmp_path: Path, media: tuple[str, str]) -> None:
    thresholds = (
        '"consumer.bitrate_bps{kind=video}" = ["p50 > 1e12"]\n'
        '"bots.join_ms" = { expect = ["max < 0"], abort_on_fail = true }\n'
    )
    path = scenario_file(tmp_path, media, "60s", thresholds)
    junit = tmp_path / "out.xml"
    done = subprocess.run([*RUN, str(path), "--junit", str(junit), "--quiet"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 99, done.stdout + done.stderr
    assert "FAIL: aborted when bots.join_ms: max < 0 failed (exit 99)" in done.stdout

    suite = ET.parse(junit).getroot().find("testsuite")
    assert (suite.get("tests"), suite.get("failures"), suite.get("errors")) == ("3", "2", "1")
    failures = {c.get("name"): c.find("failure").get("message") for c in suite.findall("testcase") if c.find("failure") is not None}
    assert re.fullmatch(r"max = [\d.]+ over \d samples; needs < 0", failures["bots.join_ms: max < 0"])
    # judged on what the short run measured (perhaps nothing yet: that fails too)
    assert failures["consumer.bitrate_bps{kind=video}: p50 > 1e12"].endswith("; needs > 1e+12")
    run = [c for c in suite.findall("testcase") if c.get("name") == "run"][0]
    assert run.find("error").get("type") == "aborted"


def test_churn_bitrate_is_a_mean_and_a_peak_of_concurrent_streams_never_a_sum_over_time(
    tmp_path: Path, media: tuple[str, str]
) -> None:
    """scenarios/churn.toml, shortened to 20 s (each bot still leaves after 10 s and is replaced): the bots'
    peak bitrate is at most what the server itself sent at its peak (+5%), while adding up every consumer's
    own bitrate, as the summary once did, counts bots that were never connected together."""
    text = (Path(__file__).parent.parent / "scenarios" / "churn.toml").read_text()
    assert '{ duration = "60s", bots = 8 }' in text and "[bots]\n" in text
    text = text.replace('{ duration = "60s", bots = 8 }', '{ duration = "20s", bots = 8 }')
    text = text.replace("[bots]\n", f'[bots]\nmedia = ["{media[0]}", "{media[1]}"]\nseed = 5\n')
    path = tmp_path / "churn.toml"
    path.write_text(text)
    out = tmp_path / "churn.json"
    done = subprocess.run([*RUN, str(path), "--json", str(out), "--quiet"], capture_output=True, text=True, timeout=120)
    assert done.returncode in (0, 99), done.stdout + done.stderr
    result = json.loads(out.read_text())
    total = result["bots"]["summary"]["total"]
    server_peak = max(result["server_series"]["bitrate_out_bps"])
    consumers = [c for bot in result["bots"]["bots"] for c in bot["consumers"]]
    assert len({bot["name"] for bot in result["bots"]["bots"]}) > 8  # bots came and went

    assert 0 < total["received_peak_bps"] <= 1.05 * server_peak
    assert 0 < total["received_mean_bps"] <= total["received_peak_bps"]
    assert total["received_bitrate_bps"] == total["received_mean_bps"]
    duration = result["bots"]["duration_s"]
    assert total["received_mean_bps"] == pytest.approx(sum(c["bytes"] for c in consumers) * 8 / duration, rel=1e-3)
    assert sum(c["bitrate_bps"] for c in consumers) > 1.5 * server_peak  # the old figure, wrong under churn
    rooms = {row["room"]: row for row in result["bots"]["summary"]["rooms"]}
    assert max(r["received_peak_bps"] for r in rooms.values()) <= total["received_peak_bps"]

    shown = subprocess.run([*RUN, str(path), "--validate"], capture_output=True, text=True, timeout=30)
    assert shown.returncode == 0


STOPPED_STREAM = """\
name = "stops"
duration = "9s"

[bots]
count = 2
publishers = 1
ramp = 10
processes = 1
seed = 3
media = ["{video}", "{audio}"]

[[network]]
name = "cut"
role = "publishers"

[[network.timeline]]
from = "4s"
loss = "100%"

[thresholds]
"consumer.freeze_ms{{kind=video}}" = {{ expect = ["max > 3500"], after = "5s" }}
"consumer.freezes{{kind=video}}" = ["max == 1"]
"""


def test_a_stream_that_stops_mid_run_is_one_freeze_counted_to_the_end_of_the_window(
    tmp_path: Path, media: tuple[str, str]
) -> None:
    """The publisher's path is cut at 4 s (its producer stays): the subscriber's video is frozen from then on,
    and the window after 5 s measures that (not 0, as when only closed freezes counted); the per-second series
    and the bots' own totals agree."""
    path = tmp_path / "stops.toml"
    path.write_text(STOPPED_STREAM.format(video=media[0], audio=media[1]))
    out = tmp_path / "stops.json"
    done = subprocess.run([*RUN, str(path), "--json", str(out), "--quiet"], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    result = json.loads(out.read_text())
    window = result["verdicts"][0]
    assert 3500 < window["value"] <= 4000 + 500  # frozen from ~4 s to the end of the run, 9 s

    video = [c for c in result["consumers"] if c["kind"] == "video"]
    assert len(video) == 1
    series = video[0]["series"]
    assert sum(series["freezes"]) == 1
    frozen = sum(series["freeze_ms"])
    own = next(c for bot in result["bots"]["bots"] for c in bot["consumers"] if c["kind"] == "video")
    assert own["freezes"] == 1
    # the bots' total runs to their leave, just after the run's end; the series stop at the end
    assert frozen <= own["freeze_ms"] <= frozen + 1500
