"""A cluster node: the multi-worker front, placing rooms through Redis and relaying to the node that hosts one.

A join for a room nobody hosts claims it for the least loaded live node; a request for a room hosted elsewhere
goes to that node over an internal connection (the front's relay, one level up) carrying the cluster secret in
CLUSTER_HEADER. The node receiving it places the room on its own workers; media never crosses the relay.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
from dataclasses import dataclass, replace

import aiohttp
from aiohttp import web
from redis.exceptions import RedisError

from ..server.auth import INTERNAL, Grant
from ..server.config import ServerConfig, url_host
from ..server.errors import SignalingError
from ..server.front import Front, RunningFront, start_front
from ..server.supervisor import WorkerProcess
from .placement import LeastLoaded, Selector
from .registry import HEARTBEAT_INTERVAL, NodeInfo, Registry

log = logging.getLogger(__name__)

CLUSTER_HEADER = "X-Sfuctl-Cluster"  # carries the cluster secret on connections between nodes
STATS_TIMEOUT = 5.0  # seconds a node waits for another node's getStats before showing it as unanswered
DRAIN_POLL_INTERVAL = 0.5  # seconds between a draining node's looks at whether its participants have gone


@dataclass(frozen=True)
class RemoteNode:
    """Another node as a relay target (what a WorkerProcess is to the front)."""

    id: str
    http_url: str

    @property
    def ws_url(self) -> str:
        return "ws" + self.http_url.removeprefix("http") + "/ws"


class ClusterUnavailable(SignalingError):
    """Redis cannot be reached: a new room cannot be placed."""

    def __init__(self, room: str) -> None:
        super().__init__("cluster_unavailable", f"room {room!r} cannot be placed now: the cluster's Redis is unreachable; retry later")


class Draining(SignalingError):
    """This node drains: it takes no room, and no other node is live to take this one."""

    def __init__(self, room: str) -> None:
        super().__init__("draining", f"room {room!r} cannot be placed now: this node is shutting down and no other node is live; retry later")


class ClusterNode(Front):
    """The front of one node of a cluster."""

    def __init__(
        self, config: ServerConfig, workers: list[WorkerProcess], registry: Registry, node_id: str, secret: str,
        selector: Selector | None = None,
    ) -> None:
        super().__init__(config, workers)
        self.selector = selector if selector is not None else LeastLoaded()
        self.registry = registry
        self.info = NodeInfo(id=node_id, url="", media_ip=config.candidate_ip)
        self.secret = secret
        self.here = HereOnly(self)
        self.redis_up = True
        self.draining = False
        self._heartbeat: asyncio.Task | None = None

    async def join_cluster(self, url: str) -> None:
        """Register at `url` (this node's signaling) and keep the entry fresh; ValueError when the id is taken."""
        self.info = replace(self.info, url=url)
        if not await self.registry.register(self.info, first=True):
            raise ValueError(f"node id {self.info.id!r} is already live in the cluster; pick another --node-id")
        self._heartbeat = asyncio.create_task(self._beat(), name="cluster-heartbeat")

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            try:
                await self.registry.unregister(self.info.id, list(self.owner))
            except (RedisError, OSError) as exc:
                log.warning("could not leave the cluster's Redis cleanly (%s); the entry expires by itself", exc)
        await self.registry.close()
        await super().close()

    async def start_drain(self) -> int:
        """Take no new room (the registry says so, this node's rooms are unmapped so that their next join places
        them on a live node) and send every participant a `reconnect` notification; how many were told."""
        self.draining = True
        self.info = replace(self.info, draining=True)
        try:
            await self.registry.register(self.info)
            await self.registry.release(self.info.id, list(self.owner))
        except (RedisError, OSError):
            self._redis_state(False)
        told = [s for s in self.sessions if s.participant]
        params = {"reason": "draining", "message": "this node is shutting down: join again (another node takes the room)"}
        await asyncio.gather(*(s.notify("reconnect", params) for s in told), return_exceptions=True)
        return len(told)

    async def remaining(self) -> int:
        """Participants still here: peers on this node's workers and participants relayed to other nodes."""
        relayed = sum(isinstance(s.worker, RemoteNode) for s in self.sessions)
        return (await self.snapshot())["server"].get("peers", 0) + relayed

    async def wait_empty(self, timeout: float) -> int:
        """Wait until no participant is left or `timeout` seconds passed; how many are left."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while (left := await self.remaining()) and loop.time() < deadline:
            await asyncio.sleep(min(DRAIN_POLL_INTERVAL, max(0.0, deadline - loop.time())))
        return left

    async def stats_snapshot(self, room: str | None = None) -> dict:
        """This node's snapshot with every live node's rooms (each room names its `node`) and a `cluster` entry per
        node with its own `server` block and sample `time`: `server` stays this node's, since figures sampled
        at different times on different nodes are never added up."""
        local = await self.snapshot(room)
        entries = [{"id": self.info.id, "url": self.info.url, "time": local["time"], "server": local["server"], "error": None}]
        rooms = [{**r, "node": self.info.id} for r in local["rooms"]]
        try:
            others = [n for n in await self.registry.nodes() if n.id != self.info.id]
        except (RedisError, OSError):
            self._redis_state(False)
            others = []
        parts = await asyncio.gather(*(self._node_stats(n, room) for n in others))
        for node, part in zip(others, parts):
            if isinstance(part, str):
                entries.append({"id": node.id, "url": node.url, "time": None, "server": None, "error": part})
                continue
            entries.append({"id": node.id, "url": node.url, "time": part["time"], "server": part["server"], "error": None})
            rooms += [{**r, "node": node.id} for r in part["rooms"]]
        return {**local, "rooms": rooms, "cluster": {"node": self.info.id, "nodes": entries}}

    async def _node_stats(self, node: NodeInfo, room: str | None) -> dict | str:
        """Another node's own snapshot (getStats over an internal connection), or why it has none."""
        target = RemoteNode(node.id, node.url)
        try:
            async with self.http.ws_connect(target.ws_url, headers=self.upstream_headers(target)) as ws:
                await ws.send_json({"id": 1, "method": "getStats", "params": {"room": room} if room else {}})
                reply = await asyncio.wait_for(ws.receive_json(), STATS_TIMEOUT)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError, TypeError) as exc:
            return f"no answer from {node.url}: {type(exc).__name__}: {exc}".rstrip(": ")
        if not reply.get("ok"):
            return f"{node.url} refused: {json.dumps(reply.get('error'))}"
        return reply["result"]

    def metrics_labels(self) -> dict[str, str]:
        return {"node": self.info.id}

    def route(self, request: web.Request) -> Front:
        """A request another node relayed (with the cluster secret) is served here; a wrong secret is refused."""
        secret = request.headers.get(CLUSTER_HEADER)
        if secret is None:
            return self
        if not hmac.compare_digest(secret.encode(), self.secret.encode()):
            raise web.HTTPForbidden(text="wrong cluster secret (--cluster-secret must be the same on every node)\n")
        return self.here

    def upstream_headers(self, target: WorkerProcess | RemoteNode) -> dict[str, str]:
        return {CLUSTER_HEADER: self.secret} if isinstance(target, RemoteNode) else {}

    async def place(self, room: str) -> WorkerProcess | RemoteNode:
        """This node's worker for a room hosted here, else the node that hosts or now claims it."""
        if room in self.owner and not self.draining:
            return await super().place(room)
        try:
            candidates = [n for n in await self.registry.nodes() if not n.draining and not (self.draining and n.id == self.info.id)]
            if not candidates and self.draining:
                raise Draining(room)
            chosen = self.selector.choose(room, candidates).id if candidates else self.info.id
            holder = await self.registry.claim(room, chosen)
            target = await self._target(holder)
        except (RedisError, OSError):
            self._redis_state(False)
            raise ClusterUnavailable(room) from None
        return target if target is not None else await super().place(room)

    async def place_peer(self, room: str) -> WorkerProcess | RemoteNode:
        """A room hosted here may spill over this node's workers; one on another node is that node's to spread."""
        target = await self.place(room)
        return target if isinstance(target, RemoteNode) else await self.spill(room, target)

    async def locate(self, room: str) -> WorkerProcess | RemoteNode | None:
        if room in self.owner:
            return await super().locate(room)
        try:
            holder = await self.registry.host(room)
            if holder is None:
                return None
            return await self._target(holder) or await super().locate(room)
        except (RedisError, OSError):
            self._redis_state(False)
            raise ClusterUnavailable(room) from None

    async def _target(self, holder: str) -> RemoteNode | None:
        """None when `holder` is this node."""
        if holder == self.info.id:
            return None
        node = await self.registry.node(holder)
        if node is None:
            raise ClusterUnavailable(holder)
        return RemoteNode(node.id, node.url)

    async def _beat(self) -> None:
        while True:
            snapshot = await self.snapshot()
            server = snapshot["server"]
            hosted = sorted(set(self.owner) | {r["name"] for r in snapshot["rooms"]})
            self.info = replace(
                self.info, rooms=len(hosted), peers=server.get("peers", 0),
                consumers=server.get("consumers", 0), cpu_percent=server.get("cpu_percent", 0.0),
            )
            try:
                await self.registry.register(self.info)
                lost = [] if self.draining else await self.registry.refresh_rooms(self.info.id, hosted)
            except (RedisError, OSError):
                self._redis_state(False)
            else:
                self._redis_state(True)
                for room in lost:
                    log.warning("room %r is mapped to another node in Redis while it also lives here", room)
            await asyncio.sleep(HEARTBEAT_INTERVAL)

    def _redis_state(self, up: bool) -> None:
        """One log line per change of Redis' reachability, never one per request."""
        if up != self.redis_up:
            self.redis_up = up
            if up:
                log.warning("cluster Redis %s is reachable again: new rooms are placed again", self.registry.safe_url)
            else:
                log.error("cluster Redis %s is unreachable: existing rooms go on, new rooms are refused", self.registry.safe_url)


class HereOnly:
    """The placement of a request relayed by another node: this node's workers, never another node."""

    def __init__(self, node: ClusterNode) -> None:
        self.node = node

    def __getattr__(self, name: str):
        return getattr(self.node, name)

    async def place(self, room: str) -> WorkerProcess:
        if self.node.draining:
            raise Draining(room)
        return await Front.place(self.node, room)

    async def place_peer(self, room: str) -> WorkerProcess:
        return await self.spill(room, await self.place(room))

    async def spill(self, room: str, home: WorkerProcess) -> WorkerProcess:
        return await Front.spill(self.node, room, home)

    async def locate(self, room: str) -> WorkerProcess | None:
        return await Front.locate(self.node, room)

    def upstream_headers(self, target: WorkerProcess) -> dict[str, str]:
        return {}

    async def stats_snapshot(self, room: str | None = None) -> dict:
        """Only this node's rooms: the node asking gathers the others."""
        return await self.node.snapshot(room)

    def stats_grant(self, token: str | None) -> Grant:
        """The asking node proved the cluster secret; the participant's own token was checked there."""
        return INTERNAL


class ClusterStartError(Exception):
    """A node cannot join its cluster; the message says why and what to change."""


async def start_node(
    config: ServerConfig, workers: int, log_level: str, redis_url: str, node_id: str, node_url: str | None, secret: str,
    selector: Selector | None = None,
) -> RunningFront:
    """Start a multi-worker front that is a node of the cluster on `redis_url`, registered under `node_id`,
    placing new rooms with `selector` (default: the least loaded node)."""
    registry = Registry(redis_url)
    try:
        await registry.ping()
    except (RedisError, OSError) as exc:
        await registry.close()
        raise ClusterStartError(f"cannot reach Redis at {registry.safe_url} ({exc}); check --redis / SFUCTL_REDIS") from None
    try:
        running = await start_front(config, workers, log_level, make_front=lambda c, w: ClusterNode(c, w, registry, node_id, secret, selector))
    except BaseException:
        await registry.close()
        raise
    try:
        await running.front.join_cluster(node_url or f"http://{url_host(config.announced_ips[0] if config.announced_ips else running.host)}:{running.port}")
    except (ValueError, RedisError, OSError) as exc:
        await running.close()
        raise ClusterStartError(str(exc)) from None
    return running
