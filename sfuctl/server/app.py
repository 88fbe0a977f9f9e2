"""The serve port: websocket signaling, the web page, /metrics and WHIP/WHEP on one aiohttp listener."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import WSCloseCode, WSMsgType, web

from .auth import Authenticator, origin_allowed
from .config import ServerConfig, url_host
from .listening import web_site
from .metrics import metrics_handler
from .pipes import add_internal_routes
from .signaling import SignalingSession
from .whip import HttpSessions, add_routes
from .worker import Worker

log = logging.getLogger(__name__)

WORKER_KEY = web.AppKey("worker", Worker)
HTTP_SESSIONS_KEY = web.AppKey("http_sessions", HttpSessions)
OPEN_SOCKETS_KEY = web.AppKey("open_sockets", dict)
AUTH_KEY = web.AppKey("auth", Authenticator)
WEB_DIR = Path(__file__).resolve().parent.parent / "web"  # the page served at / (docs/browser.md)
FORWARDED_FOR = "X-Forwarded-For"  # the front's header naming the participant's address (front.py)
LOOPBACK = ("127.0.0.1", "::1")  # the front connects to its workers from here
# Seconds a websocket close waits for the client's close frame, and shutdown for the handlers: together they
# keep SIGTERM under 2 s even when clients are slow or do not read.
CLOSE_TIMEOUT = 0.5


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """One signaling session per websocket (GET / or /ws with Upgrade: websocket)."""
    worker = request.app[WORKER_KEY]
    check_origin(request, worker.config)
    # Frames above the protocol limit still reach the session so that it can answer 'too_large'. No
    # permessage-deflate: its zlib state costs ~130 KB per peer, more than all of a peer's media state.
    ws = web.WebSocketResponse(
        max_msg_size=4 * worker.config.max_message_bytes, heartbeat=20, compress=False, timeout=CLOSE_TIMEOUT
    )
    await ws.prepare(request)
    # Behind the front of a multi-worker server (a loopback peer) the participant's address comes in a header.
    remote = request.headers.get(FORWARDED_FOR) if request.remote in LOOPBACK else None
    session = SignalingSession(
        worker,
        ws.send_str,
        lambda abort: close_websocket(ws, request, abort),
        request.app[AUTH_KEY],
        request.query.get("token"),
        remote=remote or request.remote,
    )
    request.app[OPEN_SOCKETS_KEY][ws] = request
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                session.handle(message.data)
            elif message.type == WSMsgType.BINARY:
                session.handle(message.data.decode("utf-8", errors="replace"))
    finally:
        request.app[OPEN_SOCKETS_KEY].pop(ws, None)
        await session.finish()
    return ws


def check_origin(request: web.Request, config: ServerConfig) -> None:
    """403 before the upgrade when a browser page from an origin not in --allowed-origin opens the websocket."""
    origin = request.headers.get("Origin")
    if not origin_allowed(origin, config.allowed_origins):
        raise web.HTTPForbidden(text=f"origin {origin} is not allowed (--allowed-origin)\n")


async def close_websocket(
    ws: web.WebSocketResponse, request: web.Request, abort: bool = False, code: int = WSCloseCode.OK, message: bytes = b""
) -> None:
    """Close a websocket within CLOSE_TIMEOUT; `abort` (or a client that does not read) drops the connection."""
    if not abort:
        try:
            await asyncio.wait_for(ws.close(code=code, message=message), CLOSE_TIMEOUT)
            return
        except asyncio.TimeoutError:
            pass
    if request.transport is not None:
        request.transport.abort()


def close_websockets_on_shutdown(app: web.Application) -> None:
    """Shutdown closes open websockets (handlers map theirs to their request in app[OPEN_SOCKETS_KEY]) instead of
    waiting for them."""
    app[OPEN_SOCKETS_KEY] = {}

    async def close_all(app: web.Application) -> None:
        sockets = list(app[OPEN_SOCKETS_KEY].items())
        await asyncio.gather(
            *(close_websocket(ws, request, code=WSCloseCode.GOING_AWAY, message=b"server shutdown") for ws, request in sockets)
        )

    app.on_shutdown.append(close_all)


def add_page_routes(app: web.Application, websocket: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
    """GET / serves the web page (docs/browser.md), or `websocket` on an upgrade; /static/ the page's files."""

    async def index(request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await websocket(request)
        return web.FileResponse(WEB_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    app.router.add_get("/", index)
    app.router.add_static("/static/", WEB_DIR)


def build_app(worker: Worker) -> web.Application:
    app = web.Application()
    app[WORKER_KEY] = worker
    auth = app[AUTH_KEY] = Authenticator(worker.config)
    close_websockets_on_shutdown(app)
    add_page_routes(app, websocket_handler)
    app.router.add_get("/ws", websocket_handler)
    app.router.add_get("/metrics", metrics_handler(worker, auth))
    sessions = app[HTTP_SESSIONS_KEY] = HttpSessions(worker, auth)
    add_routes(app, sessions)
    add_internal_routes(app, worker)
    return app


@dataclass
class RunningServer:
    """A started server: its worker, its URLs and how to stop it."""

    worker: Worker
    runner: web.AppRunner
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"ws://{url_host(self.host)}:{self.port}"

    async def close(self) -> None:
        await self.worker.close()
        await self.runner.cleanup()


async def start_server(config: ServerConfig, http_host: str | None = None, index: int = 0) -> RunningServer:
    """Start the worker and the HTTP/websocket listener; port 0 picks a free port.

    `http_host` binds signaling elsewhere than media (worker processes listen for the front on 127.0.0.1);
    `index`: the worker's among those of a multi-worker server.
    """
    worker = Worker(config, index)
    await worker.start()
    runner = web.AppRunner(build_app(worker), handle_signals=False, access_log=None, shutdown_timeout=CLOSE_TIMEOUT)
    await runner.setup()
    try:
        await web_site(runner, http_host or config.host, config.port).start()
    except OSError:
        await worker.close()
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    return RunningServer(worker, runner, http_host or config.host, port)


async def serve(config: ServerConfig, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then close every transport cleanly."""
    server = await start_server(config)
    log.info("signaling on %s, media on %s", server.url, " ".join(server.worker.host_candidates.lines()))
    try:
        await stop.wait()
    finally:
        await server.close()
