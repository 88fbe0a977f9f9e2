"""Client offers read by the server's parser, and server answers read by the client."""

from __future__ import annotations

import pytest

from sfuctl.client.offer import (
    H264,
    OPUS,
    RECEIVE_CODECS,
    VP8,
    Answer,
    AnswerMedia,
    OfferSection,
    build_offer,
    parse_answer,
    simulcast_rids,
)
from sfuctl.rtc.ice import IceParameters
from sfuctl.rtc.rtp import build_packet, read_extensions
from sfuctl.rtc.sdp import MID_URI, Codec, MediaAnswer, build_answer, choose_codec, parse_offer
from sfuctl.rtc.simulcast import RID_URI

ICE = IceParameters("ufrag123", "p" * 24)
FINGERPRINT = "sha-256 " + ":".join(["AB"] * 32)
SERVER_ICE = IceParameters("srvfrag1", "s" * 24)


def offer(sections: list[OfferSection], candidate: tuple[str, int] = ("127.0.0.1", 40123)) -> str:
    return build_offer(
        session_id=42, version=3, ice=ICE, fingerprint=FINGERPRINT, candidate=candidate, sections=sections
    )


def publish_sections() -> list[OfferSection]:
    return [
        OfferSection("0", "video", "sendonly", (VP8,), ssrc=1111, cname="bot-1", msid=("bot-1", "bot-1-video")),
        OfferSection("1", "audio", "sendonly", (OPUS,), ssrc=2222, cname="bot-1", msid=("bot-1", "bot-1-audio")),
    ]


def test_publish_offer_reads_back_through_the_server_parser() -> None:
    parsed = parse_offer(offer(publish_sections()))
    assert parsed.ice == ICE
    assert parsed.fingerprints == [("sha-256", FINGERPRINT.split(" ", 1)[1])]
    assert parsed.setup == "actpass"
    assert parsed.candidates == [("127.0.0.1", 40123)]
    video, audio = parsed.media
    assert (video.mid, video.kind, video.direction, video.ssrc, video.cname) == ("0", "video", "sendonly", 1111, "bot-1")
    assert (audio.mid, audio.kind, audio.direction, audio.ssrc) == ("1", "audio", "sendonly", 2222)
    assert video.extensions == {MID_URI: 1}
    assert choose_codec(video) == Codec("VP8", 90000, 96, None, (), (("nack", None), ("nack", "pli"), ("ccm", "fir")))
    assert choose_codec(audio).name == "opus"
    assert choose_codec(audio).channels == 2


def test_receive_offer_offers_every_codec_and_writes_inactive_lines_with_port_zero() -> None:
    sections = [
        OfferSection("0", "video", "recvonly", RECEIVE_CODECS["video"]),
        OfferSection("1", "audio", "inactive", RECEIVE_CODECS["audio"]),
    ]
    text = offer(sections)
    parsed = parse_offer(text)
    video, audio = parsed.media
    assert video.direction == "recvonly" and not video.rejected
    assert [c.name for c in video.codecs] == ["VP8", "H264"]
    assert dict(video.codecs[1].parameters)["packetization-mode"] == "1"
    assert audio.rejected
    assert "a=group:BUNDLE 0\r\n" in text
    assert "m=audio 0 UDP/TLS/RTP/SAVPF 111\r\n" in text


def test_renegotiation_keeps_credentials_and_bumps_the_version() -> None:
    first = offer([OfferSection("0", "video", "recvonly", (VP8,))])
    second = build_offer(
        session_id=42, version=4, ice=ICE, fingerprint=FINGERPRINT, candidate=("127.0.0.1", 40123),
        sections=[OfferSection("0", "video", "recvonly", (VP8,)), OfferSection("1", "audio", "recvonly", (OPUS,))],
    )
    assert "o=- 42 3 IN IP4" in first and "o=- 42 4 IN IP4" in second
    assert parse_offer(first).ice == parse_offer(second).ice


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mid": "0", "kind": "data", "direction": "recvonly", "codecs": (VP8,)}, "m-line kind must be 'audio', 'video' or 'application', not 'data'"),
        ({"mid": "0", "kind": "application", "direction": "recvonly", "codecs": ()}, "application m-line 0 takes no codecs or SSRC and is sendrecv or inactive"),
        ({"mid": "0", "kind": "video", "direction": "up", "codecs": (VP8,)}, "m-line direction must be one of sendonly, recvonly, sendrecv, inactive, not 'up'"),
        ({"mid": "a b", "kind": "video", "direction": "recvonly", "codecs": (VP8,)}, "mid must be a non-empty token, not 'a b'"),
        ({"mid": "0", "kind": "video", "direction": "recvonly", "codecs": ()}, "m-line 0 needs at least one codec"),
        ({"mid": "0", "kind": "video", "direction": "sendonly", "codecs": (VP8,), "ssrc": 0}, "SSRC 0 outside 1..2^32-1"),
    ],
)
def test_offer_section_rejects_bad_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as error:
        OfferSection(**kwargs)
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("sections", "fingerprint", "message"),
    [
        ([], FINGERPRINT, "an offer needs at least one m-line"),
        ([OfferSection("0", "video", "recvonly", (VP8,))] * 2, FINGERPRINT, "offer repeats a mid"),
        ([OfferSection("0", "video", "recvonly", (VP8,))], "AB:CD", "fingerprint must be '<algorithm> <hex>'"),
    ],
)
def test_build_offer_rejects_bad_input(sections: list, fingerprint: str, message: str) -> None:
    with pytest.raises(ValueError) as error:
        build_offer(session_id=1, version=1, ice=ICE, fingerprint=fingerprint, candidate=("127.0.0.1", 1), sections=sections)
    assert str(error.value) == message


def server_answer(setup: str = "passive") -> str:
    """An answer written by the server's own SDP writer for a receive offer of three m-lines."""
    parsed = parse_offer(
        offer(
            [
                OfferSection("0", "video", "recvonly", RECEIVE_CODECS["video"]),
                OfferSection("1", "audio", "recvonly", RECEIVE_CODECS["audio"]),
                OfferSection("2", "video", "inactive", RECEIVE_CODECS["video"]),
            ]
        )
    )
    video, audio, gone = parsed.media
    media = [
        MediaAnswer(video, choose_codec(video, "H264"), "sendonly", ssrc=777, cname="peer-a",
                    msid=("peer-a", "p-1"), extensions={MID_URI: 1}),
        MediaAnswer(audio, choose_codec(audio), "sendonly", ssrc=888, cname="peer-a", msid=("peer-a", "p-2")),
        MediaAnswer(gone, None, "inactive"),
    ]
    return build_answer(
        session_id=9, ice=SERVER_ICE, fingerprint=FINGERPRINT, candidate=("127.0.0.1", 40000), setup=setup, media=media
    )


def test_parse_answer_reads_what_a_client_needs_per_mid() -> None:
    answer = parse_answer(server_answer())
    assert isinstance(answer, Answer)
    assert answer.ice == SERVER_ICE
    assert answer.ice_lite
    assert answer.candidates == [("127.0.0.1", 40000)]
    assert answer.fingerprints == [("sha-256", FINGERPRINT.split(" ", 1)[1])]
    assert (answer.setup, answer.dtls_role) == ("passive", "client")
    video, audio, gone = answer.media["0"], answer.media["1"], answer.media["2"]
    assert video.codec is not None and (video.codec.name, video.codec.payload_type) == ("H264", H264.payload_type)
    assert video.codec.has_feedback("nack") and video.codec.has_feedback("nack", "pli")
    assert (video.ssrc, video.cname, video.msid, video.direction) == (777, "peer-a", ("peer-a", "p-1"), "sendonly")
    assert video.extensions == {MID_URI: 1}
    assert audio.codec is not None and (audio.codec.name, audio.codec.clock_rate, audio.ssrc) == ("opus", 48000, 888)
    assert not audio.codec.feedback
    assert gone.codec is None and gone.direction == "inactive"


def test_an_active_answer_makes_the_client_the_dtls_server() -> None:
    assert parse_answer(server_answer(setup="active")).dtls_role == "server"


@pytest.mark.parametrize(
    ("mangle", "message"),
    [
        (lambda s: 42, "SDP answer must be a string starting with 'v=0'"),
        (lambda s: "hello", "SDP answer must be a string starting with 'v=0'"),
        (lambda s: s.replace("a=ice-pwd:", "a=x-pwd:"), "SDP answer lacks a=ice-ufrag / a=ice-pwd"),
        (lambda s: s.replace("a=fingerprint:", "a=x-fingerprint:"), "SDP answer lacks a=fingerprint / a=setup"),
        (lambda s: s.replace("a=setup:passive", "a=setup:actpass"), "SDP answer has a=setup:actpass; an answer must say active or passive"),
        (lambda s: s.replace("a=candidate:", "a=x-candidate:"), "SDP answer has no UDP candidate nor an ICE-TCP passive one"),
        (lambda s: s.split("m=video")[0], "SDP answer accepts no m-line"),
    ],
)
def test_parse_answer_rejects_incomplete_answers(mangle, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_answer(mangle(server_answer()))
    assert str(error.value) == message


def test_parse_answer_reports_a_malformed_sdp() -> None:
    with pytest.raises(ValueError, match=r"^malformed SDP answer: "):
        parse_answer(server_answer().replace("a=rtpmap:102 H264/90000", "a=rtpmap:102"))


def test_an_application_section_offers_data_channels_and_the_answer_accepts_or_rejects_it() -> None:
    sections = [*publish_sections(), OfferSection("2", "application", "sendrecv", ())]
    parsed = parse_offer(offer(sections))
    data = parsed.media[2]
    assert (data.kind, data.mid, data.sctp_port, data.max_message_size, data.rejected) == ("application", "2", 5000, 65536, False)
    assert parsed.application is data
    accepted = build_answer(
        session_id=1,
        ice=SERVER_ICE,
        fingerprint=FINGERPRINT,
        candidate=("127.0.0.1", 40000),
        setup="passive",
        media=[MediaAnswer(data, None, "sendrecv", max_message_size=1234)],
        bundle=parsed.bundle,
    )
    assert "a=group:BUNDLE 2" in accepted
    assert "m=application 40000 UDP/DTLS/SCTP webrtc-datachannel" in accepted and "a=max-message-size:1234" in accepted
    answer = parse_answer(accepted)
    assert (answer.media["2"].sctp_port, answer.media["2"].max_message_size) == (5000, 1234)
    rejected = build_answer(
        session_id=1, ice=SERVER_ICE, fingerprint=FINGERPRINT, candidate=("127.0.0.1", 40000), setup="passive",
        media=[MediaAnswer(parsed.media[0], choose_codec(parsed.media[0]), "recvonly"), MediaAnswer(data, None, "inactive")],
        bundle=parsed.bundle,
    )  # fmt: skip
    assert "m=application 0 UDP/DTLS/SCTP webrtc-datachannel" in rejected and "a=group:BUNDLE 0\r" in rejected
    dropped = parse_offer(offer([*publish_sections(), OfferSection("2", "application", "inactive", ())]))
    assert dropped.media[2].rejected and dropped.application is None


@pytest.mark.parametrize("encodings, rids", [(0, ()), (1, ("f",)), (2, ("h", "f")), (3, ("q", "h", "f"))])
def test_simulcast_encodings_take_the_top_rids_lowest_first(encodings: int, rids: tuple[str, ...]) -> None:
    assert simulcast_rids(encodings) == rids


def test_a_simulcast_encoding_carries_its_mid_and_rid_under_the_ids_of_the_answer() -> None:
    media = AnswerMedia("2", "video", "sendonly", VP8, extensions={MID_URI: 5, RID_URI: 7})
    packet = build_packet(96, 1, 0, 1234, b"\x10\x00", extensions=media.encoding_extensions("h"))
    assert read_extensions(packet) == {5: b"2", 7: b"h"}
