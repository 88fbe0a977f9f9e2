"""The same call through the SFU and as a full mesh: the topologies table (terminal, JSON, HTML) from a
Recorder fed known rows, and one real run of both at once."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest
from rich.console import Console

from sfuctl.bots.group import JoinEvent
from sfuctl.bots.stats import ConsumerRow, RoomCounters, Sample, SentRow, StreamSample
from sfuctl.scenario.comparison import compare, comparison_table
from sfuctl.scenario.html import render_html
from sfuctl.scenario.json_report import result_dict
from sfuctl.scenario.metrics import Recorder
from sfuctl.scenario.model import Scenario, parse_scenario
from sfuctl.scenario.plan import plan_scenario
from sfuctl.scenario.runner import RunResult

from .scenario_files import RUN, small_media

PEERS = 4
VIDEO, AUDIO = 70_000, 5_000  # bytes per second of one stream


def scenario(tmp_path: Path) -> Scenario:
    text = ('topology = ["sfu", "mesh"]\nduration = "4s"\n[bots]\ncount = 4\nramp = 10\n[thresholds]\n'
            '"bots.sent_bitrate_bps{topology=mesh}" = { expect = ["avg > 1"], after = "1s" }\n')
    return parse_scenario(text, tmp_path / "mesh.toml")


def recorded(scenario: Scenario) -> Recorder:
    """4 SFU bots and 4 mesh bots for 4 s, each publishing audio and video and receiving the other 3; the mesh
    bots send each stream 3 times and lose 1% of what they receive; the server forwards only the SFU's room."""
    plans, infos = plan_scenario(scenario)
    rec = Recorder(infos)
    rec.t0 = 100.0
    for plan in plans:
        rec.on_join(100.1, JoinEvent(plan.index, plan.name, plan.room, True, 50.0, None))
    for second in range(1, 5):
        now = 100.0 + second
        streams = StreamSample(1.0)
        for plan in plans:
            uplinks = PEERS - 1 if plan.mesh else 1
            for _ in range(uplinks):
                streams.sent += [SentRow(plan.index, "video", VIDEO, 1.0), SentRow(plan.index, "audio", AUDIO, 1.0)]
            for peer in range(PEERS - 1):
                for kind, size in (("video", VIDEO), ("audio", AUDIO)):
                    streams.consumers.append(ConsumerRow(plan.index, f"{plan.name}-{peer}-{kind}", kind, size, 100,
                                                         int(plan.mesh), 0, 0, 0.0, 0, 1.0, 1.0, 1.0))
        rec.on_streams(now, streams)
        rec.on_sample(now, Sample.from_counters(second, {
            "room-1": RoomCounters(bots=PEERS, active=PEERS, cpu_s=0.4, interval_s=1.0),
            "mesh-room-1": RoomCounters(bots=PEERS, active=PEERS, cpu_s=1.0, interval_s=1.0),
        }))
        producer = {"bitrate_bps": 560_000.0, "kind": "video", "peer_name": "bot-1", "score": 10, "fraction_lost": 0.0}
        server = {"cpu_percent": 5.0, "bitrate_in_bps": 2.24e6, "bitrate_out_bps": 6.72e6, "rooms": 2, "peers": 8,
                  "producers": PEERS, "consumers": 12, "transports": 8}
        rec.on_snapshot(now, {"server": server, "rooms": [
            {"name": "room-1", "peers": [{}] * PEERS, "producers": [producer] * PEERS,
             "consumers": [{**producer, "jitter_ms": 1.0, "rtt_ms": 1.0}] * (PEERS * (PEERS - 1))},
            {"name": "mesh-room-1", "peers": [{}] * PEERS, "producers": [], "consumers": []},
        ]})
    report = [{"index": plan.index, "joined": True, "status": "left", "join_ms": 50.0, "joined_at_s": 0.1,
               "left_at_s": None, "errors": [], "consumers": [], "transports": PEERS - 1 if plan.mesh else 2}
              for plan in plans]
    rec.finish({"bots": report}, 4.0)
    return rec


def test_the_topologies_side_by_side_per_peer(tmp_path: Path) -> None:
    scene = scenario(tmp_path)
    sfu, mesh = (row.to_dict() for row in compare(scene, recorded(scene)))
    # rows from 1 s on (the thresholds' warm-up): 3 s of 75 kB/s per stream sent, per peer
    assert sfu == {"topology": "sfu", "rooms": ["room-1"], "from_s": 1.0, "peers": 4, "transports_per_peer": 2.0,
                   "uplink_bps": 600_000.0, "downlink_bps": 1_800_000.0, "cpu_percent": 10.0,
                   "fraction_lost": 0.0, "server_in_bps": 2_240_000.0, "server_out_bps": 6_720_000.0}
    assert mesh == {"topology": "mesh", "rooms": ["mesh-room-1"], "from_s": 1.0, "peers": 4,
                    "transports_per_peer": 3.0, "uplink_bps": 1_800_000.0, "downlink_bps": 1_800_000.0,
                    "cpu_percent": 25.0, "fraction_lost": 0.01, "server_in_bps": 0.0, "server_out_bps": 0.0}


def test_the_table_is_printed_written_to_json_and_to_html(tmp_path: Path) -> None:
    scene = scenario(tmp_path)
    rec = recorded(scene)
    result = RunResult(scene, recorder=rec)

    console = Console(file=io.StringIO(), width=100, color_system=None)
    console.print(comparison_table(compare(scene, rec)))
    lines = [line.split() for line in console.file.getvalue().splitlines()]
    assert lines[0] == ["topologies", "(per", "peer)"] and lines[1] == ["sfu", "mesh"]
    assert ["connections", "per", "peer", "2", "3"] in lines
    assert ["uplink", "per", "peer", "600", "kb/s", "1.8", "Mb/s"] in lines
    assert ["bot", "CPU", "per", "peer", "10.0%", "of", "a", "core", "25.0%", "of", "a", "core"] in lines
    assert ["server", "media", "in", "2.24", "Mb/s", "0", "b/s"] in lines

    data = json.loads(json.dumps(result_dict(result)))
    assert [row["topology"] for row in data["topologies"]] == ["sfu", "mesh"]
    assert data["topologies"][1]["uplink_bps"] == 1_800_000.0 and data["scenario"]["topologies"] == ["sfu", "mesh"]

    html = render_html(result)
    assert "<h2>Topologies (per peer)</h2>" in html
    assert '<tr><td>uplink per peer</td><td class="num">600 kb/s</td><td class="num">1.8 Mb/s</td></tr>' in html


E2E = """\
topology = ["sfu", "mesh"]
duration = "12s"

[bots]
count = 3
ramp = 5
processes = 2
seed = 4
media = ["{video}", "{audio}"]

[thresholds]
"bots.join_failed" = ["count == 0"]
"bots.sent_bitrate_bps{{topology=mesh}}" = {{ expect = ["avg > 0"], after = "4s" }}
"""


def test_a_real_run_of_both_topologies_at_once(tmp_path: Path) -> None:
    video, audio = small_media(tmp_path)
    path = tmp_path / "mesh.toml"
    path.write_text(E2E.format(video=video, audio=audio))
    output = tmp_path / "out.json"
    done = subprocess.run([*RUN, str(path), "--json", str(output)], capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "topologies (per peer)" in done.stdout
    result = json.loads(output.read_text())
    sfu, mesh = result["topologies"]
    assert (sfu["topology"], sfu["peers"], mesh["topology"], mesh["peers"]) == ("sfu", 3, "mesh", 3)
    assert (sfu["transports_per_peer"], mesh["transports_per_peer"]) == (2.0, 2.0)
    # each mesh peer sends its media to both others itself: twice the SFU's one uplink
    assert 1.6 < mesh["uplink_bps"] / sfu["uplink_bps"] < 2.4, (sfu, mesh)
    assert sfu["downlink_bps"] > 0 and mesh["downlink_bps"] > 0
    assert sfu["cpu_percent"] > 0 and mesh["cpu_percent"] > 0
    assert sfu["server_in_bps"] > 0 and mesh["server_in_bps"] == mesh["server_out_bps"] == 0
    bots = {bot["name"]: bot for bot in result["bots"]["bots"]}
    assert {name: bot["room"] for name, bot in bots.items() if bot["mesh"]} == {
        "mesh-bot-1": "mesh-room-1", "mesh-bot-2": "mesh-room-1", "mesh-bot-3": "mesh-room-1"}
