"""Real bots against a real server on 127.0.0.1: media flows, counts add up, late joiners get a keyframe,
failures are data."""

from __future__ import annotations

import pytest

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.impairment import ImpairmentConfig
from sfuctl.bots.observer import Collector
from sfuctl.bots.runner import run_bots
from sfuctl.media import MediaSpec, make_media

KEYFRAME_INTERVAL = 4.0


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """360p VP8 at ~550 kbps with a single keyframe per 4 s loop, and Opus."""
    spec = MediaSpec(duration=4.0, keyframe_interval=KEYFRAME_INTERVAL)
    files = make_media(spec, tmp_path_factory.mktemp("bots-media"))
    return (str(files.video), str(files.audio))


def sent_streams(report_bots: list[dict]) -> dict[tuple[str, str], dict]:
    return {(bot["peer_id"], s["kind"]): s for bot in report_bots for s in bot["sent"]}


@pytest.mark.alone  # no freeze, jitter, RTT or time to first frame of a clean call on a busy CPU
async def test_bots_in_a_room_exchange_media_and_the_counts_add_up(server, media) -> None:
    collector = Collector()
    config = BotsConfig(url=server.url, count=3, ramp=20, duration=4.0, media=media, seed=3)
    report = await run_bots(config, collector)
    samples = collector.samples

    assert report.failed == 0 and report.stopped_by == "duration"
    assert [bot["status"] for bot in report.bots] == ["left"] * 3
    sent = sent_streams(report.bots)
    assert len(sent) == 6 and all(s["packets"] > 100 for s in sent.values())
    for bot in report.bots:
        assert sorted(c["kind"] for c in bot["consumers"]) == ["audio", "audio", "video", "video"]
        assert {c["producer_peer"] for c in bot["consumers"]} == {b["peer_id"] for b in report.bots} - {bot["peer_id"]}
        for consumer in bot["consumers"]:
            source = sent[(consumer["producer_peer"], consumer["kind"])]
            assert consumer["packets_lost"] == 0 and consumer["lost_before_recovery"] == 0
            assert consumer["expected"] == consumer["packets"]
            # Everything the publisher sent after the consumer started (at a keyframe, ~0.1 s after joining)
            assert 0.85 * source["packets"] <= consumer["packets"] <= source["packets"]
            assert 0.85 * source["frames"] <= consumer["frames"] <= source["frames"]
            assert consumer["freezes"] == 0 and consumer["jitter_ms"] < 10
            assert consumer["first_frame_ms"] is not None and consumer["first_frame_ms"] < 1000
            # The server adds its MID header extension (8 bytes a packet: ~9% of an Opus packet): compare the
            # rates per byte of what each side's packets carry.
            scale = (consumer["bytes"] / consumer["packets"]) / (source["bytes"] / source["packets"])
            assert consumer["bitrate_bps"] == pytest.approx(source["bitrate_bps"] * scale, rel=0.1)
    total = report.total
    assert total["packets_received"] == pytest.approx(2 * total["packets_sent"], rel=0.1)
    assert total["streams_sent"] == 6 and total["streams_received"] == 12

    steady = next(s for s in samples if 2.5 < s.elapsed < 3.5)
    assert steady.total.active == 3 and steady.total.streams_received == 12
    assert steady.total.received_bitrate_bps == pytest.approx(2 * steady.total.sent_bitrate_bps, rel=0.25)
    assert steady.rooms["room-1"].loss == 0.0


@pytest.mark.alone  # no freeze, jitter, RTT or time to first frame of a clean call on a busy CPU
async def test_a_late_bot_gets_a_keyframe_at_once_because_the_publisher_answers_pli(server, media) -> None:
    # bot-2 joins 2 s after bot-1, halfway through the media's 4 s keyframe interval.
    config = BotsConfig(url=server.url, count=2, ramp=0.5, duration=3.5, media=media, audio=False, seed=4)
    report = await run_bots(config)

    early, late = report.bots
    assert report.failed == 0 and late["joined_at_s"] >= 1.9
    (consumer,) = late["consumers"]
    assert consumer["kind"] == "video" and consumer["keyframes"] >= 1
    assert consumer["first_frame_ms"] < 800  # a natural keyframe would be ~2 s away
    assert early["sent"][0]["plis_received"] >= 1


async def test_a_bot_that_cannot_connect_is_reported_with_its_error(server, media) -> None:
    config = BotsConfig(
        url=server.url, count=2, ramp=20, duration=2.5, media=media, seed=5,
        impairment=ImpairmentConfig(loss=1.0), impaired=(1,), connect_timeout=1.0, join_timeout=3.0,
    )
    report = await run_bots(config)

    good, bad = report.bots
    assert good["status"] == "left" and good["error"] is None
    assert bad["status"] == "failed" and not bad["joined"] and bad["join_ms"] is None
    assert bad["error"] == "send transport failed: ICE/DTLS did not complete"
    assert report.failed == 1 and report.total["failed"] == 1 and report.total["joined"] == 1


async def test_decode_proves_every_frame_arrived_intact_despite_loss(server, tmp_path) -> None:
    files = make_media(MediaSpec(width=320, height=180, video_bitrate=300_000, duration=2.0, video_codec="h264"), tmp_path)
    config = BotsConfig(
        url=server.url, count=2, ramp=20, duration=3.5, media=(str(files.video), str(files.audio)), seed=6,
        decode=True, impairment=ImpairmentConfig(loss=0.05), impaired=(1,),
    )
    report = await run_bots(config)

    assert report.failed == 0
    for bot in report.bots:
        for consumer in bot["consumers"]:
            decoded = consumer["decode"]
            assert decoded["decode_errors"] == 0 and decoded["gaps_given_up"] == 0
            if consumer["kind"] == "video":
                assert decoded["decoded_size"] == "320x180"
                # every complete frame but the few still waiting for a retransmission at the end
                assert consumer["complete_frames"] - 3 <= decoded["decoded_frames"] <= consumer["complete_frames"]
            else:
                assert decoded["decoded_frames"] == consumer["packets"] - consumer["duplicates"]
