"""What a misbehaving client can make a server cost, measured against a real `sfuctl serve` process.

Every probe is bounded in count and time, and reports figures, never a verdict (docs/limits.md):

- nack:       one subscriber sends 40 NACKs a second for 5 s, each naming the last 1024 packets ~5 times over
              (1,188 bytes of NACK); packets retransmitted to it (and ~bytes per NACK byte), server CPU, and the
              loss of a call in another room (from the sequence numbers its subscriber received, RFC 3550 A.3).
- reflection: the same subscriber's credentials used from 127.0.0.3 (a check, then NACKs) for 5 s; bytes that
              address received per byte it sent.
- flood:      5,000 join/leave pairs on one websocket as fast as the server answers: how many were served.
- room:       300 peers join one room: notification frames the members received, and the time it took.
- whip:       one WHIP POST with 5,000 m-lines: HTTP status and how long the server took to answer.
- queue:      a client that never reads sends requests whose error replies are 100 KB each for 5 s: server RSS
              growth and whether it was disconnected.
- stats:      100 clients subscribe to stats every 0.1 s for 5 s against `--workers 2`: CPU of the server's
              processes (front + workers).
- sigterm:    7 x (a call, then SIGTERM): seconds to exit.
- soak:       1,000 join/publish/leave cycles beside a running call, a third each left cleanly (`leave`), by a
              dropped websocket (no close frame, no DTLS close_notify) and by a SIGKILLed process (10 peers a
              process): the server's open fds, asyncio tasks and RSS after the first round and after the last.

    python bench/abuse.py [--server-dir DIR] [--only nack,reflection,...] [--cycles 1000] [--json]

`--server-dir` runs the server from another checkout (e.g. the code before a change) while the probes use this
one's client; run inside scripts/loopback (the reflection probe binds 127.0.0.3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import signal
import socket
import sys
import time
from pathlib import Path

import aiohttp
import websockets

from sfuctl.client.lean_subscriber import LeanSubscriber
from sfuctl.client.signaling import SignalingClient
from sfuctl.client.signaling import SignalingError as ClientSignalingError
from sfuctl.encoded import load_track
from sfuctl.media import ensure_default_media
from sfuctl.rtc import rtcp
from sfuctl.rtc.ice import IceParameters
from sfuctl.runtime import run

from forwarding_publisher import LeanPublisher
from forwarding_receiver import cpu_seconds

HERE = Path(__file__).resolve().parent
STORM_SECONDS = 5.0
NACKS_PER_SECOND = 40
NACK_PAIRS = 294  # 12 + 4 x 294 = 1,188 bytes: PIDs cycling over the last 1024 packets, every BLP bit set
RTP_BYTES = 1100  # about the size of a retransmitted video packet (the default media's), for the byte ratio


class Server:
    """`sfuctl serve` in its own process (from `directory`), its URL and the pids of its processes."""

    def __init__(self, process: asyncio.subprocess.Process, url: str) -> None:
        self.process = process
        self.url = url

    @classmethod
    async def start(cls, directory: Path, workers: int = 1) -> Server:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "sfuctl.cli", "serve", "--workers", str(workers), "--port", "0",
            "--rtc-port-range", "0", "--log-level", "error",
            cwd=directory, env=dict(os.environ, COLUMNS="300", NO_COLOR="1", PYTHONPATH=str(directory)),
            stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
        )
        line = (await asyncio.wait_for(process.stderr.readline(), 60)).decode()
        match = re.search(r"ws://[0-9.:]+", line)
        if match is None:
            process.kill()
            raise RuntimeError(f"the server printed no URL: {line}")
        asyncio.create_task(_drain(process.stderr))
        return cls(process, match.group(0))

    @property
    def http(self) -> str:
        return self.url.replace("ws://", "http://")

    def pids(self) -> list[int]:
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children").read_text().split()
        return [self.process.pid, *map(int, children)]

    def cpu(self) -> float:
        return sum(cpu_seconds(pid) for pid in self.pids())

    def rss_mb(self) -> float:
        total = 0
        for pid in self.pids():
            match = re.search(r"VmRSS:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text())
            total += int(match.group(1)) if match else 0
        return total / 1024

    async def stop(self) -> float:
        """SIGTERM; seconds until it exited (killed after 30 s)."""
        started = time.monotonic()
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 30)
            except asyncio.TimeoutError:
                self.process.kill()
                await self.process.wait()
        return time.monotonic() - started


async def _drain(stream: asyncio.StreamReader) -> None:
    while await stream.readline():
        pass


def tracks() -> list:
    files = ensure_default_media()
    return [load_track(files.video, "video"), load_track(files.audio, "audio")]


def storm_nack(sender_ssrc: int, media_ssrc: int, last: int) -> bytes:
    """A 1,188-byte generic NACK naming the last 1024 sequence numbers about five times."""
    body = b"".join(
        ((last - 1023 + 17 * (i % 61)) & 0xFFFF).to_bytes(2, "big") + b"\xff\xff" for i in range(NACK_PAIRS)
    )
    header = bytes([0x81, 205]) + ((len(body) + 8) // 4).to_bytes(2, "big")
    return header + sender_ssrc.to_bytes(4, "big") + media_ssrc.to_bytes(4, "big") + body


async def call(url: str, room: str) -> tuple[LeanPublisher, LeanSubscriber]:
    """A publisher and a lean subscriber of its video and audio, with media flowing."""
    publisher = LeanPublisher(url, room, f"{room}-pub", tracks())
    producers = await publisher.start()
    subscriber = LeanSubscriber(url, room, f"{room}-sub")
    await subscriber.start(producers)
    for _ in range(100):
        if subscriber.rtp_received > 50:
            break
        await asyncio.sleep(0.1)
    return publisher, subscriber


async def retransmitted(url: str, room: str) -> int:
    """Packets the server retransmitted to the consumers of `room`, so far."""
    client = await SignalingClient.connect(url)
    try:
        snapshot = await client.request("getStats", room=room)
    finally:
        await client.close()
    return sum(c["retransmitted"] for r in snapshot["rooms"] for c in r["consumers"])


class SequenceCount:
    """RTP a subscriber got and what it should have got, per SSRC from the sequence numbers (RFC 3550 A.3)."""

    def __init__(self, subscriber: LeanSubscriber) -> None:
        self.streams: dict[int, list[int]] = {}  # ssrc -> [received, first extended, highest extended]
        handler = subscriber.connection.on_rtp

        def on_rtp(data: bytes) -> None:
            self.add(int.from_bytes(data[8:12], "big"), int.from_bytes(data[2:4], "big"))
            handler(data)

        subscriber.connection.on_rtp = on_rtp

    def add(self, ssrc: int, sequence: int) -> None:
        stream = self.streams.get(ssrc)
        if stream is None:
            self.streams[ssrc] = [1, sequence, sequence]
            return
        highest = stream[2]
        extended = highest + ((sequence - highest + 0x8000) & 0xFFFF) - 0x8000
        stream[0] += 1
        stream[2] = max(highest, extended)

    def totals(self) -> tuple[int, int]:
        """(received, expected) so far."""
        return sum(s[0] for s in self.streams.values()), sum(s[2] - s[1] + 1 for s in self.streams.values())


async def probe_nack(directory: Path) -> dict:
    server = await Server.start(directory)
    try:
        pub, attacker = await call(server.url, "storm")
        calm_pub, calm_sub = await call(server.url, "calm")
        video = next(c for c in attacker.consumers if c["kind"] == "video")
        calm = SequenceCount(calm_sub)
        await asyncio.sleep(1.0)
        calm_before = calm.totals()
        resent = await retransmitted(server.url, "storm")
        cpu, started = server.cpu(), time.monotonic()
        nack_bytes = nacks = 0
        while time.monotonic() - started < STORM_SECONDS:
            nack_bytes += attacker.send_rtcp(storm_nack(1234, video["ssrc"], attacker.last_sequence[video["ssrc"]]))
            nacks += 1
            await asyncio.sleep(1 / NACKS_PER_SECOND)
        elapsed = time.monotonic() - started
        cpu = (server.cpu() - cpu) / elapsed
        resent = await retransmitted(server.url, "storm") - resent
        calm_after = calm.totals()
        calm_received, calm_sent = calm_after[0] - calm_before[0], calm_after[1] - calm_before[1]
        for peer in (attacker, calm_sub, pub, calm_pub):
            await peer.close()
        return {
            "nacks": nacks,
            "nack_bytes": nack_bytes,
            "retransmitted_packets": resent,
            "retransmitted_per_nack": round(resent / nacks, 1),
            "amplification": round(resent * RTP_BYTES / nack_bytes, 1),
            "server_cpu": round(cpu, 2),
            "other_room_loss": round(1 - calm_received / calm_sent, 4) if calm_sent else None,
        }
    finally:
        await server.stop()


async def probe_reflection(directory: Path) -> dict:
    server = await Server.start(directory)
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.3", 0))
    stranger.setblocking(False)
    try:
        pub, attacker = await call(server.url, "reflect")
        video = next(c for c in attacker.consumers if c["kind"] == "video")
        sent = received = 0
        started = time.monotonic()
        while time.monotonic() - started < STORM_SECONDS:
            check = attacker.binding_request()
            stranger.sendto(check, attacker.server_address)
            sent += len(check)
            sent += attacker.send_rtcp(storm_nack(1234, video["ssrc"], attacker.last_sequence[video["ssrc"]]), stranger)
            await asyncio.sleep(1 / NACKS_PER_SECOND)
            received += _drain_socket(stranger)
        await asyncio.sleep(1.0)
        received += _drain_socket(stranger)
        for peer in (attacker, pub):
            await peer.close()
        return {"stranger_sent": sent, "stranger_received": received, "ratio": round(received / sent, 2)}
    finally:
        stranger.close()
        await server.stop()


def _drain_socket(sock: socket.socket) -> int:
    total = 0
    while True:
        try:
            total += len(sock.recv(65536))
        except BlockingIOError:
            return total


async def probe_flood(directory: Path) -> dict:
    server = await Server.start(directory)
    try:
        async with websockets.connect(server.url, max_size=None) as ws:
            started = time.monotonic()
            for index in range(5000):
                await ws.send(json.dumps({"id": 2 * index, "method": "join", "params": {"room": "flood"}}))
                await ws.send(json.dumps({"id": 2 * index + 1, "method": "leave"}))
            ok = refused = 0
            for _ in range(10000):
                reply = json.loads(await asyncio.wait_for(ws.recv(), 30))
                ok += reply.get("ok") is True
                refused += reply.get("ok") is False
        return {"requests": 10000, "served": ok, "refused": refused, "seconds": round(time.monotonic() - started, 2)}
    finally:
        await server.stop()


async def probe_room(directory: Path, peers: int = 300) -> dict:
    server = await Server.start(directory)
    clients: list[SignalingClient] = []
    try:
        started = time.monotonic()
        for index in range(peers):
            clients.append(await SignalingClient.connect(server.url))
            await clients[-1].request("join", room="big", name=f"p{index}", timeout=60)
        joined = time.monotonic() - started
        await asyncio.sleep(1.5)
        frames = sum(c.notifications.qsize() for c in clients)
        return {"peers": peers, "notification_frames": frames, "join_seconds": round(joined, 2)}
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await server.stop()


async def probe_whip(directory: Path, tracks_count: int = 5000) -> dict:
    server = await Server.start(directory)
    ice = IceParameters.random()
    lines = [
        "v=0", "o=- 1 1 IN IP4 127.0.0.1", "s=-", "t=0 0", f"a=ice-ufrag:{ice.ufrag}", f"a=ice-pwd:{ice.pwd}",
        "a=fingerprint:sha-256 " + ":".join(["AB"] * 32), "a=setup:actpass",
    ]
    for index in range(tracks_count):  # the smallest m-lines the server takes (under aiohttp's 1 MB body limit)
        lines += [
            "m=audio 9 UDP/TLS/RTP/SAVPF 111", "c=IN IP4 127.0.0.1", f"a=mid:{index}", "a=sendonly", "a=rtcp-mux",
            "a=rtpmap:111 opus/48000/2",
        ]
    offer = "\r\n".join(lines) + "\r\n"
    try:
        async with aiohttp.ClientSession() as http:
            started = time.monotonic()
            async with http.post(f"{server.http}/whip/w", data=offer, headers={"Content-Type": "application/sdp"}) as response:
                status = response.status
                await response.read()
            seconds = time.monotonic() - started
        return {"m_lines": tracks_count, "offer_bytes": len(offer), "status": status, "seconds": round(seconds, 3)}
    finally:
        await server.stop()


async def probe_queue(directory: Path) -> dict:
    server = await Server.start(directory)
    host, port = re.match(r"ws://([^:]+):(\d+)", server.url).groups()
    sock = socket.create_connection((host, int(port)))
    try:
        sock.sendall(
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        await asyncio.sleep(0.5)
        rss = server.rss_mb()
        method = "m" * 100_000
        sent = 0
        disconnected = False
        started = time.monotonic()
        while time.monotonic() - started < STORM_SECONDS and sent < 2000:
            payload = json.dumps({"id": sent, "method": method}).encode()
            try:
                sock.sendall(b"\x81\xff" + len(payload).to_bytes(8, "big") + b"\0\0\0\0" + payload)
            except OSError:
                disconnected = True
                break
            sent += 1
            await asyncio.sleep(0.005)
        await asyncio.sleep(1.0)
        return {"requests": sent, "rss_growth_mb": round(server.rss_mb() - rss, 1), "disconnected": disconnected}
    finally:
        sock.close()
        await server.stop()


async def probe_stats(directory: Path, clients_count: int = 100) -> dict:
    server = await Server.start(directory, workers=2)
    clients: list[SignalingClient] = []
    try:
        pub, sub = await call(server.url, "watched")
        clients = [await SignalingClient.connect(server.url) for _ in range(clients_count)]
        cpu, started = server.cpu(), time.monotonic()
        refused = 0
        for client in clients:
            try:
                await client.request("subscribeStats", interval=0.1)
            except ClientSignalingError:  # over the stats-stream quota
                refused += 1
        await asyncio.sleep(STORM_SECONDS)
        elapsed = time.monotonic() - started
        cpu = (server.cpu() - cpu) / elapsed
        pushes = sum(c.notifications.qsize() for c in clients)
        for peer in (sub, pub):
            await peer.close()
        return {"clients": clients_count, "refused": refused, "pushes": pushes, "server_cpu": round(cpu, 2)}
    finally:
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
        await server.stop()


async def probe_sigterm(directory: Path, trials: int = 7) -> dict:
    seconds = []
    for _ in range(trials):
        server = await Server.start(directory)
        pub, sub = await call(server.url, "stop")
        seconds.append(round(await server.stop(), 2))
        for peer in (sub, pub):
            await peer.close()
    return {"trials": trials, "seconds": seconds, "max": max(seconds)}


SOAK_ROUND = 30  # cycles per round: 10 clean leaves, 10 dropped websockets, 10 peers of one SIGKILLed process
SOAK_SETTLE_S = 30.0  # the longest the server may take to forget a round's peers
SOAK_STABLE_S = 3.0  # the task count must hold this long to be read


async def soak_round(server: Server, room: str) -> None:
    """One round: publishers join `room` and leave, a third each way (see the module's docstring)."""
    killed = await asyncio.create_subprocess_exec(
        sys.executable, str(Path(__file__)), "--soak-child", server.url, room, str(SOAK_ROUND // 3),
        stdout=asyncio.subprocess.PIPE, stdin=asyncio.subprocess.DEVNULL,
    )
    try:
        for index in range(2 * SOAK_ROUND // 3):
            publisher = LeanPublisher(server.url, room, f"{room}-{index}", tracks())
            await publisher.start()
            if index % 2 == 0:  # a clean leave
                await publisher.signaling.request("leave")  # type: ignore[union-attr]
                await publisher.close()
            else:  # the network goes: no close frame, no close_notify
                publisher.pause()
                publisher.signaling._ws.transport.abort()  # type: ignore[union-attr]
                publisher.udp.close()  # type: ignore[union-attr]
                publisher.connection.close()  # type: ignore[union-attr]  # its timers stop; the close_notify goes nowhere
        await asyncio.wait_for(killed.stdout.readline(), 60)  # type: ignore[union-attr]  # its peers are connected
    finally:
        killed.kill()
        await killed.wait()


async def server_figures(server: Server, peers: int) -> dict:
    """Open fds, asyncio tasks and RSS of the server once it is back to `peers` peers and its task count has
    held for SOAK_STABLE_S (closing websockets' tasks end a few seconds after their peers); at most SOAK_SETTLE_S."""
    deadline = time.monotonic() + SOAK_SETTLE_S
    tasks, stable_since = -1, time.monotonic()
    while True:
        client = await SignalingClient.connect(server.url)
        try:
            snapshot = await client.request("getStats")
        finally:
            await client.close()
        now = time.monotonic()
        if snapshot["server"]["tasks"] != tasks or snapshot["server"]["peers"] > peers:
            tasks, stable_since = snapshot["server"]["tasks"], now
        if now - stable_since >= SOAK_STABLE_S or now > deadline:
            break
        await asyncio.sleep(0.5)
    fds = sum(len(os.listdir(f"/proc/{pid}/fd")) for pid in server.pids())
    return {"peers": snapshot["server"]["peers"], "fds": fds, "tasks": tasks, "rss_mb": round(server.rss_mb(), 1)}


async def probe_soak(directory: Path, cycles: int = 1000) -> dict:
    server = await Server.start(directory)
    pub, sub = await call(server.url, "steady")
    try:
        rounds = max(2, math.ceil(cycles / SOAK_ROUND))
        await soak_round(server, "soak-0")
        start = await server_figures(server, 2)
        received = sub.rtp_received
        for number in range(1, rounds):
            await soak_round(server, f"soak-{number % 5}")
            print(f"soak: {(number + 1) * SOAK_ROUND} cycles", file=sys.stderr, flush=True)
        end = await server_figures(server, 2)
        return {"cycles": rounds * SOAK_ROUND, "start": start, "end": end,
                "ratios": {key: round(end[key] / start[key], 3) for key in ("fds", "tasks", "rss_mb")},
                "steady_call_packets": sub.rtp_received - received}
    finally:
        for peer in (sub, pub):
            await peer.close()
        await server.stop()


async def soak_child(url: str, room: str, count: int) -> None:
    """`count` publishers in `room`; says so on stdout once all are connected, then waits to be killed."""
    publishers = [LeanPublisher(url, room, f"{room}-killed-{index}", tracks()) for index in range(count)]
    for publisher in publishers:
        await publisher.start()
    print("connected", flush=True)
    await asyncio.sleep(120)  # the parent kills it long before


PROBES = {
    "nack": probe_nack, "reflection": probe_reflection, "flood": probe_flood, "room": probe_room,
    "whip": probe_whip, "queue": probe_queue, "stats": probe_stats, "sigterm": probe_sigterm, "soak": probe_soak,
}


async def main(args: argparse.Namespace) -> dict:
    results = {}
    for name in args.only.split(","):
        try:
            probe = PROBES[name]
            results[name] = await (probe(args.server_dir, args.cycles) if name == "soak" else probe(args.server_dir))
        except Exception as exc:  # a probe that breaks the server is a figure too
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"{name}: {results[name]}", file=sys.stderr, flush=True)
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server-dir", type=Path, default=HERE.parent, help="checkout to run the server from")
    parser.add_argument("--only", default=",".join(PROBES), help="comma-separated probes")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--cycles", type=int, default=1000, help="join/leave cycles of the soak probe")
    parser.add_argument("--soak-child", nargs=3, metavar=("URL", "ROOM", "COUNT"), help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.soak_child:
        url, room, count = arguments.soak_child
        sys.exit(run(soak_child(url, room, int(count))))
    outcome = run(main(arguments))
    if arguments.json:
        print(json.dumps(outcome, indent=1))
