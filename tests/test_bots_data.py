"""Bots chatting on data channels through a real server: delivery, order and latency per sender."""

from __future__ import annotations

import pytest

from sfuctl.bots.chat import ChatStream
from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.media import MediaSpec, make_media


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    files = make_media(MediaSpec(duration=2.0, width=320, height=180), tmp_path_factory.mktemp("chat-media"))
    return (str(files.video), str(files.audio))


def test_a_chat_stream_counts_gaps_reordering_and_latency() -> None:
    stream = ChatStream("peer-a")
    for seq, latency in ((3, 10.0), (4, 12.0), (6, 11.0), (5, 30.0), (7, 9.0)):
        stream.add(seq, latency)
    stats = stream.stats()
    assert stats["received"] == 5 and stats["out_of_order"] == 1
    assert stats["delivery_ratio"] == 1.0  # 3..7, all there
    stream.add(10, 10.0)  # 8 and 9 never came
    assert stream.stats()["delivery_ratio"] == pytest.approx(6 / 8)
    assert stream.stats()["latency_p50_ms"] == 10.0 and stream.stats()["latency_p95_ms"] == 30.0
    assert ChatStream("x").stats()["delivery_ratio"] is None


async def test_bots_chat_through_the_sfu_and_measure_every_sender(server, media) -> None:
    config = BotsConfig(url=server.url, count=3, ramp=20, duration=4.0, media=media, seed=5, data_rate=10)
    report = await run_bots(config)
    assert report.failed == 0
    peers = {bot["peer_id"] for bot in report.bots}
    for bot in report.bots:
        data = bot["data"]
        assert data["sent"] > 20 and data["refused"] == 0 and data["undecodable"] == 0
        assert {s["from"] for s in data["received"]} == peers - {bot["peer_id"]}
        for stream in data["received"]:
            assert stream["received"] > 15
            assert stream["delivery_ratio"] == 1.0 and stream["out_of_order"] == 0  # ordered, reliable, no loss
            assert 0 <= stream["latency_p50_ms"] <= stream["latency_p95_ms"]
    assert not server.worker.routers  # everyone left
