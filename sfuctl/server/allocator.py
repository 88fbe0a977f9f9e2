"""Layer choice for the consumers of one receive transport: which encoding each one forwards.

The input is a clean pair: what each consumer wants (`Wish`) and the bitrate available to the transport
(`BandwidthEstimate`, from `interim_estimate.py` until congestion control provides a better one). Audio is
served first, then video consumers by priority: every video consumer gets its lowest layer, then layers are
raised one step at a time, highest priority first, while they fit (LiveKit's order; mediasoup offers the
bitrate the same way, one layer at a time). A consumer never goes above its cap: the lower of its preferred
layer and the largest layer that fits its max size. Unknown bitrate (nothing measured yet, no loss seen) means
no limit: each consumer gets its cap.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Layer:
    """One spatial layer a producer offers: its measured bitrate (0 while unmeasured; a layer paused because nobody
    took it counts at its bitrate before the pause, layer_demand.py) and frame size if known."""

    bitrate_bps: float
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True)
class Wish:
    """What one consumer wants. `layers` lists the producer's layers lowest first (one for a plain stream)."""

    consumer_id: str
    kind: str
    layers: tuple[Layer, ...]
    preferred: int | None = None  # highest spatial layer wanted; None: the top
    max_size: tuple[int, int] | None = None  # (width, height) of the viewer's window
    priority: int = 1  # higher is served first

    def cap(self) -> int:
        """The highest layer this consumer may get.

        Never above the highest layer that has a measured bitrate, once any has one: a publisher stops the
        encodings its own link cannot carry (libwebrtc does), and a consumer moved to one would wait for a
        keyframe that never comes.
        """
        top = len(self.layers) - 1
        sent = [index for index, layer in enumerate(self.layers) if layer.bitrate_bps > 0]
        if sent:
            top = sent[-1]
        cap = top if self.preferred is None else max(0, min(self.preferred, top))
        if self.max_size is not None:
            width, height = self.max_size
            # The smallest layer at least as large as the window in both directions (so it is not upscaled),
            # or the largest one when none is; layers of unknown size never limit.
            for index, layer in enumerate(self.layers[: cap + 1]):
                if layer.width is not None and layer.height is not None and layer.width >= width and layer.height >= height:
                    return index
        return cap


class BandwidthEstimate(Protocol):
    """What the allocator reads from an estimate of the bitrate a receive transport can take."""

    def available_bps(self, now: float) -> float | None:
        """The bitrate to allocate, None when nothing limits it."""
        ...

    def wants_probe(self, now: float) -> bool:
        """True when an upgrade may be tried now."""
        ...

    def start_probe(self, target_bps: float, now: float) -> None:
        """Allocate up to target_bps for a trial; the estimate keeps it or reverts it from what follows."""
        ...


def allocate(wishes: Sequence[Wish], available_bps: float | None) -> dict[str, int]:
    """The spatial layer of each consumer (by id). Audio and single-layer consumers always get layer 0."""
    chosen = {w.consumer_id: 0 for w in wishes}
    video = sorted((w for w in wishes if w.kind == "video" and len(w.layers) > 1), key=lambda w: -w.priority)
    if available_bps is None:
        return chosen | {w.consumer_id: w.cap() for w in video}
    budget = available_bps - sum(w.layers[0].bitrate_bps for w in wishes)
    raised = True
    while raised:
        raised = False
        for wish in video:
            current = chosen[wish.consumer_id]
            if current >= wish.cap():
                continue
            step = wish.layers[current + 1].bitrate_bps - wish.layers[current].bitrate_bps
            if step <= budget:
                budget -= step
                chosen[wish.consumer_id] = current + 1
                raised = True
    return chosen


def next_upgrade_bps(wishes: Sequence[Wish], chosen: dict[str, int]) -> float | None:
    """The total bitrate if the highest-priority consumer below its cap went one layer up; None when none can."""
    total = sum(w.layers[chosen[w.consumer_id]].bitrate_bps for w in wishes)
    for wish in sorted(wishes, key=lambda w: -w.priority):
        current = chosen[wish.consumer_id]
        if wish.kind == "video" and current < wish.cap():
            return total + wish.layers[current + 1].bitrate_bps - wish.layers[current].bitrate_bps
    return None


def choose(wishes: Sequence[Wish], estimate: BandwidthEstimate, now: float) -> dict[str, int]:
    """allocate() with the estimate's bitrate, starting an upgrade trial when the estimate allows one."""
    chosen = allocate(wishes, estimate.available_bps(now))
    if estimate.wants_probe(now):
        target = next_upgrade_bps(wishes, chosen)
        if target is not None:
            estimate.start_probe(target, now)
            chosen = allocate(wishes, estimate.available_bps(now))
    return chosen
