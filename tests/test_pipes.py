"""One room across two workers (`sfuctl serve --workers 2`): producers piped from the home worker, real peers
on both workers. Rooms spill at one consumer here, so a room's second subscriber lands on the other worker."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
from pathlib import Path

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

from sfuctl.bots.data_peer import DataPeer
from sfuctl.bots.pacer import Pacer
from sfuctl.bots.publisher import StreamSender
from sfuctl.client.offer import SEND_CODECS, OfferSection, connection_offer, parse_answer
from sfuctl.client.signaling import SignalingClient
from sfuctl.encoded import load_track
from sfuctl.rtc.connection import open_client_connection
from sfuctl.rtc.rtp import build_extension_block
from sfuctl.rtc.sdp import MID_URI
from sfuctl.rtc.simulcast import RID_URI
from sfuctl.server.config import ServerConfig
from sfuctl.server.front import RunningFront, start_front

from sfuctl.dashboard import Dashboard

from .peers import AiortcPeer, UdpRelay
from .test_connection import wait_until
from .test_dashboard import render
from .test_forwarding import media, wait_for  # noqa: F401 (a fixture)
from .test_simulcast import TOP, simulcast_media  # noqa: F401 (a fixture)

ROOM = "webinar"


@pytest.fixture
async def front() -> RunningFront:
    config = ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0, room_spill_consumers=1)
    running = await start_front(config, 2, "warning")
    yield running
    await running.close()


async def room_of(client: SignalingClient) -> dict:
    snapshot = await client.request("getStats")
    (room,) = [r for r in snapshot["rooms"] if r["name"] == ROOM]
    assert snapshot["server"]["rooms"] == len(snapshot["rooms"])  # a room that spans workers counts once
    return room


def worker_of(room: dict, peer: AiortcPeer) -> int:
    return next(p["worker"] for p in room["peers"] if p["id"] == peer.joined["peerId"])


async def notified(peer: AiortcPeer, method: str, timeout: float = 5.0) -> dict:
    """The next `method` notification the peer gets (others are skipped)."""

    async def wait() -> dict:
        while True:
            name, params = await peer.signaling.notifications.get()
            if name == method:
                return params

    return await asyncio.wait_for(wait(), timeout)


async def test_subscribers_on_both_workers_decode_and_pause_and_close_reach_them(front, media):
    publisher = AiortcPeer(front.url, ROOM, "host")
    home_sub = AiortcPeer(front.url, ROOM, "near")
    far_sub = AiortcPeer(front.url, ROOM, "far")
    late = AiortcPeer(front.url, ROOM, "late")
    watcher = await SignalingClient.connect(front.url)
    try:
        await publisher.join()
        producers = await publisher.publish(str(media.video), str(media.audio))
        await home_sub.join()
        await home_sub.subscribe(producers)
        joined = await far_sub.join()  # the room has a consumer on its home worker now: this one spills
        assert {p["id"] for p in joined["producers"]} == {p["id"] for p in producers}
        assert publisher.joined["peerId"] in {p["id"] for p in joined["peers"]}
        await far_sub.subscribe(joined["producers"])
        for sub in (home_sub, far_sub):
            assert await wait_for(lambda: sub.video() and sub.video()[0].frames >= 20 and sub.audio()[0].frames >= 25, 20)
        room = await room_of(watcher)
        assert worker_of(room, publisher) == worker_of(room, home_sub) == 0 and worker_of(room, far_sub) == 1
        assert len(room["producers"]) == 2  # the piped copies are the pipe's, not listed twice
        assert len(room["consumers"]) == 4
        text = render(Dashboard(), await watcher.request("getStats"), 160)
        assert "3 peers on workers 0,1" in text and "pipes · 0→1 2 streams" in text

        # A late joiner on the far worker: aiortc's encoder makes keyframes only when asked, so the first frame
        # comes only if the far consumer's keyframe request reaches the publisher through the pipe.
        await late.join()
        await late.subscribe([p for p in producers if p["kind"] == "video"])
        assert await wait_for(lambda: late.video() and late.video()[0].frames > 0, 5)
        assert worker_of(await room_of(watcher), late) == 1

        video = next(p for p in producers if p["kind"] == "video")
        await publisher.signaling.request("pauseProducer", producerId=video["id"])
        for sub in (home_sub, far_sub, late):
            assert (await notified(sub, "producerPaused"))["producerId"] == video["id"]
        paused = {c["peer"]: c for c in (await room_of(watcher))["consumers"] if c["producer_id"] == video["id"]}
        await asyncio.sleep(0.5)
        still = {c["peer"]: c for c in (await room_of(watcher))["consumers"] if c["producer_id"] == video["id"]}
        assert all(still[peer]["packets"] == paused[peer]["packets"] for peer in paused)
        await publisher.signaling.request("resumeProducer", producerId=video["id"])
        frames = {sub: sub.video()[0].frames for sub in (home_sub, far_sub, late)}
        for sub in (home_sub, far_sub, late):
            assert (await notified(sub, "producerResumed"))["producerId"] == video["id"]
            assert await wait_for(lambda: sub.video()[0].frames > frames[sub] + 10, 10)

        await publisher.signaling.request("closeProducer", producerId=video["id"])
        for sub in (home_sub, far_sub, late):
            assert (await notified(sub, "consumerClosed"))["producerId"] == video["id"]
        room = await room_of(watcher)
        assert [p["kind"] for p in room["producers"]] == ["audio"]
        assert all(c["producer_id"] != video["id"] for c in room["consumers"])
    finally:
        for peer in (publisher, home_sub, far_sub, late):
            await peer.close()
        await watcher.close()


async def test_a_piped_simulcast_stream_steps_down_when_its_publisher_stops_the_top_encoding(front, simulcast_media):
    """A publisher whose uplink cannot carry its top encoding stops sending it (libwebrtc does): the pipe follows
    to the highest encoding still sent, so the other worker's subscribers keep their picture."""
    near, far = AiortcPeer(front.url, ROOM, "near"), AiortcPeer(front.url, ROOM, "far")
    client = await SignalingClient.connect(front.url)
    connected = asyncio.get_running_loop().create_future()
    conn, udp = await open_client_connection(
        on_rtp=lambda data: None, on_rtcp=lambda data: None,
        on_state=lambda state: state == "connected" and not connected.done() and connected.set_result(None),
    )
    pacer = Pacer(asyncio.get_running_loop())
    try:
        await client.request("join", room=ROOM, name="host")
        section = OfferSection(mid="0", kind="video", direction="sendonly", codecs=(SEND_CODECS["VP8"],),
                               cname="host", msid=("host", "host-video"), rids=("q", "h", "f"))
        published = await client.request("publish", sdp=connection_offer(conn, [section], session_id=1))
        answer = parse_answer(published["sdp"])
        media = answer.media["0"]
        conn.set_remote(answer.ice, answer.fingerprints, answer.dtls_role, answer.candidates)  # type: ignore[arg-type]
        await asyncio.wait_for(connected, 10)
        rng = random.Random(3)
        senders = [
            StreamSender(
                load_track(Path(path), "video"), ssrc=1000 + index, payload_type=media.codec.payload_type,
                send_rtp=conn.send_rtp, rng=rng, nack=False, rid=rid,
                extensions=build_extension_block([(media.extensions[MID_URI], b"0"), (media.extensions[RID_URI], rid.encode())]),
            )
            for index, (rid, path) in enumerate(zip(("q", "h", "f"), simulcast_media[:3]))
        ]
        for sender in senders:
            pacer.add(sender)
        for sub in (near, far):
            joined = await sub.join()
            await sub.subscribe(published["producers"] if sub is near else joined["producers"])
        for sub in (near, far):
            assert await wait_for(lambda: sub.video() and sub.video()[0].frames >= 10, 15)
        assert worker_of(await room_of(client), far) == 1
        assert far.video()[0].sizes == {TOP}

        senders[2].active = False  # the publisher drops its top encoding
        frames = far.video()[0].frames
        assert await wait_for(lambda: far.video()[0].frames > frames + 25, 10)
        assert (TOP[0] // 2, TOP[1] // 2) in far.video()[0].sizes
    finally:
        pacer.close()
        for peer in (near, far):
            await peer.close()
        conn.close()
        udp.close()
        await client.close()


async def test_nack_repairs_injected_loss_on_both_workers(front, media):
    publisher = AiortcPeer(front.url, ROOM, "host")
    near, far = AiortcPeer(front.url, ROOM, "near"), AiortcPeer(front.url, ROOM, "far")
    relays = {near: UdpRelay(loss=0.05, seed=7), far: UdpRelay(loss=0.05, seed=8)}
    watcher = await SignalingClient.connect(front.url)
    try:
        await publisher.join()
        producers = await publisher.publish(str(media.video))
        for sub in (near, far):
            await sub.join()
            await sub.subscribe(producers, relay=relays[sub])
        for sub in (near, far):
            assert await wait_for(lambda: sub.video() and sub.video()[0].frames >= 10, 15)
        start = {sub: sub.video()[0].frames for sub in (near, far)}
        await asyncio.sleep(4)
        room = await room_of(watcher)
        assert worker_of(room, near) == 0 and worker_of(room, far) == 1
        for sub in (near, far):
            consumer = next(c for c in room["consumers"] if c["peer"] == sub.joined["peerId"])
            assert relays[sub].dropped > 0
            # Each worker answers its own consumers' NACKs: the far one from its piped producer's buffer.
            assert consumer["nack_count"] > 0 and consumer["retransmitted"] > 0
            # 5% packet loss without repair breaks most frames of this 3-packet-per-frame stream.
            assert sub.video()[0].frames - start[sub] >= 60
    finally:
        for peer in (publisher, near, far):
            await peer.close()
        await watcher.close()


async def test_garbage_on_a_pipe_is_dropped_and_a_dead_worker_takes_only_its_peers(front, media):
    publisher = AiortcPeer(front.url, ROOM, "host")
    near, far = AiortcPeer(front.url, ROOM, "near"), AiortcPeer(front.url, ROOM, "far")
    watcher = await SignalingClient.connect(front.url)
    try:
        await publisher.join()
        producers = await publisher.publish(str(media.video))
        for sub in (near, far):
            await sub.join()
            await sub.subscribe(producers)
        for sub in (near, far):
            assert await wait_for(lambda: sub.video() and sub.video()[0].frames >= 10, 15)
        snapshot = await watcher.request("getStats")
        pipes = {(p["from_worker"], p["worker"]): p for p in snapshot["server"]["pipes"]}
        assert pipes[(0, 1)]["streams_out"] == 1 and pipes[(1, 0)]["streams_in"] == 1
        assert pipes[(1, 0)]["packets_received"] > 0

        # Another local process sends RTP-looking datagrams and noise to the far worker's pipe port.
        rtp = bytes([0x80, 96, 0, 1]) + bytes(8) + b"x" * 100
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            for payload in (rtp, b"\x00" * 20, os.urandom(300)) * 20:
                stranger.sendto(payload, ("127.0.0.1", pipes[(1, 0)]["port"]))
        frames = far.video()[0].frames
        assert await wait_for(lambda: far.video()[0].frames > frames + 10, 10)
        snapshot = await watcher.request("getStats")
        pipe = next(p for p in snapshot["server"]["pipes"] if (p["from_worker"], p["worker"]) == (1, 0))
        assert pipe["dropped_foreign"] == 60 and pipe["unknown_ssrc"] == 0 and pipe["dropped_invalid"] == 0

        front.front.workers[1].process.send_signal(signal.SIGKILL)
        assert await wait_for(lambda: far.signaling.closed.is_set(), 10)
        assert (await notified(publisher, "peerLeft"))["peerId"] == far.joined["peerId"]
        frames = near.video()[0].frames
        assert await wait_for(lambda: near.video()[0].frames > frames + 25, 10)
        room = await room_of(watcher)
        assert [p["id"] for p in room["peers"]] == [publisher.joined["peerId"], near.joined["peerId"]]
        # A new participant of the room now goes to the home worker: the dead one takes no one.
        late = AiortcPeer(front.url, ROOM, "late")
        try:
            await late.join()
            await late.subscribe(producers)
            assert await wait_for(lambda: late.video() and late.video()[0].frames > 5, 10)
            assert worker_of(await room_of(watcher), late) == 0
        finally:
            await late.close()
    finally:
        for peer in (publisher, near, far):
            await peer.close()
        await watcher.close()


async def test_data_channels_cross_the_pipe_both_ways(front, media):
    """A chat between a peer on the home worker and one on the far worker: each one's channel is piped."""
    publisher = AiortcPeer(front.url, ROOM, "host")
    viewer = AiortcPeer(front.url, ROOM, "viewer")
    watcher = await SignalingClient.connect(front.url)
    near = far = None
    try:
        await publisher.join()
        producers = await publisher.publish(str(media.video))
        near = await DataPeer.join(front.url, ROOM, "near")  # before the room has a consumer: the home worker
        await viewer.join()
        await viewer.subscribe(producers)  # now the room spills
        far = await DataPeer.join(front.url, ROOM, "far")
        room = await room_of(watcher)
        workers = {p["id"]: p["worker"] for p in room["peers"]}
        assert workers[near.peer_id] == 0 and workers[far.peer_id] == 1
        near_chat, far_chat = near.send.open("chat", protocol="text"), far.send.open("chat", protocol="text")
        await wait_until(lambda: len(near.consumers) == len(far.consumers) == 1)
        assert next(iter(far.consumers.values()))["peerId"] == near.peer_id
        messages = ["hello", b"\x00\x01binary", "", b"", "é" * 100]
        for message in messages:
            assert near.send.send(near_chat, message) and far.send.send(far_chat, message)
        await wait_until(lambda: far.from_peer(near) == messages and near.from_peer(far) == messages)
        room = await room_of(watcher)
        assert sorted(p["peer"] for p in room["data_producers"]) == sorted([near.peer_id, far.peer_id])

        far.send.sctp.close_channel(far_chat)  # closing a channel closes its piped copy's consumers
        await wait_until(lambda: len(near.closed_consumers) == 1)
    finally:
        for peer in (near, far):
            if peer is not None:
                await peer.close()
        for peer in (publisher, viewer):
            await peer.close()
        await watcher.close()


async def test_a_whep_player_spills_to_the_other_worker_and_its_resource_finds_it(front, media):
    publisher, viewer = AiortcPeer(front.url, ROOM, "host"), AiortcPeer(front.url, ROOM, "near")
    watcher = await SignalingClient.connect(front.url)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    decoded: list[int] = [0]
    tasks: list[asyncio.Task] = []

    async def count(track) -> None:
        while True:
            await track.recv()
            decoded[0] += 1

    pc.on("track", lambda track: tasks.append(asyncio.ensure_future(count(track))))
    base = front.url.replace("ws://", "http://")
    try:
        await publisher.join()
        producers = await publisher.publish(str(media.video))
        await viewer.join()
        await viewer.subscribe(producers)
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{base}/whep/{ROOM}", data=pc.localDescription.sdp, headers={"Content-Type": "application/sdp"}) as response:
                assert response.status == 201, await response.text()
                location = response.headers["Location"]
                answer = await response.text()
            assert location.endswith("-w1")
            await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
            assert await wait_for(lambda: decoded[0] >= 20, 15)
            room = await room_of(watcher)
            assert sorted(p["worker"] for p in room["peers"]) == [0, 0, 1]
            async with http.delete(base + location) as response:
                assert response.status == 200
            async with http.delete(base + location) as response:
                assert response.status == 404
        assert sorted(p["worker"] for p in (await room_of(watcher))["peers"]) == [0, 0]
    finally:
        for task in tasks:
            task.cancel()
        await pc.close()
        for peer in (publisher, viewer):
            await peer.close()
        await watcher.close()
