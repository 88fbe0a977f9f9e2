"""Attacks by a participant that holds valid credentials and SRTP keys, against a real server with a call running."""

from __future__ import annotations

import asyncio
import socket

from aioice import stun

from sfuctl.client.lean_subscriber import LeanSubscriber
from sfuctl.rtc import rtcp
from sfuctl.rtc.resend_budget import RESEND_RATIO

from .peers import AiortcPeer
from .test_forwarding import media, wait_for  # noqa: F401 (media is a fixture)


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
        server_addr = attacker.server_address
        consumer_ssrc = attacker.consumers[0]["ssrc"]
        received: list[bytes] = []
        for _ in range(20):  # checks and NACKs from the stranger's address, for 2 s
            stranger.sendto(attacker.binding_request(), server_addr)
            nack = rtcp.Nack(1234, consumer_ssrc, list(range(0, 64)))
            attacker.send_rtcp(bytes(nack), stranger)
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


async def test_nack_storm_is_capped_and_a_call_in_another_room_keeps_its_media(server, media):
    publisher = AiortcPeer(server.url, "storm", "alice")
    attacker = LeanSubscriber(server.url, "storm")
    bystanders = [AiortcPeer(server.url, "calm", "carol"), AiortcPeer(server.url, "calm", "dave")]
    try:
        await publisher.join()
        producers = await publisher.publish(str(media.video))
        await attacker.start(producers)
        await bystanders[0].join()
        calm = await bystanders[0].publish(str(media.video))
        await bystanders[1].join()
        await bystanders[1].subscribe(calm)
        assert await wait_for(lambda: attacker.rtp_received > 50 and bystanders[1].video() and bystanders[1].video()[0].frames > 10, 15)
        consumer = next(c for peer in server.worker.routers["storm"].peers.values() for c in peer.consumers.values())
        calm_consumer = next(c for peer in server.worker.routers["calm"].peers.values() for c in peer.consumers.values())
        lost_before, frames_before = calm_consumer.rtcp.packets_lost, bystanders[1].video()[0].frames
        nack_bytes = 0
        for _ in range(120):  # 3 s at 40 NACKs a second, each naming ~1000 recent packets (~250 bytes of SRTCP)
            last = attacker.last_sequence[consumer.ssrc]
            nack = rtcp.Nack(1234, consumer.ssrc, [(last - 999 + i) & 0xFFFF for i in range(1000)])
            nack_bytes += attacker.send_rtcp(bytes(nack))
            await asyncio.sleep(0.025)
        stream = consumer.rtcp
        media_bytes = consumer.meter.bytes - stream.retransmitted_bytes
        assert stream.nacks_received >= 100
        assert 0 < stream.retransmitted_bytes <= RESEND_RATIO * media_bytes + 1500  # the last one allowed may cross it
        assert stream.budget.refused > 0  # once per RTT per packet and the byte cap: tests/test_resend_budget.py
        await asyncio.sleep(1.5)  # the bystander's next receiver reports cover the storm
        assert bystanders[1].video()[0].frames > frames_before + 50
        assert calm_consumer.rtcp.packets_lost == lost_before
        assert consumer.stats()["retransmissions_refused"] == stream.budget.refused
    finally:
        await attacker.close()
        for peer in (publisher, *bystanders):
            await peer.close()
