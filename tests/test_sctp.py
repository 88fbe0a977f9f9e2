"""SCTP data channels over sfuctl's own DTLS: DCEP, PPIDs, reliability, limits and hostile input, on real sockets."""

import asyncio
import os

import pytest

from sfuctl.rtc.dcep import (
    PPID_BINARY,
    PPID_BINARY_EMPTY,
    PPID_DCEP,
    PPID_STRING,
    PPID_STRING_EMPTY,
    ChannelParameters,
    decode_message,
    encode_message,
)
from sfuctl.rtc.sctp import SctpAssociation
from sfuctl.server.rate_limit import TokenBucket

from .test_connection import PeerFactory, connect, make_peer, wait_until  # noqa: F401


class Side:
    """An association with everything it reports recorded."""

    def __init__(self, connection, **kwargs) -> None:
        self.opened = asyncio.Event()
        self.channels: list[tuple[int, ChannelParameters]] = []
        self.messages: list[tuple[int, int, bytes]] = []
        self.closed: list[int] = []
        self.sctp = SctpAssociation(
            connection,
            on_open=self.opened.set,
            on_channel=lambda sid, p: self.channels.append((sid, p)),
            on_message=lambda sid, ppid, data: self.messages.append((sid, ppid, data)),
            on_channel_closed=self.closed.append,
            **kwargs,
        )


async def associate(make_peer: PeerFactory, **server_kwargs) -> tuple[Side, Side]:
    server, client = await connect(make_peer)
    a, b = Side(server.connection, **server_kwargs), Side(client.connection)
    a.sctp.start()
    b.sctp.start()
    await asyncio.wait_for(asyncio.gather(a.opened.wait(), b.opened.wait()), 10)
    return a, b


def test_dcep_open_round_trips_and_rejects_garbage() -> None:
    for p in (
        ChannelParameters("chat", "json"),
        ChannelParameters("fast", ordered=False, max_retransmits=0),
        ChannelParameters("ttl", max_packet_lifetime=500, priority=256),
    ):
        assert ChannelParameters.parse(bytes(p)) == p
    with pytest.raises(ValueError, match="shorter than its 12-byte header"):
        ChannelParameters.parse(b"\x03\x00")
    with pytest.raises(ValueError, match="not DATA_CHANNEL_OPEN"):
        ChannelParameters.parse(b"\x02" + bytes(11))
    with pytest.raises(ValueError, match="does not hold its label"):
        ChannelParameters.parse(bytes(ChannelParameters("chat"))[:-1])
    with pytest.raises(ValueError, match="unknown channel type"):
        ChannelParameters.parse(b"\x03\x05" + bytes(10))
    with pytest.raises(ValueError, match="not both"):
        ChannelParameters(max_retransmits=1, max_packet_lifetime=1)
    assert encode_message("") == (PPID_STRING_EMPTY, b"\x00")
    assert encode_message(b"") == (PPID_BINARY_EMPTY, b"\x00")
    for message in ("hi", b"\x00\x01", "", b""):
        assert decode_message(*encode_message(message)) == message
    with pytest.raises(ValueError, match="PPID 50"):
        decode_message(PPID_DCEP, b"\x03")


async def test_channels_open_on_each_side_parity_and_carry_every_ppid(make_peer: PeerFactory) -> None:
    server, client = await associate(make_peer)
    assert client.sctp.is_client and not server.sctp.is_client
    chat = client.sctp.open_channel(ChannelParameters("chat", "text"))
    down = server.sctp.open_channel(ChannelParameters("down", ordered=False, max_retransmits=0))
    assert chat % 2 == 0 and down % 2 == 1
    await wait_until(lambda: server.channels and client.channels)
    assert server.channels == [(chat, ChannelParameters("chat", "text"))]
    assert client.channels == [(down, ChannelParameters("down", ordered=False, max_retransmits=0))]
    sent = [(PPID_STRING, b"hello"), (PPID_BINARY, b"\x00\xff"), (PPID_STRING_EMPTY, b"\x00"), (PPID_BINARY_EMPTY, b"\x00")]
    for ppid, payload in sent:
        assert client.sctp.send(chat, ppid, payload)
        assert server.sctp.send(down, ppid, payload)
    await wait_until(lambda: len(server.messages) == len(client.messages) == 4)
    assert server.messages == [(chat, ppid, payload) for ppid, payload in sent]
    assert sorted(client.messages) == sorted((down, ppid, payload) for ppid, payload in sent)
    client.sctp.close_channel(chat)
    await wait_until(lambda: server.closed == [chat] and client.closed == [chat])
    assert not client.sctp.send(chat, PPID_STRING, b"late")
    client.sctp.close()
    server.sctp.close()


async def test_large_messages_arrive_whole_and_the_sender_honours_the_remote_limit(make_peer: PeerFactory) -> None:
    server, client = await associate(make_peer)
    chat = client.sctp.open_channel(ChannelParameters("chat"))
    whole = os.urandom(65536)
    assert client.sctp.send(chat, PPID_BINARY, whole)
    assert not client.sctp.send(chat, PPID_BINARY, whole + b"!")  # over the 64 KiB the remote announced
    assert client.sctp.send(chat, PPID_STRING, b"after")
    await wait_until(lambda: len(server.messages) == 2)
    assert server.messages == [(chat, PPID_BINARY, whole), (chat, PPID_STRING, b"after")]


async def test_hostile_input_is_counted_and_changes_nothing(make_peer: PeerFactory) -> None:
    server, client = await associate(make_peer)
    chat = client.sctp.open_channel(ChannelParameters("chat"))
    await wait_until(lambda: len(server.channels) == 1)
    rng = __import__("random").Random(7)
    for _ in range(200):
        client.sctp.connection.send_data(rng.randbytes(rng.randint(1, 300)))
    # A DCEP OPEN for a stream in use, one of the server's parity, an unknown PPID, a message on no channel.
    client.sctp._run(client.sctp._machine._send(chat, PPID_DCEP, bytes(ChannelParameters("again"))))
    client.sctp._run(client.sctp._machine._send(chat + 1, PPID_DCEP, bytes(ChannelParameters("odd"))))
    client.sctp._run(client.sctp._machine._send(chat, 99, b"?"))
    client.sctp._run(client.sctp._machine._send(200, PPID_STRING, b"nobody"))
    assert client.sctp.send(chat, PPID_STRING, b"still here")
    await wait_until(lambda: server.messages)
    assert server.messages == [(chat, PPID_STRING, b"still here")]
    assert server.channels == [(chat, ChannelParameters("chat"))]
    assert server.sctp.invalid_messages == 4
    assert server.sctp.state == "open"


def test_token_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=10, burst=5, now=0.0)
    assert [bucket.take(0.0) for _ in range(6)] == [True] * 5 + [False]
    assert bucket.take(0.1) and not bucket.take(0.1)  # 0.1 s at 10/s: one more
    assert sum(bucket.take(10.0) for _ in range(10)) == 5  # never more than the burst saved up
    assert all(TokenBucket(rate=0, burst=1, now=0.0).take(0.0) for _ in range(100))  # 0: no limit
    with pytest.raises(ValueError):
        TokenBucket(rate=-1, burst=1, now=0.0)
