"""SendBatch: the datagrams one event-loop callback sends on a UDP socket leave in one sendmmsg(2) call.

A worker fans each packet it receives out to every consumer; a sendto per copy interleaves the kernel's UDP send
path with the forwarding work, while one call for the whole fan-out costs less per datagram
(bench/forward_path.py, docs/performance.md). Python's socket module has no sendmmsg: on Linux it is called
through ctypes, on the datagram transport's own socket. `send` lays each datagram out in one preallocated
buffer; `send_rtp` copies an RTP packet there and SRTP-protects it in place (through pylibsrtp's own binding to
libsrtp: its `protect` allocates a length, copies the packet into its buffer and out into a new bytes object,
which the batch then copied again). `flush` (the worker's, after each datagram it received; else the loop's next
round of callbacks) sends what is laid out; a datagram that does not fit sends what is there first. Elsewhere
than Linux, while the transport holds datagrams it could not send yet, or for what the kernel did not take (a
full send buffer), the datagrams go through the transport's sendto, which queues them in order as before.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import socket
import struct
import sys
from typing import Any

import pylibsrtp

try:
    from pylibsrtp._binding import ffi as _ffi, lib as _libsrtp
except ImportError:  # a pylibsrtp without its cffi binding: packets are protected by its own `protect`
    _ffi = _libsrtp = None
# libsrtp 2's srtp_protect(context, packet, in/out length), which send_rtp calls; another signature (libsrtp 3
# takes separate input and output buffers) means packets are protected by the session's own `protect`.
SRTP_PROTECT = "srtp_err_status_t(*)(struct srtp_ctx_t_ *, void *, int *)"
if _ffi is not None and _ffi.typeof(_libsrtp.srtp_protect).cname != SRTP_PROTECT:
    _ffi = _libsrtp = None

log = logging.getLogger(__name__)

# Bytes one sendmmsg carries at the most: 1000 full-size datagrams (allocated once per socket).
BUFFER_SIZE = 1500 * 1000
# Datagrams one sendmmsg takes at the most (Linux's UIO_MAXIOV).
MAX_DATAGRAMS = 1024
# Remote addresses whose sockaddr is kept; past this many the cache starts over (peers come and go).
MAX_ADDRESSES = 4096
# Packets are laid out on 4-byte boundaries in the buffer: libsrtp protects a packet in place and documents that
# it must be 32-bit aligned.
ALIGN_MASK = 3
# Bytes SRTP protection may add to a packet: a 16-byte authentication tag and an MKI of up to 128 (libsrtp's
# SRTP_MAX_TRAILER_LEN, which pylibsrtp reserves too).
SRTP_TRAILER = 16 + 128

# Linux's struct layouts below; elsewhere every datagram goes through the transport.
_sendmmsg = getattr(ctypes.CDLL(ctypes.util.find_library("c")), "sendmmsg", None) if sys.platform == "linux" else None
if _sendmmsg is not None:
    _sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
    _sendmmsg.restype = ctypes.c_int


class _Iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("length", ctypes.c_size_t)]


class _Msghdr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_void_p), ("namelen", ctypes.c_uint32), ("iov", ctypes.c_void_p), ("iovlen", ctypes.c_size_t),
        ("control", ctypes.c_void_p), ("controllen", ctypes.c_size_t), ("flags", ctypes.c_int),
    ]


class _Mmsghdr(ctypes.Structure):
    _fields_ = [("hdr", _Msghdr), ("sent", ctypes.c_uint)]


_IOVEC_SIZE = ctypes.sizeof(_Iovec)
_MMSGHDR_SIZE = ctypes.sizeof(_Mmsghdr)
_pack_iovec = struct.Struct("PN").pack_into  # base, length
_pack_name = struct.Struct("PI").pack_into  # a message's sockaddr pointer and length
_pack_port = struct.Struct("!H").pack
_pack_family = struct.Struct("=H").pack
_pack_flowinfo = struct.Struct("!I").pack
_pack_scope = struct.Struct("=I").pack


def sockaddr(addr: tuple, family: int) -> bytes:
    """The struct sockaddr_in (family AF_INET) or sockaddr_in6 (AF_INET6: an IPv4 host is IPv4-mapped) of a
    numeric (host, port[, flowinfo, scope_id]) address; OSError when it is not one."""
    host, port = addr[0], addr[1]
    if family == socket.AF_INET:
        return _pack_family(family) + _pack_port(port) + socket.inet_pton(family, host) + bytes(8)
    flowinfo, scope_id = (addr[2], addr[3]) if len(addr) == 4 else (0, 0)
    if ":" not in host:
        host = "::ffff:" + host
    return (_pack_family(family) + _pack_port(port) + _pack_flowinfo(flowinfo)
            + socket.inet_pton(family, host) + _pack_scope(scope_id))  # fmt: skip


class SrtpContext:
    """The libsrtp context of a pylibsrtp send session, for SendBatch.send_rtp; it holds the session, which owns
    (and frees) the context."""

    __slots__ = ("session", "pointer")

    def __init__(self, session: pylibsrtp.Session, pointer: Any) -> None:
        self.session = session
        self.pointer = pointer


def srtp_context(session: pylibsrtp.Session) -> SrtpContext | None:
    """What `SendBatch.send_rtp` protects with for `session`; None when pylibsrtp does not expose its context
    (then protect with the session itself)."""
    handle = getattr(session, "_srtp", None)
    return SrtpContext(session, handle[0]) if handle is not None and _libsrtp is not None else None


class SendBatch:
    """Sends on `transport` (a bound asyncio datagram transport); `send` has sendto's arguments."""

    def __init__(self, transport: asyncio.DatagramTransport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.calls = 0  # sendmmsg calls made
        self.fallbacks = 0  # datagrams that went through the transport's sendto instead
        self._pending: list[tuple[int, int, tuple]] = []  # (offset in the buffer, size, address)
        self._used = 0  # bytes of the buffer laid out
        self._scheduled = False
        sock = transport.get_extra_info("socket")
        usable = sock is not None and _sendmmsg is not None and sock.family in (socket.AF_INET, socket.AF_INET6)
        self._fd = sock.fileno() if usable else -1
        self._family = sock.family if usable else socket.AF_INET
        self._buffer = bytearray(BUFFER_SIZE)
        self._base = ctypes.addressof((ctypes.c_char * BUFFER_SIZE).from_buffer(self._buffer))
        self._view = memoryview(self._buffer)
        self._srtp_buffer = _ffi.from_buffer(self._buffer) if _ffi is not None else None
        self._srtp_length = _ffi.new("int *") if _ffi is not None else None
        self._iovecs = (_Iovec * MAX_DATAGRAMS)()
        self._messages = (_Mmsghdr * MAX_DATAGRAMS)()
        for iovec, message in zip(self._iovecs, self._messages):
            message.hdr.iov = ctypes.addressof(iovec)
            message.hdr.iovlen = 1
        self._iovec_bytes = memoryview(self._iovecs).cast("B")
        self._message_bytes = memoryview(self._messages).cast("B")
        self._names: dict[tuple, tuple[ctypes.Array, int, int]] = {}  # addr -> (its sockaddr, address, length)

    def send(self, data: bytes, addr: tuple) -> None:
        """Send `data` to `addr` once the current callback is over."""
        size = len(data)
        used = self._room(size)
        self._buffer[used : used + size] = data
        self._queue(used, size, addr)

    def send_rtp(self, context: SrtpContext, packet: bytes, addr: tuple) -> int:
        """Protect the RTP `packet` with the libsrtp context `context` (srtp_context) in the batch's buffer and send
        it to `addr` once the current callback is over: its protected size, or -1 when SRTP refused it (nothing is
        sent). Hot path (once per consumer per packet): `_room` and `_queue` are inlined."""
        size = len(packet)
        used = self._used
        if len(self._pending) == MAX_DATAGRAMS or used + size + SRTP_TRAILER > BUFFER_SIZE:
            used = self._room(size + SRTP_TRAILER)
        self._buffer[used : used + size] = packet
        length = self._srtp_length
        length[0] = size
        if _libsrtp.srtp_protect(context.pointer, self._srtp_buffer + used, length):  # type: ignore[union-attr]
            return -1
        size = length[0]
        self._pending.append((used, size, addr))
        self._used = (used + size + ALIGN_MASK) & ~ALIGN_MASK
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)
        return size

    def _room(self, size: int) -> int:
        """Where `size` more bytes go: what is laid out leaves first when they would not fit in the buffer or the
        call."""
        if len(self._pending) == MAX_DATAGRAMS or self._used + size > BUFFER_SIZE:
            self.flush()
        return self._used

    def _queue(self, offset: int, size: int, addr: tuple) -> None:
        self._pending.append((offset, size, addr))
        self._used = (offset + size + ALIGN_MASK) & ~ALIGN_MASK
        if not self._scheduled:
            self._scheduled = True
            self.loop.call_soon(self.flush)

    def flush(self) -> None:
        """Send everything pending now."""
        self._scheduled = False
        pending = self._pending
        if not pending:
            return
        self._pending = []
        self._used = 0
        if self.transport.is_closing():  # as the transport's sendto would, once closed: nothing goes out
            return
        if self._fd < 0 or self.transport.get_write_buffer_size():
            self._fall_back(pending, 0)
            return
        if len(self._names) > MAX_ADDRESSES:
            self._names.clear()
        names, base = self._names, self._base
        iovecs, messages = self._iovec_bytes, self._message_bytes
        count = unnamed = 0
        for offset, size, addr in pending:
            name = names.get(addr)
            if name is None:
                try:
                    name = names[addr] = self._name(addr, self._family)
                except (OSError, ValueError, TypeError, IndexError):  # not a numeric address: the transport's turn
                    self._fall_back([(offset, size, addr)], 0)
                    unnamed += 1
                    continue
            _pack_iovec(iovecs, count * _IOVEC_SIZE, base + offset, size)
            _pack_name(messages, count * _MMSGHDR_SIZE, name[1], name[2])
            count += 1
        if count:
            self._send(pending if not unnamed else [entry for entry in pending if entry[2] in names], count)

    def _send(self, laid_out: list[tuple[int, int, tuple]], count: int) -> None:
        """sendmmsg the `count` datagrams laid out; what the kernel did not take (and all after it) goes through
        the transport."""
        self.calls += 1
        sent = _sendmmsg(self._fd, ctypes.addressof(self._messages), count, socket.MSG_DONTWAIT)  # type: ignore[misc]
        if sent != count:
            self._fall_back(laid_out, max(0, sent))

    def _fall_back(self, pending: list[tuple[int, int, tuple]], start: int) -> None:
        self.fallbacks += len(pending) - start
        sendto, view = self.transport.sendto, self._view
        for offset, size, addr in pending[start:]:
            try:
                sendto(bytes(view[offset : offset + size]), addr)
            except (OSError, ValueError, TypeError) as exc:  # one unusable address must not hold up the others
                log.debug("datagram to %s dropped: %s", addr, exc)

    @staticmethod
    def _name(addr: tuple, family: int) -> tuple[ctypes.Array, int, int]:
        raw = sockaddr(addr, family)
        holder = ctypes.create_string_buffer(raw, len(raw))
        return holder, ctypes.addressof(holder), len(raw)
