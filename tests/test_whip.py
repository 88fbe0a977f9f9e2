"""WHIP and WHEP against clients written by others: FFmpeg's WHIP muxer and aiortc."""

from __future__ import annotations

import asyncio
import multiprocessing

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfuctl.media import MediaSpec, make_media
from sfuctl.server.app import start_server
from sfuctl.server.config import ServerConfig

from . import whip_client
from .peers import AiortcPeer
from .test_forwarding import next_notification, wait_for
from .test_sdp_offers import captured, publishing_peer


@pytest.fixture(scope="module")
def h264_media(tmp_path_factory: pytest.TempPathFactory):
    spec = MediaSpec(width=320, height=180, fps=25, video_bitrate=300_000, duration=6.0, video_codec="h264")
    return make_media(spec, tmp_path_factory.mktemp("h264"))


async def test_ffmpeg_publishes_h264_and_opus_over_whip_and_a_websocket_peer_decodes_it(server, h264_media, tmp_path):
    watcher = AiortcPeer(server.url, "whip", "watcher")
    process = multiprocessing.get_context("spawn").Process(
        target=whip_client.publish,
        args=(f"http://127.0.0.1:{server.port}/whip/whip", str(h264_media.video), str(h264_media.audio), str(tmp_path), 5.0),
    )
    try:
        await watcher.join()
        process.start()
        added = [await next_notification(watcher.signaling, "producerAdded", timeout=15) for _ in range(2)]
        producers = [a["producer"] for a in added]
        assert sorted((p["kind"], p["codec"]) for p in producers) == [("audio", "opus"), ("video", "H264")]
        await watcher.subscribe(producers)
        assert await wait_for(lambda: watcher.video() and watcher.video()[0].frames >= 25 and watcher.audio()[0].frames >= 25, 10)
        assert watcher.video()[0].sizes == {(320, 180)}
        # FFmpeg deletes its WHIP resource when it closes: its producers leave the room.
        left = await next_notification(watcher.signaling, "peerLeft", timeout=15)
        assert left["peerId"] == producers[0]["peerId"]
        assert not server.worker.routers["whip"].producers
    finally:
        process.join(10)
        if process.is_alive():
            process.kill()
        await watcher.close()


async def test_whep_player_decodes_the_rooms_video_and_delete_ends_it(server, h264_media):
    publisher = AiortcPeer(server.url, "whep", "alice")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    decoded = {"video": 0}
    tasks: list[asyncio.Task] = []

    async def count(track) -> None:
        while True:
            await track.recv()
            decoded["video"] += 1

    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(count(track))) if track.kind == "video" else None)
    try:
        await publisher.join()
        await publisher.publish(str(h264_media.video))
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}/whep/whep"
            async with http.post(url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as response:
                assert response.status == 201, await response.text()
                assert response.content_type == "application/sdp"
                location = response.headers["Location"]
                answer = await response.text()
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            assert await wait_for(lambda: decoded["video"] >= 20, 10)
            async with http.delete(f"http://127.0.0.1:{server.port}{location}") as response:
                assert response.status == 200
            async with http.delete(f"http://127.0.0.1:{server.port}{location}") as response:
                assert response.status == 404
        assert [p.name for p in server.worker.routers["whep"].peers.values()] == ["alice"]
    finally:
        for task in tasks:
            task.cancel()
        await pc.close()
        await publisher.close()


async def test_whip_refuses_bad_requests_with_a_reason_and_keeps_no_state():
    server = await start_server(ServerConfig(port=0, rtc_ports=(0, 0), whip_token="s3cret"))
    base = f"http://127.0.0.1:{server.port}"
    auth = {"Authorization": "Bearer s3cret"}
    try:
        async with aiohttp.ClientSession() as http:
            cases = [
                ("post", "/whip/r", {"Content-Type": "application/sdp"}, "v=0", 401, "Bearer"),
                ("post", "/whip/r", {**auth, "Content-Type": "text/plain"}, "v=0", 415, "application/sdp"),
                ("post", "/whip/r", {**auth, "Content-Type": "application/sdp"}, "v=0\r\nbroken", 400, "invalid SDP offer"),
                ("delete", "/whip/r/nothing", auth, None, 404, "no such"),
                ("patch", "/whip/r/nothing", auth, None, 404, "no such"),
            ]
            for method, path, headers, body, status, text in cases:
                async with http.request(method, base + path, headers=headers, data=body) as response:
                    assert response.status == status, (path, await response.text())
                    assert text in await response.text() + response.headers.get("WWW-Authenticate", "")
        assert not server.worker.routers and not server.worker.transports
    finally:
        await server.close()


async def test_a_whep_session_started_in_an_empty_room_plays_the_producers_that_arrive_later(server, tmp_path):
    media = make_media(MediaSpec(width=320, height=180, fps=25, video_bitrate=300_000, duration=3.0), tmp_path)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    decoded = {"video": 0, "audio": 0}
    tasks: list[asyncio.Task] = []

    async def count(track) -> None:
        while True:
            await track.recv()
            decoded[track.kind] += 1

    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(count(track))))
    publishers = [AiortcPeer(server.url, "later", name) for name in ("alice", "bob")]
    try:
        pc.addTransceiver("video", direction="recvonly")
        pc.addTransceiver("audio", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            url = f"http://127.0.0.1:{server.port}/whep/later"
            async with http.post(url, data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as response:
                assert response.status == 201, await response.text()
                answer = await response.text()
        # Both m-lines wait for a stream: sendonly, no SSRC yet.
        assert answer.count("a=sendonly") == 2 and "a=ssrc:" not in answer
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        [player] = [p for p in server.worker.routers["later"].peers.values()]
        await publishers[0].join()
        await publishers[0].publish(str(media.video), str(media.audio))
        assert await wait_for(lambda: decoded["video"] >= 25 and decoded["audio"] >= 25, 15), decoded
        # The publisher leaves: its consumers close and the next publisher's streams take the same m-lines.
        await publishers[0].close()
        assert await wait_for(lambda: not player.consumers, 5)
        await publishers[1].join()
        producers = await publishers[1].publish(str(media.video), str(media.audio))
        assert await wait_for(lambda: len(player.consumers) == 2, 5)
        assert sorted(c.producer.id for c in player.consumers.values()) == sorted(p["id"] for p in producers)
        assert await wait_for(lambda: all(c.meter.packets > 20 for c in player.consumers.values()), 10)
    finally:
        for task in tasks:
            task.cancel()
        await pc.close()
        for publisher in publishers:
            await publisher.close()


async def test_a_waiting_whep_m_line_takes_only_a_producer_of_its_answered_codec(server) -> None:
    """webrtcbin's offer (tests/offers) plays VP8 and Opus only: an H.264 + Opus publisher (FFmpeg's offer) fills
    the audio m-line and leaves the video one waiting, which the next VP8 publisher (Chromium's offer) fills."""
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{server.port}/whep/codecs", data=captured("gst-none-recv"),
                             headers={"Content-Type": "application/sdp"}) as response:
            assert response.status == 201, await response.text()
    [player] = server.worker.routers["codecs"].peers.values()
    h264 = publishing_peer(server, "codecs")
    vp8 = publishing_peer(server, "codecs")
    try:
        h264.publish(captured("ffmpeg-whip"))
        assert sorted((c.mid, c.codec.name, c.producer.peer is h264) for c in player.consumers.values()) == [
            ("audio1", "opus", True)]
        vp8.publish(captured("chromium-send"))
        assert sorted((c.mid, c.codec.name, c.producer.peer is h264) for c in player.consumers.values()) == [
            ("audio1", "opus", True), ("video0", "VP8", False)]
        assert {c.mid: c.transport for c in player.consumers.values()} == {
            t.mids[0]: t for t in player.recv_transports}
    finally:
        for peer in (h264, vp8, player):
            peer.close()
