"""Chromium publishes simulcast through the page; an aiortc subscriber decodes a layer of it; another page gets a
lower layer for a small tile than for a big one (frame width from its own getStats)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sfuctl.client.signaling import SignalingClient

from .browser import BrowserPage, Chromium, unavailable_reason
from .peers import AiortcPeer
from .test_browser import assert_clean, page_url, wait_for_async, wait_for_streams
from .test_simulcast import producer_of, until

# Its remote tile, resized by the test as a user would resize the window.
REMOTE_TILE = "document.querySelector('#tiles .tile:not(.local)')"


def write_bars_y4m(path: Path, width: int = 1280, height: int = 720, fps: int = 25, frames: int = 25) -> None:
    """Vertical bars that move 8 pixels a frame: a 720p camera that libwebrtc simulcasts (it needs 720 lines for
    three encodings) and encodes cheaply."""
    chroma = bytes([128]) * (2 * (width // 2) * (height // 2))
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode())
        for frame in range(frames):
            row = bytes(((x + 8 * frame) // 40 % 2) * 160 + 40 for x in range(width))
            out.write(b"FRAME\n" + row * height + chroma)


@pytest.fixture(scope="module")
def hd_chromium(tmp_path_factory: pytest.TempPathFactory):
    """A Chromium whose fake camera is 1280x720."""
    reason = unavailable_reason()
    if reason is not None:
        pytest.skip(reason)
    source = tmp_path_factory.mktemp("camera") / "bars-720p.y4m"
    write_bars_y4m(source)
    browser = Chromium(extra_flags=(f"--use-file-for-fake-video-capture={source}",))
    browser.start()
    yield browser
    browser.stop()


async def received_width(page: BrowserPage) -> int:
    streams = await page.evaluate("sfuctl.stats()")
    return next((s["frameWidth"] for s in streams if s["kind"] == "video"), 0)


async def test_chromium_publishes_simulcast_and_a_page_gets_the_layer_its_tile_fits(server, hd_chromium) -> None:
    camera = await hd_chromium.open(page_url(server, "simulcast-page", "camera"))
    watcher = await hd_chromium.open(page_url(server, "simulcast-page", "watcher"))
    client = await SignalingClient.connect(server.url)
    bot = AiortcPeer(server.url, "simulcast-page", "bot")

    async def sent_layers() -> list[dict]:
        snapshot = await client.request("getStats", room="simulcast-page")
        producer = next((p for r in snapshot["rooms"] for p in r["producers"] if p["kind"] == "video"), None)
        return [] if producer is None else [layer for layer in producer.get("layers", []) if layer["packets"] > 0]

    try:
        # The page offers three encodings; libwebrtc sends those its estimate allows (at least two at 720p).
        assert await wait_for_async(lambda: _at_least(sent_layers, 2), 30), await sent_layers()
        layers = await sent_layers()
        assert [layer["rid"] for layer in layers][:2] == ["q", "h"], layers

        # A bot subscriber receives one layer and decodes it.
        joined = await bot.join()
        producer = await producer_of(bot.signaling, joined)
        assert producer["spatialLayers"] == 3
        await bot.subscribe([producer])
        await until(lambda: any(track.frames >= 10 for track in bot.video()), 20)
        widths = {width for track in bot.video() for width, _ in track.sizes}
        assert widths and widths <= {320, 640, 1280}, widths

        # The watching page: a small tile gets the quarter layer, a big one a larger layer.
        await wait_for_streams(watcher, lambda streams: any(s["kind"] == "video" and s["framesDecoded"] > 0 for s in streams), 20)
        await watcher.evaluate(f"{REMOTE_TILE}.style.width = '120px'")
        assert await wait_for_async(lambda: _width_is(watcher, lambda w: w == 320), 20), await watcher.evaluate("sfuctl.stats()")
        await watcher.evaluate(f"{REMOTE_TILE}.style.width = '1200px'")
        # Up only once a probe shows the estimate has room (probes back off to 8 s apart when one falls short, as
        # they do while Chromium's encoding keeps 2 cores busy): a bound of several probes, not a timing goal.
        assert await wait_for_async(lambda: _width_is(watcher, lambda w: w > 320), 40), await watcher.evaluate("sfuctl.stats()")
        streams = await watcher.evaluate("sfuctl.stats()")
        video = next(s for s in streams if s["kind"] == "video")
        assert video["spatialLayers"] == 3 and video["layer"] in (1, 2), video
        for page in (camera, watcher):
            await assert_clean(page)
    finally:
        await bot.close()
        await client.close()
        await watcher.close()
        await camera.close()


async def _at_least(layers, count: int) -> bool:
    return len(await layers()) >= count


async def _width_is(page: BrowserPage, check) -> bool:
    return check(await received_width(page))
