"""The front of a multi-worker server: the public port, relaying each participant to its room's worker.

Each room lives on one worker (one core), its home. A websocket is relayed frame by frame to the worker of the
room it joins; a WHIP/WHEP request to the worker of its session. Stats and /metrics gather every worker's.
Rooms go to the worker with the fewest peers when first seen and stay there while they exist. A participant
joining a room with --room-spill-consumers consumers on its home goes to the least loaded other worker, which
the room then spans through pipes (pipes.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from urllib.parse import quote

import aiohttp
from aiohttp import WSMsgType, web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from ..stats_schema import SCHEMA_VERSION
from .app import (
    CLOSE_TIMEOUT,
    FORWARDED_FOR,
    OPEN_SOCKETS_KEY,
    add_page_routes,
    check_origin,
    close_websocket,
    close_websockets_on_shutdown,
)
from .auth import Authenticator, Grant, check_metrics_access, hide_addresses
from .config import ServerConfig, url_host
from .listening import web_site
from .errors import SignalingError, bad_request
from .ice_servers import endpoint_ice_servers
from .messages import RequestError, parse_request
from .quotas import flag
from .rate_limit import TokenBucket
from .signaling import STATS_MAX_INTERVAL, stats_room
from .stats_feed import StatsFeed
from .cpu import process_cpu_percent
from .supervisor import WorkerProcess, start_workers
from .whip import add_cors, endpoint_options

log = logging.getLogger(__name__)

POLL_INTERVAL = 2.0  # how often the front learns each worker's rooms and load (peers: not a whole snapshot)
ROOM_GRACE = 10.0  # a room assigned this recently is kept even if no worker reports it yet
STATS_METHODS = ("getStats", "subscribeStats", "unsubscribeStats")
# The resource of a WHEP session on a worker its room spilled to names that worker: RESOURCE-wINDEX (resource ids
# are hex), so the front relays the session's PATCH and DELETE there without keeping a map of sessions.
SPILLED_RESOURCE = re.compile(r"(?P<resource>[0-9a-f]+)-w(?P<worker>\d+)")
# A worker's WHIP/WHEP response headers that the front passes on (CORS headers are the front's own).
RELAYED_HTTP_HEADERS = ("Content-Type", "Location", "WWW-Authenticate", "Allow", "ETag", "Link", "Accept-Patch", "Accept-Post")


class Front:
    """Room placement and the view over all workers."""

    def __init__(self, config: ServerConfig, workers: list[WorkerProcess]) -> None:
        self.config = config
        self.auth = Authenticator(config)
        self.workers = workers
        self.owner: dict[str, tuple[WorkerProcess, float]] = {}
        self.load = {w.index: 0 for w in workers}
        self.http: aiohttp.ClientSession | None = None
        self.stats_feed = StatsFeed(self.stats_snapshot, config.quotas)
        self.sessions: set[RelaySession] = set()  # every open participant websocket (RelaySession adds itself)
        self._poller: asyncio.Task | None = None

    async def start(self) -> None:
        self.http = aiohttp.ClientSession()
        self._poller = asyncio.create_task(self._poll(), name="front-poll")

    async def close(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            await asyncio.gather(self._poller, return_exceptions=True)
        if self.http is not None:
            await self.http.close()

    def least_loaded(self, exclude: WorkerProcess | None = None) -> WorkerProcess:
        """The live worker with the fewest peers (any, if none is alive: the relay then fails and says so)."""
        candidates = [w for w in self.workers if w.alive and w is not exclude] or self.workers
        return min(candidates, key=lambda w: (self.load[w.index], w.index))

    async def place(self, room: str) -> WorkerProcess:
        """The worker that owns `room`, choosing the least loaded one for a new room (or one whose worker died)."""
        owned = self.owner.get(room)
        if owned is not None and owned[0].alive:
            return owned[0]
        worker = self.least_loaded()
        self.load[worker.index] += 1
        self.owner[room] = (worker, time.monotonic())
        return worker

    async def place_peer(self, room: str) -> WorkerProcess:
        """The worker a participant joining `room` goes to: the room's home, or another the room spills to."""
        return await self.spill(room, await self.place(room))

    async def spill(self, room: str, home: WorkerProcess) -> WorkerProcess:
        """`home`, unless the room has --room-spill-consumers consumers there and another live worker attaches
        to it: then the least loaded other worker."""
        threshold = self.config.room_spill_consumers
        others = [w for w in self.workers if w is not home and w.alive]
        if not threshold or not others or room not in self.owner:
            return home
        size = await self._get_json(home, f"/internal/room/{quote(room, safe='')}")
        if size is None or size.get("consumers", 0) < threshold:
            return home
        target = self.least_loaded(exclude=home)
        attached = await self._post(target, f"/internal/attach/{quote(room, safe='')}?home={home.index}")
        if not attached:
            log.warning("worker %d did not attach to room %s: its participant goes to the home worker", target.index, room)
            return home
        self.load[target.index] += 1
        return target

    async def locate(self, room: str) -> WorkerProcess | None:
        """Where `room` lives now, or None: no new placement (a WHIP/WHEP resource of a room that is gone)."""
        owned = self.owner.get(room)
        return owned[0] if owned is not None else None

    def route(self, request: web.Request) -> "Front":
        """The placement that serves `request` (a cluster node places requests relayed by other nodes here)."""
        return self

    def upstream_headers(self, target: WorkerProcess) -> dict[str, str]:
        """Headers of a relayed connection to `target` (a worker needs none: it trusts the loopback)."""
        return {}

    async def snapshot(self, room: str | None = None) -> dict:
        """Every worker's snapshot merged into one of the same schema, plus a `workers` list."""
        parts = await asyncio.gather(*(self._worker_stats(w, room) for w in self.workers))
        answered = [(w, p) for w, p in zip(self.workers, parts) if p is not None]
        return merge_snapshots([p for _, p in answered], [w for w, _ in answered], process_cpu_percent())

    async def stats_snapshot(self, room: str | None = None) -> dict:
        """What getStats and stats streams show (a cluster node adds the other nodes')."""
        return await self.snapshot(room)

    def stats_grant(self, token: str | None) -> Grant:
        """The grant of a stats request's token (a cluster node trusts a request another node relayed)."""
        return self.auth.verify(token)

    def metrics_labels(self) -> dict[str, str]:
        """Labels added to every /metrics sample besides `worker` (a cluster node's `node`)."""
        return {}

    def internal_url(self, worker: WorkerProcess) -> str:
        """A worker's websocket URL with the front's own credential (an admin on the worker)."""
        token = self.config.internal_token
        return worker.ws_url + (f"?token={quote(token)}" if token else "")

    async def metrics_text(self) -> bytes:
        texts = await asyncio.gather(*(self._get_text(w.http_url + "/metrics") for w in self.workers))
        return merge_metrics([t for t in texts if t is not None], [w.index for w, t in zip(self.workers, texts) if t], self.metrics_labels())

    async def _worker_stats(self, worker: WorkerProcess, room: str | None) -> dict | None:
        try:
            async with self.http.ws_connect(self.internal_url(worker)) as ws:
                await ws.send_json({"id": 1, "method": "getStats", "params": {"room": room} if room else {}})
                reply = await asyncio.wait_for(ws.receive_json(), 5)
                return reply.get("result") if reply.get("ok") else None
        except (aiohttp.ClientError, asyncio.TimeoutError, ValueError, TypeError):
            log.warning("worker %d did not answer getStats", worker.index)
            return None

    def _internal_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.config.internal_token}"} if self.config.internal_token else {}

    async def _get_text(self, url: str) -> str | None:
        try:
            async with self.http.get(url, headers=self._internal_headers()) as response:
                return await response.text()
        except aiohttp.ClientError:
            return None

    async def _get_json(self, worker: WorkerProcess, path: str) -> dict | None:
        try:
            async with self.http.get(worker.http_url + path, headers=self._internal_headers()) as response:
                return await response.json() if response.status == 200 else None
        except (aiohttp.ClientError, ValueError):
            return None

    async def _post(self, worker: WorkerProcess, path: str) -> bool:
        """An internal POST to `worker`; True when it answered 200."""
        try:
            async with self.http.post(worker.http_url + path, headers=self._internal_headers()) as response:
                return response.status == 200
        except aiohttp.ClientError:
            return False

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(POLL_INTERVAL)
            present: set[str] = set()
            for worker in self.workers:
                load = await self._get_json(worker, "/internal/load") if worker.alive else None
                if load is None:
                    continue
                self.load[worker.index] = load["peers"]
                present.update(load["rooms"])
            now = time.monotonic()
            for room, (_, since) in list(self.owner.items()):
                if room not in present and now - since > ROOM_GRACE:
                    del self.owner[room]


class RelaySession:
    """One participant's websocket, relayed to the worker of the room it joins. The worker checks the
    participant's access token (passed on from the URL, or in `join`); the front checks it for stats."""

    def __init__(self, front: Front, client: web.WebSocketResponse, request: web.Request) -> None:
        self.front = front
        self.client = client
        self.request = request
        self.token = request.query.get("token")
        self.remote = request.remote  # the participant's address, passed on to the worker for its log
        self.worker: WorkerProcess | None = None
        self.upstream: aiohttp.ClientWebSocketResponse | None = None
        self._pump: asyncio.Task | None = None
        self._stats: asyncio.Task | None = None
        quotas = front.config.quotas
        self._bucket = TokenBucket(quotas.messages_per_second, quotas.message_burst, time.monotonic())

    @property
    def participant(self) -> bool:
        """Relayed to a worker or node: a participant, not a stats-only connection."""
        return self.upstream is not None

    async def notify(self, method: str, params: dict) -> None:
        """A notification from the front itself (e.g. `reconnect` when the node drains)."""
        if not self.client.closed:
            await self.client.send_str(json.dumps({"method": method, "params": params}))

    async def run(self) -> None:
        self.front.sessions.add(self)
        try:
            async for message in self.client:
                if message.type == WSMsgType.TEXT:
                    await self._on_frame(message.data)
        finally:
            self.front.sessions.discard(self)
            await self._disconnect()
            self._stop_stats()

    async def _on_frame(self, text: str) -> None:
        method, request_id, params = peek(text, self.front.config)
        if method in STATS_METHODS and request_id is not None:
            await self._stats_request(method, request_id, params)
            return
        if method == "join" and isinstance(params.get("token"), str):
            self.token = params["token"]
        try:
            if method == "join" and isinstance(params.get("room"), str) and params["room"]:
                worker = await self.front.place_peer(params["room"])  # SignalingError: no place for the room now
            else:
                worker = self.worker or self.front.least_loaded()  # before a join, any worker judges the request
            if worker is not self.worker:
                try:
                    await self._connect(worker)
                except (aiohttp.ClientError, OSError) as exc:  # e.g. a cluster node that died, its lease still running
                    raise SignalingError("unavailable", f"the server hosting this room does not answer ({exc}); retry in a few seconds") from None
        except SignalingError as exc:
            error = {"code": exc.code, "message": exc.message}
            await self.client.send_str(json.dumps({"id": request_id, "ok": False, "error": error}))
            return
        await self.upstream.send_str(text)

    async def _connect(self, worker: WorkerProcess) -> None:
        await self._disconnect()
        url = worker.ws_url + (f"?token={quote(self.token)}" if self.token else "")
        headers = {FORWARDED_FOR: self.remote} if self.remote else {}
        headers.update(self.front.upstream_headers(worker))
        self.upstream = await self.front.http.ws_connect(url, max_msg_size=0, headers=headers)
        self.worker = worker
        self._pump = asyncio.create_task(self._relay_down(self.upstream), name="front-relay")

    async def _disconnect(self) -> None:
        upstream, self.upstream, self.worker = self.upstream, None, None
        if self._pump is not None:
            self._pump.cancel()
            await asyncio.gather(self._pump, return_exceptions=True)
            self._pump = None
        if upstream is not None:
            await upstream.close()

    async def _relay_down(self, upstream: aiohttp.ClientWebSocketResponse) -> None:
        async for message in upstream:
            if message.type == WSMsgType.TEXT:
                await self.client.send_str(message.data)
        # The worker closed the session (the peer's media went silent, or the client does not read): so does the front.
        await close_websocket(self.client, self.request)

    async def _stats_request(self, method: str, request_id: object, params: dict) -> None:
        """Stats are the front's to answer (every worker's, merged); other requests are rate-limited by the worker."""
        try:
            if not self._bucket.take(time.monotonic()):
                raise SignalingError("rate_limited", f"too many messages a second (sfuctl serve {flag('messages_per_second')})")
            room = stats_room(params)
            grant = self.front.stats_grant(self.token)
            grant.require("admin")
            if method == "getStats":
                result: dict = await self._snapshot(grant, room)
            elif method == "subscribeStats":
                try:
                    interval = self.front.stats_feed.check_interval(params.get("interval", 1.0), STATS_MAX_INTERVAL)
                except ValueError as exc:
                    raise bad_request(str(exc)) from None
                self._stop_stats()
                self.front.stats_feed.open()
                self._stats = asyncio.create_task(self._push_stats(interval, room, grant))
                result = {"interval": params.get("interval", 1.0)}
            else:
                self._stop_stats()
                result = {}
        except SignalingError as exc:
            reply = {"id": request_id, "ok": False, "error": {"code": exc.code, "message": exc.message}}
        else:
            reply = {"id": request_id, "ok": True, "result": result}
        await self.client.send_str(json.dumps(reply))
        if reply.get("error", {}).get("code") == "unauthorized":  # as a worker does: the connection ends
            await self.client.close()

    async def _snapshot(self, grant: Grant, room: str | None) -> dict:
        snapshot = await self.front.stats_snapshot(room)
        return snapshot if grant.sees_addresses else hide_addresses(snapshot)

    def _stop_stats(self) -> None:
        if self._stats is not None:
            self._stats.cancel()
            self._stats = None
            self.front.stats_feed.close()

    async def _push_stats(self, interval: float, room: str | None, grant: Grant) -> None:
        while not self.client.closed:
            await self.client.send_str(await self.front.stats_feed.notification(room, grant.sees_addresses))
            await asyncio.sleep(interval)


def peek(text: str, config: ServerConfig) -> tuple[str | None, object, dict]:
    """(method, id, params) of a frame, or Nones for anything the worker should judge (errors included)."""
    try:
        request = parse_request(text, config.max_message_bytes, config.quotas.json_depth)
    except RequestError:
        return None, None, {}
    return request.method, request.id, request.params


def merge_snapshots(parts: list[dict], workers: list[WorkerProcess], front_cpu: float) -> dict:
    """Server totals added up (uptime and loop lag: the highest); one entry per worker; every pipe (each end);
    a room that spans workers once, with each worker's peers, producers and consumers (`parts[i]` is
    `workers[i]`'s snapshot)."""
    server: dict = {"pipes": []}
    for worker, part in zip(workers, parts):
        server["pipes"] += [{**pipe, "from_worker": worker.index} for pipe in part["server"]["pipes"]]
        for key, value in part["server"].items():
            if key in ("uptime_s", "loop_lag_p95_ms"):  # the longest, the worst worker's
                server[key] = max(server.get(key, 0), value)
            elif key == "rtc_port":
                server.setdefault(key, value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                server[key] = server.get(key, 0) + value
    server["cpu_percent"] = server.get("cpu_percent", 0) + front_cpu
    server["workers"] = [
        {"index": w.index, "rtc_port": w.rtc_port, "cpu_percent": p["server"]["cpu_percent"], "rooms": p["server"]["rooms"]}
        for w, p in zip(workers, parts)
    ]
    rooms = merge_rooms([room for part in parts for room in part["rooms"]])
    if all(len(part["rooms"]) == part["server"]["rooms"] for part in parts):  # every room listed: a room that
        server["rooms"] = len(rooms)  # spans workers counts once
    return {"version": SCHEMA_VERSION, "time": time.time(), "server": server, "rooms": rooms}


ROOM_LISTS = ("peers", "producers", "consumers", "data_producers", "data_consumers")


def merge_rooms(rooms: list[dict]) -> list[dict]:
    """One entry per room name: the lists of the workers it spans joined (each worker lists only its own peers
    and consumers, and producers only where they are published); the active speaker of the first that has one."""
    merged: dict[str, dict] = {}
    for room in rooms:
        into = merged.get(room["name"])
        if into is None:
            merged[room["name"]] = {**room, **{key: list(room[key]) for key in ROOM_LISTS}}
            continue
        for key in ROOM_LISTS:
            into[key] += room[key]
        into["active_speaker"] = into["active_speaker"] or room["active_speaker"]
    return list(merged.values())


def merge_metrics(texts: list[str], indexes: list[int], labels: dict[str, str] | None = None) -> bytes:
    """Every worker's families, each sample labelled with its `worker` (and `labels`)."""
    families: dict[str, Metric] = {}
    for index, text in zip(indexes, texts):
        for family in text_string_to_metric_families(text):
            merged = families.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            for sample in family.samples:
                merged.add_sample(sample.name, {**sample.labels, **(labels or {}), "worker": str(index)}, sample.value, sample.timestamp)

    class _Families:
        def collect(self):
            return families.values()

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Families())
    return generate_latest(registry)


def build_front_app(front: Front) -> web.Application:
    """The public listener of a multi-worker server."""

    async def websocket(request: web.Request) -> web.StreamResponse:
        placement = front.route(request)
        check_origin(request, front.config)
        client = web.WebSocketResponse(
            max_msg_size=4 * front.config.max_message_bytes, heartbeat=20, compress=False, timeout=CLOSE_TIMEOUT
        )
        await client.prepare(request)
        request.app[OPEN_SOCKETS_KEY][client] = request
        try:
            await RelaySession(placement, client, request).run()
        finally:
            request.app[OPEN_SOCKETS_KEY].pop(client, None)
        return client

    async def http_relay(request: web.Request) -> web.StreamResponse:
        """WHIP/WHEP: a new session to the room's home (a WHEP player to a worker the room spills to, like a
        websocket subscriber), a session's own requests to the worker that holds it."""
        room, resource = request.match_info["room"], request.match_info.get("resource")
        placement = front.route(request)
        path = request.path_qs
        try:
            if resource is None:  # POST /whip|whep/ROOM
                home = await placement.place(room)
                worker = await placement.spill(room, home) if request.path.startswith("/whep/") else home
            else:
                worker = home = await placement.locate(room)
                spilled = SPILLED_RESOURCE.fullmatch(resource)
                if spilled is not None and isinstance(worker, WorkerProcess):
                    index = int(spilled["worker"])
                    worker = front.workers[index] if index < len(front.workers) else None
                    path = path.replace(f"/{resource}", f"/{spilled['resource']}", 1)
        except SignalingError as exc:
            raise web.HTTPServiceUnavailable(text=f"{exc.message}\n") from None
        if worker is None or (isinstance(worker, WorkerProcess) and not worker.alive):
            raise web.HTTPNotFound(text="no such WHIP/WHEP session\n")
        headers = {h: request.headers[h] for h in ("Content-Type", "Authorization", "If-Match") if h in request.headers}
        headers.update(placement.upstream_headers(worker))
        async with front.http.request(request.method, worker.http_url + path, headers=headers, data=await request.read()) as upstream:
            body = await upstream.read()
            response = web.Response(status=upstream.status, body=body)
            for name in RELAYED_HTTP_HEADERS:
                for value in upstream.headers.getall(name, ()):
                    if name == "Location" and resource is None and worker is not home:
                        value = f"{value}-w{worker.index}"
                    response.headers.add(name, value)
            return response

    async def endpoint_options_handler(request: web.Request) -> web.Response:
        return endpoint_options(endpoint_ice_servers(front.config))

    async def metrics(request: web.Request) -> web.Response:
        check_metrics_access(front.auth, request)
        return web.Response(body=await front.metrics_text(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    close_websockets_on_shutdown(app)
    add_page_routes(app, websocket)
    app.router.add_get("/ws", websocket)
    app.router.add_get("/metrics", metrics)
    add_cors(app)
    for kind in ("whip", "whep"):
        app.router.add_post(f"/{kind}/{{room}}", http_relay)
        app.router.add_route("OPTIONS", f"/{kind}/{{room}}", endpoint_options_handler)
        app.router.add_route("*", f"/{kind}/{{room}}/{{resource}}", http_relay)
    return app


class RunningFront:
    """A started multi-worker server: the front listener and its worker processes."""

    def __init__(self, front: Front, runner: web.AppRunner, host: str, port: int) -> None:
        self.front = front
        self.runner = runner
        self.host = host
        self.port = port

    @property
    def url(self) -> str:
        return f"ws://{url_host(self.host)}:{self.port}"

    @property
    def rtc_ports(self) -> list[int]:
        return [w.rtc_port for w in self.front.workers]

    async def close(self) -> None:
        """Stop the listener and the workers at once (each bounded in time: SIGTERM ends within 2 s)."""
        await asyncio.gather(self.runner.cleanup(), *(w.stop() for w in self.front.workers))
        await self.front.close()


async def start_front(
    config: ServerConfig,
    count: int,
    log_level: str,
    own_session: bool = False,
    make_front: Callable[[ServerConfig, list[WorkerProcess]], Front] = Front,
) -> RunningFront:
    """Start `count` workers and the public listener in front of them (own_session: see start_workers;
    make_front: the placement, e.g. a cluster node's)."""
    config = dataclasses.replace(config, internal_token=secrets.token_urlsafe(32))
    workers = await start_workers(config, count, log_level, own_session)
    try:
        front = make_front(config, workers)
        await front.start()
    except BaseException:
        await asyncio.gather(*(w.stop() for w in workers), return_exceptions=True)
        raise
    runner = web.AppRunner(build_front_app(front), handle_signals=False, access_log=None, shutdown_timeout=CLOSE_TIMEOUT)
    await runner.setup()
    try:
        await web_site(runner, config.host, config.port).start()
    except OSError:
        await runner.cleanup()
        await front.close()
        await asyncio.gather(*(w.stop() for w in workers))
        raise
    return RunningFront(front, runner, config.host, runner.addresses[0][1])
