"""PipeTransport: plain RTP/RTCP between two workers of one server, over a 127.0.0.1 UDP socket pair.

One per worker pair on each side (mediasoup's pipeToRouter). It carries every stream piped between the two
workers: towards the other worker a pipe Consumer per producer, from it a piped Producer per stream, each under
an SSRC unique on the pipe (publishers' SSRCs are unique only within their own transport). No ICE, DTLS or
SRTP: both ends are processes of this server on the loopback, and a datagram from any address but the other
end's is counted and dropped before it is read.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import TYPE_CHECKING

from ..rtc import rtcp
from ..rtc.rtcp_router import RtcpRouter
from .simulcast_consumer import SimulcastConsumer
from .transport import send_reports
from .worker import set_receive_buffer

if TYPE_CHECKING:
    from .consumer import Consumer
    from .layer_allocation import LayerAllocation
    from .producer import Producer
    from .worker import Worker

log = logging.getLogger(__name__)

PIPE_HOST = "127.0.0.1"
RTCP_TYPES = range(192, 224)  # RFC 5761: a second byte in 192..223 is RTCP (SR 200, RR 201, ... FB 205/206)


class PipeSocket(asyncio.DatagramProtocol):
    """The pipe's UDP socket on 127.0.0.1: sends plain RTP/RTCP to the other end, takes datagrams only from it."""

    def __init__(self, transport: PipeTransport) -> None:
        self._transport = transport
        self.peer_addr: tuple[str, int] | None = None
        self.port = 0
        self.packets_sent = 0
        self.bytes_sent = 0
        self.packets_received = 0
        self.bytes_received = 0
        self.dropped_foreign = 0  # datagrams from another address than the other end's
        self.dropped_invalid = 0  # datagrams from the other end that are neither RTP nor RTCP
        self._udp: asyncio.DatagramTransport | None = None

    async def bind(self) -> int:
        """Bind a free port on 127.0.0.1; the other end learns it over the link."""
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(lambda: self, local_addr=(PIPE_HOST, 0))
        return self.port

    def connect(self, port: int) -> None:
        """From now on send to, and accept only, the other end's port."""
        self.peer_addr = (PIPE_HOST, port)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._udp = transport  # type: ignore[assignment]
        self.port = transport.get_extra_info("sockname")[1]
        # one pipe carries every piped stream of a worker pair, as the media socket carries every publisher
        set_receive_buffer(transport, "pipe")

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        if addr != self.peer_addr:
            self.dropped_foreign += 1
            return
        if len(data) < 8 or data[0] >> 6 != 2:
            self.dropped_invalid += 1
            return
        self.packets_received += 1
        self.bytes_received += len(data)
        try:
            if data[1] in RTCP_TYPES:
                self._transport.rtcp_router.route(data)
            elif len(data) >= 12:
                self._transport.receive_rtp(data)
            else:
                self.dropped_invalid += 1
        except Exception:  # one bad datagram must never stop the pipe
            log.exception("pipe datagram dropped")

    def error_received(self, exc: Exception) -> None:
        log.debug("pipe UDP error: %s", exc)

    def send_rtp(self, packet: bytes) -> None:
        """Send one RTP packet to the other end (hot path: once per piped packet)."""
        if self.peer_addr is not None and self._udp is not None:
            self.packets_sent += 1
            self.bytes_sent += len(packet)
            self._udp.sendto(packet, self.peer_addr)

    send_rtcp = send_rtp

    def close(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None


class PipeTransport:
    """The streams piped between this worker and one other: piped producers by SSRC, pipe consumers by SSRC.

    Has what a Producer and a Consumer expect of a transport (`connection.send_rtp`, `connected`, `rtcp_ssrc`,
    `send_rtcp`, `feedback_due`), so the media path is the same objects as between peers.
    """

    def __init__(self, worker: Worker, local_index: int, remote_index: int) -> None:
        self.worker = worker
        self.remote_index = remote_index
        self.rtcp_ssrc = random.randint(1, 0xFFFFFFFF)
        self.connected = True
        self.closed = False
        self.rtcp_router = RtcpRouter()
        self.connection = PipeSocket(self)
        self.producers: dict[int, Producer] = {}
        self.consumers: dict[int, Consumer] = {}
        self.allocation: LayerAllocation | None = None  # none: report() keeps each stream on its top sent encoding
        self.unknown_ssrc = 0
        self._sdes = bytes(rtcp.Sdes(self.rtcp_ssrc, f"worker-{local_index}"))
        # Each end draws SSRCs of its own parity, so the two directions never share one on this pipe.
        self._parity = 1 if local_index < remote_index else 0

    def new_ssrc(self) -> int:
        """A fresh SSRC for a stream sent on this pipe, unique on it in both directions."""
        while True:
            ssrc = (random.randint(1, 0x7FFFFFFF) << 1) | self._parity
            if ssrc not in self.consumers and ssrc not in self.producers:
                return ssrc

    def add_producer(self, producer: Producer) -> None:
        """A stream the other worker pipes here, under its pipe SSRC."""
        assert producer.ssrc is not None
        self.producers[producer.ssrc] = producer
        self.rtcp_router.add_receiving(producer.ssrc, producer.rtcp)
        producer.on_close.add(self._on_producer_closed)

    def _on_producer_closed(self, producer: Producer) -> None:
        if producer.ssrc is not None and self.producers.get(producer.ssrc) is producer:
            del self.producers[producer.ssrc]
            self.rtcp_router.remove_receiving(producer.ssrc, producer.rtcp)

    def add_consumer(self, consumer: Consumer) -> None:
        """A producer of this worker sent to the other one."""
        self.consumers[consumer.ssrc] = consumer
        self.rtcp_router.add_sending(consumer.ssrc, consumer.rtcp)
        consumer.on_close.add(self._on_consumer_closed)
        consumer.on_transport_connected(time.monotonic())

    def _on_consumer_closed(self, consumer: Consumer) -> None:
        if self.consumers.get(consumer.ssrc) is consumer:
            del self.consumers[consumer.ssrc]
            self.rtcp_router.remove_sending(consumer.ssrc, consumer.rtcp)

    def receive_rtp(self, data: bytes) -> None:
        producer = self.producers.get(int.from_bytes(data[8:12], "big"))
        if producer is None:  # a stream announced after its first packets, or one already closed
            self.unknown_ssrc += 1
            return
        producer.receive(data, time.monotonic())

    def send_rtcp(self, packet: bytes) -> None:
        self.connection.send_rtcp(packet)

    def feedback_due(self, producer: Producer) -> None:
        self.worker.feedback_due(producer)

    def report(self, now: float) -> None:
        """Once per interval: each piped simulcast stream moves to the highest encoding its publisher still sends
        (the far worker's subscribers choose from what it gets; a pipe has no estimate to allocate), then RR for
        the piped producers and SR for each pipe consumer (as a Transport does)."""
        if self.closed:
            return
        for consumer in self.consumers.values():
            if isinstance(consumer, SimulcastConsumer):
                consumer.set_target(consumer.wish().cap(), now)
        send_reports(now, self.rtcp_ssrc, self._sdes, self.producers.values(), self.consumers.values(), self.send_rtcp)

    def close(self) -> None:
        """Idempotent: the socket closes; the link closes the streams."""
        if self.closed:
            return
        self.closed = True
        self.connected = False
        self.connection.close()

    def stats(self) -> dict:
        c = self.connection
        return {
            "worker": self.remote_index,
            "port": c.port,
            "remote_port": c.peer_addr[1] if c.peer_addr else None,
            "streams_out": len(self.consumers),
            "streams_in": len(self.producers),
            "packets_sent": c.packets_sent,
            "bytes_sent": c.bytes_sent,
            "packets_received": c.packets_received,
            "bytes_received": c.bytes_received,
            "dropped_foreign": c.dropped_foreign,
            "dropped_invalid": c.dropped_invalid,
            "unknown_ssrc": self.unknown_ssrc,
            "invalid_rtcp": self.rtcp_router.invalid,
        }
