"""A simulcast publisher that restarts an encoding under a new SSRC: the old SSRC stops being routed, so a
publisher cycling SSRCs cannot grow the server's tables."""

from __future__ import annotations

import asyncio

from sfuctl.client.offer import SEND_CODECS, OfferSection, connection_offer, parse_answer
from sfuctl.client.signaling import SignalingClient
from sfuctl.rtc.connection import open_client_connection
from sfuctl.rtc.rtp import build_extension_block, build_packet
from sfuctl.rtc.sdp import MID_URI
from sfuctl.rtc.simulcast import RID_URI

from .test_forwarding import wait_for

VP8_DELTA = b"\x90\x80\x00\x01\x00\x00\x00"  # a VP8 descriptor with a PictureID, then a (non-key) frame byte


async def test_an_encoding_restarted_under_a_new_ssrc_forgets_the_old_one(server) -> None:
    client = await SignalingClient.connect(server.url)
    connected = asyncio.get_running_loop().create_future()
    conn, udp = await open_client_connection(
        on_rtp=lambda data: None, on_rtcp=lambda data: None,
        on_state=lambda state: state == "connected" and not connected.done() and connected.set_result(None),
    )
    try:
        await client.request("join", room="restart", name="pub")
        section = OfferSection(mid="0", kind="video", direction="sendonly", codecs=(SEND_CODECS["VP8"],),
                               cname="pub", msid=("pub", "pub-video"), rids=("q", "h"))
        answer = parse_answer((await client.request("publish", sdp=connection_offer(conn, [section], session_id=1)))["sdp"])
        media = answer.media["0"]
        conn.set_remote(answer.ice, answer.fingerprints, answer.dtls_role, answer.candidates)  # type: ignore[arg-type]
        await asyncio.wait_for(connected, 10)
        transport = next(iter(server.worker.routers["restart"].peers.values())).send_transport
        tagged = build_extension_block([(media.extensions[MID_URI], b"0"), (media.extensions[RID_URI], b"h")])
        for ssrc in range(1000, 1010):  # the "h" encoding restarted ten times
            for sequence in range(3):
                conn.send_rtp(build_packet(media.codec.payload_type, sequence, 0, ssrc, VP8_DELTA, extensions=tagged))
            assert await wait_for(lambda: ssrc in transport.producers, 5)
        routed = [ssrc for ssrc in transport.producers if 1000 <= ssrc < 1010]
        assert routed == [1009]
        assert [ssrc for ssrc in transport.rtcp_router.receiving if 1000 <= ssrc < 1010] == [1009]
    finally:
        conn.close()
        udp.close()
        await client.close()
