"""Capture the transport feedback Chromium sends, for tests/test_transport_feedback.py.

Chromium subscribes to a publishing bot through a relay that shapes its downlink to 300 kb/s and drops 3% of the
server's RTP, so its feedback reports losses, queueing (large and negative deltas) and steady runs: every chunk
kind. The server's transport records each RTPFB FMT 15 packet of the compounds it decrypts. Regenerate with

    scripts/loopback python -m tests.data.capture_feedback
"""

from __future__ import annotations

import asyncio
import json
import tempfile
from pathlib import Path

from sfuctl.bots.config import BotPlan, BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.media import MediaSpec, make_media
from sfuctl.rtc.transport_feedback import FMT_TRANSPORT_CC, TransportFeedback
from sfuctl.runtime import run
from sfuctl.server.app import start_server
from sfuctl.server.config import ServerConfig

from ..browser import Chromium
from ..peers import UdpRelay
from ..test_browser import page_url, redirect_answers

FEEDBACK = Path(__file__).with_name("chromium_feedback.json")
KEPT = 16  # packets kept: a few of each chunk kind, the first ones (the call's start) included
RTCP_RTPFB = 205


def feedback_packets(compound: bytes) -> list[bytes]:
    """The transport feedback packets of a compound RTCP packet, byte for byte."""
    packets, pos = [], 0
    while pos + 4 <= len(compound):
        end = pos + 4 * (int.from_bytes(compound[pos + 2 : pos + 4], "big") + 1)
        if compound[pos + 1] == RTCP_RTPFB and compound[pos] & 0x1F == FMT_TRANSPORT_CC:
            packets.append(compound[pos:end])
        pos = end
    return packets


def chunk_kinds(packet: bytes) -> set[str]:
    """Which chunk kinds and delta sizes a feedback packet uses (what the fixture must cover)."""
    parsed = TransportFeedback.parse(packet)
    kinds, pos, reported = set(), 20, 0
    while reported < len(parsed.arrivals):
        chunk = int.from_bytes(packet[pos : pos + 2], "big")
        kind = "run-length" if not chunk & 0x8000 else "two-bit" if chunk & 0x4000 else "one-bit"
        kinds.add(kind)
        reported += chunk & 0x1FFF if kind == "run-length" else 7 if kind == "two-bit" else 14
        pos += 2
    previous = parsed.reference_time * 256
    for arrival in parsed.arrivals:
        if arrival is None:
            kinds.add("lost")
            continue
        delta, previous = arrival - previous, arrival
        kinds.add("negative delta" if delta < 0 else "large delta" if delta > 255 else "small delta")
    return kinds


def choose(packets: list[bytes]) -> list[bytes]:
    """The first four packets, then for each kind not yet kept the first packet showing it, then the rest in order."""
    chosen = packets[:4]
    for kind in ("run-length", "one-bit", "two-bit", "lost", "large delta", "negative delta"):
        if not any(kind in chunk_kinds(p) for p in chosen):
            chosen += [p for p in packets if kind in chunk_kinds(p)][:2]
    chosen += [p for p in packets if p not in chosen][: max(0, KEPT - len(chosen))]
    return sorted(chosen[:KEPT], key=packets.index)


def main() -> None:
    captured: list[bytes] = []

    async def call() -> str:
        server = await start_server(ServerConfig(port=0, rtc_ports=(0, 0)))
        media = make_media(MediaSpec(duration=4.0), Path(tempfile.mkdtemp()))
        relay = UdpRelay(loss=0.03, jitter=0.1, seed=9)
        media_address = f"127.0.0.1 {server.worker.rtc_port}"
        relay_address = await relay.start(media_address)
        config = BotsConfig(url=server.url, room="feedback", count=1, duration=12.0, media=(str(media.video), str(media.audio)))
        publisher = asyncio.create_task(run_bots(config, plans=[BotPlan(0, "bot", "feedback", True, False, 0.0, False)]))
        chromium = Chromium()
        chromium.start()
        try:
            page = await chromium.open(page_url(server, "feedback", "human"), redirect_answers(media_address, relay_address))
            agent = await page.evaluate("navigator.userAgent")
            recorded: set[int] = set()
            for _ in range(100):  # up to 10 s for the page's receive transport
                for transport in list(server.worker.transports):
                    if transport.consumers and id(transport) not in recorded:
                        recorded.add(id(transport))
                        connection = transport.connection
                        handler = connection.on_rtcp

                        def record(data: bytes, handler=handler) -> None:
                            captured.extend(feedback_packets(data))
                            handler(data)

                        connection.on_rtcp = record
                await asyncio.sleep(0.1)
            await publisher
            return agent
        finally:
            publisher.cancel()
            chromium.stop()
            relay.close()
            await server.close()

    agent = run(call())
    if not captured:
        raise SystemExit("Chromium sent no transport feedback: nothing captured")
    chosen = choose(captured)
    kinds = sorted(set().union(*(chunk_kinds(p) for p in chosen)))
    FEEDBACK.write_text(json.dumps({"chromium": agent, "kinds": kinds, "packets": [p.hex() for p in chosen]}, indent=1) + "\n")
    print(f"{len(captured)} feedback packets, {len(chosen)} kept, covering {kinds}")


if __name__ == "__main__":
    main()
