import fractions
import random
import struct

import av
import pytest
from aiortc.codecs import H264Encoder, Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtpPacket, pack_header_extensions

from sfuctl.rtc.rtp import (
    build_extension_block,
    build_packet,
    is_keyframe,
    is_rtcp,
    padding_size,
    read_extensions,
    read_header,
    seq_distance,
    seq_newer,
)

# V=2 P=1 X=1 CC=2 | M=1 PT=111 | seq 0x1234 | ts 0xDEADBEEF | ssrc 0x01020304
# CSRCs 0xAAAAAAAA 0xBBBBBBBB | one-byte extension block, 2 words: id 1 len 1 (0x55), padding,
# id 3 len 3 (0x01 02 03), padding | payload "hi" | 3 bytes of padding (count 3)
HAND_BUILT = bytes.fromhex(
    "b2ef1234deadbeef01020304"
    "aaaaaaaabbbbbbbb"
    "bede0002" "1055" "00" "32010203" "00"
    "6869"
    "000003"
)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"\x80\xc8", True),  # SR
        (b"\x80\xc0", True),  # 192, lowest RTCP type
        (b"\x80\xdf", True),  # 223, highest
        (b"\x80\xbf", False),  # 191: marker + PT 63
        (b"\x80\xe0", False),  # 224: marker + PT 96
        (b"\x80\x60", False),  # PT 96 without marker
        (b"\x80", False),
        (b"", False),
    ],
)
def test_is_rtcp_demuxes_by_second_byte(data, expected):
    assert is_rtcp(data) is expected


def test_read_header_of_hand_built_packet():
    marker, payload_type, sequence, timestamp, ssrc, offset = read_header(HAND_BUILT)
    assert (marker, payload_type, sequence, timestamp, ssrc) == (1, 111, 0x1234, 0xDEADBEEF, 0x01020304)
    assert offset == 12 + 8 + 4 + 8
    assert padding_size(HAND_BUILT) == 3
    assert HAND_BUILT[offset : len(HAND_BUILT) - padding_size(HAND_BUILT)] == b"hi"
    assert read_extensions(HAND_BUILT) == {1: b"\x55", 3: b"\x01\x02\x03"}


def test_read_header_agrees_with_aiortc():
    packet = RtpPacket(
        payload_type=96, marker=1, sequence_number=65535, timestamp=4294967295, ssrc=0xFFFFFFFF,
        payload=b"\x01" * 100,
    )
    packet.csrc = [7, 8, 9]
    packet.extensions.mid = "0"
    packet.extensions.abs_send_time = 0x123456
    ext_map = HeaderExtensionsMap()
    ext_map.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=4, uri="urn:ietf:params:rtp-hdrext:sdes:mid"),
                RTCRtpHeaderExtensionParameters(
                    id=2, uri="http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"
                ),
            ]
        )
    )
    data = packet.serialize(ext_map)
    marker, payload_type, sequence, timestamp, ssrc, offset = read_header(data)
    assert (marker, payload_type, sequence, timestamp, ssrc) == (1, 96, 65535, 4294967295, 0xFFFFFFFF)
    assert data[offset:] == packet.payload
    assert read_extensions(data) == {4: b"0", 2: b"\x12\x34\x56"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x80\x60\x00\x01\x00\x00\x00\x00\x00\x00\x00", "RTP packet too short: 11 bytes"),
        (b"", "RTP packet too short: 0 bytes"),
        (bytes.fromhex("4060000100000000000000010000"), "unsupported RTP version 1"),
        (bytes.fromhex("0060000100000000000000010000"), "unsupported RTP version 0"),
        (bytes.fromhex("826000010000000000000001aaaaaaaa"), "RTP CSRC list exceeds packet"),
        (bytes.fromhex("906000010000000000000001bede"), "RTP header extension exceeds packet"),
        (bytes.fromhex("906000010000000000000001bede000210550000"), "RTP header extension exceeds packet"),
        (bytes.fromhex("a0600001000000000000000168690005"), "RTP padding exceeds payload"),
        (bytes.fromhex("a060000100000000000000016869000000"), "RTP padding exceeds payload"),
    ],
)
def test_read_header_rejects_malformed(data, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        read_header(data)


def test_padding_size():
    assert padding_size(build_packet(96, 1, 2, 3, b"abc")) == 0
    assert padding_size(bytes.fromhex("a06000010000000000000001686900000004")) == 4
    with pytest.raises(ValueError, match="^RTP packet too short: 3 bytes$"):
        padding_size(b"\xa0\x60\x00")


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b"", {}),
        # one-byte form with leading and inner padding, then id 15 terminates parsing
        (bytes.fromhex("bede0002" "00" "1061" "00" "2162" "63" "f0" "00"), {1: b"a", 2: b"bc"}),
        # one-byte form, 16-byte value
        (bytes.fromhex("bede0005" "1f") + bytes(range(16)) + b"\x00\x00\x00", {1: bytes(range(16))}),
        # two-byte form (0x1000 with app bits 0x5), empty value, padding byte, id 200
        (bytes.fromhex("10050002" "0100" "00" "c8020102" "00"), {1: b"", 200: b"\x01\x02"}),
        # another profile: not RFC 8285 extensions
        (bytes.fromhex("abcd0001" "11223344"), {}),
    ],
)
def test_read_extensions_forms(block, expected):
    data = bytes([0x90 if block else 0x80]) + bytes.fromhex("6000010000000000000001") + block + b"pl"
    assert read_extensions(data) == expected


@pytest.mark.parametrize(
    "block",
    [
        bytes.fromhex("bede0001" "00003161"),  # id 3 claims 2 bytes, only 1 left in the block
        bytes.fromhex("10000001" "0105aabb"),  # two-byte id 1 claims 5 bytes
        bytes.fromhex("10000001" "000000" "07"),  # two-byte element header cut by the block end
    ],
)
def test_read_extensions_rejects_elements_past_block(block):
    data = b"\x90" + bytes.fromhex("6000010000000000000001") + block + b"payload"
    with pytest.raises(ValueError, match="^RTP header extension element exceeds block$"):
        read_extensions(data)


def test_read_extensions_rejects_a_malformed_header():
    with pytest.raises(ValueError, match="^RTP header extension exceeds packet$"):
        read_extensions(bytes.fromhex("906000010000000000000001bede0009"))


@pytest.mark.parametrize(
    "items",
    [
        [(1, b"0")],
        [(1, b"a"), (2, b"\x12\x34\x56"), (14, bytes(16))],
        [(1, b"a" * 17)],  # too long for one-byte form
        [(15, b"x")],  # id 15 is reserved in one-byte form
        [(1, b"")],  # empty values only in two-byte form
        [(255, bytes(255)), (3, b"xyz")],
    ],
)
def test_build_extension_block_matches_aiortc_and_round_trips(items):
    block = build_extension_block(items)
    profile, value = pack_header_extensions(items)
    assert block == struct.pack("!HH", profile, len(value) // 4) + value
    assert len(block) % 4 == 0
    packet = build_packet(96, 1, 2, 3, b"payload", extensions=block)
    assert read_extensions(packet) == dict(items)
    assert packet[read_header(packet)[5] :] == b"payload"


def test_build_extension_block_form_choice():
    assert build_extension_block([]) == b""
    assert build_extension_block([(1, b"a")]) == bytes.fromhex("bede0001" "10610000")
    assert build_extension_block([(1, b"")]) == bytes.fromhex("10000001" "01000000")


@pytest.mark.parametrize("items", [[(0, b"a")], [(256, b"a")], [(1, bytes(256))]])
def test_build_extension_block_rejects_invalid(items):
    with pytest.raises(ValueError, match="^invalid RTP header extension id"):
        build_extension_block(items)


def test_build_packet_round_trips():
    packet = build_packet(111, 65535, 0xFFFFFFFF, 0xCAFEBABE, b"\x01\x02", marker=True)
    assert packet == bytes.fromhex("80ef ffff ffffffff cafebabe 0102")
    assert read_header(packet) == (1, 111, 65535, 0xFFFFFFFF, 0xCAFEBABE, 12)
    parsed = RtpPacket.parse(packet)
    assert (parsed.marker, parsed.payload_type, parsed.sequence_number, parsed.payload) == (
        1, 111, 65535, b"\x01\x02",
    )
    with pytest.raises(ValueError, match="^invalid RTP payload type 128$"):
        build_packet(128, 0, 0, 0, b"")
    with pytest.raises(ValueError, match="^RTP header extension block must be a multiple of 4 bytes$"):
        build_packet(96, 0, 0, 0, b"", extensions=b"\xbe\xde\x00")


@pytest.mark.parametrize(
    ("a", "b", "distance", "newer"),
    [
        (1, 0, 1, True),
        (0, 1, -1, False),
        (5, 5, 0, False),
        (0, 65535, 1, True),
        (65535, 0, -1, False),
        (10, 65530, 16, True),
        (32767, 0, 32767, True),
        (32768, 0, -32768, False),
        (0, 32768, -32768, False),
        (32769, 0, -32767, False),
    ],
)
def test_sequence_arithmetic(a, b, distance, newer):
    assert seq_distance(a, b) == distance
    assert seq_newer(a, b) is newer


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (bytes.fromhex("10" "5002009d012a"), True),  # S=1 PID=0, no extension, P=0
        (bytes.fromhex("10" "510200"), False),  # P=1: interframe
        (bytes.fromhex("00" "5002009d012a"), False),  # S=0: continuation
        (bytes.fromhex("11" "5002009d012a"), False),  # PID=1: not the first partition
        (bytes.fromhex("90" "80" "7f" "9c"), True),  # X, I, 7-bit PictureID
        (bytes.fromhex("90" "80" "8123" "9c"), True),  # X, I, 15-bit PictureID
        (bytes.fromhex("90" "80" "8123" "9d"), False),
        (bytes.fromhex("90" "f0" "8123" "05" "40" "9c"), True),  # I, L, T, K
        (bytes.fromhex("90" "e0" "05" "40" "9d"), False),  # I (7-bit), L, T: P=1
        (bytes.fromhex("90" "50" "05" "40" "9c"), True),  # L and K, no I
        (bytes.fromhex("90" "10" "e1" "9c"), True),  # K only: the TID/Y/KEYIDX byte is skipped
        (bytes.fromhex("90" "10" "20" "9d"), False),
        (bytes.fromhex("90" "20" "41" "9c"), True),  # T only
        (bytes.fromhex("90" "f0" "8123" "05" "40"), False),  # descriptor only, no frame byte
        (bytes.fromhex("90" "80"), False),  # I set but PictureID missing
        (bytes.fromhex("90"), False),
        (bytes.fromhex("10"), False),
        (b"", False),
    ],
)
def test_vp8_keyframe(payload, expected):
    assert is_keyframe("VP8", payload) is expected
    assert is_keyframe("vp8", payload) is expected


def _stap_a(*nals: bytes) -> bytes:
    return b"\x18" + b"".join(struct.pack("!H", len(n)) + n for n in nals)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (b"\x65\x88\x84", True),  # IDR slice
        (b"\x67\x42\xc0\x1f", True),  # SPS
        (b"\x68\xce\x3c\x80", False),  # PPS only
        (b"\x41\x9a\x02", False),  # non-IDR slice
        (b"\x06\x05\x01", False),  # SEI
        (_stap_a(b"\x67\x42\xc0\x1f", b"\x68\xce\x3c\x80"), True),
        (_stap_a(b"\x06\x05", b"\x68\xce\x3c\x80", b"\x65\x88"), True),
        (_stap_a(b"\x06\x05", b"\x68\xce\x3c\x80"), False),
        (b"\x18\x00\x09\x67", False),  # STAP-A size past the end
        (b"\x18\x00\x00\x65", False),  # zero-size NAL
        (b"\x18\x00", False),
        (b"\x7c\x85\x88", True),  # FU-A start, IDR
        (b"\x7c\x05\x88", False),  # FU-A middle, IDR
        (b"\x7c\x45\x88", False),  # FU-A end, IDR
        (b"\x5c\x81\x9a", False),  # FU-A start, non-IDR
        (b"\x7c", False),  # FU-A without header
        (b"\x19\x00\x00\x00\x04\x65\x88", False),  # STAP-B is not handled
        (b"\x7d\x85\x88", False),  # FU-B
        (b"", False),
    ],
)
def test_h264_keyframe(payload, expected):
    assert is_keyframe("H264", payload) is expected
    assert is_keyframe("h264", payload) is expected


def test_keyframe_unknown_codec():
    assert is_keyframe("opus", b"\x10\x50\x02\x00") is False
    assert is_keyframe("VP9", b"\x10\x50\x02\x00") is False


def _frames(count: int):
    rng = random.Random(1)
    for index in range(count):
        frame = av.VideoFrame(160, 120, "yuv420p")
        for plane in frame.planes:
            plane.update(rng.randbytes(plane.buffer_size))
        frame.pts = index * 3000
        frame.time_base = fractions.Fraction(1, 90000)
        yield frame


@pytest.mark.parametrize(("encoder_class", "codec"), [(Vp8Encoder, "VP8"), (H264Encoder, "H264")])
def test_keyframe_on_real_encoder_output(encoder_class, codec):
    """aiortc's encoders and packetizers give independent truth: frames 0 and 3 are keyframes."""
    encoder = encoder_class()
    for index, frame in enumerate(_frames(4)):
        payloads, _ = encoder.encode(frame, force_keyframe=index == 3)
        flags = [is_keyframe(codec, payload) for payload in payloads]
        assert any(flags) is (index in (0, 3)), (index, flags)
        if index in (0, 3):
            assert flags[0]


def test_keyframe_never_raises_on_garbage():
    rng = random.Random(7)
    for _ in range(3000):
        payload = rng.randbytes(rng.randrange(12))
        for codec in ("VP8", "H264"):
            assert is_keyframe(codec, payload) in (True, False)
