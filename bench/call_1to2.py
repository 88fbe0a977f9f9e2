"""A 1-to-2 call through a real `sfuctl serve` process: packets forwarded, server CPU per packet, loss.

Usage: python bench/call_1to2.py [--seconds 20] [--json]

The publisher and the two subscribers are aiortc peers (an independent WebRTC stack) in this process; the
publisher sends the default test media without re-encoding. Reports ratios from one run, never a bare wall time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time

import aioice.ice
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

from sfuctl.client.signaling import SignalingClient
from sfuctl.media import ensure_default_media

# aioice gathers every interface but loopback; this benchmark stays on 127.0.0.1.
aioice.ice.get_host_addresses = lambda use_ipv4=True, use_ipv6=False: ["127.0.0.1"]

PORT = 8765


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def publish(url: str, media) -> tuple[SignalingClient, RTCPeerConnection, list[dict]]:
    client = await SignalingClient.connect(url)
    await client.request("join", room="bench", name="publisher")
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    video = MediaPlayer(str(media.video), decode=False)
    audio = MediaPlayer(str(media.audio), decode=False)
    pc.addTrack(video.video)
    pc.addTrack(audio.audio)
    await pc.setLocalDescription(await pc.createOffer())
    result = await client.request("publish", sdp=pc.localDescription.sdp)
    await pc.setRemoteDescription(RTCSessionDescription(result["sdp"], "answer"))
    return client, pc, result["producers"]


async def subscribe(url: str, name: str, producers: list[dict]) -> tuple[SignalingClient, RTCPeerConnection]:
    client = await SignalingClient.connect(url)
    await client.request("join", room="bench", name=name)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceivers = [(pc.addTransceiver(p["kind"], direction="recvonly"), p) for p in producers]
    await pc.setLocalDescription(await pc.createOffer())
    result = await client.request(
        "subscribe", sdp=pc.localDescription.sdp, subscriptions={t.mid: p["id"] for t, p in transceivers}
    )
    await pc.setRemoteDescription(RTCSessionDescription(result["sdp"], "answer"))
    return client, pc


async def main(seconds: float) -> dict:
    media = ensure_default_media()
    server = subprocess.Popen(
        [sys.executable, "-m", "sfuctl.cli", "serve", "--port", str(PORT), "--rtc-port-range", "41000-41099", "--log-level", "warning"],
        stderr=subprocess.PIPE,
    )
    url = f"ws://127.0.0.1:{PORT}"
    try:
        for _ in range(100):
            try:
                probe = await SignalingClient.connect(url, timeout=1)
                break
            except ConnectionError:
                await asyncio.sleep(0.1)
        pub_client, pub_pc, producers = await publish(url, media)
        subs = [await subscribe(url, f"sub-{i}", producers) for i in range(2)]
        await asyncio.sleep(3)  # connected and flowing
        before = (await probe.request("getStats"), cpu_seconds(server.pid), time.monotonic())
        await asyncio.sleep(seconds)
        after = (await probe.request("getStats"), cpu_seconds(server.pid), time.monotonic())
        for client, pc in subs:
            await pc.close()
            await client.close()
        await pub_pc.close()
        await pub_client.close()
        await probe.close()
    finally:
        server.terminate()
        server.wait(10)

    def totals(snapshot: dict) -> tuple[int, int, int]:
        room = snapshot["rooms"][0]
        received = sum(p["packets"] for p in room["producers"])
        forwarded = sum(c["packets"] for c in room["consumers"])
        lost = sum(max(c["packets_lost"], 0) for c in room["consumers"])
        return received, forwarded, lost

    r0, f0, _ = totals(before[0])
    r1, f1, lost = totals(after[0])
    cpu = after[1] - before[1]
    elapsed = after[2] - before[2]
    forwarded = f1 - f0
    return {
        "seconds": round(elapsed, 1),
        "packets_received": r1 - r0,
        "packets_forwarded": forwarded,
        "forwarded_per_second": round(forwarded / elapsed),
        "server_cpu_percent": round(100 * cpu / elapsed, 1),
        "server_cpu_us_per_forwarded_packet": round(1e6 * cpu / forwarded, 1) if forwarded else None,
        "subscriber_packets_lost_total": lost,
        "consumers": [
            {k: c[k] for k in ("kind", "packets", "fraction_lost", "packets_lost", "jitter_ms", "rtt_ms")}
            for c in after[0]["rooms"][0]["consumers"]
        ],
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main(args.seconds))
    print(json.dumps(result, indent=None if args.json else 2))
