"""A lean publisher for bench/forwarding.py: pre-packetized VP8 + Opus paced in real time, keyframe on PLI/FIR;
with `layers`, the video is simulcast (one stream per encoding, MID and RID on every packet).

Built on sfuctl.client (signaling, offer) and a controlling Connection; no encoder, no aiortc plumbing.
"""

from __future__ import annotations

import asyncio
import os
import struct

from sfuctl.client.offer import SEND_CODECS, OfferSection, connection_offer, parse_answer, simulcast_rids
from sfuctl.client.signaling import SignalingClient
from sfuctl.encoded import EncodedTrack, FrameCursor
from sfuctl.rtc import rtcp
from sfuctl.rtc.connection import Connection, open_client_connection

_pack_header = struct.Struct("!BBHII").pack_into


class PacedStream:
    """One track sent frame by frame at the track's own pace; marker on the last packet of a video frame."""

    def __init__(
        self, track: EncodedTrack, ssrc: int, payload_type: int, connection: Connection, extensions: bytes = b""
    ) -> None:
        self.track = track
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.cursor = FrameCursor(track)
        self.packets = 0
        self.keyframe_requests = 0
        self._send = connection.send_rtp
        self._header = bytearray(12) + extensions
        self._first = 0x90 if extensions else 0x80
        self._seq = int.from_bytes(os.urandom(2), "big")
        self._video = track.kind == "video"
        self._handle: asyncio.TimerHandle | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._handle is None:
            self._next(loop, loop.time())

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self.cursor.request_keyframe()

    def _next(self, loop: asyncio.AbstractEventLoop, due: float) -> None:
        timestamp, frame, seconds = self.cursor.next()
        header, send, seq = self._header, self._send, self._seq
        last = len(frame.payloads) - 1 if self._video else -1
        for index, payload in enumerate(frame.payloads):
            seq = (seq + 1) & 0xFFFF
            second = self.payload_type | 0x80 if index == last else self.payload_type
            _pack_header(header, 0, self._first, second, seq, timestamp, self.ssrc)
            send(b"".join((header, payload)))
        self._seq = seq
        self.packets += len(frame.payloads)
        due += seconds
        self._handle = loop.call_at(due, self._next, loop, due)


class LeanPublisher:
    """Joins the room and publishes one video and one audio track from memory."""

    def __init__(
        self, url: str, room: str, name: str, tracks: list[EncodedTrack], layers: list[EncodedTrack] | None = None
    ) -> None:
        self.url = url
        self.room = room
        self.name = name
        self.tracks = tracks
        self.layers = layers or []
        self.streams: list[PacedStream] = []
        self.signaling: SignalingClient | None = None
        self.connection: Connection | None = None
        self.udp: asyncio.DatagramTransport | None = None
        self._by_ssrc: dict[int, PacedStream] = {}
        self._connected: asyncio.Future[None] | None = None

    @property
    def packets(self) -> int:
        return sum(s.packets for s in self.streams)

    async def start(self) -> list[dict]:
        """Publish, wait for ICE/DTLS, start pacing; returns the server's producers."""
        loop = asyncio.get_running_loop()
        self._connected = loop.create_future()
        self.signaling = await SignalingClient.connect(self.url)
        await self.signaling.request("join", room=self.room, name=self.name)
        self.connection, self.udp = await open_client_connection(
            on_rtp=lambda data: None, on_rtcp=self._on_rtcp, on_state=self._on_state
        )
        sections = []
        for index, track in enumerate(self.tracks):
            simulcast = track.kind == "video" and bool(self.layers)
            sections.append(
                OfferSection(
                    mid=str(index),
                    kind=track.kind,
                    direction="sendonly",
                    codecs=(SEND_CODECS[track.codec],),
                    ssrc=None if simulcast else int.from_bytes(os.urandom(4), "big") or 1,
                    cname=self.name,
                    msid=(self.name, f"{self.name}-{track.kind}"),
                    rids=simulcast_rids(len(self.layers)) if simulcast else (),
                )
            )
        offer = connection_offer(self.connection, sections, session_id=int.from_bytes(os.urandom(7), "big"))
        result = await self.signaling.request("publish", sdp=offer)
        answer = parse_answer(result["sdp"])
        for section, track in zip(sections, self.tracks):
            media = answer.media[section.mid]
            if media.codec is None:
                raise RuntimeError(f"the server rejected the {track.kind} track")
            encodings = [(track, section.ssrc, b"")]
            if section.rids:
                encodings = [
                    (layer, int.from_bytes(os.urandom(4), "big") or 1, media.encoding_extensions(rid))
                    for layer, rid in zip(self.layers, section.rids)
                ]
            for encoding, ssrc, extensions in encodings:
                assert ssrc is not None
                stream = PacedStream(encoding, ssrc, media.codec.payload_type, self.connection, extensions)
                self.streams.append(stream)
                self._by_ssrc[ssrc] = stream
        self.connection.set_remote(answer.ice, answer.fingerprints, answer.dtls_role, answer.candidates)  # type: ignore[arg-type]
        await asyncio.wait_for(self._connected, 30)
        for stream in self.streams:
            stream.start(loop)
        return result["producers"]

    def _on_state(self, state: str) -> None:
        settle_connected(self._connected, state, "send transport")

    def _on_rtcp(self, data: bytes) -> None:
        try:
            packets = rtcp.parse_compound(data)
        except ValueError:
            return
        for packet in packets:
            if isinstance(packet, rtcp.Pli):
                stream = self._by_ssrc.get(packet.media_ssrc)
                if stream is not None:
                    stream.request_keyframe()
            elif isinstance(packet, rtcp.Fir):
                for ssrc, _ in packet.entries:
                    stream = self._by_ssrc.get(ssrc)
                    if stream is not None:
                        stream.request_keyframe()

    def pause(self) -> None:
        """Stop sending (the bench quiesces the path to read exact counters)."""
        for stream in self.streams:
            stream.stop()

    def resume(self) -> None:
        loop = asyncio.get_running_loop()
        for stream in self.streams:
            stream.start(loop)

    async def close(self) -> None:
        self.pause()
        if self.connection is not None:
            self.connection.close()
        if self.udp is not None:
            self.udp.close()
        if self.signaling is not None:
            await self.signaling.close()


def settle_connected(future: asyncio.Future | None, state: str, what: str) -> None:
    """Resolve a 'wait until connected' future from a Connection state change."""
    if future is None or future.done():
        return
    if state == "connected":
        future.set_result(None)
    elif state in ("failed", "closed"):
        future.set_exception(RuntimeError(f"{what} {state}"))
