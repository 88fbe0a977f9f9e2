"""WHIP (RFC 9725) and WHEP: one HTTP POST with an SDP offer publishes to, or plays from, a room.

A WHIP or WHEP session is a Peer without a websocket: it joins the room like any other participant, so
websocket peers see its producers, and it leaves when its resource is deleted or its ICE consent expires.
"""

from __future__ import annotations

import secrets

from aiohttp import web

from .errors import SignalingError
from .peer import Peer
from .worker import Worker

SDP_TYPE = "application/sdp"


class HttpSessions:
    """The live WHIP/WHEP resources, by resource id."""

    def __init__(self, worker: Worker, token: str | None = None) -> None:
        self.worker = worker
        self.token = token
        self.peers: dict[str, Peer] = {}

    async def publish(self, request: web.Request) -> web.Response:
        """POST /whip/{room}: the offer's sending m-lines become producers in the room."""
        return await self._create(request, "whip", lambda peer, sdp: peer.publish(sdp))

    async def play(self, request: web.Request) -> web.Response:
        """POST /whep/{room}: each receiving m-line is matched to the room's next producer of its kind."""
        return await self._create(request, "whep", self._subscribe_all)

    async def delete(self, request: web.Request) -> web.Response:
        self._authorize(request)
        peer = self.peers.pop(request.match_info["resource"], None)
        if peer is None:
            raise web.HTTPNotFound(text="no such WHIP/WHEP session (already deleted or expired)\n")
        peer.close("WHIP/WHEP session deleted")
        return web.Response(status=200)

    async def patch(self, request: web.Request) -> web.Response:
        self._authorize(request)
        if request.match_info["resource"] not in self.peers:
            raise web.HTTPNotFound(text="no such WHIP/WHEP session\n")
        raise web.HTTPMethodNotAllowed(
            "PATCH", ["DELETE"], text="trickle ICE and ICE restarts are not supported: the answer has every candidate\n"
        )

    def close(self) -> None:
        for peer in list(self.peers.values()):
            peer.close("server shutting down")
        self.peers.clear()

    async def _create(self, request: web.Request, kind: str, negotiate) -> web.Response:
        self._authorize(request)
        if request.content_type != SDP_TYPE:
            raise web.HTTPUnsupportedMediaType(text=f"send the SDP offer with Content-Type: {SDP_TYPE}\n")
        room = request.match_info["room"]
        if not room or len(room) > 64:
            raise web.HTTPBadRequest(text="room names are 1 to 64 characters\n")
        offer = await request.text()
        resource = secrets.token_hex(8)
        router = self.worker.router(room)
        peer = Peer(
            name=f"{kind}-{resource[:4]}",
            router=router,
            worker=self.worker,
            notify=lambda method, params: None,
            on_closed=lambda: self.peers.pop(resource, None),
        )
        router.add_peer(peer)
        try:
            result = negotiate(peer, offer)
        except SignalingError as exc:
            peer.close("offer refused")
            raise web.HTTPBadRequest(text=f"{exc.message}\n") from None
        self.peers[resource] = peer
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

    def _authorize(self, request: web.Request) -> None:
        if self.token is None:
            return
        if request.headers.get("Authorization", "") != f"Bearer {self.token}":
            raise web.HTTPUnauthorized(text="this server needs 'Authorization: Bearer <token>'\n", headers={"WWW-Authenticate": "Bearer"})


def add_routes(app: web.Application, sessions: HttpSessions) -> None:
    app.router.add_post("/whip/{room}", sessions.publish)
    app.router.add_post("/whep/{room}", sessions.play)
    for kind in ("whip", "whep"):
        app.router.add_delete(f"/{kind}/{{room}}/{{resource}}", sessions.delete)
        app.router.add_patch(f"/{kind}/{{room}}/{{resource}}", sessions.patch)
