"""LayerSwitch: the numbering of one outgoing stream fed from several encodings of the same source (simulcast).

Per packet of encoding `layer` it says whether to forward it and with which offsets (an `Epoch`):
- it forwards one encoding at a time and moves to the target encoding only at a keyframe of it;
- sequence numbers stay contiguous (the new encoding continues right after the last number sent) and drop
  upper temporal layers and padding-only packets by closing the gap they leave;
- timestamps stay monotonic: the new encoding's timestamp is placed on the old one's time line through each
  encoding's last Sender Report (RTP/NTP pair, as mediasoup does), or by the wall-clock time elapsed when an SR is
  missing or would send the time line backwards;
- VP8 PictureID / TL0PICIDX continue the outgoing numbering (vp8.PictureNumbering).
Each outgoing sequence number remembers its epoch, so a NACK maps back to the encoding and number it came from.
"""

from __future__ import annotations

import random
from collections.abc import Callable

from .vp8 import PictureNumbering, Vp8Descriptor

# Outgoing sequence numbers remembered for NACK mapping: as many as a producer's retransmission buffer keeps
# (sfuctl.rtc.nack.RetransmissionBuffer), a power of two so the slot is a mask.
HISTORY = 1024
# An SR-aligned timestamp further than this ahead of the last one sent is not trusted (a stale SR, a restarted
# encoder); the wall clock places it instead. Switches happen within a keyframe interval of the request.
MAX_ALIGNED_ADVANCE = 10.0

SenderReports = Callable[[int], "tuple[float, int] | None"]


class Epoch:
    """The offsets valid for a run of packets of one encoding (fixed once made).

    `renumbering` names the VP8 picture renumbering: 0 when the encoding keeps its own PictureID and TL0PICIDX,
    else the same number for every epoch with the same offsets (so consumers can share a rewritten descriptor).
    """

    __slots__ = ("layer", "seq_offset", "ts_offset", "pid_offset", "tl0_offset", "renumbering")

    def __init__(self, layer: int, seq_offset: int, ts_offset: int, pid_offset: int, tl0_offset: int) -> None:
        self.layer = layer
        self.seq_offset = seq_offset
        self.ts_offset = ts_offset
        self.pid_offset = pid_offset & 0x7FFF
        self.tl0_offset = tl0_offset & 0xFF
        self.renumbering = self.pid_offset << 8 | self.tl0_offset

    def source_seq(self, out_seq: int) -> int:
        return (out_seq - self.seq_offset) & 0xFFFF


class LayerSwitch:
    """Which encoding one consumer forwards, and how its packets are renumbered.

    `sender_reports(layer)` gives that encoding's last SR as (NTP seconds, RTP timestamp), or None.
    """

    __slots__ = (
        "clock_rate", "current", "target", "max_temporal", "switches", "epoch", "last_seq", "last_ts",
        "last_time", "numbering", "_sender_reports", "_history",
    )

    def __init__(self, clock_rate: int, sender_reports: SenderReports, target: int = 0) -> None:
        self.clock_rate = clock_rate
        self.current: int | None = None  # the encoding forwarded now; None before the first keyframe
        self.target = target
        self.max_temporal: int | None = None  # highest VP8 temporal layer forwarded; None: all
        self.switches = 0
        self.epoch: Epoch | None = None
        self.last_seq = random.getrandbits(16)
        self.last_ts = random.getrandbits(32)
        self.last_time: float | None = None
        self.numbering = PictureNumbering()
        self._sender_reports = sender_reports
        self._history: list[Epoch | None] = [None] * HISTORY

    @property
    def switching(self) -> bool:
        """True while waiting for a keyframe of the target encoding."""
        return self.current != self.target

    def accept(
        self, layer: int, seq: int, ts: int, keyframe: bool, vp8: Vp8Descriptor | None, now: float
    ) -> Epoch | None:
        """Hot path: the epoch to forward this packet with, or None to drop it."""
        if layer != self.current:
            if layer != self.target or not keyframe:
                return None
            self._switch(layer, seq, ts, vp8, now)
        epoch = self.epoch
        assert epoch is not None
        max_temporal = self.max_temporal
        if max_temporal is not None and vp8 is not None and vp8.tid is not None and vp8.tid > max_temporal:
            self.skip(layer)
            return None
        out_seq = (seq + epoch.seq_offset) & 0xFFFF
        self._history[out_seq & (HISTORY - 1)] = epoch
        if (out_seq - self.last_seq) & 0xFFFF < 0x8000:
            self.last_seq = out_seq
            self.last_ts = (ts + epoch.ts_offset) & 0xFFFFFFFF
            self.last_time = now
            if vp8 is not None:
                self.numbering.latest = vp8  # PictureNumbering.note, inlined on the hot path
        return epoch

    def skip(self, layer: int) -> None:
        """A packet of encoding `layer` left out (an upper temporal layer, padding only): if that encoding is the one
        forwarded, the packets after it move one number down, so the peer sees no gap."""
        epoch = self.epoch
        if layer == self.current and epoch is not None:
            self.epoch = Epoch(layer, epoch.seq_offset - 1, epoch.ts_offset, epoch.pid_offset, epoch.tl0_offset)

    def lookup(self, out_seq: int) -> Epoch | None:
        """The epoch an outgoing sequence number was sent with (None if unknown or too old)."""
        return self._history[out_seq & (HISTORY - 1)]

    def restart(self) -> None:
        """Forget the current encoding (pause, or the consumer's peer asked for a keyframe after a gap): the next
        keyframe of the target starts a new epoch that continues the numbering."""
        self.current = None

    def _switch(self, layer: int, seq: int, ts: int, vp8: Vp8Descriptor | None, now: float) -> None:
        ts_offset = self._timestamp_offset(layer, ts, now)
        if vp8 is not None:
            self.numbering.rebase(vp8)
        if self.current is not None:
            self.switches += 1
        self.current = layer
        self.epoch = Epoch(
            layer,
            (self.last_seq + 1 - seq) & 0xFFFF,
            ts_offset,
            self.numbering.pid_offset,
            self.numbering.tl0_offset,
        )

    def _timestamp_offset(self, layer: int, ts: int, now: float) -> int:
        """Offset placing ts (of `layer`) after the last timestamp sent, on the same time line."""
        last_ts, epoch = self.last_ts, self.epoch
        if self.last_time is None or epoch is None:
            return (last_ts - ts) & 0xFFFFFFFF
        elapsed = max(1, int((now - self.last_time) * self.clock_rate))
        wall = (last_ts + elapsed - ts) & 0xFFFFFFFF
        old, new = self._sender_reports(epoch.layer), self._sender_reports(layer)
        if old is None or new is None or epoch.layer == layer:
            return wall
        (old_ntp, old_rtp), (new_ntp, new_rtp) = old, new
        aligned = (epoch.ts_offset + old_rtp - new_rtp + round((new_ntp - old_ntp) * self.clock_rate)) & 0xFFFFFFFF
        advance = (ts + aligned - last_ts) & 0xFFFFFFFF
        # Not after the last timestamp sent (or absurdly far: a stale SR): fall back to the wall clock.
        if advance == 0 or advance >= MAX_ALIGNED_ADVANCE * self.clock_rate:
            return wall
        return aligned
