"""Data channels through a real `sfuctl serve` process: messages one worker relays, server CPU per message,
delivery latency, and the idle cost of SCTP associations.

    python bench/data_relay.py relay [--consumers 1,10,50] [--seconds 10] [--size 200] [--rate 0] [--json]
    python bench/data_relay.py idle [--peers 100] [--seconds 20] [--json]

relay: one publisher sends `--size`-byte messages on an ordered, reliable channel to N data consumers, for each
N of `--consumers`: as fast as its SCTP association takes them, or `--rate` messages per second (latency is only
meaningful below saturation, where it is not queueing). Reported per N: messages relayed per
second (the server's own counters, getStats), server CPU µs per relayed message (/proc over the same window),
and the publisher-to-subscriber latency p50/p95 (the send time travels in the message; all peers share this
host's clock). The clients share one process: when the server's CPU stays well below 100% the clients were
the limit, and the CPU per message is the figure to compare.

idle: `--peers` data-only participants (a send and a receive connection each: 2 x peers associations) sit idle;
the server's CPU over `--seconds` is compared with the same number of connections offering a recvonly audio
m-line instead (ICE consent and DTLS alike, no SCTP). The server runs with --data-rate-limit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time

from bots_cost import cpu_seconds, wait_for_port

from sfuctl.bots.data_peer import DataPeer
from sfuctl.client.signaling import SignalingClient
from sfuctl.runtime import run

PORT = 8767
SETTLE = 2.0
# Messages the publisher keeps queued in its own association: enough to keep the pipe full.
PUBLISHER_QUEUE = 64


def relayed(snapshot: dict) -> int:
    return sum(c["messages_out"] for room in snapshot["rooms"] for c in room["data_consumers"])


def dropped(snapshot: dict) -> int:
    return sum(c["dropped"] for room in snapshot["rooms"] for c in room["data_consumers"])


async def relay_once(url: str, server_pid: int, consumers: int, seconds: float, size: int, rate: float) -> dict:
    room = f"relay-{consumers}"
    publisher = await DataPeer.join(url, room, "publisher")
    subscribers = [await DataPeer.join(url, room, f"sub-{i}", send=False) for i in range(consumers)]
    latencies: list[float] = []
    for sub in subscribers:
        assert sub.recv is not None
        sub.recv.on_message = lambda stream_id, message, ppid: latencies.append(time.time() - float(message[:20]))
    assert publisher.send is not None
    channel = publisher.send.open("chat")
    while sum(len(s.consumers) for s in subscribers) < consumers:
        await asyncio.sleep(0.05)
    probe = await SignalingClient.connect(url)
    stop = time.monotonic() + SETTLE + seconds
    padding = "x" * max(0, size - 20)

    async def send() -> None:
        sctp = publisher.send.sctp
        start, sent = time.monotonic(), 0
        while time.monotonic() < stop:
            due = (time.monotonic() - start) * rate if rate else float("inf")
            while sent < due and sctp.queued_chunks() < PUBLISHER_QUEUE and time.monotonic() < stop:
                publisher.send.send(channel, f"{time.time():<20.6f}{padding}")
                sent += 1
            await asyncio.sleep(0.001)

    sender = asyncio.create_task(send())
    await asyncio.sleep(SETTLE)
    latencies.clear()
    before = (await probe.request("getStats"), cpu_seconds(server_pid), time.monotonic())
    await asyncio.sleep(seconds)
    after = (await probe.request("getStats"), cpu_seconds(server_pid), time.monotonic())
    window = list(latencies)
    await sender
    await probe.close()
    for peer in (publisher, *subscribers):
        await peer.close()
    elapsed = after[2] - before[2]
    count = relayed(after[0]) - relayed(before[0])
    cpu = after[1] - before[1]
    window.sort()
    return {
        "consumers": consumers,
        "window_s": round(elapsed, 1),
        "messages_relayed_per_s": round(count / elapsed),
        "messages_in_per_s": round(count / consumers / elapsed),
        "server_cpu_percent": round(100 * cpu / elapsed, 1),
        "server_cpu_us_per_relayed_message": round(1e6 * cpu / count, 1) if count else None,
        "dropped_by_server": dropped(after[0]) - dropped(before[0]),
        "latency_ms_p50": round(1000 * window[len(window) // 2], 1) if window else None,
        "latency_ms_p95": round(1000 * window[int(len(window) * 0.95)], 1) if window else None,
    }


async def idle_once(url: str, server_pid: int, peers: int, seconds: float, data: bool) -> dict:
    room = f"idle-{data}"
    joined = [await DataPeer.join(url, room, f"p{i}", data=data) for i in range(peers)]
    await asyncio.sleep(SETTLE)
    before = (cpu_seconds(server_pid), time.monotonic())
    await asyncio.sleep(seconds)
    after = (cpu_seconds(server_pid), time.monotonic())
    for peer in joined:
        await peer.close()
    return {"connections": 2 * peers, "sctp": data, "server_cpu_percent": round(100 * (after[0] - before[0]) / (after[1] - before[1]), 2)}


async def idle(url: str, server_pid: int, peers: int, seconds: float) -> dict:
    baseline = (cpu_seconds(server_pid), time.monotonic())
    await asyncio.sleep(seconds / 2)
    empty = 100 * (cpu_seconds(server_pid) - baseline[0]) / (time.monotonic() - baseline[1])
    without = await idle_once(url, server_pid, peers, seconds, data=False)
    await asyncio.sleep(SETTLE)
    with_sctp = await idle_once(url, server_pid, peers, seconds, data=True)
    return {"empty_server_cpu_percent": round(empty, 2), "without_sctp": without, "with_sctp": with_sctp}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["relay", "idle"])
    parser.add_argument("--consumers", default="1,10,50", help="comma-separated data consumer counts (relay)")
    parser.add_argument("--size", type=int, default=200, help="message size in bytes (relay)")
    parser.add_argument("--rate", type=float, default=0, help="messages per second to send, 0: as fast as possible (relay)")
    parser.add_argument("--peers", type=int, default=100, help="idle participants, 2 associations each (idle)")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    server = subprocess.Popen(
        [sys.executable, "-m", "sfuctl.cli", "serve", "--port", str(PORT), "--workers", "1", "--rtc-port-range", "0",
         "--log-level", "warning", "--data-rate-limit", "0", "--consent-timeout", "60"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"ws://127.0.0.1:{PORT}"
    try:
        wait_for_port(PORT, 30)
        if args.mode == "relay":
            counts = [int(n) for n in args.consumers.split(",")]
            result = {"relay": [run(relay_once(url, server.pid, n, args.seconds, args.size, args.rate)) for n in counts]}
        else:
            result = {"idle": run(idle(url, server.pid, args.peers, args.seconds))}
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
