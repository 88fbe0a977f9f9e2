"""Attacks by a participant that holds valid credentials and SRTP keys, against a real server with a call running."""

from __future__ import annotations

import asyncio
import os
import socket

from aioice import stun

from sfuctl.client.offer import RECEIVE_CODECS, OfferSection, connection_offer, parse_answer
from sfuctl.client.signaling import SignalingClient
from sfuctl.rtc import rtcp
from sfuctl.rtc.connection import Connection, open_client_connection

from .peers import AiortcPeer
from .test_forwarding import media, wait_for  # noqa: F401 (media is a fixture)


class LeanSubscriber:
    """A subscriber on sfuctl's own client stack, so that a test can use its ICE credentials and SRTP keys."""

    def __init__(self, url: str, room: str) -> None:
        self.url = url
        self.room = room
        self.rtp_received = 0
        self.signaling: SignalingClient | None = None
        self.connection: Connection | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self.answer = None
        self.consumers: list[dict] = []

    async def start(self, producers: list[dict]) -> None:
        self.signaling = await SignalingClient.connect(self.url)
        await self.signaling.request("join", room=self.room, name="lean")
        self.connection, self.udp = await open_client_connection(
            on_rtp=self._on_rtp, on_rtcp=lambda data: None, on_state=lambda state: None
        )
        sections = [OfferSection(str(i), p["kind"], "recvonly", RECEIVE_CODECS[p["kind"]]) for i, p in enumerate(producers)]
        offer = connection_offer(self.connection, sections, session_id=int.from_bytes(os.urandom(7), "big"))
        result = await self.signaling.request("subscribe", sdp=offer, subscriptions={str(i): p["id"] for i, p in enumerate(producers)})
        self.consumers = result["consumers"]
        self.answer = parse_answer(result["sdp"])
        self.connection.set_remote(self.answer.ice, self.answer.fingerprints, self.answer.dtls_role, self.answer.candidates)

    def _on_rtp(self, data: bytes) -> None:
        self.rtp_received += 1

    def binding_request(self) -> bytes:
        """A valid nominating check from this client (the attacker holds the credentials)."""
        message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
        message.attributes["USERNAME"] = f"{self.answer.ice.ufrag}:{self.connection.local_ice.ufrag}"
        message.attributes["PRIORITY"] = 1853824767
        message.attributes["ICE-CONTROLLING"] = 1
        message.attributes["USE-CANDIDATE"] = None
        message.add_message_integrity(self.answer.ice.pwd.encode())
        return bytes(message)

    def send_rtcp_from(self, sock: socket.socket, packet: bytes) -> None:
        """Protect `packet` with this client's SRTCP keys and send it from another socket."""
        send = self.connection._send
        self.connection._send = lambda data, addr: sock.sendto(data, addr)
        try:
            self.connection.send_rtcp(packet)
        finally:
            self.connection._send = send

    async def close(self) -> None:
        if self.connection is not None:
            self.connection.close()
        if self.udp is not None:
            self.udp.close()
        if self.signaling is not None:
            await self.signaling.close()


async def test_reflection_a_check_from_a_third_address_moves_no_media_there(server, media):
    publisher = AiortcPeer(server.url, "reflect", "alice")
    attacker = LeanSubscriber(server.url, "reflect")
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.3", 0))
    stranger.setblocking(False)
    try:
        await publisher.join()
        producers = await publisher.publish(str(media.video))
        await attacker.start(producers)
        assert await wait_for(lambda: attacker.rtp_received > 20, 15)
        transport = next(t for t in server.worker.transports if t.consumers)
        path = transport.connection.remote_addr
        server_addr = attacker.answer.candidates[0]
        consumer_ssrc = attacker.consumers[0]["ssrc"]
        received: list[bytes] = []
        for _ in range(20):  # checks and NACKs from the stranger's address, for 2 s
            stranger.sendto(attacker.binding_request(), server_addr)
            nack = rtcp.Nack(1234, consumer_ssrc, list(range(0, 64)))
            attacker.send_rtcp_from(stranger, bytes(nack))
            await asyncio.sleep(0.1)
            while True:
                try:
                    received.append(stranger.recv(2048))
                except BlockingIOError:
                    break
        media_packets = [d for d in received if 127 < d[0] < 192]
        stun_packets = [stun.parse_message(d) for d in received if d[0] < 4]
        assert media_packets == []
        assert transport.connection.remote_addr == path
        # What the stranger got: answers to its checks and the server's own checks (at most one per 0.5 s).
        assert {m.message_class for m in stun_packets} <= {stun.Class.RESPONSE, stun.Class.REQUEST}
        assert 1 <= sum(m.message_class == stun.Class.REQUEST for m in stun_packets) <= 6
        before = attacker.rtp_received
        assert await wait_for(lambda: attacker.rtp_received > before + 20, 10)  # the real path still gets media
    finally:
        stranger.close()
        await attacker.close()
        await publisher.close()
