"""SDP offers in, SDP answers out: the server always answers, the client always offers.

Parsing reuses aiortc's SDP parser (which reads ICE and DTLS attributes at session or media level, as RFC 8866
and RFC 9429 allow) plus a pass of its own for what aiortc drops (a=bundle-only, the offered formats of m-lines
it cannot read). The answer is written here because it carries what an ICE-lite SFU says and aiortc does not
(a=ice-lite, one host candidate, per-consumer SSRC and msid).

BUNDLE (RFC 9143): an m-line offered with port 0 and a=bundle-only inside the BUNDLE group (what JSEP's
max-bundle policy writes for every m-line but the first) is accepted into the group like any other; the answer
names only accepted m-lines in its group and writes a rejected m-line with port 0, the offer's protocol and
formats, and the session-level ICE credentials, fingerprint and setup that strict parsers (GStreamer, Pion,
libdatachannel) look for on every m-line.
An m-line outside the BUNDLE group (every m-line of an offer without one: webrtcbin's bundle-policy=none) asks for
a transport of its own (its own ICE credentials, DTLS and SRTP): the offer lists them as TransportOffers, and
the answer writes each m-line's own transport's ICE credentials. Data channels ride the first transport only.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from aiortc import sdp as aiortc_sdp

from .ice import IceParameters
from .simulcast import RID_URI, SimulcastOffer, answer_lines, media_sections, read_simulcast
from .transport_feedback import TRANSPORT_CC_URI

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
# The SCTP port of data channels (RFC 8841 a=sctp-port); every browser uses 5000.
SCTP_PORT = 5000
AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"  # RFC 6464: V bit and level in -dBov
SUPPORTED_EXTENSIONS = {"audio": (MID_URI, AUDIO_LEVEL_URI), "video": (MID_URI,)}
VIDEO_FEEDBACK = (("nack", None), ("nack", "pli"), ("ccm", "fir"))
# Transport-wide congestion control: the header extension and the rtcp-fb that asks for its feedback.
TRANSPORT_CC_FEEDBACK = ("transport-cc", None)
CODEC_PREFERENCE = {"audio": ("opus",), "video": ("VP8", "H264")}
CLOCK_RATES = {"opus": 48000, "VP8": 90000, "H264": 90000}


@dataclass(frozen=True)
class Codec:
    """One RTP payload format as negotiated in SDP."""

    name: str
    clock_rate: int
    payload_type: int
    channels: int | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    feedback: tuple[tuple[str, str | None], ...] = ()

    @property
    def mime_type(self) -> str:
        kind = "audio" if self.name == "opus" else "video"
        return f"{kind}/{self.name}"

    def fmtp(self) -> str:
        return ";".join(f"{k}={v}" for k, v in self.parameters)

    def has_feedback(self, kind: str, parameter: str | None = None) -> bool:
        return (kind, parameter) in self.feedback


@dataclass
class MediaOffer:
    """One m-line of a client's offer."""

    index: int
    mid: str
    kind: str
    direction: str
    codecs: list[Codec]
    extensions: dict[str, int]
    ssrc: int | None
    cname: str | None
    rejected: bool
    proto: str = "UDP/TLS/RTP/SAVPF"
    formats: tuple[str, ...] = ()
    bundle_only: bool = False
    # An m=application (data channels) section: its a=sctp-port and a=max-message-size.
    sctp_port: int | None = None
    max_message_size: int | None = None
    simulcast: SimulcastOffer | None = None


@dataclass(frozen=True)
class TransportOffer:
    """One ICE/DTLS transport an offer asks for: its BUNDLE group, or one m-line outside any group."""

    mids: tuple[str, ...]  # the live m-lines it carries; the first is its tag (RFC 9143)
    ice: IceParameters
    fingerprints: list[tuple[str, str]]
    setup: str


@dataclass
class Offer:
    """What the server needs from a client's offer; `ice`, `fingerprints` and `setup` are its first transport's."""

    ice: IceParameters
    fingerprints: list[tuple[str, str]]
    setup: str
    candidates: list[tuple[str, int]]
    media: list[MediaOffer]
    bundle: tuple[str, ...] | None = None  # the mids of the offer's BUNDLE group; None when it has none
    transports: list[TransportOffer] = field(default_factory=list)  # the first carries the BUNDLE group, if any

    @property
    def application(self) -> MediaOffer | None:
        """The accepted-looking m=application section (data channels), if the offer has one."""
        return next((m for m in self.media if m.kind == "application" and not m.rejected), None)


@dataclass
class MediaAnswer:
    """The server's side of one m-line; codec None rejects an audio/video one, max_message_size None an
    application one."""

    offer: MediaOffer
    codec: Codec | None
    direction: str
    ssrc: int | None = None
    cname: str | None = None
    msid: tuple[str, str] | None = None
    extensions: dict[str, int] = field(default_factory=dict)
    rids: tuple[str, ...] = ()  # simulcast encodings the server receives on this m-line
    max_message_size: int | None = None
    # The transport's padding-only probe SSRC, announced after the consumer's (announce_probe picks the m-line).
    probe_ssrc: int | None = None
    # The ICE credentials and DTLS setup of the m-line's own transport, when it is not the first (no BUNDLE).
    transport: tuple[IceParameters, str] | None = None

    @property
    def accepted(self) -> bool:
        return self.codec is not None or (self.offer.kind == "application" and self.max_message_size is not None)


def parse_session(text: str, what: str = "SDP") -> aiortc_sdp.SessionDescription:
    """aiortc's parse of an SDP text, its assorted errors turned into one ValueError naming `what`."""
    if not isinstance(text, str) or not text.startswith("v=0"):
        raise ValueError(f"{what} must be a string starting with 'v=0'")
    try:
        return aiortc_sdp.SessionDescription.parse(text)
    except Exception as exc:  # aiortc raises assorted errors (assert, KeyError, ValueError)
        raise ValueError(f"malformed {what}: {type(exc).__name__} {exc}".strip()) from None


def parse_offer(text: str) -> Offer:
    """Parse a client's SDP offer; ValueError names what is missing or malformed."""
    session = parse_session(text)
    if not session.media:
        raise ValueError("SDP has no m= section")
    raw_sections = media_sections(text)
    sections = _raw_sections(raw_sections)
    mids = [m.rtp.muxId for m in session.media]
    bundle = _bundle_group(session, mids)
    in_bundle = set(bundle or ())
    bundle_only = [
        "bundle-only" in attributes and mid in in_bundle for (_, attributes), mid in zip(sections, mids)
    ]
    live = [m for m, only in zip(session.media, bundle_only) if m.port != 0 or only]
    transports = _transport_offers(text, session, live, bundle)
    media: list[MediaOffer] = []
    candidates: list[tuple[str, int]] = []
    for index, m in enumerate(session.media):
        for c in m.ice_candidates:
            if c.protocol.lower() == "udp" and (c.ip, c.port) not in candidates:
                candidates.append((c.ip, c.port))
        proto, formats = sections[index][0]
        rejected = m.port == 0 and not bundle_only[index]
        if m.kind == "application" and m.sctp_port is not None and "SCTP" in proto:
            if not m.rtp.muxId:
                raise ValueError(f"m-line {index} (application) has no a=mid")
            caps = m.sctpCapabilities
            rejected = rejected or m.rtp.muxId not in transports[0].mids  # data channels: the first transport only
            media.append(
                MediaOffer(
                    index, m.rtp.muxId, "application", "sendrecv", [], {}, None, None, rejected, proto, formats,
                    bundle_only[index], sctp_port=m.sctp_port, max_message_size=caps.maxMessageSize if caps else None,
                )
            )
            continue
        if m.kind not in ("audio", "video"):
            media.append(
                MediaOffer(index, m.rtp.muxId or str(index), m.kind, "inactive", [], {}, None, None, True, proto, formats)
            )
            continue
        if not m.rtp.muxId:
            raise ValueError(f"m-line {index} ({m.kind}) has no a=mid")
        primary_ssrc, cname = _primary_ssrc(m)
        try:
            simulcast = None if rejected else read_simulcast(raw_sections[index], m.kind)
        except ValueError as exc:
            raise ValueError(f"m-line {index} (mid {m.rtp.muxId}): {exc}") from None
        media.append(
            MediaOffer(
                index=index,
                mid=m.rtp.muxId,
                kind=m.kind,
                direction=m.direction or "sendrecv",
                codecs=[_codec(c) for c in m.rtp.codecs],
                extensions={e.uri: e.id for e in m.rtp.headerExtensions},
                ssrc=primary_ssrc,
                cname=cname,
                rejected=rejected,
                proto=proto,
                formats=formats,
                bundle_only=bundle_only[index],
                simulcast=simulcast,
            )
        )
    offered_mids = [m.mid for m in media]
    if len(set(offered_mids)) != len(offered_mids):
        raise ValueError("SDP repeats an a=mid value")
    carried = {m.mid for m in media if not m.rejected}
    transports = [
        TransportOffer(mids, t.ice, t.fingerprints, t.setup)
        for t in transports
        if (mids := tuple(mid for mid in t.mids if mid in carried)) or t is transports[0]
    ]
    first = transports[0]
    return Offer(
        ice=first.ice,
        fingerprints=first.fingerprints,
        setup=first.setup,
        candidates=candidates,
        media=media,
        bundle=bundle,
        transports=transports,
    )


def _transport_offers(
    text: str, session: aiortc_sdp.SessionDescription, live: list, bundle: tuple[str, ...] | None
) -> list[TransportOffer]:
    """The transports an offer asks for, in m-line order: the BUNDLE group's (ICE and DTLS from its first live
    m-line, the tag), then one per live m-line outside it, each with its own ICE and DTLS attributes (read at media
    or session level). A renegotiation may start with a rejected m-line (port 0, no ICE attributes, as JSEP
    writes it); an offer with no live m-line still needs credentials (its first m-line's). An m-line of a kind the
    server does not take, outside the group, is rejected without a transport."""
    group = set(bundle or ())
    parts: list[tuple[str, ...]] = []
    tags: list = []
    wanted = [m for m in live if m.rtp.muxId in group or m.kind in ("audio", "video", "application")]
    for m in wanted or session.media[:1]:
        if m.rtp.muxId in group:
            if any(set(p) & group for p in parts):
                continue
            parts.append(tuple(mid for mid in (x.rtp.muxId for x in live) if mid in group))
        else:
            parts.append((m.rtp.muxId,) if m.rtp.muxId else ())
        tags.append(m)
    transports = []
    for number, (mids, m) in enumerate(zip(parts, tags)):
        index = next(i for i, x in enumerate(session.media) if x is m)
        where = "SDP" if number == 0 else f"m-line {index} (mid {m.rtp.muxId}, outside BUNDLE)"
        if m.ice is None or not m.ice.usernameFragment or not m.ice.password:
            raise ValueError(f"{where} lacks a=ice-ufrag / a=ice-pwd")
        # aiortc drops the fingerprints of an m-line without a=setup
        if m.dtls is None and "\na=fingerprint:" in text:
            raise ValueError(f"{where} lacks a=setup (RFC 8842: an offer says a=setup:actpass)")
        if m.dtls is None or not m.dtls.fingerprints:
            raise ValueError(f"{where} lacks a=fingerprint and a=setup")
        transports.append(
            TransportOffer(
                mids,
                IceParameters(m.ice.usernameFragment, m.ice.password),
                list(dict.fromkeys((f.algorithm, f.value) for f in m.dtls.fingerprints)),
                aiortc_sdp.DTLS_ROLE_SETUP[m.dtls.role],
            )
        )
    return transports


def _bundle_group(session: aiortc_sdp.SessionDescription, mids: list[str | None]) -> tuple[str, ...] | None:
    """The mids of the offer's BUNDLE group (RFC 9143), None without one; ValueError if it names an absent mid."""
    groups = [g for g in session.group if g.semantic == "BUNDLE"]
    if not groups:
        return None
    if len(groups) > 1:
        raise ValueError("SDP has several a=group:BUNDLE lines; this server takes one BUNDLE group")
    group = tuple(str(mid) for mid in groups[0].items)
    for mid in group:
        if mid not in mids:
            raise ValueError(f"a=group:BUNDLE names mid {mid!r}, which no m-line has")
    return group


def _raw_sections(raw: list[list[str]]) -> list[tuple[tuple[str, tuple[str, ...]], set[str]]]:
    """Per m-line (its lines from media_sections): (protocol, formats) from its m= line and the names of its
    a= attributes."""
    sections: list[tuple[tuple[str, tuple[str, ...]], set[str]]] = []
    for m_line, *lines in raw:
        fields = m_line[2:].split()
        attributes = {line[2:].split(":", 1)[0].strip() for line in lines if line.startswith("a=")}
        sections.append(((fields[2] if len(fields) > 2 else "", tuple(fields[3:])), attributes))
    return sections


def choose_codec(
    offer: MediaOffer,
    name: str | None = None,
    extra_feedback: tuple[tuple[str, str | None], ...] = (),
    transport_cc: bool = False,
) -> Codec | None:
    """The codec the server accepts on an m-line: `name` when given (a consumer must match its producer);
    `extra_feedback` is answered too when offered (beyond VIDEO_FEEDBACK), and transport-cc with `transport_cc`."""
    names = (name,) if name else CODEC_PREFERENCE.get(offer.kind, ())
    simulcast = offer.simulcast
    for wanted in names:
        candidates = [c for c in offer.codecs if c.name.lower() == wanted.lower()]
        if simulcast is not None:  # every encoding must be able to use it
            candidates = [c for c in candidates if simulcast.allows(c.payload_type)]
        if wanted.upper() == "H264":
            candidates = [c for c in candidates if dict(c.parameters).get("packetization-mode") == "1"]
            candidates.sort(key=lambda c: dict(c.parameters).get("profile-level-id", "")[:2] != "42")
        if candidates:
            chosen = candidates[0]
            answered = VIDEO_FEEDBACK + extra_feedback if offer.kind == "video" else ()
            if transport_cc:
                answered = (*answered, TRANSPORT_CC_FEEDBACK)
            feedback = tuple(f for f in chosen.feedback if f in answered)
            return Codec(chosen.name, chosen.clock_rate, chosen.payload_type, chosen.channels, chosen.parameters, feedback)
    return None


def answer_direction(offered: str, server_sends: bool) -> str:
    """The answer's direction for an offered one, from the server's point of view."""
    if server_sends:
        return "sendonly" if offered in ("recvonly", "sendrecv") else "inactive"
    return "recvonly" if offered in ("sendonly", "sendrecv") else "inactive"


def address_type(ip: str) -> str:
    """SDP's address type of an IP address (RFC 8866 c= and o= lines)."""
    return "IP6" if ":" in ip else "IP4"


# Candidate priorities (RFC 8445 section 5.1.2.1): type preference 126 (host) for all; the local preference
# puts every UDP candidate before every TCP one (RFC 6544 section 4.2: direction preference 4 for passive, in the
# top 3 bits), and the first address before the next.
HOST_TYPE_PREFERENCE = 126
UDP_LOCAL_PREFERENCE = 65535
TCP_PASSIVE_LOCAL_PREFERENCE = (4 << 13) | 8191


@dataclass(frozen=True)
class HostCandidates:
    """The server's host candidates: each of `ips` on one `port`, over UDP and/or TCP (RFC 6544 passive)."""

    ips: tuple[str, ...]
    port: int
    udp: bool = True
    tcp: bool = False

    @classmethod
    def of(cls, candidate: tuple[str, int] | HostCandidates) -> HostCandidates:
        """`candidate` as HostCandidates (a (host, port) pair is one UDP host candidate)."""
        return candidate if isinstance(candidate, HostCandidates) else cls((candidate[0],), candidate[1])

    def lines(self) -> list[str]:
        """The a=candidate lines, UDP first."""
        lines = []
        foundation = 1
        for protocol, local_preference, tail in (("udp", UDP_LOCAL_PREFERENCE, ""), ("tcp", TCP_PASSIVE_LOCAL_PREFERENCE, " tcptype passive")):
            if not (self.udp if protocol == "udp" else self.tcp):
                continue
            for index, ip in enumerate(self.ips):
                priority = (HOST_TYPE_PREFERENCE << 24) | ((local_preference - index) << 8) | 255
                lines.append(f"a=candidate:{foundation} 1 {protocol} {priority} {ip} {self.port} typ host{tail}")
                foundation += 1
        return lines


def dtls_role_for(setup: str) -> str:
    """The server's DTLS role given the offer's a=setup (RFC 5763: answer passive to actpass)."""
    return "client" if setup == "passive" else "server"


def build_answer(
    *,
    session_id: int,
    ice: IceParameters,
    fingerprint: str,
    candidate: tuple[str, int] | HostCandidates,
    setup: str,
    media: list[MediaAnswer],
    bundle: tuple[str, ...] | None = None,
) -> str:
    """Write the answer SDP for a list of answered m-lines, in the offer's order.

    `candidate` is one UDP host address, or the server's HostCandidates. `bundle` is the offer's BUNDLE group:
    the answer's group names the accepted m-lines of it, and is left out when the offer had none (RFC 9143: the
    answerer never creates a group).
    """
    candidates = HostCandidates.of(candidate)
    host, port = candidates.ips[0], candidates.port
    ip = f"{address_type(host)} {host}"
    bundle_mids = [m.offer.mid for m in media if m.accepted and bundle is not None and m.offer.mid in bundle]
    algorithm, value = fingerprint.split(" ", 1)
    lines = [
        "v=0",
        f"o=sfuctl {session_id} 2 IN {ip}",
        "s=sfuctl",
        "t=0 0",
        "a=ice-lite",
        f"a=ice-ufrag:{ice.ufrag}",
        f"a=ice-pwd:{ice.pwd}",
        f"a=fingerprint:{algorithm} {value}",
        f"a=setup:{setup}",
        "a=msid-semantic: WMS *",
    ]
    if bundle_mids:
        lines.append("a=group:BUNDLE " + " ".join(bundle_mids))
    def transport_lines(m: MediaAnswer) -> list[str]:
        own_ice, own_setup = m.transport or (ice, setup)
        return [
            f"a=ice-ufrag:{own_ice.ufrag}",
            f"a=ice-pwd:{own_ice.pwd}",
            f"a=fingerprint:{algorithm} {value}",
            f"a=setup:{own_setup}",
            *candidates.lines(),
            "a=end-of-candidates",
        ]

    for m in media:
        offer = m.offer
        if not m.accepted:
            formats = " ".join(offer.formats) or " ".join(str(c.payload_type) for c in offer.codecs) or "0"
            # a=setup repeated here: webrtcbin reads it per m-line only, rejected ones included.
            lines += [f"m={offer.kind} 0 {offer.proto} {formats}", f"c=IN {ip}", f"a=mid:{offer.mid}", "a=inactive",
                      f"a=setup:{setup}"]
            continue
        if offer.kind == "application":
            lines += [
                f"m=application {port} UDP/DTLS/SCTP webrtc-datachannel",
                f"c=IN {ip}",
                f"a=mid:{offer.mid}",
                *transport_lines(m),
                f"a=sctp-port:{SCTP_PORT}",
                f"a=max-message-size:{m.max_message_size}",
            ]
            continue
        codec = m.codec
        assert codec is not None
        lines += [
            f"m={offer.kind} {port} UDP/TLS/RTP/SAVPF {codec.payload_type}",
            f"c=IN {ip}",
            f"a=rtcp:{port} IN {ip}",
            f"a=mid:{offer.mid}",
            f"a={m.direction}",
            "a=rtcp-mux",
            "a=rtcp-rsize",
            *transport_lines(m),
        ]
        for uri, ext_id in m.extensions.items():
            lines.append(f"a=extmap:{ext_id} {uri}")
        channels = f"/{codec.channels}" if codec.channels and codec.channels > 1 else ""
        lines.append(f"a=rtpmap:{codec.payload_type} {codec.name}/{codec.clock_rate}{channels}")
        if codec.parameters:
            lines.append(f"a=fmtp:{codec.payload_type} {codec.fmtp()}")
        for kind, parameter in codec.feedback:
            lines.append(f"a=rtcp-fb:{codec.payload_type} {kind}" + (f" {parameter}" if parameter else ""))
        lines += answer_lines(m.rids)
        if m.ssrc is not None:
            if m.msid:
                lines.append(f"a=msid:{m.msid[0]} {m.msid[1]}")
            lines.append(f"a=ssrc:{m.ssrc} cname:{m.cname or 'sfuctl'}")
            if m.probe_ssrc is not None:
                lines.append(f"a=ssrc:{m.probe_ssrc} cname:{m.cname or 'sfuctl'}")
    return "\r\n".join(lines) + "\r\n"


def announce_probe(media: list[MediaAnswer], mids: tuple[str, ...], ssrc: int) -> list[MediaAnswer]:
    """`media` with a transport's probe SSRC announced on the first of its m-lines (`mids`) that sends a video
    consumer with transport-cc, after the consumer's SSRC. A second SSRC without an ssrc-group leaves the track on
    the first one (libwebrtc binds the receive stream to the first; the second only routes packets to the m-line);
    never on an audio m-line (libwebrtc's audio channel makes an unsignalled receive stream of every SSRC it has
    none for). Unchanged without such an m-line."""
    for index, m in enumerate(media):
        if (m.offer.mid in mids and m.offer.kind == "video" and m.ssrc is not None and m.direction == "sendonly"
                and TRANSPORT_CC_URI in m.extensions):
            return [*media[:index], replace(m, probe_ssrc=ssrc), *media[index + 1:]]
    return media


def accepted_extensions(offer: MediaOffer, transport_cc: bool = False) -> dict[str, int]:
    """The header extensions the server uses on an m-line (their ids come from the offer); the RID one only where
    the offer announces encodings by RID, transport-cc only with `transport_cc`."""
    supported = SUPPORTED_EXTENSIONS.get(offer.kind, ())
    if offer.simulcast is not None and offer.simulcast.rids:
        supported = (*supported, RID_URI)
    if transport_cc:
        supported = (*supported, TRANSPORT_CC_URI)
    return {uri: ext_id for uri, ext_id in offer.extensions.items() if uri in supported}


def _codec(c: object) -> Codec:
    name = c.mimeType.split("/", 1)[1]
    for known in CLOCK_RATES:
        if name.lower() == known.lower():
            name = known
    return Codec(
        name=name,
        clock_rate=c.clockRate,
        payload_type=c.payloadType,
        channels=c.channels,
        parameters=tuple((str(k), str(v)) for k, v in (c.parameters or {}).items()),
        feedback=tuple((f.type, f.parameter) for f in c.rtcpFeedback),
    )


def _primary_ssrc(m: object) -> tuple[int | None, str | None]:
    """The media SSRC of an m-line: the first one that is not a retransmission (FID) or FEC SSRC."""
    secondary = {g.items[1] for g in m.ssrc_group if g.semantic in ("FID", "FEC-FR") and len(g.items) > 1}
    for s in m.ssrc:
        if s.ssrc not in secondary:
            return s.ssrc, s.cname
    return None, None


@dataclass
class IceFragment:
    """A trickle-ice-sdpfrag body (RFC 8840): ICE credentials when it carries them, and candidates."""

    ice: IceParameters | None  # the first credentials it carries
    candidates: list[str]  # a=candidate values, as written
    end_of_candidates: bool
    # Its credentials by the mid of the m= section they are under (None: session level, for every m-line).
    credentials: dict[str | None, IceParameters] = field(default_factory=dict)


MAX_FRAGMENT_BYTES = 16 * 1024  # a fragment carries credentials and a few candidates, never more than this


def parse_ice_fragment(text: str) -> IceFragment:
    """Read a trickle-ice-sdpfrag; ValueError names the first malformed line. Unknown attributes are ignored."""
    if len(text.encode()) > MAX_FRAGMENT_BYTES:
        raise ValueError(f"the fragment is over {MAX_FRAGMENT_BYTES} bytes")
    sections: list[dict[str, str | None]] = [{"mid": None, "ice-ufrag": None, "ice-pwd": None}]  # session, then m=
    candidates: list[str] = []
    end = False
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines:
        raise ValueError("the fragment is empty (it needs a=ice-ufrag/a=ice-pwd or a=candidate lines)")
    for number, line in enumerate(lines, 1):
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise ValueError(f"line {number} is not an SDP line: {line[:60]!r}")
        if line.startswith("m="):
            if len(line[2:].split()) < 4:
                raise ValueError(f"line {number} is a malformed m= line: {line[:60]!r}")
            sections.append({"mid": None, "ice-ufrag": None, "ice-pwd": None})
        if not line.startswith("a="):
            continue
        name, _, value = line[2:].partition(":")
        if name in ("ice-ufrag", "ice-pwd", "mid"):
            sections[-1][name] = value.strip()
        elif name == "candidate":
            try:
                aiortc_sdp.candidate_from_sdp(value.strip())
            except Exception:  # aiortc raises assorted errors (IndexError, ValueError)
                raise ValueError(f"line {number} is a malformed a=candidate: {line[:80]!r}") from None
            candidates.append(value.strip())
        elif name == "end-of-candidates":
            end = True
    credentials: dict[str | None, IceParameters] = {}
    for index, section in enumerate(sections):
        ufrag, pwd = section["ice-ufrag"], section["ice-pwd"]
        if (ufrag is None) != (pwd is None):
            raise ValueError("the fragment has only one of a=ice-ufrag and a=ice-pwd (they go together)")
        if ufrag is not None and pwd is not None:
            if index and section["mid"] is None:
                raise ValueError(f"m= section {index} has ICE credentials but no a=mid naming its m-line")
            credentials[section["mid"]] = IceParameters(ufrag, pwd)
    first = next(iter(credentials.values()), None)
    return IceFragment(first, candidates, end, credentials)


def build_ice_fragment(*, candidates: HostCandidates, restarted: list[tuple[IceParameters, tuple[str, str, int]]]) -> str:
    """The server's answer to an ICE restart (RFC 9725 section 4.3.2): for each restarted transport, its new
    credentials and its candidates under its tag m-line (the BUNDLE tag's; `restarted`: credentials and (kind, mid,
    payload type))."""
    lines = ["a=ice-lite"]
    for ice, (kind, mid, payload_type) in restarted:
        lines += [
            f"m={kind} 9 UDP/TLS/RTP/SAVPF {payload_type}",
            f"a=mid:{mid}",
            f"a=ice-ufrag:{ice.ufrag}",
            f"a=ice-pwd:{ice.pwd}",
            *candidates.lines(),
            "a=end-of-candidates",
        ]
    return "\r\n".join(lines) + "\r\n"
