"""Injected impairment shows up in what the bots measure: loss before and after NACK recovery, RTT."""

from __future__ import annotations

import pytest

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.impairment import ImpairmentConfig
from sfuctl.bots.runner import run_bots
from sfuctl.media import MediaSpec, make_media


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    files = make_media(MediaSpec(duration=4.0), tmp_path_factory.mktemp("bots-media"))
    return (str(files.video), str(files.audio))


def pooled(consumers: list[dict], field: str) -> float:
    return sum(max(0, c[field]) for c in consumers) / sum(c["expected"] for c in consumers)


async def test_injected_loss_is_measured_before_nack_recovery_and_recovered_after(server, media) -> None:
    # Two publishers, one subscriber-only bot whose datagrams are dropped at 5% both ways.
    config = BotsConfig(
        url=server.url, count=3, publishers=2, ramp=20, duration=8.0, media=media, seed=11,
        impairment=ImpairmentConfig(loss=0.05), impaired=(2,),
    )
    report = await run_bots(config)

    clean_a, clean_b, lossy = report.bots
    assert report.failed == 0 and lossy["impaired"] and not lossy["sent"]
    consumers = lossy["consumers"]
    video = [c for c in consumers if c["kind"] == "video"]
    audio = [c for c in consumers if c["kind"] == "audio"]
    assert sum(c["expected"] for c in consumers) > 1500
    assert pooled(consumers, "lost_before_recovery") == pytest.approx(0.05, abs=0.01)
    assert pooled(video, "packets_lost") <= 0.005  # NACK recovered the video
    assert sum(c["nacks_sent"] for c in video) > 10
    assert pooled(audio, "packets_lost") == pytest.approx(0.05, abs=0.02)  # the server does not NACK audio
    for clean in (clean_a, clean_b):
        assert all(c["lost_before_recovery"] == 0 for c in clean["consumers"])
    retransmitted = sum(c["nacked_packets"] for c in video)
    assert retransmitted >= sum(c["lost_before_recovery"] for c in video)


@pytest.mark.alone  # no freeze, jitter, RTT or time to first frame of a clean call on a busy CPU
async def test_injected_delay_shows_up_as_round_trip_time(server, media) -> None:
    # 7 s: past the first consent check (4-6 s after connecting), so each transport has an RTT sample even when a
    # busy machine answers its first connectivity check after the 50 ms retransmission (Karn's rule skips it).
    config = BotsConfig(
        url=server.url, count=2, ramp=20, duration=7.0, media=media, seed=12,
        impairment=ImpairmentConfig(delay_ms=40), impaired=(1,),
    )
    report = await run_bots(config)

    clean, delayed = report.bots
    assert report.failed == 0
    assert 38 <= delayed["recv_rtt_ms"] <= 55 and 38 <= delayed["send_rtt_ms"] <= 55
    assert all(38 <= c["rtt_ms"] <= 55 for c in delayed["consumers"])
    assert all(s["rtt_ms"] is not None and 38 <= s["rtt_ms"] <= 55 for s in delayed["sent"])  # from the server's RR
    assert clean["recv_rtt_ms"] < 10 and clean["send_rtt_ms"] < 10
