"""Link: one connection of a bot (ICE/DTLS/SRTP on its own socket) with what it sends and what it receives.

An SFU bot has two links (send, receive), a mesh bot one per other peer, a WHIP or WHEP bot one. A link's
Publisher and Subscriber share its RtcpRouter, so each compound RTCP packet is parsed once. The bot drives its
links (tick, reports, leave) without knowing which kind of bot it is.
"""

from __future__ import annotations

from sfuctl.rtc.connection import Connection
from sfuctl.rtc.rtcp_router import RtcpRouter

from .publisher import Publisher, StreamSender
from .subscriber import ConsumerStream, Subscriber
from .udp import BotSocket


class Link:
    """A connection and its streams; `started_at` is when it connected (time.monotonic()), None before."""

    def __init__(self, name: str) -> None:
        self.name = name  # seeds the impairment draws of its socket
        self.router = RtcpRouter()
        self.connection: Connection | None = None
        self.socket: BotSocket | None = None
        self.publisher: Publisher | None = None
        self.subscriber: Subscriber | None = None
        self.started_at: float | None = None
        self.closed = False

    def on_rtp(self, data: bytes) -> None:
        if self.subscriber is not None:  # RTP on a send-only link is ignored
            self.subscriber.on_rtp(data)

    def send_rtcp(self, data: bytes) -> None:
        if self.connection is not None:
            self.connection.send_rtcp(data)

    def tick(self, now: float) -> None:
        """NACK/PLI due for what this link receives."""
        if self.subscriber is not None:
            self.subscriber.tick(now)

    def send_reports(self, now: float) -> None:
        """SRs for what it sends, then RR + SDES for what it receives."""
        if self.publisher is not None:
            self.publisher.send_reports(now)
        if self.subscriber is not None and self.subscriber.by_ssrc:
            self.subscriber.send_report(now)

    def stop_sending(self) -> None:
        """Stop the senders and say BYE for them while the connection is up."""
        if self.publisher is not None:
            self.publisher.stop()
            if self.connection is not None and self.connection.state == "connected":
                self.publisher.send_bye()

    def close(self) -> None:
        self.closed = True
        if self.connection is not None:
            self.connection.close()
        if self.socket is not None:
            self.socket.close()

    async def wait_closed(self) -> None:
        """Until close() has closed its socket (and released a TURN allocation)."""
        if self.socket is not None:
            await self.socket.wait_closed()

    @property
    def stun_rtt_ms(self) -> float | None:
        """RTT of the ICE consent checks this side sends (None on an ICE-lite side)."""
        return self.socket.rtt.rtt_ms if self.socket is not None else None

    @property
    def rtt_ms(self) -> float | None:
        """The STUN RTT on an ICE controlling side; else the peer's receiver reports about what this link sends
        (LSR/DLSR), averaged over its streams."""
        if self.stun_rtt_ms is not None:
            return self.stun_rtt_ms
        if self.publisher is not None:
            rtts = [s.rtt_ms for s in self.publisher.senders if s.rtt_ms is not None]
            if rtts:
                return sum(rtts) / len(rtts)
        return None

    def sending(self) -> list[tuple[StreamSender, float | None]]:
        return [(s, self.started_at) for s in self.publisher.senders] if self.publisher is not None else []

    def receiving(self) -> list[ConsumerStream]:
        return list(self.subscriber.streams) if self.subscriber is not None else []
