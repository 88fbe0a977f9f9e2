"""Listening TCP sockets for signaling and ICE-TCP: on `--host ::` they take IPv4 (as ::ffff:a.b.c.d) as well as
IPv6, as the UDP media port bound there does. asyncio alone sets IPV6_V6ONLY on every IPv6 listening socket."""

from __future__ import annotations

import socket

from aiohttp import web

# The unspecified IPv6 address: a host bound there is dual-stack.
DUAL_STACK_HOST = "::"
# Connections waiting to be accepted (aiohttp's default).
BACKLOG = 128


def dual_stack_socket(port: int) -> socket.socket:
    """A non-blocking TCP socket listening on [::]:`port` (0: a free port) for IPv6 and IPv4 alike."""
    sock = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((DUAL_STACK_HOST, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def web_site(runner: web.AppRunner, host: str, port: int) -> web.BaseSite:
    """The aiohttp site for `host`:`port`: one dual-stack socket on `::`, else aiohttp's own. OSError when taken."""
    if host == DUAL_STACK_HOST:
        return web.SockSite(runner, dual_stack_socket(port))
    return web.TCPSite(runner, host, port)
