"""Headless Chromium for tests: the system binary driven by Playwright, on a thread with its own event loop.

Playwright objects belong to the event loop that created them, while each pytest-asyncio test (and its
`server` fixture) runs in a fresh loop; so one browser per test module lives on a thread of its own and
tests await its calls from their loop.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = (
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",  # containers often have a small /dev/shm
    # Nothing but 127.0.0.1 resolves, so the browser cannot reach other hosts even outside a network namespace.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1 , EXCLUDE ::1",
)
LAUNCH_TIMEOUT_S = 60.0


def unavailable_reason() -> str | None:
    """Why browser tests cannot run here (None when they can)."""
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing (Debian: apt-get install chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "Playwright for Python is missing (pip install playwright; the browser download is not needed)"
    return None


class Chromium:
    """One headless Chromium with a fresh profile; `open` gives pages that tests drive from any event loop.

    `extra_flags` go after CHROMIUM_FLAGS, e.g. `--use-file-for-fake-video-capture=PATH` for another camera.
    """

    def __init__(self, extra_flags: tuple[str, ...] = ()) -> None:
        self._flags = CHROMIUM_FLAGS + extra_flags
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="chromium", daemon=True)
        self._profile = tempfile.mkdtemp(prefix="sfuctl-chromium-")
        self._playwright: Any = None
        self._context: Any = None

    def start(self) -> None:
        """Launch the browser (blocks until it is up)."""
        self._thread.start()
        self._submit(self._launch()).result(LAUNCH_TIMEOUT_S)

    def stop(self) -> None:
        """Close the browser and its thread, and remove the profile."""
        try:
            self._submit(self._shutdown()).result(LAUNCH_TIMEOUT_S)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(LAUNCH_TIMEOUT_S)
            self._loop.close()
            shutil.rmtree(self._profile, ignore_errors=True)

    async def call(self, function: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        """Run a Playwright coroutine function on the browser's loop and await its result from this one."""
        return await asyncio.wrap_future(self._submit(function(*args, **kwargs)))

    async def open(
        self, url: str, server_messages: Callable[[str], str] | None = None, init_script: str | None = None
    ) -> BrowserPage:
        """A new page at `url`; `server_messages` (if given) rewrites each websocket frame the page receives, and
        `init_script` (if given) runs in the page before its own scripts."""
        return await self.call(self._open, url, server_messages, init_script)

    def _submit(self, coroutine: Awaitable[T]) -> Future:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop)

    async def _launch(self) -> None:
        from playwright.async_api import async_playwright

        self._playwright = await async_playwright().start()
        self._context = await self._playwright.chromium.launch_persistent_context(
            self._profile,
            executable_path=CHROMIUM,
            headless=True,
            args=list(self._flags),
            viewport={"width": 1280, "height": 720},
        )

    async def _open(
        self, url: str, server_messages: Callable[[str], str] | None, init_script: str | None
    ) -> BrowserPage:
        page = await self._context.new_page()
        opened = BrowserPage(self, page)
        if init_script is not None:
            await page.add_init_script(init_script)
        if server_messages is not None:
            await page.route_web_socket("**/ws", _rewriting_route(server_messages))
        await page.goto(url)
        return opened

    async def _shutdown(self) -> None:
        if self._context is not None:
            await self._context.close()
        if self._playwright is not None:
            await self._playwright.stop()


class BrowserPage:
    """A page of the shared browser; JavaScript errors and console output are kept for assertions and failures."""

    def __init__(self, browser: Chromium, page: Any) -> None:
        self.browser = browser
        self.page = page
        self.console: list[str] = []
        self.errors: list[str] = []
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.errors.append(str(error)))

    async def call(self, function: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
        return await self.browser.call(function, *args, **kwargs)

    async def evaluate(self, expression: str, arg: Any = None) -> Any:
        return await self.call(self.page.evaluate, expression, arg)

    async def wait_until(self, expression: str, timeout: float) -> None:
        """Wait until the JavaScript `expression` is truthy (Playwright raises TimeoutError otherwise)."""
        await self.call(self.page.wait_for_function, expression, timeout=timeout * 1000, polling=200)

    async def click(self, selector: str) -> None:
        await self.call(self.page.click, selector)

    async def screenshot(self, path: str) -> None:
        await self.call(self.page.screenshot, path=path)

    async def close(self) -> None:
        await self.call(self.page.close)


def _rewriting_route(rewrite: Callable[[str], str]) -> Callable[[Any], None]:
    """A websocket route that passes the page's frames through and rewrites the server's (in order)."""

    def handle(route: Any) -> None:
        server = route.connect_to_server()
        server.on_message(lambda message: route.send(rewrite(message) if isinstance(message, str) else message))

    return handle
