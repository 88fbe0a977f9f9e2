"""ICE-TCP on a worker's media port: RFC 6544 passive host candidate, RFC 4571 framing.

Each accepted connection is one remote address (`TcpAddress`); its frames go through the worker's demultiplexer
exactly as UDP datagrams do, so the transports never know which they are on. Writes never block the loop: past
framing.WRITE_BUFFER_MAX queued bytes a packet is dropped and counted, as the network would drop a datagram.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable
from typing import Any

from ..rtc.framing import FramedStream
from .listening import DUAL_STACK_HOST, dual_stack_socket

# A new connection must send a STUN binding request that checks with a transport's credentials as its first
# frame; one that has sent no complete frame after this long is closed (a half-open or idle connection). So is
# one that has been no transport's path (nor the path it checks) for this long: a pair the client checked but did
# not choose, or a path left behind (ICE restart, another pair chosen).
INTRODUCTION_TIMEOUT = 5.0
# Connections per worker that have not introduced themselves yet; more are closed at once.
PENDING_MAX = 256
# SO_SNDBUF of each connection (Linux doubles it): the kernel's share of a slow reader's backlog stays bounded
# too, instead of autotuning up to net.ipv4.tcp_wmem's maximum. 20 Mbit/s at 100 ms round trip.
SEND_BUFFER = 256 * 1024


class TcpAddress(tuple):
    """A remote address reached over TCP: (ip, port, "tcp"). Never equal to a UDP address, so one map of
    addresses serves both; `[0]` and `[1]` read as for a UDP address."""

    __slots__ = ()

    def __new__(cls, host: str, port: int) -> TcpAddress:
        return tuple.__new__(cls, (host, port, "tcp"))


class TcpStream(FramedStream):
    """One accepted ICE-TCP connection: its first frame must be a valid check, then every frame goes to the
    worker as a datagram from its address."""

    def __init__(self, streams: TcpStreams) -> None:
        super().__init__()
        self._streams = streams
        self.address: TcpAddress | None = None
        self.introduced = False
        self.received_at = time.monotonic()
        self.used_at = self.received_at  # the last sweep that found it a transport's path

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        if peer is None or not self._streams.admit():
            transport.close()
            return
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self.address = TcpAddress(peer[0], peer[1])
        self._streams.add(self)

    def packet_received(self, packet: bytes) -> None:
        address = self.address
        if address is None:
            return
        self.received_at = time.monotonic()
        if self.introduced:
            self._streams.receive(packet, address)
        elif self._streams.introduce(packet, address):
            self.introduced = True
            self._streams.introduced()
        else:
            self._streams.refused += 1
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._streams.remove(self)


class TcpStreams:
    """A worker's ICE-TCP listener and its connections by address."""

    def __init__(
        self,
        receive: Callable[[bytes, Any], None],
        introduce: Callable[[bytes, Any], bool],
        in_use: Callable[[Any], bool],
    ) -> None:
        """`receive(packet, address)` takes every frame of an introduced connection; `introduce(packet, address)`
        takes a connection's first frame and says whether a transport accepted it; `in_use(address)` says whether
        a connection is a transport's path or the one it checks."""
        self.receive = receive
        self.introduce = introduce
        self.in_use = in_use
        self.by_address: dict[TcpAddress, TcpStream] = {}
        self.dropped = 0  # packets dropped on connections since closed
        self.refused = 0  # connections closed before introducing themselves
        self._pending = 0
        self._server: asyncio.Server | None = None

    async def listen(self, host: str, port: int) -> int:
        """Listen on `host`:`port` (0: any free port); the port bound. OSError when taken."""
        loop = asyncio.get_running_loop()
        if host == DUAL_STACK_HOST:
            self._server = await loop.create_server(lambda: TcpStream(self), sock=dual_stack_socket(port))
        else:
            self._server = await loop.create_server(lambda: TcpStream(self), host, port, reuse_address=True)
        return self._server.sockets[0].getsockname()[1]

    def admit(self) -> bool:
        if self._pending >= PENDING_MAX:
            self.refused += 1
            return False
        return True

    def add(self, stream: TcpStream) -> None:
        assert stream.address is not None
        self._pending += 1
        self.by_address[stream.address] = stream

    def remove(self, stream: TcpStream) -> None:
        if stream.address is None or self.by_address.get(stream.address) is not stream:
            return
        del self.by_address[stream.address]
        if not stream.introduced:
            self._pending -= 1
        self.dropped += stream.dropped

    def introduced(self) -> None:
        self._pending -= 1

    def send(self, data: bytes, address: TcpAddress) -> None:
        stream = self.by_address.get(address)
        if stream is not None:
            stream.send(data)

    def close_address(self, address: Any) -> None:
        """Close the connection of `address` (a transport that used it closed)."""
        stream = self.by_address.get(address)
        if stream is not None:
            stream.close()

    def sweep(self, now: float, idle_timeout: float) -> None:
        """Close connections that never introduced themselves within INTRODUCTION_TIMEOUT, introduced ones silent
        for `idle_timeout` (consent is long gone: their transport has failed), and those no transport has used as
        its path for INTRODUCTION_TIMEOUT."""
        for address, stream in list(self.by_address.items()):
            if not stream.introduced:
                if now - stream.received_at >= INTRODUCTION_TIMEOUT:
                    self.refused += 1
                    stream.close()
            elif self.in_use(address):
                stream.used_at = now
                if now - stream.received_at >= idle_timeout:
                    stream.close()
            elif now - stream.used_at >= INTRODUCTION_TIMEOUT:
                stream.close()

    @property
    def total_dropped(self) -> int:
        return self.dropped + sum(stream.dropped for stream in self.by_address.values())

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for stream in list(self.by_address.values()):
            stream.close()
