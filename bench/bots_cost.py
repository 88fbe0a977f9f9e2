"""CPU cost of `sfuctl bots`: CPU-seconds per sent and per received stream-second, plus the server's CPU.

Starts `sfuctl serve` in its own process on 127.0.0.1, then runs two phases through the library API:
  send: every bot publishes audio + video, nobody subscribes  -> bot CPU per sent stream-second
  full: every bot publishes and subscribes to the others      -> the rest of the bot CPU per received
        stream-second (the send cost of phase 1 subtracted)
CPU is read from /proc (the bench process and its bot processes; the server and its workers) over the
steady part of each phase: after every bot joined plus a settling time, until just before the end. The
kernel's receive-buffer drops on the bots' and the server's UDP sockets over the same window are reported
too: on a shared machine they show when a process was descheduled long enough for a socket to overflow.

    python bench/bots_cost.py --count 50 --rooms 10 --duration 60 --processes 2
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.observer import Observer
from sfuctl.bots.runner import run_bots
from sfuctl.bots.stats import Sample
from sfuctl.runtime import run

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, in seconds (0 when it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def descendants(pid: int) -> list[int]:
    """pid and every process below it."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    parents.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(entry))
            except (OSError, IndexError, ValueError):
                continue
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(parents.get(current, []))
    return found


def tree_cpu(pid: int, exclude: int | None = None) -> float:
    """CPU of a process and its descendants, without the subtree of `exclude`."""
    skip = set(descendants(exclude)) if exclude is not None else set()
    return sum(cpu_seconds(p) for p in descendants(pid) if p not in skip)


def udp_drops(pids: list[int]) -> int:
    """Datagrams the kernel dropped on the UDP sockets of these processes (receive buffer full)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[8:-1])
        except OSError:
            continue
    drops = 0
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                drops += int(fields[-1])
    return drops


def all_udp_drops(server_pid: int) -> tuple[int, int]:
    """(bots, server) socket drops so far."""
    server = descendants(server_pid)
    bots = [p for p in descendants(os.getpid()) if p not in server]
    return udp_drops(bots), udp_drops(server)


def bots_cpu(server_pid: int) -> float:
    """This process and its bot processes (the server, started from here too, is left out)."""
    return tree_cpu(os.getpid(), exclude=server_pid)


@dataclass
class Window:
    """CPU and stream counts over the steady part of a phase."""

    seconds: float = 0.0
    bots_cpu: float = 0.0
    server_cpu: float = 0.0
    sent_stream_seconds: float = 0.0
    received_stream_seconds: float = 0.0
    sent_packets_per_s: float = 0.0
    received_packets_per_s: float = 0.0
    receive_buffer_drops: tuple[int, int] = (0, 0)  # bots' sockets, server's sockets


async def phase(url: str, server_pid: int, args: argparse.Namespace, subscribe: bool) -> tuple[Window, dict]:
    config = BotsConfig(
        url=url,
        count=args.count,
        rooms=args.rooms,
        subscribe=subscribe,
        ramp=args.ramp,
        duration=args.duration,
        processes=args.processes,
        seed=1,
    )
    ramp_end = args.count / args.ramp + args.settle
    window = Window()
    state: dict = {}

    class SteadyWindow(Observer):
        def sample(self, t: float, sample: Sample) -> None:
            total = sample.total
            inside = ramp_end <= sample.elapsed <= args.duration - 1.5
            if inside and "start" not in state:
                state["start"] = (time.monotonic(), bots_cpu(server_pid), tree_cpu(server_pid), all_udp_drops(server_pid))
                return
            if inside:
                state["end"] = (time.monotonic(), bots_cpu(server_pid), tree_cpu(server_pid), all_udp_drops(server_pid))
                state.setdefault("sent", []).append(total.streams_sent)
                state.setdefault("received", []).append(total.streams_received)

    report = await run_bots(config, SteadyWindow())
    if "end" not in state:
        raise SystemExit("the run was too short for a steady window: raise --duration")
    t0, b0, s0, d0 = state["start"]
    t1, b1, s1, d1 = state["end"]
    window.receive_buffer_drops = (d1[0] - d0[0], d1[1] - d0[1])
    window.seconds = t1 - t0
    window.bots_cpu = b1 - b0
    window.server_cpu = s1 - s0
    window.sent_stream_seconds = sum(state["sent"]) / len(state["sent"]) * window.seconds
    window.received_stream_seconds = sum(state["received"]) / len(state["received"]) * window.seconds
    total = report.total
    window.sent_packets_per_s = total["packets_sent"] / report.duration_s
    window.received_packets_per_s = total["packets_received"] / report.duration_s
    return window, report.to_dict()["summary"]["total"]


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise SystemExit(f"the server did not listen on port {port}")


async def bench(args: argparse.Namespace, url: str, server_pid: int) -> dict:
    send, send_total = await phase(url, server_pid, args, subscribe=False)
    await asyncio.sleep(2)
    full, full_total = await phase(url, server_pid, args, subscribe=True)
    per_sent = send.bots_cpu / send.sent_stream_seconds
    receive_cpu = full.bots_cpu - per_sent * full.sent_stream_seconds
    per_received = receive_cpu / full.received_stream_seconds if full.received_stream_seconds else None
    return {
        "scenario": f"{args.count} bots in {args.rooms} rooms, audio+video, {args.duration:g} s per phase, "
        f"{args.processes} bot processes, server workers: {args.server_workers or 'default'}",
        "window_s": {"send": round(send.seconds, 1), "full": round(full.seconds, 1)},
        "cpu_s_per_sent_stream_s": per_sent,
        "cpu_s_per_received_stream_s": per_received,
        "bots_cores": {"send": send.bots_cpu / send.seconds, "full": full.bots_cpu / full.seconds},
        "server_cores": {"send": send.server_cpu / send.seconds, "full": full.server_cpu / full.seconds},
        "streams": {"sent": full.sent_stream_seconds / full.seconds, "received": full.received_stream_seconds / full.seconds},
        "packets_per_s": {"sent": full.sent_packets_per_s, "received": full.received_packets_per_s},
        "us_per_packet_bots_full": full.bots_cpu / full.seconds / (full.sent_packets_per_s + full.received_packets_per_s) * 1e6,
        "udp_receive_buffer_drops": {
            phase: {"bots": window.receive_buffer_drops[0], "server": window.receive_buffer_drops[1]}
            for phase, window in (("send", send), ("full", full))
        },
        "loss_full": {
            "fraction_lost": full_total["fraction_lost"],
            "fraction_lost_before_recovery": full_total["fraction_lost_before_recovery"],
            "freezes": full_total["freezes"],
            "jitter_p95_ms": full_total["jitter_p95_ms"],
            "failed": full_total["failed"],
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=50)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--ramp", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=3.0, help="seconds after the ramp before measuring")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--port", type=int, default=18080)
    parser.add_argument("--server-workers", type=int, default=None, help="sfuctl serve --workers [default: its own]")
    args = parser.parse_args()
    command = [sys.executable, "-m", "sfuctl.cli", "serve", "--port", str(args.port),
               "--rtc-port-range", "41900-41999", "--log-level", "warning"]
    if args.server_workers:
        command += ["--workers", str(args.server_workers)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL)
    try:
        wait_for_port(args.port)
        result = run(bench(args, f"ws://127.0.0.1:{args.port}", server.pid))
    finally:
        server.terminate()
        server.wait(10)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
