"""Rooms across workers: a link per worker pair (a control websocket and a PipeTransport), a RoomPipe per room.

A room lives on its home worker. When the front places a new participant of a big room on another worker, that
worker attaches to the room over its link to the home worker: it gets the room's peers and a piped copy of each
producer (mediasoup's pipeToRouter), and its own peers' joins, leaves and producers go the other way. The home
worker passes what one worker tells it on to the room's other workers, so every worker the room spans has every
producer. Media crosses the link's PipeTransport once per worker, whatever the number of consumers there.

Link messages are JSON objects with a type `t`: hello, attach, attached, detach, peer, peerLeft, producer,
producerClosed, producerPaused, dataProducer, dataProducerClosed (docs/architecture.md, "Rooms across
workers"); data channel messages travel on the link itself, as binary frames (DATA_HEADER, the data producer's
id, the payload), ordered and reliable whatever the channel's own settings.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import WSMsgType, web

from ..rtc.dcep import ChannelParameters
from ..rtc.sdp import AUDIO_LEVEL_URI, Codec
from .consumer import Consumer
from .data_producer import DataProducer
from .peer import new_id
from .pipe_transport import PipeTransport
from .producer import PRODUCER_CLOSED, Producer
from .rate_limit import TokenBucket
from .simulcast_consumer import SimulcastConsumer
from .simulcast_producer import SimulcastProducer

if TYPE_CHECKING:
    from .peer import Peer
    from .router import Router
    from .worker import Worker

log = logging.getLogger(__name__)

LINK_PATH = "/internal/pipe"  # the websocket one worker opens to another
ATTACH_PATH = "/internal/attach/{room}"  # the front asks a worker to attach to a room (POST ?home=INDEX)
ROOM_PATH = "/internal/room/{room}"  # the front asks a room's home worker for its size (GET)
LOAD_PATH = "/internal/load"  # the front's poll of a worker: its peers and room names (GET)
HELLO_TIMEOUT = 5.0  # seconds a new link waits for the other worker's hello
ATTACH_TIMEOUT = 5.0  # seconds an attach waits for the home worker's answer
# A room attached for a participant who then never joined (the join was refused, or the client went away) is
# closed after this many seconds without peers.
UNUSED_ROOM_TIMEOUT = 10.0
# The header-extension id of the audio level (RFC 6464) on a pipe: fixed, both ends are this server.
PIPE_AUDIO_LEVEL_ID = 1
PIPE_CLOSED = "pipe closed"  # why a pipe consumer closed when its room's pipe did
DATA_HEADER = struct.Struct("!BI")  # a data message on a link: the length of the data producer's id, the PPID


@dataclass
class RemotePeer:
    """A peer of the room on another worker: what its router and its piped producers need of it."""

    id: str
    name: str
    worker: int

    @property
    def cname(self) -> str:
        return self.id  # a Peer's CNAME is its id (peer.py)

    def info(self) -> dict:
        return {"id": self.id, "name": self.name}

    def notify(self, method: str, params: dict) -> None:
        """A pipe consumer's notifications (its simulcast layer) concern no client: nothing to send."""

    def forget_data_producer(self, data_producer: DataProducer) -> None:
        """Its data producers are its own worker's to forget (a router closing a piped copy calls this)."""


class PipeDataConsumer:
    """A data producer's messages to the other side of a room's pipe (the DataConsumer of a link)."""

    def __init__(self, pipe: RoomPipe, data_producer: DataProducer) -> None:
        self.pipe = pipe
        self.data_producer = data_producer
        self.messages_out = 0

    def send(self, ppid: int, payload: bytes) -> None:
        self.messages_out += 1
        self.pipe.link.send_data(self.data_producer.id, ppid, payload)

    def close(self) -> None:
        self.data_producer.remove_consumer(self)  # type: ignore[arg-type]


def codec_from_json(data: dict) -> Codec:
    """A Codec as `dataclasses.asdict` wrote it (tuples come back as lists)."""
    return Codec(
        name=data["name"],
        clock_rate=data["clock_rate"],
        payload_type=data["payload_type"],
        channels=data["channels"],
        parameters=tuple(tuple(p) for p in data["parameters"]),
        feedback=tuple(tuple(f) for f in data["feedback"]),
    )


class RoomPipe:
    """One room across one link: the producers piped out (as pipe consumers) and in (as piped producers), and
    the peers of the other side. `home`: the other side is the room's home worker."""

    def __init__(self, link: PipeLink, router: Router, home: bool) -> None:
        self.link = link
        self.router = router
        self.home = home
        self.closed = False
        self.outgoing: dict[str, Consumer] = {}  # producer id -> its pipe consumer
        self.incoming: dict[str, Producer] = {}  # producer id -> the piped producer here
        self.peers: set[str] = set()  # ids of the remote peers this pipe added to the router
        self.outgoing_data: dict[str, PipeDataConsumer] = {}  # data producer id -> its pipe data consumer
        self.incoming_data: dict[str, DataProducer] = {}  # data producer id -> the piped data producer here
        self._far = RemotePeer(f"worker-{link.index}", f"worker {link.index}", link.index)
        router.add_pipe(self, home)

    @property
    def name(self) -> str:
        return self.router.name

    def send(self, message: dict) -> None:
        self.link.send({**message, "room": self.name})

    # -- this side's changes, told to the other side (the router calls these) --------------------------
    def _worker_of(self, peer: Peer | RemotePeer) -> int:
        return peer.worker if isinstance(peer, RemotePeer) else self.link.pipes.index

    def _owner(self, peer: Peer | RemotePeer) -> dict:
        """Who a piped producer belongs to, for the other side's RemotePeer."""
        return {"id": peer.id, "name": peer.name, "worker": self._worker_of(peer)}

    def peer_joined(self, peer: Peer | RemotePeer) -> None:
        self.send({"t": "peer", "peer": {**peer.info(), "worker": self._worker_of(peer)}})

    def peer_left(self, peer_id: str) -> None:
        self.send({"t": "peerLeft", "id": peer_id})

    def producer_added(self, producer: Producer) -> None:
        """Pipe `producer` to the other side (unless it came from there)."""
        message = self._pipe_out(producer)
        if message is not None:
            self.send(message)

    def _pipe_out(self, producer: Producer | SimulcastProducer) -> dict | None:
        """A pipe consumer of `producer` under a new SSRC; the `producer` message that tells the other side.

        A simulcast producer is piped as one stream, the highest encoding its publisher sends (PipeTransport.report
        moves the pipe consumer's target there): the other worker's subscribers all get that encoding.
        """
        if self.closed or producer.id in self.incoming or producer.id in self.outgoing or producer.closed:
            return None
        transport = self.link.transport
        level = producer.audio_level_id is not None
        kind = SimulcastConsumer if isinstance(producer, SimulcastProducer) else Consumer
        consumer = kind(
            id=new_id("pc"),
            peer=self._far,  # type: ignore[arg-type]
            producer=producer,
            transport=transport,  # type: ignore[arg-type]
            codec=producer.codec,
            mid=producer.mid,
            extensions={AUDIO_LEVEL_URI: PIPE_AUDIO_LEVEL_ID} if level else {},
            ssrc=transport.new_ssrc(),
        )
        self.outgoing[producer.id] = consumer
        consumer.on_close.add(self._on_outgoing_closed)
        producer.add_consumer(consumer)
        transport.add_consumer(consumer)  # type: ignore[arg-type]
        return {
            "t": "producer",
            "id": producer.id,
            "peer": self._owner(producer.peer),
            "kind": producer.kind,
            "codec": dataclasses.asdict(producer.codec),
            "mid": producer.mid,
            "ssrc": consumer.ssrc,
            "paused": producer.paused,
            "level": level,
        }

    def producer_paused(self, producer: Producer) -> None:
        if producer.id in self.outgoing:
            self.send({"t": "producerPaused", "id": producer.id, "paused": producer.paused})

    def data_producer_added(self, data_producer: DataProducer) -> None:
        message = self._pipe_data_out(data_producer)
        if message is not None:
            self.send(message)

    def _pipe_data_out(self, data_producer: DataProducer) -> dict | None:
        """A pipe data consumer of `data_producer`; the `dataProducer` message that tells the other side."""
        dp = data_producer
        if self.closed or dp.closed or dp.id in self.incoming_data or dp.id in self.outgoing_data:
            return None
        consumer = self.outgoing_data[dp.id] = PipeDataConsumer(self, dp)
        dp.add_consumer(consumer)  # type: ignore[arg-type]
        return {
            "t": "dataProducer",
            "id": dp.id,
            "peer": self._owner(dp.peer),
            "stream_id": dp.stream_id,
            "parameters": dataclasses.asdict(dp.parameters),
        }

    def data_producer_closed(self, data_producer: DataProducer) -> None:
        consumer = self.outgoing_data.pop(data_producer.id, None)
        if consumer is not None:
            consumer.close()
            self.send({"t": "dataProducerClosed", "id": data_producer.id})

    def _add_incoming_data(self, message: dict) -> None:
        info = message["peer"]
        data_producer = DataProducer(
            id=message["id"],
            peer=RemotePeer(info["id"], info["name"], int(info["worker"])),  # type: ignore[arg-type]
            transport=None,  # type: ignore[arg-type]
            stream_id=int(message["stream_id"]),
            parameters=ChannelParameters(**message["parameters"]),
            # The size and rate limits were applied on the publisher's worker.
            max_message_size=1 << 62,
            rate=TokenBucket(0, 1, time.monotonic()),
        )
        self.incoming_data[data_producer.id] = data_producer
        self.link.route_data(data_producer)
        self.router.add_data_producer(data_producer)

    def _close_incoming_data(self, data_producer_id: str) -> None:
        data_producer = self.incoming_data.pop(data_producer_id, None)
        if data_producer is not None:
            self.link.unroute_data(data_producer)
            self.router.close_data_producer(data_producer)

    def _on_outgoing_closed(self, consumer: Consumer) -> None:
        if self.outgoing.get(consumer.producer.id) is consumer:
            del self.outgoing[consumer.producer.id]
            if consumer.close_reason == PRODUCER_CLOSED and not self.closed:
                self.send({"t": "producerClosed", "id": consumer.producer.id})

    # -- the other side's changes, applied here --------------------------------------------------------
    def on_message(self, message: dict) -> None:
        kind = message["t"]
        if kind == "peer":
            info = message["peer"]
            peer = RemotePeer(info["id"], info["name"], int(info["worker"]))
            self.peers.add(peer.id)
            self.router.add_remote_peer(peer, self)
        elif kind == "peerLeft":
            self.peers.discard(message["id"])
            self.router.remove_remote_peer(message["id"], self)
        elif kind == "producer":
            self._add_incoming(message)
        elif kind == "producerClosed":
            producer = self.incoming.get(message["id"])
            if producer is not None:
                producer.close()
        elif kind == "producerPaused":
            producer = self.incoming.get(message["id"])
            if producer is not None:
                self.router.set_producer_paused(producer, bool(message["paused"]))
        elif kind == "dataProducer":
            self._add_incoming_data(message)
        elif kind == "dataProducerClosed":
            self._close_incoming_data(message["id"])

    def _add_incoming(self, message: dict) -> None:
        info = message["peer"]
        producer = Producer(
            id=message["id"],
            peer=RemotePeer(info["id"], info["name"], int(info["worker"])),  # type: ignore[arg-type]
            transport=self.link.transport,  # type: ignore[arg-type]
            kind=message["kind"],
            codec=codec_from_json(message["codec"]),
            ssrc=int(message["ssrc"]),
            mid=message["mid"],
            audio_level_id=PIPE_AUDIO_LEVEL_ID if message["level"] else None,
        )
        producer.paused = bool(message["paused"])
        self.incoming[producer.id] = producer
        producer.on_close.add(self._on_incoming_closed)
        self.link.transport.add_producer(producer)
        self.router.add_producer(producer)

    def _on_incoming_closed(self, producer: Producer) -> None:
        if self.incoming.get(producer.id) is producer:
            del self.incoming[producer.id]

    def state(self) -> dict:
        """What an attaching worker first learns: the room's peers and its producers, piped from now on."""
        router = self.router
        peers = [{**p.info(), "worker": self._worker_of(p)} for p in (*router.peers.values(), *router.remote_peers.values())]
        piped = (self._pipe_out(producer) for producer in list(router.producers.values()))
        data = (self._pipe_data_out(dp) for dp in list(router.data_producers.values()))
        return {
            "peers": peers,
            "producers": [message for message in piped if message is not None],
            "data_producers": [message for message in data if message is not None],
        }

    def apply_state(self, state: dict) -> None:
        """The home worker's `state` on this attaching worker."""
        for info in state["peers"]:
            self.on_message({"t": "peer", "peer": info})
        for message in state["producers"]:
            self._add_incoming(message)
        for message in state["data_producers"]:
            self._add_incoming_data(message)

    def close(self, reason: str, tell: bool = True) -> None:
        """Idempotent: piped producers close (their consumers' peers are told), pipe consumers close, the other
        side's peers leave the room here; the other side hears `detach` unless `tell` is False (the link is down)."""
        if self.closed:
            return
        self.closed = True
        if tell:
            self.send({"t": "detach"})
        self.link.forget(self)
        for producer in list(self.incoming.values()):
            producer.close()
        for consumer in list(self.outgoing.values()):
            consumer.close(PIPE_CLOSED)
        for data_producer_id in list(self.incoming_data):
            self._close_incoming_data(data_producer_id)
        for data_consumer in self.outgoing_data.values():
            data_consumer.close()
        self.outgoing_data.clear()
        for peer_id in list(self.peers):
            self.router.remove_remote_peer(peer_id, self)
        self.peers.clear()
        self.router.remove_pipe(self)
        if self.home and not tell:  # the home worker is gone: so is the room (docs/architecture.md)
            self.router.close(reason)

    def stats(self) -> dict:
        return {"room": self.name, "worker": self.link.index, "producers_out": len(self.outgoing), "producers_in": len(self.incoming),
                "data_producers_out": len(self.outgoing_data), "data_producers_in": len(self.incoming_data)}


class PipeLink:
    """This worker's link to one other worker: a control websocket (either side may have opened it) and the
    PipeTransport of the pair. Its end closes every RoomPipe on it."""

    def __init__(self, pipes: Pipes, index: int, transport: PipeTransport) -> None:
        self.pipes = pipes
        self.index = index
        self.transport = transport
        self.rooms: dict[str, RoomPipe] = {}
        self.closed = False
        self._outbox: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._attaching: dict[str, asyncio.Future[dict]] = {}
        self._data_in: dict[str, DataProducer] = {}  # piped data producers here, by id: their messages' target

    def send(self, message: dict) -> None:
        if not self.closed:
            self._outbox.put_nowait(json.dumps(message))

    def send_data(self, data_producer_id: str, ppid: int, payload: bytes) -> None:
        """One data channel message of a piped data producer, as a binary frame (in order with the JSON ones)."""
        if not self.closed:
            key = data_producer_id.encode()
            self._outbox.put_nowait(b"".join((DATA_HEADER.pack(len(key), ppid), key, payload)))

    def route_data(self, data_producer: DataProducer) -> None:
        self._data_in[data_producer.id] = data_producer

    def unroute_data(self, data_producer: DataProducer) -> None:
        if self._data_in.get(data_producer.id) is data_producer:
            del self._data_in[data_producer.id]

    def _on_data(self, frame: bytes) -> None:
        length, ppid = DATA_HEADER.unpack_from(frame)
        start = DATA_HEADER.size
        data_producer = self._data_in.get(frame[start:start + length].decode())
        if data_producer is not None:
            data_producer.receive(ppid, frame[start + length:], time.monotonic())

    async def run(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
        """Read messages until the websocket ends, writing the outbox meanwhile; then close."""
        writer = asyncio.create_task(self._write(ws), name=f"pipe-link-{self.index}")
        try:
            async for message in ws:
                try:
                    if message.type == WSMsgType.TEXT:
                        self._on_message(json.loads(message.data))
                    elif message.type == WSMsgType.BINARY:
                        self._on_data(message.data)
                except Exception:  # one bad message must not end the link
                    log.exception("pipe link to worker %d: message dropped", self.index)
        finally:
            self.close()
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _write(self, ws: web.WebSocketResponse | aiohttp.ClientWebSocketResponse) -> None:
        while True:
            text = await self._outbox.get()
            if text is None:  # closed here: the other side's reader ends too
                await ws.close()
                return
            if isinstance(text, bytes):
                await ws.send_bytes(text)
            else:
                await ws.send_str(text)

    async def attach(self, room: str) -> bool:
        """This worker takes participants of `room`, whose home is the other worker: False if it has no such room."""
        worker = self.pipes.worker
        router = worker.routers.get(room)
        if router is not None:
            return router.home_pipe is not None and router.home_pipe.link is self
        future = self._attaching.get(room)
        if future is None:
            future = self._attaching[room] = asyncio.get_running_loop().create_future()
            self.send({"t": "attach", "room": room})
        try:
            reply = await asyncio.wait_for(asyncio.shield(future), ATTACH_TIMEOUT)
        except asyncio.TimeoutError:
            if self._attaching.get(room) is future:  # the next join asks again
                del self._attaching[room]
            return False
        return bool(reply.get("ok"))

    def _on_message(self, message: dict) -> None:
        kind, room = message.get("t"), message.get("room")
        if not isinstance(room, str):
            return
        if kind == "attach":
            self._on_attach(room)
        elif kind == "attached":
            self._on_attached(room, message)
        elif kind == "detach":
            pipe = self.rooms.get(room)
            if pipe is not None:
                pipe.close("detached", tell=False)
        else:
            pipe = self.rooms.get(room)
            if pipe is not None:
                pipe.on_message(message)

    def _on_attach(self, room: str) -> None:
        """The other worker takes participants of `room`, which lives here: the room's state, then its producers."""
        router = self.pipes.worker.routers.get(room)
        if router is None or router.home_pipe is not None or router.emptied or room in self.rooms:
            self.send({"t": "attached", "room": room, "ok": False})
            return
        pipe = self.rooms[room] = RoomPipe(self, router, home=False)
        self.send({"t": "attached", "room": room, "ok": True, **pipe.state()})

    def _on_attached(self, room: str, message: dict) -> None:
        future = self._attaching.pop(room, None)
        if future is None or future.done():
            return
        if message.get("ok") and "peers" in message:
            worker = self.pipes.worker
            router = worker.router(room)
            pipe = self.rooms[room] = RoomPipe(self, router, home=True)
            pipe.apply_state(message)
            asyncio.get_running_loop().call_later(UNUSED_ROOM_TIMEOUT, self._close_unused, router)
        future.set_result(message)

    def _close_unused(self, router: Router) -> None:
        if not router.peers and not router.emptied and router.home_pipe is not None:
            router.home_pipe.close("no participant joined")

    def forget(self, pipe: RoomPipe) -> None:
        if self.rooms.get(pipe.name) is pipe:
            del self.rooms[pipe.name]

    def close(self) -> None:
        """The other worker is gone (or this one stops): every room across this link loses its other side."""
        if self.closed:
            return
        self.closed = True
        log.info("pipe link to worker %d closed", self.index)
        for future in self._attaching.values():
            if not future.done():
                future.set_result({"ok": False})
        self._attaching.clear()
        for pipe in list(self.rooms.values()):
            pipe.close(f"worker {self.index} is gone", tell=False)
        self._outbox.put_nowait(None)
        self.transport.close()
        self.pipes.forget(self)

    def stats(self) -> dict:
        return {**self.transport.stats(), "rooms": len(self.rooms)}


class Pipes:
    """A worker's links to the other workers of its server, one per pair: worker i opens those to workers
    0..i-1 when it starts (supervisor.py), and accepts the later ones' on LINK_PATH."""

    def __init__(self, worker: Worker, index: int, token: str) -> None:
        self.worker = worker
        self.index = index
        self.links: dict[int, PipeLink] = {}
        self._token = token
        self._http: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()

    def authorized(self, request: web.Request) -> bool:
        """The request carries the front's internal token (compared in constant time)."""
        return hmac.compare_digest(request.headers.get("Authorization", "").encode(), f"Bearer {self._token}".encode())

    async def connect(self, index: int, http_port: int) -> None:
        """Open the link to worker `index` (its internal signaling on 127.0.0.1:`http_port`)."""
        if self._http is None:
            self._http = aiohttp.ClientSession()
        ws = await self._http.ws_connect(
            f"ws://127.0.0.1:{http_port}{LINK_PATH}", headers={"Authorization": f"Bearer {self._token}"}
        )
        try:
            link = await self._open(ws, index, lambda: ws.receive_json(timeout=HELLO_TIMEOUT))
        except BaseException:
            await ws.close()
            raise
        task = asyncio.create_task(link.run(ws), name=f"pipe-link-{index}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def accept(self, request: web.Request) -> web.StreamResponse:
        """LINK_PATH: a later worker's link; the handler lives as long as the link."""
        if not self.authorized(request):
            raise web.HTTPForbidden(text="internal\n")
        ws = web.WebSocketResponse(heartbeat=5, compress=False)
        await ws.prepare(request)
        hello = await ws.receive_json(timeout=HELLO_TIMEOUT)
        link = await self._open(ws, int(hello["index"]), lambda: _ready(hello))
        await link.run(ws)
        return ws

    async def _open(self, ws: Any, index: int, hello: Callable[[], Awaitable[dict]]) -> PipeLink:
        """Exchange hellos (index and pipe port) and start the pair's PipeTransport."""
        transport = PipeTransport(self.worker, self.index, index)
        try:
            port = await transport.connection.bind()
            await ws.send_json({"t": "hello", "index": self.index, "port": port})
            reply = await hello()
            if int(reply["index"]) != index:
                raise ValueError(f"pipe link: expected worker {index}, got {reply['index']}")
            transport.connection.connect(int(reply["port"]))
        except BaseException:  # a bad or missing hello: the socket goes with it
            transport.close()
            raise
        previous = self.links.get(index)
        if previous is not None:  # the other worker linked again: the old link is dead
            previous.close()
        link = self.links[index] = PipeLink(self, index, transport)
        log.debug("pipe link to worker %d: udp %d <-> %d", index, port, int(reply["port"]))
        return link

    def forget(self, link: PipeLink) -> None:
        if self.links.get(link.index) is link:
            del self.links[link.index]

    async def attach(self, room: str, home: int) -> bool:
        link = self.links.get(home)
        return link is not None and await link.attach(room)

    def report(self, now: float) -> None:
        for link in list(self.links.values()):
            link.transport.report(now)

    def stats(self) -> list[dict]:
        return [link.stats() for link in self.links.values()]

    async def close(self) -> None:
        for link in list(self.links.values()):
            link.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()


async def _ready(message: dict) -> dict:
    return message


def add_internal_routes(app: web.Application, worker: Worker) -> None:
    """The routes the front and the other workers use (the front's internal token; 404 without pipes)."""

    def pipes_for(request: web.Request) -> Pipes:
        pipes = worker.pipes
        if pipes is None:
            raise web.HTTPNotFound()
        if not pipes.authorized(request):
            raise web.HTTPForbidden(text="internal\n")
        return pipes

    async def link(request: web.Request) -> web.StreamResponse:
        return await pipes_for(request).accept(request)

    async def attach(request: web.Request) -> web.Response:
        pipes = pipes_for(request)
        try:
            home = int(request.query["home"])
        except (KeyError, ValueError):
            raise web.HTTPBadRequest(text="?home=INDEX\n") from None
        attached = await pipes.attach(request.match_info["room"], home)
        return web.json_response({"attached": attached}, status=200 if attached else 409)

    async def load(request: web.Request) -> web.Response:
        pipes_for(request)
        peers = sum(len(router.peers) for router in worker.routers.values())
        return web.json_response({"peers": peers, "rooms": list(worker.routers)})

    async def room(request: web.Request) -> web.Response:
        pipes_for(request)
        router = worker.routers.get(request.match_info["room"])
        consumers = sum(len(p.consumers) for p in router.peers.values()) if router is not None else 0
        return web.json_response({"consumers": consumers, "home": router is not None and router.home_pipe is None})

    app.router.add_get(LINK_PATH, link)
    app.router.add_post(ATTACH_PATH, attach)
    app.router.add_get(ROOM_PATH, room)
    app.router.add_get(LOAD_PATH, load)
