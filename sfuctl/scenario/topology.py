"""The topologies a scenario's call can run in, and how their rooms and bots are named.

- sfu: every bot sends its media to the server once, and the server forwards it to the room's other bots
  (rooms room-N, bots bot-N).
- mesh: every bot of a room connects to every other one directly and sends its media to each of them; the
  server only relays the signaling (rooms mesh-room-N, bots mesh-bot-N).

Names are unique across a run that has both, since the server's stats tag objects by room and peer name.
"""

from __future__ import annotations

TOPOLOGIES = ("sfu", "mesh")
DEFAULT_TOPOLOGY = "sfu"
# A mesh of n peers has n(n-1)/2 connections and each peer sends its media n-1 times: past ~12 the bots,
# not the topology, become what is measured.
MAX_MESH_ROOM = 16
_PREFIXES = {"sfu": "", "mesh": "mesh-"}


def room_name(topology: str, number: int) -> str:
    """The `number`-th room (from 1) of a topology's call: room-1, mesh-room-1."""
    return f"{_PREFIXES[topology]}room-{number}"


def bot_name(topology: str, number: int) -> str:
    """The `number`-th bot (from 1) of a topology's call: bot-1, mesh-bot-1."""
    return f"{_PREFIXES[topology]}bot-{number}"


def topology_of(room: str) -> str:
    """The topology a room's name says (the `topology` tag of everything in it)."""
    return "mesh" if room.startswith(_PREFIXES["mesh"]) else DEFAULT_TOPOLOGY
