"""The `relay` signaling method: a peer's message reaches another peer of its room, and only there."""

from __future__ import annotations

import asyncio

import pytest

from sfuctl.client.signaling import SignalingClient, SignalingError

from .test_forwarding import next_notification


async def test_relay_reaches_the_named_peer_of_the_room_only(server) -> None:
    clients = [await SignalingClient.connect(server.url) for _ in range(3)]
    try:
        alice = await clients[0].request("join", room="mesh", name="alice")
        bob = await clients[1].request("join", room="mesh", name="bob")
        await clients[2].request("join", room="elsewhere", name="eve")
        data = {"type": "offer", "sdp": "v=0\r\n", "nested": [1, {"x": None}]}
        assert await clients[0].request("relay", to=bob["peerId"], data=data) == {}
        relayed = await next_notification(clients[1], "relayed", 5.0)
        assert relayed == {"from": alice["peerId"], "data": data}
        await clients[1].request("relay", to=alice["peerId"], data={"type": "answer"})
        assert (await next_notification(clients[0], "relayed", 5.0))["data"] == {"type": "answer"}
        await asyncio.sleep(0.2)
        assert all(name != "relayed" for name, _ in _drain(clients[2]))
    finally:
        for client in clients:
            await client.close()


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"to": "peer-nope", "data": {}}, "not_found"),
        ({"to": "OTHER_ROOM", "data": {}}, "not_found"),
        ({"to": "SELF", "data": {}}, "not_found"),
        ({"to": 7, "data": {}}, "bad_request"),
        ({"to": "PEER", "data": "text"}, "bad_request"),
        ({"to": "PEER"}, "bad_request"),
    ],
)
async def test_bad_relay_requests_get_clear_errors_and_deliver_nothing(server, params: dict, code: str) -> None:
    clients = [await SignalingClient.connect(server.url) for _ in range(3)]
    try:
        me = await clients[0].request("join", room="mesh", name="me")
        peer = await clients[1].request("join", room="mesh", name="peer")
        other = await clients[2].request("join", room="other", name="other")
        names = {"PEER": peer["peerId"], "SELF": me["peerId"], "OTHER_ROOM": other["peerId"]}
        if isinstance(params.get("to"), str):
            params = {**params, "to": names.get(params["to"], params["to"])}
        with pytest.raises(SignalingError) as failure:
            await clients[0].request("relay", **params)
        assert failure.value.code == code
        assert failure.value.message
        await asyncio.sleep(0.2)
        for client in clients:
            assert all(name != "relayed" for name, _ in _drain(client))
        # The session still works after the error.
        await clients[0].request("relay", to=peer["peerId"], data={"ok": True})
        assert (await next_notification(clients[1], "relayed", 5.0))["data"] == {"ok": True}
    finally:
        for client in clients:
            await client.close()


async def test_relay_needs_a_joined_peer(server) -> None:
    client = await SignalingClient.connect(server.url)
    try:
        with pytest.raises(SignalingError) as failure:
            await client.request("relay", to="peer-x", data={})
        assert failure.value.code == "wrong_state"
    finally:
        await client.close()


def _drain(client: SignalingClient) -> list[tuple[str, dict]]:
    items = []
    while not client.notifications.empty():
        items.append(client.notifications.get_nowait())
    return items
