"""The serve port: websocket signaling, the web page, /metrics and WHIP/WHEP on one aiohttp listener."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from .config import ServerConfig
from .signaling import SignalingSession
from .worker import Worker

log = logging.getLogger(__name__)

WORKER_KEY = web.AppKey("worker", Worker)


async def websocket_handler(request: web.Request) -> web.StreamResponse:
    """One signaling session per websocket (GET / or /ws with Upgrade: websocket)."""
    worker = request.app[WORKER_KEY]
    # Frames above the protocol limit still reach the session so that it can answer 'too_large'.
    ws = web.WebSocketResponse(max_msg_size=4 * worker.config.max_message_bytes, heartbeat=20)
    await ws.prepare(request)
    session = SignalingSession(worker, ws.send_str, ws.close)
    try:
        async for message in ws:
            if message.type == WSMsgType.TEXT:
                session.handle(message.data)
            elif message.type == WSMsgType.BINARY:
                session.handle(message.data.decode("utf-8", errors="replace"))
    finally:
        await session.finish()
    return ws


async def index_handler(request: web.Request) -> web.StreamResponse:
    if request.headers.get("Upgrade", "").lower() == "websocket":
        return await websocket_handler(request)
    return web.Response(text="sfuctl SFU: connect a websocket here (docs/protocol.md)\n")


def build_app(worker: Worker) -> web.Application:
    app = web.Application()
    app[WORKER_KEY] = worker
    app.router.add_get("/", index_handler)
    app.router.add_get("/ws", websocket_handler)
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
        return f"ws://{self.host}:{self.port}"

    async def close(self) -> None:
        await self.worker.close()
        await self.runner.cleanup()


async def start_server(config: ServerConfig) -> RunningServer:
    """Start the worker and the HTTP/websocket listener; port 0 picks a free port."""
    worker = Worker(config)
    await worker.start()
    runner = web.AppRunner(build_app(worker), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError:
        await worker.close()
        await runner.cleanup()
        raise
    port = runner.addresses[0][1]
    return RunningServer(worker, runner, config.host, port)


async def serve(config: ServerConfig, stop: asyncio.Event) -> None:
    """Run until `stop` is set, then close every transport cleanly."""
    server = await start_server(config)
    log.info("signaling on %s, media on udp %s:%d", server.url, config.candidate_ip, server.worker.rtc_port)
    try:
        await stop.wait()
    finally:
        await server.close()
