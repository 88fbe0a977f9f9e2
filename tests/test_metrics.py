"""Prometheus /metrics on the serve port: live figures by room and kind, counters that never go backwards."""

from __future__ import annotations

import asyncio
import time

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import AudioStreamTrack
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from sfuctl.client.signaling import SignalingClient
from sfuctl.server.metrics import CounterSpec, RetiredCounts

from .peers import AiortcPeer

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(server) -> tuple[str, Samples]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{server.port}/metrics") as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == CONTENT_TYPE_LATEST
            text = await response.text()
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


async def publish_audio(peer: AiortcPeer) -> list[dict]:
    """Publish aiortc's generated audio (no media file needed)."""
    pc = peer.publish_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(AudioStreamTrack())
    await pc.setLocalDescription(await pc.createOffer())
    result = await peer.signaling.request("publish", sdp=pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(result["sdp"], "answer"))
    return result["producers"]


async def poll(server, predicate, timeout: float = 10.0) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        _, samples = await scrape(server)
        if predicate(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.1)


async def test_gauges_count_rooms_and_peers_with_room_labels_only(server):
    clients = [await SignalingClient.connect(server.url) for _ in range(3)]
    try:
        ids = []
        for client, room in zip(clients, ("alpha", "alpha", "beta")):
            ids.append((await client.request("join", room=room, name="x"))["peerId"])
        text, samples = await scrape(server)
        assert value(samples, "sfuctl_rooms") == 2
        assert value(samples, "sfuctl_peers", room="alpha") == 2
        assert value(samples, "sfuctl_peers", room="beta") == 1
        assert value(samples, "process_cpu_seconds_total") is not None
        assert not any(peer_id in text for peer_id in ids)
        for name, labels in samples:
            if name.startswith("sfuctl_"):
                assert {key for key, _ in labels} <= {"room", "kind"}, (name, labels)
    finally:
        for client in clients:
            await client.close()


async def test_media_counters_grow_stay_monotonic_when_a_consumer_leaves_and_vanish_with_the_room(server):
    publisher = AiortcPeer(server.url, "metrics", "alice")
    subscriber = AiortcPeer(server.url, "metrics", "bob")
    try:
        await publisher.join()
        producers = await publish_audio(publisher)
        await subscriber.join()
        await subscriber.subscribe(producers)
        audio = {"room": "metrics", "kind": "audio"}
        samples = await poll(
            server,
            lambda s: (value(s, "sfuctl_rtp_sent_packets_total", **audio) or 0) > 20
            and (value(s, "sfuctl_send_bits_per_second", **audio) or 0) > 0,
        )
        assert value(samples, "sfuctl_producers", **audio) == 1
        assert value(samples, "sfuctl_consumers", **audio) == 1
        assert value(samples, "sfuctl_rtp_received_packets_total", **audio) >= value(samples, "sfuctl_rtp_sent_packets_total", **audio)
        assert value(samples, "sfuctl_receive_bits_per_second", **audio) > 0
        assert value(samples, "sfuctl_producer_score_min", **audio) == 10
        sent = value(samples, "sfuctl_rtp_sent_packets_total", **audio)

        await subscriber.close()
        samples = await poll(server, lambda s: value(s, "sfuctl_consumers", **audio) is None)
        assert value(samples, "sfuctl_consumers", **audio) is None
        assert value(samples, "sfuctl_rtp_sent_packets_total", **audio) >= sent  # the gone consumer still counts

        await publisher.close()
        samples = await poll(server, lambda s: value(s, "sfuctl_rooms") == 0)
        assert not [key for key in samples if ("room", "metrics") in key[1]]
    finally:
        await publisher.close()
        await subscriber.close()


def spec() -> tuple[CounterSpec, ...]:
    return (CounterSpec("sfuctl_things", "Things.", lambda o: o["n"]),)


def test_retired_counts_keep_a_vanished_objects_last_value():
    counts = RetiredCounts(spec())
    a, b = {"n": 5}, {"n": 7}
    room = ("r", "audio")
    assert counts.totals([(room, "a", a), (room, "b", b)], {"r"}) == {room: [12]}
    a["n"] = 9
    assert counts.totals([(room, "a", a)], {"r"}) == {room: [16]}  # b's 7 retired
    assert counts.totals([], {"r"}) == {room: [16]}  # a's 9 retired
    assert counts.totals([], {"r"}) == {room: [16]}


def test_retired_counts_forget_a_closed_room():
    counts = RetiredCounts(spec())
    counts.totals([(("r", "video"), "a", {"n": 3}), (("s", "video"), "b", {"n": 4})], {"r", "s"})
    assert counts.totals([], {"s"}) == {("s", "video"): [4]}
    assert counts.totals([(("r", "video"), "c", {"n": 1})], {"r", "s"}) == {("s", "video"): [4], ("r", "video"): [1]}
