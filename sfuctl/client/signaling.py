"""SignalingClient: the client end of docs/protocol.md over the websockets package."""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any, Callable

import websockets

from ..tokens import scrub


class SignalingError(Exception):
    """The server answered a request with an error (code and message as sent), or the connection is gone."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class SignalingClient:
    """Requests with ids and their responses, plus server notifications delivered in order."""

    def __init__(self, ws: Any, on_notification: Callable[[str, dict], None] | None = None) -> None:
        self._ws = ws
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self.notifications: asyncio.Queue[tuple[str, dict]] = asyncio.Queue()
        self.on_notification = on_notification
        self.closed = asyncio.Event()
        self._reader = asyncio.create_task(self._read(), name="signaling-reader")

    @classmethod
    async def connect(cls, url: str, timeout: float = 10.0, **kwargs: Any) -> SignalingClient:
        """Open the websocket; OSError/TimeoutError name the URL so the caller can say what to fix."""
        try:
            ws = await asyncio.wait_for(websockets.connect(url, max_size=4 * 1024 * 1024, open_timeout=timeout), timeout)
        except (OSError, asyncio.TimeoutError, websockets.InvalidURI, websockets.InvalidHandshake) as exc:
            raise ConnectionError(f"cannot reach the sfuctl server at {scrub(url)}: {scrub(str(exc)) or type(exc).__name__}") from None
        return cls(ws, **kwargs)

    async def request(self, method: str, timeout: float = 10.0, **params: Any) -> dict:
        """Send a request and wait for its response; raises SignalingError on an error reply."""
        if self.closed.is_set():
            raise SignalingError("closed", "the signaling connection is closed")
        request_id = next(self._ids)
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            await self._ws.send(json.dumps({"id": request_id, "method": method, "params": params}))
            return await asyncio.wait_for(future, timeout)
        finally:
            self._pending.pop(request_id, None)

    async def close(self) -> None:
        await self._ws.close()
        await asyncio.gather(self._reader, return_exceptions=True)

    async def _read(self) -> None:
        try:
            async for text in self._ws:
                message = json.loads(text)
                if "id" in message and ("ok" in message):
                    future = self._pending.get(message["id"])
                    if future is None or future.done():
                        continue
                    if message["ok"]:
                        future.set_result(message.get("result") or {})
                    else:
                        error = message.get("error", {})
                        future.set_exception(SignalingError(error.get("code", "error"), error.get("message", "")))
                elif "method" in message:
                    params = message.get("params", {})
                    if self.on_notification is not None:
                        self.on_notification(message["method"], params)
                    self.notifications.put_nowait((message["method"], params))
        except (websockets.ConnectionClosed, OSError):
            pass
        finally:
            self.closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(SignalingError("closed", "the signaling connection closed"))
