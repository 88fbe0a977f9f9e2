"""Signaling: JSON requests, responses and notifications over one websocket per peer (docs/protocol.md)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any, Awaitable, Callable

from .auth import Authenticator, Grant, hide_addresses
from .errors import SignalingError, bad_request, not_found, wrong_state
from .ice_servers import ice_servers_json, offered_ice_servers
from .messages import RequestError, parse_request, recover_id
from .peer import Peer, producer_info
from .cpu import process_cpu_percent
from .quotas import flag
from .rate_limit import TokenBucket
from .simulcast_consumer import PRIORITY_RANGE, TEMPORAL_LAYERS, SimulcastConsumer
from .worker import Worker

log = logging.getLogger(__name__)

PROTOCOL_VERSION = 1
MAX_NAME_LENGTH = 64
STATS_MAX_INTERVAL = 60.0  # seconds; the shortest is a quota (Quotas.stats_min_interval)
# A stats push is skipped while this many frames wait for a slow client, so its backlog stays bounded.
STATS_MAX_BACKLOG = 8


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def stats_room(params: dict) -> str | None:
    """The optional `room` of getStats/subscribeStats; bad_request unless a string or absent."""
    room = params.get("room")
    if room is not None and not isinstance(room, str):
        raise bad_request("'room' must be a room name (string) or absent for every room")
    return room


def replace_identity(worker: Worker, room: str, identity: str | None) -> None:
    """A second join with the same identity in a room replaces the first: the old peer is told
    `duplicate_identity` and closed (websocket and WHIP/WHEP peers alike)."""
    router = worker.routers.get(room)
    old = router.peers.get(identity) if router is not None and identity is not None else None
    if old is not None:
        old.notify("closed", {"code": "duplicate_identity", "message": f"another connection joined room {room!r} as {identity!r}"})
        old.close("replaced by a new connection with the same identity")


class SignalingSession:
    """One websocket client. A bad message gets an error reply and changes nothing else; an `unauthorized`
    one also ends the connection. `url_token` is the access token of the websocket's URL (?token=)."""

    def __init__(
        self,
        worker: Worker,
        send: Callable[[str], Awaitable[None]],
        close: Callable[[bool], Awaitable[None]],
        auth: Authenticator,
        url_token: str | None = None,
        remote: str | None = None,
    ) -> None:
        """`send` sends one text frame; `close(abort)` ends the websocket (abort: at once, dropping what is queued)."""
        self.worker = worker
        self.auth = auth
        self.remote = remote  # the participant's address, for the log
        self.peer: Peer | None = None
        self._url_token = url_token
        self._send = send
        self._close = close
        quotas = worker.config.quotas
        self._bucket = TokenBucket(quotas.messages_per_second, quotas.message_burst, time.monotonic())
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._queued_bytes = 0
        self._ending = False
        self._aborted = False
        self._writer = asyncio.create_task(self._write(), name="signaling-writer")
        self._stats_task: asyncio.Task | None = None
        self._handlers: dict[str, Callable[[dict], Any]] = {
            "join": self._join,
            "leave": self._leave,
            "publish": self._publish,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "pauseConsumer": lambda p: self._consumer_paused(p, True),
            "resumeConsumer": lambda p: self._consumer_paused(p, False),
            "pauseProducer": lambda p: self._producer_paused(p, True),
            "resumeProducer": lambda p: self._producer_paused(p, False),
            "closeProducer": self._close_producer,
            "closeDataProducer": self._close_data_producer,
            "setPreferredLayers": self._set_preferred_layers,
            "setMaxSize": self._set_max_size,
            "setConsumerPriority": self._set_consumer_priority,
            "relay": self._relay,
            "getStats": self._get_stats,
            "subscribeStats": self._subscribe_stats,
            "unsubscribeStats": self._unsubscribe_stats,
            "ping": lambda p: {"pong": True},
        }

    # -- entry points --------------------------------------------------------------------------------
    def handle(self, text: str) -> None:
        """Handle one text frame: reply to it (errors included) through the ordered outbox."""
        config = self.worker.config
        request_id = method = None
        try:
            if not self._bucket.take(time.monotonic()):
                raise RequestError(
                    "rate_limited",
                    f"more than {config.quotas.messages_per_second:g} messages a second "
                    f"(sfuctl serve {flag('messages_per_second')}); wait and retry",
                    recover_id(text),
                )
            request = parse_request(text, config.max_message_bytes, config.quotas.json_depth)
            request_id, method = request.id, request.method
            handler = self._handlers.get(request.method)
            if handler is None:
                raise SignalingError("unknown_method", f"unknown method {request.method!r}; see docs/protocol.md")
            result = handler(request.params)
        except RequestError as exc:
            self._reply(exc.request_id, error=exc)
        except SignalingError as exc:
            self._reply(request_id, error=exc)
            if exc.code == "unauthorized":
                self._end()
        except Exception as exc:  # a bug must not take the session down
            log.exception("request %r failed", method)
            self._reply(request_id, error=SignalingError("internal", f"internal error: {type(exc).__name__}"))
        else:
            self._reply(request_id, result=result)

    def notify(self, method: str, params: dict) -> None:
        self._enqueue(json.dumps({"method": method, "params": params}))

    async def finish(self) -> None:
        """The websocket is gone: the peer leaves, the stats stream and the writer stop."""
        self._unsubscribe_stats({})
        if self.peer is not None:
            self.peer.close("signaling connection closed")
        self._end()
        await asyncio.gather(self._writer, return_exceptions=True)

    # -- methods -------------------------------------------------------------------------------------
    def _join(self, params: dict) -> dict:
        if self.peer is not None:
            raise wrong_state(f"already joined room {self.peer.router.name!r}; send 'leave' first")
        grant = self.auth.verify(params.get("token", self._url_token))
        room = params.get("room")
        name = params.get("name", "")
        if not isinstance(room, str) or not room or len(room) > MAX_NAME_LENGTH:
            raise bad_request(f"'room' must be a non-empty string of at most {MAX_NAME_LENGTH} characters")
        if not isinstance(name, str) or len(name) > MAX_NAME_LENGTH:
            raise bad_request(f"'name' must be a string of at most {MAX_NAME_LENGTH} characters")
        grant.require_room(room)
        replace_identity(self.worker, room, grant.identity)
        router = self.worker.admit(room)
        peer = Peer(
            name=grant.name or name or grant.identity or "anonymous",
            router=router,
            worker=self.worker,
            notify=self.notify,
            on_closed=self._on_peer_closed,
            grant=grant,
        )
        others = router.peer_list()
        router.add_peer(peer)
        self.peer = peer
        log.info("peer %s (%s) joined room %s from %s", peer.id, peer.name, room, self.remote or "?")
        return {
            "protocol": PROTOCOL_VERSION,
            "peerId": peer.id,
            "room": room,
            "peers": others,
            "peerCount": len(router.peers),
            "producers": [producer_info(p) for p in router.producers.values()],
            "iceServers": ice_servers_json(offered_ice_servers(self.worker.config, grant.identity or peer.id)),
        }

    def _leave(self, params: dict) -> dict:
        peer = self._require_peer()
        self.peer = None
        peer.close("left")
        return {}

    def _publish(self, params: dict) -> dict:
        return self._require_peer().publish(params.get("sdp"))

    def _subscribe(self, params: dict) -> dict:
        return self._require_peer().subscribe(params.get("sdp"), params.get("subscriptions", {}))

    def _unsubscribe(self, params: dict) -> dict:
        self._require_peer().unsubscribe(params.get("consumerId"))
        return {}

    def _consumer_paused(self, params: dict, paused: bool) -> dict:
        consumer = self._require_peer().consumer(params.get("consumerId"))
        consumer.set_paused(paused, time.monotonic())
        return {"paused": consumer.paused}

    def _producer_paused(self, params: dict, paused: bool) -> dict:
        peer = self._require_peer()
        producer = peer.producer(params.get("producerId"))
        peer.router.set_producer_paused(producer, paused)
        return {"paused": producer.paused}

    def _simulcast_consumer(self, params: dict) -> SimulcastConsumer:
        consumer = self._require_peer().consumer(params.get("consumerId"))
        if not isinstance(consumer, SimulcastConsumer):
            raise bad_request(f"consumer {consumer.id} forwards a single-encoding producer: it has no layers to choose")
        return consumer

    def _set_preferred_layers(self, params: dict) -> dict:
        consumer = self._simulcast_consumer(params)
        layers = len(consumer.producer.layers)
        spatial, temporal = params.get("spatialLayer"), params.get("temporalLayer")
        if not _is_int(spatial) or not 0 <= spatial < layers:
            raise bad_request(f"'spatialLayer' must be an integer from 0 to {layers - 1}: producer {consumer.producer.id} has {layers} layer(s)")
        if temporal is not None and (not _is_int(temporal) or not 0 <= temporal < TEMPORAL_LAYERS):
            raise bad_request(f"'temporalLayer' must be an integer from 0 to {TEMPORAL_LAYERS - 1}, or absent for all")
        consumer.preferred_spatial = spatial
        consumer.set_temporal(temporal)
        return self._reallocate(consumer)

    def _set_max_size(self, params: dict) -> dict:
        consumer = self._simulcast_consumer(params)
        width, height = params.get("width"), params.get("height")
        if width is None and height is None:
            consumer.max_size = None
        elif _is_int(width) and _is_int(height) and width > 0 and height > 0:
            consumer.max_size = (width, height)
        else:
            raise bad_request("'width' and 'height' must be positive integers (pixels of the viewer's window), or both absent")
        return self._reallocate(consumer)

    def _set_consumer_priority(self, params: dict) -> dict:
        consumer = self._simulcast_consumer(params)
        priority = params.get("priority")
        low, high = PRIORITY_RANGE
        if not _is_int(priority) or not low <= priority <= high:
            raise bad_request(f"'priority' must be an integer from {low} to {high} (higher is served first)")
        consumer.priority = priority
        return self._reallocate(consumer)

    def _reallocate(self, consumer: SimulcastConsumer) -> dict:
        allocation = consumer.transport.allocation
        if allocation is not None:
            allocation.apply(time.monotonic())
        return {"spatialLayer": consumer.current_layer, "targetSpatialLayer": consumer.target_layer}

    def _close_producer(self, params: dict) -> dict:
        peer = self._require_peer()
        peer.producer(params.get("producerId")).close()
        return {}

    def _close_data_producer(self, params: dict) -> dict:
        self._require_peer().close_data_producer(params.get("dataProducerId"))
        return {}

    def _relay(self, params: dict) -> dict:
        """Pass `data` (any JSON object) to another peer of the room as a `relayed` notification: the
        signaling of peers that connect to each other directly (a mesh call, docs/protocol.md)."""
        peer = self._require_peer()
        peer.grant.require("data")
        to, data = params.get("to"), params.get("data")
        if not isinstance(to, str):
            raise bad_request("'to' must be the peerId of another peer in your room")
        if not isinstance(data, dict):
            raise bad_request("'data' must be a JSON object (e.g. {\"type\": \"offer\", \"sdp\": ...})")
        target = peer.router.peers.get(to)
        if target is None or target is peer:
            raise not_found("peer in your room", to)
        target.notify("relayed", {"from": peer.id, "data": data})
        return {}

    def _stats_grant(self) -> Grant:
        """Who asks for stats: the joined peer, else the URL's token; `admin` is needed when auth is on."""
        grant = self.peer.grant if self.peer is not None else self.auth.verify(self._url_token)
        grant.require("admin")
        return grant

    def _snapshot(self, grant: Grant, room: str | None) -> dict:
        snapshot = self.worker.snapshot(time.time(), process_cpu_percent(), room)
        return snapshot if grant.sees_addresses else hide_addresses(snapshot)

    def _get_stats(self, params: dict) -> dict:
        return self._snapshot(self._stats_grant(), stats_room(params))

    def _subscribe_stats(self, params: dict) -> dict:
        """Push a 'stats' notification now and every `interval` seconds; a second call replaces the first."""
        try:
            interval = self.worker.stats_feed.check_interval(params.get("interval", 1.0), STATS_MAX_INTERVAL)
        except ValueError as exc:
            raise bad_request(str(exc)) from None
        room = stats_room(params)
        grant = self._stats_grant()
        self._unsubscribe_stats({})
        self.worker.stats_feed.open()
        self._stats_task = asyncio.create_task(self._push_stats(interval, room, grant), name="signaling-stats")
        return {"interval": params.get("interval", 1.0)}

    def _unsubscribe_stats(self, params: dict) -> dict:
        if self._stats_task is not None:
            self._stats_task.cancel()
            self._stats_task = None
            self.worker.stats_feed.close()
        return {}

    async def _push_stats(self, interval: float, room: str | None, grant: Grant) -> None:
        while True:
            if self._outbox.qsize() < STATS_MAX_BACKLOG:
                try:
                    self._enqueue(await self.worker.stats_feed.notification(room, grant.sees_addresses))
                except Exception:  # a bug must not end the stream
                    log.exception("stats snapshot failed")
            await asyncio.sleep(interval)

    # -- plumbing ------------------------------------------------------------------------------------
    def _require_peer(self) -> Peer:
        if self.peer is None:
            raise wrong_state("join a room first ('join' with a room name)")
        return self.peer

    def _on_peer_closed(self) -> None:
        """The peer closed from the media side (consent lost): end the signaling session too."""
        if self.peer is not None and self.peer.closed:
            self.peer = None
            self._end()

    def _reply(self, request_id: object, *, result: object = None, error: SignalingError | None = None) -> None:
        if error is not None:
            self.worker.refusals.add(error)
            body = {"id": request_id, "ok": False, "error": {"code": error.code, "message": error.message}}
        else:
            body = {"id": request_id, "ok": True, "result": result}
        self._enqueue(json.dumps(body))

    def _enqueue(self, text: str) -> None:
        """Queue a frame; a client that lets more than the send-queue quota pile up is disconnected."""
        if self._ending:
            return
        self._queued_bytes += len(text)
        if self._queued_bytes > self.worker.config.quotas.send_queue_bytes:
            log.warning("signaling client does not read (%d bytes queued): disconnected", self._queued_bytes)
            self.worker.refusals.add(SignalingError("slow_reader", "the client does not read its websocket"))
            self._aborted = True
            self._end()
            self._writer.cancel()
            return
        self._outbox.put_nowait(text)

    def _end(self) -> None:
        """Send nothing more; the writer closes the websocket after the frames already queued (all of them
        dropped when the client does not read)."""
        if self._ending:
            return
        self._ending = True
        if self._aborted:
            while not self._outbox.empty():
                self._outbox.get_nowait()
            self._queued_bytes = 0
        self._outbox.put_nowait(None)

    async def _write(self) -> None:
        try:
            while True:
                text = await self._outbox.get()
                if text is None:
                    break
                self._queued_bytes -= len(text)
                await self._send(text)
        except (Exception, asyncio.CancelledError):
            pass
        await self._close(self._aborted)
