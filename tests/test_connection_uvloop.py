"""Connection on uvloop, whose call_at returns a plain Handle (no when()) for a deadline under a millisecond
away: a STUN datagram handled before that handle runs must not break the connection."""

from __future__ import annotations

import asyncio

import uvloop
from aioice import stun

from sfuctl.rtc.connection import open_client_connection
from sfuctl.rtc.ice import IceParameters


def binding_request(username: str, pwd: str) -> bytes:
    message = stun.Message(message_method=stun.Method.BINDING, message_class=stun.Class.REQUEST)
    message.attributes["USERNAME"] = username
    message.attributes["PRIORITY"] = 1
    message.attributes["ICE-CONTROLLED"] = 1
    message.add_message_integrity(pwd.encode())
    return bytes(message)


async def answer_a_check_while_the_ice_deadline_is_due() -> list[str]:
    states: list[str] = []
    connection, udp = await open_client_connection(
        on_rtp=lambda data: None, on_rtcp=lambda data: None, on_state=states.append, connect_timeout=0.0002
    )
    try:
        remote = ("127.0.0.1", 9)  # nothing answers there
        # The connect deadline is 0.2 ms away, the nearest one: uvloop arms the ICE timer as a plain Handle.
        connection.set_remote(IceParameters.random(), [("sha-256", "00" * 32)], "client", [remote])
        assert not isinstance(connection.timers[0], asyncio.TimerHandle)
        local = connection.local_ice
        # In the same callback, the remote's check arrives: answered, and the ICE timer is re-armed.
        connection.datagram_received(binding_request(f"{local.ufrag}:peer", local.pwd), remote)
        assert connection.packets_sent == 2  # the first check and the answer
        await asyncio.sleep(0.05)  # the due timer runs: the connect timeout fails the connection
        return states
    finally:
        connection.close()
        udp.close()


def test_a_check_handled_while_the_ice_timer_is_a_plain_handle() -> None:
    assert uvloop.run(answer_a_check_while_the_ice_deadline_is_due()) == ["connecting", "failed"]
