"""Talking bots: the turns and levels they send, what they measure of activeSpeaker, and a real server naming them."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from sfuctl.bots.config import BotsConfig, plan_bots
from sfuctl.bots.publisher import StreamSender
from sfuctl.bots.runner import run_bots
from sfuctl.bots.speech import PAUSE_S, SILENCE_LEVEL, SPEECH_LEVEL, TURN_S, VOICE, WORD_S, Speaker
from sfuctl.encoded import load_track
from sfuctl.media import MediaSpec, make_media
from sfuctl.rtc.rtp import find_extension
from sfuctl.scenario.model import load_scenario
from sfuctl.scenario.plan import plan_scenario


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    files = make_media(MediaSpec(duration=2.0, width=320, height=180), tmp_path_factory.mktemp("speaker-media"))
    return (str(files.video), str(files.audio))


def test_speakers_take_turns_in_words_and_the_others_stay_silent() -> None:
    clock = Clock(10 * TURN_S)  # turn 10: slot 0 of 2
    first, second, silent = Speaker(0, 2, clock), Speaker(1, 2, clock), Speaker(None, 2, clock)
    assert first.level() == VOICE | SPEECH_LEVEL and second.level() == SILENCE_LEVEL == silent.level()
    clock.now += WORD_S + PAUSE_S / 2  # the pause between two words
    assert first.level() == SILENCE_LEVEL
    clock.now = 11 * TURN_S + 0.1  # the next turn
    assert first.level() == SILENCE_LEVEL and second.level() == VOICE | SPEECH_LEVEL == 0x80 | 20
    assert silent.level() == SILENCE_LEVEL
    with pytest.raises(ValueError, match="slot 2"):
        Speaker(2, 2)


def test_naming_is_timed_from_the_turn_start_and_checked_against_the_turns() -> None:
    clock = Clock(10 * TURN_S - 0.5)  # starts sending half a second before its turn
    speaker = Speaker(0, 2, clock)
    speaker.level()
    clock.now = 10 * TURN_S + 0.02
    speaker.level()  # its turn begins
    clock.now = 10 * TURN_S + 0.7
    speaker.on_active_speaker("me", "me")
    speaker.on_active_speaker("me", "me")  # named again in the same turn: one measurement
    speaker.on_active_speaker("other", "me")
    assert speaker.named_ms == [pytest.approx(700.0)]
    clock.now = 11 * TURN_S + 1.0  # the other's turn
    speaker.level()
    speaker.on_active_speaker("me", "me")  # named outside its turn
    assert speaker.misnamed == 1
    clock.now = 12 * TURN_S + 0.1  # its turn again; the server stays silent about it
    speaker.level()
    speaker.on_active_speaker("other", "me")
    clock.now = 13 * TURN_S + 0.1
    speaker.level()  # that turn ended without its name
    report = speaker.report()
    assert (report["turns"], report["named"], report["missed"], report["misnamed"]) == (2, 1, 1, 1)
    assert report["named_p50_ms"] == pytest.approx(700.0)


def test_a_turn_already_under_way_is_not_measured_and_a_kept_floor_is_not_missed() -> None:
    clock = Clock(10 * TURN_S + 1.0)  # starts in the middle of its turn
    speaker = Speaker(0, 1, clock)
    speaker.level()
    speaker.on_active_speaker("me", "me")
    assert speaker.named_ms == [] and speaker.misnamed == 0
    for turn in (11, 12, 13):  # the only speaker: it keeps the floor, the server names it once
        clock.now = turn * TURN_S + 0.01
        speaker.level()
    assert speaker.report()["turns"] == 3 and speaker.missed == 0


def test_a_talking_sender_carries_the_level_extension_and_a_silent_sender_none(media) -> None:
    track = load_track(Path(media[1]), "audio")
    packets: list[bytes] = []
    levels = iter([VOICE | SPEECH_LEVEL, SILENCE_LEVEL])
    sender = StreamSender(track, ssrc=7, payload_type=111, send_rtp=packets.append, rng=random.Random(1), nack=False,
                          level=lambda: next(levels), level_id=3)
    sender.send_frame(0.0)
    sender.send_frame(0.02)
    assert [packet[0] & 0x10 for packet in packets] == [0x10, 0x10]  # the X bit
    assert [packet[find_extension(packet, 3)] for packet in packets] == [VOICE | SPEECH_LEVEL, SILENCE_LEVEL]
    assert sender.stats(1.0, 0.0)["bytes"] == sum(len(packet) for packet in packets)
    plain: list[bytes] = []
    StreamSender(track, ssrc=8, payload_type=111, send_rtp=plain.append, rng=random.Random(1), nack=False,
                 level=None, level_id=3).send_frame(0.0)
    assert plain[0][0] == 0x80 and find_extension(plain[0], 3) < 0


def test_the_first_publishers_of_each_room_speak() -> None:
    plans = plan_bots(BotsConfig(url="ws://127.0.0.1:1", count=6, rooms=2, publishers=2, speakers=1))
    assert [(plan.room, plan.speaker) for plan in plans] == [
        ("room-1", 0), ("room-2", 0), ("room-1", None), ("room-2", None), ("room-1", None), ("room-2", None)]
    for bad, message in (({"speakers": 7}, "between 0 and the bot count"), ({"speakers": 1, "audio": False}, "audio"),
                         ({"speakers": 1, "mesh": True}, "mesh")):
        with pytest.raises(ValueError, match=message):
            BotsConfig(url="ws://127.0.0.1:1", count=6, **bad)


async def test_a_real_server_names_each_speaker_in_its_turn_and_never_the_silent_bot(server, media) -> None:
    # two talkers and a silent bot, audio only; 10 s covers at least one whole measured turn of each talker
    config = BotsConfig(url=server.url, count=3, ramp=20, duration=10.0, media=media, seed=9, video=False, speakers=2)
    report = await run_bots(config)
    assert report.failed == 0
    by_slot = {bot["speaker"]["slot"]: bot["speaker"] for bot in report.bots}
    assert set(by_slot) == {0, 1, None}
    for slot in (0, 1):
        talker = by_slot[slot]
        assert talker["turns"] >= 1 and talker["named"] >= 1, talker
        assert talker["missed"] == 0 and talker["misnamed"] == 0, talker
        assert len(talker["named_ms"]) == talker["named"]
    assert by_slot[None]["misnamed"] == 0  # the silent bot was never named
    assert report.total["speaker_missed"] == 0 and report.total["speaker_named_p50_ms"] is not None


def test_a_scenario_gives_the_first_publishers_of_each_room_their_turns() -> None:
    scenario = load_scenario(Path(__file__).parent.parent / "scenarios" / "talk.toml")
    plans, _ = plan_scenario(scenario)
    speakers: dict[str, list[int | None]] = {}
    for plan in plans:
        speakers.setdefault(plan.room, []).append(plan.speaker)
    assert speakers == {room: [0, 1, None, None] for room in ("room-1", "room-2", "room-3")}
