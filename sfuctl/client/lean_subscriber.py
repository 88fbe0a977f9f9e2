"""LeanSubscriber: a receive transport on sfuctl's own client stack (no decoder), for tests and benchmarks.

It holds its ICE credentials and SRTP keys in reach, so that an attack test or probe can act as a participant
that misbehaves with valid credentials: forged checks, NACK storms.
"""

from __future__ import annotations

import asyncio
import os
import socket

from aioice import stun

from .offer import RECEIVE_CODECS, Answer, OfferSection, connection_offer, parse_answer
from .signaling import SignalingClient
from ..rtc.connection import Connection, open_client_connection
from ..rtc.framing import FramedStream, connect_framed


class LeanSubscriber:
    """Joins a room, subscribes to producers with one recvonly m-line each, and counts the RTP that arrives."""

    def __init__(self, url: str, room: str, name: str = "lean") -> None:
        self.url = url
        self.room = room
        self.name = name
        self.rtp_received = 0
        self.last_sequence: dict[int, int] = {}  # SSRC -> sequence number of the RTP received last
        self.signaling: SignalingClient | None = None
        self.connection: Connection | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.answer: Answer | None = None
        self.consumers: list[dict] = []
        self.tcp: FramedStream | None = None

    async def start(self, producers: list[dict], tcp: bool = False, receive_buffer: int | None = None) -> None:
        """Join, subscribe and start ICE/DTLS (not waiting for it: watch `rtp_received`); with `tcp`, over the
        server's ICE-TCP candidate (`receive_buffer`: the TCP socket's SO_RCVBUF)."""
        self.signaling = await SignalingClient.connect(self.url)
        await self.signaling.request("join", room=self.room, name=self.name)
        self.connection, self.udp = await open_client_connection(
            on_rtp=self._on_rtp, on_rtcp=lambda data: None, on_state=lambda state: None
        )
        sections = [OfferSection(str(i), p["kind"], "recvonly", RECEIVE_CODECS[p["kind"]]) for i, p in enumerate(producers)]
        offer = connection_offer(self.connection, sections, session_id=int.from_bytes(os.urandom(7), "big"))
        subscriptions = {str(i): p["id"] for i, p in enumerate(producers)}
        result = await self.signaling.request("subscribe", sdp=offer, subscriptions=subscriptions)
        self.consumers = result["consumers"]
        self.answer = parse_answer(result["sdp"])
        candidates = self.answer.candidates
        if tcp:
            connection, candidates = self.connection, self.answer.tcp_candidates[:1]
            self.tcp = await connect_framed(candidates[0], lambda packet: connection.datagram_received(packet, candidates[0]), receive_buffer)
            stream = self.tcp
            connection.use_sender(lambda data, addr: stream.send(data))
        self.connection.set_remote(self.answer.ice, self.answer.fingerprints, self.answer.dtls_role, candidates)  # type: ignore[arg-type]

    def _on_rtp(self, data: bytes) -> None:
        self.rtp_received += 1
        self.last_sequence[int.from_bytes(data[8:12], "big")] = int.from_bytes(data[2:4], "big")

    @property
    def server_address(self) -> tuple[str, int]:
        assert self.answer is not None
        return self.answer.candidates[0]

    def binding_request(self, nominate: bool = True) -> bytes:
        """A valid connectivity check of this client's, as anyone holding its credentials can forge; nominating
        (USE-CANDIDATE) unless `nominate` is False, as a browser checks the pairs it has not chosen."""
        assert self.answer is not None and self.connection is not None
        message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        message.attributes["USERNAME"] = f"{self.answer.ice.ufrag}:{self.connection.local_ice.ufrag}"
        message.attributes["PRIORITY"] = 1853824767
        message.attributes["ICE-CONTROLLING"] = 1
        if nominate:
            message.attributes["USE-CANDIDATE"] = None
        message.add_message_integrity(self.answer.ice.pwd.encode())
        return bytes(message)

    def send_rtcp(self, packet: bytes, sock: socket.socket | None = None) -> int:
        """Protect `packet` with this client's SRTCP keys and send it (from `sock` if given); returns bytes sent."""
        assert self.connection is not None
        sent = self.connection.bytes_sent
        if sock is None:
            self.connection.send_rtcp(packet)
            return self.connection.bytes_sent - sent
        original = self.connection.use_sender(lambda data, addr: sock.sendto(data, addr))
        try:
            self.connection.send_rtcp(packet)
        finally:
            self.connection.use_sender(original)
        return self.connection.bytes_sent - sent

    async def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        if self.udp is not None:
            self.udp.close()
        if self.tcp is not None:
            self.tcp.close()
        if self.signaling is not None:
            await self.signaling.close()
