"""`sfuctl serve --redis`: three real nodes on one real redis-server; rooms placed through Redis, signaling and
WHIP relayed to the node hosting the room, media straight to that node."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys

import aiohttp
import pytest
import redis.asyncio as aioredis

from sfuctl.bots.config import BotsConfig
from sfuctl.bots.runner import run_bots
from sfuctl.client.signaling import SignalingClient, SignalingError
from sfuctl.cluster.registry import HEARTBEAT_INTERVAL, NODE_TTL, ROOM_LEASE, node_key, room_key
from sfuctl.media import MediaSpec, make_media
from sfuctl.stats_schema import validate_snapshot

from .redis_server import free_port, redis_server
from .test_browser import chromium, decoding, wait_for_streams  # noqa: F401 (chromium: a fixture)
from .test_forwarding import wait_for

SECRET = "cluster-test-secret"


class Node:
    """One `sfuctl serve --redis` process."""

    def __init__(self, redis_url: str, node_id: str, secret: str = SECRET, *options: str) -> None:
        self.id = node_id
        self.process = subprocess.Popen(
            [sys.executable, "-m", "sfuctl.cli", "serve", "--port", "0", "--rtc-port-range", "0", "--workers", "1",
             "--redis", redis_url, "--node-id", node_id, "--cluster-secret", secret, "--log-level", "warning", *options],
            stderr=subprocess.PIPE, text=True, env={**os.environ, "COLUMNS": "400"},  # one line per message
        )
        self.url = self.http = ""
        self.media_port = 0

    def ready(self) -> Node:
        line = self.process.stderr.readline()
        match = re.search(r"signaling (ws://\S+) · media udp \S+:(\d+)", line)
        assert match, line
        self.url, self.media_port = match.group(1), int(match.group(2))
        self.http = self.url.replace("ws://", "http://")
        line = self.process.stderr.readline()
        assert f"cluster node {self.id} at {self.http}" in line, line
        return self

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 20) -> int:
        """Send `sig` (None: none, wait for the process to end by itself); the exit status."""
        if self.process.stderr.closed:  # stopped already
            return self.process.returncode
        if sig is not None and self.process.poll() is None:
            self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.stderr_rest = self.process.stderr.read().splitlines()
        self.process.stderr.close()
        return code

    async def rooms(self) -> dict[str, int]:
        """The rooms this node hosts and their peer counts (its stats show every node's rooms, each naming its node)."""
        client = await SignalingClient.connect(self.url)
        try:
            snapshot = await client.request("getStats")
        finally:
            await client.close()
        return {room["name"]: len(room["peers"]) for room in snapshot["rooms"] if room["node"] == self.id}


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    files = make_media(MediaSpec(width=320, height=180, video_bitrate=300_000, duration=2.0), tmp_path_factory.mktemp("cluster"))
    return (str(files.video), str(files.audio))


@pytest.fixture(scope="module")
def redis_url():
    with redis_server() as url:
        yield url


@pytest.fixture(scope="module")
def cluster(redis_url):
    nodes = [Node(redis_url, name) for name in ("a", "b", "c")]
    try:
        for node in nodes:
            node.ready()
        yield nodes
    finally:
        for node in nodes:
            node.stop()


@pytest.fixture
async def redis(redis_url):
    client = aioredis.from_url(redis_url, decode_responses=True)
    yield client
    await client.aclose()


async def test_every_node_is_registered_with_its_url_load_and_a_ttl(cluster, redis) -> None:
    for node in cluster:
        entry = json.loads(await redis.get(node_key(node.id)))
        assert entry["id"] == node.id and entry["url"] == node.http and entry["media_ip"] == "127.0.0.1"
        assert {"rooms", "peers", "consumers", "cpu_percent"} <= set(entry)
        assert 0 < await redis.ttl(node_key(node.id)) <= NODE_TTL
    assert await redis.smembers("sfuctl:cluster:nodes") >= {"a", "b", "c"}
    assert "secret" not in json.dumps([await redis.get(node_key(n.id)) for n in cluster])


async def test_bots_on_node_a_in_a_room_hosted_by_node_b_receive_each_others_media(cluster, redis, media) -> None:
    a, b, _ = cluster
    await redis.set(room_key("on-b"), "b", ex=ROOM_LEASE)  # the room is b's (as if b claimed it)
    report = await run_bots(BotsConfig(url=a.url, count=2, room="on-b", ramp=10, duration=3.0, media=media, seed=5))
    assert report.failed == 0
    for bot in report.bots:
        assert bot["errors"] == [] and sorted(c["kind"] for c in bot["consumers"]) == ["audio", "video"]  # the other bot's
        for consumer in bot["consumers"]:
            assert consumer["packets"] > 20 and consumer["packets_lost"] == 0
    assert await redis.get(room_key("on-b")) == "b"  # b's heartbeat kept the lease while the call lasted
    assert "on-b" not in await a.rooms()


async def test_whip_to_node_c_publishes_into_a_room_on_node_b(cluster, redis, media) -> None:
    a, b, c = cluster
    await redis.set(room_key("stage"), "b", ex=ROOM_LEASE)
    publishing = asyncio.create_task(run_bots(BotsConfig(url=f"{c.http}/whip/stage", mode="whip", duration=4.0, media=media, seed=1)))
    assert await wait_for_async(lambda: b.rooms(), lambda rooms: rooms.get("stage") == 1, 10)
    played = await run_bots(BotsConfig(url=f"{a.http}/whep/stage", mode="whep", duration=2.0, media=media, seed=2))
    published = await publishing
    (publisher,) = published.bots
    (player,) = played.bots
    assert publisher["error"] is None and player["error"] is None and player["errors"] == []
    assert sorted(c["kind"] for c in player["consumers"]) == ["audio", "video"]
    assert all(c["packets"] > 0 and c["packets_lost"] == 0 for c in player["consumers"])
    assert "stage" not in await c.rooms() and "stage" not in await a.rooms()


async def test_two_nodes_racing_for_a_new_room_place_it_on_exactly_one(cluster, redis) -> None:
    a, _, c = cluster
    clients = [await SignalingClient.connect(node.url) for node in (a, c, a, c)]
    try:
        await asyncio.gather(*(client.request("join", room="race", name=f"p{i}") for i, client in enumerate(clients)))
        hosts = [node.id for node in cluster if "race" in await node.rooms()]
        assert len(hosts) == 1
        assert (await next(n for n in cluster if n.id == hosts[0]).rooms())["race"] == 4
        assert await redis.get(room_key("race")) == hosts[0]
    finally:
        for client in clients:
            await client.close()


async def test_a_clean_stop_removes_the_node_and_its_rooms(redis_url, redis) -> None:
    node = Node(redis_url, "short-lived").ready()
    client = await SignalingClient.connect(node.url)
    await client.request("join", room="brief", name="x")
    # the room went to the least loaded node; only if that is this one is it this node's to remove
    holder = await redis.get(room_key("brief"))
    await client.close()
    assert await redis.get(node_key("short-lived")) is not None
    assert node.stop() == 0
    assert await redis.get(node_key("short-lived")) is None
    assert "short-lived" not in await redis.smembers("sfuctl:cluster:nodes")
    if holder == "short-lived":
        assert await redis.get(room_key("brief")) is None


async def test_a_wrong_redis_url_is_one_line_and_exit_1() -> None:
    process = subprocess.run(
        [sys.executable, "-m", "sfuctl.cli", "serve", "--port", "0", "--rtc-port-range", "0", "--workers", "1",
         "--redis", "redis://127.0.0.1:1/0", "--cluster-secret", SECRET],
        capture_output=True, text=True, timeout=60,
    )
    assert process.returncode == 1
    assert process.stderr.strip().splitlines() == [
        "error: cannot reach Redis at redis://127.0.0.1:1/0 (Error 111 connecting to 127.0.0.1:1. Connection refused.); check --redis / SFUCTL_REDIS"
    ]


async def wait_for_async(probe, accept, timeout: float) -> bool:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if accept(await probe()):
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_killed_nodes_rooms_leave_redis_and_the_room_lives_again_on_a_live_node(cluster, redis_url, redis) -> None:
    a = cluster[0]
    doomed = Node(redis_url, "doomed").ready()
    await redis.set(room_key("fragile"), "doomed", ex=ROOM_LEASE)
    client = await SignalingClient.connect(a.url)  # through a, to the doomed node
    await client.request("join", room="fragile", name="x")
    assert "fragile" in await doomed.rooms()
    assert doomed.stop(signal.SIGKILL) == -signal.SIGKILL
    assert await wait_for_async(lambda: redis.get(room_key("fragile")), lambda holder: holder is None, 3 * (NODE_TTL + ROOM_LEASE))
    # its entry too (written just before the room leases at each heartbeat, it may outlast them by a moment)
    assert await wait_for_async(lambda: redis.get(node_key("doomed")), lambda entry: entry is None, 3 * NODE_TTL)
    assert await wait_for(lambda: client.closed.is_set(), 10)  # the relay to the dead node ended, so did the session
    await client.close()
    again = await SignalingClient.connect(a.url)  # a participant reconnecting
    try:
        await again.request("join", room="fragile", name="x")
        holder = await redis.get(room_key("fragile"))
        assert holder in {"a", "b", "c"}
        assert "fragile" in await next(n for n in cluster if n.id == holder).rooms()
    finally:
        await again.close()


async def test_without_redis_existing_rooms_go_on_new_rooms_are_refused_and_it_is_logged_once() -> None:
    with redis_server() as url:
        node = Node(url, "alone").ready()
        first = await SignalingClient.connect(node.url)
        await first.request("join", room="kept", name="one")
    # redis-server is stopped now
    try:
        second = await SignalingClient.connect(node.url)
        await second.request("join", room="kept", name="two")  # a room this node hosts needs no Redis
        third = await SignalingClient.connect(node.url)
        for _ in range(3):
            with pytest.raises(SignalingError) as refused:
                await third.request("join", room="new-room", name="three")
            assert refused.value.code == "cluster_unavailable" and "Redis is unreachable" in refused.value.message
        await asyncio.sleep(2 * NODE_TTL)  # heartbeats fail meanwhile: still one log line
        for client in (first, second, third):
            await client.close()
    finally:
        node.stop()
    log = node.stderr_rest
    assert sum("is unreachable" in line for line in log) == 1, log


async def test_sigterm_drains_bots_move_to_a_live_node_and_the_node_exits_once_empty(cluster, redis_url, redis, media) -> None:
    a = cluster[0]
    leaving = Node(redis_url, "leaving", SECRET, "--drain-timeout", "60").ready()
    await redis.set(room_key("moving"), "leaving", ex=ROOM_LEASE)
    bots = asyncio.create_task(run_bots(BotsConfig(url=a.url, count=2, room="moving", ramp=10, duration=10.0, media=media, seed=7)))
    assert await wait_for_async(lambda: leaving.rooms(), lambda rooms: rooms.get("moving") == 2, 15)
    await asyncio.sleep(1.0)  # media flows on the first node
    leaving.process.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(leaving.stop, None, 40) == 0  # it exits by itself once both bots moved: well before 60 s
    assert any("2 participant(s) told to reconnect" in line for line in leaving.stderr_rest), leaving.stderr_rest
    assert any("drained: no participant left" in line for line in leaving.stderr_rest), leaving.stderr_rest
    assert await redis.get(node_key("leaving")) is None
    holder = await redis.get(room_key("moving"))
    assert holder in {"a", "b", "c"}
    report = await bots
    assert report.failed == 0
    for bot in report.bots:
        assert bot["reconnects"] == 1 and bot["status"] == "left" and bot["errors"] == [], bot
        first = [c for c in bot["consumers"] if c["closed"]]
        again = [c for c in bot["consumers"] if not c["closed"]]
        assert sorted(c["kind"] for c in first) == sorted(c["kind"] for c in again) == ["audio", "video"]
        assert all(c["packets"] > 0 for c in first + again)  # media before and after the move
        assert all(c["packets_lost"] == 0 for c in again)


async def test_a_drain_ends_at_its_timeout_and_sends_new_rooms_elsewhere(cluster, redis_url, redis) -> None:
    stubborn = Node(redis_url, "stubborn", SECRET, "--drain-timeout", "3").ready()
    await redis.set(room_key("stays"), "stubborn", ex=ROOM_LEASE)
    staying = await SignalingClient.connect(stubborn.url)  # a participant that ignores `reconnect`
    await staying.request("join", room="stays", name="x")
    stubborn.process.send_signal(signal.SIGTERM)
    method, params = await asyncio.wait_for(staying.notifications.get(), 10)
    assert method == "reconnect" and params["reason"] == "draining"
    newcomer = await SignalingClient.connect(stubborn.url)  # joins through the draining node
    try:
        await newcomer.request("join", room="new-while-draining", name="y")
        assert await redis.get(room_key("new-while-draining")) in {"a", "b", "c"}
        assert "new-while-draining" not in await stubborn.rooms()
        await staying.request("getStats")  # the session that stayed still works meanwhile
    finally:
        await newcomer.close()
    assert await asyncio.to_thread(stubborn.stop, None, 20) == 0
    assert any("drain timeout: 1 participant(s) still here" in line for line in stubborn.stderr_rest), stubborn.stderr_rest
    assert await wait_for(lambda: staying.closed.is_set(), 10)
    await staying.close()


async def test_the_page_joins_again_when_its_node_drains(cluster, redis_url, redis, chromium) -> None:
    a = cluster[0]
    leaving = Node(redis_url, "leaving-page", SECRET, "--drain-timeout", "60").ready()
    await redis.set(room_key("page-moves"), "leaving-page", ex=ROOM_LEASE)
    query = "room=page-moves&autojoin=1&name="
    one, two = await chromium.open(f"{a.http}/?{query}one"), await chromium.open(f"{a.http}/?{query}two")
    try:
        await wait_for_streams(one, decoding("two", 10), 20)
        before = await one.evaluate("sfuctl.peerId")
        leaving.process.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(leaving.stop, None, 40) == 0
        assert any("drained: no participant left" in line for line in leaving.stderr_rest), leaving.stderr_rest
        for page in (one, two):
            await page.wait_until("sfuctl.state === 'joined'", 20)
        assert await one.evaluate("sfuctl.peerId") != before
        holder = await redis.get(room_key("page-moves"))
        assert holder in {"a", "b", "c"}
        assert (await next(n for n in cluster if n.id == holder).rooms())["page-moves"] == 2
        await wait_for_streams(one, decoding("two", 10), 20)  # decoding again, from the live node
        await wait_for_streams(two, decoding("one", 10), 20)
    finally:
        await one.close()
        await two.close()


def cluster_status(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "sfuctl.cli", "cluster", "status", *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})


async def test_cluster_status_lists_the_nodes_their_load_and_rooms(cluster, redis_url, redis) -> None:
    a, b, _ = cluster
    client = await SignalingClient.connect(a.url)
    await redis.set(room_key("listed"), "b", ex=ROOM_LEASE)
    try:
        await client.request("join", room="listed", name="x")
        assert await wait_for_async(lambda: redis.get(node_key("b")), lambda entry: json.loads(entry)["peers"] >= 1, 5)
        shown = await asyncio.to_thread(cluster_status, "--redis", redis_url, "--json")
        assert shown.returncode == 0, shown.stderr
        report = json.loads(shown.stdout)
        assert report["schema"] == "sfuctl.cluster.status/1" and report["redis"] == redis_url
        nodes = {node["id"]: node for node in report["nodes"]}
        assert {"a", "b", "c"} <= set(nodes)
        assert nodes["b"]["url"] == b.http and "listed" in nodes["b"]["room_names"] and nodes["b"]["peers"] >= 1
        assert "listed" not in nodes["a"]["room_names"] and not nodes["b"]["draining"]
        assert all(0 <= node["heartbeat_age_s"] <= NODE_TTL for node in nodes.values())
        assert {"name": "listed", "node": "b", "node_live": True} in report["rooms"]
        table = await asyncio.to_thread(cluster_status, "--redis", redis_url)
        assert table.returncode == 0 and re.search(r"\bb\b.*" + re.escape(b.http), table.stdout), table.stdout
        assert re.search(r"listed\s.*\bb\b", table.stdout), table.stdout
    finally:
        await client.close()


def test_cluster_status_with_a_wrong_redis_is_one_line_and_exit_1() -> None:
    shown = cluster_status("--redis", "redis://127.0.0.1:1/0")
    assert shown.returncode == 1 and shown.stdout == ""
    assert shown.stderr.strip().splitlines() == [
        "error: cannot reach Redis at redis://127.0.0.1:1/0 (Error 111 connecting to 127.0.0.1:1. Connection refused.); check --redis / SFUCTL_REDIS"
    ]


async def test_stats_on_any_node_show_every_nodes_rooms_and_each_nodes_own_sample(cluster, redis) -> None:
    a, b, c = cluster
    clients = []
    try:
        for room, node in (("seen-on-a", "a"), ("seen-on-b", "b")):
            await redis.set(room_key(room), node, ex=ROOM_LEASE)
            client = await SignalingClient.connect(c.url)  # both through c
            await client.request("join", room=room, name="x")
            clients.append(client)
        shown = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "sfuctl.cli", "stats", "--url", c.url, "--once", "--json"],
            capture_output=True, text=True, timeout=60,
        )
        assert shown.returncode == 0, shown.stderr
        snapshot = json.loads(shown.stdout)
        validate_snapshot(snapshot)
        rooms = {room["name"]: room for room in snapshot["rooms"]}
        assert rooms["seen-on-a"]["node"] == "a" and rooms["seen-on-b"]["node"] == "b"
        assert len(rooms["seen-on-a"]["peers"]) == len(rooms["seen-on-b"]["peers"]) == 1
        nodes = {node["id"]: node for node in snapshot["cluster"]["nodes"]}
        assert snapshot["cluster"]["node"] == "c" and {"a", "b", "c"} <= set(nodes)
        for node in nodes.values():
            assert node["error"] is None and node["server"]["peers"] >= 0 and abs(node["time"] - snapshot["time"]) < 30
        assert nodes["b"]["server"]["peers"] >= 1 and nodes["a"]["url"] == a.http
        assert snapshot["server"] == nodes["c"]["server"]  # c's own: figures of other nodes are not added to it
        table = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-m", "sfuctl.cli", "stats", "--url", c.url, "--once", "--rooms"],
            capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
        )
        assert re.search(r"node b\s.*peers \d+.*sampled \d\d:\d\d:\d\d\.\d{3}", table.stdout), table.stdout
        assert re.search(r"seen-on-b\s+b\s", table.stdout), table.stdout
        async with aiohttp.ClientSession() as http, http.get(f"{b.http}/metrics") as response:
            metrics = await response.text()
        assert re.search(r'sfuctl_peers\{[^}]*node="b"[^}]*room="seen-on-b"', metrics) or re.search(
            r'sfuctl_peers\{[^}]*room="seen-on-b"[^}]*node="b"', metrics), metrics[:2000]
    finally:
        for client in clients:
            await client.close()


async def test_a_room_pinned_by_name_goes_to_its_node_and_elsewhere_when_that_node_is_not_live(cluster, redis_url, redis) -> None:
    placing = Node(redis_url, "placing", SECRET, "--pin", "pinned-*=b", "--pin", "ghostly=nowhere").ready()
    clients = []
    try:
        for room in ("pinned-1", "pinned-2", "ghostly"):
            client = await SignalingClient.connect(placing.url)
            await client.request("join", room=room, name="x")
            clients.append(client)
        assert await redis.get(room_key("pinned-1")) == await redis.get(room_key("pinned-2")) == "b"
        b = cluster[1]
        assert {"pinned-1", "pinned-2"} <= set(await b.rooms())
        assert await redis.get(room_key("ghostly")) in {"a", "b", "c", "placing"}  # its node is not live: the least loaded
    finally:
        for client in clients:
            await client.close()
        placing.stop()


async def test_after_a_redis_restart_live_nodes_reclaim_their_rooms_and_calls_go_on(media) -> None:
    port = free_port()
    with redis_server(port) as url:
        first, second = Node(url, "r1").ready(), Node(url, "r2").ready()
        client = aioredis.from_url(url, decode_responses=True)
        try:
            await client.set(room_key("survivor"), "r1", ex=ROOM_LEASE)
            await client.aclose()
            bots = asyncio.create_task(run_bots(BotsConfig(url=second.url, count=2, room="survivor", ramp=10, duration=8.0, media=media, seed=9)))
            assert await wait_for_async(lambda: first.rooms(), lambda rooms: rooms.get("survivor") == 2, 15)
        except BaseException:
            first.stop()
            second.stop()
            raise
    try:
        await asyncio.sleep(2 * HEARTBEAT_INTERVAL)  # Redis stays down for two heartbeats
        with redis_server(port) as again:  # the same address, empty
            client = aioredis.from_url(again, decode_responses=True)
            try:
                assert await wait_for_async(lambda: client.get(room_key("survivor")), lambda holder: holder == "r1", 3 * NODE_TTL)
                assert await wait_for_async(lambda: client.smembers("sfuctl:cluster:nodes"), lambda ids: {"r1", "r2"} <= ids, 3 * NODE_TTL)
                report = await bots
                assert report.failed == 0
                for bot in report.bots:  # the call between them went on meanwhile (nothing of it crosses Redis)
                    assert bot["status"] == "left" and bot["errors"] == [] and bot["reconnects"] == 0
                    assert sorted(c["kind"] for c in bot["consumers"]) == ["audio", "video"]
                    assert all(c["packets"] > 100 and c["packets_lost"] == 0 for c in bot["consumers"])
                late = await SignalingClient.connect(second.url)  # a new participant finds the room on r1 again
                try:
                    await late.request("join", room="survivor", name="late")
                    assert (await first.rooms())["survivor"] >= 1 and "survivor" not in await second.rooms()
                finally:
                    await late.close()
            finally:
                await client.aclose()
                first.stop()
                second.stop()
    finally:
        first.stop()
        second.stop()
    for node in (first, second):
        log = "\n".join(node.stderr_rest)
        assert log.count("is unreachable") == 1 and log.count("is reachable again") == 1, log


@pytest.mark.alone  # after the kill, the bots must join again and get media within the run's last seconds
async def test_bots_with_reconnect_join_again_on_a_live_node_when_theirs_is_killed(cluster, redis_url, redis, media) -> None:
    a = cluster[0]
    doomed = Node(redis_url, "doomed-2").ready()
    await redis.set(room_key("phoenix"), "doomed-2", ex=ROOM_LEASE)
    config = BotsConfig(url=a.url, count=2, room="phoenix", ramp=10, duration=14.0, media=media, seed=11, reconnect=True)
    bots = asyncio.create_task(run_bots(config))
    assert await wait_for_async(lambda: doomed.rooms(), lambda rooms: rooms.get("phoenix") == 2, 15)
    assert doomed.stop(signal.SIGKILL) == -signal.SIGKILL
    report = await bots
    assert await redis.get(room_key("phoenix")) in {"a", "b", "c"}
    for bot in report.bots:
        assert bot["status"] == "left" and bot["reconnects"] == 1, bot
        lost, *retries = bot["errors"]  # the loss, then joins refused until the dead node's lease ran out
        assert lost in ("signaling connection closed by the server", "send transport closed", "receive transport closed"), lost
        assert all(e.startswith("join again after reconnect") for e in retries), bot["errors"]
        again = [c for c in bot["consumers"] if not c["closed"]]
        assert sorted(c["kind"] for c in again) == ["audio", "video"] and all(c["packets"] > 0 for c in again)
