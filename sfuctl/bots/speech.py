"""Speaker: who of a room's bots talks when, the audio level its packets carry (RFC 6464), and what it measures
of the server's `activeSpeaker` notifications.

The first N bots of a room are its speakers and take turns of TURN_S seconds in order, on the wall clock (bots
on one host, or on hosts whose clocks are synchronized, agree without telling each other): speaker k talks
while int(time / TURN_S) % N == k, in word-like spurts (WORD_S of speech, PAUSE_S of silence between words), and
is silent otherwise; every other bot stays silent. Only the levels say so (the Opus payload is the media file's,
never decoded by anyone): the server's active-speaker detector reads nothing else.

A speaking bot measures, from its own clock: for each of its turns that began after it started sending, how
long the server took to name it (`activeSpeaker` with its peer id) from the turn's start; a turn that ended
with the bot neither named during it nor still the room's speaker is missed; being named outside its turns
(or at all, for a silent bot) is misnamed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from .stats import percentile

TURN_S = 3.0  # one speaker's turn: long enough to be named (the detector needs ~0.5-1 s), short enough for many turns a run
WORD_S = 0.6  # a spurt of speech within a turn
PAUSE_S = 0.15  # the silence between two spurts (the detector must keep the floor through it)
SPEECH_LEVEL = 20  # -20 dBov: conversational speech at a headset microphone
SILENCE_LEVEL = 127  # -127 dBov: RFC 6464's floor, digital silence
VOICE = 0x80  # RFC 6464 V bit: the sender's voice activity detector says "speech"


class Speaker:
    """One bot's part in the turns: `slot` its turn (0-based) among `turns` speakers, None for a silent bot."""

    def __init__(self, slot: int | None, turns: int, clock: Callable[[], float] = time.time) -> None:
        if slot is not None and not 0 <= slot < turns:
            raise ValueError(f"speaker slot {slot} is outside 0..{turns - 1}")
        self.slot = slot
        self.turns = turns
        self.clock = clock
        self.named_ms: list[float] = []  # per measured turn: turn start -> named
        self.turns_measured = 0  # its turns that began after it started sending levels
        self.missed = 0
        self.misnamed = 0
        self._started_at: float | None = None  # the first level sent (wall clock)
        self._turn: int | None = None  # the turn number the last level fell in
        self._named_turn: int | None = None  # the last of its turns it was named in
        self._room_speaker: str | None = None  # as the server last named it
        self._me: str | None = None

    def level(self) -> int:
        """The audio-level byte for a packet sent now (V bit and -dBov level, RFC 6464)."""
        now = self.clock()
        if self._started_at is None:
            self._started_at = now
        turn = math.floor(now / TURN_S)
        if turn != self._turn:
            self._turn_ended(self._turn)
            self._turn = turn
            if self._talks_in(turn) and self._measured(turn):
                self.turns_measured += 1
        if self.slot is None or turn % self.turns != self.slot:
            return SILENCE_LEVEL
        if (now - turn * TURN_S) % (WORD_S + PAUSE_S) >= WORD_S:
            return SILENCE_LEVEL
        return VOICE | SPEECH_LEVEL

    def on_active_speaker(self, peer_id: str | None, me: str | None) -> None:
        """The server named `peer_id` the room's speaker (None: nobody); `me` is this bot's peer id."""
        self._room_speaker, self._me = peer_id, me
        if peer_id is None or peer_id != me:
            return
        now = self.clock()
        turn = math.floor(now / TURN_S)
        if not self._talks_in(turn):
            self.misnamed += 1
        elif self._named_turn != turn and self._measured(turn):
            self._named_turn = turn
            self.named_ms.append((now - turn * TURN_S) * 1000.0)

    def report(self) -> dict:
        """Its figures for the bot's report (docs/bots.md)."""
        named = sorted(self.named_ms)
        p50, p95 = percentile(named, 0.5), percentile(named, 0.95)
        return {
            "slot": self.slot,
            "turns": self.turns_measured,
            "named": len(named),
            "missed": self.missed,
            "misnamed": self.misnamed,
            "named_p50_ms": round(p50, 1) if p50 is not None else None,
            "named_p95_ms": round(p95, 1) if p95 is not None else None,
            "named_ms": [round(value, 1) for value in self.named_ms],
        }

    def _talks_in(self, turn: int) -> bool:
        return self.slot is not None and turn % self.turns == self.slot

    def _measured(self, turn: int) -> bool:
        """A turn counts when the bot was sending levels from its start."""
        return self._started_at is not None and self._started_at <= turn * TURN_S

    def _turn_ended(self, turn: int | None) -> None:
        if turn is None or not self._talks_in(turn) or not self._measured(turn):
            return
        if self._named_turn != turn and (self._me is None or self._room_speaker != self._me):
            self.missed += 1
