"""`sfuctl serve`: run the SFU."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import re
import secrets
import socket
from collections.abc import Callable
from dataclasses import fields

import click
from rich.console import Console

from ..cluster.node import ClusterNode, ClusterStartError, start_node
from ..cluster.placement import Pinned, parse_pin
from ..runtime import run, setup_logging
from ..server.app import start_server
from ..server.auth import Authenticator
from ..server.config import IceServer, MediaPortsBusy, ServerConfig, parse_port_range, url_host
from ..server.front import start_front
from ..server.quotas import Quotas
from ..server.supervisor import split_port_range
from .conventions import CommandError, Duration, command, make_console, on_stop_signals


def _read_key(path: str | None) -> str | None:
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as file:
            return file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise click.BadParameter(f"cannot read {path}: {exc}", param_hint="--auth-key-file") from None


def _port_range(ctx: click.Context, param: click.Parameter, value: str) -> tuple[int, int]:
    try:
        return parse_port_range(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


HOST_NAME = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252}[A-Za-z0-9])?")


def _announced_ips(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> tuple[str, ...]:
    """IP addresses as given; a host name is resolved once, here, and the banner says so."""
    return tuple(dict.fromkeys(_announced_ip(ctx, value) for value in values))


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _announced_ip(ctx: click.Context, value: str) -> str:
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    try:
        if not HOST_NAME.fullmatch(value):  # not even a host name: no lookup needed to refuse it
            raise OSError(value)
        address = socket.getaddrinfo(value, None, type=socket.SOCK_DGRAM)[0][4][0]
    except (OSError, UnicodeError):
        raise click.BadParameter(f"{value!r} is not an IP address and does not resolve: give the address peers "
                                 "reach this server at, e.g. 203.0.113.5") from None
    ctx.meta.setdefault("announced_ip_from", []).append((value, str(address)))
    return str(address)


def _pins(ctx: click.Context, param: click.Parameter, value: tuple[str, ...]) -> list[tuple[str, str]]:
    try:
        return [parse_pin(text) for text in value]
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
ICE_SERVER_URL = re.compile(r"(stun|turns?):[^\s?]+(\?transport=(udp|tcp))?")


def _ice_servers(urls: tuple[str, ...], username: str | None, credential: str | None, secret: str | None) -> tuple[IceServer, ...]:
    """The --ice-server URLs with their credentials; BadParameter names a malformed URL or missing credentials."""
    if (username is None) != (credential is None):
        raise click.BadParameter("give both --ice-username and --ice-credential (a static TURN user)", param_hint="--ice-username")
    if secret is not None and username is not None:
        raise click.BadParameter("give --turn-secret or a static --ice-username/--ice-credential, not both", param_hint="--turn-secret")
    servers = []
    for url in urls:
        if not ICE_SERVER_URL.fullmatch(url):
            raise click.BadParameter(f"{url!r} is not a STUN/TURN URL: e.g. stun:203.0.113.5:3478 or "
                                     "turn:turn.example.com:3478?transport=udp", param_hint="--ice-server")
        turn = url.startswith("turn")
        if turn and username is None and secret is None:
            raise click.BadParameter(f"the TURN server {url} needs --ice-username/--ice-credential or --turn-secret",
                                     param_hint="--ice-server")
        servers.append(IceServer(url, username, credential) if turn else IceServer(url))
    if (username is not None or secret is not None) and not any(s.url.startswith("turn") for s in servers):
        raise click.BadParameter("TURN credentials without a TURN --ice-server (turn:HOST:PORT)", param_hint="--ice-server")
    return tuple(servers)


def quota_options(command: Callable) -> Callable:
    """One option per quota (sfuctl.server.quotas.Quotas), each with an SFUCTL_ environment variable."""
    for quota in reversed(fields(Quotas)):
        flag = quota.metadata["flag"]
        command = click.option(
            flag,
            quota.name,
            envvar="SFUCTL_" + flag[2:].upper().replace("-", "_"),
            default=quota.metadata["served"],
            show_default=True,
            type=click.IntRange(quota.metadata["min"]) if quota.type in (int, "int") else click.FloatRange(quota.metadata["min"]),
            help=quota.metadata["help"],
        )(command)
    return command


@command(
    exit_codes={0: "stopped by Ctrl-C or SIGTERM (a cluster node drains on SIGTERM first)", 1: "cannot start: the signaling port or the media ports are taken, or the cluster's Redis is unreachable"},
)
@click.option("--host", envvar="SFUCTL_HOST", default="127.0.0.1", show_default=True, help="Address to listen on (signaling and media); :: takes IPv4 and IPv6.")
@click.option("--port", envvar="SFUCTL_PORT", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Signaling/HTTP port (0 picks a free one).")
@click.option("--announced-ip", "announced_ips", envvar="SFUCTL_ANNOUNCED_IP", multiple=True, callback=_announced_ips, help="IP address put in ICE candidates [default: --host]; repeatable (an IPv4 and an IPv6 address); a host name is resolved once at start.")
@click.option("--ice-tcp", envvar="SFUCTL_ICE_TCP", is_flag=True, help="The media port also takes ICE over TCP (RFC 6544 passive candidates), for clients whose UDP is blocked.")
@click.option("--ice-server", "ice_server_urls", envvar="SFUCTL_ICE_SERVER", multiple=True, metavar="URL", help="A STUN/TURN server handed to clients (join reply, WHIP/WHEP Link headers), e.g. turn:turn.example.com:3478?transport=udp; repeatable.")
@click.option("--ice-username", envvar="SFUCTL_ICE_USERNAME", default=None, help="Username for the --ice-server TURN URLs (a static coturn user).")
@click.option("--ice-credential", envvar="SFUCTL_ICE_CREDENTIAL", default=None, help="Password for the --ice-server TURN URLs.")
@click.option("--turn-secret", envvar="SFUCTL_TURN_SECRET", default=None, help="coturn's static-auth-secret (use-auth-secret): each client gets its own TURN credentials, valid 24 h, instead of --ice-username/--ice-credential.")
@click.option("--ice-udp/--no-ice-udp", envvar="SFUCTL_ICE_UDP", default=True, show_default=True, help="The media port takes UDP (--no-ice-udp with --ice-tcp: TCP only).")
@click.option("--rtc-port-range", envvar="SFUCTL_RTC_PORT_RANGE", default="40000-40099", show_default=True, callback=_port_range, help="Media ports (UDP, and TCP with --ice-tcp), split evenly over the workers; each worker takes the first free port of its slice and every transport shares it.")
@click.option("--consent-timeout", envvar="SFUCTL_CONSENT_TIMEOUT", default=30.0, show_default=True, type=Duration(1, 300), help="Time without ICE consent before a peer is dropped (30s, 2m).")
@click.option("--workers", envvar="SFUCTL_WORKERS", default=os.cpu_count() or 1, show_default="number of cores", type=click.IntRange(1, 64), help="Worker processes; each room lives on one worker (one core) until --room-spill-consumers.")
@click.option("--room-spill-consumers", envvar="SFUCTL_ROOM_SPILL_CONSUMERS", default=1500, show_default=True, type=click.IntRange(0), help="With several workers: a room with this many consumers on its home worker takes new participants on the least loaded other worker, its producers piped there (docs/architecture.md). 0: a room stays on one worker.")
@click.option("--auth-secret", envvar="SFUCTL_AUTH_SECRET", default=None, help="HS256 secret (32+ bytes): joining, WHIP/WHEP, stats and /metrics need an access token (docs/security.md).")
@click.option("--auth-key-file", envvar="SFUCTL_AUTH_KEY_FILE", default=None, type=click.Path(exists=True, dir_okay=False), help="PEM public key (RSA, Ed25519 or EC P-256): access tokens signed with its private key are accepted.")
@click.option("--metrics-token", envvar="SFUCTL_METRICS_TOKEN", default=None, help="A bearer secret that may read /metrics (a Prometheus scraper); /metrics then needs it or an admin token.")
@click.option("--allowed-origin", "allowed_origins", envvar="SFUCTL_ALLOWED_ORIGIN", multiple=True, help="A browser Origin the websocket accepts, e.g. https://meet.example.com (repeatable; default: any).")
@click.option("--data-max-message-size", envvar="SFUCTL_DATA_MAX_MESSAGE_SIZE", default=65536, show_default=True, type=click.IntRange(1024, 1 << 20), help="Largest data channel message in bytes (a=max-message-size); bigger ones are dropped and counted.")
@click.option("--data-rate-limit", envvar="SFUCTL_DATA_RATE_LIMIT", default=200.0, show_default=True, type=click.FloatRange(0, 1e6), help="Data channel messages per second per peer (one second of burst); more are dropped and counted. 0: no limit.")
@click.option("--transport-cc/--no-transport-cc", envvar="SFUCTL_TRANSPORT_CC", default=True, show_default=True, help="Transport-wide congestion control with publishers that offer it: the server sends them transport feedback every 100 ms (docs/congestion-control.md); off, they rely on its receiver reports.")
@click.option("--max-incoming-bitrate", envvar="SFUCTL_MAX_INCOMING_BITRATE", default=None, type=click.IntRange(10_000, 100_000_000), metavar="BPS", help="Cap what each publisher sends (bit/s, all its tracks), announced to it with REMB every second, e.g. 1500000 [default: no cap].")
@click.option("--whip-token", envvar="SFUCTL_WHIP_TOKEN", default=None, help="A shared secret for WHIP/WHEP only ('Authorization: Bearer TOKEN', any room); the websocket is not covered.")
@click.option("--redis", "redis_url", envvar="SFUCTL_REDIS", default=None, help="Join the cluster on this Redis (redis://HOST:PORT/DB): rooms are placed on the least loaded node and any node relays to the room's node (docs/cluster.md).")
@click.option("--node-id", envvar="SFUCTL_NODE_ID", default=None, help="This node's id in the cluster [default: HOSTNAME-RANDOM].")
@click.option("--node-url", envvar="SFUCTL_NODE_URL", default=None, help="Where other nodes reach this node's signaling, e.g. http://10.0.0.5:8080 [default: http://ANNOUNCED-IP:PORT].")
@click.option("--cluster-secret", envvar="SFUCTL_CLUSTER_SECRET", default=None, help="A secret shared by every node (needed with --redis): it authenticates the connections between nodes.")
@click.option("--pin", "pins", envvar="SFUCTL_PIN", multiple=True, callback=_pins, metavar="ROOM=NODE-ID", help="Place new rooms whose name matches ROOM (shell pattern, e.g. 'webinar-*') on that node while it is live (repeatable, first match wins; give every node the same pins); other rooms go to the least loaded node.")
@click.option("--drain-timeout", envvar="SFUCTL_DRAIN_TIMEOUT", default=30.0, show_default=True, type=Duration(0, 3600), help="A cluster node on SIGTERM drains: it takes no new room, tells its participants to reconnect (they land on other nodes) and exits when none is left or after this long (30s, 2m).")
@click.option("--log-level", envvar="SFUCTL_LOG_LEVEL", default="info", show_default=True, type=click.Choice(["debug", "info", "warning", "error"]), help="Least severe log messages shown.")
@quota_options
def serve(
    host: str,
    port: int,
    announced_ips: tuple[str, ...],
    ice_tcp: bool,
    ice_server_urls: tuple[str, ...],
    ice_username: str | None,
    ice_credential: str | None,
    turn_secret: str | None,
    ice_udp: bool,
    rtc_port_range: tuple[int, int],
    consent_timeout: float,
    workers: int,
    room_spill_consumers: int,
    auth_secret: str | None,
    auth_key_file: str | None,
    metrics_token: str | None,
    allowed_origins: tuple[str, ...],
    data_max_message_size: int,
    data_rate_limit: float,
    transport_cc: bool,
    max_incoming_bitrate: int | None,
    whip_token: str | None,
    redis_url: str | None,
    node_id: str | None,
    node_url: str | None,
    cluster_secret: str | None,
    pins: list[tuple[str, str]],
    drain_timeout: float,
    log_level: str,
    **quotas: float,
) -> None:
    """Run the SFU: websocket signaling, rooms, forwarding, RTCP and stats.

    \b
    Examples:
      sfuctl serve --port 8080 --rtc-port-range 40000-40099 --workers 2
      sfuctl serve --workers 4 --room-spill-consumers 1000   # big rooms span workers past 1000 consumers
      sfuctl serve --max-incoming-bitrate 1500000   # no publisher sends more than 1.5 Mb/s
      SFUCTL_AUTH_SECRET=$(openssl rand -hex 32) sfuctl serve   # access tokens required
      sfuctl serve --redis redis://10.0.0.2:6379/0 --cluster-secret "$S" --announced-ip 10.0.0.5   # a cluster node
      sfuctl serve --no-transport-cc   # transport-cc not answered: peers' estimates follow receiver reports (to compare)
      sfuctl serve --host 0.0.0.0 --announced-ip 203.0.113.5 --ice-tcp   # behind NAT, TCP too: docs/deploy.md
      sfuctl serve --ice-tcp --no-ice-udp --rtc-port-range 443-443 --workers 1   # TCP only, on 443
      sfuctl serve --host :: --announced-ip 203.0.113.5 --announced-ip 2001:db8::5   # IPv4 and IPv6 clients
      sfuctl serve --ice-server turn:turn.example.com:3478 --turn-secret "$COTURN_SECRET"   # clients may relay
    Every option can also be set as SFUCTL_<OPTION>, e.g. SFUCTL_ANNOUNCED_IP=10.0.0.5.
    The --max-* options are quotas (docs/limits.md): a request over one is refused with a structured error.
    Without --auth-secret or --auth-key-file anyone may join any room (fine on loopback, not on a network).
    """
    setup_logging(log_level)
    if not announced_ips and ipaddress.ip_address(host if _is_ip(host) else "127.0.0.1").is_unspecified:
        raise click.BadParameter(f"--host {host} is no address a client can reach: add --announced-ip with the address "
                                 "clients reach this server at", param_hint="--announced-ip")
    if not ice_udp and not ice_tcp:
        raise click.BadParameter("with --no-ice-udp the media port needs --ice-tcp, or no client can connect", param_hint="--no-ice-udp")
    config = ServerConfig(
        host=host,
        port=port,
        announced_ips=announced_ips,
        ice_tcp=ice_tcp,
        ice_udp=ice_udp,
        ice_servers=_ice_servers(ice_server_urls, ice_username, ice_credential, turn_secret),
        turn_secret=turn_secret,
        rtc_ports=rtc_port_range,
        consent_timeout=consent_timeout,
        room_spill_consumers=room_spill_consumers,
        whip_token=whip_token,
        auth_secret=auth_secret,
        auth_public_key=_read_key(auth_key_file),
        metrics_token=metrics_token,
        allowed_origins=allowed_origins,
        data_max_message_size=data_max_message_size,
        data_rate_limit=data_rate_limit,
        transport_cc=transport_cc,
        max_incoming_bitrate=max_incoming_bitrate,
        quotas=Quotas(**quotas),
    )
    try:
        Authenticator(config)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--auth-secret" if "secret" in str(exc) else "--auth-key-file") from None
    try:
        split_port_range(rtc_port_range, workers)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--rtc-port-range") from None
    console = make_console(stderr=True)
    for name, address in click.get_current_context().meta.get("announced_ip_from", []):
        console.print(f"--announced-ip {name} resolved once to {address}", highlight=False)
    cluster = None
    if redis_url is not None:
        if not cluster_secret:
            raise click.BadParameter("a cluster node needs --cluster-secret (the same on every node)", param_hint="--cluster-secret")
        cluster = (redis_url, node_id or f"{socket.gethostname()}-{secrets.token_hex(3)}", node_url, cluster_secret,
                   Pinned(pins) if pins else None)
    run(_serve(config, workers, log_level, console, cluster, drain_timeout))


def media_protocols(config: ServerConfig) -> str:
    """"udp", "tcp" or "udp+tcp": what the media ports take."""
    return "+".join(name for name, on in (("udp", config.ice_udp), ("tcp", config.ice_tcp)) if on)


async def _serve(config: ServerConfig, workers: int, log_level: str, console: Console, cluster: tuple | None, drain_timeout: float) -> None:
    try:
        if cluster is not None:
            try:
                server = await start_node(config, workers, log_level, *cluster)
            except ClusterStartError as exc:
                raise CommandError(str(exc)) from None
            media_ports = server.rtc_ports
        elif workers == 1:
            server = await start_server(config)
            media_ports = [server.worker.rtc_port]
        else:
            server = await start_front(config, workers, log_level)
            media_ports = server.rtc_ports
    except MediaPortsBusy as exc:
        first, last = config.rtc_ports
        split = f", split over {workers} workers" if workers > 1 else ""
        raise CommandError(f"{exc}; another process holds these UDP ports: pick another --rtc-port-range "
                           f"(now {first}-{last}{split})") from None
    except OSError as exc:
        raise CommandError(f"cannot listen on {config.host}:{config.port}: {exc.strerror or exc}; pick another "
                           "--port or --host") from None
    stop = asyncio.Event()
    signals: list[str] = []

    def on_signal(label: str) -> None:
        signals.append(label)
        stop.set()

    on_stop_signals(on_signal)
    console.print(
        f"[bold green]sfuctl serve[/] signaling [cyan]{server.url}[/] · media [cyan]{media_protocols(config)} "
        f"{' '.join(url_host(ip) + ':' + ','.join(map(str, media_ports)) for ip in config.announced_ips or (config.host,))}[/]"
        f" · {workers} worker(s) · Ctrl-C to stop"
    )
    if cluster is not None:
        console.print(f"cluster node [cyan]{server.front.info.id}[/] at {server.front.info.url} on {server.front.registry.safe_url}")
    if not config.auth_enabled:
        console.print("[yellow]open server:[/] anyone who reaches it may join any room (--auth-secret requires access tokens)")
    try:
        await stop.wait()
        if cluster is not None and signals == ["SIGTERM"]:
            stop.clear()
            await _drain(server.front, drain_timeout, console, stop)
    finally:
        console.print("closing transports…")
        await server.close()


async def _drain(node: ClusterNode, timeout: float, console: Console, stop: asyncio.Event) -> None:
    """SIGTERM on a cluster node: drain until empty, `timeout`, or another Ctrl-C/SIGTERM."""
    told = await node.start_drain()
    console.print(f"draining: no new rooms here, {told} participant(s) told to reconnect; exiting when none is left "
                  f"or in {timeout:g} s (Ctrl-C or SIGTERM again: now)")
    waiting = asyncio.ensure_future(node.wait_empty(timeout))
    stopped = asyncio.ensure_future(stop.wait())
    await asyncio.wait([waiting, stopped], return_when=asyncio.FIRST_COMPLETED)
    stopped.cancel()
    if waiting.done():
        left = waiting.result()
        console.print("drained: no participant left" if left == 0 else f"drain timeout: {left} participant(s) still here")
    else:
        waiting.cancel()
        console.print("stopping now")
