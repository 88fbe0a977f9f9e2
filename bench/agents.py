"""Overhead of running bots through load agents: the same 50-bot scenario locally and through 2 agents.

    python bench/agents.py [--bots 50] [--rooms 10] [--duration 60] [--rounds 2]

Starts a redis-server and `sfuctl serve` (one worker) on free loopback ports, then runs the scenario
alternately with `sfuctl run` (bots in 2 processes) and with `sfuctl run --agents` over 2 `sfuctl agent`s
(1 bot process each), so both have 2 bot processes. Reported per run, from the run's JSON:
  bot CPU per received stream: the bots' own CPU accounting (bots.cpu_percent, % of a core per bot,
      averaged over the samples from the last join + 5 s on) times the joined bots, over the streams they
      receive (a bot that could not join on a busy machine is reported, and left out of both);
  Redis traffic per bot-second: Redis's total_net_input/output_bytes over the agents' run, divided by
      bots x scenario seconds (heartbeats, plans, samples, live histograms, records).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import redis
from bots_cost import wait_for_port

SECRET = "bench"
RAMP = 3.0  # joins per second: slow enough that ICE/DTLS handshakes do not pile up on a shared machine
SETTLE = 5.0  # s after the last join before the window starts
SCENARIO = """name = "agents-bench"
duration = "{duration}s"
[bots]
count = {bots}
rooms = {rooms}
ramp = {ramp}
processes = 2
seed = 11
join_timeout = "60s"
[thresholds]
"bots.cpu_percent" = {{ expect = ["avg >= 0"], after = "{after}s" }}
"consumer.bitrate_bps" = ["count >= 0"]
"bots.join_failed" = ["count == 0"]
"""


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sfuctl(*args: str) -> list[str]:
    return [sys.executable, "-m", "sfuctl.cli", *args]


def run_once(scenario: Path, url: str, out: Path, agents: str | None) -> dict:
    extra = ["--agents", agents] if agents else []
    process = subprocess.run(sfuctl("run", str(scenario), "--url", url, "--json", str(out), "-q", *extra),
                             env={**os.environ, "SFUCTL_AGENTS_SECRET": SECRET}, capture_output=True, text=True)
    if process.returncode not in (0, 99):  # 99: a bot failed to join (a busy machine); the others still count
        raise SystemExit(f"run failed (exit {process.returncode}): {process.stdout[-2000:]}{process.stderr[-2000:]}")
    result = json.loads(out.read_text())
    verdicts = {v["metric"]: v for v in result["verdicts"]}
    joined = [bot for bot in result["bots"]["bots"] if bot["joined"]]
    received = sum(1 for bot in joined for consumer in bot["consumers"] if consumer["packets"])
    cpu_per_bot = verdicts["bots.cpu_percent"]["value"]  # % of a core per joined bot
    return {
        "mode": "agents" if agents else "local",
        "bots_joined": len(joined),
        "streams_received": received,
        "bot_cpu_percent_per_bot": round(cpu_per_bot, 3),
        "bot_cpu_percent_per_received_stream": round(cpu_per_bot * len(joined) / received, 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bots", type=int, default=50)
    parser.add_argument("--rooms", type=int, default=10)
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="sfuctl-agents-bench-"))
    scenario = work / "bench.toml"
    after = args.bots / RAMP + SETTLE
    if after >= args.duration - 10:
        parser.error(f"--duration must be over {after + 10:g} s for {args.bots} bots joining at {RAMP:g}/s")
    scenario.write_text(SCENARIO.format(duration=args.duration, bots=args.bots, rooms=args.rooms, after=after,
                                        ramp=RAMP))
    redis_port, port = free_port(), free_port()
    started: list[subprocess.Popen] = []
    try:
        started.append(subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                                         "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                                        stdout=subprocess.DEVNULL))
        started.append(subprocess.Popen(sfuctl("serve", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
                                               "--rtc-port-range", "0", "--log-level", "warning"), stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL))
        wait_for_port(redis_port)
        wait_for_port(port)
        agents_url = f"redis://127.0.0.1:{redis_port}/0"
        for name in ("bench-1", "bench-2"):
            started.append(subprocess.Popen(sfuctl("agent", "--redis", agents_url, "--name", name, "--processes", "1"),
                                            env={**os.environ, "SFUCTL_AGENTS_SECRET": SECRET},
                                            stdout=subprocess.DEVNULL))
        time.sleep(3)  # the agents register
        client = redis.Redis.from_url(agents_url)
        rows = []
        for number in range(args.rounds):
            for agents in (None, agents_url):
                traffic = client.info("stats")
                row = run_once(scenario, f"ws://127.0.0.1:{port}", work / f"run-{number}.json", agents)
                traffic_after = client.info("stats")
                if agents:
                    bot_seconds = args.bots * args.duration
                    row["redis_in_bytes_per_bot_second"] = round(
                        (traffic_after["total_net_input_bytes"] - traffic["total_net_input_bytes"]) / bot_seconds, 1)
                    row["redis_out_bytes_per_bot_second"] = round(
                        (traffic_after["total_net_output_bytes"] - traffic["total_net_output_bytes"]) / bot_seconds, 1)
                rows.append(row)
                print(json.dumps(row), flush=True)
        local = [r["bot_cpu_percent_per_received_stream"] for r in rows if r["mode"] == "local"]
        remote = [r["bot_cpu_percent_per_received_stream"] for r in rows if r["mode"] == "agents"]
        print(json.dumps({"agents_over_local_bot_cpu_per_stream": round(sum(remote) / sum(local), 3)}))
    finally:
        for process in reversed(started):
            process.send_signal(signal.SIGINT)
        for process in reversed(started):
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
