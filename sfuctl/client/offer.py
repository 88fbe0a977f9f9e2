"""SDP for a lean client: write the offers of its send and receive transports, read the server's answers.

The client always offers (docs/protocol.md): sendonly m-lines with a=ssrc/cname/msid to publish, recvonly
m-lines to subscribe, a=setup:actpass, one host candidate, BUNDLE and rtcp-mux. Answers are read with
aiortc's SDP parser into the few facts a client needs per mid.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from aiortc import RTCIceCandidate
from aiortc import sdp as aiortc_sdp

from sfuctl.rtc.connection import Connection
from sfuctl.rtc.ice import IceParameters
from sfuctl.rtc.rtp import build_extension_block
from sfuctl.rtc.sctp import DEFAULT_MAX_MESSAGE_SIZE
from sfuctl.rtc.sdp import AUDIO_LEVEL_URI, MID_URI, SCTP_PORT, TRANSPORT_CC_FEEDBACK, VIDEO_FEEDBACK, Codec, parse_session
from sfuctl.rtc.simulcast import RID_URI
from sfuctl.rtc.transport_feedback import TRANSPORT_CC_URI

MID_EXTENSION_ID = 1
AUDIO_LEVEL_EXTENSION_ID = 2  # audio m-lines offer RFC 6464 levels under this id
RID_EXTENSION_ID = 3  # simulcast video m-lines offer the rtp-stream-id extension under this id
TRANSPORT_CC_EXTENSION_ID = 4  # receiving m-lines offer transport-cc (the client sends transport feedback)
DIRECTIONS = ("sendonly", "recvonly", "sendrecv", "inactive")

OPUS = Codec("opus", 48000, 111, 2, (("minptime", "10"), ("useinbandfec", "1")))
VP8 = Codec("VP8", 90000, 96, feedback=VIDEO_FEEDBACK)
H264 = Codec(
    "H264",
    90000,
    102,
    parameters=(("level-asymmetry-allowed", "1"), ("packetization-mode", "1"), ("profile-level-id", "42e01f")),
    feedback=VIDEO_FEEDBACK,
)
# What a receive transport offers per kind: the server answers with the producer's codec. Each asks for
# transport-cc, which the client answers with transport feedback (sfuctl.rtc.arrival_recorder).
RECEIVE_CODECS: dict[str, tuple[Codec, ...]] = {
    kind: tuple(replace(c, feedback=(*c.feedback, TRANSPORT_CC_FEEDBACK)) for c in codecs)
    for kind, codecs in {"audio": (OPUS,), "video": (VP8, H264)}.items()
}
SEND_CODECS: dict[str, Codec] = {"opus": OPUS, "VP8": VP8, "H264": H264}
# RIDs of simulcast encodings, lowest first (quarter, half, full size).
SIMULCAST_RIDS = ("q", "h", "f")


def simulcast_rids(encodings: int) -> tuple[str, ...]:
    """The RIDs of a video sent as `encodings` encodings, lowest first: fewer than three take the top ones."""
    return SIMULCAST_RIDS[len(SIMULCAST_RIDS) - encodings :] if encodings else ()


@dataclass(frozen=True)
class OfferSection:
    """One m-line of a client offer. A sending section carries its SSRC, CNAME and msid (stream, track); a
    simulcast one names its encodings by RID, lowest first (its SSRCs travel only in RTP, with their RID).

    Kind "application" is the data channel section (SCTP over the transport's DTLS): no codecs, direction
    "sendrecv" (or "inactive" to drop it).
    """

    mid: str
    kind: str
    direction: str
    codecs: tuple[Codec, ...]
    ssrc: int | None = None
    cname: str | None = None
    msid: tuple[str, str] | None = None
    rids: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.kind not in ("audio", "video", "application"):
            raise ValueError(f"m-line kind must be 'audio', 'video' or 'application', not {self.kind!r}")
        if self.direction not in DIRECTIONS:
            raise ValueError(f"m-line direction must be one of {', '.join(DIRECTIONS)}, not {self.direction!r}")
        if not self.mid or any(c.isspace() for c in self.mid):
            raise ValueError(f"mid must be a non-empty token, not {self.mid!r}")
        if self.kind == "application":
            if self.codecs or self.ssrc is not None or self.direction not in ("sendrecv", "inactive"):
                raise ValueError(f"application m-line {self.mid} takes no codecs or SSRC and is sendrecv or inactive")
        elif not self.codecs:
            raise ValueError(f"m-line {self.mid} needs at least one codec")
        if self.ssrc is not None and not 0 < self.ssrc <= 0xFFFFFFFF:
            raise ValueError(f"SSRC {self.ssrc} outside 1..2^32-1")
        if self.rids and (self.kind != "video" or self.direction != "sendonly"):
            raise ValueError("only a sendonly video m-line can carry simulcast RIDs")


def build_offer(
    *,
    session_id: int,
    version: int,
    ice: IceParameters,
    fingerprint: str,
    candidate: tuple[str, int],
    sections: Sequence[OfferSection],
) -> str:
    """The SDP offer of one transport; `fingerprint` is "sha-256 AB:CD:..." and `candidate` its UDP host address.

    Inactive sections are written with port 0 (the server closes what they carried); the others share one
    BUNDLE group, one ICE ufrag/pwd and one DTLS fingerprint.
    """
    if not sections:
        raise ValueError("an offer needs at least one m-line")
    mids = [s.mid for s in sections]
    if len(set(mids)) != len(mids):
        raise ValueError("offer repeats a mid")
    if " " not in fingerprint:
        raise ValueError("fingerprint must be '<algorithm> <hex>'")
    host, port = candidate
    lines = [
        "v=0",
        f"o=- {session_id} {version} IN IP4 {host}",
        "s=-",
        "t=0 0",
    ]
    bundle = [s.mid for s in sections if s.direction != "inactive"]
    if bundle:
        lines.append("a=group:BUNDLE " + " ".join(bundle))
    lines.append("a=msid-semantic: WMS *")
    for s in sections:
        lines += _section_lines(s, ice, fingerprint, host, port)
    return "\r\n".join(lines) + "\r\n"


def _section_lines(s: OfferSection, ice: IceParameters, fingerprint: str, host: str, port: int) -> list[str]:
    transport = [
        f"a=ice-ufrag:{ice.ufrag}",
        f"a=ice-pwd:{ice.pwd}",
        f"a=fingerprint:{fingerprint}",
        "a=setup:actpass",
        f"a=candidate:1 1 udp 2130706431 {host} {port} typ host",
        "a=end-of-candidates",
    ]
    if s.kind == "application":
        return [
            f"m=application {0 if s.direction == 'inactive' else port} UDP/DTLS/SCTP webrtc-datachannel",
            f"c=IN IP4 {host}",
            f"a=mid:{s.mid}",
            *transport,
            f"a=sctp-port:{SCTP_PORT}",
            f"a=max-message-size:{DEFAULT_MAX_MESSAGE_SIZE}",
        ]
    formats = " ".join(str(c.payload_type) for c in s.codecs)
    if s.direction == "inactive":
        return [f"m={s.kind} 0 UDP/TLS/RTP/SAVPF {formats}", f"c=IN IP4 {host}", f"a=mid:{s.mid}", "a=inactive"]
    lines = [
        f"m={s.kind} {port} UDP/TLS/RTP/SAVPF {formats}",
        f"c=IN IP4 {host}",
        f"a=rtcp:{port} IN IP4 {host}",
        f"a=mid:{s.mid}",
        f"a=extmap:{MID_EXTENSION_ID} {MID_URI}",
        *([f"a=extmap:{AUDIO_LEVEL_EXTENSION_ID} {AUDIO_LEVEL_URI}"] if s.kind == "audio" else []),
        *([f"a=extmap:{RID_EXTENSION_ID} {RID_URI}"] if s.rids else []),
        *([f"a=extmap:{TRANSPORT_CC_EXTENSION_ID} {TRANSPORT_CC_URI}"] if s.direction == "recvonly" else []),
        f"a={s.direction}",
        "a=rtcp-mux",
        "a=rtcp-rsize",
    ]
    for codec in s.codecs:
        channels = f"/{codec.channels}" if codec.channels else ""
        lines.append(f"a=rtpmap:{codec.payload_type} {codec.name}/{codec.clock_rate}{channels}")
        for kind, parameter in codec.feedback:
            lines.append(f"a=rtcp-fb:{codec.payload_type} {kind}" + (f" {parameter}" if parameter else ""))
        if codec.parameters:
            lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp()}")
    if s.ssrc is not None:
        if s.msid is not None:
            lines.append(f"a=msid:{s.msid[0]} {s.msid[1]}")
        lines.append(f"a=ssrc:{s.ssrc} cname:{s.cname or 'sfuctl-bot'}")
    if s.rids:
        if s.msid is not None and s.ssrc is None:
            lines.append(f"a=msid:{s.msid[0]} {s.msid[1]}")
        lines += [f"a=rid:{rid} send" for rid in s.rids] + ["a=simulcast:send " + ";".join(s.rids)]
    return lines + transport


@dataclass(frozen=True)
class AnswerMedia:
    """The server's side of one m-line: codec None when it rejected the m-line (port 0 or inactive)."""

    mid: str
    kind: str
    direction: str
    codec: Codec | None
    ssrc: int | None = None
    cname: str | None = None
    msid: tuple[str, str] | None = None
    extensions: dict[str, int] = field(default_factory=dict)
    # An accepted application section: the server's SCTP port and a=max-message-size.
    sctp_port: int | None = None
    max_message_size: int | None = None
    # An SSRC listed after the stream's own outside any ssrc-group: the server's padding-only probes on the transport.
    probe_ssrc: int | None = None

    def encoding_extensions(self, rid: str) -> bytes:
        """The header extension block on every packet of simulcast encoding `rid`: MID and RID, with the ids
        this answer gave them, so that the server binds each SSRC to its encoding on first sight."""
        return build_extension_block([(self.extensions[MID_URI], self.mid.encode()), (self.extensions[RID_URI], rid.encode())])


@dataclass(frozen=True)
class Answer:
    """What a client needs from the server's answer."""

    ice: IceParameters
    fingerprints: list[tuple[str, str]]
    setup: str
    candidates: list[tuple[str, int]]  # UDP host candidates
    ice_lite: bool
    media: dict[str, AnswerMedia]
    tcp_candidates: list[tuple[str, int]] = field(default_factory=list)  # ICE-TCP passive candidates (RFC 6544)

    @property
    def probe_ssrc(self) -> int | None:
        """The SSRC of the server's probe packets, when an m-line announces it (beside a video stream)."""
        return next((m.probe_ssrc for m in self.media.values() if m.probe_ssrc is not None), None)

    @property
    def dtls_role(self) -> str:
        """Our DTLS role: the client when the answer says passive (RFC 5763), the server when it says active."""
        return "client" if self.setup == "passive" else "server"


def connection_offer(connection: Connection, sections: Sequence[OfferSection], *, session_id: int, version: int = 1) -> str:
    """build_offer with a connection's own ICE credentials, DTLS fingerprint and host candidate."""
    if connection.local_candidate is None:
        raise ValueError("the connection has no local candidate: open its socket first")
    return build_offer(
        session_id=session_id,
        version=version,
        ice=connection.local_ice,
        fingerprint=connection.local_fingerprint,
        candidate=connection.local_candidate,
        sections=sections,
    )


def sort_candidates(candidates: Iterable[RTCIceCandidate]) -> tuple[list[tuple[str, int]], list[tuple[str, int]]]:
    """The distinct UDP addresses and ICE-TCP passive ones (RFC 6544) among `candidates`, in their order; a client
    connects to nothing else (an active or simultaneous-open TCP candidate waits for a connection)."""
    udp: list[tuple[str, int]] = []
    tcp: list[tuple[str, int]] = []
    for c in candidates:
        protocol = c.protocol.lower()
        found = udp if protocol == "udp" else tcp if protocol == "tcp" and c.tcpType == "passive" else None
        if found is not None and (c.ip, c.port) not in found:
            found.append((c.ip, c.port))
    return udp, tcp


def parse_answer(text: str) -> Answer:
    """Read the server's SDP answer; ValueError names what is missing or malformed."""
    session = parse_session(text, "SDP answer")
    accepted = [m for m in session.media if m.port != 0 and m.kind in ("audio", "video", "application")]
    if not accepted:
        raise ValueError("SDP answer accepts no m-line")
    first = accepted[0]
    if first.ice is None or not first.ice.usernameFragment or not first.ice.password:
        raise ValueError("SDP answer lacks a=ice-ufrag / a=ice-pwd")
    if first.dtls is None or not first.dtls.fingerprints:
        raise ValueError("SDP answer lacks a=fingerprint / a=setup")
    setup = aiortc_sdp.DTLS_ROLE_SETUP[first.dtls.role]
    if setup not in ("active", "passive"):
        raise ValueError(f"SDP answer has a=setup:{setup}; an answer must say active or passive")
    candidates, tcp_candidates = sort_candidates(c for m in accepted for c in m.ice_candidates)
    if not candidates and not tcp_candidates:
        raise ValueError("SDP answer has no UDP candidate nor an ICE-TCP passive one")
    media: dict[str, AnswerMedia] = {}
    for index, m in enumerate(session.media):
        mid = m.rtp.muxId
        if not mid:
            raise ValueError(f"SDP answer m-line {index} has no a=mid")
        media[mid] = _answer_media(m, mid)
    return Answer(
        ice=IceParameters(first.ice.usernameFragment, first.ice.password),
        # aiortc adds media-level fingerprints to the session-level ones: the same one may come twice.
        fingerprints=list(dict.fromkeys((f.algorithm, f.value) for f in first.dtls.fingerprints)),
        setup=setup,
        candidates=candidates,
        ice_lite=bool(first.ice.iceLite),
        media=media,
        tcp_candidates=tcp_candidates,
    )


def _answer_media(m: object, mid: str) -> AnswerMedia:
    direction = m.direction or "sendrecv"
    if m.kind == "application":
        if m.port == 0 or m.sctp_port is None:
            return AnswerMedia(mid, m.kind, "inactive", None)
        size = m.sctpCapabilities.maxMessageSize if m.sctpCapabilities else None
        return AnswerMedia(mid, m.kind, "sendrecv", None, sctp_port=m.sctp_port, max_message_size=size)
    if m.port == 0 or direction == "inactive" or not m.rtp.codecs:
        return AnswerMedia(mid, m.kind, "inactive", None)
    c = m.rtp.codecs[0]
    codec = Codec(
        name=_canonical_name(c.mimeType.split("/", 1)[1]),
        clock_rate=c.clockRate,
        payload_type=c.payloadType,
        channels=c.channels,
        parameters=tuple((str(k), str(v)) for k, v in (c.parameters or {}).items()),
        feedback=tuple((f.type, f.parameter) for f in c.rtcpFeedback),
    )
    ssrc = cname = probe_ssrc = None
    if m.ssrc:
        ssrc, cname = m.ssrc[0].ssrc, m.ssrc[0].cname
        grouped = {item for group in m.ssrc_group for item in group.items}
        probe_ssrc = next((s.ssrc for s in m.ssrc[1:] if s.ssrc not in grouped), None)
    msid = None
    if m.msid and len(m.msid.split()) == 2:
        stream, track = m.msid.split()
        msid = (stream, track)
    return AnswerMedia(
        mid=mid,
        kind=m.kind,
        direction=direction,
        codec=codec,
        ssrc=ssrc,
        cname=cname,
        msid=msid,
        extensions={e.uri: e.id for e in m.rtp.headerExtensions},
        probe_ssrc=probe_ssrc,
    )


def _canonical_name(name: str) -> str:
    for known in ("opus", "VP8", "H264"):
        if name.lower() == known.lower():
            return known
    return name
