"""LayerAllocation: once per report interval, picks the encoding of every simulcast consumer of one receive
transport from the peer's wishes and the estimate of what the transport can take (allocator.py).

The estimate is the one seam for congestion control: any `BandwidthEstimate` (allocator.py: the bitrate the
transport can take, in bit/s, and when an upgrade may be tried) given as `estimate`. With transport-wide
congestion control it is the transport's FeedbackEstimate (probes before upgrades, REMB a cap). The default is the
InterimEstimate, which this class feeds with one loss figure per round (the packets the peer's receiver reports
say were lost since the previous round, over the packets sent meanwhile, across all the transport's consumers,
audio included: it shares the link), the RTT, and the peer's REMB. Another estimate is fed by its own owner.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .allocator import BandwidthEstimate, Layer, Wish, choose
from .feedback_estimate import FeedbackEstimate
from .interim_estimate import InterimEstimate
from .simulcast_consumer import SimulcastConsumer

if TYPE_CHECKING:
    from .consumer import Consumer


class LayerAllocation:
    """The layer choice of one receive transport's consumers."""

    def __init__(self, consumers: dict[int, Consumer], estimate: BandwidthEstimate | None = None) -> None:
        self._consumers = consumers  # the transport's own table (read only here)
        self.estimate = estimate if estimate is not None else InterimEstimate()
        self._last: dict[str, tuple[int, int, int]] = {}  # consumer id -> (reports, lost, sent) at the last round

    def on_remb(self, bitrate_bps: float, now: float) -> None:
        if isinstance(self.estimate, (InterimEstimate, FeedbackEstimate)):
            self.estimate.on_remb(bitrate_bps, now)

    def run(self, now: float) -> dict[str, int]:
        """Feed the round's loss to the estimate, then set every simulcast consumer's target layer."""
        if isinstance(self.estimate, InterimEstimate):
            self._feed_loss(self.estimate, [c for c in self._consumers.values() if not c.closed], now)
        return self.apply(now)

    def apply(self, now: float) -> dict[str, int]:
        """Set every simulcast consumer's target layer from the estimate as it stands (after a wish changed)."""
        consumers = [c for c in self._consumers.values() if not c.closed]
        wishes = [
            c.wish() if isinstance(c, SimulcastConsumer) else Wish(c.id, c.kind, (Layer(c.meter.bitrate_bps),))
            for c in consumers
            if not c.paused
        ]
        chosen = choose(wishes, self.estimate, now)
        for consumer in consumers:
            if isinstance(consumer, SimulcastConsumer) and consumer.id in chosen:
                consumer.set_target(chosen[consumer.id], now)
        return chosen

    def _feed_loss(self, estimate: InterimEstimate, consumers: list[Consumer], now: float) -> None:
        """The share of media packets lost since the last round, from the consumers with a new receiver report,
        the media bitrate sent meanwhile (retransmissions are not what the link must carry for a layer), and the
        highest RTT those reports measured."""
        lost = sent = 0
        reported = False
        rtt: float | None = None
        last: dict[str, tuple[int, int, int]] = {}
        media_bps = 0.0
        for c in consumers:
            s = c.rtcp
            counts = (s.reports_received, s.packets_lost, c.meter.packets - s.retransmitted)
            last[c.id] = counts
            media_bps += media_bitrate(c)
            before = self._last.get(c.id)
            if before is None or counts[0] == before[0]:
                continue
            reported = True
            if s.rtt_ms is not None:
                rtt = s.rtt_ms if rtt is None else max(rtt, s.rtt_ms)
            lost += max(0, counts[1] - before[1])
            sent += max(0, counts[2] - before[2])
        self._last = last
        if reported and sent:
            estimate.on_report(min(1.0, lost / sent), media_bps, now, rtt)


def media_bitrate(consumer: Consumer) -> float:
    """What a consumer forwards, without retransmissions: the bitrate of the stream (encoding) it takes."""
    if isinstance(consumer, SimulcastConsumer):
        layer = consumer.current_layer
        return 0.0 if layer is None else consumer.producer.layers[layer].meter.bitrate_bps
    return consumer.producer.meter.bitrate_bps
