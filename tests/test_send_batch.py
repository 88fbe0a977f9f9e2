"""SendBatch on real loopback sockets: every datagram arrives whole, in order per destination, at its own address,
whether it left in one sendmmsg, in several (more than one call takes), or through the transport's sendto."""

from __future__ import annotations

import asyncio
import os
import socket

import pylibsrtp
import pytest

from sfuctl.rtc import send_batch
from sfuctl.rtc.rtp import build_packet
from sfuctl.rtc.send_batch import SendBatch, sockaddr, srtp_context


class Sink(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.received: list[bytes] = []

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        self.received.append(data)


async def endpoints(count: int, host: str = "127.0.0.1") -> tuple[asyncio.DatagramTransport, list[tuple], list[Sink]]:
    """A sending transport and `count` receiving ones (1 MB receive buffers: nothing overflows)."""
    loop = asyncio.get_running_loop()
    sender, _ = await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=(host, 0))
    addrs, sinks = [], []
    for _ in range(count):
        transport, sink = await loop.create_datagram_endpoint(Sink, local_addr=(host, 0))
        transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        addrs.append(transport.get_extra_info("sockname"))
        sinks.append(sink)
    return sender, addrs, sinks


async def drained(sinks: list[Sink], expected: int) -> None:
    for _ in range(200):
        if sum(len(s.received) for s in sinks) >= expected:
            return
        await asyncio.sleep(0.01)


async def test_a_callbacks_fan_out_leaves_in_one_call_once_the_callback_is_over() -> None:
    sender, addrs, sinks = await endpoints(3)
    batch = SendBatch(sender, asyncio.get_running_loop())
    datagrams = [(os.urandom(20 + number), addrs[number % 3]) for number in range(30)]
    for data, addr in datagrams:
        batch.send(data, addr)
    assert batch.calls == 0  # nothing leaves before the loop runs again
    await asyncio.sleep(0)
    await drained(sinks, 30)
    assert (batch.calls, batch.fallbacks) == (1, 0)
    for index, sink in enumerate(sinks):
        assert sink.received == [data for data, addr in datagrams if addr == addrs[index]]
    sender.close()


@pytest.mark.parametrize("count, size", [(send_batch.MAX_DATAGRAMS + 5, 100), (40, 60_000)])
async def test_more_than_one_call_takes_is_split_over_calls(count: int, size: int) -> None:
    sender, addrs, sinks = await endpoints(2)
    batch = SendBatch(sender, asyncio.get_running_loop())
    datagrams = [(number.to_bytes(4, "big") + bytes(size - 4), addrs[number % 2]) for number in range(count)]
    for data, addr in datagrams:
        batch.send(data, addr)
    batch.flush()
    await drained(sinks, count)
    assert batch.calls >= 2 and batch.fallbacks == 0
    for index, sink in enumerate(sinks):
        assert sink.received == [data for data, addr in datagrams if addr == addrs[index]]
    sender.close()


async def test_without_sendmmsg_or_with_a_name_it_cannot_pack_the_transport_sends() -> None:
    sender, addrs, sinks = await endpoints(2)
    batch = SendBatch(sender, asyncio.get_running_loop())
    batch.send(b"first", addrs[0])
    batch.send(b"odd", ("localhost", addrs[1][1]))  # a host name: no sockaddr without a lookup
    batch.send(b"last", addrs[0])
    batch.flush()
    await drained(sinks, 3)
    assert (batch.calls, batch.fallbacks) == (1, 1)
    assert (sinks[0].received, sinks[1].received) == ([b"first", b"last"], [b"odd"])
    batch._fd = -1  # as where libc has no sendmmsg
    batch.send(b"plain", addrs[1])
    batch.flush()
    await drained(sinks, 4)
    assert (batch.calls, batch.fallbacks, sinks[1].received) == (1, 2, [b"odd", b"plain"])
    sender.close()


async def test_ipv6_destinations() -> None:
    try:
        sender, addrs, sinks = await endpoints(2, "::1")
    except OSError as exc:  # a machine without IPv6 loopback
        pytest.skip(f"no ::1: {exc}")
    batch = SendBatch(sender, asyncio.get_running_loop())
    for number in range(6):
        batch.send(bytes([number]), addrs[number % 2])
    batch.flush()
    await drained(sinks, 6)
    assert (batch.calls, sinks[0].received, sinks[1].received) == (1, [b"\0", b"\2", b"\4"], [b"\1", b"\3", b"\5"])
    sender.close()


def test_sockaddr_layouts() -> None:
    assert sockaddr(("127.0.0.1", 0x1234), socket.AF_INET) == (
        socket.AF_INET.to_bytes(2, "little") + b"\x12\x34" + bytes([127, 0, 0, 1]) + bytes(8)
    )
    mapped = sockaddr(("10.0.0.5", 80), socket.AF_INET6)
    assert len(mapped) == 28 and mapped[8:24] == socket.inet_pton(socket.AF_INET6, "::ffff:10.0.0.5")
    assert sockaddr(("::1", 80, 0, 3), socket.AF_INET6)[24:] == (3).to_bytes(4, "little")
    with pytest.raises(OSError):
        sockaddr(("localhost", 80), socket.AF_INET)


def _outbound_session(key: bytes) -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=key, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND,
                              srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AEAD_AES_128_GCM)
    return pylibsrtp.Session(policy)


async def test_rtp_protected_in_the_batch_is_what_the_session_protects_and_a_refused_packet_sends_nothing() -> None:
    sender, addrs, sinks = await endpoints(2)
    batch = SendBatch(sender, asyncio.get_running_loop())
    key = os.urandom(28)
    context, reference = srtp_context(_outbound_session(key)), _outbound_session(key)
    assert context is not None
    packets = [build_packet(96, seq, seq * 3000, 0x1234, os.urandom(100 + seq), False) for seq in range(6)]
    sizes = [batch.send_rtp(context, packet, addrs[number % 2]) for number, packet in enumerate(packets)]
    assert batch.send_rtp(context, b"\x80\x60", addrs[0]) == -1  # no RTP header: libsrtp refuses it
    # Each packet was protected in place on a 32-bit boundary, as libsrtp requires (their sizes are odd and even).
    assert [offset % 4 for offset, _, _ in batch._pending] == [0] * 6
    batch.flush()
    await drained(sinks, 6)
    expected = [reference.protect(packet) for packet in packets]
    assert sizes == [len(data) for data in expected] and batch.calls == 1
    assert (sinks[0].received, sinks[1].received) == (expected[0::2], expected[1::2])
    sender.close()


async def test_rtp_that_does_not_fit_in_one_call_sends_what_is_laid_out_first() -> None:
    sender, addrs, sinks = await endpoints(2)
    batch = SendBatch(sender, asyncio.get_running_loop())
    context, reference = srtp_context(_outbound_session(bytes(28))), _outbound_session(bytes(28))
    assert context is not None
    count = send_batch.MAX_DATAGRAMS + 10
    packets = [build_packet(96, seq, 0, 1, bytes(100), False) for seq in range(count)]
    for number, packet in enumerate(packets):
        batch.send_rtp(context, packet, addrs[number % 2])
    assert batch.calls == 1  # the first call's worth left during the callback, the rest waits for its end
    batch.flush()
    await drained(sinks, count)
    expected = [reference.protect(packet) for packet in packets]
    assert batch.calls == 2 and (sinks[0].received, sinks[1].received) == (expected[0::2], expected[1::2])
    sender.close()
