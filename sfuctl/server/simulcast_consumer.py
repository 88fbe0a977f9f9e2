"""SimulcastConsumer: one outgoing stream for one peer, fed from the encoding of a SimulcastProducer that fits it.

It sends one SSRC; `LayerSwitch` decides per packet which encoding goes out and renumbers it (contiguous
sequence numbers, timestamps aligned through each encoding's SR, VP8 PictureID/TL0PICIDX continued). A change
of target asks the target encoding for a keyframe (merged and retried by that encoding's Producer) and takes
effect at it. The peer's wishes (preferred layers, max size, priority) are kept here for the allocator; NACKs
map back to the encoding and number they came from.
"""

from __future__ import annotations

import struct
import time
from typing import TYPE_CHECKING, Any

from ..rtc.layer_switch import LayerSwitch
from ..rtc.rtp import read_header
from ..rtc.vp8 import Vp8Descriptor, parse_descriptor, renumber, renumbered
from .allocator import Layer, Wish
from .consumer import Consumer

if TYPE_CHECKING:
    from .simulcast_producer import SimulcastProducer

_pack_header = struct.Struct("!BBHI").pack_into
# How many VP8 temporal layers a consumer may be limited to (TIDs 0..2): Chromium's simulcast sends up to three
# (the 2-bit TID of RFC 7741 could name a fourth).
TEMPORAL_LAYERS = 3
# Priority range of setConsumerPriority (mediasoup's is 1..255; higher is served first).
PRIORITY_RANGE = (1, 255)


class SimulcastConsumer(Consumer):
    """A consumer of a SimulcastProducer; `producer` is that SimulcastProducer."""

    producer: SimulcastProducer

    def _start_waiting(self) -> None:
        """The layer switch waits for keyframes (of the target encoding), not the producer's counter."""

    def __init__(self, **kwargs: Any) -> None:
        """Consumer's arguments; it starts waiting for the top encoding (the allocator moves it from there)."""
        super().__init__(**kwargs)
        self.preferred_spatial: int | None = None
        self.max_size: tuple[int, int] | None = None
        self.priority = 1
        self.switch = LayerSwitch(self._clock_rate, self.producer.sender_report, target=len(self.producer.layers) - 1)
        self.switch_started: float | None = None
        self.switch_times_ms: list[float] = []
        self._waiting_on: int | None = None
        self._listening: set[int] = set()  # the encodings whose taps send us their packets
        self._wait_for(self.switch.target)
        self._listen()

    # -- media path -----------------------------------------------------------------------------------
    def forward_layer(
        self,
        layer: int,
        first_byte: int,
        marker: int,
        sequence: int,
        timestamp: int,
        payload: bytes,
        keyframe: bool,
        vp8: Vp8Descriptor | None,
        head: bytes,
        tail: bytes,
        descriptors: dict[int, bytearray],
        now: float,
    ) -> None:
        """Hot path: one packet of encoding `layer`; forwarded if it belongs to the stream this peer gets.

        `head` and `tail` are the payload's VP8 descriptor and the rest (sliced once for every consumer);
        `descriptors` holds this packet's renumbered descriptors by renumbering, made by the first consumer that
        needs one and reused by the others with the same renumbering (those that switched at the same keyframe).
        """
        if self.paused or not self.transport.connected:
            return
        epoch = self.switch.accept(layer, sequence, timestamp, keyframe, vp8, now)
        if epoch is None:
            return
        if self._waiting_on is not None and self.switch.current == self._waiting_on:
            self._switched(now)
        seq = (sequence + epoch.seq_offset) & 0xFFFF
        ts = (timestamp + epoch.ts_offset) & 0xFFFFFFFF
        header = self._header
        _pack_header(header, 0, self._first_byte | (first_byte & 0x20), self._second_byte[marker], seq, ts)
        if self._history is not None:  # transport-cc (the size counted is the payload's as received)
            self._stamp(header, len(header) + len(payload), now)
        renumbering = epoch.renumbering
        if renumbering and vp8 is not None:
            descriptor = descriptors.get(renumbering)
            if descriptor is None:
                descriptor = descriptors[renumbering] = renumbered(head, vp8, epoch.pid_offset, epoch.tl0_offset)
            packet = b"".join((header, descriptor, tail))
        else:
            packet = b"".join((header, payload))
        meter = self.meter
        meter.packets += 1
        meter.bytes += len(packet)
        self._send_rtp(packet)

    def _retransmission(self, out_seq: int) -> bytes | None:
        """The packet to resend for a NACKed number of ours, from the buffer of the encoding it came from."""
        if self.paused:
            return None
        epoch = self.switch.lookup(out_seq)
        # Packets of an encoding left behind are not resent: the new one started with a keyframe, and the old
        # one was left because the link could not carry it.
        if epoch is None or epoch.layer != self.switch.current:
            return None
        buffer = self.producer.layers[epoch.layer].rtx_buffer
        data = buffer.get(epoch.source_seq(out_seq)) if buffer is not None else None
        if data is None:
            return None
        marker, _, _, timestamp, _, offset = read_header(data)
        payload = data[offset:]
        header = self._header
        if self.producer.taps[epoch.layer].vp8 and epoch.renumbering:
            try:
                vp8 = parse_descriptor(payload)
            except ValueError:
                return None
            header = self._header + payload[: vp8.size]
            renumber(header, len(self._header), vp8, epoch.pid_offset, epoch.tl0_offset)
            payload = payload[vp8.size :]
        ts = (timestamp + epoch.ts_offset) & 0xFFFFFFFF
        _pack_header(header, 0, self._first_byte | (data[0] & 0x20), self._second_byte[marker], out_seq, ts)
        if self._history is not None:
            self._stamp(header, len(header) + len(payload), time.monotonic())
        return b"".join((header, payload))

    # -- layer choice ----------------------------------------------------------------------------------
    @property
    def current_layer(self) -> int | None:
        return self.switch.current

    @property
    def target_layer(self) -> int:
        return self.switch.target

    def wish(self) -> Wish:
        """What the allocator weighs for this consumer: the encodings' measured rates and the peer's wishes."""
        sizes = self.producer.layer_sizes()
        layers = tuple(
            Layer(bitrate, width, height) for bitrate, (width, height) in zip(self.producer.layer_bitrates(), sizes)
        )
        return Wish(self.id, "video", layers, self.preferred_spatial, self.max_size, self.priority)

    def set_target(self, layer: int, now: float) -> None:
        """Move to encoding `layer` at its next keyframe (asked for now); a no-op if it is already the target."""
        layer = max(0, min(layer, len(self.producer.layers) - 1))
        if layer == self.switch.target:
            return
        self.switch.target = layer
        self._wait_for(layer if layer != self.switch.current else None)
        self._listen()
        if self._waiting_on is not None:
            self.switch_started = now
            self.producer.layers[layer].request_keyframe(now)

    def layers_taken(self) -> set[int]:
        """The encodings this consumer forwards or waits for (its publisher must send them)."""
        return {layer for layer in (self.switch.current, self.switch.target) if layer is not None}

    def set_temporal(self, temporal: int | None) -> None:
        """Forward VP8 temporal layers 0..`temporal` only (None: all)."""
        self.switch.max_temporal = temporal

    def _wait_for(self, layer: int | None) -> None:
        """Count this consumer as waiting for a keyframe of `layer` (so that encoding asks again until one comes)."""
        if self._waiting_on is not None:
            self.producer.layers[self._waiting_on].consumer_waiting(False)
        self._waiting_on = layer
        if layer is not None:
            self.producer.layers[layer].consumer_waiting(True)
            self.producer.demand.want(layer, time.monotonic())  # a paused encoding resumes for it

    def _listen(self) -> None:
        """Take the packets of the encoding forwarded and of the target (for its keyframe), and no others."""
        wanted = set() if self.closed else self.layers_taken()
        for layer in self._listening - wanted:
            self.producer.taps[layer].unlisten(self)
        for layer in wanted - self._listening:
            self.producer.taps[layer].listen(self)
        self._listening = wanted

    def _switched(self, now: float) -> None:
        self._wait_for(None)
        self._listen()
        if self.switch_started is not None:
            self.switch_times_ms.append(round((now - self.switch_started) * 1000, 1))
            del self.switch_times_ms[:-16]  # the last few, for stats
            self.switch_started = None
        self.peer.notify(
            "consumerLayersChanged",
            {"consumerId": self.id, "spatialLayer": self.switch.current, "temporalLayer": self.switch.max_temporal},
        )

    # -- feedback and control -------------------------------------------------------------------------
    def _on_keyframe_request(self, now: float) -> None:
        """The peer lost its picture: a keyframe of the encoding it gets (or is about to get)."""
        layer = self.switch.current if self.switch.current is not None else self.switch.target
        self.producer.layers[layer].request_keyframe(now)

    def _resends(self) -> bool:
        """NACKs are answered from each encoding's own buffer (the SimulcastProducer has none of its own)."""
        return True

    def _report_timestamp(self, now: float) -> int | None:
        """For the SR: the current encoding's RTP/NTP mapping through its offset, else the last timestamp sent
        advanced by the wall clock."""
        switch = self.switch
        if switch.last_time is None or switch.epoch is None:
            return None
        source = self.producer.layers[switch.epoch.layer].last_sender_report
        if source is not None:
            _, rtp_ts, arrival = source
            return rtp_ts + switch.epoch.ts_offset + int((now - arrival) * self._clock_rate)
        return switch.last_ts + int((now - switch.last_time) * self._clock_rate)

    def on_transport_connected(self, now: float) -> None:
        self.producer.layers[self.switch.target].request_keyframe(now)

    def set_paused(self, paused: bool, now: float) -> None:
        if paused == self.paused:
            return
        self.paused = paused
        if not paused:
            self.resync()
            self.producer.layers[self.switch.target].request_keyframe(now)

    def resync(self) -> None:
        """Continue the numbering at the target's next keyframe."""
        self.switch.restart()
        self._wait_for(self.switch.target)
        self._listen()

    def close(self, reason: str) -> None:
        if not self.closed:
            self._wait_for(None)
        super().close(reason)
        self._listen()  # closed: no encoding's packets any more

    def stats(self) -> dict:
        base = super().stats()
        sizes = self.producer.layer_sizes()
        current = self.switch.current
        return base | {
            "spatial_layer": current,
            "target_spatial_layer": self.switch.target,
            "temporal_layer": self.switch.max_temporal,
            "preferred_spatial_layer": self.preferred_spatial,
            "priority": self.priority,
            "layer_switches": self.switch.switches,
            "layer_switch_ms": self.switch_times_ms[-1] if self.switch_times_ms else None,
            "width": None if current is None else sizes[current][0],
            "height": None if current is None else sizes[current][1],
            "available_bps": self._available_bps(),
        }

    def _available_bps(self) -> float | None:
        allocation = self.transport.allocation
        available = allocation.estimate.available_bps(0.0) if allocation is not None else None
        return None if available is None else round(available)
