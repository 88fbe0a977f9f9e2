"""Nothing a client sends may cost the server more than a fixed multiple of it: bad frames, quotas, shutdown."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import websockets
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer

from sfuctl.client.signaling import SignalingClient

from .test_forwarding import media, wait_for  # noqa: F401 (media is a fixture)


async def exchange(ws, text: str) -> dict:
    await ws.send(text)
    return json.loads(await ws.recv())


async def test_deep_json_is_refused_before_parsing_and_the_session_goes_on(server):
    depth = server.worker.config.quotas.json_depth
    async with websockets.connect(server.url, max_size=None) as ws:
        for nesting in (depth + 1, 1000, 100_000):
            text = '{"id": 7, "method": "ping", "params": {"x": ' + "[" * nesting + "]" * nesting + "}}"
            reply = await exchange(ws, text)
            assert reply["id"] == 7 and reply["error"]["code"] == "too_deep", reply
        # Brackets inside strings do not count; a request at the limit is served.
        reply = await exchange(ws, json.dumps({"id": 8, "method": "ping", "params": {"s": "[" * 5000}}))
        assert reply == {"id": 8, "ok": True, "result": {"pong": True}}
        joined = await exchange(ws, json.dumps({"id": 9, "method": "join", "params": {"room": "deep"}}))
        assert joined["ok"], joined
    assert server.worker.refusals.by_reason["too_deep"] == 3


async def test_too_large_and_bad_json_replies_carry_the_request_id(server):
    limit = server.worker.config.max_message_bytes
    async with websockets.connect(server.url, max_size=None) as ws:
        big = json.dumps({"id": "big-1", "method": "publish", "params": {"sdp": "x" * limit}})
        assert await exchange(ws, big) == {
            "id": "big-1",
            "ok": False,
            "error": {"code": "too_large", "message": f"message of {len(big)} bytes exceeds the limit of {limit}"},
        }
        nested_id = json.dumps({"params": {"id": 5, "sdp": "y" * limit}, "method": "publish", "id": 6})
        assert (await exchange(ws, nested_id))["id"] is None  # only the top-level id counts, in the first bytes
        reply = await exchange(ws, '{"id": 12, "method": "ping", "params": {')
        assert reply["id"] == 12 and reply["error"]["code"] == "bad_json"
        assert (await exchange(ws, json.dumps({"id": 13, "method": "ping"})))["ok"]


def offer_with_md5_fingerprint(sdp: str) -> str:
    md5 = ":".join(["AB"] * 16)
    return re.sub(r"a=fingerprint:\S+ \S+", f"a=fingerprint:md5 {md5}", sdp)


async def test_md5_only_fingerprint_is_refused_and_the_next_valid_publish_connects(server, media):
    client = await SignalingClient.connect(server.url)
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    player = MediaPlayer(str(media.video), loop=True)
    try:
        await client.request("join", room="md5")
        pc.addTrack(player.video)
        await pc.setLocalDescription(await pc.createOffer())
        with pytest.raises(Exception) as refused:
            await client.request("publish", sdp=offer_with_md5_fingerprint(pc.localDescription.sdp))
        assert refused.value.code == "bad_request" and "fingerprint" in refused.value.message
        assert not server.worker.transports  # nothing was created
        result = await client.request("publish", sdp=pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(result["sdp"], "answer"))
        producer = server.worker.routers["md5"].producers[result["producers"][0]["id"]]
        assert await wait_for(lambda: producer.meter.packets > 20, 15)
    finally:
        await pc.close()
        await client.close()


def websocket_frame(text: str) -> bytes:
    """A masked text frame (zero mask key), as a client sends it."""
    payload = text.encode()
    size = len(payload)
    length = bytes([0x80 | size]) if size < 126 else bytes([0x80 | 126]) + size.to_bytes(2, "big") if size < 65536 else bytes([0x80 | 127]) + size.to_bytes(8, "big")
    return b"\x81" + length + b"\0\0\0\0" + payload


async def raw_websocket_that_never_reads(url: str, reply_bytes: int) -> socket.socket:
    """A websocket client that makes the server queue `reply_bytes` of replies, and then neither reads them nor
    answers the server's close."""
    host, port = re.match(r"ws://([^:/]+):(\d+)", url).groups()
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    method = "m" * 100_000  # the 'unknown_method' reply names it
    for index in range(reply_bytes // len(method)):
        sock.sendall(websocket_frame(json.dumps({"id": index, "method": method})))
    return sock


# Not a performance figure: a hang guard. Before the fix a client that did not read its replies held
# shutdown for ever; the bound is 2 s (bench/abuse.py).
SHUTDOWN_GUARD = 8.0


@pytest.mark.parametrize("workers", [1, 2])
async def test_sigterm_stops_the_server_while_a_client_neither_reads_nor_closes(workers: int, media):
    process = subprocess.Popen(
        [sys.executable, "-m", "sfuctl.cli", "serve", "--port", "0", "--rtc-port-range", "0", "--workers", str(workers)],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = await asyncio.get_running_loop().run_in_executor(None, process.stderr.readline)
        url = re.search(r"signaling (ws://\S+)", line).group(1)
        client = await SignalingClient.connect(url)
        await client.request("join", room="stop")
        stuck = await raw_websocket_that_never_reads(url, 8_000_000)
        await client.request("ping")
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        code = await asyncio.get_running_loop().run_in_executor(None, lambda: process.wait(SHUTDOWN_GUARD))
        assert code == 0, f"exit code {code} after {time.monotonic() - started:.1f} s"
        stuck.close()
        await client.close()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
