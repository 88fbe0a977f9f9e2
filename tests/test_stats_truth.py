"""Stats tell the truth: aiortc peers through a real server, impairments injected by UdpRelay on 127.0.0.1.

One call is set up once for the module and watched through the stats stream for a few seconds; each test
then checks one figure against what the relay actually did to the packets.

Loss is measured on audio consumers on purpose: the server retransmits only video, and aiortc's receiver
reports count a retransmitted packet as received, so video loss that NACK repaired never shows in an RR.
Audio loss is never repaired, so the RR counts exactly what the relay dropped.
"""

from __future__ import annotations

import asyncio
import statistics
import time
from dataclasses import dataclass, field

import aioice.ice
import pytest
import pytest_asyncio

from sfuctl.client.signaling import SignalingClient
from sfuctl.media import MediaSpec, make_media
from sfuctl.server.app import start_server
from sfuctl.server.config import ServerConfig
from sfuctl.server.quality import LOSS_INTERVALS
from sfuctl.stats_schema import validate_snapshot

from .peers import AiortcPeer, SsrcCounts, UdpRelay

pytestmark = pytest.mark.asyncio(loop_scope="module")

INJECTED_LOSS = 0.05
ONE_WAY_DELAY = 0.02  # the relay delays both directions: a 40 ms longer round trip
INJECTED_JITTER = 0.04  # each server-to-client RTP packet waits a further 0..40 ms
PUSHES = 7
SRTP_TAG_BYTES = {"SRTP_AEAD_AES_128_GCM": 16, "SRTP_AES128_CM_SHA1_80": 10}


@dataclass
class Push:
    """One stats notification and what each relay had counted when it arrived."""

    at: float
    snapshot: dict
    relays: dict[str, dict[int, SsrcCounts]]


@dataclass
class Call:
    peers: dict[str, str] = field(default_factory=dict)  # subscriber name -> peer id
    pushes: list[Push] = field(default_factory=list)

    def consumer(self, push: Push, name: str, kind: str) -> dict:
        return next(
            c
            for room in push.snapshot["rooms"]
            for c in room["consumers"]
            if c["peer"] == self.peers[name] and c["kind"] == kind
        )

    def srtp_tag(self, name: str) -> int:
        last = self.pushes[-1].snapshot
        peer = next(p for room in last["rooms"] for p in room["peers"] if p["id"] == self.peers[name])
        transport = next(t for t in peer["transports"] if t["consumers"])
        return SRTP_TAG_BYTES[transport["srtp_profile"]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def call(tmp_path_factory: pytest.TempPathFactory):
    with pytest.MonkeyPatch.context() as patch:  # the module fixture runs before conftest's per-test patch
        patch.setattr(aioice.ice, "get_host_addresses", lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"])
        # Longer than the test: aiortc's MediaPlayer plays as fast as it can decode after its first loop.
        spec = MediaSpec(width=320, height=180, fps=25, video_bitrate=300_000, duration=15.0)
        media = make_media(spec, tmp_path_factory.mktemp("media"))
        server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0)))
        result = Call()
        relays = {
            "clean": UdpRelay(),
            "lossy": UdpRelay(loss=INJECTED_LOSS, periodic_loss=True, seed=3),
            "delayed": UdpRelay(delay=ONE_WAY_DELAY),
            "jittery": UdpRelay(jitter=INJECTED_JITTER, seed=5),
        }
        publisher = AiortcPeer(server.url, "truth", "alice")
        subscribers = {name: AiortcPeer(server.url, "truth", name) for name in relays}
        watcher = None
        try:
            await publisher.join()
            producers = await publisher.publish(str(media.video), str(media.audio))
            audio = [p for p in producers if p["kind"] == "audio"]
            for name, sub in subscribers.items():
                joined = await sub.join()
                result.peers[name] = joined["peerId"]
                await sub.subscribe(producers if name == "clean" else audio, relay=relays[name])
            watcher = await SignalingClient.connect(server.url)
            await watcher.request("subscribeStats", interval=1.0)
            deadline = time.monotonic() + 30
            while len(result.pushes) < PUSHES and time.monotonic() < deadline:
                _, snapshot = await asyncio.wait_for(watcher.notifications.get(), 5)
                counts = {
                    name: {ssrc: SsrcCounts(**vars(c)) for ssrc, c in relay.streams.items()} for name, relay in relays.items()
                }
                consumers = [c for room in snapshot["rooms"] for c in room["consumers"]]
                if result.pushes or (len(consumers) == 5 and all(c["reports_received"] >= 2 for c in consumers)):
                    result.pushes.append(Push(time.monotonic(), snapshot, counts))
            yield result
        finally:
            if watcher is not None:
                await watcher.close()
            for peer in (publisher, *subscribers.values()):
                await peer.close()
            await server.close()


async def test_every_pushed_snapshot_follows_the_schema(call):
    assert len(call.pushes) == PUSHES
    for push in call.pushes:
        validate_snapshot(push.snapshot)


async def test_injected_loss_shows_as_fraction_lost_and_lowers_the_score(call):
    last = call.pushes[-1]
    consumer = call.consumer(last, "lossy", "audio")
    realised = last.relays["lossy"][consumer["ssrc"]]
    assert realised.dropped / (realised.dropped + realised.forwarded) == pytest.approx(INJECTED_LOSS, abs=0.005)
    # Every reading once the loss window is full (LOSS_INTERVALS receiver reports, ~250 packets), not a lucky one.
    readings = [call.consumer(p, "lossy", "audio") for p in call.pushes]
    full = [c["fraction_lost"] for c in readings if c["reports_received"] > LOSS_INTERVALS]
    assert len(full) >= 2
    assert all(abs(fraction - INJECTED_LOSS) <= 0.01 + 1e-9 for fraction in full), full
    # The last RR is up to ~1.5 s old: the relay may have dropped a few more since.
    assert realised.dropped - 5 <= consumer["packets_lost"] <= realised.dropped
    assert 7 <= consumer["score"] <= 9  # 5% unrepaired loss scores 8 (0.95^4 x 10)
    clean = call.consumer(last, "clean", "audio")
    assert (clean["fraction_lost"], clean["packets_lost"], clean["score"]) == (0, 0, 10)


async def test_injected_delay_shows_as_round_trip_time(call):
    delayed = statistics.median(call.consumer(p, "delayed", "audio")["rtt_ms"] for p in call.pushes)
    baseline = statistics.median(call.consumer(p, "clean", "audio")["rtt_ms"] for p in call.pushes)
    # 40 ms injected; the stacks' own processing (the clean path's RTT, ~1 ms when idle) comes on top.
    assert 2000 * ONE_WAY_DELAY <= delayed <= 2000 * ONE_WAY_DELAY + 10 + baseline


async def test_bitrate_matches_the_bytes_on_the_wire(call):
    first, last = call.pushes[1], call.pushes[-1]
    tag = call.srtp_tag("clean")
    for kind in ("audio", "video"):
        before, after = call.consumer(first, "clean", kind), call.consumer(last, "clean", kind)
        wire_before, wire_after = first.relays["clean"][after["ssrc"]], last.relays["clean"][after["ssrc"]]
        packets = wire_after.forwarded - wire_before.forwarded
        wire_bytes = wire_after.forwarded_bytes - wire_before.forwarded_bytes - tag * packets
        elapsed = last.at - first.at
        # Each push's bitrate covers the server's last 1-s report interval, which ends up to 1 s before the push.
        reported = statistics.mean(call.consumer(p, "clean", kind)["bitrate_bps"] for p in call.pushes[2:])
        assert after["bytes"] - before["bytes"] == pytest.approx(wire_bytes, rel=0.05)
        assert reported == pytest.approx(wire_bytes * 8 / elapsed, rel=0.05)


async def test_injected_jitter_raises_jitter(call):
    last = call.pushes[-1]
    jittery = call.consumer(last, "jittery", "audio")["jitter_ms"]
    clean = call.consumer(last, "clean", "audio")["jitter_ms"]
    # Uniform 0..40 ms extra delay: RFC 3550's estimator settles near the mean |difference|, 40/3 ms.
    assert clean + 5 < jittery < 1000 * INJECTED_JITTER


async def test_producers_received_everything_on_loopback(call):
    for producer in call.pushes[-1].snapshot["rooms"][0]["producers"]:
        assert producer["packets"] > 0 and producer["bitrate_bps"] > 0
        assert (producer["fraction_lost"], producer["score"], producer["rtt_ms"]) == (0, 10, None)
