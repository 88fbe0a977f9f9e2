"""The bots bind their media sockets to the address this machine sends from towards the server."""

from __future__ import annotations

import pytest

from sfuctl.bots.config import BotsConfig
from sfuctl.client.source import source_address


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.7", "127.0.0.1"),  # the loopback route's source
        ("::1", "::1"),
        ("localhost", "127.0.0.1"),  # a name resolves in the family its form suggests: IPv4
        ("name.invalid", "127.0.0.1"),  # unresolvable: loopback, and the connection reports the real error
    ],
)
def test_source_address(host: str, expected: str) -> None:
    assert source_address(host) == expected


def test_an_unroutable_server_leaves_the_bots_on_loopback() -> None:
    # The tests' namespace has only loopback: no route to another network, so nothing to bind but loopback.
    assert source_address("192.0.2.10") == "127.0.0.1"
    assert BotsConfig(url="ws://[::1]:8080").local_host == "::1"
    assert BotsConfig(url="ws://127.0.0.1:8080").local_host == "127.0.0.1"
