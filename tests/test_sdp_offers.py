"""The answerer against real offers (tests/offers/README.md says where each came from), one table row each.

Every row is answered the way the server answers it (a Peer publishing, or subscribing through build_answer)
and the answer is read back by the client's parser: same m-lines in the same order, the chosen codec under the
offer's payload type, rejected m-lines with port 0 and the offer's protocol, a BUNDLE group of accepted mids.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sfuctl.client.offer import parse_answer
from sfuctl.media import MediaSpec, make_media
from sfuctl.rtc.ice import IceParameters
from sfuctl.rtc.sdp import MediaAnswer, Offer, accepted_extensions, build_answer, choose_codec, parse_offer
from sfuctl.rtc.transport_feedback import TRANSPORT_CC_URI
from sfuctl.server.errors import SignalingError
from sfuctl.server.peer import Peer

from .peers import AiortcPeer
from .test_forwarding import wait_for

OFFERS = Path(__file__).parent / "offers"
SERVER_ICE = IceParameters("srvfrag1", "s" * 24)
FINGERPRINT = "sha-256 " + ":".join(["CD"] * 32)

# file -> (setup, BUNDLE group, [(mid, kind, direction, chosen codec, its payload type, primary SSRC, bundle-only)]);
# the m-lines of each transport the offer asks for are in TRANSPORTS when the offer has no BUNDLE group.
CAPTURED = {
    "chromium-send": ("actpass", ("0", "1"), [
        ("0", "audio", "sendonly", "opus", 111, 2182388937, False),
        ("1", "video", "sendonly", "VP8", 96, 2853795796, False),
    ]),
    "chromium-recv": ("actpass", ("0", "1"), [
        ("0", "video", "recvonly", "VP8", 96, None, False),
        ("1", "audio", "recvonly", "opus", 111, None, False),
    ]),
    "aiortc-send": ("actpass", ("0", "1"), [
        ("0", "audio", "sendonly", "opus", 96, 3807938126, False),
        ("1", "video", "sendonly", "VP8", 97, 565375357, False),
    ]),
    "aiortc-recv": ("actpass", ("0", "1"), [
        ("0", "video", "recvonly", "VP8", 97, 3073459125, False),  # aiortc writes its RTCP SSRCs in recvonly m-lines
        ("1", "audio", "recvonly", "opus", 96, 976548162, False),
    ]),
    "ffmpeg-whip": ("passive", ("0", "1"), [
        ("0", "audio", "sendonly", "opus", 111, 1764216522, False),
        ("1", "video", "sendonly", "H264", 106, 1764216523, False),
    ]),
    "gst-none-send": ("actpass", None, [
        ("video0", "video", "sendrecv", "VP8", 96, 1946506982, False),
        ("audio1", "audio", "sendrecv", "opus", 97, 3942584388, False),
    ]),
    "gst-max-bundle-send": ("actpass", ("video0", "audio1"), [
        ("video0", "video", "sendrecv", "VP8", 96, 692296376, False),
        ("audio1", "audio", "sendrecv", "opus", 97, 1775415211, True),
    ]),
    "gst-none-recv": ("actpass", None, [
        ("video0", "video", "recvonly", "VP8", 96, None, False),
        ("audio1", "audio", "recvonly", "opus", 97, None, False),
    ]),
    "gst-max-bundle-recv": ("actpass", ("video0", "audio1"), [
        ("video0", "video", "recvonly", "VP8", 96, None, False),
        ("audio1", "audio", "recvonly", "opus", 97, None, True),
    ]),
}


# GStreamer's bundle-policy=none: a transport (ICE credentials, DTLS) per m-line.
TRANSPORTS = {"gst-none-send": [("video0",), ("audio1",)], "gst-none-recv": [("video0",), ("audio1",)]}


def captured(name: str) -> str:
    return (OFFERS / f"{name}.sdp").read_bytes().decode()


@pytest.mark.parametrize("name", sorted(CAPTURED))
def test_captured_offer_parses_to_what_its_peer_meant(name: str) -> None:
    setup, bundle, rows = CAPTURED[name]
    offer = parse_offer(captured(name))
    assert offer.setup == setup
    assert offer.bundle == bundle
    assert offer.fingerprints and all(algorithm.startswith("sha-") for algorithm, _ in offer.fingerprints)
    got = []
    for m in offer.media:
        codec = choose_codec(m)
        assert codec is not None and not m.rejected, m.mid
        got.append((m.mid, m.kind, m.direction, codec.name, codec.payload_type, m.ssrc, m.bundle_only))
    assert got == rows
    assert [t.mids for t in offer.transports] == TRANSPORTS.get(name, [bundle])
    assert len({t.ice for t in offer.transports}) == len(offer.transports)


def assert_answer_fits(offer: Offer, answer_text: str) -> None:
    """The answer a strict offerer expects: every offered m-line once, in order, well-formed either way."""
    answer = parse_answer(answer_text)
    assert answer.ice == SERVER_ICE or answer.ice.ufrag != ""
    assert [m.mid for m in answer.media.values()] == [m.mid for m in offer.media]
    lines = answer_text.split("\r\n")
    m_lines = [line for line in lines if line.startswith("m=")]
    groups = [line.split()[1:] for line in lines if line.startswith("a=group:BUNDLE")]
    assert lines[-1] == "" and all(line.isprintable() for line in lines)
    assert any(line.startswith("a=fingerprint:") for line in lines[: lines.index(m_lines[0])]), "session-level fingerprint"
    for m, m_line in zip(offer.media, m_lines):
        kind, port, proto, *formats = m_line[2:].split()
        answered = answer.media[m.mid]
        assert kind == m.kind and proto == m.proto
        if answered.direction == "inactive":
            assert port == "0" and "a=bundle-only" not in answer_text
            assert not groups or m.mid not in groups[0]
        else:
            codec = choose_codec(m)
            assert port != "0" and formats == [str(codec.payload_type)]
            assert answered.codec.payload_type == codec.payload_type
            assert offer.bundle is None or m.mid in groups[0]
    if offer.bundle is None:
        assert not groups, "an answer never creates a BUNDLE group (RFC 9143)"
    elif groups:
        assert set(groups[0]) <= set(offer.bundle)


@pytest.mark.parametrize("name", sorted(n for n in CAPTURED if n.endswith("-send") or n == "ffmpeg-whip"))
async def test_a_captured_publish_offer_becomes_producers_and_a_fitting_answer(server, name: str) -> None:
    router = server.worker.router("offers")
    peer = Peer(name=name, router=router, worker=server.worker, notify=lambda *_: None, on_closed=lambda: None)
    router.add_peer(peer)
    try:
        result = peer.publish(captured(name))
        offer = parse_offer(captured(name))
        assert sorted((p["kind"], p["codec"], p["mid"]) for p in result["producers"]) == sorted(
            (row[1], row[3], row[0]) for row in CAPTURED[name][2]
        )
        assert_answer_fits(offer, result["sdp"])
        setup = "active" if CAPTURED[name][0] == "passive" else "passive"
        assert f"a=setup:{setup}" in result["sdp"]
        # Each m-line is answered with the ICE credentials of the transport that carries it.
        assert [t.mids for t in peer.send_transports] == [t.mids for t in offer.transports]
        assert answered_ice(result["sdp"]) == {mid: t.connection.local_ice for t in peer.send_transports for mid in t.mids}
    finally:
        peer.close()


@pytest.mark.parametrize("name", sorted(n for n in CAPTURED if n.endswith("-recv")))
def test_a_captured_receive_offer_gets_a_fitting_answer(name: str) -> None:
    offer = parse_offer(captured(name))
    answers = [
        MediaAnswer(m, None if m.rejected else choose_codec(m), "sendonly", ssrc=1000 + m.index, cname="c",
                    msid=("s", f"t{m.index}"), extensions=accepted_extensions(m))
        for m in offer.media
    ]
    # The second m-line rejected, as for a subscription the server cannot serve.
    answers[1] = MediaAnswer(offer.media[1], None, "inactive")
    text = build_answer(session_id=1, ice=SERVER_ICE, fingerprint=FINGERPRINT, candidate=("127.0.0.1", 40000),
                        setup="passive", media=answers, bundle=offer.bundle)
    assert_answer_fits(offer, text)


def answered_ice(answer: str) -> dict[str, IceParameters]:
    """The ICE credentials each accepted m-line of an answer carries, by mid."""
    credentials = {}
    for section in answer.split("\r\nm=")[1:]:
        lines = section.split("\r\n")
        values = dict(line[2:].split(":", 1) for line in lines if line.startswith(("a=mid:", "a=ice-ufrag:", "a=ice-pwd:")))
        if not lines[0].split()[1] == "0":
            credentials[values["mid"]] = IceParameters(values["ice-ufrag"], values["ice-pwd"])
    return credentials


def edit(name: str, old: str, new: str, count: int = -1) -> str:
    text = captured(name)
    assert old in text, old
    return text.replace(old, new, count)


def test_ice_and_dtls_attributes_are_read_at_session_level() -> None:
    text = captured("gst-max-bundle-send")
    media_level = [line for line in text.split("\r\n") if line.split(":", 1)[0] in ("a=ice-ufrag", "a=ice-pwd", "a=fingerprint", "a=setup")]
    stripped = "\r\n".join(line for line in text.split("\r\n") if line not in media_level)
    session_level = stripped.replace("t=0 0\r\n", "t=0 0\r\n" + "\r\n".join(dict.fromkeys(media_level)) + "\r\n", 1)
    assert parse_offer(session_level).ice == parse_offer(text).ice
    assert parse_offer(session_level).fingerprints == parse_offer(text).fingerprints


def test_data_channels_outside_the_first_transport_are_rejected() -> None:
    """Without BUNDLE, an m=application would need a third transport: data channels ride the first one only."""
    ice = "a=ice-ufrag:Dc4XbbtO\r\na=ice-pwd:" + "d" * 24 + "\r\n"
    fingerprint = next(line for line in captured("gst-none-send").split("\r\n") if line.startswith("a=fingerprint:"))
    text = captured("gst-none-send") + (
        f"m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=setup:actpass\r\n{ice}"
        f"{fingerprint}\r\na=mid:data2\r\na=sctp-port:5000\r\n"
    )
    offer = parse_offer(text)
    assert [t.mids for t in offer.transports] == [("video0",), ("audio1",)]
    assert offer.application is None and offer.media[2].rejected


def test_a_data_channel_m_line_is_rejected_with_its_own_protocol_and_format() -> None:
    text = captured("chromium-send") + (
        "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:2\r\n"
        "a=sctp-port:5000\r\na=max-message-size:262144\r\n"
    )
    text = text.replace("a=group:BUNDLE 0 1", "a=group:BUNDLE 0 1 2")
    offer = parse_offer(text)
    answers = [MediaAnswer(m, choose_codec(m), "recvonly") for m in offer.media]
    answer = build_answer(session_id=1, ice=SERVER_ICE, fingerprint=FINGERPRINT, candidate=("127.0.0.1", 40000),
                          setup="passive", media=answers, bundle=offer.bundle)
    assert "m=application 0 UDP/DTLS/SCTP webrtc-datachannel\r\n" in answer
    assert "a=group:BUNDLE 0 1\r\n" in answer
    assert_answer_fits(offer, answer)


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (edit("gst-max-bundle-send", "a=group:BUNDLE video0 audio1", "a=group:BUNDLE video0 audio1 data2"),
         "a=group:BUNDLE names mid 'data2', which no m-line has"),
        (edit("chromium-send", "a=setup:actpass\r\n", ""), "lacks a=setup"),
        (edit("aiortc-send", "a=ice-pwd:SsaxvFC85342163ZCCvDgq\r\n", ""), "lacks a=ice-ufrag / a=ice-pwd"),
        (edit("ffmpeg-whip", "a=mid:1", "a=mid:0").replace("BUNDLE 0 1", "BUNDLE 0"), "repeats an a=mid"),
        (edit("chromium-send", "a=setup:actpass", "a=setup:holdconn", 1), "malformed SDP"),
        (edit("gst-none-send", "a=ice-pwd:P16NNHkK1YLdMznIFBVB6fVC/3Wnwgqw\r\n", ""),
         "m-line 1 (mid audio1, outside BUNDLE) lacks a=ice-ufrag / a=ice-pwd"),
    ],
    ids=["bundle-names-missing-mid", "no-setup", "no-ice-pwd", "repeated-mid", "setup-holdconn", "unbundled-no-ice-pwd"],
)
async def test_broken_variants_of_captured_offers_are_refused_naming_the_fault(server, text: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        parse_offer(text)
    router = server.worker.router("broken")
    peer = Peer(name="broken", router=router, worker=server.worker, notify=lambda *_: None, on_closed=lambda: None)
    router.add_peer(peer)
    with pytest.raises(SignalingError, match="invalid SDP offer"):
        peer.publish(text)
    assert peer.send_transport is None and not router.producers
    peer.close()


async def test_streams_offered_without_ssrc_or_mid_extension_are_bound_by_payload_type(server, tmp_path) -> None:
    """An offer written before its sender knew its SSRCs (webrtcbin can) and without the MID extension."""
    media = make_media(MediaSpec(width=320, height=180, fps=25, video_bitrate=300_000, duration=3.0), tmp_path)
    publisher, watcher = AiortcPeer(server.url, "unsignaled", "alice"), AiortcPeer(server.url, "unsignaled", "bob")

    def strip(sdp: str) -> str:
        return "".join(line for line in sdp.splitlines(keepends=True)
                       if not line.startswith(("a=ssrc", "a=extmap")))

    try:
        await publisher.join()
        producers = await publisher.publish(str(media.video), str(media.audio), rewrite_offer=strip)
        await watcher.join()
        await watcher.subscribe(producers)
        assert await wait_for(lambda: watcher.video() and watcher.video()[0].frames >= 25
                              and watcher.audio() and watcher.audio()[0].frames >= 25, 15)
        assert all(p.ssrc is not None for p in server.worker.routers["unsignaled"].producers.values())
    finally:
        await publisher.close()
        await watcher.close()


async def test_transport_cc_is_answered_to_a_publisher_that_offers_it_and_its_packets_are_recorded(server) -> None:
    router = server.worker.router("twcc")
    peer = Peer(name="chromium", router=router, worker=server.worker, notify=lambda *_: None, on_closed=lambda: None)
    router.add_peer(peer)
    try:
        answer = peer.publish(captured("chromium-send"))["sdp"]
        offer = parse_offer(captured("chromium-send"))
        for m in offer.media:
            if m.kind in ("audio", "video"):
                codec = choose_codec(m, transport_cc=True)
                assert codec.has_feedback("transport-cc") and not choose_codec(m).has_feedback("transport-cc")
                assert f"a=rtcp-fb:{codec.payload_type} transport-cc" in answer
        assert answer.count(f"a=extmap:3 {TRANSPORT_CC_URI}") == 2
        assert peer.send_transport.arrivals is not None
    finally:
        peer.close()
    # Receive offers name it too: the server stamps what it sends and takes the subscriber's feedback.
    recv = parse_offer(captured("chromium-recv"))
    assert all(accepted_extensions(m, transport_cc=True)[TRANSPORT_CC_URI] == 4 for m in recv.media if m.kind != "application")
    assert all(TRANSPORT_CC_URI not in accepted_extensions(m) for m in recv.media)


def publishing_peer(server, room: str) -> Peer:
    router = server.worker.router(room)
    peer = Peer(name=room, router=router, worker=server.worker, notify=lambda *_: None, on_closed=lambda: None)
    router.add_peer(peer)
    return peer


async def test_an_unbundled_publisher_keeps_a_transport_per_m_line_and_cannot_move_an_m_line(server) -> None:
    """webrtcbin's bundle-policy=none: a renegotiation keeps both transports; one that puts both m-lines into one
    BUNDLE group would move audio1 onto video0's transport and is refused, changing nothing; one transport that
    closes takes its own producer only."""
    peer = publishing_peer(server, "unbundled")
    router = peer.router
    try:
        first = peer.publish(captured("gst-none-send"))
        video, audio = peer.send_transports
        producers = {p.id for p in router.producers.values()}
        again = peer.publish(captured("gst-none-send"))
        assert peer.send_transports == [video, audio] and {p.id for p in router.producers.values()} == producers
        assert answered_ice(again["sdp"]) == answered_ice(first["sdp"])
        bundled = edit("gst-none-send", "t=0 0\r\n", "t=0 0\r\na=group:BUNDLE video0 audio1\r\n")
        with pytest.raises(SignalingError, match="moves m-line 'audio1' to another transport") as refused:
            peer.publish(bundled)
        assert refused.value.code == "bad_request"
        assert peer.send_transports == [video, audio] and {p.id for p in router.producers.values()} == producers
        assert server.worker.transports >= {video, audio}
        audio.connection.close()  # the audio transport ends (its client closed it): the video one goes on
        assert [p.kind for p in router.producers.values()] == ["video"] and peer.send_transports == [video]
        assert not peer.closed and audio not in server.worker.transports
    finally:
        peer.close()
    assert video not in server.worker.transports


async def test_a_captured_renegotiation_keeps_its_transport_and_the_producers_it_still_offers(server) -> None:
    """Chromium's renegotiations (tests/offers/README.md): a stopped audio transceiver closes its producer, the
    video one is kept, a new m-line becomes a producer on the same transport; the ICE restart offer is refused
    while the connection is not up, changing nothing."""
    peer = publishing_peer(server, "renegotiation")
    try:
        first = peer.publish(captured("chromium-renegotiate-1"))
        [transport] = peer.send_transports
        kept = {p["mid"]: p["id"] for p in first["producers"]}
        assert sorted(kept) == ["0", "1"]
        second = peer.publish(captured("chromium-renegotiate-2"))
        offer = parse_offer(captured("chromium-renegotiate-2"))
        assert_answer_fits(offer, second["sdp"])
        assert "m=audio 0 UDP/TLS/RTP/SAVPF" in second["sdp"] and "a=group:BUNDLE 1 2\r\n" in second["sdp"]
        now = {p["mid"]: p for p in second["producers"]}
        assert sorted(now) == ["1", "2"] and now["1"]["id"] == kept["1"] and now["2"]["kind"] == "video"
        assert sorted(p.mid for p in peer.router.producers.values()) == ["1", "2"]
        assert peer.send_transports == [transport] and transport.ice_restarts == 0 and transport.mids == ("1", "2")
        restart = parse_offer(captured("chromium-renegotiate-3"))
        assert restart.ice != offer.ice
        with pytest.raises(SignalingError, match="ICE restart before the connection is up"):
            peer.publish(captured("chromium-renegotiate-3"))
        assert transport.remote_ice == offer.ice and len(peer.router.producers) == 2
    finally:
        peer.close()
