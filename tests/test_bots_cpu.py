"""The bots' CPU per joined bot: SFU and mesh bots in processes of their own, each sample's process CPU shared
out to the rooms by their joined bots and merged across processes, and measured for real."""

from __future__ import annotations

import pytest

from sfuctl.bots.config import BotPlan, BotsConfig
from sfuctl.bots.group import share_cpu
from sfuctl.bots.observer import Collector
from sfuctl.bots.runner import run_bots, split_plans
from sfuctl.bots.stats import RoomCounters, Sample, merge_counters
from sfuctl.media import MediaSpec, make_media


def plans(kinds: str) -> list[BotPlan]:
    """'ssm' -> an SFU bot, an SFU bot, a mesh bot (indexes in that order)."""
    return [BotPlan(i, f"b{i}", "r", True, True, 0.0, False, mesh=kind == "m") for i, kind in enumerate(kinds)]


@pytest.mark.parametrize(
    ("kinds", "count", "expected"),
    [
        ("ssss", 2, [[0, 2], [1, 3]]),  # one kind: round-robin as always
        ("sssmmm", 1, [[0, 1, 2, 3, 4, 5]]),  # fewer processes than kinds: mixed
        ("sssmmm", 2, [[0, 1, 2], [3, 4, 5]]),  # one process per kind
        ("smsmsm", 2, [[0, 2, 4], [1, 3, 5]]),  # whatever the order of the plans
        ("sssmmm", 3, [[0, 2], [1], [3, 4, 5]]),  # a tie goes to the kind seen first
        ("ssssssmm", 4, [[0, 3], [1, 4], [2, 5], [6, 7]]),  # in proportion to the bots: 6 to 2
        ("smmmmmmm", 3, [[0], [1, 3, 5, 7], [2, 4, 6]]),  # at least one process per kind
        ("sm", 2, [[0], [1]]),
        ("mmss", 4, [[0], [1], [2], [3]]),  # kinds in the order they first appear
    ],
)
def test_each_process_gets_one_kind_of_bot_when_there_are_enough(kinds: str, count: int, expected: list) -> None:
    assert [[plan.index for plan in share] for share in split_plans(plans(kinds), count)] == expected


def test_a_samples_cpu_goes_to_the_rooms_by_their_joined_bots_and_merges_across_processes() -> None:
    first = {"room-1": RoomCounters(bots=3, active=1), "mesh-room-1": RoomCounters(bots=3, active=3)}
    share_cpu(first, 0.4, 0.5)
    assert [(c.cpu_s, c.interval_s) for c in first.values()] == [(pytest.approx(0.1), 0.5), (pytest.approx(0.3), 0.5)]
    idle = {"room-1": RoomCounters(bots=2)}  # nobody joined yet: the CPU goes to no room
    share_cpu(idle, 0.2, 0.5)
    assert (idle["room-1"].cpu_s, idle["room-1"].sample("room-1").cpu_percent) == (0.0, None)
    second = {"room-1": RoomCounters(bots=1, active=1)}
    share_cpu(second, 0.2, 0.5)
    merged = merge_counters([first, idle, second])
    sample = Sample.from_counters(1.0, merged)
    # room-1: 0.1 + 0.2 s of CPU over 0.5 s for 2 joined bots; mesh-room-1: 0.3 s for 3
    assert sample.rooms["room-1"].cpu_percent == pytest.approx(30.0)
    assert sample.rooms["mesh-room-1"].cpu_percent == pytest.approx(20.0)
    assert sample.total.cpu_percent == pytest.approx(0.6 / 0.5 / 5 * 100)
    assert RoomCounters.from_dict(merged["room-1"].to_dict()) == merged["room-1"]  # what crosses the pipe


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    files = make_media(MediaSpec(duration=2.0, keyframe_interval=1.0), tmp_path_factory.mktemp("cpu-media"))
    return (str(files.video), str(files.audio))


async def test_real_bots_report_the_cpu_of_their_process_per_joined_bot(server, media) -> None:
    config = BotsConfig(url=server.url, count=2, duration=3.0, media=media, seed=5, sample_interval=0.5)
    collector = Collector()
    await run_bots(config, collector)
    samples = collector.samples
    rooms = [sample.rooms["room-1"] for sample in samples if "room-1" in sample.rooms]
    joined = [room for room in rooms if room.active]
    assert joined and all(room.cpu_percent is not None for room in joined)
    assert sum(room.cpu_percent for room in joined) > 0  # sending and receiving media costs something
    assert all(room.cpu_percent is None for room in rooms if not room.active)
