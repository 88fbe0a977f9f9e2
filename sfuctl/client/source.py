"""Which local address a client's media sockets bind: the one this machine sends from towards the server."""

from __future__ import annotations

import functools
import socket

DISCARD_PORT = 9  # any port does: connecting a UDP socket only picks a route, nothing is sent


@functools.lru_cache(maxsize=16)
def source_address(host: str) -> str:
    """The local address the kernel picks to reach `host` (an IP address or a name, resolved in the family its
    form suggests: IPv6 only for a literal with ':'): loopback for a server on this machine, the outgoing
    interface's address for one elsewhere, where a socket bound to loopback could not send. Loopback when no
    route or name resolves (the connection attempt then reports the real error)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        (family, kind, _, _, address), *_ = socket.getaddrinfo(host, DISCARD_PORT, family, socket.SOCK_DGRAM)
        with socket.socket(family, kind) as probe:
            probe.connect(address)
            return str(probe.getsockname()[0])
    except OSError:
        return "::1" if family == socket.AF_INET6 else "127.0.0.1"
