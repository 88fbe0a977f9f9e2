"""A client's view of the ICE servers a server hands out (join reply, WHIP/WHEP Link headers), and the TURN server
it relays through when told to (sfuctl bots --relay)."""

from __future__ import annotations

import re
from dataclasses import dataclass

TURN_URL = re.compile(r"turn:(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:?\s\[\]]+))(?::(?P<port>\d+))?(?:\?transport=(?P<transport>udp|tcp))?")
LINK = re.compile(r'<(?P<url>[^>]*)>(?P<params>.*)')
LINK_PARAM = re.compile(r';\s*(?P<name>[\w-]+)="(?P<value>[^"]*)"')
TURN_PORT = 3478  # RFC 8656 section 18: the default for turn: URLs


@dataclass(frozen=True)
class TurnServer:
    """One TURN server (RFC 8656, turn: URLs only: no TLS) with the credentials to allocate on it."""

    host: str
    port: int
    transport: str  # "udp" or "tcp": how the client reaches the TURN server (relayed media is UDP either way)
    username: str
    credential: str

    @classmethod
    def pick(cls, ice_servers: list[dict]) -> TurnServer:
        """The first turn: URL with credentials among RTCIceServer dictionaries; ValueError when there is none."""
        for server in ice_servers:
            urls = server.get("urls", [])
            for url in [urls] if isinstance(urls, str) else urls:
                match = TURN_URL.fullmatch(url)
                if match and server.get("username") and server.get("credential"):
                    return cls(
                        host=match["ipv6"] or match["host"],
                        port=int(match["port"] or TURN_PORT),
                        transport=match["transport"] or "udp",
                        username=server["username"],
                        credential=server["credential"],
                    )
        raise ValueError("the server hands out no TURN server with credentials to relay through (sfuctl serve "
                         "--ice-server turn:HOST:PORT with --ice-username/--ice-credential or --turn-secret)")


def ice_servers_from_links(values: list[str]) -> list[dict]:
    """RTCIceServer dictionaries from `Link: <URL>; rel="ice-server"; username=...; credential=...` header values
    (RFC 9725 section 4.6); other links are skipped."""
    servers = []
    for value in values:
        for link in re.split(r",\s*(?=<)", value):
            match = LINK.fullmatch(link.strip())
            if match is None:
                continue
            params = {m["name"].lower(): m["value"] for m in LINK_PARAM.finditer(match["params"])}
            if params.get("rel") != "ice-server":
                continue
            server: dict = {"urls": [match["url"]]}
            if "username" in params and "credential" in params:
                server["username"], server["credential"] = params["username"], params["credential"]
            servers.append(server)
    return servers
