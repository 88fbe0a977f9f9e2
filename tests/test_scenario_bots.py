"""What scenarios need from the bots: impairment that changes at given times, bots that leave at their own
time, per-stream rows each interval, also across bot processes."""

from __future__ import annotations

import pytest

from sfuctl.bots.config import BotPlan, BotsConfig
from sfuctl.bots.impairment import ImpairmentConfig, ImpairmentStep, LinkModel
from sfuctl.bots.observer import Collector
from sfuctl.bots.runner import run_bots
from sfuctl.bots.stats import ConsumerRow
from sfuctl.media import MediaSpec, make_media


def test_a_link_follows_its_timeline_with_time_as_a_parameter() -> None:
    changes = ((1.0, ImpairmentConfig(loss=1.0)), (2.0, ImpairmentConfig(delay_ms=40)))
    model = LinkModel(ImpairmentConfig(), "seed", changes)
    assert model.admit(100, 0.5) == 0.5
    assert model.admit(100, 1.0) is None and model.admit(100, 1.9) is None
    assert model.admit(100, 2.0) == pytest.approx(2.02)
    assert model.config == ImpairmentConfig(delay_ms=40)
    assert (model.datagrams, model.dropped) == (4, 2)


def test_a_changing_link_draws_the_same_losses_as_a_fixed_one_once_it_has_the_same_settings() -> None:
    fixed = LinkModel(ImpairmentConfig(loss=0.3), "s")
    changing = LinkModel(ImpairmentConfig(loss=0.3), "s", ((0.5, ImpairmentConfig(loss=0.3, jitter_ms=5)),))
    assert [fixed.admit(10, i * 0.01) is None for i in range(100)] == [changing.admit(10, i * 0.01) is None for i in range(100)]


def test_a_plan_without_a_timeline_uses_the_configs_impairment_when_impaired() -> None:
    plan = BotPlan(0, "bot-1", "room-1", True, True, 0.0, True)
    assert plan.impairment_timeline(ImpairmentConfig(loss=0.1)) == (ImpairmentStep(0.0, ImpairmentConfig(loss=0.1)),)
    own = (ImpairmentStep(2.0, ImpairmentConfig(loss=0.5)),)
    assert BotPlan(0, "bot-1", "room-1", True, True, 0.0, True, network=own).impairment_timeline(ImpairmentConfig()) == own
    assert BotPlan(0, "bot-1", "room-1", True, True, 0.0, False).impairment_timeline(ImpairmentConfig(loss=0.1)) == ()


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    files = make_media(MediaSpec(duration=2.0, keyframe_interval=1.0), tmp_path_factory.mktemp("scenario-bots"))
    return (str(files.video), str(files.audio))


@pytest.mark.parametrize("processes", [1, 2])
async def test_bots_leave_at_their_time_follow_their_network_and_report_rows(server, media, processes: int) -> None:
    # bot-2 loses everything it receives (and sends) from 1.2 s to 2.2 s, then leaves at 3 s; bot-1 stays clean.
    blackout = (ImpairmentStep(0.0, ImpairmentConfig()), ImpairmentStep(1.2, ImpairmentConfig(loss=1.0)),
                ImpairmentStep(2.2, ImpairmentConfig()))
    plans = [
        BotPlan(0, "bot-1", "room-1", True, True, 0.0, False),
        BotPlan(1, "bot-2", "room-1", True, True, 0.1, True, stop_offset=3.0, network=blackout),
    ]
    config = BotsConfig(url=server.url, count=2, duration=4.0, media=media, seed=9, processes=processes)
    collector = Collector(wants_streams=True)
    report = await run_bots(config, collector, plans=plans)
    samples, starts = [sample for _, sample in collector.rows], collector.starts

    first, second = report.bots
    assert (first["status"], second["status"]) == ("left", "left") and report.stopped_by == "duration"
    assert second["left_at_s"] < first["left_at_s"] and len(starts) == 1
    rows: dict[int, list[ConsumerRow]] = {0: [], 1: []}
    for sample in samples:
        assert sample.interval > 0
        for row in sample.consumers:
            assert 0 <= row.seconds <= sample.interval + 1e-6  # the part of the interval it was open
            rows[row.bot].append(row)
    audio_lost = sum(r.lost for r in rows[1] if r.kind == "audio")  # audio is not NACKed: the blackout stays
    assert audio_lost > 20 and sum(r.lost_first for r in rows[1]) > audio_lost
    assert sum(r.lost_first for r in rows[0]) > 0  # bot-2's uplink was dark too
    assert {r.kind for r in rows[0]} == {r.kind for r in rows[1]} == {"audio", "video"}
    assert sum(r.bytes for r in rows[0]) > 0 and all(r.rtt_ms is None or r.rtt_ms >= 0 for r in rows[0])
    sent = {(row.bot, row.kind) for sample in samples for row in sample.sent}
    assert sent == {(0, "audio"), (0, "video"), (1, "audio"), (1, "video")}
    assert all(c["first_frame_at_s"] is not None for c in first["consumers"])
