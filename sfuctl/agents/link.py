"""What agents and their controller share through Redis: the key names, the signed messages, Redis's clock.

Keys (docs/agents.md):
  sfuctl:agent:NAME        hash: the agent's registration, expiring HEARTBEAT_TTL after its last heartbeat
  sfuctl:agent:NAME:inbox  stream: signed messages for the agent (a plan, its start time, stop)
  sfuctl:run:ID            stream: what the agents of one run report (ready, joins, samples, records)
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass

from redis import asyncio as aioredis
from redis.exceptions import RedisError

PREFIX = "sfuctl"
HEARTBEAT_INTERVAL = 1.0  # an agent refreshes its registration this often
# An agent not heard of for this long is gone (the controller checks every second). Its bots run in child
# processes, so a busy machine delays its heartbeat by far less than this.
HEARTBEAT_TTL = 5.0
RUN_TTL = 3600  # a run's stream is dropped an hour after its last entry
INBOX_LENGTH = 100  # the newest messages an inbox keeps (a run sends three)
READ_BLOCK_MS = 500  # how long a stream read waits for an entry, so stops and losses are seen promptly


@dataclass(frozen=True)
class AgentsSettings:
    """Where the agents are (a Redis URL) and the secret their plans are signed with."""

    url: str
    secret: str


class AgentsError(Exception):
    """Agents cannot do what was asked (Redis unreachable, no agent, a refused plan); one line for the user."""


def agent_key(name: str) -> str:
    return f"{PREFIX}:agent:{name}"


def inbox_key(name: str) -> str:
    return f"{PREFIX}:agent:{name}:inbox"


def run_key(run_id: str) -> str:
    return f"{PREFIX}:run:{run_id}"


async def connect(url: str) -> aioredis.Redis:
    """A client of the Redis at `url` that answered a PING; AgentsError in one line when it does not."""
    try:
        client = aioredis.from_url(url, decode_responses=True, socket_connect_timeout=5)
    except ValueError as exc:
        raise AgentsError(f"bad Redis URL {url!r} ({exc}); expected redis://HOST:PORT[/DB]") from None
    try:
        await client.ping()
    except (RedisError, OSError) as exc:
        await client.aclose()
        raise AgentsError(f"cannot reach Redis at {url} ({_reason(exc)}); is redis-server running there?") from None
    return client


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().rstrip(".")
    return text.rsplit(". ", 1)[-1] if ". " in text else text or type(exc).__name__


async def redis_clock(client: aioredis.Redis) -> tuple[float, float]:
    """(Redis's Unix time minus ours, the round trip of the question), in seconds: Redis's TIME is the one
    clock every machine of a run reads, and half the round trip bounds the error of the offset."""
    before = time.time()
    seconds, micros = await client.time()
    after = time.time()
    return seconds + micros / 1e6 - (before + after) / 2, after - before


def sign(body: dict, secret: str) -> dict[str, str]:
    """A stream entry carrying `body` and its HMAC-SHA256 under the shared secret."""
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return {"body": text, "sig": _mac(text, secret)}


def verify(fields: dict[str, str], secret: str) -> dict:
    """The body of a signed entry; AgentsError when the signature is missing or wrong."""
    text, signature = fields.get("body", ""), fields.get("sig", "")
    if not hmac.compare_digest(_mac(text, secret), signature):
        raise AgentsError("the plan's signature does not match this agent's --agents-secret: give the agent and "
                          "the controller the same secret")
    return json.loads(text)


def _mac(text: str, secret: str) -> str:
    return hmac.new(secret.encode(), text.encode(), hashlib.sha256).hexdigest()
