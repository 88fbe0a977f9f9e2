"""A receiver process for bench/forwarding.py: many subscribe connections that only count what arrives.

Each subscriber is a lean client (SignalingClient + sfuctl.client.offer + a controlling Connection on its own
non-blocking socket). A 5 ms timer drains every socket with data: SRTP datagrams are counted by their first two
bytes without being unprotected; STUN, DTLS and SRTCP go to the Connection, so ICE consent and DTLS keep working.
Nothing ever blocks on these sockets, so the server's sendto never pays for waking a receiver up (over a NIC it
would not either). The process is driven over stdin/stdout, one JSON object per line, one reply per command:

    {"op": "drain", "count": n}                       -> {"ports": [...]}  sockets that only count (raw limit)
    {"op": "add", "url": U, "room": R, "subscribers": [[{"id": producer id, "kind": k}, ...], ...]}
                                                      -> {"connected": n, "failed": n, "errors": [...]}
    {"op": "count"}                                   -> {"packets", "bytes", "drained", "cpu_s", "connected"}
    {"op": "quit"}                                    -> {} and the process exits

    python bench/forwarding_receiver.py   (started by bench/forwarding.py)
"""

from __future__ import annotations

import asyncio
import glob
import json
import logging
import os
import select
import socket
import sys
from typing import Any

from forwarding_publisher import settle_connected

from sfuctl.client.offer import RECEIVE_CODECS, OfferSection, connection_offer, parse_answer
from sfuctl.client.signaling import SignalingClient
from sfuctl.rtc.connection import Connection
from sfuctl.rtc.dtls import DtlsCertificate
from sfuctl.runtime import run

log = logging.getLogger("forwarding_receiver")

ADD_CONCURRENCY = 16
CONNECT_TIMEOUT = 60.0
# The sockets are read by a timer, never waited on: a sender to a sleeping reader pays for its wake-up in
# sendto, which a server sending over a NIC does not. 500 datagrams/s per socket fit the buffer many times over.
DRAIN_INTERVAL = 0.005
RECEIVE_BUFFER = 1 << 20


def cpu_seconds(pid: int | str = "self") -> float:
    """CPU time of every thread of a process (ns resolution, the clock behind /proc/<pid>/stat), 0 when gone."""
    total = 0
    for path in glob.glob(f"/proc/{pid}/task/*/schedstat"):
        try:
            with open(path) as f:
                total += int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            continue
    return total / 1e9


class CountingSocket:
    """A non-blocking UDP socket drained by the process's timer: SRTP datagrams are counted by their first
    two bytes, everything else (STUN, DTLS, SRTCP) goes to the Connection as if from the server's address."""

    __slots__ = ("sock", "connection", "remote", "packets", "bytes")

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
        self.sock.setblocking(False)
        self.sock.bind(("127.0.0.1", 0))
        self.connection: Connection | None = None
        self.remote: tuple[str, int] | None = None
        self.packets = 0
        self.bytes = 0

    def send(self, data: bytes, addr: Any) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:  # a full buffer or an ICMP error: the Connection retransmits what matters
            pass

    def drain(self, buf: bytearray) -> None:
        recv_into = self.sock.recv_into
        packets = size = 0
        while True:
            try:
                n = recv_into(buf)
            except OSError:  # BlockingIOError: empty
                break
            if n > 1 and 127 < buf[0] < 192 and not 191 < buf[1] < 224:
                packets += 1
                size += n
            elif n and self.connection is not None:
                self.connection.datagram_received(bytes(buf[:n]), self.remote)
        self.packets += packets
        self.bytes += size

    def close(self) -> None:
        self.sock.close()


def _ignore(data: bytes) -> None:
    """RTP and RTCP after unprotect: nothing to do (RTP never gets there, it is counted at the socket)."""


class CountingSubscriber:
    """Joins the room, subscribes to the given producers with one recvonly m-line each, and counts."""

    def __init__(self, url: str, room: str, name: str, producers: list[dict], counter: CountingSocket) -> None:
        self.url = url
        self.room = room
        self.name = name
        self.producers = producers
        self.counter = counter
        self.signaling: SignalingClient | None = None
        self.connection: Connection | None = None
        self._connected: asyncio.Future[None] | None = None
        self._drain: asyncio.Task | None = None

    async def start(self) -> None:
        """Join, subscribe and wait until ICE and DTLS complete; raises when the server refuses or it times out."""
        loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self.signaling = await SignalingClient.connect(self.url)
        self._drain = asyncio.create_task(self._drain_notifications())
        await self.signaling.request("join", room=self.room, name=self.name)
        self.connection = Connection(
            role="controlling",
            certificate=DtlsCertificate.default(),
            send=self.counter.send,
            on_rtp=_ignore,
            on_rtcp=_ignore,
            on_state=self._on_state,
            connect_timeout=CONNECT_TIMEOUT,
        )
        self.connection.local_candidate = self.counter.sock.getsockname()
        self.counter.connection = self.connection
        sections = [
            OfferSection(str(index), p["kind"], "recvonly", RECEIVE_CODECS[p["kind"]])
            for index, p in enumerate(self.producers)
        ]
        offer = connection_offer(self.connection, sections, session_id=int.from_bytes(os.urandom(7), "big"))
        subscriptions = {str(index): p["id"] for index, p in enumerate(self.producers)}
        result = await self.signaling.request("subscribe", sdp=offer, subscriptions=subscriptions, timeout=60)
        if result.get("rejected"):
            raise RuntimeError(f"subscriptions rejected: {result['rejected']}")
        answer = parse_answer(result["sdp"])
        self.counter.remote = answer.candidates[0]
        self.connection.set_remote(answer.ice, answer.fingerprints, answer.dtls_role, answer.candidates)  # type: ignore[arg-type]
        await self._connected

    @property
    def connected(self) -> bool:
        return self.connection is not None and self.connection.state == "connected"

    def _on_state(self, state: str) -> None:
        settle_connected(self._connected, state, "receive transport")

    async def _drain_notifications(self) -> None:
        assert self.signaling is not None
        while True:  # peerJoined for every later subscriber: read and forget
            await self.signaling.notifications.get()

    async def close(self) -> None:
        if self._drain is not None:
            self._drain.cancel()
        if self.connection is not None:
            self.connection.close()
        self.counter.close()
        if self.signaling is not None:
            await self.signaling.close()


class ReceiverProcess:
    """The commands of one receiver process."""

    def __init__(self) -> None:
        self.subscribers: list[CountingSubscriber] = []
        self.drains: list[CountingSocket] = []
        self.index = 0
        self._epoll = select.epoll()
        self._sockets: dict[int, CountingSocket] = {}
        self._buffer = bytearray(65536)
        asyncio.get_running_loop().call_later(DRAIN_INTERVAL, self._drain_all)

    def _watch(self, counter: CountingSocket) -> None:
        self._sockets[counter.sock.fileno()] = counter
        self._epoll.register(counter.sock.fileno(), select.EPOLLIN)

    def _drain_all(self) -> None:
        """Read every socket with data (nobody blocks on this epoll, so arrivals wake no one)."""
        buf = self._buffer
        try:
            for fd, _ in self._epoll.poll(0):
                counter = self._sockets.get(fd)
                if counter is None:
                    continue
                try:
                    counter.drain(buf)
                except Exception:  # one connection's failure must not stop the counting of the others
                    log.exception("receiver socket %d", fd)
        finally:
            asyncio.get_running_loop().call_later(DRAIN_INTERVAL, self._drain_all)

    async def handle(self, command: dict) -> dict:
        op = command.get("op")
        if op == "drain":
            for _ in range(command["count"]):
                self.drains.append(CountingSocket())
                self._watch(self.drains[-1])
            return {"ports": [d.sock.getsockname()[1] for d in self.drains]}
        if op == "add":
            return await self.add(command["url"], command["room"], command["subscribers"])
        if op == "count":
            return {
                "packets": sum(s.counter.packets for s in self.subscribers),
                "bytes": sum(s.counter.bytes for s in self.subscribers),
                "drained": sum(d.packets for d in self.drains),
                "cpu_s": cpu_seconds(),
                "connected": sum(s.connected for s in self.subscribers),
            }
        if op == "quit":
            await asyncio.gather(*(s.close() for s in self.subscribers), return_exceptions=True)
            return {}
        raise ValueError(f"unknown op {op!r}")

    async def add(self, url: str, room: str, plans: list[list[dict]]) -> dict:
        semaphore = asyncio.Semaphore(ADD_CONCURRENCY)
        pid = os.getpid()

        async def start(subscriber: CountingSubscriber) -> str | None:
            async with semaphore:
                try:
                    await subscriber.start()
                except Exception as exc:  # reported back: the bench says how many failed and why
                    return f"{subscriber.name}: {type(exc).__name__}: {exc}"
                return None

        new = []
        for producers in plans:
            self.index += 1
            counter = CountingSocket()
            self._watch(counter)
            new.append(CountingSubscriber(url, room, f"rx{pid}-{self.index}", producers, counter))
        self.subscribers += new
        errors = [e for e in await asyncio.gather(*(start(s) for s in new)) if e is not None]
        return {"connected": len(new) - len(errors), "failed": len(errors), "errors": errors[:5]}


async def main() -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    process = ReceiverProcess()
    while True:
        line = await reader.readline()
        if not line:
            command = {"op": "quit"}
        else:
            command = json.loads(line)
        try:
            reply = await process.handle(command)
        except Exception as exc:  # the driver gets the reason instead of a dead pipe
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if command.get("op") == "quit":
            return


if __name__ == "__main__":
    run(main())
