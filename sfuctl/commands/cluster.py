"""`sfuctl cluster status`: the nodes of a cluster, their load and their rooms (docs/cluster.md)."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.table import Table

from ..cluster.status import StatusFailure, cluster_status
from ..runtime import run
from .conventions import CommandError, command, group, json_option, make_console, write_output


@group(exit_codes={0: "success; each command lists its own exit statuses in its --help"})
def cluster() -> None:
    """A cluster of `sfuctl serve --redis` nodes (docs/cluster.md).

    \b
    Example:
      sfuctl cluster status --redis redis://10.0.0.2:6379/0
    """


@cluster.command(exit_codes={0: "printed (also when no node is live)", 1: "Redis is unreachable"})
@click.option("--redis", "redis_url", envvar="SFUCTL_REDIS", required=True, help="The cluster's Redis (redis://HOST:PORT/DB), as given to sfuctl serve --redis.")
@json_option("Write the status as JSON (schema sfuctl.cluster.status/1, docs/cluster.md) instead of tables.")
def status(redis_url: str, json_path: Path | str | None) -> None:
    """List the live nodes (URL, peers, rooms, consumers, CPU, draining, last heartbeat) and the rooms each hosts.

    \b
    Examples:
      sfuctl cluster status --redis redis://10.0.0.2:6379/0
      sfuctl cluster status --redis redis://10.0.0.2:6379/0 --json | jq '.nodes[] | {id, peers, rooms}'
    """
    try:
        report = run(cluster_status(redis_url))
    except StatusFailure as exc:
        raise CommandError(str(exc)) from None
    if json_path is not None:
        write_output(json_path, json.dumps(report, indent=2) + "\n")
        return
    console = make_console()
    nodes = Table(title=f"cluster on {report['redis']}: {len(report['nodes'])} live node(s)", title_justify="left")
    for column in ("node", "url", "media ip", "peers", "rooms", "consumers", "cpu %", "state", "heartbeat"):
        nodes.add_column(column, justify="right" if column in ("peers", "rooms", "consumers", "cpu %", "heartbeat") else "left")
    for node in report["nodes"]:
        nodes.add_row(node["id"], node["url"], node["media_ip"], str(node["peers"]), str(node["rooms"]),
                      str(node["consumers"]), f"{node['cpu_percent']:.0f}", "draining" if node["draining"] else "live",
                      f"{node['heartbeat_age_s']:.1f} s ago")
    console.print(nodes)
    rooms = Table(title=f"{len(report['rooms'])} room(s)", title_justify="left")
    rooms.add_column("room")
    rooms.add_column("node")
    for room in report["rooms"]:
        rooms.add_row(room["name"], room["node"] + ("" if room["node_live"] else " (not live: its lease runs out)"))
    console.print(rooms)
