"""Access control: verifying access tokens into Grants, and who may read stats and metrics (docs/security.md).

Without an auth secret or key the server is open: everyone gets OPEN, which may join any room and do
anything there, and stats never show addresses. With one, every join, publish, subscribe, stats request and
WHIP/WHEP request needs a token whose grants allow it; refusals are `unauthorized` (no valid token) or
`forbidden` (a valid token without the grant).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import jwt
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from ..rtc.sdp import Offer
from ..tokens import GRANTS, HMAC_ALGORITHM, IDENTITY_PATTERN, KINDS, check_secret
from .config import ServerConfig
from .errors import SignalingError, forbidden, unauthorized

# Clock difference tolerated between the minting host and this one when checking exp/nbf/iat.
LEEWAY_SECONDS = 10.0


@dataclass(frozen=True)
class Grant:
    """What one credential allows. `identity` is the peer's id (None on an open server), `room` the only
    room it may act in (None: any room when open, none when it is an admin-only token)."""

    identity: str | None
    name: str | None
    room: str | None
    publish: frozenset[str]
    subscribe: bool
    data: bool
    admin: bool
    verified: bool  # from a token (or the internal credential), not the open server's default

    def require(self, grant: str) -> None:
        """forbidden unless `grant` ('subscribe', 'data' or 'admin') is given; a no-op on an open server."""
        if self.verified and not getattr(self, grant):
            raise forbidden(f"this token does not grant '{grant}'; mint one with it (docs/security.md)")

    def require_publish(self, kind: str) -> None:
        if self.verified and kind not in self.publish:
            allowed = ", ".join(sorted(self.publish)) or "nothing"
            raise forbidden(f"this token does not grant 'publish' of {kind} (it allows {allowed})")

    def require_publishing(self, offer: Offer) -> None:
        """forbidden unless every kind the offer sends (audio/video m-lines) may be published."""
        for m in offer.media:
            if m.kind in KINDS and not m.rejected and m.direction in ("sendonly", "sendrecv"):
                self.require_publish(m.kind)

    def require_room(self, room: str) -> None:
        if not self.verified:
            return
        if self.room is None:
            raise forbidden("this token names no room (an admin token reads stats only); mint one with a room")
        if room != self.room:
            raise forbidden(f"this token is for room {self.room!r}, not {room!r}")

    @property
    def sees_addresses(self) -> bool:
        """Only an authenticated admin sees participants' addresses in stats."""
        return self.verified and self.admin


OPEN = Grant(identity=None, name=None, room=None, publish=frozenset(KINDS), subscribe=True, data=True, admin=False, verified=False)
INTERNAL = Grant(identity=None, name=None, room=None, publish=frozenset(), subscribe=False, data=False, admin=True, verified=True)


class Authenticator:
    """Verifies tokens against the configured HS256 secret and/or public key."""

    def __init__(self, config: ServerConfig) -> None:
        self._keys: dict[str, object] = {}
        if config.auth_secret is not None:
            check_secret(config.auth_secret)
            self._keys[HMAC_ALGORITHM] = config.auth_secret
        if config.auth_public_key is not None:
            algorithm, key = load_public_key(config.auth_public_key)
            self._keys[algorithm] = key
        self._internal = config.internal_token
        self._metrics_token = config.metrics_token

    @property
    def enabled(self) -> bool:
        return bool(self._keys)

    def verify(self, token: object) -> Grant:
        """The grant of `token`; OPEN when auth is off; `unauthorized` when the token is missing or bad."""
        if not self.enabled:
            return OPEN
        if not isinstance(token, str) or not token:
            raise unauthorized("this server needs an access token: add ?token=... to the URL or 'token' to 'join'")
        if self._internal is not None and hmac.compare_digest(token.encode(), self._internal.encode()):
            return INTERNAL
        try:
            algorithm = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise unauthorized("the token is not a JWT (three base64url parts separated by dots)") from None
        key = self._keys.get(algorithm) if isinstance(algorithm, str) else None
        if key is None:
            accepted = ", ".join(sorted(self._keys))
            raise unauthorized(f"the token is signed with {algorithm!r}; this server accepts {accepted}")
        try:
            body = jwt.decode(token, key, algorithms=[algorithm], options={"require": ["exp"]}, leeway=LEEWAY_SECONDS)
        except jwt.ExpiredSignatureError:
            raise unauthorized("the token has expired; mint a new one") from None
        except jwt.InvalidSignatureError:
            raise unauthorized("the token's signature does not verify (wrong secret or key, or a forged token)") from None
        except jwt.InvalidTokenError as exc:
            raise unauthorized(f"invalid token: {exc}") from None
        return grant_from_claims(body)

    def verify_metrics(self, authorization: str | None) -> None:
        """/metrics: open unless auth or a metrics token is set; then the metrics token or an admin token."""
        if not self.enabled and self._metrics_token is None:
            return
        token = bearer_token(authorization)
        if token is None:
            raise unauthorized("/metrics needs 'Authorization: Bearer <metrics token or admin token>'")
        if any(secret is not None and hmac.compare_digest(token.encode(), secret.encode()) for secret in (self._metrics_token, self._internal)):
            return
        if not self.enabled:
            raise unauthorized("wrong metrics token")
        self.verify(token).require("admin")


def grant_from_claims(body: dict) -> Grant:
    """A Grant from verified claims; `unauthorized` names the first malformed claim."""
    identity, name, room = body.get("sub"), body.get("name"), body.get("room")
    if identity is not None and (not isinstance(identity, str) or not IDENTITY_PATTERN.fullmatch(identity)):
        raise unauthorized("claim 'sub' (the identity) must be 1-64 letters, digits or !#$%&'*+.^_`{|}~-")
    if name is not None and (not isinstance(name, str) or len(name) > 64):
        raise unauthorized("claim 'name' must be a string of at most 64 characters")
    if room is not None and (not isinstance(room, str) or not 1 <= len(room) <= 64):
        raise unauthorized("claim 'room' must be a string of 1 to 64 characters")
    if room is not None and identity is None:
        raise unauthorized("a token for a room needs the claim 'sub' (the identity)")
    grants = body.get("grants", {})
    if not isinstance(grants, dict):
        raise unauthorized("claim 'grants' must be an object")
    unknown = [g for g in grants if g not in GRANTS]
    if unknown:
        raise unauthorized(f"unknown grant {unknown[0]!r}; grants are {', '.join(GRANTS)}")
    publish = grants.get("publish", [])
    if not isinstance(publish, list) or any(kind not in KINDS for kind in publish):
        raise unauthorized(f"grant 'publish' must be a list of media kinds ({', '.join(KINDS)})")
    flags = {}
    for flag in ("subscribe", "data", "admin"):
        value = grants.get(flag, False)
        if not isinstance(value, bool):
            raise unauthorized(f"grant {flag!r} must be true or false")
        flags[flag] = value
    return Grant(identity=identity, name=name, room=room, publish=frozenset(publish), verified=True, **flags)


def load_public_key(pem: str) -> tuple[str, object]:
    """(JWT algorithm, key) for a PEM public key: RSA -> RS256, Ed25519 -> EdDSA, EC P-256 -> ES256."""
    try:
        key = serialization.load_pem_public_key(pem.encode())
    except ValueError as exc:
        raise ValueError(f"not a PEM public key ({exc})") from None
    if isinstance(key, rsa.RSAPublicKey):
        return "RS256", key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return "EdDSA", key
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return "ES256", key
    raise ValueError(f"unsupported public key type {type(key).__name__}: use RSA, Ed25519 or EC P-256")


def bearer_token(authorization: str | None) -> str | None:
    """The token of an 'Authorization: Bearer TOKEN' header (the scheme is case-insensitive, RFC 9110 11.1)."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def origin_allowed(origin: str | None, allowed: tuple[str, ...]) -> bool:
    """A websocket's Origin passes when no origins are configured, when it sends none (not a browser), or
    when it is one of them."""
    return not allowed or origin is None or origin in allowed


def hide_addresses(snapshot: dict) -> dict:
    """The snapshot with every transport's remote_address nulled (in place), for readers who are not admins."""
    for room in snapshot.get("rooms", ()):
        for peer in room.get("peers", ()):
            for transport in peer.get("transports", ()):
                transport["remote_address"] = None
    return snapshot


def http_refusal(error: SignalingError) -> web.HTTPException:
    """An HTTP 401 (unauthorized) or 403 (forbidden) with the error's code in its challenge (RFC 6750 3.1) and
    'code: message' as its one-line text body."""
    body = f"{error.code}: {error.message}\n"
    if error.code == "unauthorized":
        return web.HTTPUnauthorized(text=body, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})
    return web.HTTPForbidden(text=body, headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'})


def check_metrics_access(auth: Authenticator, request: web.Request) -> None:
    """Raise the HTTP refusal when this request may not read /metrics."""
    try:
        auth.verify_metrics(request.headers.get("Authorization"))
    except SignalingError as exc:
        raise http_refusal(exc) from None
