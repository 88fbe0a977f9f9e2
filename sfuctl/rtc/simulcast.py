"""Simulcast signaling (RFC 8851 a=rid, RFC 8853 a=simulcast) and RID-to-SSRC binding (RFC 8852).

aiortc's SDP parser drops a=rid and a=simulcast, so they are read here from the raw text of each m-section.
A publisher's m-line lists its encodings lowest first (mediasoup's rule, what browsers send with
`scaleResolutionDownBy` 4/2/1); the server answers `recv` for each. An SSRC is bound to its encoding on the
first packet that carries its RID and keeps that binding: libwebrtc stops sending MID/RID once an RR names the
SSRC. SSRC-group simulcast (a=ssrc-group:SIM, the legacy form) lists the SSRCs directly, lowest first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

RID_URI = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
# Not answered: it names retransmissions (RTX), which the server does not negotiate.
REPAIRED_RID_URI = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
# Three encodings (low, medium, high) are what browsers and SFUs use; more would only cost uplink.
MAX_LAYERS = 3
# RFC 8851 rid-id = 1*(alpha-numeric / "-" / "_"); 16 bytes is what fits one one-byte header extension element.
_RID = re.compile(r"^[A-Za-z0-9_-]{1,16}$")


@dataclass(frozen=True)
class SimulcastOffer:
    """The encodings a publisher's m-line announces, lowest first: by RID, or by SSRC (a=ssrc-group:SIM).

    payload_types maps a RID to the payload types its a=rid line restricts it to (absent: any).
    """

    rids: tuple[str, ...] = ()
    ssrcs: tuple[int, ...] = ()
    payload_types: tuple[tuple[str, tuple[int, ...]], ...] = ()

    @property
    def layers(self) -> int:
        return len(self.rids) or len(self.ssrcs)

    def allows(self, payload_type: int) -> bool:
        """True when every encoding may use this payload type."""
        return all(payload_type in allowed for _, allowed in self.payload_types)


def media_sections(text: str) -> list[list[str]]:
    """The attribute lines of each m-section of an SDP text, in order (session-level lines dropped)."""
    sections: list[list[str]] = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
    return sections


def read_simulcast(lines: list[str], kind: str) -> SimulcastOffer | None:
    """The simulcast offer of one m-section's lines, None when it has none; ValueError when malformed.

    An audio m-line's a=rid/a=simulcast are ignored (nothing would choose among audio encodings).
    """
    if kind != "video":
        return None
    rid_lines: dict[str, tuple[str, tuple[int, ...]]] = {}
    simulcast: list[str] | None = None
    sim_ssrcs: tuple[int, ...] = ()
    for line in lines:
        if line.startswith("a=rid:"):
            rid, direction, payload_types = _rid_line(line[6:])
            if rid in rid_lines:
                raise ValueError(f"a=rid:{rid} appears twice")
            rid_lines[rid] = (direction, payload_types)
        elif line.startswith("a=simulcast:"):
            if simulcast is not None:
                raise ValueError("a=simulcast appears twice on one m-line")
            simulcast = _simulcast_line(line[12:])
        elif line.startswith("a=ssrc-group:SIM "):
            try:
                sim_ssrcs = tuple(int(s) for s in line.split()[1:])
            except ValueError:
                raise ValueError(f"malformed {line!r}: SSRCs must be numbers") from None
            if not sim_ssrcs or not all(0 < s <= 0xFFFFFFFF for s in sim_ssrcs) or len(set(sim_ssrcs)) != len(sim_ssrcs):
                raise ValueError(f"malformed {line!r}: it needs distinct SSRCs in 1..2^32-1")
    if simulcast is None:
        if rid_lines:
            raise ValueError("a=rid without a=simulcast: say which RIDs are sent with a=simulcast:send")
        if not sim_ssrcs:
            return None
        if len(sim_ssrcs) > MAX_LAYERS:
            raise ValueError(f"a=ssrc-group:SIM lists {len(sim_ssrcs)} SSRCs; the server takes at most {MAX_LAYERS}")
        return SimulcastOffer(ssrcs=sim_ssrcs)
    for rid in simulcast:
        if rid not in rid_lines:
            raise ValueError(f"a=simulcast names RID {rid!r}, which has no a=rid:{rid} send line")
        if rid_lines[rid][0] != "send":
            raise ValueError(f"a=rid:{rid} is '{rid_lines[rid][0]}'; a publisher's encodings must be 'send'")
    if len(simulcast) > MAX_LAYERS:
        raise ValueError(f"a=simulcast lists {len(simulcast)} encodings; the server takes at most {MAX_LAYERS}")
    restricted = tuple((rid, rid_lines[rid][1]) for rid in simulcast if rid_lines[rid][1])
    return SimulcastOffer(rids=tuple(simulcast), payload_types=restricted)


def answer_lines(rids: tuple[str, ...]) -> list[str]:
    """The answer's a=rid/a=simulcast lines: receive every offered encoding, in the offer's order."""
    if not rids:
        return []
    return [f"a=rid:{rid} recv" for rid in rids] + ["a=simulcast:recv " + ";".join(rids)]


def _rid_line(value: str) -> tuple[str, str, tuple[int, ...]]:
    parts = value.split()
    if len(parts) < 2 or not _RID.match(parts[0]) or parts[1] not in ("send", "recv"):
        raise ValueError(f"malformed a=rid:{value}: expected 'a=rid:<id> send|recv [pt=..;..]' with an id of 1-16 letters, digits, - or _")
    payload_types: tuple[int, ...] = ()
    for restriction in " ".join(parts[2:]).split(";") if len(parts) > 2 else ():
        name, _, setting = restriction.strip().partition("=")
        if name == "pt":
            try:
                payload_types = tuple(int(p) for p in setting.split(","))
            except ValueError:
                raise ValueError(f"malformed a=rid:{value}: pt= takes payload type numbers") from None
    return parts[0], parts[1], payload_types


def _simulcast_line(value: str) -> list[str]:
    """RIDs of `send <list>` (first alternative of each stream, '~' paused marks dropped); recv is refused."""
    parts = value.split()
    if len(parts) != 2 or parts[0] not in ("send", "recv"):
        raise ValueError(f"malformed a=simulcast:{value}: the server takes 'a=simulcast:send <rid>;<rid>;...'")
    if parts[0] != "send":
        raise ValueError("a=simulcast:recv offers to receive simulcast; the server sends one encoding per consumer")
    rids = [stream.split(",")[0].lstrip("~") for stream in parts[1].split(";")]
    if not all(_RID.match(rid) for rid in rids):
        raise ValueError(f"malformed a=simulcast:{value}: each RID is 1-16 letters, digits, - or _")
    if len(set(rids)) != len(rids):
        raise ValueError(f"a=simulcast:{value} repeats a RID")
    return rids


class LayerBinding:
    """SSRC -> encoding index of one simulcast m-line, learned on first sight and then kept.

    `bind` takes the RID read from a packet's rtp-stream-id extension; an unknown RID is counted and ignored.
    """

    __slots__ = ("rids", "by_ssrc", "unknown_rids")

    def __init__(self, rids: tuple[str, ...] = (), ssrcs: tuple[int, ...] = ()) -> None:
        self.rids = rids
        self.by_ssrc: dict[int, int] = {ssrc: index for index, ssrc in enumerate(ssrcs)}
        self.unknown_rids = 0

    def bind(self, ssrc: int, rid: bytes | None) -> int | None:
        """The encoding index of ssrc: its binding, or a new one from rid; None when neither says."""
        index = self.by_ssrc.get(ssrc)
        if index is not None or rid is None:
            return index
        name = rid.decode(errors="replace")
        if name not in self.rids:
            self.unknown_rids += 1
            return None
        index = self.rids.index(name)
        if index in self.by_ssrc.values():  # a new SSRC for a known encoding (the sender restarted it)
            self.by_ssrc = {s: i for s, i in self.by_ssrc.items() if i != index}
        self.by_ssrc[ssrc] = index
        return index
