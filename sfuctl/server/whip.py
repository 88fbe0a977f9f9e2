"""WHIP (RFC 9725) and WHEP: one HTTP POST with an SDP offer publishes to, or plays from, a room.

A WHIP or WHEP session is a Peer without a websocket: it joins the room like any other participant, so
websocket peers see its producers, and it leaves when its resource is deleted or its ICE consent expires.
Its resource takes PATCH with a trickle-ice-sdpfrag (RFC 8840): trickled candidates (204; an ICE-lite server
learns addresses from connectivity checks, so it needs none) and ICE restarts (200 with the server's new
credentials). The ETag names the current ICE session. Every endpoint answers OPTIONS and CORS preflights.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

from ..rtc.ice import IceParameters
from ..rtc.sdp import Codec, MediaOffer, build_ice_fragment, choose_codec, parse_ice_fragment, parse_offer
from .auth import OPEN, Authenticator, Grant, bearer_token, http_refusal
from .config import IceServer
from .errors import SignalingError, unauthorized
from .ice_servers import endpoint_ice_servers, offered_ice_servers
from .peer import Peer
from .signaling import replace_identity
from .transport import Transport
from .worker import Worker

SDP_TYPE = "application/sdp"
ICE_FRAGMENT_TYPE = "application/trickle-ice-sdpfrag"
# CORS (a page on another origin may publish or play): every WHIP/WHEP response carries these.
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, PATCH, DELETE, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, If-Match",
    "Access-Control-Expose-Headers": "Location, ETag, Link, Accept-Patch, Accept-Post",
    "Access-Control-Max-Age": "86400",
}


@dataclass(frozen=True)
class HttpResource:
    """A WHIP/WHEP session: its peer, and what its URL must name (kind, room) and who may end it (creator:
    the identity of the token that created it; None when created without one)."""

    peer: Peer
    kind: str
    room: str
    creator: str | None


class HttpSessions:
    """The live WHIP/WHEP resources, by resource id.

    Credentials: an access token (when auth is on) or the `--whip-token` shared secret (publish and play in
    any room), as 'Authorization: Bearer ...'. A resource answers only through its own room's URL and only to
    its creator; anything else is 404, as if it did not exist.
    """

    def __init__(self, worker: Worker, auth: Authenticator) -> None:
        self.worker = worker
        self.auth = auth
        self.whip_token = worker.config.whip_token
        self.resources: dict[str, HttpResource] = {}
        self.etags: dict[str, str] = {}  # resource id -> the entity tag of its current ICE session
        self.slots: dict[str, dict[str, tuple[MediaOffer, Codec]]] = {}  # WHEP resource -> its answered m-lines

    async def publish(self, request: web.Request) -> web.Response:
        """POST /whip/{room}: the offer's sending m-lines become producers in the room."""
        return await self._create(request, "whip", lambda resource, peer, sdp: peer.publish(sdp))

    async def play(self, request: web.Request) -> web.Response:
        """POST /whep/{room}: each receiving m-line is matched to the room's next producer of its kind; one
        without a producer waits for the next producer of its kind and codec to arrive."""
        return await self._create(request, "whep", self._play)

    async def delete(self, request: web.Request) -> web.Response:
        resource = self._resource(request)
        self.resources.pop(request.match_info["resource"], None)
        resource.peer.close("WHIP/WHEP session deleted")
        return web.Response(status=200)

    async def patch(self, request: web.Request) -> web.Response:
        """PATCH a resource with a trickle-ice-sdpfrag: trickled candidates (204) or an ICE restart (200)."""
        peer = self._resource(request).peer
        resource = request.match_info["resource"]
        if request.content_type != ICE_FRAGMENT_TYPE:
            raise web.HTTPUnsupportedMediaType(text=f"PATCH takes Content-Type: {ICE_FRAGMENT_TYPE} (RFC 8840)\n")
        try:
            fragment = parse_ice_fragment(await request.text())
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"invalid trickle-ice-sdpfrag: {exc}\n") from None
        transports = peer.transports
        if not transports or any(t.remote_ice is None for t in transports):
            raise web.HTTPConflict(text="the session has no ICE connection any more\n")
        if_match = request.headers.get("If-Match")
        if if_match is None:
            raise web.HTTPPreconditionRequired(text="PATCH needs If-Match: the session's ETag, or * for an ICE restart\n")
        try:
            restarts = ice_restarts(transports, fragment.credentials)
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"{exc}\n") from None
        if if_match not in ("*", self.etags[resource]):
            raise web.HTTPPreconditionFailed(text="If-Match names an earlier ICE session: use the latest ETag\n")
        if not restarts:
            return web.Response(status=204)
        try:
            for transport, ice in restarts:  # all checked before any restarts
                transport.check_ice_restart(ice)
        except SignalingError as exc:
            raise web.HTTPBadRequest(text=f"{exc.message}\n") from None
        for transport, ice in restarts:
            transport.restart_ice(ice)
        etag = self.etags[resource] = new_etag()
        body = build_ice_fragment(
            candidates=self.worker.host_candidates,
            restarted=[(t.connection.local_ice, t.bundle_tag) for t, _ in restarts if t.bundle_tag is not None],
        )
        return web.Response(status=200, text=body, content_type=ICE_FRAGMENT_TYPE, headers={"ETag": etag})

    async def options(self, request: web.Request) -> web.Response:
        """OPTIONS (and CORS preflight) on an endpoint: what it accepts, and the ICE servers to use."""
        return endpoint_options(endpoint_ice_servers(self.worker.config))

    async def resource_options(self, request: web.Request) -> web.Response:
        """OPTIONS (and CORS preflight) on a session's resource."""
        return web.Response(
            status=204, headers={"Allow": "PATCH, DELETE, OPTIONS", "Accept-Patch": ICE_FRAGMENT_TYPE}
        )

    def close(self) -> None:
        for resource in list(self.resources.values()):
            resource.peer.close("server shutting down")
        self.resources.clear()

    async def _create(self, request: web.Request, kind: str, negotiate) -> web.Response:
        grant = self._grant(request)
        if request.content_type != SDP_TYPE:
            raise web.HTTPUnsupportedMediaType(text=f"send the SDP offer with Content-Type: {SDP_TYPE}\n")
        room = request.match_info["room"]
        if not room or len(room) > 64:
            raise web.HTTPBadRequest(text="room names are 1 to 64 characters\n")
        offer = await request.text()
        try:
            grant.require_room(room)
            if kind == "whep":
                grant.require("subscribe")
            else:
                grant.require_publishing(parse_offer(offer))
        except SignalingError as exc:
            raise http_refusal(exc) from None
        except ValueError as exc:
            raise web.HTTPBadRequest(text=f"invalid SDP offer: {exc}\n") from None
        resource = secrets.token_hex(8)
        replace_identity(self.worker, room, grant.identity)
        try:
            router = self.worker.admit(room)
        except SignalingError as exc:
            raise self._refused(exc) from None
        peer = Peer(
            name=grant.name or grant.identity or f"{kind}-{resource[:4]}",
            router=router,
            worker=self.worker,
            notify=lambda method, params: self._on_room_event(resource, method, params),
            on_closed=lambda: self._forget(resource),
            grant=grant,
        )
        router.add_peer(peer)
        try:
            result = negotiate(resource, peer, offer)
        except SignalingError as exc:
            peer.close("offer refused")
            raise self._refused(exc) from None
        self.resources[resource] = HttpResource(peer, kind, room, grant.identity if grant.verified else None)
        etag = self.etags[resource] = new_etag()
        headers = [
            ("Location", f"/{kind}/{room}/{resource}"),
            ("ETag", etag),
            ("Accept-Patch", ICE_FRAGMENT_TYPE),
            *(("Link", link) for link in ice_server_links(offered_ice_servers(self.worker.config, grant.identity or peer.id))),
        ]
        response = web.Response(status=201, text=result["sdp"], content_type=SDP_TYPE)
        for name, value in headers:
            response.headers.add(name, value)
        return response

    def _refused(self, error: SignalingError) -> web.HTTPException:
        """The HTTP error for a refused offer: 429 over a quota, 503 when overloaded, 400 for a bad offer."""
        self.worker.refusals.add(error)
        status = {"quota_exceeded": web.HTTPTooManyRequests, "overloaded": web.HTTPServiceUnavailable}
        return status.get(error.code, web.HTTPBadRequest)(text=f"{error.message}\n")

    def _forget(self, resource: str) -> None:
        self.resources.pop(resource, None)
        self.etags.pop(resource, None)
        self.slots.pop(resource, None)

    def _play(self, resource: str, peer: Peer, sdp: str) -> dict:
        offer = peer.parse(sdp, "consumers_per_peer")
        available = [p for p in peer.router.producers.values() if p.peer is not peer]
        subscriptions: dict[str, str] = {}
        slots: dict[str, tuple[MediaOffer, Codec]] = {}
        for m in offer.media:
            if m.direction not in ("recvonly", "sendrecv") or m.rejected:
                continue
            producer = next((p for p in available if p.kind == m.kind), None)
            codec = choose_codec(m, producer.codec.name if producer else None)
            if producer is not None:
                available.remove(producer)
                subscriptions[m.mid] = producer.id
            if codec is not None:
                slots[m.mid] = (m, codec)
        result = peer.subscribe(sdp, subscriptions, waiting=[mid for mid in slots if mid not in subscriptions])
        self.slots[resource] = slots
        return result

    def _on_room_event(self, resource: str, method: str, params: dict) -> None:
        """A WHEP session's empty m-lines take the room's next producers (its own closed ones included)."""
        if method in ("producerAdded", "consumerClosed") and resource in self.slots:
            self._fill_slots(resource)

    def _fill_slots(self, resource: str) -> None:
        entry = self.resources.get(resource)
        peer = entry.peer if entry is not None else None
        if peer is None or peer.closed:
            return
        taken = {c.producer.id for c in peer.consumers.values()}
        for mid, (m, codec) in self.slots[resource].items():
            transport = peer.receive_transport_for(mid)
            if transport is None or mid in transport.consumers_by_mid:
                continue
            producer = next(
                (p for p in peer.router.producers.values()
                 if p.peer is not peer and p.id not in taken and p.kind == m.kind and p.codec.name == codec.name),
                None,
            )
            if producer is not None:
                peer.consume(m, producer, codec)
                taken.add(producer.id)

    def _grant(self, request: web.Request) -> Grant:
        """The request's credential: the --whip-token secret (OPEN), else an access token when auth is on."""
        token = bearer_token(request.headers.get("Authorization"))
        if self.whip_token is not None and token is not None and hmac.compare_digest(token.encode(), self.whip_token.encode()):
            return OPEN
        try:
            if self.auth.enabled:
                return self.auth.verify(token)
            if self.whip_token is not None:
                raise unauthorized("this server needs 'Authorization: Bearer <token>' (its --whip-token)")
        except SignalingError as exc:
            raise http_refusal(exc) from None
        return OPEN

    def _resource(self, request: web.Request) -> HttpResource:
        """The resource the URL names, if the URL's kind and room are its own and the caller created it."""
        grant = self._grant(request)
        resource = self.resources.get(request.match_info["resource"])
        kind = request.path.split("/")[1]
        if (
            resource is None
            or resource.kind != kind
            or resource.room != request.match_info["room"]
            or (resource.creator is not None and resource.creator != grant.identity)
        ):
            raise web.HTTPNotFound(text="no such WHIP/WHEP session (deleted, expired, or not yours)\n")
        return resource


def ice_restarts(transports: list[Transport], credentials: dict[str | None, IceParameters]) -> list[tuple[Transport, IceParameters]]:
    """The transports a fragment's credentials restart, each with its new remote credentials: those under one of
    its m-lines' mid, else those at session level. ValueError when the fragment names an m-line no transport
    carries, or changes a password without the ufrag."""
    for mid in credentials:
        if mid is not None and not any(mid in t.mids for t in transports):
            carried = ", ".join(mid for t in transports for mid in t.mids)
            raise ValueError(f"the fragment's m-line {mid!r} is on no transport of this session (its m-lines: {carried})")
    restarts = []
    for transport in transports:
        ice = next((credentials[mid] for mid in transport.mids if mid in credentials), credentials.get(None))
        current = transport.remote_ice
        if ice is None or current is None or ice == current:
            continue
        if ice.ufrag == current.ufrag:
            raise ValueError("a=ice-pwd changed but a=ice-ufrag did not: a restart changes both")
        restarts.append((transport, ice))
    return restarts


def new_etag() -> str:
    """A fresh entity tag (quoted, RFC 9110) for a new ICE session."""
    return f'"{secrets.token_hex(8)}"'


def ice_server_links(servers: tuple[IceServer, ...]) -> list[str]:
    """Link header values announcing ICE servers (RFC 9725 section 4.6)."""
    links = []
    for server in servers:
        link = f'<{server.url}>; rel="ice-server"'
        if server.username is not None and server.credential is not None:
            link += f'; username="{server.username}"; credential="{server.credential}"; credential-type="password"'
        links.append(link)
    return links


def endpoint_options(ice_servers: tuple[IceServer, ...]) -> web.Response:
    """The answer to OPTIONS on a WHIP or WHEP endpoint."""
    response = web.Response(status=204, headers={"Allow": "POST, OPTIONS", "Accept-Post": SDP_TYPE})
    for link in ice_server_links(ice_servers):
        response.headers.add("Link", link)
    return response


async def _add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    if request.path.startswith(("/whip/", "/whep/")):
        response.headers.update(CORS_HEADERS)


def add_cors(app: web.Application) -> None:
    """Every WHIP/WHEP response of `app`, errors included, carries the CORS headers."""
    app.on_response_prepare.append(_add_cors_headers)


def add_routes(app: web.Application, sessions: HttpSessions) -> None:
    add_cors(app)
    app.router.add_post("/whip/{room}", sessions.publish)
    app.router.add_post("/whep/{room}", sessions.play)
    for kind in ("whip", "whep"):
        app.router.add_route("OPTIONS", f"/{kind}/{{room}}", sessions.options)
        app.router.add_delete(f"/{kind}/{{room}}/{{resource}}", sessions.delete)
        app.router.add_patch(f"/{kind}/{{room}}/{{resource}}", sessions.patch)
        app.router.add_route("OPTIONS", f"/{kind}/{{room}}/{{resource}}", sessions.resource_options)
