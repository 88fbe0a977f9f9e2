"""Forwarding capacity of one sfuctl worker, measured against the raw limit of the same machine, in one run.

1. Raw limit: a tight loop of SRTP protect (the profile the server negotiates) + socket.sendto of 1200-byte
   packets to sockets drained by another process (one socket, and round-robin over 128 like a fan-out)
   -> µs of CPU per packet, packets per CPU-second.
2. The real server (`sfuctl serve --workers 1` in its own process), one room, a few lean publishers (this
   process) sending pre-packetized VP8 + Opus in real time, and receiver processes whose subscribers only count
   SRTP datagrams. Consumers ramp (10, 50, 100, ...) until loss exceeds 1%: egress loss = 1 - datagrams the
   receivers counted / packets the server says it sent them (getStats consumers[].packets), ingress loss = 1 -
   packets the server's producers received / packets the publishers sent. Both are exact: they are read while
   the publishers pause and the path is drained, before and after each step's rate window. A step also fails
   when the server falls behind (over 1% of the window's input still unread in its socket buffer at the end).
3. Per step: output packets per server CPU-second (CPU from /proc/<pid>/task/*/schedstat, the ns clock behind
   /proc/<pid>/stat), its ratio to the raw limit, server CPU µs per forwarded packet (gross, and net of the
   ingress-only baseline of step 0), server RSS per consumer (VmRSS over step 0's), and the CPU of the rest.

With --simulcast each publisher sends its video as three encodings (sfuctl media make --simulcast: 320x180,
640x360, 1280x720) and every video consumer is a simulcast consumer; the receivers send no reports, so each
forwards the top encoding. Compare its net CPU per output packet with a run without the flag.

With `--room-workers N` the same room is served, step by step, by `sfuctl serve --workers 1` and by
`sfuctl serve --workers N` with the room's consumers spread over the N workers (the room spills past 1/N of the
step's consumers, its producers piped from the home worker): server CPU (every process) per output packet of
both, alternated, and their ratio.

    python bench/forwarding.py [--json] [--quick] [--simulcast] [--room-workers 2]      (docs/performance.md)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import socket
import struct
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pylibsrtp
import websockets

from sfuctl.client.signaling import SignalingClient
from sfuctl.encoded import load_track
from sfuctl.media import ensure_default_media, ensure_simulcast_media
from sfuctl.rtc.dtls import SRTP_PROFILES, SrtpProfile
from sfuctl.rtc.rtp import build_extension_block
from sfuctl.runtime import run

from forwarding_publisher import LeanPublisher
from forwarding_receiver import cpu_seconds

HERE = Path(__file__).resolve().parent
ROOM = "bench"
PACKET_SIZE = 1200
RAW_FANOUT = 128  # sockets the fan-out variant of the raw loop sends to, round-robin
STEPS = (10, 50, 100, 200, 300, 500, 750, 1000, 1500, 2000, 2500, 3000, 4000, 5000, 6000)
QUICK_STEPS = (10, 100, 500)
ROOM_WORKERS_STEPS = (200, 500, 1000)  # --room-workers: each step on a fresh server, once per configuration
ROOM_WORKERS_QUICK_STEPS = (200, 500)
LOSS_LIMIT = 0.01
REPORTED_AT = (10, 100, 500)
QUIET_POLL = 0.1  # while quiet: receiver counts polled until they stop moving
QUIET_MAX = 5.0
RESTART_DELAY = 0.5  # after publishers resume, before the rate window opens


@dataclass
class Settings:
    publishers: int
    receivers: int
    steps: tuple[int, ...]
    window: float
    settle: float
    raw_seconds: float
    deadline: float  # seconds after start: no new step begins after it
    simulcast: bool = False


@dataclass
class Step:
    """One measured window at a number of consumers."""

    consumers: int
    subscribers: int
    window_s: float
    output_pps: float
    input_pps: float
    server_cpu: float  # fraction of one core
    receivers_cpu: float
    driver_cpu: float
    machine_busy: float  # all CPUs together, 1.0 = every core busy
    egress_loss: float
    ingress_loss: float
    # Of the packets published during the rate window, the share the server had not read by its end: a server
    # that falls behind builds a backlog in its socket buffer before it loses anything.
    ingress_deficit: float
    kernel_drops: int
    server_socket_drops: int
    rss_kb: int
    failed_subscribers: int = 0
    errors: list[str] = field(default_factory=list)
    consumers_by_worker: dict[int, int] = field(default_factory=dict)
    cpu_by_process: list[float] = field(default_factory=list)
    cpu_us_per_packet: float | None = None
    net_cpu_us_per_packet: float | None = None
    pps_per_cpu_s: float | None = None
    rss_kb_per_consumer: float | None = None

    @property
    def passed(self) -> bool:
        return (
            self.failed_subscribers == 0
            and self.egress_loss < LOSS_LIMIT
            and self.ingress_loss < LOSS_LIMIT
            and self.ingress_deficit < LOSS_LIMIT
        )


# -- /proc -------------------------------------------------------------------------------------------------
def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_busy() -> tuple[float, float]:
    """(busy, total) jiffies of all CPUs together, from /proc/stat (busy counts irq and softirq time too)."""
    with open("/proc/stat") as f:
        values = [int(v) for v in f.readline().split()[1:]]
    idle = values[3] + values[4]
    total = sum(values[:8])
    return total - idle, total


def udp_drops(ports: list[int]) -> tuple[int, int]:
    """(datagrams every UDP socket of the machine dropped for a full buffer, those of the sockets on `ports`)."""
    with open("/proc/net/snmp") as f:
        header, values = [line.split() for line in f if line.startswith("Udp:")][:2]
    total = int(values[header.index("RcvbufErrors")])
    mine = 0
    with open("/proc/net/udp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if int(fields[1].split(":")[1], 16) in ports:
                mine += int(fields[-1])
    return total, mine


# -- 1. the raw limit ----------------------------------------------------------------------------------------
def raw_limit(profile: SrtpProfile, addrs: list[tuple[str, int]], seconds: float) -> dict:
    """CPU per packet of protect + sendto, to one socket and round-robin to all of `addrs` (a fan-out).

    The sequence number is patched per packet (protect refuses a replay); sockets are drained by another
    process that never blocks on them, as the bench's receivers do.
    """
    policy = pylibsrtp.Policy(
        key=os.urandom(profile.key_length + profile.salt_length),
        ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
        srtp_profile=profile.libsrtp_profile,
    )
    protect = pylibsrtp.Session(policy).protect
    header = bytearray(12) + build_extension_block([(1, b"0")])
    struct.pack_into("!BBHII", header, 0, 0x90, 96, 0, 0, 0x1234)
    payload = os.urandom(PACKET_SIZE - len(header))
    protected = protect(bytes(header) + payload)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sendto = sock.sendto
    pack_seq = struct.Struct("!H").pack_into
    join = b"".join
    batch = 20480
    sequence = [0]

    def protect_and_send(targets: list) -> None:
        seq = sequence[0]
        for addr in targets:
            seq = (seq + 1) & 0xFFFF
            pack_seq(header, 2, seq)
            sendto(protect(join((header, payload))), addr)
        sequence[0] = seq

    def protect_only(targets: list) -> None:
        seq = sequence[0]
        for _ in targets:
            seq = (seq + 1) & 0xFFFF
            pack_seq(header, 2, seq)
            protect(join((header, payload)))
        sequence[0] = seq

    def send_only(targets: list) -> None:
        for addr in targets:
            sendto(protected, addr)

    def timed(body, targets: list) -> float:
        count, started = 0, cpu_seconds()
        while True:
            body(targets)
            count += len(targets)
            used = cpu_seconds() - started
            if used >= seconds:
                return used * 1e6 / count

    one = [addrs[0]] * batch
    fanout = [addrs[i % len(addrs)] for i in range(batch)]
    try:
        loop_us = timed(protect_and_send, one)
        fanout_us = timed(protect_and_send, fanout)
        protect_us = timed(protect_only, one)
        send_us = timed(send_only, one)
        fanout_send_us = timed(send_only, fanout)
    finally:
        sock.close()
    return {
        "profile": profile.name,
        "packet_bytes": len(protected),
        "us_per_packet": round(loop_us, 3),
        "pps_per_cpu_s": round(1e6 / loop_us),
        "fanout_sockets": len(addrs),
        "fanout_us_per_packet": round(fanout_us, 3),
        "fanout_pps_per_cpu_s": round(1e6 / fanout_us),
        "protect_us": round(protect_us, 3),
        "sendto_us": round(send_us, 3),
        "fanout_sendto_us": round(fanout_send_us, 3),
    }


# -- processes ------------------------------------------------------------------------------------------------
class Receiver:
    """A forwarding_receiver.py process driven over its stdin/stdout."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls) -> Receiver:
        process = await asyncio.create_subprocess_exec(
            sys.executable, str(HERE / "forwarding_receiver.py"),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, limit=1 << 20,
        )
        return cls(process)

    async def call(self, op: str, timeout: float = 120.0, **params) -> dict:
        assert self.process.stdin is not None and self.process.stdout is not None
        async with self._lock:
            self.process.stdin.write((json.dumps({"op": op, **params}) + "\n").encode())
            await self.process.stdin.drain()
            line = await asyncio.wait_for(self.process.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"receiver process {self.process.pid} exited")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"receiver process {self.process.pid}: {reply['error']}")
        return reply

    async def stop(self) -> None:
        if self.process.returncode is None:
            try:
                await self.call("quit", timeout=20)
                await asyncio.wait_for(self.process.wait(), 10)
            except (OSError, RuntimeError, asyncio.TimeoutError, ConnectionError):
                self.process.kill()
                await self.process.wait()


class Server:
    """`sfuctl serve --workers 1` in its own process: one worker, so its pid is the forwarding process. With
    more workers, the front's process and its workers' together."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url
        self.lines: list[str] = []
        self._reader = asyncio.create_task(self._read_stderr())

    @classmethod
    async def start(cls, workers: int = 1, spill: int = 0) -> Server:
        env = dict(os.environ, COLUMNS="300", NO_COLOR="1", TERM="dumb")
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sfuctl.cli", "serve", "--workers", str(workers), "--port", "0",
            "--rtc-port-range", "0", "--log-level", "warning", "--room-spill-consumers", str(spill),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        assert process.stderr is not None
        seen = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = (await asyncio.wait_for(process.stderr.readline(), 30)).decode(errors="replace")
            if not line:
                break
            seen.append(line)
            match = re.search(r"ws://[0-9A-Za-z.\-\[\]:]+", line)
            if match:
                return cls(process, match.group(0))
        process.kill()
        raise RuntimeError("the server printed no URL:\n" + "".join(seen))

    @property
    def pid(self) -> int:
        return self.process.pid

    def pids(self) -> list[int]:
        """The server's process and its children (the workers of a multi-worker server)."""
        try:
            with open(f"/proc/{self.pid}/task/{self.pid}/children") as f:
                return [self.pid, *(int(child) for child in f.read().split())]
        except OSError:
            return [self.pid]

    def cpu_seconds(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    async def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        while line := await self.process.stderr.readline():
            self.lines = (self.lines + [line.decode(errors="replace")])[-20:]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.terminate()
            try:
                await asyncio.wait_for(self.process.wait(), 20)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
        self._reader.cancel()


# -- 2. the ramp ----------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, settings: Settings, log, workers: int = 1, spill: int = 0) -> None:
        self.settings = settings
        self.log = log
        self.workers = workers
        self.spill = spill
        self.server: Server | None = None
        self.receivers: list[Receiver] = []
        self.publishers: list[LeanPublisher] = []
        self.monitor: SignalingClient | None = None
        self.producers: list[dict] = []
        self.rtc_ports: list[int] = []
        self.subscribers = 0
        self.consumers = 0
        self._next_producer = 0
        self._next_receiver = 0

    async def stats(self) -> dict:
        assert self.monitor is not None
        return await self.monitor.request("getStats", timeout=60)

    async def start(self) -> None:
        self.server = await Server.start(self.workers, self.spill)
        self.log(f"server pid {self.server.pid} at {self.server.url}")
        files = ensure_default_media()
        assert files.video is not None and files.audio is not None
        tracks = [load_track(files.video, "video"), load_track(files.audio, "audio")]
        layers = []
        if self.settings.simulcast:
            layers = [load_track(path, "video") for path in ensure_simulcast_media().videos]
        for index in range(self.settings.publishers):
            publisher = LeanPublisher(self.server.url, ROOM, f"pub{index}", tracks, layers)
            self.publishers.append(publisher)
            self.producers += await publisher.start()
        # video and audio alternate, so a subscriber with fewer than all producers still gets both kinds
        self.producers.sort(key=lambda p: (p["peerId"], p["mid"]))
        ws = await websockets.connect(self.server.url, max_size=None, open_timeout=10)
        self.monitor = SignalingClient(ws)
        server = (await self.stats())["server"]
        self.rtc_ports = [w["rtc_port"] for w in server.get("workers", [])] or [server["rtc_port"]]

    async def add_consumers(self, target: int) -> tuple[int, list[str]]:
        """New subscribers until there are `target` consumers; each takes up to every producer once."""
        per = len(self.producers)
        plans: list[list[list[dict]]] = [[] for _ in self.receivers]
        while self.consumers < target:
            take = min(per, target - self.consumers)
            chosen = [self.producers[(self._next_producer + i) % per] for i in range(take)]
            self._next_producer = (self._next_producer + take) % per
            plans[self._next_receiver].append([{"id": p["id"], "kind": p["kind"]} for p in chosen])
            self._next_receiver = (self._next_receiver + 1) % len(self.receivers)
            self.consumers += take
            self.subscribers += 1
        replies = await asyncio.gather(
            *(r.call("add", url=self.server.url, room=ROOM, subscribers=plan, timeout=300)
              for r, plan in zip(self.receivers, plans) if plan)
        )
        failed = sum(r["failed"] for r in replies)
        return failed, [e for r in replies for e in r["errors"]]

    async def stats_with_published(self) -> tuple[dict, float]:
        """Server stats and the packets published by then (the mean of before and after the request)."""
        before = sum(p.packets for p in self.publishers)
        stats = await self.stats()
        return stats, (before + sum(p.packets for p in self.publishers)) / 2

    async def quiet_snapshot(self) -> tuple[dict, list[dict], int]:
        """Exact counters: publishers pause, the path drains, then server stats, receiver counts, packets sent."""
        for publisher in self.publishers:
            publisher.pause()
        try:
            previous = None
            for _ in range(int(QUIET_MAX / QUIET_POLL)):
                await asyncio.sleep(QUIET_POLL)
                counts = await asyncio.gather(*(r.call("count") for r in self.receivers))
                total = sum(c["packets"] for c in counts)
                if total == previous:
                    break
                previous = total
            stats = await self.stats()
            counts = await asyncio.gather(*(r.call("count") for r in self.receivers))
            return stats, list(counts), sum(p.packets for p in self.publishers)
        finally:
            for publisher in self.publishers:
                publisher.resume()

    async def measure(self, consumers: int, failed: int, errors: list[str]) -> Step:
        """Loss between two quiet snapshots; rates and CPU over a steady window between them."""
        assert self.server is not None
        server = self.server
        d0 = udp_drops(self.rtc_ports)
        s0, r0, p0 = await self.quiet_snapshot()
        await asyncio.sleep(RESTART_DELAY)
        x0, published0 = await self.stats_with_published()
        pids = server.pids()
        per0 = [cpu_seconds(pid) for pid in pids]
        c0, t0, m0, me0 = server.cpu_seconds(), time.monotonic(), machine_busy(), cpu_seconds()
        rx0 = await asyncio.gather(*(r.call("count") for r in self.receivers))
        self.log(f"{consumers} consumers: rate window of {self.settings.window:g} s")
        await asyncio.sleep(self.settings.window)
        rx1 = await asyncio.gather(*(r.call("count") for r in self.receivers))
        c1, t1, m1, me1 = server.cpu_seconds(), time.monotonic(), machine_busy(), cpu_seconds()
        per1 = [cpu_seconds(pid) for pid in pids]
        x1, published1 = await self.stats_with_published()
        s1, r1, p1 = await self.quiet_snapshot()
        d1 = udp_drops(self.rtc_ports)
        elapsed, elapsed_server = t1 - t0, x1["time"] - x0["time"]
        sent_out = _consumer_packets(s1) - _consumer_packets(s0)
        received_in = _producer_packets(s1) - _producer_packets(s0)
        counted = sum(b["packets"] for b in r1) - sum(a["packets"] for a in r0)
        published = p1 - p0
        read = _producer_packets(x1) - _producer_packets(x0)
        return Step(
            consumers=consumers,
            subscribers=self.subscribers,
            window_s=round(elapsed, 2),
            output_pps=(_consumer_packets(x1) - _consumer_packets(x0)) / elapsed_server,
            input_pps=(_producer_packets(x1) - _producer_packets(x0)) / elapsed_server,
            server_cpu=(c1 - c0) / elapsed,
            receivers_cpu=sum(b["cpu_s"] - a["cpu_s"] for a, b in zip(rx0, rx1)) / elapsed,
            driver_cpu=(me1 - me0) / elapsed,
            machine_busy=(m1[0] - m0[0]) / (m1[1] - m0[1]),
            egress_loss=1 - counted / sent_out if sent_out else 0.0,
            ingress_loss=1 - received_in / published if published else 0.0,
            ingress_deficit=1 - read / (published1 - published0) if published1 > published0 else 0.0,
            kernel_drops=d1[0] - d0[0],
            server_socket_drops=d1[1] - d0[1],
            rss_kb=sum(rss_kb(pid) for pid in server.pids()),
            consumers_by_worker=_consumers_by_worker(s1),
            # the server's processes: alone, the worker; with more workers, the front then worker 0, 1, ...
            cpu_by_process=[round((b - a) / elapsed, 5) for a, b in zip(per0, per1)],
            failed_subscribers=failed,
            errors=errors,
        )

    def check_server(self) -> None:
        assert self.server is not None
        if self.server.process.returncode is not None:
            raise RuntimeError(f"the server exited ({self.server.process.returncode}):\n" + "".join(self.server.lines))

    async def close(self) -> None:
        if self.monitor is not None:
            await self.monitor.close()
        await asyncio.gather(*(r.stop() for r in self.receivers), return_exceptions=True)
        for publisher in self.publishers:
            await publisher.close()
        if self.server is not None:
            await self.server.stop()


def _consumer_packets(snapshot: dict) -> int:
    return sum(c["packets"] for room in snapshot["rooms"] for c in room["consumers"])


def _consumers_by_worker(snapshot: dict) -> dict[int, int]:
    """Consumers per worker of their peer (one entry with one worker)."""
    workers = {p["id"]: p["worker"] for room in snapshot["rooms"] for p in room["peers"]}
    counts: dict[int, int] = {}
    for room in snapshot["rooms"]:
        for c in room["consumers"]:
            counts[workers[c["peer"]]] = counts.get(workers[c["peer"]], 0) + 1
    return counts


def _producer_packets(snapshot: dict) -> int:
    return sum(p["packets"] for room in snapshot["rooms"] for p in room["producers"])


# -- 3. the report --------------------------------------------------------------------------------------------
def derive(steps: list[Step], baseline: Step) -> None:
    """Fill each step's per-packet figures; `baseline` is the step without consumers (ingress only)."""
    for step in steps:
        if step.output_pps <= 0:
            continue
        step.cpu_us_per_packet = step.server_cpu * 1e6 / step.output_pps
        step.net_cpu_us_per_packet = (step.server_cpu - baseline.server_cpu) * 1e6 / step.output_pps
        step.pps_per_cpu_s = step.output_pps / step.server_cpu if step.server_cpu > 0 else None
        step.rss_kb_per_consumer = (step.rss_kb - baseline.rss_kb) / step.consumers


def summary(raw: dict, baseline: Step, steps: list[Step], settings: Settings, started: float) -> dict:
    passed = []
    for step in steps:
        if not step.passed:
            break
        passed.append(step)
    best = passed[-1] if passed else None
    at = {s.consumers: s for s in steps}
    reported = {n: at[n] for n in REPORTED_AT if n in at and at[n].cpu_us_per_packet is not None}
    gross = [s.cpu_us_per_packet for s in reported.values()]
    net = [s.net_cpu_us_per_packet for s in reported.values()]
    pps = best.pps_per_cpu_s if best is not None else None
    top = max(passed, key=lambda s: s.pps_per_cpu_s or 0, default=None)
    return {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": sys.version.split()[0],
            "loop": _loop_name(),
            "cpu_model": _cpu_model(),
        },
        "settings": {k: v for k, v in asdict(settings).items() if k != "deadline"},
        "raw": raw,
        "baseline_server_cpu": round(baseline.server_cpu, 4),
        "baseline_input_pps": round(baseline.input_pps, 1),
        "max_consumers_under_1pct_loss": best.consumers if best is not None else 0,
        "limit_found": len(passed) < len(steps),
        "first_failing_step": _describe_failure(steps[len(passed)]) if len(passed) < len(steps) else None,
        "output_pps_per_cpu_s": round(pps) if pps else None,
        "ratio_to_raw": round(pps / raw["pps_per_cpu_s"], 3) if pps else None,
        "ratio_to_raw_fanout": round(pps / raw["fanout_pps_per_cpu_s"], 3) if pps else None,
        "at_consumers": best.consumers if best is not None else None,
        "best_pps_per_cpu_s": round(top.pps_per_cpu_s) if top and top.pps_per_cpu_s else None,
        "best_at_consumers": top.consumers if top is not None else None,
        "output_pps": round(best.output_pps) if best is not None else None,
        "rss_kb_per_consumer": round(best.rss_kb_per_consumer, 1) if best and best.rss_kb_per_consumer else None,
        "cpu_us_per_packet": {n: round(s.cpu_us_per_packet, 2) for n, s in reported.items()},
        "net_cpu_us_per_packet": {n: round(s.net_cpu_us_per_packet, 2) for n, s in reported.items()},
        "cpu_per_packet_spread": round(max(gross) / min(gross) - 1, 3) if gross else None,
        "net_cpu_per_packet_spread": round(max(net) / min(net) - 1, 3) if net and min(net) > 0 else None,
        "steps": [_step_dict(s) for s in [baseline, *steps]],
        "duration_s": round(time.monotonic() - started, 1),
    }


def _describe_failure(step: Step) -> str:
    reasons = []
    if step.failed_subscribers:
        reasons.append(f"{step.failed_subscribers} subscribers failed to connect ({'; '.join(step.errors[:2])})")
    if step.egress_loss >= LOSS_LIMIT:
        reasons.append(f"egress loss {step.egress_loss:.2%}")
    if step.ingress_loss >= LOSS_LIMIT:
        reasons.append(f"ingress loss {step.ingress_loss:.2%}")
    if step.ingress_deficit >= LOSS_LIMIT:
        reasons.append(f"the server fell behind: {step.ingress_deficit:.2%} of the window's input still unread")
    return f"{step.consumers} consumers: " + ", ".join(reasons)


FRACTIONS = {"server_cpu", "receivers_cpu", "driver_cpu", "machine_busy", "egress_loss", "ingress_loss", "ingress_deficit"}


def _step_dict(step: Step) -> dict:
    out = asdict(step)
    for key, value in out.items():
        if isinstance(value, float):
            out[key] = round(value, 5 if key in FRACTIONS else 2)
    out["passed"] = step.passed
    return out


def _loop_name() -> str:
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    return f"uvloop {uvloop.__version__}"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def render(result: dict) -> str:
    raw = result["raw"]
    lines = [
        f"sfuctl forwarding bench {result['date']} · {result['machine']['cpus']} CPUs ({result['machine']['cpu_model']})"
        f" · CPython {result['machine']['python']} · {result['machine']['loop']} · {result['duration_s']} s",
        f"raw limit ({raw['profile']}, {raw['packet_bytes']} B): {raw['us_per_packet']} µs/packet = "
        f"{raw['pps_per_cpu_s']:,} packets per CPU-second (protect {raw['protect_us']} µs, sendto {raw['sendto_us']} µs);"
        f" round-robin to {raw['fanout_sockets']} sockets {raw['fanout_us_per_packet']} µs = "
        f"{raw['fanout_pps_per_cpu_s']:,} (sendto {raw['fanout_sendto_us']} µs)",
        f"ingress only (step 0): {result['baseline_input_pps']} pps in, server {result['baseline_server_cpu']:.2%} CPU",
        "",
        f"{'consumers':>9} {'subs':>5} {'out pps':>8} {'server':>7} {'µs/pkt':>7} {'net µs':>7} {'pps/CPU-s':>9} "
        f"{'egress':>7} {'ingress':>7} {'unread':>7} {'drops':>6} {'KB/cons':>7} {'rx CPU':>6} {'drv CPU':>7} {'busy':>5}",
    ]
    for s in result["steps"]:
        def num(value, fmt):
            return format(value, fmt) if value is not None else "-"
        lines.append(
            f"{s['consumers']:>9} {s['subscribers']:>5} {s['output_pps']:>8.0f} {s['server_cpu']:>7.1%} "
            f"{num(s['cpu_us_per_packet'], '>7.2f')} {num(s['net_cpu_us_per_packet'], '>7.2f')} "
            f"{num(s['pps_per_cpu_s'], '>9,.0f')} {s['egress_loss']:>7.2%} {s['ingress_loss']:>7.2%} "
            f"{s['ingress_deficit']:>7.2%} "
            f"{s['kernel_drops']:>6} {num(s['rss_kb_per_consumer'], '>7.1f')} {s['receivers_cpu']:>6.1%} "
            f"{s['driver_cpu']:>7.1%} {s['machine_busy']:>5.0%}" + ("" if s["passed"] else "  <- over 1% loss")
        )
    lines += [
        "",
        f"max consumers per worker at < 1% loss: {result['max_consumers_under_1pct_loss']}"
        + ("" if result["limit_found"] else " (every step passed: a lower bound)"),
    ]
    if result["first_failing_step"]:
        lines.append(f"first failing step: {result['first_failing_step']}")
    if result["output_pps_per_cpu_s"]:
        lines.append(
            f"output packets per server CPU-second at {result['at_consumers']} consumers: "
            f"{result['output_pps_per_cpu_s']:,} = {result['ratio_to_raw']:.0%} of the raw limit "
            f"({result['ratio_to_raw_fanout']:.0%} of its fan-out variant); best step: "
            f"{result['best_pps_per_cpu_s']:,} at {result['best_at_consumers']} consumers"
        )
    lines.append(f"server RSS per consumer: {result['rss_kb_per_consumer']} KB")
    lines.append(
        "server CPU µs per forwarded packet: "
        + ", ".join(f"{n}: {v} (net {result['net_cpu_us_per_packet'][n]})" for n, v in result["cpu_us_per_packet"].items())
    )
    return "\n".join(lines)


async def main(settings: Settings) -> dict:
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    bench = Bench(settings, log)
    try:
        bench.receivers = [await Receiver.start() for _ in range(settings.receivers)]
        drain = await bench.receivers[0].call("drain", count=RAW_FANOUT)
        profile = SRTP_PROFILES[0]  # what two sfuctl ends negotiate: the server's first choice
        log(f"raw limit: {profile.name} protect + sendto, {settings.raw_seconds:g} CPU-s per loop")
        raw = raw_limit(profile, [("127.0.0.1", port) for port in drain["ports"]], settings.raw_seconds)
        await bench.start()
        await asyncio.sleep(settings.settle)
        log(f"{len(bench.publishers)} publishers, {len(bench.producers)} producers; step 0 (no consumers)")
        baseline = await bench.measure(0, 0, [])
        steps: list[Step] = []
        for target in settings.steps:
            if time.monotonic() - started > settings.deadline:
                log(f"time budget spent: stopping before {target} consumers")
                break
            bench.check_server()
            failed, errors = await bench.add_consumers(target)
            await asyncio.sleep(settings.settle)
            step = await bench.measure(target, failed, errors)
            steps.append(step)
            log(
                f"{target} consumers: {step.output_pps:.0f} pps out, server {step.server_cpu:.1%} CPU, "
                f"egress loss {step.egress_loss:.2%}, ingress loss {step.ingress_loss:.2%}, "
                f"unread {step.ingress_deficit:.2%}"
                + (f", {failed} subscribers failed" if failed else "")
            )
            if not step.passed:
                break
        derive(steps, baseline)
        baseline.rss_kb_per_consumer = None
        return summary(raw, baseline, steps, settings, started)
    finally:
        await bench.close()


async def room_workers(settings: Settings, workers: int) -> dict:
    """Per step, the room on one worker and spread over `workers`, alternated: CPU per output packet of each."""
    started = time.monotonic()

    def log(message: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {message}", file=sys.stderr, flush=True)

    async def one(consumers: int, count: int) -> Step:
        # The room spills past 1/count of the step's consumers: each worker gets about as many.
        bench = Bench(settings, log, count, spill=-(-consumers // count) if count > 1 else 0)
        try:
            bench.receivers = [await Receiver.start() for _ in range(settings.receivers)]
            await bench.start()
            await asyncio.sleep(settings.settle)
            # In two halves: the front places a joining subscriber by the consumers its home has, so the second
            # half joins once the first half's consumers are there (and each half's subscribers join at once).
            failed, errors = await bench.add_consumers(bench.spill or consumers)
            more_failed, more_errors = await bench.add_consumers(consumers)
            await asyncio.sleep(settings.settle)
            step = await bench.measure(consumers, failed + more_failed, errors + more_errors)
        finally:
            await bench.close()
        step.cpu_us_per_packet = step.server_cpu * 1e6 / step.output_pps if step.output_pps > 0 else None
        log(f"{consumers} consumers on {count} worker(s) {step.consumers_by_worker}: {step.output_pps:.0f} pps out, "
            f"server {step.server_cpu:.1%} CPU, {step.cpu_us_per_packet or 0:.2f} µs per packet")
        return step

    rows = []
    for index, consumers in enumerate(settings.steps):
        if time.monotonic() - started > settings.deadline:
            log(f"time budget spent: stopping before {consumers} consumers")
            break
        order = (1, workers) if index % 2 == 0 else (workers, 1)
        steps = {count: await one(consumers, count) for count in order}
        single, spread = steps[1], steps[workers]
        ratio = spread.cpu_us_per_packet / single.cpu_us_per_packet if spread.cpu_us_per_packet and single.cpu_us_per_packet else None
        rows.append({"consumers": consumers, "one_worker": _step_dict(single), "spread": _step_dict(spread),
                     "cpu_ratio": round(ratio, 3) if ratio else None})
    return {"date": time.strftime("%Y-%m-%d"), "workers": workers, "cpus": os.cpu_count(),
            "steps": rows, "duration_s": round(time.monotonic() - started, 1)}


def render_room_workers(result: dict) -> str:
    lines = [
        f"one room on 1 worker and spread over {result['workers']} · {result['cpus']} CPUs · {result['duration_s']} s",
        f"{'consumers':>9} {'workers':>7} {'by worker':>18} {'out pps':>8} {'server':>7} {'µs/pkt':>7} "
        f"{'egress':>7} {'unread':>7} {'busy':>5} {'ratio':>6}  CPU by process (front, workers)",
    ]
    for row in result["steps"]:
        for count, s in ((1, row["one_worker"]), (result["workers"], row["spread"])):
            by = "/".join(str(s["consumers_by_worker"].get(w, s["consumers_by_worker"].get(str(w), 0))) for w in range(count))
            ratio = f"{row['cpu_ratio']:.3f}" if count > 1 and row["cpu_ratio"] else ""
            lines.append(
                f"{row['consumers']:>9} {count:>7} {by:>18} {s['output_pps']:>8.0f} {s['server_cpu']:>7.1%} "
                f"{s['cpu_us_per_packet'] or 0:>7.2f} {s['egress_loss']:>7.2%} {s['ingress_deficit']:>7.2%} "
                f"{s['machine_busy']:>5.0%} {ratio:>6}  " + " ".join(f"{c:.1%}" for c in s["cpu_by_process"])
                + ("" if s["passed"] else "  <- over 1% loss")
            )
    return "\n".join(lines)


def cli() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    parser.add_argument("--quick", action="store_true", help="a short smoke run (< 60 s): steps 10, 100, 500")
    parser.add_argument("--publishers", type=int, default=4, help="publishers (VP8 + Opus each)")
    parser.add_argument("--receivers", type=int, default=2, help="receiver processes")
    parser.add_argument("--steps", default=None, help="comma-separated consumer counts to ramp through")
    parser.add_argument("--window", type=float, default=None, help="seconds of each step's rate window")
    parser.add_argument("--simulcast", action="store_true", help="publish video as 3 simulcast encodings")
    parser.add_argument("--room-workers", type=int, default=1, help="compare the room on 1 worker with it spread over N")
    args = parser.parse_args()
    if args.quick:
        settings = Settings(args.publishers, args.receivers, QUICK_STEPS, window=3.0, settle=1.5, raw_seconds=0.5, deadline=45)
    else:
        settings = Settings(args.publishers, args.receivers, STEPS, window=6.0, settle=2.5, raw_seconds=1.5, deadline=240)
    if args.window:
        settings.window = args.window
    if args.steps:
        settings.steps = tuple(int(n) for n in args.steps.split(","))
    settings.simulcast = args.simulcast
    if args.room_workers > 1:
        if not args.steps:
            settings.steps = ROOM_WORKERS_QUICK_STEPS if args.quick else ROOM_WORKERS_STEPS
        result = run(room_workers(settings, args.room_workers))
        print(json.dumps(result) if args.json else render_room_workers(result))
        return
    result = run(main(settings))
    print(json.dumps(result) if args.json else render(result))


if __name__ == "__main__":
    cli()
