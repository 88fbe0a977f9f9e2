"""What `sfuctl cluster status` shows: the live nodes, their load and the rooms each hosts, read from Redis."""

from __future__ import annotations

import time
from dataclasses import asdict

from redis.exceptions import RedisError

from .registry import Registry

SCHEMA = "sfuctl.cluster.status/1"


class StatusFailure(Exception):
    """Redis cannot be read; the message names the URL (without its password)."""


async def cluster_status(redis_url: str) -> dict:
    """The cluster on `redis_url` as documented in docs/cluster.md (`--json`)."""
    registry = Registry(redis_url)
    try:
        nodes = await registry.nodes()
        rooms = await registry.rooms()
    except (RedisError, OSError) as exc:
        raise StatusFailure(f"cannot reach Redis at {registry.safe_url} ({exc}); check --redis / SFUCTL_REDIS") from None
    finally:
        await registry.close()
    now = time.time()
    live = {node.id for node in nodes}
    return {
        "schema": SCHEMA,
        "redis": registry.safe_url,
        "time": now,
        "nodes": [
            {**asdict(node), "heartbeat_age_s": round(max(0.0, now - node.time), 3),
             "room_names": sorted(r for r, holder in rooms.items() if holder == node.id)}
            for node in sorted(nodes, key=lambda n: n.id)
        ],
        "rooms": [{"name": name, "node": holder, "node_live": holder in live} for name, holder in sorted(rooms.items())],
    }
