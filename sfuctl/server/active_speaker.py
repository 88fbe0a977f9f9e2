"""ActiveSpeakerObserver: who dominates a room's speech, from the publishers' audio levels (RFC 6464), never
from decoded audio.

Each step (`STEP` seconds) the router hands it, per peer, the share of that peer's audio packets in the step
that carried speech (a level at or above -SPEECH_DBOV dBov). The observer keeps each peer's shares over three
windows: short (SHORT steps), medium (MEDIUM) and long (LONG). A peer takes the floor only by sustained speech:

- nobody has it: the peer with the most medium-window speech, if at least MIN_MEDIUM;
- someone has it: a challenger needs at least MIN_MEDIUM medium-window speech, more short-window speech than the
  speaker and MARGIN more medium-window speech; while the speaker is still talking (short window > 0) the
  challenger also needs at least as much long-window speech.

So a 200 ms cough (at most 2 voiced steps of MEDIUM) never takes the floor, a pause between words does not
lose it, and when one speaker stops and another starts the floor moves once the newcomer has talked for about
half a second (the medium-window rule with the old speaker's window draining).
"""

from __future__ import annotations

from collections import deque

STEP = 0.1  # seconds per decision step: five 20-ms Opus packets
# A packet counts as speech at -50 dBov or louder: speech sits around -20..-45 dBov, room noise below -60.
SPEECH_DBOV = 50
SHORT = 3  # steps: 0.3 s, a word
MEDIUM = 8  # steps: 0.8 s, a phrase
LONG = 30  # steps: 3 s, a turn
MIN_MEDIUM = 0.6  # share of the medium window with speech needed to take the floor
MARGIN = 0.2  # how much more medium-window speech a challenger needs than the speaker


class ActiveSpeakerObserver:
    """Feed `update` once per step; it returns the new dominant peer when the floor changes hands, else None."""

    def __init__(self) -> None:
        self.dominant: str | None = None
        self._speech: dict[str, deque[float]] = {}

    def update(self, speech: dict[str, float]) -> str | None:
        """`speech`: peer id -> share (0..1) of its audio packets in this step that carried speech. Peers
        missing from it are forgotten (they left or stopped publishing audio)."""
        for peer in list(self._speech):
            if peer not in speech:
                del self._speech[peer]
        for peer, share in speech.items():
            self._speech.setdefault(peer, deque(maxlen=LONG)).append(min(1.0, max(0.0, share)))
        if self.dominant is not None and self.dominant not in self._speech:
            self.dominant = None
        winner = self._challenger()
        if winner is None or winner == self.dominant:
            return None
        self.dominant = winner
        return winner

    def levels(self, peer: str) -> tuple[float, float, float]:
        """A peer's speech share over the short, medium and long windows (0 for an unknown peer)."""
        history = self._speech.get(peer)
        if not history:
            return 0.0, 0.0, 0.0
        return _mean(history, SHORT), _mean(history, MEDIUM), _mean(history, LONG)

    def _challenger(self) -> str | None:
        ranked = sorted(self._speech, key=lambda p: self.levels(p)[1], reverse=True)
        candidates = [p for p in ranked if p != self.dominant and self.levels(p)[1] >= MIN_MEDIUM]
        if not candidates:
            return None
        challenger = candidates[0]
        if self.dominant is None:
            return challenger
        short_c, medium_c, long_c = self.levels(challenger)
        short_d, medium_d, long_d = self.levels(self.dominant)
        if short_c <= short_d or medium_c < medium_d + MARGIN:
            return None
        if short_d > 0 and long_c < long_d:
            return None
        return challenger


def _mean(history: deque[float], steps: int) -> float:
    """Mean of the last `steps` values, counting steps before the history began as silence."""
    recent = list(history)[-steps:]
    return sum(recent) / steps
