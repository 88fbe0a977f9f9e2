"""A 1-to-2 call through a real `sfuctl serve` process: packets forwarded, server CPU per packet, loss.

    python bench/call_1to2.py [--seconds 30] [--json]

One bot publishes the default media (VP8 ~550 kbps + Opus), two bots subscribe; the server runs with one worker
in its own process. Figures are taken over the same steady window from the server's own counters (getStats) and
/proc, so they are ratios of one run, not wall times.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import time

from bots_cost import cpu_seconds, wait_for_port

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.client.signaling import SignalingClient
from sfuctl.runtime import run

PORT = 8766
SETTLE = 5.0


def totals(snapshot: dict) -> dict:
    room = snapshot["rooms"][0]
    return {
        "received": sum(p["packets"] for p in room["producers"]),
        "forwarded": sum(c["packets"] for c in room["consumers"]),
        "retransmitted": sum(c["retransmitted"] for c in room["consumers"]),
    }


async def measure(url: str, server_pid: int, seconds: float) -> dict:
    config = BotsConfig(url=url, count=3, room="call", publishers=1, duration=seconds + 2 * SETTLE, processes=1)
    bots = asyncio.create_task(run_bots(config))
    probe = await SignalingClient.connect(url)
    await asyncio.sleep(SETTLE)
    before = (totals(await probe.request("getStats")), cpu_seconds(server_pid), time.monotonic())
    await asyncio.sleep(seconds)
    snapshot = await probe.request("getStats")
    after = (totals(snapshot), cpu_seconds(server_pid), time.monotonic())
    await probe.close()
    report = (await bots).to_dict()
    elapsed, cpu = after[2] - before[2], after[1] - before[1]
    forwarded = after[0]["forwarded"] - before[0]["forwarded"]
    consumers = [c for b in report["bots"] for c in b["consumers"]]
    return {
        "window_s": round(elapsed, 1),
        "packets_received_by_server": after[0]["received"] - before[0]["received"],
        "packets_forwarded": forwarded,
        "packets_retransmitted": after[0]["retransmitted"] - before[0]["retransmitted"],
        "server_cpu_percent": round(100 * cpu / elapsed, 2),
        "server_cpu_us_per_forwarded_packet": round(1e6 * cpu / forwarded, 1) if forwarded else None,
        "subscriber_packets_lost": sum(c["packets_lost"] for c in consumers),
        "subscriber_fraction_lost_max": max((c["fraction_lost"] for c in consumers), default=None),
        "server_consumers": [
            {k: c[k] for k in ("kind", "packets", "fraction_lost", "jitter_ms", "rtt_ms")} for c in snapshot["rooms"][0]["consumers"]
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "sfuctl.cli", "serve", "--port", str(PORT), "--workers", "1", "--rtc-port-range", "0", "--log-level", "warning"],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(PORT)
        result = run(measure(f"ws://127.0.0.1:{PORT}", server.pid, args.seconds))
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
