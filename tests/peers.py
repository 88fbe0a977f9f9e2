"""Test participants built on aiortc (an independent WebRTC stack) and a UDP relay that injects loss or delay."""

from __future__ import annotations

import asyncio
import random
import re
from dataclasses import dataclass, field

from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.contrib.media import MediaPlayer
from aiortc.mediastreams import MediaStreamError

from sfuctl.bots.impairment import ImpairmentConfig, Link, LinkModel
from sfuctl.client.signaling import SignalingClient


@dataclass
class ReceivedTrack:
    """Frames an aiortc subscriber decoded from one consumer."""

    kind: str
    mid: str
    frames: int = 0
    first_frame_at: float | None = None
    sizes: set = field(default_factory=set)


class AiortcPeer:
    """Joins a room, publishes from a media file (aiortc encodes, so it honours PLI), subscribes and decodes."""

    def __init__(self, url: str, room: str, name: str) -> None:
        self.url = url
        self.room = room
        self.name = name
        self.signaling: SignalingClient | None = None
        self.joined: dict = {}
        self.publish_pc: RTCPeerConnection | None = None
        self.subscribe_pc: RTCPeerConnection | None = None
        self.player: MediaPlayer | None = None
        self.received: dict[str, ReceivedTrack] = {}
        self.consumers: list[dict] = []
        self.relay: UdpRelay | None = None
        self._tasks: list[asyncio.Task] = []

    async def join(self) -> dict:
        self.signaling = await SignalingClient.connect(self.url)
        self.joined = await self.signaling.request("join", room=self.room, name=self.name)
        return self.joined

    async def publish(self, media_path: str, audio_path: str | None = None, rewrite_offer=None) -> list[dict]:
        """Publish video (and audio) from files; `rewrite_offer(sdp) -> sdp` edits the offer the server gets."""
        pc = self.publish_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.player = MediaPlayer(media_path, loop=True)
        pc.addTrack(self.player.video)
        if audio_path is not None:
            self.audio_player = MediaPlayer(audio_path, loop=True)
            pc.addTrack(self.audio_player.audio)
        await pc.setLocalDescription(await pc.createOffer())
        sdp = pc.localDescription.sdp
        result = await self.signaling.request("publish", sdp=rewrite_offer(sdp) if rewrite_offer else sdp)
        await pc.setRemoteDescription(RTCSessionDescription(result["sdp"], "answer"))
        return result["producers"]

    async def subscribe(self, producers: list[dict], relay: UdpRelay | None = None) -> dict:
        pc = self.subscribe_pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        transceivers = [(pc.addTransceiver(p["kind"], direction="recvonly"), p) for p in producers]
        pc.on("track", self._on_track)
        await pc.setLocalDescription(await pc.createOffer())
        subscriptions = {t.mid: p["id"] for t, p in transceivers}
        result = await self.signaling.request("subscribe", sdp=pc.localDescription.sdp, subscriptions=subscriptions)
        answer = result["sdp"]
        if relay is not None:
            self.relay = relay
            answer = await relay.rewrite_answer(answer)
        await pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
        self.consumers = result["consumers"]
        return result

    def _on_track(self, track) -> None:
        transceiver = next(t for t in self.subscribe_pc.getTransceivers() if t.receiver.track is track)
        received = self.received[transceiver.mid] = ReceivedTrack(track.kind, transceiver.mid)
        self._tasks.append(asyncio.ensure_future(self._consume(track, received)))

    async def _consume(self, track, received: ReceivedTrack) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                frame = await track.recv()
                received.frames += 1
                if received.first_frame_at is None:
                    received.first_frame_at = loop.time()
                if track.kind == "video":
                    received.sizes.add((frame.width, frame.height))
        except MediaStreamError:
            pass

    def video(self) -> list[ReceivedTrack]:
        return [r for r in self.received.values() if r.kind == "video"]

    def audio(self) -> list[ReceivedTrack]:
        return [r for r in self.received.values() if r.kind == "audio"]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for pc in (self.publish_pc, self.subscribe_pc):
            if pc is not None:
                await pc.close()
        if self.signaling is not None:
            await self.signaling.close()
        if self.relay is not None:
            self.relay.close()


@dataclass
class SsrcCounts:
    """What the relay saw of one server-to-client RTP stream (sizes as on the wire, SRTP tag included)."""

    forwarded: int = 0
    forwarded_bytes: int = 0
    dropped: int = 0


class UdpRelay(asyncio.DatagramProtocol):
    """Sits between a client and the server's media port on 127.0.0.1; drops or delays server-to-client RTP.

    `delay` holds every datagram in both directions (so it adds 2 x delay to a round trip); `bandwidth_kbps`
    passes server-to-client datagrams through the bots' shaper (a token bucket with a 0.5 s drop-tail queue),
    `uplink_kbps` client-to-server ones through one of their own (`uplink` then counts them). `jitter` adds a
    further uniform 0..jitter delay to each server-to-client RTP packet, which may reorder them. With
    `periodic_loss`, each RTP stream loses exactly one packet in every round(1 / loss), at a seeded random place
    in each block, so the realised loss equals `loss` over any whole number of blocks.
    """

    def __init__(
        self,
        loss: float = 0.0,
        delay: float = 0.0,
        seed: int = 1,
        jitter: float = 0.0,
        periodic_loss: bool = False,
        bandwidth_kbps: float | None = None,
        uplink_kbps: float | None = None,
    ) -> None:
        self.loss = loss
        self.bandwidth_kbps = bandwidth_kbps
        self.uplink_kbps = uplink_kbps
        self._shaper: Link | None = None
        self.uplink: Link | None = None
        self.delay = delay
        self.jitter = jitter
        self.periodic_loss = periodic_loss
        self.random = random.Random(seed)
        self._jitter_random = random.Random(seed + 1)
        self._blocks: dict[int, list[int]] = {}  # ssrc -> [position in block, position to drop]
        self.dropped = 0
        self.forwarded = 0
        self.streams: dict[int, SsrcCounts] = {}
        self._server: tuple[str, int] | None = None
        self._client: tuple[str, int] | None = None
        self._udp: asyncio.DatagramTransport | None = None

    async def rewrite_answer(self, sdp: str) -> str:
        """Start the relay towards the answer's candidate and put the relay's address in its place."""
        match = re.search(r"a=candidate:\S+ 1 udp \d+ (\S+) (\d+) typ host", sdp)
        self._server = (match.group(1), int(match.group(2)))
        loop = asyncio.get_running_loop()
        self._udp, _ = await loop.create_datagram_endpoint(lambda: self, local_addr=("127.0.0.1", 0))
        if self.bandwidth_kbps is not None:
            model = LinkModel(ImpairmentConfig(bandwidth_kbps=self.bandwidth_kbps), seed="relay")
            self._shaper = Link(model, lambda data, addr: self._send(data, addr), loop)
        if self.uplink_kbps is not None:
            model = LinkModel(ImpairmentConfig(bandwidth_kbps=self.uplink_kbps), seed="relay-up")
            self.uplink = Link(model, lambda data, addr: self._send(data, addr), loop)
        port = self._udp.get_extra_info("sockname")[1]
        return sdp.replace(f"{self._server[0]} {self._server[1]} typ host", f"127.0.0.1 {port} typ host")

    async def start(self, media_address: str) -> str:
        """Start the relay towards `media_address` ("HOST PORT", as in a candidate); the relay's own, likewise."""
        relayed = await self.rewrite_answer(f"a=candidate:1 1 udp 1 {media_address} typ host")
        return relayed.split(" udp 1 ")[1].removesuffix(" typ host")

    def datagram_received(self, data: bytes, addr: tuple) -> None:
        delay = self.delay
        if addr == self._server:
            is_rtp = len(data) >= 12 and 128 <= data[0] <= 191 and not 192 <= data[1] <= 223
            counts = None
            if is_rtp:
                ssrc = int.from_bytes(data[8:12], "big")
                counts = self.streams.setdefault(ssrc, SsrcCounts())
                if self._drop(ssrc):
                    self.dropped += 1
                    counts.dropped += 1
                    return
            self.forwarded += 1
            if counts is not None:
                counts.forwarded += 1
                counts.forwarded_bytes += len(data)
                if self.jitter:
                    delay += self._jitter_random.uniform(0.0, self.jitter)
            target = self._client
        else:
            self._client = addr
            target = self._server
        if target is None:
            return
        if self._shaper is not None and target is self._client:  # the bots' shaper, server to client
            self._shaper.push(data, target)
            return
        if self.uplink is not None and target is self._server:
            self.uplink.push(data, target)
            return
        if delay:
            asyncio.get_running_loop().call_later(delay, self._send, data, target)
        else:
            self._udp.sendto(data, target)

    def _send(self, data: bytes, target: tuple) -> None:
        if not self._udp.is_closing():  # a held datagram may outlive the relay
            self._udp.sendto(data, target)

    def _drop(self, ssrc: int) -> bool:
        if not self.periodic_loss:
            return self.random.random() < self.loss
        size = round(1 / self.loss)
        block = self._blocks.setdefault(ssrc, [0, self.random.randrange(size)])
        drop = block[0] == block[1]
        block[0] += 1
        if block[0] == size:
            block[:] = [0, self.random.randrange(size)]
        return drop

    def close(self) -> None:
        for shaper in (self._shaper, self.uplink):
            if shaper is not None:
                shaper.close()
        if self._udp is not None:
            self._udp.close()
