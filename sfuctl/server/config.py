"""Settings of one `sfuctl serve` process."""

from __future__ import annotations

from dataclasses import dataclass

from ..rtc.sdp import HostCandidates
from .quotas import Quotas


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server offered to clients (WHIP/WHEP Link headers, RFC 9725 section 4.6)."""

    url: str  # stun:HOST[:PORT] or turn(s):HOST[:PORT][?transport=udp|tcp]
    username: str | None = None
    credential: str | None = None


@dataclass(frozen=True)
class ServerConfig:
    """Where the server listens and what it announces; every default stays on loopback."""

    host: str = "127.0.0.1"
    port: int = 8080
    announced_ips: tuple[str, ...] = ()  # the addresses put in ICE candidates (e.g. one IPv4, one IPv6); empty: host
    rtc_ports: tuple[int, int] = (40000, 40099)
    consent_timeout: float = 30.0
    ice_udp: bool = True  # the media port takes UDP
    ice_tcp: bool = False  # the media port also takes ICE-TCP (RFC 6544 passive candidates, RFC 4571 framing)
    max_message_bytes: int = 256 * 1024
    whip_token: str | None = None
    auth_secret: str | None = None  # HS256 secret: access tokens required (docs/security.md)
    auth_public_key: str | None = None  # PEM public key (RS256/EdDSA/ES256): access tokens required
    metrics_token: str | None = None  # a bearer secret that may read /metrics (a Prometheus scraper)
    allowed_origins: tuple[str, ...] = ()  # browser Origins the websocket accepts (empty: any)
    internal_token: str | None = None  # the front's credential towards its workers (random per start)
    # Data channels: the a=max-message-size the server announces and enforces, and each peer's message rate
    # (messages per second over all its data channels, with one second's worth of burst; 0 = no limit).
    data_max_message_size: int = 65536
    data_rate_limit: float = 200.0
    # A room whose consumers on its home worker reach this many takes its new participants on the least loaded
    # other worker, piped (docs/architecture.md, "Rooms across workers"); 0: rooms never span workers. 3/4 of
    # the 2000 consumers one worker forwarded under 1% loss (docs/performance.md): the home keeps headroom for
    # the pipes and its other rooms.
    room_spill_consumers: int = 1500
    # Transport-wide congestion control with publishers that offer it (docs/congestion-control.md); off, they
    # fall back on the server's receiver reports.
    transport_cc: bool = True
    # A cap on what each publisher's send transport may send (bit/s), announced to it with REMB once per report
    # interval (mediasoup's maxIncomingBitrate); None: no cap.
    max_incoming_bitrate: int | None = None
    ice_servers: tuple[IceServer, ...] = ()  # offered to clients; the server itself never contacts them
    turn_secret: str | None = None  # coturn's static-auth-secret: TURN credentials minted per client (ice_servers.py)
    quotas: Quotas = Quotas()

    @property
    def auth_enabled(self) -> bool:
        return self.auth_secret is not None or self.auth_public_key is not None

    @property
    def candidate_ip(self) -> str:
        """The first address put in ICE candidates."""
        return self.announced_ips[0] if self.announced_ips else self.host

    def host_candidates(self, port: int) -> HostCandidates:
        """The ICE candidates of a worker whose media port is `port`."""
        return HostCandidates(self.announced_ips or (self.host,), port, udp=self.ice_udp, tcp=self.ice_tcp)


def url_host(host: str) -> str:
    """`host` as the host part of a URL: an IPv6 address in brackets (RFC 3986)."""
    return f"[{host}]" if ":" in host else host


class MediaPortsBusy(OSError):
    """No UDP (or TCP) port of a worker's slice of --rtc-port-range could be bound (another process holds them)."""


def parse_port_range(text: str) -> tuple[int, int]:
    """'40000-40099' or '40000' -> (first, last); ValueError names the problem."""
    parts = text.split("-")
    try:
        first, last = (int(parts[0]), int(parts[-1])) if len(parts) <= 2 else (None, None)
    except ValueError:
        first = last = None
    if first is None or last is None or not 0 <= first <= last <= 65535:
        raise ValueError(f"bad port range {text!r}: expected FIRST-LAST, e.g. 40000-40099")
    return first, last
