"""The STUN/TURN servers handed to clients (join reply, WHIP/WHEP Link headers), with TURN credentials minted per
client when the server shares coturn's REST secret (`use-auth-secret` / `static-auth-secret`)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time

from .config import IceServer, ServerConfig

# How long minted TURN credentials stay valid: a call that lasts longer keeps its allocation (TURN checks them on
# allocation and refresh only with a fresh nonce), a leaked one is useless after a day.
TURN_CREDENTIAL_LIFETIME = 24 * 3600


def turn_rest_credentials(secret: str, identity: str, now: float | None = None) -> tuple[str, str]:
    """coturn's time-limited credentials (draft-uberti-behave-turn-rest): username "EXPIRY:IDENTITY", password
    base64(HMAC-SHA1(secret, username))."""
    expiry = int(now if now is not None else time.time()) + TURN_CREDENTIAL_LIFETIME
    username = f"{expiry}:{identity.replace(':', '_')}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def offered_ice_servers(config: ServerConfig, identity: str) -> tuple[IceServer, ...]:
    """The ICE servers for one client: the configured ones, TURN ones with credentials minted for `identity` when
    the server has a TURN secret."""
    if config.turn_secret is None:
        return config.ice_servers
    username, credential = turn_rest_credentials(config.turn_secret, identity)
    return tuple(
        IceServer(server.url, username, credential) if server.url.startswith(("turn:", "turns:")) else server
        for server in config.ice_servers
    )


def endpoint_ice_servers(config: ServerConfig) -> tuple[IceServer, ...]:
    """The ICE servers an unauthenticated OPTIONS request learns: on a server with access tokens, none of the
    TURN ones (their credentials, minted or static, go only to clients that presented a token)."""
    if config.auth_enabled:
        return tuple(s for s in config.ice_servers if not s.url.startswith(("turn:", "turns:")))
    return offered_ice_servers(config, "anonymous")


def ice_servers_json(servers: tuple[IceServer, ...]) -> list[dict]:
    """RTCIceServer dictionaries (W3C webrtc-pc), as the join reply carries them."""
    out = []
    for server in servers:
        entry: dict = {"urls": [server.url]}
        if server.username is not None and server.credential is not None:
            entry["username"] = server.username
            entry["credential"] = server.credential
        out.append(entry)
    return out
