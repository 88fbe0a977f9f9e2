"""Worker: one media port (UDP, and TCP with ICE-TCP) for every transport of the process, the rooms, and the
periodic RTCP work."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..rtc.batching import REPORT_INTERVAL, TICK_INTERVAL
from ..rtc.dtls import DtlsCertificate
from ..rtc.ice import authenticated_request, stun_username
from ..rtc.sdp import HostCandidates
from ..rtc.send_batch import SendBatch, SrtpContext
from .active_speaker import STEP as SPEECH_STEP
from .config import MediaPortsBusy, ServerConfig
from ..stats_schema import SCHEMA_VERSION
from .admission import LAG_WINDOW, LoopLag, demand_seconds, overloaded
from .quotas import Refusals, check, flag
from .stats_feed import StatsFeed
from .router import Router
from .cpu import process_cpu_percent
from .ice_tcp import TcpAddress, TcpStreams
from .transport import Transport

if TYPE_CHECKING:
    from .pipes import Pipes
    from .producer import Producer

log = logging.getLogger(__name__)

# Receive buffer asked for the media socket (Linux doubles it, capped by net.core.rmem_max): the default
# ~200 KB holds ~90 datagrams, less than a few publishers' keyframe bursts while the loop is busy fanning out.
# Not more: past the bursts, a deeper queue only turns an overload into seconds of delay.
RECEIVE_BUFFER = 1024 * 1024


def set_receive_buffer(transport: asyncio.BaseTransport, what: str) -> None:
    """Ask for RECEIVE_BUFFER on a datagram transport's socket; `what` names the socket if the kernel refuses."""
    try:
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RECEIVE_BUFFER)
    except (AttributeError, OSError) as exc:
        log.warning("%s socket keeps its default receive buffer: %s", what, exc)


class Worker(asyncio.DatagramProtocol):
    """Demultiplexes the shared UDP socket: known remote addresses first, then STUN by ICE username."""

    def __init__(self, config: ServerConfig, index: int = 0) -> None:
        self.config = config
        self.index = index  # among the workers of a multi-worker server (supervisor.py); 0 alone
        self.pipes: Pipes | None = None  # the links to the other workers, when there are others (pipes.py)
        self.certificate = DtlsCertificate.generate()
        self.routers: dict[str, Router] = {}
        self.transports: set[Transport] = set()
        self.rtc_port = 0
        self.unknown_datagrams = 0
        self.refusals = Refusals()
        self.loop_lag = LoopLag()
        self.stats_feed = StatsFeed(self._snapshot, config.quotas)
        self.started_at = time.time()
        self._by_ufrag: dict[str, Transport] = {}
        self._by_addr: dict[tuple, Transport] = {}
        self._feedback: set[Producer] = set()  # producers with NACKs or keyframe requests pending
        self._congestion: set[Transport] = set()  # transports that send transport feedback (they record arrivals)
        self._addr_of: dict[Transport, tuple] = {}  # the one address each transport is mapped from
        self._probing: dict[Transport, tuple] = {}  # the address each transport checks before moving there
        self._udp: asyncio.DatagramTransport | None = None
        self.send_batch: SendBatch | None = None
        self.tcp: TcpStreams | None = TcpStreams(self.datagram_received, self._introduce, self._in_use) if config.ice_tcp else None
        self._ticker: asyncio.Task | None = None

    async def start(self) -> None:
        """Bind the first port of the configured range free for UDP and (with ICE-TCP) TCP alike, and start the
        periodic work."""
        first, last = self.config.rtc_ports
        error: OSError | None = None
        # Port 0 picks a free UDP port whose number TCP may hold elsewhere: a few tries.
        for port in range(first, last + 1) if first else [0] * 8:
            try:
                await self._bind(port)
                break
            except OSError as exc:
                error = exc
        else:
            reason = os.strerror(error.errno) if error is not None and error.errno else error
            protocols = "/".join(p for p, on in (("UDP", self.config.ice_udp), ("TCP", self.config.ice_tcp)) if on)
            raise MediaPortsBusy(f"no free {protocols} port in {first}-{last} on {self.config.host}: {reason}")
        self._ticker = asyncio.create_task(self._run_ticks(), name="worker-ticks")

    async def _bind(self, port: int) -> None:
        """The media port on `port`: UDP unless --no-ice-udp, then TCP too with --ice-tcp (both or neither)."""
        loop = asyncio.get_running_loop()
        if self.config.ice_udp:
            await loop.create_datagram_endpoint(lambda: self, local_addr=(self.config.host, port))
        if self.tcp is not None:
            try:
                self.rtc_port = await self.tcp.listen(self.config.host, self.rtc_port or port)
            except OSError:
                if self._udp is not None:
                    self._udp.close()
                    self._udp = None
                    self.send_batch = None
                    self.rtc_port = 0
                raise

    async def close(self) -> None:
        if self.tcp is not None:
            self.tcp.close()
        for router in list(self.routers.values()):
            router.close()
        if self.pipes is not None:
            await self.pipes.close()
        if self._ticker is not None:
            self._ticker.cancel()
            await asyncio.gather(self._ticker, return_exceptions=True)
        if self._udp is not None:
            if self.send_batch is not None:
                self.send_batch.flush()
            self._udp.close()

    # -- rooms ---------------------------------------------------------------------------------------
    def router(self, name: str) -> Router:
        """The room's router, created on first use."""
        router = self.routers.get(name)
        if router is None:
            router = self.routers[name] = Router(name, self._remove_router)
            log.info("room %s created", name)
        return router

    def admit(self, room: str) -> Router:
        """The router a new peer of `room` joins: `overloaded` when the worker is saturated (admission.py),
        QuotaExceeded when the server or the room is full."""
        quotas = self.config.quotas
        lag_ms = self.loop_lag.p95() * 1000
        if quotas.loop_lag_ms and lag_ms > quotas.loop_lag_ms and self.loop_lag.busy():
            raise overloaded(f"event-loop lag p95 {lag_ms:.0f} ms over {LAG_WINDOW:g} s (sfuctl serve {flag('loop_lag_ms')})")
        self.check_consumers(0)
        router = self.routers.get(room)
        if router is None:
            check("rooms", quotas.rooms, len(self.routers) + 1, "this server has too many rooms")
            return self.router(room)
        check("peers_per_room", quotas.peers_per_room, router.peer_count + 1, f"room {room!r} is full")
        return router

    def check_consumers(self, more: int) -> None:
        """`overloaded` unless the worker may forward to `more` consumers beyond those it has (and one more)."""
        limit = self.config.quotas.consumers_per_worker
        count = sum(len(t.consumers_by_mid) for t in self.transports)
        if count + max(more, 1) > limit:
            raise overloaded(f"{count} consumers, the limit is {limit} (sfuctl serve {flag('consumers_per_worker')})")

    def _remove_router(self, router: Router) -> None:
        if self.routers.get(router.name) is router:
            del self.routers[router.name]
            log.info("room %s closed (empty)", router.name)

    # -- transports ----------------------------------------------------------------------------------
    @property
    def host_candidates(self) -> HostCandidates:
        """The ICE candidates every transport of this worker answers with."""
        return self.config.host_candidates(self.rtc_port)

    def register(self, transport: Transport) -> None:
        self.transports.add(transport)
        self._by_ufrag[transport.connection.local_ice.ufrag] = transport

    def rekey(self, transport: Transport, old_ufrag: str) -> None:
        """A transport's ICE restarted: STUN with its old ufrag no longer finds it."""
        if self._by_ufrag.get(old_ufrag) is transport:
            del self._by_ufrag[old_ufrag]
        self._by_ufrag[transport.connection.local_ice.ufrag] = transport

    def unregister(self, transport: Transport) -> None:
        self.transports.discard(transport)
        self._congestion.discard(transport)
        self._by_ufrag.pop(transport.connection.local_ice.ufrag, None)
        for addr in (self._addr_of.pop(transport, None), self._probing.pop(transport, None)):
            if addr is not None and self._by_addr.get(addr) is transport:
                del self._by_addr[addr]
                if self.tcp is not None and addr.__class__ is TcpAddress:
                    self.tcp.close_address(addr)

    def congestion_due(self, transport: Transport) -> None:
        """Tick this transport's congestion control while it has work per tick: transport feedback to send (until
        it closes), probe clusters to pace out (a transport that only receives feedback has nothing else to do per
        tick: its estimate moves when feedback comes)."""
        if not transport.closed:
            self._congestion.add(transport)

    def feedback_due(self, producer: Producer) -> None:
        """Tick this producer until nothing is pending (work per tick follows what is due, not every stream)."""
        self._feedback.add(producer)

    def send(self, data: bytes, addr: tuple) -> None:
        """Send one packet to a UDP or an ICE-TCP address."""
        if addr.__class__ is TcpAddress:
            if self.tcp is not None:
                self.tcp.send(data, addr)  # type: ignore[arg-type]
        elif self.send_batch is not None:
            self.send_batch.send(data, addr)

    def sender(self) -> Callable[[bytes, tuple], None]:
        """What a connection sends with: without ICE-TCP the UDP socket's send batch (a call less per packet; what
        one callback sends, a packet's whole fan-out, leaves in one system call), else `send`, which tells TCP
        addresses apart."""
        return self.send_batch.send if self.send_batch is not None and self.tcp is None else self.send

    def srtp_sender(self) -> Callable[[SrtpContext, bytes, tuple], int] | None:
        """What a connection protects and sends RTP with in one step (SendBatch.send_rtp): without ICE-TCP, when
        the send batch is there."""
        return self.send_batch.send_rtp if self.send_batch is not None and self.tcp is None else None

    def _introduce(self, data: bytes, addr: TcpAddress) -> bool:
        """A new ICE-TCP connection's first frame: True when it is a valid check of one of the transports (which
        takes it, and may make the connection its path: a check of a pair the client has not chosen does not)."""
        username = stun_username(data) if data and data[0] < 4 else None
        transport = self._by_ufrag.get(username.split(":", 1)[0]) if username else None
        if transport is None or authenticated_request(data, transport.connection.local_ice) is None:
            return False
        self.datagram_received(data, addr)
        return True

    def _in_use(self, addr: TcpAddress) -> bool:
        """Whether an ICE-TCP connection is a transport's path, or the path it checks before moving there."""
        return addr in self._by_addr

    # -- asyncio.DatagramProtocol -----------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._udp = transport  # type: ignore[assignment]
        self.send_batch = SendBatch(self._udp, asyncio.get_running_loop())  # type: ignore[arg-type]
        self.rtc_port = transport.get_extra_info("sockname")[1]
        set_receive_buffer(transport, "media")

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        transport = self._by_addr.get(addr)
        try:
            if transport is not None:
                transport.connection.datagram_received(data, addr)
                if self._probing and self._probing.get(transport) == addr:  # the answer to the server's own check
                    self._settle(transport, addr)
                return
            # An unknown address may only introduce itself with a STUN binding request naming a transport.
            username = stun_username(data) if data and data[0] < 4 else None
            transport = self._by_ufrag.get(username.split(":", 1)[0]) if username else None
            if transport is None:
                self.unknown_datagrams += 1
                return
            transport.connection.datagram_received(data, addr)
            self._settle(transport, addr)
        except Exception:  # one bad datagram must never stop the socket
            log.exception("datagram from %s dropped", addr)
        finally:  # what this datagram caused (its fan-out) leaves now, not after the loop's other callbacks
            if self.send_batch is not None:
                self.send_batch.flush()

    def _settle(self, transport: Transport, addr: tuple) -> None:
        """Map `addr` to `transport` when it is the transport's media path (forgetting the old one: ICE restart,
        another pair nominated, a checked new address) or the one address it is checking before moving there."""
        connection = transport.connection
        if transport.closed:
            return
        if connection.remote_addr == addr:
            for old in (self._addr_of.get(transport), self._probing.pop(transport, None)):
                if old is not None and old != addr and self._by_addr.get(old) is transport:
                    del self._by_addr[old]
            self._by_addr[addr] = transport
            self._addr_of[transport] = addr
        elif connection.probing == addr:  # its answer must reach the transport
            old = self._probing.get(transport)
            if old is not None and old != addr and self._by_addr.get(old) is transport:
                del self._by_addr[old]
            self._probing[transport] = addr
            self._by_addr[addr] = transport

    def error_received(self, exc: Exception) -> None:
        log.debug("UDP error: %s", exc)

    # -- periodic work -------------------------------------------------------------------------------
    async def _run_ticks(self) -> None:
        next_report = time.monotonic() + REPORT_INTERVAL
        next_speech = time.monotonic() + SPEECH_STEP
        while True:
            slept_at = time.monotonic()
            await asyncio.sleep(TICK_INTERVAL)
            now = time.monotonic()
            self.loop_lag.add(now, now - slept_at - TICK_INTERVAL, demand_seconds())
            report = now >= next_report
            if report:
                next_report = now + REPORT_INTERVAL
            if now >= next_speech:
                next_speech = now + SPEECH_STEP
                self.observe_speech()
            self.tick(now, report)

    def observe_speech(self) -> None:
        """One active-speaker step of every room (every active_speaker.STEP)."""
        for router in list(self.routers.values()):
            try:
                router.observe_speech()
            except Exception:
                log.exception("active speaker step of room %s failed", router.name)

    def tick(self, now: float, report: bool) -> None:
        """One tick: feedback of the producers with something pending; every transport's reports when `report`."""
        for producer in list(self._feedback):
            try:
                if producer.pending:
                    producer.tick(now)
            except Exception:
                log.exception("feedback for producer %s failed", producer.id)
            if not producer.pending:
                self._feedback.discard(producer)
        for transport in list(self._congestion):
            try:
                if not transport.congestion_tick(now):
                    self._congestion.discard(transport)
            except Exception:
                log.exception("congestion control of transport %s failed", transport.id)
        if report:
            if self.tcp is not None:
                self.tcp.sweep(now, self.config.consent_timeout)
            for router in list(self.routers.values()):
                router.announce_changes()
            for transport in list(self.transports):
                try:
                    transport.report(now)
                except Exception:
                    log.exception("reports of transport %s failed", transport.id)
            if self.pipes is not None:
                try:
                    self.pipes.report(now)
                except Exception:
                    log.exception("reports of the pipes failed")

    def snapshot(self, now: float, cpu_percent: float, room: str | None = None) -> dict:
        """The stats snapshot (docs/stats.md) at wall-clock time `now`; `room` keeps only that room (totals stay whole)."""
        routers = list(self.routers.values())
        peers = producers = consumers = 0
        bitrate_in = bitrate_out = 0.0
        for router in routers:
            peers += len(router.peers)
            for producer in router.published():
                producers += 1
                bitrate_in += producer.meter.bitrate_bps
            for peer in router.peers.values():
                for consumer in peer.consumers.values():
                    consumers += 1
                    bitrate_out += consumer.meter.bitrate_bps
        worker_stats = self.stats()
        return {
            "version": SCHEMA_VERSION,
            "time": round(now, 3),
            "server": {
                "uptime_s": round(max(0.0, now - self.started_at), 1),
                "rooms": len(routers),
                "peers": peers,
                "producers": producers,
                "consumers": consumers,
                "transports": worker_stats["transports"],
                "bitrate_in_bps": round(bitrate_in),
                "bitrate_out_bps": round(bitrate_out),
                "cpu_percent": round(cpu_percent, 1),
                "rtc_port": worker_stats["rtc_port"],
                "unknown_datagrams": worker_stats["unknown_datagrams"],
                "loop_lag_p95_ms": worker_stats["loop_lag_p95_ms"],
                "pipes": self.pipes.stats() if self.pipes is not None else [],
                "tasks": len(asyncio.all_tasks()),
                "tcp_connections": worker_stats["tcp_connections"],
                "tcp_dropped": worker_stats["tcp_dropped"],
            },
            "rooms": [router.stats() for router in routers if room is None or router.name == room],
        }

    async def _snapshot(self, room: str | None) -> dict:
        return self.snapshot(time.time(), process_cpu_percent(), room)

    def stats(self) -> dict:
        return {
            "rtc_port": self.rtc_port,
            "rooms": len(self.routers),
            "transports": len(self.transports),
            "unknown_datagrams": self.unknown_datagrams,
            "loop_lag_p95_ms": round(self.loop_lag.p95() * 1000, 1),
            "tcp_connections": len(self.tcp.by_address) if self.tcp is not None else 0,
            "tcp_dropped": self.tcp.total_dropped if self.tcp is not None else 0,
        }
