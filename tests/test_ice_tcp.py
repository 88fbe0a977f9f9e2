"""ICE over TCP (RFC 6544 passive candidates, RFC 4571 framing) against a real server: bots call over TCP alone,
bad input on the TCP port is closed or bounded while a call goes on, bots call over ::1 on UDP and TCP, and restart
ICE over TCP."""

from __future__ import annotations

import asyncio
import re
import socket
import time

import aiohttp
import pytest
from aioice import stun

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.client.lean_subscriber import LeanSubscriber
from sfuctl.client.offer import parse_answer
from sfuctl.client.signaling import SignalingClient
from sfuctl.rtc import framing
from sfuctl.server import ice_tcp
from sfuctl.server.app import start_server
from sfuctl.server.config import ServerConfig

from .serve_process import start_serve
from .test_bots import media  # noqa: F401 (a fixture)
from .test_forwarding import wait_for


def assert_clean_call(bots: list[dict]) -> None:
    """Every consumer of these bots got what its publisher sent from its first packet on: nothing lost, no freeze,
    and most of the call. The publisher's count includes what it sent before the consumer was connected, which
    takes longer on a loaded machine (0.78 of a 3-s call seen on 2 busy cores), so "most"
    is half, not a bound on how fast a call is set up."""
    sent = {(bot["peer_id"], s["kind"]): s for bot in bots for s in bot["sent"]}
    for bot in bots:
        assert bot["status"] == "left" and bot["consumers"]
        for consumer in bot["consumers"]:
            source = sent[(consumer["producer_peer"], consumer["kind"])]
            assert consumer["packets_lost"] == 0 and consumer["freezes"] == 0
            assert 0.5 * source["packets"] <= consumer["packets"] <= source["packets"], (consumer, source)


@pytest.mark.alone  # no freeze, jitter, RTT or time to first frame of a clean call on a busy CPU
async def test_bots_call_over_ice_tcp_alone(media) -> None:
    server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0,
                                             ice_udp=False, ice_tcp=True))
    try:
        snapshots: list[dict] = []

        async def watch() -> None:
            while True:
                await asyncio.sleep(0.5)
                snapshots.append(server.worker.snapshot(time.time(), 0.0))

        watcher = asyncio.create_task(watch())
        report = await run_bots(BotsConfig(url=server.url, count=3, ramp=20, duration=4.0, media=media, seed=5, ice_tcp=True))
        watcher.cancel()
        assert report.failed == 0
        assert_clean_call(report.bots)
        busy = max(snapshots, key=lambda s: s["server"]["tcp_connections"])
        assert busy["server"]["tcp_connections"] == 6  # a send and a receive transport per bot
        transports = [t for room in busy["rooms"] for peer in room["peers"] for t in peer["transports"]]
        assert {t["ice_protocol"] for t in transports} == {"tcp"}
        assert busy["server"]["tcp_dropped"] == 0
        # Closed with their transports.
        assert await wait_for(lambda: not server.worker.tcp.by_address, 5)

        # The answer has TCP candidates only; a UDP-only client says what to do.
        report = await run_bots(BotsConfig(url=server.url, count=1, duration=1.0, media=media, seed=6))
        assert report.failed == 1 and "--ice-tcp" in report.bots[0]["error"]
    finally:
        await server.close()


async def read_until_closed(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True when the server closes the connection within `timeout`."""
    try:
        while await asyncio.wait_for(reader.read(65536), timeout):
            pass
        return True
    except (asyncio.TimeoutError, ConnectionError):
        return False


@pytest.mark.alone  # no freeze, jitter, RTT or time to first frame of a clean call on a busy CPU
async def test_bad_input_on_ice_tcp_is_closed_or_bounded_and_another_call_keeps_its_media(media, monkeypatch) -> None:
    # Small limits, so that the slow reader reaches them within the test; the mechanism is the same.
    monkeypatch.setattr(ice_tcp, "INTRODUCTION_TIMEOUT", 0.5)
    monkeypatch.setattr(ice_tcp, "SEND_BUFFER", 4096)
    monkeypatch.setattr(framing, "WRITE_BUFFER_MAX", 16 * 1024)
    server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0, ice_tcp=True))
    port = server.worker.rtc_port
    streams = server.worker.tcp
    assert streams is not None
    # room-1: two bots calling over TCP; room-2: one bot publishing, watched by a subscriber that stops reading.
    bots = asyncio.create_task(run_bots(BotsConfig(url=server.url, count=3, rooms=2, ramp=20, duration=9.0, media=media,
                                                   seed=7, ice_tcp=True)))
    slow = LeanSubscriber(server.url, "room-2", "slow")
    try:
        routers = server.worker.routers
        assert await wait_for(lambda: "room-2" in routers and len(routers["room-2"].producers) == 2, 10)
        producers = [{"id": p.id, "kind": p.kind} for p in server.worker.routers["room-2"].producers.values()]
        await slow.start(producers, tcp=True, receive_buffer=4096)
        assert slow.answer is not None  # UDP and TCP on one port
        assert slow.answer.candidates == slow.answer.tcp_candidates == [("127.0.0.1", port)]
        assert await wait_for(lambda: slow.rtp_received > 50, 10)
        assert slow.tcp is not None and slow.connection is not None
        transport = next(t for t in server.worker.transports if t.connection.remote_addr == ("127.0.0.1", slow.tcp.transport.get_extra_info("sockname")[1], "tcp"))

        # A 65535-byte frame on an introduced connection is one more bad packet for its transport, nothing else.
        errors = transport.connection.srtp_errors
        slow.tcp.send(b"\x80" + bytes(framing.MAX_FRAME - 1))
        received = slow.rtp_received
        assert await wait_for(lambda: transport.connection.srtp_errors == errors + 1 and slow.rtp_received > received + 20, 5)

        # A 65535-byte first frame is not a check: closed at once.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(framing.frame(bytes(framing.MAX_FRAME)))
        assert await read_until_closed(reader, 2)
        writer.close()
        # A frame whose length runs past the end of the stream: closed at the end.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x03\xe8" + bytes(10))
        writer.write_eof()
        assert await read_until_closed(reader, 2)
        writer.close()
        # Half-open: a partial frame, then silence without closing: closed after INTRODUCTION_TIMEOUT.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"\x03\xe8" + bytes(10))
        assert await read_until_closed(reader, 4)
        writer.close()
        assert streams.refused >= 2

        # A valid check that does not nominate, on a connection of its own (a pair the client checks but has not
        # chosen): answered, not refused, the path stays; closed once it has been no path for INTRODUCTION_TIMEOUT.
        refused, path = streams.refused, transport.connection.remote_addr
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(framing.frame(slow.binding_request(nominate=False)))
        size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 2), "big")
        assert stun.parse_message(await reader.readexactly(size)).message_class == stun.Class.RESPONSE
        assert await read_until_closed(reader, 4)
        writer.close()
        assert streams.refused == refused and transport.connection.remote_addr == path
        # The client moves to a new connection, nominating it, and keeps the old one open: the server closes it.
        old, server_tcp = slow.tcp, slow.answer.tcp_candidates[0]
        connection = slow.connection
        slow.tcp = await framing.connect_framed(server_tcp, lambda packet: connection.datagram_received(packet, server_tcp))
        new = slow.tcp
        connection.use_sender(lambda data, addr: new.send(data))
        new.send(slow.binding_request())
        assert await wait_for(lambda: transport.connection.remote_addr not in (None, path), 5)
        assert await wait_for(lambda: old.transport.is_closing() and path not in streams.by_address, 5)
        received = slow.rtp_received
        assert await wait_for(lambda: slow.rtp_received > received + 20, 5)

        # A subscriber that never reads: what the server queues for it stays bounded, the rest is dropped.
        slow.tcp.transport.pause_reading()
        assert await wait_for(lambda: streams.total_dropped > 20, 10)
        stream = streams.by_address[transport.connection.remote_addr]
        assert stream.transport.get_write_buffer_size() <= framing.WRITE_BUFFER_MAX + 1500
        assert transport.stats()["ice_protocol"] == "tcp"

        report = await bots
        room_1 = [bot for bot in report.bots if bot["room"] == "room-1"]
        assert len(room_1) == 2 and report.failed == 0
        assert_clean_call(room_1)
        assert server.worker.snapshot(time.time(), 0.0)["server"]["tcp_dropped"] >= streams.total_dropped > 20
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{server.port}/metrics") as response:
                metrics = await response.text()
        assert int(float(re.search(r"^sfuctl_tcp_refused_total (\S+)$", metrics, re.M)[1])) >= 2
        assert int(float(re.search(r"^sfuctl_tcp_dropped_total (\S+)$", metrics, re.M)[1])) > 20
    finally:
        bots.cancel()
        await asyncio.gather(bots, return_exceptions=True)
        await slow.close()
        await server.close()


def test_frame_reader_cuts_frames_across_reads_and_holds_at_most_one() -> None:
    reader = framing.FrameReader()
    stream = framing.frame(b"abc") + framing.frame(b"") + framing.frame(bytes(300))
    assert reader.feed(stream[:4]) == []
    assert reader.feed(stream[4:10]) == [b"abc"]
    assert reader.feed(stream[10:]) == [bytes(300)]
    assert reader.pending == 0
    reader.feed(b"\xff\xff" + bytes(1000))
    assert reader.pending == 1002
    with pytest.raises(ValueError, match="does not fit"):
        framing.frame(bytes(framing.MAX_FRAME + 1))


def test_answer_parsing_keeps_tcp_passive_candidates_apart() -> None:
    answer = parse_answer(
        "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=ice-lite\r\na=ice-ufrag:abcd\r\n"
        "a=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=fingerprint:sha-256 AA:BB\r\na=setup:passive\r\n"
        "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\nc=IN IP4 127.0.0.1\r\na=mid:0\r\na=recvonly\r\na=rtpmap:111 opus/48000/2\r\n"
        "a=candidate:1 1 tcp 2124414975 127.0.0.1 4000 typ host tcptype passive\r\n"
        "a=candidate:2 1 tcp 2124414975 127.0.0.1 9 typ host tcptype active\r\n"
    )
    assert answer.candidates == [] and answer.tcp_candidates == [("127.0.0.1", 4000)]


@pytest.mark.alone  # no freeze, jitter, RTT or time to first frame of a clean call on a busy CPU
async def test_bots_call_over_ipv6_loopback_on_udp_and_on_tcp(media) -> None:
    server = await start_server(ServerConfig(host="::1", port=0, rtc_ports=(0, 0), consent_timeout=5.0, ice_tcp=True))
    try:
        assert server.url.startswith("ws://[::1]:")
        for ice_tcp in (False, True):
            seen: set[str] = set()

            async def watch() -> None:
                while True:
                    await asyncio.sleep(0.5)
                    seen.update(f"{t.stats()['ice_protocol']} {t.connection.remote_addr[0]}" for t in server.worker.transports
                                if t.connection.remote_addr)

            watcher = asyncio.create_task(watch())
            report = await run_bots(BotsConfig(url=server.url, count=2, ramp=20, duration=3.0, media=media, seed=8, ice_tcp=ice_tcp))
            watcher.cancel()
            assert report.failed == 0
            assert_clean_call(report.bots)
            assert seen == {f"{'tcp' if ice_tcp else 'udp'} ::1"}
    finally:
        await server.close()


@pytest.mark.alone  # no freeze, jitter, RTT or time to first frame of a clean call on a busy CPU
async def test_bots_call_over_ice_tcp_on_a_server_with_two_workers(media) -> None:
    """Each worker process listens on TCP on its own media port; the ICE servers reach the workers too."""
    process, line = await start_serve("--port", "0", "--rtc-port-range", "0", "--workers", "2", "--ice-tcp", "--no-ice-udp",
                                      "--ice-server", "turn:127.0.0.1:3478", "--ice-username", "u", "--ice-credential", "p")
    try:
        match = re.search(r"signaling (ws://\S+) · media tcp \S+:(\d+),(\d+)", line)
        assert match, line
        client = await SignalingClient.connect(match[1])
        joined = await client.request("join", room="look", name="x")
        await client.close()
        assert joined["iceServers"] == [{"urls": ["turn:127.0.0.1:3478"], "username": "u", "credential": "p"}]
        report = await run_bots(BotsConfig(url=match[1], count=4, rooms=2, ramp=20, duration=3.0, media=media, seed=9, ice_tcp=True))
        assert report.failed == 0
        for room in ("room-1", "room-2"):
            assert_clean_call([bot for bot in report.bots if bot["room"] == room])
    finally:
        process.terminate()
        process.wait(10)


async def test_bots_restart_ice_over_tcp_from_new_connections_and_the_old_ones_close(media) -> None:
    server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0,
                                             ice_udp=False, ice_tcp=True))
    streams = server.worker.tcp
    assert streams is not None
    addresses: dict[str, set] = {}
    open_connections: list[int] = []

    async def watch() -> None:
        while True:
            for t in list(server.worker.transports):
                if t.connection.remote_addr is not None:
                    addresses.setdefault(t.id, set()).add(t.connection.remote_addr)
            open_connections.append(len(streams.by_address))
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        report = await run_bots(BotsConfig(url=server.url, count=2, ramp=20, duration=5.0, media=media, seed=11,
                                           ice_tcp=True, ice_restart_every=1.5))
    finally:
        watcher.cancel()
    try:
        assert report.failed == 0
        sent = {(bot["peer_id"], s["kind"]): s for bot in report.bots for s in bot["sent"]}
        for bot in report.bots:
            assert bot["status"] == "left" and bot["errors"] == [] and bot["ice_restarts"] >= 2  # both transports
            assert sorted(c["kind"] for c in bot["consumers"]) == ["audio", "video"]
            for consumer in bot["consumers"]:
                # Loss only around the switches (what the old connection still carried when the bot closed it).
                assert consumer["packets"] >= 0.8 * sent[(consumer["producer_peer"], consumer["kind"])]["packets"]
                assert consumer["packets_lost"] <= 0.03 * consumer["expected"], consumer
        # Each transport's path moved to a new TCP connection; an old one closed once its transport had moved:
        # never more than one extra connection per transport (the one being checked).
        assert len(addresses) == 4 and all(len(a) >= 2 for a in addresses.values()), addresses
        assert {a.__class__ for paths in addresses.values() for a in paths} == {ice_tcp.TcpAddress}
        assert max(open_connections) <= 8
        assert await wait_for(lambda: not streams.by_address, 5)
    finally:
        await server.close()


async def test_a_tcp_connect_that_gets_no_answer_fails_after_connect_timeout(monkeypatch) -> None:
    monkeypatch.setattr(framing, "CONNECT_TIMEOUT", 0.5)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)  # never accepted: past the first connection the kernel drops the SYNs
        first = await framing.connect_framed(listener.getsockname(), lambda packet: None)
        with pytest.raises(TimeoutError):
            await framing.connect_framed(listener.getsockname(), lambda packet: None)
        first.close()
