"""Server CPU per output packet at the loads users run: 1 publisher -> 40 subscribers, and meeting.toml's
10 rooms of 5 (everyone publishes audio and video and receives the other four).

    python bench/load_cost.py [--load 1to40|meeting|both] [--seconds 20] [--meeting-rooms 10] [--json]
    python bench/load_cost.py --load 1to40 --transport both --rounds 3   # ICE-TCP against UDP, alternated

`--meeting-rooms N` runs N of meeting.toml's rooms of 5: on a 2-vCPU machine the bots cannot generate all 10
(50 bots receiving 400 streams take more than the machine's two cores: late joiners' ICE/DTLS time out and the
publishers fall behind their pace), while the server's work per output packet depends on the rooms' shape, not
on their number.

`--transport tcp` runs the server with `--ice-tcp --no-ice-udp` and the bots with `--ice-tcp` (RFC 4571 framing
on one TCP connection per transport); `both` alternates UDP and TCP runs and gives the ratio of their medians.

A real `sfuctl serve --workers 1` process (its pid is the worker: every packet it forwards and every timer it
runs is on its CPU clock) and real bots (`sfuctl bots` through the library, in child processes). After the
bots joined and a settle time, one window: server CPU (/proc/<pid>/task/*/schedstat) over the packets its
consumers sent in the same window (getStats, retransmissions included). A ratio of one run, not a wall time;
compare trees in one sitting (docs/performance.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time

from bots_cost import CLOCK_TICKS, wait_for_port

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.client.signaling import SignalingClient
from sfuctl.runtime import run

SETTLE = 6.0  # after the last bot joined: keyframes requested at join have come, bitrates are steady
LOADS = {
    # what `sfuctl bots --count 41 --publishers 1` runs: one room, one publisher, 40 subscribers
    "1to40": dict(count=41, rooms=1, publishers=1, ramp=20),
    # scenarios/meeting.toml: 10 rooms of 5, all publishing
    "meeting": dict(count=50, rooms=10, ramp=10),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def user_system_seconds(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of a process: system time is the kernel's share (sendto, loopback delivery)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) / CLOCK_TICKS, int(fields[12]) / CLOCK_TICKS


def totals(snapshot: dict) -> tuple[int, int, int]:
    """(output packets, input packets, consumers) summed over the rooms."""
    consumers = [c for room in snapshot["rooms"] for c in room["consumers"]]
    producers = [p for room in snapshot["rooms"] for p in room["producers"]]
    return sum(c["packets"] for c in consumers), sum(p["packets"] for p in producers), len(consumers)


def shape_of(load: str, meeting_rooms: int) -> dict:
    """The bots of a load: meeting's with `meeting_rooms` rooms of 5."""
    shape = dict(LOADS[load])
    if load == "meeting":
        shape.update(count=5 * meeting_rooms, rooms=meeting_rooms)
    return shape


async def measure(url: str, server_pid: int, load: str, seconds: float, processes: int, ice_tcp: bool,
                  meeting_rooms: int = 10) -> dict:
    shape = shape_of(load, meeting_rooms)
    join_time = shape["count"] / shape["ramp"]
    config = BotsConfig(url=url, duration=join_time + SETTLE + seconds + 3, processes=processes, ice_tcp=ice_tcp, **shape)
    bots = asyncio.create_task(run_bots(config))
    probe = await SignalingClient.connect(url)
    await asyncio.sleep(join_time + SETTLE)
    out0, in0, consumers = totals(await probe.request("getStats"))
    (user0, sys0), t0 = user_system_seconds(server_pid), time.monotonic()
    await asyncio.sleep(seconds)
    out1, in1, _ = totals(await probe.request("getStats"))
    (user1, sys1), t1 = user_system_seconds(server_pid), time.monotonic()
    await probe.close()
    report = await bots
    elapsed, output = t1 - t0, out1 - out0
    user, system = user1 - user0, sys1 - sys0
    cpu = user + system
    return {
        "load": load,
        "bots": shape["count"],
        "transport": "tcp" if ice_tcp else "udp",
        "window_s": round(elapsed, 1),
        "consumers": consumers,
        "failed_bots": report.failed,
        "output_pps": round(output / elapsed),
        "input_pps": round((in1 - in0) / elapsed),
        "server_cpu_percent": round(100 * cpu / elapsed, 1),
        "us_per_output_packet": round(1e6 * cpu / output, 2) if output else None,
        "user_us_per_output_packet": round(1e6 * user / output, 2) if output else None,
        "system_us_per_output_packet": round(1e6 * system / output, 2) if output else None,
    }


def measure_load(load: str, seconds: float, processes: int, ice_tcp: bool = False, meeting_rooms: int = 10) -> dict:
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "sfuctl.cli", "serve", "--port", str(port), "--workers", "1", "--rtc-port-range", "0",
         "--log-level", "warning", *(("--ice-tcp", "--no-ice-udp") if ice_tcp else ())],
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, timeout=60)
        return run(measure(f"ws://127.0.0.1:{port}", server.pid, load, seconds, processes, ice_tcp, meeting_rooms))
    finally:
        server.terminate()
        server.wait(10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load", choices=[*LOADS, "both"], default="both")
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--processes", type=int, default=2, help="bot processes")
    parser.add_argument("--transport", choices=["udp", "tcp", "both"], default="udp", help="media over UDP, ICE-TCP, or both alternated")
    parser.add_argument("--rounds", type=int, default=1, help="runs per load and transport (alternated with --transport both)")
    parser.add_argument("--meeting-rooms", type=int, default=10, help="meeting.toml's rooms of 5 to run (10: all)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    loads = list(LOADS) if args.load == "both" else [args.load]
    transports = [False, True] if args.transport == "both" else [args.transport == "tcp"]
    results = [measure_load(load, args.seconds, args.processes, ice_tcp, args.meeting_rooms)
               for load in loads for _ in range(args.rounds) for ice_tcp in transports]
    if args.json:
        print(json.dumps(results))
        return
    for r in results:
        print(f"{r['load']:>8} {r['transport']} ({r['bots']} bots): {r['us_per_output_packet']} µs server CPU per output packet"
              f" ({r['user_us_per_output_packet']} user + {r['system_us_per_output_packet']} system)"
              f" ({r['output_pps']} output pps, {r['consumers']} consumers, server {r['server_cpu_percent']}% of a core,"
              f" {r['failed_bots']} bots failed)")
    if args.transport == "both":
        for load in loads:
            cost = {t: statistics.median(r["us_per_output_packet"] for r in results if r["load"] == load and r["transport"] == t)
                    for t in ("udp", "tcp")}
            print(f"{load:>8}: TCP/UDP server CPU per output packet {cost['tcp'] / cost['udp']:.2f} "
                  f"(medians of {args.rounds}: {cost['tcp']} / {cost['udp']} µs)")


if __name__ == "__main__":
    main()
