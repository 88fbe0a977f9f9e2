"""Access tokens against a real server: who may join, publish, subscribe, read stats and metrics, and through
which URL a WHIP/WHEP session can be ended (docs/security.md). Peers are aiortc; media flows where it matters."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time

import aiohttp
import jwt
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription, VideoStreamTrack
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from sfuctl.client.signaling import SignalingClient, SignalingError
from sfuctl.server.app import RunningServer, start_server
from sfuctl.server.config import ServerConfig
from sfuctl.server.front import start_front
from sfuctl.tokens import claims, mint

from .test_forwarding import next_notification, wait_for

SECRET = "test-secret-" + "x" * 32


def token(room: str | None = "a", identity: str | None = "alice", ttl: float = 600, **grants) -> str:
    return mint(SECRET, claims(room=room, identity=identity, ttl=ttl, **grants))


@pytest.fixture
async def server() -> RunningServer:
    running = await start_server(
        ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0, auth_secret=SECRET, metrics_token="scrape-me")
    )
    yield running
    await running.close()


async def connect(server, access: str | None = None) -> SignalingClient:
    return await SignalingClient.connect(server.url + (f"/ws?token={access}" if access else "/ws"))


async def refused(server, access: str | None, room: str = "a", **params) -> SignalingError:
    """Join with `access` in the URL; the error, after checking that nothing was created."""
    client = await connect(server, access)
    try:
        with pytest.raises(SignalingError) as caught:
            await client.request("join", room=room, name="mallory", **params)
    finally:
        await client.close()
    assert not server.worker.routers and not server.worker.transports
    return caught.value


def video_offer_pc() -> RTCPeerConnection:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTrack(VideoStreamTrack())
    return pc


async def offer_sdp(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())
    return pc.localDescription.sdp


async def test_join_needs_a_valid_token_for_that_room(server) -> None:
    missing = await refused(server, None)
    assert missing.code == "unauthorized" and "needs an access token" in missing.message
    forged = jwt.encode(claims(room="a", identity="alice", ttl=600), "another-secret-" + "y" * 32, algorithm="HS256")
    assert (await refused(server, forged)).code == "unauthorized"
    expired = mint(SECRET, claims(room="a", identity="alice", ttl=60, now=time.time() - 3600))
    error = await refused(server, expired)
    assert error.code == "unauthorized" and "expired" in error.message
    unsigned = jwt.encode(claims(room="a", identity="alice", ttl=600), None, algorithm="none")
    assert (await refused(server, unsigned)).code == "unauthorized"
    other_room = await refused(server, token(room="b"), room="a")
    assert other_room.code == "forbidden" and "'b'" in other_room.message
    admin_only = await refused(server, token(room=None, identity=None, admin=True))
    assert admin_only.code == "forbidden"


async def test_an_unauthorized_request_ends_the_connection(server) -> None:
    client = await connect(server)
    try:
        with pytest.raises(SignalingError):
            await client.request("join", room="a")
        await asyncio.wait_for(client.closed.wait(), 5)
    finally:
        await client.close()


async def test_the_token_may_come_in_join_and_gives_the_peer_its_identity_and_name(server) -> None:
    client = await connect(server)
    try:
        joined = await client.request("join", room="a", token=mint(SECRET, claims(room="a", identity="alice", name="Alice", ttl=60)))
        assert joined["peerId"] == "alice"
        assert [p.name for p in server.worker.routers["a"].peers.values()] == ["Alice"]
    finally:
        await client.close()


async def test_a_subscribe_only_token_cannot_publish_and_a_publish_only_token_cannot_subscribe(server) -> None:
    watcher = await connect(server, token(identity="watcher", publish=()))
    pc = video_offer_pc()
    try:
        await watcher.request("join", room="a")
        with pytest.raises(SignalingError) as caught:
            await watcher.request("publish", sdp=await offer_sdp(pc))
        assert caught.value.code == "forbidden" and "publish" in caught.value.message and "video" in caught.value.message
        assert not server.worker.routers["a"].producers and not server.worker.transports
    finally:
        await pc.close()
        await watcher.close()

    audio_only = await connect(server, token(identity="talker", publish=("audio",)))
    pc = video_offer_pc()
    try:
        await audio_only.request("join", room="a")
        with pytest.raises(SignalingError) as caught:
            await audio_only.request("publish", sdp=await offer_sdp(pc))
        assert caught.value.code == "forbidden" and "audio" in caught.value.message
    finally:
        await pc.close()
        await audio_only.close()

    sender = await connect(server, token(identity="sender", subscribe=False))
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.addTransceiver("video", direction="recvonly")
    try:
        await sender.request("join", room="a")
        with pytest.raises(SignalingError) as caught:
            await sender.request("subscribe", sdp=await offer_sdp(pc), subscriptions={})
        assert caught.value.code == "forbidden" and "'subscribe'" in caught.value.message
        assert not server.worker.transports
    finally:
        await pc.close()
        await sender.close()


async def test_stats_need_admin_and_only_an_authenticated_admin_sees_addresses(server) -> None:
    publisher = await connect(server, token(identity="alice"))
    pc = video_offer_pc()
    admin = await connect(server, token(room=None, identity=None, admin=True))
    try:
        await publisher.request("join", room="a")
        answer = await publisher.request("publish", sdp=await offer_sdp(pc))
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        assert await wait_for(lambda: pc.connectionState == "connected", 10)
        for stats_call in ("getStats", "subscribeStats"):
            with pytest.raises(SignalingError) as caught:
                await publisher.request(stats_call)
            assert caught.value.code == "forbidden" and "'admin'" in caught.value.message
        anonymous = await connect(server)
        with pytest.raises(SignalingError) as caught:
            await anonymous.request("getStats")
        assert caught.value.code == "unauthorized"
        await anonymous.close()

        def addresses(snapshot: dict) -> list:
            return [t["remote_address"] for r in snapshot["rooms"] for p in r["peers"] for t in p["transports"]]

        assert await wait_for(lambda: any(t.connection.remote_addr for t in server.worker.transports), 10)
        assert addresses(await admin.request("getStats")) == [next(iter(server.worker.transports)).stats()["remote_address"]]
        await admin.request("subscribeStats", interval=0.2)
        pushed = await next_notification(admin, "stats", timeout=5)
        assert addresses(pushed)[0].startswith("127.0.0.1:")
    finally:
        await pc.close()
        await publisher.close()
        await admin.close()


async def test_an_open_server_shows_no_addresses_in_stats() -> None:
    running = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0)))
    publisher = await SignalingClient.connect(running.url)
    pc = video_offer_pc()
    reader = await SignalingClient.connect(running.url)
    try:
        await publisher.request("join", room="open")
        answer = await publisher.request("publish", sdp=await offer_sdp(pc))
        await pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], "answer"))
        assert await wait_for(lambda: any(t.connection.remote_addr for t in running.worker.transports), 10)
        snapshot = await reader.request("getStats")
        transports = [t for r in snapshot["rooms"] for p in r["peers"] for t in p["transports"]]
        assert transports and all(t["remote_address"] is None for t in transports)
    finally:
        await pc.close()
        await publisher.close()
        await reader.close()
        await running.close()


async def test_a_second_join_with_the_same_identity_replaces_the_first(server) -> None:
    first = await connect(server, token(identity="alice"))
    second = await connect(server, token(identity="alice"))
    watcher = await connect(server, token(identity="bob"))
    try:
        await first.request("join", room="a")
        await watcher.request("join", room="a")
        await second.request("join", room="a")
        closed = await next_notification(first, "closed", timeout=5)
        assert closed["code"] == "duplicate_identity"
        await asyncio.wait_for(first.closed.wait(), 5)
        assert sorted(server.worker.routers["a"].peers) == ["alice", "bob"]
        assert await second.request("ping") == {"pong": True}
        # The room saw the old connection leave and the new one arrive, under the same peer id.
        assert (await next_notification(watcher, "peerLeft", timeout=5))["peerId"] == "alice"
    finally:
        for client in (first, second, watcher):
            await client.close()


async def test_whip_and_whep_need_a_token_with_the_grant(server) -> None:
    url = f"http://127.0.0.1:{server.port}"
    pc = video_offer_pc()
    sdp = await offer_sdp(pc)
    await pc.close()
    headers = {"Content-Type": "application/sdp"}
    async with aiohttp.ClientSession() as http:
        cases = [
            (None, "/whip/a", 401, "unauthorized"),
            ("Bearer not-a-token", "/whip/a", 401, "unauthorized"),
            (f"Bearer {token(room='b')}", "/whip/a", 403, "forbidden"),
            (f"Bearer {token(publish=())}", "/whip/a", 403, "forbidden"),
            (f"Bearer {token(subscribe=False)}", "/whep/a", 403, "forbidden"),
        ]
        for authorization, path, status, code in cases:
            extra = {"Authorization": authorization} if authorization else {}
            async with http.post(url + path, data=sdp, headers={**headers, **extra}) as response:
                assert response.status == status, (authorization, path)
                assert (await response.text()).startswith(f"{code}: ")
                if status == 401:
                    assert response.headers["WWW-Authenticate"].startswith("Bearer")
        assert not server.worker.routers and not server.worker.transports


async def test_a_whip_session_is_ended_only_through_its_room_by_its_creator_and_bearer_is_case_insensitive(server) -> None:
    url = f"http://127.0.0.1:{server.port}"
    pc = video_offer_pc()
    creator = token(identity="camera", publish=("video",))
    try:
        async with aiohttp.ClientSession() as http:
            headers = {"Content-Type": "application/sdp", "Authorization": f"bearer {creator}"}
            async with http.post(url + "/whip/a", data=await offer_sdp(pc), headers=headers) as response:
                assert response.status == 201, await response.text()
                location = response.headers["Location"]
                await pc.setRemoteDescription(RTCSessionDescription(await response.text(), "answer"))
            assert [p.id for p in server.worker.routers["a"].peers.values()] == ["camera"]
            resource = location.rsplit("/", 1)[1]
            attempts = [
                (f"/whip/b/{resource}", creator),  # another room's URL
                (f"/whep/a/{resource}", creator),  # the other kind
                (location, token(identity="mallory")),  # someone else in the same room
                (f"/whip/b/{resource}", token(room="b", identity="camera")),  # the same identity, another room
            ]
            for path, credential in attempts:
                for method in ("DELETE", "PATCH"):
                    async with http.request(method, url + path, headers={"Authorization": f"Bearer {credential}"}) as response:
                        assert response.status == 404, (method, path)
            assert server.worker.routers["a"].producers
            async with http.delete(url + location, headers={"Authorization": f"BEARER {creator}"}) as response:
                assert response.status == 200
            assert "a" not in server.worker.routers
    finally:
        await pc.close()


async def test_metrics_need_an_admin_token_or_the_metrics_token(server) -> None:
    url = f"http://127.0.0.1:{server.port}/metrics"
    async with aiohttp.ClientSession() as http:
        for authorization, status in [
            (None, 401),
            ("Bearer wrong", 401),
            (f"Bearer {token()}", 403),
            (f"Bearer {token(room=None, identity=None, admin=True)}", 200),
            ("bearer scrape-me", 200),
        ]:
            async with http.get(url, headers={"Authorization": authorization} if authorization else {}) as response:
                assert response.status == status, authorization
                if status == 200:
                    assert "sfuctl_rooms" in await response.text()


async def test_public_keys_verify_rs256_and_eddsa_tokens(tmp_path) -> None:
    body = claims(room="k", identity="alice", ttl=60)
    for private in (rsa.generate_private_key(public_exponent=65537, key_size=2048), ed25519.Ed25519PrivateKey.generate()):
        pem = private.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        running = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), auth_public_key=pem.decode()))
        algorithm = "RS256" if isinstance(private, rsa.RSAPrivateKey) else "EdDSA"
        try:
            good = await SignalingClient.connect(f"{running.url}/ws?token={jwt.encode(body, private, algorithm=algorithm)}")
            assert (await good.request("join", room="k"))["peerId"] == "alice"
            await good.close()
            # An HS256 token signed with the public key as its secret (the algorithm-confusion attack) fails.
            confused = hs256_signed_with(pem, body)
            bad = await SignalingClient.connect(f"{running.url}/ws?token={confused}")
            with pytest.raises(SignalingError) as caught:
                await bad.request("join", room="k")
            assert caught.value.code == "unauthorized" and algorithm in caught.value.message
            await bad.close()
        finally:
            await running.close()


def hs256_signed_with(key: bytes, body: dict) -> str:
    """An HS256 JWT whose secret is `key` (pyjwt refuses to sign with a PEM key, so done by hand)."""

    def b64(data: bytes) -> bytes:
        return base64.urlsafe_b64encode(data).rstrip(b"=")

    signing_input = b64(b'{"alg":"HS256","typ":"JWT"}') + b"." + b64(json.dumps(body).encode())
    return (signing_input + b"." + b64(hmac.new(key, signing_input, hashlib.sha256).digest())).decode()


async def test_the_websocket_checks_the_browser_origin() -> None:
    running = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), allowed_origins=("https://meet.example",)))
    try:
        async with aiohttp.ClientSession() as http:
            with pytest.raises(aiohttp.WSServerHandshakeError) as caught:
                await http.ws_connect(f"{running.url}/ws", origin="https://evil.example")
            assert caught.value.status == 403
            async with http.ws_connect(f"{running.url}/ws", origin="https://meet.example") as ws:
                await ws.send_json({"id": 1, "method": "ping"})
                assert (await ws.receive_json())["ok"]
    finally:
        await running.close()


async def test_auth_through_the_multi_worker_front() -> None:
    config = ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), auth_secret=SECRET, allowed_origins=("https://meet.example",))
    front = await start_front(config, 2, "warning")
    url = f"ws://127.0.0.1:{front.port}/ws"
    try:
        anonymous = await SignalingClient.connect(url)
        with pytest.raises(SignalingError) as caught:
            await anonymous.request("join", room="a")
        assert caught.value.code == "unauthorized"
        await asyncio.wait_for(anonymous.closed.wait(), 5)
        await anonymous.close()

        first = await SignalingClient.connect(f"{url}?token={token(identity='alice')}")
        assert (await first.request("join", room="a"))["peerId"] == "alice"
        with pytest.raises(SignalingError) as caught:
            await first.request("getStats")
        assert caught.value.code == "forbidden"
        second = await SignalingClient.connect(url)
        await second.request("join", room="a", token=token(identity="alice"))
        assert (await next_notification(first, "closed", timeout=5))["code"] == "duplicate_identity"
        await first.close()

        admin = await SignalingClient.connect(f"{url}?token={token(room=None, identity=None, admin=True)}")
        snapshot = await admin.request("getStats")
        assert [p["id"] for r in snapshot["rooms"] for p in r["peers"]] == ["alice"]
        await admin.close()
        await second.close()
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{front.port}/metrics") as response:
                assert response.status == 401
            admin_header = {"Authorization": f"Bearer {token(room=None, identity=None, admin=True)}"}
            async with http.get(f"http://127.0.0.1:{front.port}/metrics", headers=admin_header) as response:
                assert response.status == 200 and 'worker="1"' in await response.text()
            with pytest.raises(aiohttp.WSServerHandshakeError):
                await http.ws_connect(url, origin="https://evil.example")
    finally:
        await front.close()


async def test_data_channels_need_the_data_grant(server) -> None:
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    pc.createDataChannel("chat")
    sdp = await offer_sdp(pc)
    no_data = await connect(server, token(identity="quiet", data=False))
    try:
        await no_data.request("join", room="a")
        with pytest.raises(SignalingError) as caught:
            await no_data.request("publish", sdp=sdp)
        assert caught.value.code == "forbidden" and "'data'" in caught.value.message
        assert not server.worker.transports
    finally:
        await no_data.close()
    chatty = await connect(server, token(identity="chatty", data=True))
    try:
        await chatty.request("join", room="a")
        answer = await chatty.request("publish", sdp=sdp)
        assert "m=application" in answer["sdp"] and "a=max-message-size:65536" in answer["sdp"]
    finally:
        await pc.close()
        await chatty.close()
