"""SimulcastProducer: one incoming video track sent as 1..3 encodings (simulcast), lowest first.

Each encoding is received by a plain Producer of its own (its SSRC, reception stats, NACK, retransmission
buffer, keyframe requests, SR): everything per SSRC is reused as it is. What this class adds is the fan-out:
each encoding's packets go to every simulcast consumer with the encoding's index, and the VP8 descriptor is
read once per packet for all of them. The router and peers see one producer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..rtc.rtp import is_keyframe
from ..rtc.sdp import Codec
from ..rtc.simulcast import LayerBinding, SimulcastOffer
from ..rtc.vp8 import keyframe_size, parse_descriptor
from .events import CloseListeners
from .layer_demand import LayerDemand
from .producer import PRODUCER_CLOSED, Producer, PublishedBy
from .quality import QualityMonitor

if TYPE_CHECKING:
    from .peer import Peer
    from .simulcast_consumer import SimulcastConsumer
    from .transport import Transport


class LayerTap:
    """Stands as the one consumer of an encoding's Producer and fans its packets out with the encoding index.

    It never waits for a keyframe itself (its consumers do, through the encoding's `consumer_waiting`) and closes
    only with its encoding.
    """

    __slots__ = ("index", "owner", "layer", "vp8", "width", "height", "on_close", "listeners")

    waiting_keyframe = False

    def __init__(self, index: int, owner: SimulcastProducer, layer: Producer) -> None:
        self.index = index
        self.owner = owner
        self.layer = layer
        self.vp8 = layer.codec.name == "VP8"
        self.width: int | None = None
        self.height: int | None = None
        self.on_close: CloseListeners[LayerTap] = CloseListeners()  # its encoding's Producer listens
        # The consumers that forward this encoding or wait for its keyframe: the only ones its packets go to.
        # Replaced, never changed in place, so that a packet being fanned out keeps the list it started with.
        self.listeners: list[SimulcastConsumer] = []

    def listen(self, consumer: SimulcastConsumer) -> None:
        if consumer not in self.listeners:
            self.listeners = [*self.listeners, consumer]

    def unlisten(self, consumer: SimulcastConsumer) -> None:
        if consumer in self.listeners:
            self.listeners = [c for c in self.listeners if c is not consumer]

    def skip(self) -> None:
        """A packet of this encoding not forwarded (padding only): the consumers forwarding it close the gap."""
        for consumer in self.listeners:
            consumer.switch.skip(self.index)

    def resync(self) -> None:
        """Nothing to renumber here: the SimulcastProducer resyncs its consumers when it resumes."""

    def close(self, reason: str) -> None:
        self.on_close.emit(self)

    def forward(
        self, first_byte: int, marker: int, sequence: int, timestamp: int, payload: bytes, keyframe: bool, now: float
    ) -> None:
        """Hot path: one packet of this encoding, to every simulcast consumer."""
        descriptor = None
        counted = keyframe  # the encoding's Producer counted it already
        if self.vp8:
            try:
                descriptor = parse_descriptor(payload)
            except ValueError:
                self.layer.invalid_packets += 1
                return
            keyframe = descriptor.keyframe
        elif not keyframe and self.layer.waiting_consumers:
            keyframe = is_keyframe(self.layer.codec.name, payload)
        if keyframe:
            if self.vp8:
                size = keyframe_size(payload)
                if size is not None:
                    self.width, self.height = size
            if not counted:
                self.layer.keyframes += 1
        index = self.index
        # the descriptor and the rest of the payload, sliced once for every consumer that rewrites the descriptor
        if descriptor is not None:
            head, tail = payload[: descriptor.size], payload[descriptor.size :]
        else:
            head, tail = b"", payload
        descriptors: dict[int, bytearray] = {}
        for consumer in self.listeners:
            consumer.forward_layer(
                index, first_byte, marker, sequence, timestamp, payload, keyframe, descriptor, head, tail, descriptors, now
            )


class SummedMeter:
    """The packets, bytes and bitrate of all encodings together (read-only: each encoding meters itself)."""

    __slots__ = ("_layers",)

    def __init__(self, layers: list[Producer]) -> None:
        self._layers = layers

    @property
    def packets(self) -> int:
        return sum(layer.meter.packets for layer in self._layers)

    @property
    def bytes(self) -> int:
        return sum(layer.meter.bytes for layer in self._layers)

    @property
    def bitrate_bps(self) -> float:
        return sum(layer.meter.bitrate_bps for layer in self._layers)


class SummedFeedback:
    """The feedback counts of all encodings together (read-only: each encoding's ReceiveStream counts)."""

    __slots__ = ("_layers",)

    def __init__(self, layers: list[Producer]) -> None:
        self._layers = layers

    @property
    def nacks_sent(self) -> int:
        return sum(layer.rtcp.nacks_sent for layer in self._layers)

    @property
    def plis_sent(self) -> int:
        return sum(layer.rtcp.plis_sent for layer in self._layers)

    @property
    def firs_sent(self) -> int:
        return sum(layer.rtcp.firs_sent for layer in self._layers)


class SimulcastProducer(PublishedBy):
    """A video producer with 1..3 encodings; `layers[i]` receives encoding i (0 is the lowest)."""

    def __init__(
        self,
        *,
        id: str,
        peer: Peer,
        transport: Transport,
        codec: Codec,
        mid: str,
        simulcast: SimulcastOffer,
        rid_extension_id: int | None,
    ) -> None:
        self.id = id
        self.peer = peer
        self.transport = transport
        self.kind = "video"
        self.codec = codec
        self.mid = mid
        self.paused = False
        self.closed = False
        self.consumers: list[SimulcastConsumer] = []
        self.on_close: CloseListeners[SimulcastProducer] = CloseListeners()  # its transport, peer and router listen
        self.audio_level_id: int | None = None  # video: no RFC 6464 level
        self.rid_extension_id = rid_extension_id
        self.binding = LayerBinding(simulcast.rids, simulcast.ssrcs)
        self.rids = simulcast.rids
        ssrcs = simulcast.ssrcs or (None,) * len(simulcast.rids)
        self.layers = [
            Producer(id=f"{id}/{i}", peer=peer, transport=transport, kind="video", codec=codec, ssrc=ssrc, mid=mid)
            for i, ssrc in enumerate(ssrcs)
        ]
        self.taps = [LayerTap(i, self, layer) for i, layer in enumerate(self.layers)]
        for layer, tap in zip(self.layers, self.taps):
            layer.add_consumer(tap)  # type: ignore[arg-type]  # a tap takes a consumer's forward()
        self.meter = SummedMeter(self.layers)
        self.rtcp = SummedFeedback(self.layers)
        self.rtx_buffer = None  # retransmissions come from each encoding's own buffer
        self.demand = LayerDemand(len(self.layers), self._tell_publisher)

    @property
    def ssrc(self) -> int | None:
        """The lowest encoding's SSRC (the others are in `layers`)."""
        return self.layers[0].ssrc

    @property
    def keyframes(self) -> int:
        return sum(layer.keyframes for layer in self.layers)

    @property
    def quality(self) -> QualityMonitor:
        """The best encoding's: a subscriber can get at least that one."""
        return max((layer.quality for layer in self.layers), key=lambda q: q.score)

    def receive_streams(self) -> list[Producer]:
        """The per-SSRC streams the transport reports on (one per encoding)."""
        return self.layers

    def layer_for(self, ssrc: int, rid: bytes | None) -> Producer | None:
        """The encoding an SSRC belongs to, binding it on its first packet with a known RID."""
        index = self.binding.bind(ssrc, rid)
        if index is None:
            return None
        layer = self.layers[index]
        layer.ssrc = ssrc
        return layer

    def sender_report(self, index: int) -> tuple[float, int] | None:
        """(NTP seconds, RTP timestamp) of encoding index's last SR, None before one arrived."""
        report = self.layers[index].last_sender_report
        if report is None:
            return None
        ntp, rtp_timestamp, _ = report
        return ntp / 2**32, rtp_timestamp

    def layer_sizes(self) -> list[tuple[int | None, int | None]]:
        return [(tap.width, tap.height) for tap in self.taps]

    def layer_bitrates(self) -> list[float]:
        """Each encoding's bitrate as the allocator counts it: a paused one at what it sent before the pause."""
        return [self.demand.bitrate(index, layer.meter.bitrate_bps) for index, layer in enumerate(self.layers)]

    # -- pausing the encodings nobody takes ----------------------------------------------------------
    def update_demand(self, now: float) -> None:
        """Once per report interval: pause the encodings no consumer took for a while, resume the wanted ones."""
        if self.paused or self.closed:
            return
        wanted: set[int] = set()
        for consumer in self.consumers:
            if not consumer.paused and not consumer.closed:
                wanted.update(consumer.layers_taken())
        self.demand.update(wanted, [layer.meter.bitrate_bps for layer in self.layers], now)

    def _tell_publisher(self, active: tuple[bool, ...]) -> None:
        rids = self.rids
        layers = [
            {"spatialLayer": index, "rid": rids[index] if index < len(rids) else None, "active": on}
            for index, on in enumerate(active)
        ]
        self.peer.notify("producerLayersActive", {"producerId": self.id, "mid": self.mid, "layers": layers})

    # -- the producer interface the router, peers and transport use ----------------------------------
    def request_keyframe(self, now: float) -> None:
        """A keyframe of every encoding (its consumers ask the encoding they forward themselves)."""
        for stream in self.layers:
            stream.request_keyframe(now)

    def add_consumer(self, consumer: SimulcastConsumer) -> None:
        self.consumers.append(consumer)
        consumer.on_close.add(self._on_consumer_closed)

    def _on_consumer_closed(self, consumer: SimulcastConsumer) -> None:
        if consumer in self.consumers:
            self.consumers.remove(consumer)

    def set_paused(self, paused: bool, now: float) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        for layer in self.layers:
            layer.set_paused(paused, now)
        if not paused:
            for consumer in self.consumers:
                consumer.resync()

    def close(self) -> None:
        """Idempotent: close every consumer, then the encodings, then tell the owners (transport, peer, router)."""
        if self.closed:
            return
        self.closed = True
        for consumer in list(self.consumers):
            consumer.close(PRODUCER_CLOSED)
        for layer in self.layers:
            layer.close()
        self.on_close.emit(self)

    def stats(self) -> dict:
        layers = [layer.stats() for layer in self.layers]
        return {
            "id": self.id,
            "peer": self.peer_id,
            "peer_name": self.peer.name,
            "kind": self.kind,
            "codec": self.codec.name,
            "ssrc": self.ssrc,
            "paused": self.paused,
            **{key: sum(s[key] for s in layers) for key in ("packets", "bytes", "bitrate_bps", "packets_lost", "nack_count", "pli_count", "fir_count", "keyframes")},
            "fraction_lost": max(s["fraction_lost"] for s in layers),
            "jitter_ms": max(s["jitter_ms"] for s in layers),
            "rtt_ms": None,
            "consumers": len(self.consumers),
            "score": self.quality.score,
            "audio_level_dbov": None,
            "layers": [
                {
                    "layer": index,
                    "rid": self.rids[index] if index < len(self.rids) else None,
                    "ssrc": s["ssrc"],
                    "bitrate_bps": s["bitrate_bps"],
                    "packets": s["packets"],
                    "packets_lost": s["packets_lost"],
                    "keyframes": s["keyframes"],
                    "width": tap.width,
                    "height": tap.height,
                    "paused": not self.demand.active[index],
                    "pauses": self.demand.pauses[index],
                }
                for index, (s, tap) in enumerate(zip(layers, self.taps))
            ],
            "unknown_rids": self.binding.unknown_rids,
        }
