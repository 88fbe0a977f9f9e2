"""Capture real packets of a call as seeds for the property tests (tests/test_parsers_fuzz.py).

An aiortc publisher (VP8 + Opus) and an aiortc subscriber behind 5% loss talk through a real server; the server's
datagrams are recorded as they arrive (STUN, DTLS), RTP and RTCP after SRTP (both directions: aiortc's SR, RR,
NACK, PLI, REMB and the server's own), with the SDP offers and signaling requests. Regenerate with

    scripts/loopback python -m tests.data.capture_seeds
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import aioice.ice

from sfuctl.media import MediaSpec, make_media
from sfuctl.rtc.connection import Connection
from sfuctl.runtime import run
from sfuctl.server.app import start_server
from sfuctl.server.config import ServerConfig
from sfuctl.server.worker import Worker

from ..peers import AiortcPeer, UdpRelay

SEEDS = Path(__file__).with_name("seeds.json")
PER_KIND = 24  # seeds kept per kind, spread over the call


def main() -> None:
    aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]
    seeds: dict[str, list[str]] = defaultdict(list)
    seen: dict[str, int] = defaultdict(int)

    def keep(kind: str, data: bytes | str) -> None:
        seen[kind] += 1
        count = seen[kind]  # the first ones, then every 2^k-th: the handshake and the steady state
        if len(seeds[kind]) < PER_KIND and (count <= PER_KIND // 2 or count & (count - 1) == 0):
            seeds[kind].append(data.hex() if isinstance(data, bytes) else data)

    received = Worker.datagram_received

    def record_datagram(self: Worker, data: bytes, addr: tuple) -> None:
        if data and data[0] < 4:
            keep("stun", data)
        elif data and 19 < data[0] < 64:
            keep("dtls", data)
        received(self, data, addr)

    send_rtcp = Connection.send_rtcp

    def record_sent_rtcp(self: Connection, packet: bytes) -> None:
        keep("rtcp", packet)
        send_rtcp(self, packet)

    Worker.datagram_received = record_datagram  # type: ignore[method-assign]
    Connection.send_rtcp = record_sent_rtcp  # type: ignore[method-assign]

    async def call() -> None:
        server = await start_server(ServerConfig(port=0, rtc_ports=(0, 0)))
        media = make_media(MediaSpec(width=320, height=180, duration=4.0), Path(tempfile.mkdtemp()))
        publisher, subscriber = AiortcPeer(server.url, "seeds", "alice"), AiortcPeer(server.url, "seeds", "bob")
        try:
            await publisher.join()
            producers = await publisher.publish(str(media.video), str(media.audio))
            keep("sdp", publisher.publish_pc.localDescription.sdp)
            await subscriber.join()
            await subscriber.subscribe(producers, relay=UdpRelay(loss=0.05, seed=3))
            keep("sdp", subscriber.subscribe_pc.localDescription.sdp)
            for transport in server.worker.transports:
                connection = transport.connection
                connection.on_rtp = _recording(connection.on_rtp, lambda data: keep("rtp", data))
                connection.on_rtcp = _recording(connection.on_rtcp, lambda data: keep("rtcp", data))
            await asyncio.sleep(6)
        finally:
            await publisher.close()
            await subscriber.close()
            await server.close()

    run(call())
    for request in (
        {"id": 1, "method": "join", "params": {"room": "seeds", "name": "alice"}},
        {"id": "two", "method": "subscribe", "params": {"sdp": "v=0", "subscriptions": {"0": "p-1234abcd"}}},
        {"id": 3, "method": "relay", "params": {"to": "peer-0f3d", "data": {"type": "offer", "sdp": "v=0"}}},
        {"id": 4, "method": "subscribeStats", "params": {"interval": 1.0, "room": "seeds"}},
        {"id": 5, "method": "ping"},
    ):
        keep("signaling", json.dumps(request))
    SEEDS.write_text(json.dumps(seeds, indent=0) + "\n")
    print({kind: len(values) for kind, values in seeds.items()})


def _recording(handler, record):
    def wrapped(data: bytes) -> None:
        record(data)
        handler(data)

    return wrapped


if __name__ == "__main__":
    main()
