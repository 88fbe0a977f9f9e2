"""Who joins when: stages, ramp and lifetime turned into bot plans, and network groups given to slots;
no network involved."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfuctl.bots.config import BotPlan
from sfuctl.bots.impairment import ImpairmentConfig, ImpairmentStep
from sfuctl.scenario.model import NetworkGroup, Stage, parse_scenario
from sfuctl.scenario.plan import layout, plan_scenario, schedule

LOSSY = ImpairmentConfig(loss=0.05)


@pytest.mark.parametrize(
    ("stages", "ramp", "lifetime", "expected"),
    [
        # ramp up at 2/s, hold: nobody leaves before the end
        ([(10, 3)], 2, None, [(0, 0.0, None), (1, 0.5, None), (2, 1.0, None)]),
        # up, hold, then down to 1 (highest slot first, one every 1/ramp s)
        ([(5, 3), (5, 3), (5, 1)], 2, None, [(0, 0.0, None), (1, 0.5, 10.5), (2, 1.0, 10.0)]),
        # a second stage adds bots after the first
        ([(4, 1), (4, 2)], 1, None, [(0, 0.0, None), (1, 4.0, None)]),
        # lifetime: each bot is replaced in its slot when it leaves, until the end
        ([(7, 2)], 5, 3, [(0, 0.0, 3.0), (1, 0.2, 3.2), (0, 3.0, 6.0), (1, 3.2, 6.2), (0, 6.0, None), (1, 6.2, None)]),
        # a stage with no bots at all
        ([(2, 0), (2, 1)], 1, None, [(0, 2.0, None)]),
    ],
)
def test_schedule(stages: list, ramp: float, lifetime: float | None, expected: list) -> None:
    got = schedule(tuple(Stage(float(d), n) for d, n in stages), ramp, lifetime)
    assert [(slot, pytest.approx(start), stop if stop is None else pytest.approx(stop)) for slot, start, stop in got] == expected


def test_slots_fill_rooms_evenly_and_groups_take_their_share_of_each_room() -> None:
    lossy = NetworkGroup("lossy", 0.5, None, "all", LOSSY)
    clean = NetworkGroup("clean", 1.0, None, "all", ImpairmentConfig())
    slots = layout(8, 2, 2, (lossy, clean))
    assert [(s.room, s.position, s.publisher) for s in slots[:4]] == [
        ("room-1", 0, True), ("room-2", 0, True), ("room-1", 1, True), ("room-2", 1, True)]
    assert [s.publisher for s in slots[4:]] == [False] * 4
    assert [s.group.name for s in slots] == ["lossy", "lossy", "clean", "clean", "lossy", "lossy", "clean", "clean"]


def test_a_group_can_be_limited_to_rooms_and_roles() -> None:
    group = NetworkGroup("subs", 1.0, ("room-2",), "subscribers", LOSSY)
    slots = layout(6, 2, 1, (group,))
    assert [s.group is not None for s in slots] == [False, False, False, True, False, True]


def test_plans_carry_stop_offsets_and_network_timelines(tmp_path: Path) -> None:
    text = """
stages = [{ duration = "10s", bots = 2 }]
[bots]
ramp = 1
lifetime = "6s"
subscribe = false
[[network]]
name = "bad"
share = "50%"
loss = "5%"
[[network.timeline]]
from = "2s"
to = "4s"
loss = "20%"
"""
    plans, infos = plan_scenario(parse_scenario(text, tmp_path / "s.toml"))
    timeline = (ImpairmentStep(0.0, LOSSY), ImpairmentStep(2.0, ImpairmentConfig(loss=0.2)), ImpairmentStep(4.0, LOSSY))
    assert plans == [
        BotPlan(0, "bot-1", "room-1", True, False, 0.0, True, 6.0, timeline),
        BotPlan(1, "bot-2", "room-1", True, False, 1.0, False, 7.0, ()),
        BotPlan(2, "bot-3", "room-1", True, False, 6.0, True, None, timeline),
        BotPlan(3, "bot-4", "room-1", True, False, 7.0, False, None, ()),
    ]
    assert [(i.name, i.group, i.start, i.stop) for i in infos.values()] == [
        ("bot-1", "bad", 0.0, 6.0), ("bot-2", "none", 1.0, 7.0), ("bot-3", "bad", 6.0, None), ("bot-4", "none", 7.0, None)]
    # what crosses the pipe to a bot process comes back the same
    assert [BotPlan.from_dict(p.to_dict()) for p in plans] == plans


@pytest.mark.parametrize(
    ("topology", "expected"),
    [
        ('"sfu"', [(0, "bot-1", "room-1", False), (1, "bot-2", "room-2", False), (2, "bot-3", "room-1", False)]),
        ('"mesh"', [(0, "mesh-bot-1", "mesh-room-1", True), (1, "mesh-bot-2", "mesh-room-2", True),
                    (2, "mesh-bot-3", "mesh-room-1", True)]),
        ('["sfu", "mesh"]', [(0, "bot-1", "room-1", False), (1, "bot-2", "room-2", False), (2, "bot-3", "room-1", False),
                             (3, "mesh-bot-1", "mesh-room-1", True), (4, "mesh-bot-2", "mesh-room-2", True),
                             (5, "mesh-bot-3", "mesh-room-1", True)]),
    ],
)
def test_each_topology_runs_the_same_call_in_rooms_and_names_of_its_own(tmp_path: Path, topology: str, expected: list) -> None:
    text = f"""
topology = {topology}
duration = "10s"
[bots]
count = 3
rooms = 2
publishers = 1
ramp = 2
[[network]]
name = "bad"
share = "50%"
loss = "5%"
"""
    plans, infos = plan_scenario(parse_scenario(text, tmp_path / "s.toml"))
    assert [(p.index, p.name, p.room, p.mesh) for p in plans] == expected
    assert [info.name for info in infos.values()] == [name for _, name, _, _ in expected]
    # the same call either way: who publishes, when each joins, who is behind the bad network
    calls = [plans[i:i + 3] for i in range(0, len(plans), 3)]
    for call in calls:
        assert [(p.publish, p.start_offset, p.impaired) for p in call] == [(True, 0.0, True), (True, 0.5, True),
                                                                          (False, 1.0, False)]
    assert [infos[p.index].topology for p in plans] == ["mesh" if p.mesh else "sfu" for p in plans]


def test_a_network_group_limited_to_a_room_applies_to_that_room_only(tmp_path: Path) -> None:
    text = """
topology = ["sfu", "mesh"]
duration = "10s"
[bots]
count = 2
ramp = 2
[[network]]
name = "bad"
rooms = ["mesh-room-1"]
loss = "5%"
"""
    plans, _ = plan_scenario(parse_scenario(text, tmp_path / "s.toml"))
    assert [(p.name, p.impaired) for p in plans] == [("bot-1", False), ("bot-2", False), ("mesh-bot-1", True),
                                                     ("mesh-bot-2", True)]
