"""An IPv6 default route, which Chromium needs before it gathers a candidate on ::1.

Chromium (blink's IpcNetworkManager, --allow-loopback-in-peer-connection) adds its "loopback_ipv6" network only
when it knows a default local IPv6 address, and it keeps that address only when it is one of the host's listed
addresses (a non-loopback, non-link-local address on an interface that is up). The browser process finds it as
`default_ipv6_source` does: the source address of a UDP socket connected to a public IPv6 address. A loopback-only
host has no such address, so there the page offers 127.0.0.1 alone, whatever flag or field trial it is given.

In the loopback-only network namespace the test suite runs in (scripts/loopback), `ipv6_default_route` gives the
namespace a veth pair holding a unique-local address (fd00:5f::1) and routes IPv6 through it; no packet leaves the
namespace. Chromium then also gathers on fd00:5f::1, and prefers that network (an Ethernet adapter costs less than
its loopback network) although its candidates rank lower; so a policy rule forbids fd00:5f::1 to reach ::1, which
leaves ::1 to ::1 the only path to a server on ::1. A host that already has an IPv6 default route is left as it is.
The pair's name and the rules are the namespace's, which every worker of scripts/test shares: a test that uses this
runs `alone` (tests/conftest.py; every test with Chromium does).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

# Any global IPv6 address: connecting a UDP socket only looks its route up, it sends nothing.
ROUTE_PROBE = ("2001:db8::1", 53)
INTERFACE = "sfuctl6a"  # and its veth peer, INTERFACE's name ending in "b"
ADDRESS = "fd00:5f::1"  # unique-local (RFC 4193): never routed outside the namespace


def default_ipv6_source() -> str | None:
    """The source address this host would use for a global IPv6 destination (None without an IPv6 route)."""
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(ROUTE_PROBE)
        except OSError:
            return None
        return probe.getsockname()[0]


@contextmanager
def ipv6_default_route() -> Iterator[None]:
    """Make sure the host has an IPv6 default route while the block runs (see the module's docstring)."""
    source = default_ipv6_source()
    if source is not None and source != "::1":
        yield
        return
    if os.geteuid() != 0 or shutil.which("ip") is None or [name for _, name in socket.if_nameindex()] != ["lo"]:
        pytest.skip("no IPv6 default route, and not root in scripts/test's loopback-only network namespace to add one")
    peer = INTERFACE[:-1] + "b"
    setup = (
        f"link add {INTERFACE} type veth peer name {peer}",
        f"link set {peer} up",
        f"link set {INTERFACE} up",
        f"address add {ADDRESS}/64 dev {INTERFACE} nodad",
        f"-6 route add default dev {INTERFACE}",
        # The local table is looked up first (rule 0): move it after a rule that refuses fd00:5f::1 -> ::1.
        "-6 rule add pref 100 lookup local",
        "-6 rule del pref 0 lookup local",
        f"-6 rule add pref 10 from {ADDRESS} to ::1 prohibit",
    )
    teardown = (
        f"-6 rule del pref 10 from {ADDRESS} to ::1 prohibit",
        "-6 rule add pref 0 lookup local",
        "-6 rule del pref 100 lookup local",
        f"link del {INTERFACE}",
    )
    try:
        for command in setup:
            subprocess.run(["ip", *command.split()], check=True, capture_output=True, timeout=10)
        yield
    finally:
        for command in teardown:
            subprocess.run(["ip", *command.split()], capture_output=True, timeout=10)
