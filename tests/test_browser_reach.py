"""Chromium through the page, reaching the server the hard ways: over ICE-TCP alone, relayed by a real coturn
(a static user, and credentials minted from coturn's REST secret), and over IPv6 loopback, each with a bot on the
same path."""

from __future__ import annotations

import asyncio

import pytest

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.media import MediaSpec, make_media
from sfuctl.server.app import RunningServer, start_server
from sfuctl.server.config import IceServer, ServerConfig

from .browser import BrowserPage, Chromium
from .coturn_server import coturn
from .ipv6_route import ipv6_default_route
from .test_browser import assert_clean, chromium, decoding, page_url, wait_for_streams  # noqa: F401 (chromium is a fixture)
from .test_forwarding import wait_for


@pytest.fixture(scope="module")
def bot_media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """Short VP8 with a keyframe every second (the page decodes from the first one it gets), and Opus."""
    files = make_media(MediaSpec(duration=4.0, keyframe_interval=1.0), tmp_path_factory.mktemp("reach-media"))
    return (str(files.video), str(files.audio))


async def call_with_a_bot(server: RunningServer, chromium: Chromium, media: tuple[str, ...], room: str, query: str = "",
                          **bot) -> tuple[BrowserPage, dict, set[tuple]]:
    """The page and one bot in `room`: the page decodes the bot's video; the bot's report and the remote addresses
    of every transport the server had while both were in (the page's query gets `query`)."""
    page = await chromium.open(page_url(server, room, "human") + query)
    paths: set[tuple] = set()
    try:
        bots = asyncio.create_task(run_bots(BotsConfig(url=server.url, count=1, room=room, duration=6.0, media=media, seed=21, **bot)))
        await wait_for_streams(page, decoding("bot-1", 30), 20)
        assert await wait_for(lambda: sum(t.connection.remote_addr is not None for t in server.worker.transports) == 4, 10)
        paths.update((t.stats()["ice_protocol"], t.connection.remote_addr[:2]) for t in server.worker.transports if t.connection.remote_addr)
        report = await bots
        await assert_clean(page)
        return page, report.bots[0], paths
    except BaseException:
        await page.close()
        raise


async def test_chromium_and_a_bot_call_over_ice_tcp_alone(chromium, bot_media) -> None:
    server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0), ice_udp=False, ice_tcp=True))
    try:
        page, bot, paths = await call_with_a_bot(server, chromium, bot_media, "tcp", ice_tcp=True)
        await page.close()
        assert bot["error"] is None
        assert sorted(c["kind"] for c in bot["consumers"]) == ["audio", "video"]
        assert all(c["packets"] > 50 for c in bot["consumers"])  # the page's camera and microphone reached the bot
        assert len(paths) == 4 and {protocol for protocol, _ in paths} == {"tcp"}
    finally:
        await server.close()


@pytest.mark.parametrize(("secret", "transport"), [(None, "udp"), ("coturn-shared-secret", "tcp")],
                         ids=["static-user-over-udp", "turn-secret-over-tcp"])
async def test_chromium_relay_1_and_a_bot_relay_through_coturn(chromium, bot_media, secret, transport) -> None:
    """Each reaches coturn over `transport` (turn:...?transport=tcp: a TCP connection to coturn, UDP relays)."""
    with coturn(secret, transport) as turn:
        server = await start_server(ServerConfig(host="127.0.0.1", port=0, rtc_ports=(0, 0),
                                                 ice_servers=(IceServer(turn.url, turn.username, turn.credential),),
                                                 turn_secret=secret))
        try:
            page, bot, paths = await call_with_a_bot(server, chromium, bot_media, "relay", "&relay=1", relay=True)
            await page.close()
            assert bot["error"] is None
            assert all(c["packets"] > 50 for c in bot["consumers"]) and len(bot["consumers"]) == 2
            # Every transport's path, the page's and the bot's, is an address coturn relays from.
            assert len(paths) == 4
            assert {f"{host}:{port}" for _, (host, port) in paths} <= turn.relayed_addresses()
            # Over TCP each of the 4 allocations came on a TCP connection of its own; over UDP none did.
            assert turn.tcp_clients() >= 4 if transport == "tcp" else turn.tcp_clients() == 0
        finally:
            await server.close()


async def test_chromium_and_a_bot_call_over_ipv6_loopback(chromium, bot_media) -> None:
    """The page comes from http://[::1]:PORT and its peer connections, like the bot's, reach the server on ::1."""
    with ipv6_default_route():
        server = await start_server(ServerConfig(host="::1", port=0, rtc_ports=(0, 0)))
        try:
            page, bot, paths = await call_with_a_bot(server, chromium, bot_media, "six")
            await page.close()
            assert bot["error"] is None
            assert all(c["packets"] > 50 for c in bot["consumers"]) and len(bot["consumers"]) == 2
            assert len(paths) == 4 and {(protocol, host) for protocol, (host, _) in paths} == {("udp", "::1")}
        finally:
            await server.close()


async def test_bots_of_each_family_call_a_dual_stack_server(bot_media) -> None:
    """`--host ::` with an IPv4 and an IPv6 announced address: a bot reaches the server over IPv4 (signaling and
    media), another over IPv6, and each receives the other's media without loss."""
    server = await start_server(ServerConfig(host="::", port=0, rtc_ports=(0, 0), announced_ips=("127.0.0.1", "::1")))
    paths: dict[tuple[str, str], list] = {}  # (peer, transport): its remote addresses, in the order it used them

    async def watch() -> None:
        while True:
            for t in list(server.worker.transports):
                path = paths.setdefault((t.cname, t.id), [])
                if t.connection.remote_addr is not None and path[-1:] != [t.connection.remote_addr[:2]]:
                    path.append(t.connection.remote_addr[:2])
            await asyncio.sleep(0.05)

    watcher = asyncio.create_task(watch())
    try:
        ipv4, ipv6 = await asyncio.gather(*(
            run_bots(BotsConfig(url=f"ws://{host}:{server.port}", count=1, room="both", duration=6.0, media=bot_media, seed=seed))
            for host, seed in (("127.0.0.1", 31), ("[::1]", 32))))
    finally:
        watcher.cancel()
        await server.close()
    bots = ipv4.bots + ipv6.bots
    assert all(bot["error"] is None and bot["status"] == "left" for bot in bots)
    for bot in bots:
        assert len(bot["consumers"]) == 2, bot["consumers"]
        assert all(c["packets"] > 50 and c["packets_lost"] == 0 for c in bot["consumers"]), bot["consumers"]
    # Two transports per bot, each kept one path of its family (IPv4 arrives mapped).
    hosts = {peer: [[host for host, _ in path] for (owner, _), path in paths.items() if owner == peer]
             for peer in {owner for owner, _ in paths}}
    assert hosts.pop(ipv4.bots[0]["peer_id"]) == [["::ffff:127.0.0.1"]] * 2, paths
    assert hosts.pop(ipv6.bots[0]["peer_id"]) == [["::1"]] * 2, paths
