"""Simulcast in SDP: a=rid / a=simulcast read from the raw text, answers with recv layers, malformed offers."""

from __future__ import annotations

import pytest

from sfuctl.client.offer import OPUS, VP8, H264, OfferSection, build_offer
from sfuctl.rtc.ice import IceParameters
from sfuctl.rtc.sdp import MID_URI, MediaAnswer, accepted_extensions, build_answer, choose_codec, parse_offer
from sfuctl.rtc.simulcast import REPAIRED_RID_URI, RID_URI, LayerBinding, SimulcastOffer, read_simulcast

ICE = IceParameters("ufrag123", "p" * 24)
FINGERPRINT = "sha-256 " + ":".join(["AB"] * 32)


def bot_offer(rids: tuple[str, ...] = ("q", "h", "f"), codecs=(VP8,)) -> str:
    sections = [
        OfferSection("0", "video", "sendonly", codecs, cname="bot-1", msid=("bot-1", "bot-1-video"), rids=rids),
        OfferSection("1", "audio", "sendonly", (OPUS,), ssrc=2222, cname="bot-1", msid=("bot-1", "bot-1-audio")),
    ]
    return build_offer(session_id=1, version=1, ice=ICE, fingerprint=FINGERPRINT, candidate=("127.0.0.1", 4000), sections=sections)


# The video m-section of what Chromium offers for three encodings (trimmed to what matters here).
CHROMIUM_VIDEO = """m=video 9 UDP/TLS/RTP/SAVPF 96 97 102
c=IN IP4 0.0.0.0
a=mid:1
a=extmap:4 urn:ietf:params:rtp-hdrext:sdes:mid
a=extmap:10 urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id
a=extmap:11 urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id
a=sendonly
a=rtcp-mux
a=rtpmap:96 VP8/90000
a=rtcp-fb:96 goog-remb
a=rtcp-fb:96 nack
a=rtcp-fb:96 nack pli
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
a=rtpmap:102 H264/90000
a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f
a=rid:q send
a=rid:h send
a=rid:f send
a=simulcast:send q;h;f
"""


def chromium_offer(video: str = CHROMIUM_VIDEO) -> str:
    head = """v=0
o=- 1 2 IN IP4 127.0.0.1
s=-
t=0 0
a=group:BUNDLE 0 1
m=audio 9 UDP/TLS/RTP/SAVPF 111
c=IN IP4 0.0.0.0
a=mid:0
a=ice-ufrag:abcd
a=ice-pwd:aaaaaaaaaaaaaaaaaaaaaaaa
a=fingerprint:sha-256 """ + ":".join(["AB"] * 32) + """
a=setup:actpass
a=sendonly
a=rtcp-mux
a=rtpmap:111 opus/48000/2
"""
    return (head + video).replace("\n", "\r\n")


def test_a_bot_offer_lists_its_encodings_and_reads_back() -> None:
    text = bot_offer()
    assert "a=rid:q send\r\n" in text and "a=simulcast:send q;h;f\r\n" in text
    video, audio = parse_offer(text).media
    assert video.simulcast == SimulcastOffer(rids=("q", "h", "f"))
    assert video.simulcast.layers == 3
    assert video.ssrc is None
    assert accepted_extensions(video) == {MID_URI: 1, RID_URI: 3}
    assert audio.simulcast is None


def test_chromium_offer_answers_recv_layers_without_repaired_rid() -> None:
    video = parse_offer(chromium_offer()).media[1]
    assert video.simulcast.rids == ("q", "h", "f")
    extensions = accepted_extensions(video)
    assert extensions == {MID_URI: 4, RID_URI: 10}
    answer = build_answer(
        session_id=1, ice=ICE, fingerprint=FINGERPRINT, candidate=("127.0.0.1", 5000), setup="passive",
        media=[MediaAnswer(video, choose_codec(video), "recvonly", extensions=extensions, rids=video.simulcast.rids)],
    )
    assert "a=rid:q recv\r\na=rid:h recv\r\na=rid:f recv\r\na=simulcast:recv q;h;f\r\n" in answer
    assert RID_URI in answer and REPAIRED_RID_URI not in answer


def test_an_answer_without_rids_has_no_simulcast_lines() -> None:
    video = parse_offer(bot_offer(rids=())).media[0]
    assert video.simulcast is None
    answer = build_answer(
        session_id=1, ice=ICE, fingerprint=FINGERPRINT, candidate=("127.0.0.1", 5000), setup="passive",
        media=[MediaAnswer(video, choose_codec(video), "recvonly")],
    )
    assert "a=rid" not in answer and "a=simulcast" not in answer


@pytest.mark.parametrize(
    ("lines", "kind", "expected"),
    [
        ([], "video", None),
        (["a=rid:a send", "a=simulcast:send a"], "video", SimulcastOffer(rids=("a",))),  # one layer: kept
        (["a=rid:1 send", "a=rid:2 send", "a=simulcast:send 2;1"], "video", SimulcastOffer(rids=("2", "1"))),
        # Alternatives and paused streams: the first alternative of each stream, '~' dropped.
        (["a=rid:a send", "a=rid:b send", "a=rid:c send", "a=simulcast:send a,c;~b"], "video", SimulcastOffer(rids=("a", "b"))),
        # A declared RID that a=simulcast does not list is not an encoding.
        (["a=rid:a send", "a=rid:b send", "a=simulcast:send b"], "video", SimulcastOffer(rids=("b",))),
        (["a=rid:a send pt=96;max-width=320", "a=simulcast:send a"], "video", SimulcastOffer(rids=("a",), payload_types=(("a", (96,)),))),
        (["a=ssrc-group:SIM 10 20 30"], "video", SimulcastOffer(ssrcs=(10, 20, 30))),
        # RIDs on an audio m-line are ignored: it stays one stream.
        (["a=rid:a send", "a=simulcast:send a"], "audio", None),
    ],
)
def test_read_simulcast(lines: list[str], kind: str, expected: SimulcastOffer | None) -> None:
    assert read_simulcast(["m=x"] + lines, kind) == expected


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["a=rid:a send", "a=simulcast:send a;x"], "names RID 'x', which has no a=rid:x send line"),
        (["a=rid:a recv", "a=simulcast:send a"], "must be 'send'"),
        (["a=rid:a send"], "a=rid without a=simulcast"),
        (["a=rid:a send", "a=rid:a send", "a=simulcast:send a"], "appears twice"),
        (["a=rid:a sideways", "a=simulcast:send a"], "malformed a=rid"),
        (["a=rid:this-rid-is-far-too-long send", "a=simulcast:send a"], "malformed a=rid"),
        (["a=rid:a send pt=x", "a=simulcast:send a"], "pt= takes payload type numbers"),
        (["a=rid:a send", "a=simulcast:recv a"], "the server sends one encoding"),
        (["a=rid:a send", "a=simulcast:send"], "malformed a=simulcast"),
        (["a=rid:a send", "a=simulcast:send a;a"], "repeats a RID"),
        (["a=rid:a send", "a=simulcast:send a", "a=simulcast:send a"], "appears twice"),
        ([f"a=rid:{r} send" for r in "abcd"] + ["a=simulcast:send a;b;c;d"], "at most 3"),
        (["a=ssrc-group:SIM 1 2 3 4"], "at most 3"),
        (["a=ssrc-group:SIM 1 x"], "SSRCs must be numbers"),
        (["a=ssrc-group:SIM 1 1"], "distinct SSRCs"),
    ],
)
def test_read_simulcast_rejects_malformed(lines: list[str], message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_simulcast(["m=x"] + lines, "video")


def test_parse_offer_names_the_m_line_of_a_malformed_simulcast() -> None:
    text = chromium_offer(CHROMIUM_VIDEO.replace("a=simulcast:send q;h;f", "a=simulcast:send q;h;z"))
    with pytest.raises(ValueError, match=r"m-line 1 \(mid 1\): a=simulcast names RID 'z'"):
        parse_offer(text)


def test_layers_of_different_codecs_pick_a_codec_every_layer_allows() -> None:
    video = CHROMIUM_VIDEO.replace("a=rid:q send", "a=rid:q send pt=102").replace("a=rid:h send", "a=rid:h send pt=96,102")
    assert choose_codec(parse_offer(chromium_offer(video)).media[1]).name == "H264"
    apart = CHROMIUM_VIDEO.replace("a=rid:q send", "a=rid:q send pt=102").replace("a=rid:h send", "a=rid:h send pt=96")
    assert choose_codec(parse_offer(chromium_offer(apart)).media[1]) is None


def test_client_offer_refuses_rids_where_they_cannot_be() -> None:
    with pytest.raises(ValueError, match="only a sendonly video m-line"):
        OfferSection("0", "audio", "sendonly", (OPUS,), rids=("a",))
    with pytest.raises(ValueError, match="only a sendonly video m-line"):
        OfferSection("0", "video", "recvonly", (VP8, H264), rids=("a",))


@pytest.mark.parametrize(
    ("packets", "expected", "unknown"),
    [
        # (ssrc, rid) seen in order -> the index each returns
        ([(10, b"q"), (10, None), (20, b"f"), (20, None)], [0, 0, 2, 2], 0),
        ([(10, None)], [None], 0),  # no RID yet, no binding
        ([(10, b"zz"), (10, b"h")], [None, 1], 1),  # unknown RID counted, then bound
        ([(10, b"q"), (10, b"h")], [0, 0], 0),  # a binding is kept
        ([(10, b"q"), (11, b"q"), (10, None)], [0, 0, None], 0),  # a new SSRC for an encoding replaces the old
    ],
)
def test_layer_binding_binds_on_first_sight(packets, expected, unknown) -> None:
    binding = LayerBinding(rids=("q", "h", "f"))
    assert [binding.bind(ssrc, rid) for ssrc, rid in packets] == expected
    assert binding.unknown_rids == unknown


def test_layer_binding_from_a_sim_group_needs_no_rid() -> None:
    binding = LayerBinding(ssrcs=(10, 20))
    assert (binding.bind(20, None), binding.bind(10, None), binding.bind(30, None)) == (1, 0, None)
