"""Mesh bots against a real server on 127.0.0.1: they connect to each other directly (one connection per
pair), the server relays only their SDP, and their figures are a bot's figures."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from sfuctl.bots.config import BotsConfig, plan_bots
from sfuctl.bots.impairment import ImpairmentConfig
from sfuctl.bots.observer import Observer
from sfuctl.bots.runner import run_bots
from sfuctl.bots.stats import Sample
from sfuctl.client.signaling import SignalingClient
from sfuctl.media import MediaSpec, make_media


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    files = make_media(MediaSpec(duration=4.0, keyframe_interval=2.0), tmp_path_factory.mktemp("mesh-media"))
    return (str(files.video), str(files.audio))


def mesh_config(server, media, **kwargs) -> BotsConfig:
    return BotsConfig(url=server.url, mesh=True, ramp=20, media=media, **kwargs)


@pytest.mark.alone  # no freeze, jitter, RTT or time to first frame of a clean call on a busy CPU
async def test_mesh_bots_connect_pairwise_and_the_server_forwards_nothing(server, media) -> None:
    seen: list[tuple[int, int]] = []  # (server transports, peers in the room) at each sample

    class Look(Observer):
        def sample(self, t: float, sample: Sample) -> None:
            router = server.worker.routers.get("room-1")
            seen.append((len(server.worker.transports), len(router.peers) if router else 0))

    report = await run_bots(mesh_config(server, media, count=3, duration=4.0, seed=11), Look())

    assert report.failed == 0 and [bot["status"] for bot in report.bots] == ["left"] * 3
    assert max(transports for transports, _ in seen) == 0 and max(peers for _, peers in seen) == 3
    ids = {bot["peer_id"] for bot in report.bots}
    sent = {bot["peer_id"]: bot["sent"] for bot in report.bots}
    for bot in report.bots:
        assert bot["mesh"] and bot["transports"] == 2 and bot["errors"] == []
        # one audio and one video stream to each of the two others
        assert sorted(s["kind"] for s in bot["sent"]) == ["audio", "audio", "video", "video"]
        assert all(s["packets"] > 100 for s in bot["sent"])
        assert {c["producer_peer"] for c in bot["consumers"]} == ids - {bot["peer_id"]}
        assert bot["recv_rtt_ms"] is not None and bot["recv_rtt_ms"] < 20
        for consumer in bot["consumers"]:
            assert consumer["packets_lost"] == 0 and consumer["expected"] == consumer["packets"] > 50
            assert consumer["first_frame_ms"] is not None and consumer["first_frame_ms"] < 1000
            assert consumer["freezes"] == 0
            sources = [s for s in sent[consumer["producer_peer"]] if s["kind"] == consumer["kind"]]
            assert any(consumer["bitrate_bps"] == pytest.approx(s["bitrate_bps"], rel=0.15) for s in sources)
    total = report.total
    assert total["streams_sent"] == 12 and total["streams_received"] == 12
    assert total["packets_received"] == pytest.approx(total["packets_sent"], rel=0.1)


async def test_a_peer_that_leaves_closes_its_streams_at_the_others_without_errors(server, media) -> None:
    config = mesh_config(server, media, count=3, duration=4.5, seed=12)
    plans = plan_bots(config)
    plans[2] = dataclasses.replace(plans[2], stop_offset=2.5)
    report = await run_bots(config, plans=plans)

    leaver = report.bots[2]
    assert leaver["status"] == "left" and leaver["left_at_s"] < 3.5
    for bot in report.bots[:2]:
        assert bot["status"] == "left" and bot["errors"] == []
        from_leaver = [c for c in bot["consumers"] if c["producer_peer"] == leaver["peer_id"]]
        staying = [c for c in bot["consumers"] if c["producer_peer"] != leaver["peer_id"]]
        assert len(from_leaver) == 2 and all(c["closed"] for c in from_leaver)
        assert len(staying) == 2
        for kind in ("audio", "video"):  # the others' streams went on: 4.5 s of them against 2.5 s
            (gone,) = [c for c in from_leaver if c["kind"] == kind]
            (kept,) = [c for c in staying if c["kind"] == kind]
            assert kept["packets"] > 1.4 * gone["packets"]
        assert all(c["packets_lost"] == 0 for c in bot["consumers"])


async def test_loss_on_a_mesh_link_is_repaired_by_nack_between_the_peers(server, media) -> None:
    config = mesh_config(server, media, count=2, duration=5.0, seed=13, audio=False,
                         impairment=ImpairmentConfig(loss=0.05), impaired=(1,))
    report = await run_bots(config)

    clean, lossy = report.bots
    (video,) = lossy["consumers"]
    assert 0.02 <= video["fraction_lost_before_recovery"] <= 0.09
    assert video["fraction_lost"] < 0.01
    (sent,) = clean["sent"]
    assert sent["nacks_received"] > 0 and sent["retransmitted"] > 0


@pytest.mark.alone  # no freeze, jitter, RTT or time to first frame of a clean call on a busy CPU
async def test_garbage_relayed_to_a_mesh_bot_is_an_error_and_its_call_goes_on(server, media) -> None:
    async def intruder() -> None:
        await asyncio.sleep(1.5)
        client = await SignalingClient.connect(server.url)
        try:
            joined = await client.request("join", room="room-1", name="intruder")
            for peer in joined["peers"]:
                for data in ({"type": "offer", "sdp": "v=0\r\nnot sdp"}, {"type": "offer"},
                             {"type": "answer", "sdp": "x"}, {"type": 5}):
                    await client.request("relay", to=peer["id"], data=data)
            await asyncio.sleep(0.5)
        finally:
            await client.close()

    task = asyncio.create_task(intruder())
    report = await run_bots(mesh_config(server, media, count=2, duration=4.0, seed=14))
    await task

    for bot in report.bots:
        assert bot["status"] == "left" and bot["transports"] == 1
        assert len(bot["errors"]) == 2 and all("intruder" in error for error in bot["errors"])
        (video,) = [c for c in bot["consumers"] if c["kind"] == "video"]
        assert video["packets_lost"] == 0 and video["freezes"] == 0 and video["packets"] > 150


def test_a_mesh_needs_the_servers_signaling() -> None:
    with pytest.raises(ValueError, match="mesh call needs the sfuctl server's signaling"):
        BotsConfig(url="http://127.0.0.1:1/whip/room", mode="whip", mesh=True)


async def test_a_bad_answer_fails_the_join_and_says_from_whom(server, media) -> None:
    client = await SignalingClient.connect(server.url)
    try:
        await client.request("join", room="room-1", name="liar")

        async def answer_garbage() -> None:
            while True:
                method, params = await client.notifications.get()
                if method == "relayed" and params["data"].get("type") == "offer":
                    await client.request("relay", to=params["from"], data={"type": "answer", "sdp": "v=0\r\nm=x"})

        liar = asyncio.create_task(answer_garbage())
        report = await run_bots(mesh_config(server, media, count=1, duration=2.0, seed=15, join_timeout=5.0))
        liar.cancel()
    finally:
        await client.close()

    (bot,) = report.bots
    assert bot["status"] == "failed" and "bad answer from peer liar" in bot["error"]
    assert not server.worker.transports
