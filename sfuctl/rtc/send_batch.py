"""SendBatch: the datagrams one event-loop callback sends on a UDP socket leave in one sendmmsg(2) call.

A worker fans each packet it receives out to every consumer; a sendto per copy interleaves the kernel's UDP send
path with the forwarding work, while one call for the whole fan-out costs less per datagram
(bench/forward_path.py, docs/performance.md). Python's socket module has no sendmmsg: on Linux it is called
through ctypes, on the datagram transport's own socket. `send` copies nothing yet; `flush` (the worker's, after
each datagram it received; else the loop's next round of callbacks) lays the datagrams out in one preallocated
buffer and sends them, over several calls when they are more than one takes. Elsewhere than Linux, while the
transport holds datagrams it could not send yet, or for what the kernel did not take (a full send buffer), the
datagrams go through the transport's sendto, which queues them in order as before.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import socket
import struct
import sys

log = logging.getLogger(__name__)

# Bytes one sendmmsg carries at the most: 1000 full-size datagrams (allocated once per socket).
BUFFER_SIZE = 1500 * 1000
# Datagrams one sendmmsg takes at the most (Linux's UIO_MAXIOV).
MAX_DATAGRAMS = 1024
# Remote addresses whose sockaddr is kept; past this many the cache starts over (peers come and go).
MAX_ADDRESSES = 4096

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


class SendBatch:
    """Sends on `transport` (a bound asyncio datagram transport); `send` has sendto's arguments."""

    def __init__(self, transport: asyncio.DatagramTransport, loop: asyncio.AbstractEventLoop) -> None:
        self.transport = transport
        self.loop = loop
        self.calls = 0  # sendmmsg calls made
        self.fallbacks = 0  # datagrams that went through the transport's sendto instead
        self._pending: list[tuple[bytes, tuple]] = []
        self._scheduled = False
        sock = transport.get_extra_info("socket")
        usable = sock is not None and _sendmmsg is not None and sock.family in (socket.AF_INET, socket.AF_INET6)
        self._fd = sock.fileno() if usable else -1
        self._family = sock.family if usable else socket.AF_INET
        self._buffer = bytearray(BUFFER_SIZE)
        self._base = ctypes.addressof((ctypes.c_char * BUFFER_SIZE).from_buffer(self._buffer))
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
        self._pending.append((data, addr))
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
        if self.transport.is_closing():  # as the transport's sendto would, once closed: nothing goes out
            return
        if self._fd < 0 or self.transport.get_write_buffer_size():
            self._fall_back(pending, 0)
            return
        if len(self._names) > MAX_ADDRESSES:
            self._names.clear()
        names, buffer, base = self._names, self._buffer, self._base
        iovecs, messages = self._iovec_bytes, self._message_bytes
        first = count = used = 0
        for data, addr in pending:
            size = len(data)
            if count == MAX_DATAGRAMS or used + size > BUFFER_SIZE:
                if not self._send(pending, first, count):
                    return
                first += count
                count = used = 0
            name = names.get(addr)
            if name is None:
                try:
                    name = names[addr] = self._name(addr, self._family)
                except (OSError, ValueError, TypeError, IndexError):  # not a numeric address: the transport's turn
                    self._fall_back([(data, addr)], 0)
                    continue
            buffer[used : used + size] = data
            _pack_iovec(iovecs, count * _IOVEC_SIZE, base + used, size)
            _pack_name(messages, count * _MMSGHDR_SIZE, name[1], name[2])
            used += size
            count += 1
        self._send(pending, first, count)

    def _send(self, pending: list[tuple[bytes, tuple]], first: int, count: int) -> bool:
        """sendmmsg the `count` datagrams laid out for pending[first:]; what the kernel did not take (and all
        after it) goes through the transport. False when that happened."""
        self.calls += 1
        sent = _sendmmsg(self._fd, ctypes.addressof(self._messages), count, socket.MSG_DONTWAIT)  # type: ignore[misc]
        if sent == count:
            return True
        self._fall_back(pending, first + max(0, sent))
        return False

    def _fall_back(self, pending: list[tuple[bytes, tuple]], start: int) -> None:
        self.fallbacks += len(pending) - start
        sendto = self.transport.sendto
        for data, addr in pending[start:]:
            try:
                sendto(data, addr)
            except (OSError, ValueError, TypeError) as exc:  # one unusable address must not hold up the others
                log.debug("datagram to %s dropped: %s", addr, exc)

    @staticmethod
    def _name(addr: tuple, family: int) -> tuple[ctypes.Array, int, int]:
        raw = sockaddr(addr, family)
        holder = ctypes.create_string_buffer(raw, len(raw))
        return holder, ctypes.addressof(holder), len(raw)
