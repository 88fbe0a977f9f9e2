"""A bot transport's UDP socket: optional impairment in both directions and an RTT probe around one Connection;
with ICE-TCP its packets to the server go over a TCP connection instead (RFC 6544 active side, RFC 4571); with a
TURN server, the "socket" is a TURN allocation (aioice's TurnTransport) and every packet is relayed."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

from aioice import stun
from aioice.turn import TurnTransport, create_turn_endpoint

from sfuctl.client.turn import TurnServer
from sfuctl.rtc.connection import Connection, IceRole
from sfuctl.rtc.dtls import DtlsCertificate
from sfuctl.rtc.framing import FramedStream, connect_framed

from .impairment import Address, ImpairmentConfig, Link, LinkModel
from .stun_rtt import StunRtt

RECEIVE_BUFFER_BYTES = 1 << 20


class BotSocket(asyncio.DatagramProtocol):
    """Sits between the UDP socket and the Connection: uplink and downlink Links when impaired, STUN RTT always."""

    def __init__(
        self, impairment: ImpairmentConfig, seed: str, changes: tuple[tuple[float, ImpairmentConfig], ...] = ()
    ) -> None:
        """`changes`: (loop time, config) pairs from which on `impairment` is replaced (see LinkModel)."""
        self.connection: Connection | None = None
        self.rtt = StunRtt()
        self.impairment = impairment
        self.changes = changes
        self._seed = seed
        self._udp: asyncio.DatagramTransport | None = None
        self._loop = asyncio.get_running_loop()
        self.uplink: Link | None = None
        self.downlink: Link | None = None
        self._tcp: dict[Address, FramedStream] = {}  # ICE-TCP connections by the server candidate they reach
        self._relayed = False  # a TURN allocation rather than a socket
        self._closed = False
        self._lost = asyncio.Event()  # the socket is closed (a TURN allocation: its deletion was asked for)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._udp = transport  # type: ignore[assignment]
        self._relayed = isinstance(transport, TurnTransport)
        if not self._relayed:
            # Room for ~0.5 s of a busy receive transport while the process is descheduled (capped by rmem_max).
            transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER_BYTES)
        if self.impairment.active or any(config.active for _, config in self.changes):
            up = LinkModel(self.impairment, f"{self._seed}:up", self.changes)
            down = LinkModel(self.impairment, f"{self._seed}:down", self.changes)
            self.uplink = Link(up, self._sendto, self._loop)
            self.downlink = Link(down, self._deliver, self._loop)

    @property
    def local_address(self) -> tuple[str, int]:
        assert self._udp is not None
        host, port = self._udp.get_extra_info("sockname")[:2]
        return host, port

    def send(self, data: bytes, addr: Address) -> None:
        """The Connection's send function."""
        if data[0] < 2:
            self.rtt.on_send(data, time.monotonic())
        if self.uplink is not None:
            self.uplink.push(data, addr)
        else:
            self._sendto(data, addr)

    async def reach(self, udp: list[Address], tcp: list[Address], ice_tcp: bool) -> list[Address]:
        """The server candidates the connection checks: the UDP ones of this socket's address family, or with
        `ice_tcp` the first TCP passive one of that family, connected to first. ValueError when there is none."""
        ipv6 = ":" in self.local_address[0]
        family = "IPv6" if ipv6 else "IPv4"
        if ice_tcp:
            tcp = [c for c in tcp if (":" in c[0]) == ipv6]
            if not tcp:
                raise ValueError(f"the server offers no {family} ICE-TCP candidate (is it run with --ice-tcp?)")
            await self.connect_tcp(tcp[0])
            return tcp[:1]
        udp = [c for c in udp if (":" in c[0]) == ipv6]
        if not udp:
            raise ValueError(f"the server offers no {family} UDP candidate (with --no-ice-udp, use --ice-tcp)")
        return udp

    async def connect_tcp(self, addr: Address) -> None:
        """Reach `addr` (an ICE-TCP passive candidate) over TCP from now on."""
        self._tcp[addr] = await connect_framed(addr, lambda packet: self.datagram_received(packet, addr))

    def datagram_received(self, data: bytes, addr: Address) -> None:
        if len(addr) > 2:
            addr = addr[:2]  # IPv6 (host, port, flowinfo, scope id): compared with candidates as (host, port)
        if self.downlink is not None:
            self.downlink.push(data, addr)
        else:
            self._deliver(data, addr)

    def connection_lost(self, exc: Exception | None) -> None:
        self._lost.set()

    async def wait_closed(self) -> None:
        """Until the socket is closed after close(); on a TURN allocation, until the server was asked to delete it
        (RFC 8656 section 7), so that a bot which leaves frees its relay instead of leaving it to its lifetime."""
        await self._lost.wait()

    def error_received(self, exc: Exception) -> None:
        """ICMP errors (e.g. the server went away) are not fatal; consent freshness decides."""

    def close(self) -> None:
        self._closed = True
        for link in (self.uplink, self.downlink):
            if link is not None:
                link.close()
        if self._udp is not None:
            self._udp.close()
        for stream in self._tcp.values():
            stream.close()

    def _sendto(self, data: bytes, addr: Address) -> None:
        if self._tcp:
            stream = self._tcp.get(addr)
            if stream is not None:
                stream.send(data)
                return
        udp = self._udp
        if udp is not None and not self._closed and (self._relayed or not udp.is_closing()):
            udp.sendto(data, addr)

    def _deliver(self, data: bytes, addr: Address) -> None:
        connection = self.connection
        if connection is None or not data:
            return
        if data[0] < 2:
            self.rtt.on_receive(data, time.monotonic())
        connection.datagram_received(data, addr)


async def open_bot_socket(
    *,
    impairment: ImpairmentConfig,
    seed: str,
    changes: tuple[tuple[float, ImpairmentConfig], ...] = (),
    local_host: str = "127.0.0.1",
    turn: TurnServer | None = None,
) -> BotSocket:
    """A bot socket bound to `local_host`:0, or an allocation on `turn`, impaired as configured; its `connection`
    is set by the caller. Raises ConnectionError when the TURN server gives no allocation."""
    if turn is not None:
        try:
            _, socket = await create_turn_endpoint(
                lambda: BotSocket(impairment, seed, changes),
                server_addr=(turn.host, turn.port),
                username=turn.username,
                password=turn.credential,
                transport=turn.transport,
            )
        except stun.TransactionError as exc:  # refused (wrong credentials, quota) or no answer
            raise ConnectionError(f"the TURN server {turn.host}:{turn.port} gave no allocation: {exc}") from None
        return socket
    loop = asyncio.get_running_loop()
    _, socket = await loop.create_datagram_endpoint(
        lambda: BotSocket(impairment, seed, changes), local_addr=(local_host, 0)
    )
    return socket


async def open_bot_connection(
    *,
    certificate: DtlsCertificate,
    impairment: ImpairmentConfig,
    seed: str,
    on_rtp: Callable[[bytes], None],
    on_rtcp: Callable[[bytes], None],
    on_state: Callable[[str], None],
    connect_timeout: float = 10.0,
    local_host: str = "127.0.0.1",
    changes: tuple[tuple[float, ImpairmentConfig], ...] = (),
    role: IceRole = "controlling",
    turn: TurnServer | None = None,
) -> tuple[Connection, BotSocket]:
    """A Connection (ICE `role`: "controlling" towards a server, "lite" to answer a peer) on its own UDP
    socket bound to `local_host`:0, impaired as configured (`impairment`, then each of `changes` from its
    loop time on); relayed through `turn` when given."""
    socket = await open_bot_socket(impairment=impairment, seed=seed, changes=changes, local_host=local_host, turn=turn)
    connection = Connection(
        role=role,
        certificate=certificate,
        send=socket.send,
        on_rtp=on_rtp,
        on_rtcp=on_rtcp,
        on_state=on_state,
        connect_timeout=connect_timeout,
    )
    connection.local_candidate = socket.local_address
    socket.connection = connection
    return connection, socket
