"""Worker: the shared media port binds a new remote address only after a binding request that authenticates
with a transport's ICE credentials (tests/test_connection.py covers the same at the Connection level)."""

from __future__ import annotations

import asyncio

import pytest
from aioice import stun

from sfuctl.client.offer import OPUS, OfferSection, build_offer, parse_answer
from sfuctl.client.signaling import SignalingClient
from sfuctl.rtc.connection import open_client_connection

RTP_LIKE = bytes([0x80, 111]) + bytes(30)  # first byte 128..191: SRTP by RFC 7983


def binding_request(username: str, pwd: str) -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1
    message.attributes["ICE-CONTROLLING"] = 1
    message.add_message_integrity(pwd.encode())
    message.add_fingerprint()
    return bytes(message)


class Recorder(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.received.append(data)


@pytest.mark.parametrize("case", ["unknown-username", "wrong-password"])
async def test_unauthenticated_binding_request_binds_nothing(server, case: str) -> None:
    client = await SignalingClient.connect(server.url)
    connection, client_udp = await open_client_connection(
        on_rtp=lambda data: None, on_rtcp=lambda data: None, on_state=lambda state: None
    )
    loop = asyncio.get_running_loop()
    udp, peer = await loop.create_datagram_endpoint(Recorder, local_addr=("127.0.0.1", 0))
    try:
        await client.request("join", room="stun", name="alice")
        assert connection.local_candidate is not None
        offer = build_offer(
            session_id=1,
            version=1,
            ice=connection.local_ice,
            fingerprint=connection.local_fingerprint,
            candidate=connection.local_candidate,
            sections=[OfferSection("0", "audio", "sendonly", (OPUS,), ssrc=1234, cname="alice")],
        )
        answer = parse_answer((await client.request("publish", sdp=offer))["sdp"])
        # The client never starts ICE: this test's socket plays the peer on the server's media port.
        media = answer.candidates[0]
        transport = next(iter(server.worker.transports))
        ufrag, pwd = answer.ice.ufrag, answer.ice.pwd
        bad = {
            "unknown-username": binding_request(f"x{ufrag}:abcd", pwd),
            "wrong-password": binding_request(f"{ufrag}:abcd", "w" * 24),
        }[case]
        unknown = server.worker.unknown_datagrams
        udp.sendto(bad, media)
        await asyncio.sleep(0.2)
        udp.sendto(RTP_LIKE, media)
        await asyncio.sleep(0.2)
        assert peer.received == []
        assert transport.connection.remote_addr is None
        # The unknown username is dropped by the worker itself; a wrong password reaches the transport, which
        # ignores it. Either way the address stays unknown, so the media-like datagram after it is dropped too.
        assert server.worker.unknown_datagrams == unknown + (2 if case == "unknown-username" else 1)

        # Control: the same socket with the right credentials is answered and its address bound.
        udp.sendto(binding_request(f"{ufrag}:abcd", pwd), media)
        for _ in range(40):
            if peer.received:
                break
            await asyncio.sleep(0.05)
        assert len(peer.received) == 1
        assert stun.parse_message(peer.received[0]).message_class == stun.Class.RESPONSE
        assert transport.connection.remote_addr == udp.get_extra_info("sockname")
        unknown = server.worker.unknown_datagrams
        udp.sendto(RTP_LIKE, media)
        await asyncio.sleep(0.2)
        assert server.worker.unknown_datagrams == unknown
    finally:
        udp.close()
        connection.close()
        client_udp.close()
        await client.close()
