"""RFC 4571 framing: STUN, DTLS and SRTP packets over a TCP stream (ICE-TCP, RFC 6544), each prefixed with its
16-bit length, so that the datagram code above runs unchanged."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

# The largest packet one frame can carry (the 16-bit length field).
MAX_FRAME = 0xFFFF
# Bytes queued per connection before packets are dropped: ~200 ms of a 10 Mbit/s stream. A reader slower than
# that loses packets (NACK and keyframe requests recover), as a congested UDP path would, instead of the
# sender's memory growing or its event loop waiting.
WRITE_BUFFER_MAX = 256 * 1024
# A TCP connect that has not completed after this long fails (asyncio.TimeoutError), instead of waiting out the
# kernel's SYN retries (about 2 minutes) towards a candidate that drops them.
CONNECT_TIMEOUT = 10.0


def frame(packet: bytes) -> bytes:
    """`packet` with its RFC 4571 length prefix; ValueError when it does not fit in one frame."""
    size = len(packet)
    if size > MAX_FRAME:
        raise ValueError(f"a {size}-byte packet does not fit in an RFC 4571 frame ({MAX_FRAME} bytes at most)")
    return size.to_bytes(2, "big") + packet


class FrameReader:
    """Cuts a TCP byte stream into packets; holds at most one partial frame (2 + 65535 bytes)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def pending(self) -> int:
        """Bytes received that do not complete a frame yet."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """The packets `data` completes (empty frames are skipped), in order."""
        buffer = self._buffer + data if self._buffer else data
        packets = []
        pos = 0
        end = len(buffer)
        while end - pos >= 2:
            size = (buffer[pos] << 8) | buffer[pos + 1]
            if end - pos - 2 < size:
                break
            if size:
                packets.append(buffer[pos + 2 : pos + 2 + size])
            pos += 2 + size
        self._buffer = buffer[pos:]
        return packets


class FramedStream(asyncio.Protocol):
    """One TCP connection carrying RFC 4571 frames: each complete packet to `packet_received` (`on_packet`);
    `send` frames a packet and never blocks (dropped and counted in `dropped` past WRITE_BUFFER_MAX queued bytes)."""

    def __init__(self, on_packet: Callable[[bytes], None] | None = None) -> None:
        self.transport: asyncio.Transport | None = None
        self.dropped = 0
        self._reader = FrameReader()
        self._on_packet = on_packet

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        for packet in self._reader.feed(data):
            if self.transport is None or self.transport.is_closing():
                return
            self.packet_received(packet)

    def packet_received(self, packet: bytes) -> None:
        """One packet out of the stream: to `on_packet` (subclasses may take it themselves)."""
        if self._on_packet is not None:
            self._on_packet(packet)

    def send(self, packet: bytes) -> None:
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if transport.get_write_buffer_size() > WRITE_BUFFER_MAX:
            self.dropped += 1
            return
        transport.write(frame(packet))

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def connect_framed(addr: tuple, on_packet: Callable[[bytes], None], receive_buffer: int | None = None) -> FramedStream:
    """An RFC 4571 stream to `addr` (host, port), e.g. an ICE-TCP passive candidate, connected within
    CONNECT_TIMEOUT; `receive_buffer` sets the socket's SO_RCVBUF before connecting (a small one makes a slow
    reader in tests)."""
    loop = asyncio.get_running_loop()
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        if receive_buffer is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
        sock.setblocking(False)
        await asyncio.wait_for(loop.sock_connect(sock, addr[:2]), CONNECT_TIMEOUT)
        _, stream = await loop.create_connection(lambda: FramedStream(on_packet), sock=sock)
    except BaseException:
        sock.close()
        raise
    return stream
