"""`sfuctl agent`: a load agent that runs shares of other machines' runs (docs/agents.md)."""

from __future__ import annotations

import asyncio
import re
import signal
import socket
import sys

import click
from redis.exceptions import RedisError
from rich.console import Console

from ..agents.agent import Agent
from ..agents.link import AgentsError, connect
from ..bots.config import default_processes
from ..runtime import run
from .conventions import command, make_console, print_error

EXIT_STOPPED = 0
EXIT_FAILED = 1
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # it is part of Redis keys


def _name(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not NAME.fullmatch(value):
        raise click.BadParameter(f"{value!r}: use 1 to 63 letters, digits, '.', '_' or '-'")
    return value


@command(
    short_help="Run bots for `sfuctl run/bots --agents` on other machines, through Redis.",
    exit_codes={0: "stopped by Ctrl-C or SIGTERM (a run in progress ends first: its bots leave and report)",
                1: "Redis unreachable or lost, or the name is taken by a live agent"},
    epilog=(
        "Example: sfuctl agent --redis redis://10.0.0.2:6379 --agents-secret \"$SECRET\" --name load-1\n\n"
        "Then, anywhere: sfuctl run scenarios/meeting.toml --url ws://10.0.0.5:8080 --agents redis://10.0.0.2:6379"
    ),
)
@click.option("--redis", "redis_url", metavar="URL", envvar="SFUCTL_AGENTS", required=True, help="The Redis every agent and controller of the run uses (redis://HOST:PORT[/DB]), or SFUCTL_AGENTS.")
@click.option("--name", default=None, callback=_name, help="This agent's name, unique among the agents of that Redis [default: the host name].")
@click.option("--processes", type=click.IntRange(1, 256), default=None, help="Bot processes per run [default: one per core].")
@click.option("--agents-secret", envvar="SFUCTL_AGENTS_SECRET", required=True, help="The secret plans must be signed with (or SFUCTL_AGENTS_SECRET); the same on every agent and controller.")
def agent(redis_url: str, name: str | None, processes: int | None, agents_secret: str) -> None:
    """Register at the Redis, wait for work from a controller (`sfuctl run --agents` or `sfuctl bots
    --agents`), run its share of the bots as a local run would, send back the samples and bot records, and
    wait again, until Ctrl-C. Only plans signed with the shared secret, from the same sfuctl version, run.
    """
    console = make_console()
    sys.exit(run(_serve(redis_url, name or socket.gethostname(), processes or default_processes(), agents_secret,
                        console)))


async def _serve(url: str, name: str, processes: int, secret: str, console: Console) -> int:
    try:
        client = await connect(url)
    except AgentsError as exc:
        print_error(str(exc))
        return EXIT_FAILED
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker = Agent(client, url, name, secret, processes, lambda line: console.print(line, highlight=False,
                                                                                     markup=False, soft_wrap=True))
    try:
        await worker.serve(stop)
    except AgentsError as exc:
        print_error(str(exc))
        return EXIT_FAILED
    except (RedisError, OSError) as exc:
        print_error(f"lost Redis at {url} ({exc}); is redis-server still running there?")
        return EXIT_FAILED
    finally:
        await client.aclose()
    return EXIT_STOPPED
