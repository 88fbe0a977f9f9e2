"""Which live node a new room goes to: a pluggable selector (least loaded, or rooms pinned to nodes by name)."""

from __future__ import annotations

import fnmatch
from typing import Protocol

from .registry import NodeInfo


class Selector(Protocol):
    def choose(self, room: str, candidates: list[NodeInfo]) -> NodeInfo:
        """The node of `candidates` (live, not draining, never empty) that hosts the new `room`."""


class LeastLoaded:
    """The node with the fewest peers, then rooms, then the lowest id."""

    def choose(self, room: str, candidates: list[NodeInfo]) -> NodeInfo:
        return min(candidates, key=lambda node: node.load)


class Pinned:
    """Rooms whose name matches a pin's pattern (shell-style: `webinar-*`) go to its node while that node is
    live and not draining; the first matching pin wins; other rooms, and rooms of a node that is not live, go to
    `fallback`."""

    def __init__(self, pins: list[tuple[str, str]], fallback: Selector | None = None) -> None:
        self.pins = pins
        self.fallback = fallback if fallback is not None else LeastLoaded()

    def choose(self, room: str, candidates: list[NodeInfo]) -> NodeInfo:
        for pattern, node_id in self.pins:
            if fnmatch.fnmatchcase(room, pattern):
                pinned = next((node for node in candidates if node.id == node_id), None)
                if pinned is not None:
                    return pinned
                break
        return self.fallback.choose(room, candidates)


def parse_pin(text: str) -> tuple[str, str]:
    """`PATTERN=NODE-ID` -> (pattern, node id); ValueError saying the expected form."""
    pattern, sep, node_id = text.partition("=")
    if not sep or not pattern or not node_id:
        raise ValueError(f"{text!r} is not ROOM=NODE-ID (e.g. 'webinar-*=b')")
    return pattern, node_id
