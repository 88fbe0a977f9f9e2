"""Scenario files: what a valid one turns into, and that every mistake is reported with the file, the
line, the key and the fix before anything runs. The shipped scenarios stay valid and documented."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sfuctl.bots.impairment import ImpairmentConfig, ImpairmentStep
from sfuctl.scenario.metrics import METRICS
from sfuctl.scenario.model import (
    ScenarioError,
    load_scenario,
    parse_bandwidth,
    parse_duration,
    parse_fraction,
)

ROOT = Path(__file__).resolve().parent.parent
GOOD = """\
name = "t"
duration = "30s"

[bots]
count = 4
rooms = 2
ramp = 5

[[network]]
name = "bad"
share = "50%"
loss = "5%"
jitter = "30ms"

[[network.timeline]]
from = "10s"
to = "20s"
loss = 0.2

[thresholds]
"bots.join_failed" = ["count == 0"]
"consumer.fraction_lost{kind=video,group=bad}" = { expect = ["p95 < 0.01", "max < 0.1"], after = "5s", abort_on_fail = true }
"""


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ScenarioError) as error:
        load_scenario(path)
    return [p.replace(str(path), "s.toml") for p in error.value.problems]


def test_a_valid_file_becomes_a_scenario(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text(GOOD)
    scenario = load_scenario(path)
    assert (scenario.name, scenario.duration, scenario.max_bots, scenario.room_names) == ("t", 30.0, 4, ["room-1", "room-2"])
    assert scenario.server.url is None and scenario.bots.ramp == 5.0
    (group,) = scenario.network
    assert group.timeline() == (
        ImpairmentStep(0.0, ImpairmentConfig(loss=0.05, jitter_ms=30.0)),
        ImpairmentStep(10.0, ImpairmentConfig(loss=0.2, jitter_ms=30.0)),  # keys not given keep the group's
        ImpairmentStep(20.0, ImpairmentConfig(loss=0.05, jitter_ms=30.0)),
    )
    first, second, third = scenario.thresholds
    assert (first.key, first.expression.aggregate, first.after, first.abort_on_fail, first.line) == (
        "bots.join_failed", "count", 0.0, False, 21)
    assert (second.metric.name, dict(second.tags), second.after, second.abort_on_fail, second.line) == (
        "consumer.fraction_lost", {"kind": "video", "group": "bad"}, 5.0, True, 22)
    assert third.expression.text == "max < 0.1"
    assert scenario.with_url("ws://127.0.0.1:9").server.url == "ws://127.0.0.1:9"


@pytest.mark.parametrize(
    ("line", "topologies", "rooms"),
    [
        ("", ("sfu",), ["room-1", "room-2"]),
        ('topology = "sfu"', ("sfu",), ["room-1", "room-2"]),
        ('topology = "mesh"', ("mesh",), ["mesh-room-1", "mesh-room-2"]),
        ('topology = ["sfu", "mesh"]', ("sfu", "mesh"), ["room-1", "room-2", "mesh-room-1", "mesh-room-2"]),
        ('topology = ["mesh", "sfu"]', ("mesh", "sfu"), ["mesh-room-1", "mesh-room-2", "room-1", "room-2"]),
    ],
)
def test_topology(tmp_path: Path, line: str, topologies: tuple, rooms: list) -> None:
    path = tmp_path / "s.toml"
    path.write_text(f'{line}\nduration = "10s"\n[bots]\ncount = 32\nrooms = 2\nramp = 10\n[thresholds]\n'
                    f'"bots.cpu_percent{{topology={topologies[-1]},room={rooms[-1]}}}" = ["avg < 50"]\n')
    scenario = load_scenario(path)
    assert (scenario.topologies, scenario.room_names) == (topologies, rooms)  # 16 per mesh room is allowed


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (  # unknown metric, with a suggestion
            'duration = "10s"\n[bots]\ncount = 2\n[thresholds]\n"consumer.jitter" = ["p95 < 30"]\n',
            ["s.toml:5: thresholds.\"consumer.jitter\": unknown metric 'consumer.jitter'; did you mean consumer.jitter_ms?"],
        ),
        (  # bad expression inside a multi-line list: its own line
            'duration = "10s"\n[bots]\ncount = 2\n[thresholds]\n"consumer.jitter_ms" = [\n  "p95 < 30",\n  "p95 <> 30",\n]\n',
            ["s.toml:7: thresholds.\"consumer.jitter_ms\"[1]: bad threshold 'p95 <> 30': expected AGGREGATE OP NUMBER, "
             'e.g. "p95 < 0.01"'],
        ),
        (  # bad expression in the table form
            'duration = "10s"\n[bots]\ncount = 2\n[thresholds]\n"bots.join_ms" = { expect = [\n "p(95) < 1"], after = "1s" }\n',
            ["s.toml:6: thresholds.\"bots.join_ms\"[0]: bad threshold 'p(95) < 1': unknown aggregate 'p(95)'; write p95"],
        ),
        (  # bad duration
            'duration = 45\n[bots]\ncount = 2\n',
            ['s.toml:1: duration: bad duration 45: write a number with a unit, e.g. "45s", "500ms" or "2m"'],
        ),
        (  # bad duration in a stage
            'stages = [\n { duration = "10s", bots = 2 },\n { duration = "10 sec", bots = 2 },\n]\n',
            ['s.toml:3: stages[1].duration: bad duration \'10 sec\': write a number with a unit, e.g. "45s", "500ms" or "2m"'],
        ),
        (  # unknown key, with the known ones
            'duration = "10s"\n[bots]\ncount = 2\nrampp = 3\n',
            ["s.toml:4: bots.rampp: unknown key; known keys here: count, rooms, publishers, audio, video, subscribe, "
             "media, ramp, lifetime, processes, seed, join_timeout, data, speakers"],
        ),
        (  # talkers without audio
            'duration = "10s"\n[bots]\ncount = 2\naudio = false\nspeakers = 1\n',
            ["s.toml:5: bots.speakers: speakers talk on their audio: set audio = true or remove speakers"],
        ),
        (  # a tag the metric does not have, and a tag value that does not exist
            'duration = "10s"\n[bots]\ncount = 2\n[thresholds]\n"server.cpu_percent{room=room-1}" = ["max < 90"]\n'
            '"consumer.jitter_ms{kind=screen}" = ["max < 90"]\n',
            ["s.toml:5: thresholds.\"server.cpu_percent{room=room-1}\": server.cpu_percent has no tag 'room'; its tags: none",
             "s.toml:6: thresholds.\"consumer.jitter_ms{kind=screen}\": no kind 'screen' in this scenario; use one of audio, video"],
        ),
        (  # after beyond the run
            'duration = "10s"\n[bots]\ncount = 2\n[thresholds]\n"bots.join_ms" = { expect = ["max < 1"], after = "10s" }\n',
            ["s.toml:5: thresholds.\"bots.join_ms\".after: 10 s leaves nothing of the 10 s run to measure"],
        ),
        (  # a stage the ramp cannot reach
            'stages = [{ duration = "2s", bots = 20 }]\n[bots]\nramp = 5\n',
            ["s.toml:1: stages[0]: going from 0 to 20 bots at bots.ramp = 5/s takes 4 s but the stage lasts 2 s: "
             "lengthen it or raise bots.ramp"],
        ),
        (  # stages and the shorthand together
            'duration = "10s"\nstages = [{ duration = "2s", bots = 2 }]\n',
            ["s.toml:1: duration: give either stages or duration + bots.count, not both"],
        ),
        (  # nothing says how long
            '[bots]\nrooms = 1\n',
            ['s.toml: say how long and with how many bots: duration = "30s" and [bots] count = 10, '
             'or stages = [{ duration = "30s", bots = 10 }]'],
        ),
        (  # network: overlapping windows, bad fraction, unknown room
            'duration = "30s"\n[bots]\ncount = 2\n[[network]]\nname = "x"\nloss = "150%"\nrooms = ["room-9"]\n'
            '[[network.timeline]]\nfrom = "5s"\n[[network.timeline]]\nfrom = "10s"\n',
            ["s.toml:6: network[0].loss: bad fraction '150%': write a number from 0 to 1 or a percentage, e.g. 0.05 or \"5%\"",
             "s.toml:7: network[0].rooms: no room 'room-9' in this scenario; its rooms: room-1",
             "s.toml:11: network[0].timeline[1].from: windows must be in time order and must not overlap"],
        ),
        (  # a missing media file
            'duration = "10s"\n[bots]\ncount = 2\nmedia = ["nope.ivf"]\n',
            ["s.toml:4: bots.media[0]: no such file: {dir}/nope.ivf; give a path relative to the scenario file, "
             "or remove media to use the generated test media"],
        ),
        (  # not TOML at all
            'duration = "10s\n',
            ["s.toml:1: not valid TOML: Illegal character '\\n'"],
        ),
        (  # a topology that does not exist, and one listed twice
            'topology = "p2p"\nduration = "10s"\n[bots]\ncount = 5\n',
            ['s.toml:1: topology: expected "sfu", "mesh" or a list of them, e.g. topology = ["sfu", "mesh"] to run '
             "the same call both ways at once, not 'p2p'"],
        ),
        (
            'duration = "10s"\ntopology = ["mesh", "sfu", "mesh"]\n[bots]\ncount = 5\n',
            ["s.toml:2: topology: 'mesh' is listed twice; list each topology at most once, e.g. "
             'topology = ["sfu", "mesh"]'],
        ),
        (  # an empty list
            'topology = []\nduration = "10s"\n[bots]\ncount = 5\n',
            ['s.toml:1: topology: expected "sfu", "mesh" or a list of them, e.g. topology = ["sfu", "mesh"] to run '
             "the same call both ways at once, not []"],
        ),
        (  # the old key is gone
            'mode = "mesh"\nduration = "10s"\n[bots]\ncount = 5\n',
            ["s.toml:1: mode: unknown key; known keys here: name, description, topology, duration, stages, server, "
             "bots, network, thresholds"],
        ),
        (  # a mesh room too big to measure the topology
            'topology = "mesh"\nduration = "10s"\n[bots]\ncount = 34\nrooms = 2\nramp = 10\n',
            ["s.toml:1: topology: 17 bots in a mesh room: a full mesh of n peers has n(n-1)/2 connections (136 here) "
             "and every peer sends its media n-1 times, so a mesh room takes at most 16 bots; use bots.rooms = 3 or "
             "more, or fewer bots"],
        ),
        (  # both topologies in one process would mix their CPU
            'topology = ["sfu", "mesh"]\nduration = "10s"\n[bots]\ncount = 4\nprocesses = 1\n',
            ["s.toml:5: bots.processes: 1 process for 2 topologies: each topology's bots run in processes of their "
             "own so that bots.cpu_percent does not mix them; use processes = 2 or more, or leave it out"],
        ),
        (  # tag values are the scenario's own: its topologies and the rooms they have
            'topology = "mesh"\nduration = "10s"\n[bots]\ncount = 4\n[thresholds]\n'
            '"bots.sent_bitrate_bps{topology=sfu}" = ["avg > 1"]\n"bots.cpu_percent{room=room-1}" = ["avg < 50"]\n',
            ["s.toml:6: thresholds.\"bots.sent_bitrate_bps{topology=sfu}\": no topology 'sfu' in this scenario; use "
             "one of mesh",
             "s.toml:7: thresholds.\"bots.cpu_percent{room=room-1}\": no room 'room-1' in this scenario; use one of "
             "mesh-room-1"],
        ),
    ],
)
def test_every_mistake_names_the_line_the_key_and_the_fix(tmp_path: Path, text: str, expected: list[str]) -> None:
    assert problems(tmp_path, text) == [e.replace("{dir}", str(tmp_path)) for e in expected]


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    found = problems(tmp_path, 'duration = "1x"\n[bots]\ncount = 0\nvideo = "yes"\n[server]\nurl = "http://x"\n')
    assert [p.split(": ")[1] for p in found] == ["duration", "bots.count", "bots.video", "server.url"]


@pytest.mark.parametrize(
    ("parse", "value", "expected"),
    [
        (parse_duration, "45s", 45.0),
        (parse_duration, "500ms", 0.5),
        (parse_duration, "2m", 120.0),
        (parse_duration, "1m30s", 90.0),
        (parse_duration, "1h", 3600.0),
        (parse_fraction, 0.05, 0.05),
        (parse_fraction, "5%", 0.05),
        (parse_fraction, 1, 1.0),
        (parse_bandwidth, "500kbps", 500.0),
        (parse_bandwidth, "2 Mbps", 2000.0),
        (parse_bandwidth, "2Mb/s", 2000.0),
        (parse_bandwidth, "500 kb/s", 500.0),
    ],
)
def test_units(parse, value: object, expected: float) -> None:
    assert parse(value) == pytest.approx(expected)


@pytest.mark.parametrize(("parse", "value"), [(parse_duration, "5"), (parse_duration, "s"), (parse_duration, "1.5.0s"),
                                              (parse_fraction, -0.1), (parse_fraction, "5"), (parse_fraction, True),
                                              (parse_bandwidth, 500), (parse_bandwidth, "5 bps")])
def test_bad_units_are_refused(parse, value: object) -> None:
    with pytest.raises(ValueError):
        parse(value)


def test_the_shipped_scenarios_are_valid() -> None:
    files = sorted((ROOT / "scenarios").glob("*.toml"))
    assert {f.stem for f in files} >= {"demo", "smoke", "meeting", "webinar", "lossy", "churn", "mesh"}
    for path in files:
        assert load_scenario(path).thresholds, path


def test_the_docs_describe_every_metric() -> None:
    documented = set(re.findall(r"^\| `([a-z0-9_.]+)` \| (?:window|event|sample) \|", (ROOT / "docs" / "scenarios.md").read_text(), re.M))
    assert documented == set(METRICS)


@pytest.mark.parametrize(
    ("media", "simulcast", "problem"),
    [
        ("media.simulcast = true", True, None),
        ("media = { simulcast = false }", False, None),
        ('media = { simulcast = "yes" }', False, "bots.media.simulcast: expected true or false"),
        ("media = { simulcast = true, encodings = 3 }", False, "bots.media.encodings: unknown key"),
        ('media = { files = ["nope.ivf"], simulcast = true }', False, "bots.media.files[0]: no such file"),
        ("media.simulcast = true\nvideo = false", False, "bots.media.simulcast: simulcast is for video"),
    ],
)
def test_bots_media_may_ask_for_simulcast(tmp_path: Path, media: str, simulcast: bool, problem: str | None) -> None:
    text = GOOD.replace("ramp = 5\n", f"ramp = 5\n{media}\n", 1)
    if problem is None:
        path = tmp_path / "s.toml"
        path.write_text(text)
        assert load_scenario(path).bots.simulcast is simulcast
    else:
        assert any(problem in p for p in problems(tmp_path, text)), problems(tmp_path, text)
