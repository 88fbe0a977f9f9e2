"""Access tokens (docs/security.md): the claims a server checks, and minting them from a shared secret.

The server verifies (sfuctl/server/auth.py); `sfuctl token create`, the bots and the scenario runner mint.
A token is a JWT signed with HS256 (a shared secret) or, verified against a public key, RS256 or EdDSA:

    {"sub": "alice", "name": "Alice", "room": "demo", "iat": ..., "exp": ...,
     "grants": {"publish": ["audio", "video"], "subscribe": true, "data": true, "admin": false}}

A grant that is absent is not given.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import jwt

KINDS = ("audio", "video")
GRANTS = ("publish", "subscribe", "data", "admin")
HMAC_ALGORITHM = "HS256"
# RFC 7518 3.2: an HS256 key shorter than the hash output (32 bytes) weakens the signature.
MIN_SECRET_BYTES = 32
# An identity is the peer's id: it appears in SDP (msid, RFC 8830), so it is 1-64 SDP token characters.
IDENTITY_PATTERN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]{1,64}")
MAX_ROOM_LENGTH = 64
MAX_TTL = 366 * 86_400.0
# Where credentials show up in text: a token query parameter, a bearer header, a bare JWT.
_CREDENTIAL = re.compile(r"([?&]token=|\bBearer\s+)[^\s&\"']+|\beyJ[\w-]*\.[\w-]+\.[\w-]*", re.IGNORECASE)


class TokenError(ValueError):
    """A token cannot be minted as asked; the message says what to change."""


def check_secret(secret: str) -> None:
    """TokenError unless `secret` is long enough for HS256."""
    size = len(secret.encode())
    if size < MIN_SECRET_BYTES:
        raise TokenError(
            f"the auth secret is {size} bytes; use at least {MIN_SECRET_BYTES} (e.g. the output of `openssl rand -hex 32`)"
        )


def parse_kinds(text: str) -> tuple[str, ...]:
    """'audio,video' -> ('audio', 'video'); '' or 'none' -> (); TokenError names an unknown kind."""
    if text.strip().lower() in ("", "none"):
        return ()
    kinds = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",")))
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise TokenError(f"unknown media kind {unknown[0]!r}: publish takes {', '.join(KINDS)} (comma-separated) or none")
    return kinds


def claims(
    *,
    room: str | None,
    identity: str | None,
    ttl: float,
    publish: Iterable[str] = KINDS,
    subscribe: bool = True,
    data: bool = True,
    admin: bool = False,
    name: str | None = None,
    now: float | None = None,
) -> dict:
    """The claims of a token; TokenError when they would not let anyone do anything valid."""
    if room is not None and not 1 <= len(room) <= MAX_ROOM_LENGTH:
        raise TokenError(f"room names are 1 to {MAX_ROOM_LENGTH} characters, not {len(room)}")
    if identity is not None and not IDENTITY_PATTERN.fullmatch(identity):
        raise TokenError(
            f"identity {identity!r} is not 1-64 letters, digits or !#$%&'*+.^_`{{|}}~- (it becomes the peer's id in SDP)"
        )
    if room is not None and identity is None:
        raise TokenError("a token for a room needs an identity (--identity), the peer's id in the room")
    if room is None and not admin:
        raise TokenError("a token without a room can only be an admin token (--admin): give --room")
    if not 0 < ttl <= MAX_TTL:
        raise TokenError(f"the lifetime must be more than 0 and at most {MAX_TTL / 86_400:g} days")
    publish = tuple(publish)
    for kind in publish:
        if kind not in KINDS:
            raise TokenError(f"unknown media kind {kind!r}: publish takes {', '.join(KINDS)}")
    issued = int(time.time() if now is None else now)
    body: dict = {"iat": issued, "exp": issued + max(1, round(ttl))}
    if identity is not None:
        body["sub"] = identity
    if name is not None:
        body["name"] = name
    if room is not None:
        body["room"] = room
    body["grants"] = {"publish": list(publish), "subscribe": subscribe, "data": data, "admin": admin}
    return body


def mint(secret: str, body: dict) -> str:
    """`body` (from claims()) signed with `secret` (HS256); TokenError when the secret is too short."""
    check_secret(secret)
    return jwt.encode(body, secret, algorithm=HMAC_ALGORITHM)


def scrub(text: str) -> str:
    """`text` with credentials (?token=..., Bearer ..., JWTs) replaced by '***', for logs and reports."""
    return _CREDENTIAL.sub(lambda m: (m.group(1) or "") + "***", text)


def url_with_token(url: str, token: str | None) -> str:
    """`url` with `?token=` set (replacing any), or unchanged when `token` is None."""
    if token is None:
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query) if k != "token"] + [("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))
