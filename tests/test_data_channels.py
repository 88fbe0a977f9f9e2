"""Data channels through the SFU: DataProducers, DataConsumers, relaying by PPID, limits, hostile input, stats."""

from __future__ import annotations

import asyncio
import os

import aiohttp
import pytest

from aiortc.rtcsctptransport import DataChunk, tsn_plus_one
from google_crc32c import value as crc32c

from sfuctl.bots.data_peer import DataPeer
from sfuctl.client.signaling import SignalingClient, SignalingError
from sfuctl.rtc.dcep import PPID_BINARY, PPID_DCEP, PPID_STRING, ChannelParameters
from sfuctl.rtc.sctp import SctpAssociation
from sfuctl.server.app import RunningServer, start_server
from sfuctl.server.config import ServerConfig

from .test_connection import wait_until


@pytest.fixture
async def data_server() -> RunningServer:
    running = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0))
    yield running
    await running.close()


def flood(sctp: SctpAssociation, stream_id: int, count: int, payload: bytes, per_packet: int = 30) -> int:
    """Send `count` unordered messages bundled `per_packet` DATA chunks to an SCTP packet, as a hostile client
    would (a well-behaved one sends one per packet under congestion control); the number of packets."""
    machine = sctp._machine
    packets = 0
    for start in range(0, count, per_packet):
        body = b""
        for _ in range(min(per_packet, count - start)):
            chunk = DataChunk(flags=0x07)  # unordered, first and last fragment
            chunk.tsn, chunk.stream_id, chunk.protocol, chunk.user_data = machine._local_tsn, stream_id, PPID_STRING, payload
            machine._local_tsn = tsn_plus_one(machine._local_tsn)
            body += bytes(chunk)
        header = machine._local_port.to_bytes(2, "big") + machine._remote_port.to_bytes(2, "big")
        header += machine._remote_verification_tag.to_bytes(4, "big")
        checksum = crc32c(header + bytes(4) + body).to_bytes(4, "little")
        sctp.connection.send_data(header + checksum + body)
        packets += 1
    machine._last_sacked_tsn = machine._advanced_peer_ack_tsn = machine._local_tsn - 1
    return packets


async def room_stats(url: str, room: str) -> dict:
    client = await SignalingClient.connect(url)
    try:
        snapshot = await client.request("getStats", room=room)
    finally:
        await client.close()
    return snapshot["rooms"][0]


async def test_two_peers_chat_both_ways_with_every_message_kind(data_server: RunningServer) -> None:
    alice = await DataPeer.join(data_server.url, "chat", "alice")
    bob = await DataPeer.join(data_server.url, "chat", "bob")
    try:
        a_chat = alice.send.open("chat", protocol="text")
        b_chat = bob.send.open("chat", protocol="text")
        await wait_until(lambda: len(alice.consumers) == len(bob.consumers) == 1)
        (added,) = bob.consumers.values()
        assert added["label"] == "chat" and added["protocol"] == "text" and added["peerId"] == alice.peer_id
        assert added["streamId"] % 2 == 1  # the server is the DTLS server: odd stream ids (RFC 8832)
        assert [p["label"] for p in alice.producers] == ["chat"]
        messages = ["hello", b"\x00\x01binary", "", b"", "é" * 100]
        for message in messages:
            assert alice.send.send(a_chat, message)
            assert bob.send.send(b_chat, message)
        await wait_until(lambda: len(bob.messages) == len(alice.messages) == len(messages))
        assert bob.from_peer(alice) == messages
        assert alice.from_peer(bob) == messages
        stats = await room_stats(data_server.url, "chat")
        producer = next(p for p in stats["data_producers"] if p["peer"] == alice.peer_id)
        assert producer["messages_in"] == len(messages) and producer["dropped"] == 0
        consumer = next(c for c in stats["data_consumers"] if c["peer"] == bob.peer_id)
        assert consumer["messages_out"] == len(messages) and consumer["data_producer"] == producer["id"]
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{data_server.port}/metrics") as response:
                metrics = await response.text()
        assert f'sfuctl_data_received_messages_total{{kind="data",room="chat"}} {2 * len(messages)}.0' in metrics
        assert f'sfuctl_data_sent_messages_total{{kind="data",room="chat"}} {2 * len(messages)}.0' in metrics
        assert 'sfuctl_data_producers{room="chat"} 2.0' in metrics

        # A channel closed by its owner closes the consumers of it.
        alice.send.sctp.close_channel(a_chat)
        await wait_until(lambda: len(bob.closed_consumers) == 1)
        assert bob.closed_consumers[0]["dataProducerId"] == producer["id"]
    finally:
        await alice.close()
        await bob.close()


async def test_a_late_joiner_gets_the_existing_channels_and_leaving_closes_them(data_server: RunningServer) -> None:
    alice = await DataPeer.join(data_server.url, "late", "alice")
    chat = alice.send.open("chat")
    await wait_until(lambda: len(alice.producers) == 1)
    bob = await DataPeer.join(data_server.url, "late", "bob")
    try:
        await wait_until(lambda: len(bob.consumers) == 1)
        assert alice.send.send(chat, "for bob")
        await wait_until(lambda: bob.from_peer(alice) == ["for bob"])
        await alice.close()
        await wait_until(lambda: len(bob.closed_consumers) == 1)
    finally:
        await bob.close()


async def test_closing_a_data_producer_closes_its_consumers_and_only_its_owner_may(data_server: RunningServer) -> None:
    alice = await DataPeer.join(data_server.url, "close", "alice")
    bob = await DataPeer.join(data_server.url, "close", "bob")
    try:
        chat, reactions = alice.send.open("chat"), alice.send.open("reactions")
        await wait_until(lambda: len(alice.producers) == 2 and len(bob.consumers) == 2)
        chat_id = next(p["id"] for p in alice.producers if p["label"] == "chat")
        for who, wrong in ((bob, chat_id), (alice, "dp-nope"), (alice, 7)):
            with pytest.raises(SignalingError) as refused:
                await who.signaling.request("closeDataProducer", dataProducerId=wrong)
            assert refused.value.code == "not_found"
        assert await alice.signaling.request("closeDataProducer", dataProducerId=chat_id) == {}
        await wait_until(lambda: [c["dataProducerId"] for c in bob.closed_consumers] == [chat_id])
        assert not alice.send.send(chat, "too late")  # its stream was reset
        assert alice.send.send(reactions, "the other channel goes on")
        await wait_until(lambda: bob.from_peer(alice, "reactions") == ["the other channel goes on"])
        room = await room_stats(data_server.url, "close")
        assert [d["label"] for d in room["data_producers"]] == ["reactions"]
    finally:
        await alice.close()
        await bob.close()


async def test_64_kib_arrives_whole_and_bigger_is_dropped_and_counted(data_server: RunningServer) -> None:
    alice = await DataPeer.join(data_server.url, "big", "alice")
    bob = await DataPeer.join(data_server.url, "big", "bob")
    try:
        chat = alice.send.open("files")
        await wait_until(lambda: len(bob.consumers) == 1)
        assert alice.send.sctp.remote_max_message_size == 65536  # the server's a=max-message-size
        whole = os.urandom(65536)
        assert alice.send.send(chat, whole)
        assert not alice.send.send(chat, whole + b"!")  # a well-behaved client refuses it itself
        alice.send.sctp._run(alice.send.sctp._machine._send(chat, PPID_BINARY, whole + b"!"))  # one that does not
        assert alice.send.send(chat, "after")
        await wait_until(lambda: len(bob.messages) == 2)
        assert bob.from_peer(alice) == [whole, "after"]
        stats = await room_stats(data_server.url, "big")
        (producer,) = stats["data_producers"]
        assert producer["dropped_oversize"] == 1 and producer["messages_in"] == 3
    finally:
        await alice.close()
        await bob.close()


async def test_unordered_unreliable_under_loss_delivers_most_and_nothing_breaks(
    data_server: RunningServer, record_property
) -> None:
    alice = await DataPeer.join(data_server.url, "lossy", "alice", loss=0.05)
    bob = await DataPeer.join(data_server.url, "lossy", "bob", loss=0.05)
    try:
        fast = alice.send.open("fast", ordered=False, max_retransmits=0)
        await wait_until(lambda: len(bob.consumers) == 1, timeout=15)  # a lost DCEP OPEN is retransmitted
        assert next(iter(bob.consumers.values()))["maxRetransmits"] == 0
        sent = 300
        for seq in range(sent):  # 200 messages per second: within the server's default rate
            assert alice.send.send(fast, f"{seq}")
            if seq % 10 == 9:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
        got = [int(m) for m in bob.from_peer(alice)]
        ratio = len(got) / sent
        record_property("delivered_ratio", round(ratio, 3))
        # Two hops with 5% loss each way and no retransmission: about 90% arrive; far fewer means a broken relay.
        assert 0.7 < ratio < 1.0, ratio
        assert len(set(got)) == len(got) and set(got) <= set(range(sent))
        stats = await room_stats(data_server.url, "lossy")
        (producer,) = stats["data_producers"]
        (consumer,) = stats["data_consumers"]
        assert consumer["messages_out"] == producer["messages_in"] - producer["dropped"] >= len(got)
        states = {t["sctp_state"] for peer in stats["peers"] for t in peer["transports"]}
        assert states == {"open"}
    finally:
        await alice.close()
        await bob.close()


@pytest.fixture
async def strict_server() -> RunningServer:
    """A server whose peers may send 50 messages per second: a flood leaves little in the receivers' queues."""
    running = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), data_rate_limit=50.0))
    yield running
    await running.close()


async def test_flood_garbage_and_a_duplicate_open_are_counted_and_others_go_on(strict_server: RunningServer) -> None:
    data_server = strict_server
    alice = await DataPeer.join(data_server.url, "flood", "alice")
    bob = await DataPeer.join(data_server.url, "flood", "bob")
    carol = await DataPeer.join(data_server.url, "flood", "carol")
    try:
        channel = alice.send.open("flood")
        chat = carol.send.open("chat")
        await wait_until(lambda: len(bob.consumers) == 2)
        sctp = alice.send.sctp
        # Garbage: random DTLS application data, a DCEP OPEN for a stream in use, one of the server's parity.
        rng = __import__("random").Random(3)
        for _ in range(300):
            sctp.connection.send_data(rng.randbytes(rng.randint(1, 400)))
        sctp._run(sctp._machine._send(channel, PPID_DCEP, bytes(ChannelParameters("again"))))
        sctp._run(sctp._machine._send(channel + 1, PPID_DCEP, bytes(ChannelParameters("odd"))))
        for batch in range(0, 10_000, 600):
            flood(sctp, channel, 600 if batch + 600 <= 10_000 else 10_000 - batch, b"x" * 20)
            await asyncio.sleep(0.01)  # lets the server read its socket (it shares this process)
        # The flood fills the worker's one socket for everyone: let the server work through what it holds
        # (~1 s of an idle core), then the others' messages must flow again, and alice's too.
        producer = next(p for p in strict_server.worker.routers["flood"].data_producers.values() if p.peer.id == alice.peer_id)
        seen = -1
        while producer.messages_in != seen:
            seen = producer.messages_in
            await asyncio.sleep(0.5)
        assert carol.send.send(chat, "still talking")
        assert alice.send.send(channel, "alice is still connected")
        await wait_until(lambda: bob.from_peer(carol) == ["still talking"], timeout=30)
        await wait_until(lambda: "alice is still connected" in bob.from_peer(alice), timeout=30)

        stats = await room_stats(data_server.url, "flood")
        producer = next(p for p in stats["data_producers"] if p["peer"] == alice.peer_id)
        # Loopback may drop some of the burst; most arrive, and all but the rate's worth are dropped.
        assert 5_000 < producer["messages_in"] <= 10_001
        assert producer["dropped_rate"] > producer["messages_in"] - 500
        consumer = next(c for c in stats["data_consumers"] if c["data_producer"] == producer["id"])
        # What passed the limits went to bob's association, or was dropped there when ~1.2 MB already waited.
        assert consumer["messages_out"] + consumer["dropped"] == producer["messages_in"] - producer["dropped"]
        assert len(bob.from_peer(alice)) == consumer["messages_out"]
        transport = next(
            t for peer in stats["peers"] if peer["id"] == alice.peer_id for t in peer["transports"] if t["data_channels"]
        )
        assert transport["data_invalid"] >= 2 and transport["sctp_state"] == "open"
        assert len(alice.producers) == 1  # the duplicate OPEN made no second producer
    finally:
        for peer in (alice, bob, carol):
            await peer.close()
