"""WHIP (RFC 9725) and WHEP: one HTTP POST with an SDP offer publishes to, or plays from, a room.

A WHIP or WHEP session is a Peer without a websocket: it joins the room like any other participant, so
websocket peers see its producers, and it leaves when its resource is deleted or its ICE consent expires.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass

from aiohttp import web

from ..rtc.sdp import parse_offer
from .auth import OPEN, Authenticator, Grant, bearer_token, http_refusal
from .errors import SignalingError, unauthorized
from .peer import Peer
from .signaling import replace_identity
from .worker import Worker

SDP_TYPE = "application/sdp"


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

    async def publish(self, request: web.Request) -> web.Response:
        """POST /whip/{room}: the offer's sending m-lines become producers in the room."""
        return await self._create(request, "whip", lambda peer, sdp: peer.publish(sdp))

    async def play(self, request: web.Request) -> web.Response:
        """POST /whep/{room}: each receiving m-line is matched to the room's next producer of its kind."""
        return await self._create(request, "whep", self._subscribe_all)

    async def delete(self, request: web.Request) -> web.Response:
        resource = self._resource(request)
        self.resources.pop(request.match_info["resource"], None)
        resource.peer.close("WHIP/WHEP session deleted")
        return web.Response(status=200)

    async def patch(self, request: web.Request) -> web.Response:
        self._resource(request)
        raise web.HTTPMethodNotAllowed(
            "PATCH", ["DELETE"], text="trickle ICE and ICE restarts are not supported: the answer has every candidate\n"
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
        router = self.worker.router(room)
        peer = Peer(
            name=grant.name or grant.identity or f"{kind}-{resource[:4]}",
            router=router,
            worker=self.worker,
            notify=lambda method, params: None,
            on_closed=lambda: self.resources.pop(resource, None),
            grant=grant,
        )
        router.add_peer(peer)
        try:
            result = negotiate(peer, offer)
        except SignalingError as exc:
            peer.close("offer refused")
            raise web.HTTPBadRequest(text=f"{exc.message}\n") from None
        self.resources[resource] = HttpResource(peer, kind, room, grant.identity if grant.verified else None)
        return web.Response(
            status=201,
            text=result["sdp"],
            content_type=SDP_TYPE,
            headers={"Location": f"/{kind}/{room}/{resource}"},
        )

    @staticmethod
    def _subscribe_all(peer: Peer, sdp: str) -> dict:
        offer = peer.parse(sdp)
        available = [p for p in peer.router.producers.values() if p.peer is not peer]
        subscriptions: dict[str, str] = {}
        for m in offer.media:
            if m.direction not in ("recvonly", "sendrecv") or m.rejected:
                continue
            producer = next((p for p in available if p.kind == m.kind), None)
            if producer is not None:
                available.remove(producer)
                subscriptions[m.mid] = producer.id
        return peer.subscribe(sdp, subscriptions)

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


def add_routes(app: web.Application, sessions: HttpSessions) -> None:
    app.router.add_post("/whip/{room}", sessions.publish)
    app.router.add_post("/whep/{room}", sessions.play)
    for kind in ("whip", "whep"):
        app.router.add_delete(f"/{kind}/{{room}}/{{resource}}", sessions.delete)
        app.router.add_patch(f"/{kind}/{{room}}/{{resource}}", sessions.patch)
