"""TURN through a real coturn: the server hands its ICE servers to clients (join reply, WHIP/WHEP Link headers),
with a static user or credentials minted from coturn's REST secret, and bots --relay call through the relay."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hashlib
import hmac
import time

import aiohttp
import pytest
from click.testing import CliRunner

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.cli import main
from sfuctl.client.signaling import SignalingClient
from sfuctl.client.turn import TurnServer, ice_servers_from_links
from sfuctl.server.app import RunningServer, start_server
from sfuctl.server.config import IceServer, ServerConfig
from sfuctl.server.ice_servers import endpoint_ice_servers

from .coturn_server import coturn
from .test_bots import media  # noqa: F401 (a fixture)
from .test_forwarding import wait_for
from .test_ice_tcp import assert_clean_call


async def relayed_call(server: RunningServer, media: tuple[str, ...], **bots) -> tuple[list[dict], set[str]]:
    """Two bots relaying through TURN; their report and every remote address the server saw while they ran."""
    seen: set[str] = set()

    async def watch() -> None:
        while True:
            await asyncio.sleep(0.5)
            snapshot = server.worker.snapshot(time.time(), 0.0)
            for room in snapshot["rooms"]:
                for peer in room["peers"]:
                    seen.update(t["remote_address"] for t in peer["transports"] if t["remote_address"])

    watcher = asyncio.create_task(watch())
    try:
        report = await run_bots(BotsConfig(url=server.url, count=2, ramp=20, duration=4.0, media=media, seed=11, relay=True, **bots))
    finally:
        watcher.cancel()
    return report.bots, seen


async def test_bots_relay_through_coturn_with_a_static_user(media) -> None:
    with coturn() as turn:
        server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0,
                                                 ice_servers=(IceServer(turn.url, turn.username, turn.credential),)))
        try:
            client = await SignalingClient.connect(server.url)
            joined = await client.request("join", room="look", name="x")
            await client.close()
            assert joined["iceServers"] == [{"urls": [turn.url], "username": "sfuctl", "credential": "sfuctl-pass"}]

            bots, seen = await relayed_call(server, media, processes=2)  # bot processes, as `sfuctl bots` runs them
            assert all(bot["error"] is None for bot in bots)
            assert_clean_call(bots)
            # The server only ever saw coturn's relayed addresses: every packet went through the relay.
            assert len(seen) == 4 and seen <= turn.relayed_addresses()
            # Each bot deleted its allocations before its process ended, not leaving them to their 600-s lifetime.
            assert turn.deleted_allocations() == 4
        finally:
            await server.close()


async def test_turn_secret_mints_credentials_coturn_accepts_and_a_wrong_secret_is_refused(media) -> None:
    with coturn(secret="coturn-shared-secret") as turn:
        config = ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), consent_timeout=5.0,
                              ice_servers=(IceServer("stun:127.0.0.1:3478"), IceServer(turn.url)), turn_secret=turn.secret)
        server = await start_server(config)
        try:
            bots, seen = await relayed_call(server, media)
            assert all(bot["error"] is None for bot in bots)
            assert_clean_call(bots)
            assert len(seen) == 4 and seen <= turn.relayed_addresses()

            # WHIP: the Link headers carry credentials minted for this client, valid for a day.
            http = server.url.replace("ws://", "http://")
            async with aiohttp.ClientSession() as session:
                async with session.options(f"{http}/whip/room") as response:
                    servers = ice_servers_from_links(response.headers.getall("Link"))
            assert servers[0] == {"urls": ["stun:127.0.0.1:3478"]}
            relay = TurnServer.pick(servers)
            expiry = int(relay.username.split(":", 1)[0])
            assert 23 * 3600 < expiry - time.time() <= 24 * 3600
            digest = hmac.new(b"coturn-shared-secret", relay.username.encode(), hashlib.sha1).digest()
            assert relay.credential == base64.b64encode(digest).decode()
        finally:
            await server.close()

        # Credentials minted from another secret: coturn refuses the allocation, the bots say so.
        server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), ice_servers=(IceServer(turn.url),),
                                                 turn_secret="not-the-secret"))
        try:
            report = await run_bots(BotsConfig(url=server.url, count=1, duration=1.0, media=media, seed=12, relay=True, join_timeout=5))
            assert report.failed == 1
            (bot,) = report.bots
            assert f"the TURN server 127.0.0.1:{turn.port} gave no allocation" in bot["error"], bot["error"]
            assert "401" in bot["error"], bot["error"]
        finally:
            await server.close()


@pytest.mark.parametrize("turn_secret", [None, "coturn-shared-secret"], ids=["static-user", "turn-secret"])
def test_an_unauthenticated_options_learns_no_turn_credentials_on_a_server_with_access_tokens(turn_secret) -> None:
    servers = (IceServer("stun:127.0.0.1:3478"), IceServer("turn:127.0.0.1:3478", "user", "pass"))
    open_server = ServerConfig(ice_servers=servers, turn_secret=turn_secret)
    assert [s.url for s in endpoint_ice_servers(open_server)] == ["stun:127.0.0.1:3478", "turn:127.0.0.1:3478"]
    guarded = dataclasses.replace(open_server, auth_secret="s" * 32)
    assert endpoint_ice_servers(guarded) == (IceServer("stun:127.0.0.1:3478"),)


def test_relay_without_a_turn_server_is_a_clear_error() -> None:
    try:
        TurnServer.pick([{"urls": ["stun:127.0.0.1:3478"]}, {"urls": ["turn:127.0.0.1"]}])
    except ValueError as exc:
        assert "--ice-server turn:" in str(exc)
    else:
        raise AssertionError("no TURN server with credentials was picked")
    assert TurnServer.pick([{"urls": "turn:[::1]?transport=tcp", "username": "u", "credential": "p"}]) == TurnServer("::1", 3478, "tcp", "u", "p")


def test_serve_refuses_bad_ice_server_options() -> None:
    runner = CliRunner()
    for args, message in (
        (["--ice-server", "http://turn.example"], "is not a STUN/TURN URL"),
        (["--ice-server", "turn:turn.example:3478"], "needs --ice-username/--ice-credential or --turn-secret"),
        (["--ice-server", "turn:t:1", "--ice-username", "u"], "give both --ice-username and --ice-credential"),
        (["--ice-server", "turn:t:1", "--ice-username", "u", "--ice-credential", "p", "--turn-secret", "s"], "not both"),
        (["--turn-secret", "s"], "without a TURN --ice-server"),
        (["--no-ice-udp"], "needs --ice-tcp"),
    ):
        result = runner.invoke(main, ["serve", "--port", "0", *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)
        assert "Traceback" not in result.output


async def test_whip_and_whep_bots_relay_through_the_turn_server_of_the_options_link_headers(media) -> None:
    with coturn() as turn:
        server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0),
                                                 ice_servers=(IceServer(turn.url, turn.username, turn.credential),)))
        base = f"http://127.0.0.1:{server.port}"
        try:
            publishing = asyncio.create_task(run_bots(BotsConfig(url=f"{base}/whip/stage", mode="whip", duration=4.0,
                                                                 media=media, seed=13, relay=True)))
            routers = server.worker.routers
            assert await wait_for(lambda: "stage" in routers and len(routers["stage"].producers) == 2, 10)
            played = await run_bots(BotsConfig(url=f"{base}/whep/stage", mode="whep", duration=2.0, media=media, seed=14, relay=True))
            published = await publishing
            assert published.bots[0]["error"] is None and played.bots[0]["error"] is None
            assert sorted(c["kind"] for c in played.bots[0]["consumers"]) == ["audio", "video"]
            assert all(c["packets"] > 30 and c["packets_lost"] == 0 for c in played.bots[0]["consumers"])
            assert len(turn.relayed_addresses()) >= 2  # one allocation per bot transport
        finally:
            await server.close()
