"""What the relay between cluster nodes costs: joins and signaling messages straight to the node hosting a room
vs through another node, and the relaying node's CPU while a call it relayed runs.

    python bench/cluster_relay.py [--joins 50] [--messages 3000] [--rounds 3] [--call 10]

Starts a redis-server and two `sfuctl serve --redis` nodes (one worker each) on free loopback ports: `host`
hosts the room, `relay` relays to it. Reported, in one sitting:
  join latency: websocket open + `join` answered (a new connection each time, the room hosted by `host`),
      --joins joins alternated straight / through `relay`, p50 and p95 (nearest rank) of each;
  signaling messages per second: one peer sends --messages `relay` requests (32 in flight) to another peer of
      the room, whose notifications arrive on a straight connection; answered requests per second, straight
      and through `relay`, median of --rounds rounds alternated;
  relaying node CPU during a call: 2 bots joined through `relay` exchange audio and video for --call seconds;
      CPU seconds of each node process over that window (from /proc): media goes straight to `host`, so the
      relaying node only carries the call's signaling.
The nodes run with message quotas raised (--max-messages-per-second) so that the relay, not the quota, is
measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import redis.asyncio as aioredis

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.client.signaling import SignalingClient
from sfuctl.cluster.registry import ROOM_LEASE, room_key
from sfuctl.media import MediaSpec, make_media

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.redis_server import redis_server  # noqa: E402 (the tests' real redis-server on a free port)

SECRET = "bench-cluster-secret"
IN_FLIGHT = 32  # requests outstanding at once in the message-rate test
QUOTA = "1000000"  # messages per second and burst per connection: far above what is measured


class Node:
    """One `sfuctl serve --redis` process."""

    def __init__(self, redis_url: str, node_id: str) -> None:
        self.id = node_id
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sfuctl.cli", "serve", "--port", "0", "--rtc-port-range", "0", "--workers", "1",
             "--redis", redis_url, "--node-id", node_id, "--cluster-secret", SECRET, "--log-level", "warning",
             "--max-messages-per-second", QUOTA, "--max-message-burst", QUOTA],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "400"},
        )
        line = self.process.stderr.readline()
        match = re.search(r"signaling (ws://\S+) ·", line)
        if not match:
            raise SystemExit(f"node {node_id} did not start: {line}{self.process.stderr.read()[-2000:]}")
        self.url = match.group(1)
        self.process.stderr.readline()  # "cluster node ID at URL on REDIS"

    def cpu_seconds(self) -> float:
        """User + system CPU of the node and its worker processes (children), from /proc."""
        pids = [self.process.pid, *_children(self.process.pid)]
        ticks = 0
        for pid in pids:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        return ticks / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            found.append(int(child))
            found.extend(_children(int(child)))
    return found


def nearest_rank(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, int(fraction * len(ordered) + 0.999999) - 1))]


async def join_ms(url: str, room: str, index: int) -> float:
    start = time.perf_counter()
    client = await SignalingClient.connect(url)
    try:
        await client.request("join", room=room, name=f"j{index}")
        return (time.perf_counter() - start) * 1000
    finally:
        await client.close()


async def messages_per_second(sender_url: str, receiver_url: str, room: str, count: int) -> float:
    receiver = await SignalingClient.connect(receiver_url)
    sender = await SignalingClient.connect(sender_url)
    try:
        target = (await receiver.request("join", room=room, name="receiver"))["peerId"]
        await sender.request("join", room=room, name="sender")
        window = asyncio.Semaphore(IN_FLIGHT)

        async def one(i: int) -> None:
            async with window:
                await sender.request("relay", to=target, data={"n": i})

        start = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(count)))
        elapsed = time.perf_counter() - start
        return count / elapsed
    finally:
        await sender.close()
        await receiver.close()


async def bench(args: argparse.Namespace) -> dict:
    with redis_server() as redis_url:
        host, relay = Node(redis_url, "host"), Node(redis_url, "relay")
        redis = aioredis.from_url(redis_url, decode_responses=True)
        lease: asyncio.Task | None = None
        try:
            rooms = ("joins", "messages", "call")

            async def keep_on_host() -> None:  # the rooms stay host's while empty between measurements
                while True:
                    for room in rooms:
                        await redis.set(room_key(room), "host", ex=ROOM_LEASE)
                    await asyncio.sleep(1)

            lease = asyncio.create_task(keep_on_host())
            await asyncio.sleep(0.1)
            paths = {"straight": host.url, "relayed": relay.url}
            joins: dict[str, list[float]] = {"straight": [], "relayed": []}
            for i in range(3):  # warm-up: connections, imports, the room's first join
                await join_ms(host.url, "joins", -1 - i)
                await join_ms(relay.url, "joins", -10 - i)
            for i in range(args.joins):
                for path in (("straight", "relayed") if i % 2 == 0 else ("relayed", "straight")):
                    joins[path].append(await join_ms(paths[path], "joins", i))
            rates: dict[str, list[float]] = {"straight": [], "relayed": []}
            for round_ in range(args.rounds):
                for path in (("straight", "relayed") if round_ % 2 == 0 else ("relayed", "straight")):
                    rates[path].append(await messages_per_second(paths[path], host.url, "messages", args.messages))
            media = make_media(MediaSpec(width=320, height=180, video_bitrate=300_000, duration=4.0), Path(args.media_dir))
            call = asyncio.create_task(run_bots(BotsConfig(
                url=relay.url, count=2, room="call", ramp=10, duration=args.call + 6.0,
                media=(str(media.video), str(media.audio)), seed=3)))
            await asyncio.sleep(4.0)  # both bots joined, media flowing
            before = (host.cpu_seconds(), relay.cpu_seconds())
            await asyncio.sleep(args.call)
            after = (host.cpu_seconds(), relay.cpu_seconds())
            report = await call
            received = sum(c["packets"] for bot in report.bots for c in bot["consumers"])
        finally:
            if lease is not None:
                lease.cancel()
            await redis.aclose()
            host.stop()
            relay.stop()
    return {
        "joins_per_path": args.joins,
        "join_ms": {path: {"p50": round(nearest_rank(v, 0.5), 2), "p95": round(nearest_rank(v, 0.95), 2)}
                    for path, v in joins.items()},
        "messages": args.messages,
        "messages_per_second": {path: round(statistics.median(v)) for path, v in rates.items()},
        "messages_per_second_rounds": {path: [round(x) for x in v] for path, v in rates.items()},
        "call_seconds": args.call,
        "call_bots_failed": report.failed,
        "call_packets_received": received,
        "cpu_seconds_during_call": {"host": round(after[0] - before[0], 2), "relay": round(after[1] - before[1], 2)},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=50, help="joins per path")
    parser.add_argument("--messages", type=int, default=3000, help="relay requests per round")
    parser.add_argument("--rounds", type=int, default=3, help="message-rate rounds per path")
    parser.add_argument("--call", type=float, default=10.0, help="seconds of the call whose CPU is measured")
    parser.add_argument("--media-dir", default="/tmp/sfuctl-bench-media", help="where test media is made (cached)")
    args = parser.parse_args()
    result = asyncio.run(bench(args))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
