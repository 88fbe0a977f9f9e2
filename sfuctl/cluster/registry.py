"""What a cluster keeps in Redis: live nodes and which node hosts each room.

Keys (PREFIX = sfuctl:cluster):
  PREFIX:node:ID     string (JSON): a node's URL, media address and load; expires NODE_TTL after its last heartbeat
  PREFIX:nodes       set: node ids seen; an id whose node key is gone is dropped when read
  PREFIX:room:NAME   string: the id of the node hosting the room; expires ROOM_LEASE after its node's last heartbeat
No secret and no media key is ever written.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit, urlunsplit
from dataclasses import asdict, dataclass

import redis.asyncio as aioredis

PREFIX = "sfuctl:cluster"
HEARTBEAT_INTERVAL = 1.0  # seconds between a node's registry refreshes
NODE_TTL = 3  # seconds a node stays listed after its last heartbeat (three missed beats)
ROOM_LEASE = 3  # seconds a room stays mapped to its node after the node's last heartbeat

# Claim a room for ARGV[1] unless a live node (its node key exists) holds it; returns the holder.
CLAIM_SCRIPT = """
local holder = redis.call('GET', KEYS[1])
if holder and redis.call('EXISTS', ARGV[3] .. holder) == 1 then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return ARGV[1]
"""
# Extend the lease of every room (KEYS) this node (ARGV[1]) holds, re-claiming the ones that are gone (a Redis
# restart); returns the rooms another node holds.
REFRESH_SCRIPT = """
local lost = {}
for _, key in ipairs(KEYS) do
  local holder = redis.call('GET', key)
  if holder == ARGV[1] or not holder then
    redis.call('SET', key, ARGV[1], 'EX', ARGV[2])
  else
    table.insert(lost, key)
  end
end
return lost
"""
# Delete the rooms (KEYS) still held by ARGV[1].
RELEASE_SCRIPT = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 0
"""


@dataclass(frozen=True)
class NodeInfo:
    """One node's registry entry."""

    id: str
    url: str  # where clients and other nodes reach its signaling (http://HOST:PORT)
    media_ip: str  # the address in its ICE candidates
    rooms: int = 0
    peers: int = 0
    consumers: int = 0
    cpu_percent: float = 0.0
    draining: bool = False
    time: float = 0.0

    @property
    def load(self) -> tuple:
        """Sort key of placement: the fewest peers, then rooms, then the id (stable)."""
        return (self.peers, self.rooms, self.id)


def scrub_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def room_key(room: str) -> str:
    return f"{PREFIX}:room:{room}"


def node_key(node_id: str) -> str:
    return f"{PREFIX}:node:{node_id}"


class Registry:
    """A node's view of the cluster in Redis."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.redis = aioredis.from_url(url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
        self._claim = self.redis.register_script(CLAIM_SCRIPT)
        self._refresh = self.redis.register_script(REFRESH_SCRIPT)
        self._release = self.redis.register_script(RELEASE_SCRIPT)

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        return scrub_password(self.url)

    async def close(self) -> None:
        await self.redis.aclose()

    async def ping(self) -> None:
        await self.redis.ping()

    async def register(self, node: NodeInfo, *, first: bool = False) -> bool:
        """Write `node`'s entry; with `first`, only when no live node has its id (False otherwise)."""
        value = json.dumps({**asdict(node), "time": time.time()})
        written = await self.redis.set(node_key(node.id), value, ex=NODE_TTL, nx=first)
        if written:
            await self.redis.sadd(f"{PREFIX}:nodes", node.id)
        return bool(written)

    async def refresh_rooms(self, node_id: str, rooms: list[str]) -> list[str]:
        """Extend `node_id`'s room leases; the rooms another node holds now."""
        if not rooms:
            return []
        lost = await self._refresh(keys=[room_key(r) for r in rooms], args=[node_id, ROOM_LEASE])
        return [key.removeprefix(f"{PREFIX}:room:") for key in lost]

    async def release(self, node_id: str, rooms: list[str]) -> None:
        """Unmap the `rooms` that `node_id` still holds: their next join places them anew."""
        if rooms:
            await self._release(keys=[room_key(r) for r in rooms], args=[node_id])

    async def unregister(self, node_id: str, rooms: list[str]) -> None:
        """A clean shutdown: the node's entry and its rooms leave at once."""
        await self.release(node_id, rooms)
        await self.redis.delete(node_key(node_id))
        await self.redis.srem(f"{PREFIX}:nodes", node_id)

    async def nodes(self) -> list[NodeInfo]:
        """Live nodes (ids whose entry expired are dropped from the set)."""
        ids = sorted(await self.redis.smembers(f"{PREFIX}:nodes"))
        if not ids:
            return []
        values = await self.redis.mget([node_key(i) for i in ids])
        gone = [i for i, v in zip(ids, values) if v is None]
        if gone:
            await self.redis.srem(f"{PREFIX}:nodes", *gone)
        return [NodeInfo(**json.loads(v)) for v in values if v is not None]

    async def node(self, node_id: str) -> NodeInfo | None:
        value = await self.redis.get(node_key(node_id))
        return NodeInfo(**json.loads(value)) if value is not None else None

    async def host(self, room: str) -> str | None:
        """The id of the node hosting `room`, or None."""
        return await self.redis.get(room_key(room))

    async def claim(self, room: str, node_id: str) -> str:
        """Give `room` to `node_id` unless a live node holds it already (atomic); the holder's id."""
        return await self._claim(keys=[room_key(room)], args=[node_id, ROOM_LEASE, f"{PREFIX}:node:"])

    async def rooms(self) -> dict[str, str]:
        """Every mapped room and its node (for `sfuctl cluster status`)."""
        names = [key async for key in self.redis.scan_iter(match=f"{PREFIX}:room:*", count=500)]
        holders = await self.redis.mget(names) if names else []
        return {n.removeprefix(f"{PREFIX}:room:"): h for n, h in zip(names, holders) if h is not None}
