import json
from itertools import pairwise
from pathlib import Path

import pytest

from sfuctl.rtc import rtp
from sfuctl.rtc.rtcp import Pli, parse_compound
from sfuctl.rtc.rtcp_router import RtcpRouter
from sfuctl.rtc.transport_feedback import (
    TransportFeedback,
    decode_chunk,
    encode_chunks,
    extension_value,
    packet_sequence,
    read_sequence,
    write_sequence,
)

# Base 0xFFFE (the report wraps), reference time 0x102 (66048 ticks), feedback count 7.
# FFFE +4 (1 byte), FFFF lost, 0000 +255 (the largest 1-byte delta), 0001 -1 (2 bytes), 0002 +4096 (2 bytes):
# symbols 1 0 1 2 2 need two bits: one status vector 11 01 00 01 10 10 00 00 = 0xD1A0; 24 bytes, no padding.
WRAP_REORDER = bytes.fromhex(
    "8fcd0006" "11223344" "55667788" "fffe" "0005" "000102" "07" "d1a0" "04" "ff" "ffff" "1000"
)
WRAP_REORDER_PACKET = TransportFeedback(
    0x11223344, 0x55667788, 0xFFFE, 0x102, 7, [66052, None, 66307, 66306, 70402]
)
# 20 packets, each 1 tick after the previous: one run-length chunk (symbol 1, run 20) = 0x2014, twenty 1-byte
# deltas; 38 bytes of body padded to 40 (P bit, last byte = 2).
RUN_OF_TWENTY = bytes.fromhex("afcd000a" "00000001" "00000002" "0064" "0014" "000000" "00" "2014" + "01" * 20 + "0002")
RUN_OF_TWENTY_PACKET = TransportFeedback(1, 2, 100, 0, 0, list(range(1, 21)))
# Received twice, lost, received six times, each 1 tick after the previous: a one-bit vector 1 0 110111111 00000
# (0xB7E0, its last five symbols padding), eight 1-byte deltas; 26 bytes padded with 2.
ONE_BIT_VECTOR = bytes.fromhex("afcd0007" "00000001" "00000002" "0010" "0009" "000001" "ff" "b7e0" "0101020101010101" "0002")
ONE_BIT_VECTOR_PACKET = TransportFeedback(1, 2, 16, 1, 255, [257, 258, None, 260, 261, 262, 263, 264, 265])
# Received, received, lost, received: 7 or fewer mixed symbols at the end go in a two-bit vector as libwebrtc
# writes them, 11 01 01 00 01 00 00 00 = 0xD440, three 1-byte deltas; 21 bytes padded with 3.
SHORT_LAST_VECTOR = bytes.fromhex("afcd0006" "00000001" "00000002" "0010" "0004" "000001" "ff" "d440" "010102" "000003")
SHORT_LAST_VECTOR_PACKET = TransportFeedback(1, 2, 16, 1, 255, [257, 258, None, 260])
# Eight lost (a run: a two-bit vector would hold 7), then one received 300 ticks before the reference time:
# run-length 0x0008, run-length of symbol 2 0x4001, delta -300 = 0xFED4; 22 bytes padded with 2.
LOST_THEN_NEGATIVE = bytes.fromhex("afcd0006" "00000001" "00000002" "0000" "0009" "000010" "01" "0008" "4001" "fed4" "0002")
LOST_THEN_NEGATIVE_PACKET = TransportFeedback(1, 2, 0, 16, 1, [None] * 8 + [16 * 256 - 300])

VECTORS = [
    (WRAP_REORDER, WRAP_REORDER_PACKET),
    (RUN_OF_TWENTY, RUN_OF_TWENTY_PACKET),
    (ONE_BIT_VECTOR, ONE_BIT_VECTOR_PACKET),
    (SHORT_LAST_VECTOR, SHORT_LAST_VECTOR_PACKET),
    (LOST_THEN_NEGATIVE, LOST_THEN_NEGATIVE_PACKET),
]


@pytest.mark.parametrize(("data", "packet"), VECTORS)
def test_feedback_builds_and_parses_the_hand_computed_bytes(data: bytes, packet: TransportFeedback) -> None:
    assert bytes(packet) == data
    assert TransportFeedback.parse(data) == packet
    assert parse_compound(data) == [packet]


CHROMIUM = json.loads((Path(__file__).parent / "data" / "chromium_feedback.json").read_text())


def test_chromium_feedback_parses_and_builds_back_byte_for_byte() -> None:
    # Captured by tests/data/capture_feedback.py: Chromium 156 behind 3% loss and 0-100 ms of jitter.
    packets = [bytes.fromhex(h) for h in CHROMIUM["packets"]]
    assert {"run-length", "one-bit", "two-bit", "lost", "large delta", "negative delta"} <= set(CHROMIUM["kinds"])
    parsed = [TransportFeedback.parse(data) for data in packets]
    assert [bytes(packet) for packet in parsed] == packets
    assert sum(a is None for p in parsed for a in p.arrivals) > 0
    assert any(b - a < 0 for p in parsed for a, b in pairwise(t for t in p.arrivals if t is not None))
    first, second = parsed[:2]  # consecutive reports; a report may start before the last one's end, to report
    assert second.feedback_count == first.feedback_count + 1  # packets that arrived out of order at last


def test_received_lists_sequences_with_wrap_in_report_order() -> None:
    assert list(WRAP_REORDER_PACKET.received()) == [(0xFFFE, 66052), (0, 66307), (1, 66306), (2, 70402)]


def test_feedback_in_a_compound_with_other_rtcp_is_routed_to_the_connection_handler() -> None:
    router = RtcpRouter(clock=lambda: 5.0)
    seen: list[tuple[TransportFeedback, float]] = []
    router.route(bytes(Pli(1, 9)) + RUN_OF_TWENTY)
    assert router.unclaimed == 2  # the PLI's stream and the feedback's handler are both missing
    router.on_transport_feedback = lambda packet, now: seen.append((packet, now))
    router.route(RUN_OF_TWENTY)
    assert seen == [(RUN_OF_TWENTY_PACKET, 5.0)] and router.unclaimed == 2


@pytest.mark.parametrize(
    ("chunk", "symbols"),
    [
        (0x2014, [1] * 20),
        (0x0000, []),
        (0x5FFF, [2] * 8191),
        (0xB400, [1, 1, 0, 1] + [0] * 10),
        (0xBFFF, [1] * 14),
        (0xD1A0, [1, 0, 1, 2, 2, 0, 0]),
        (0xEAAA, [2] * 7),
    ],
)
def test_each_chunk_kind_decodes(chunk: int, symbols: list[int]) -> None:
    assert decode_chunk(chunk) == symbols


def test_encoder_picks_runs_one_bit_and_two_bit_vectors() -> None:
    assert encode_chunks([1] * 14) == [0x200E]
    assert encode_chunks([1] * 9000) == [0x3FFF, (1 << 13) | 809]
    assert encode_chunks([1, 0] * 7) == [0xAAAA]
    assert encode_chunks([2, 1, 2, 1, 2, 1, 2]) == [0xE666]
    assert encode_chunks([1, 1, 2] + [1] * 14) == [0xD655, 0x2000 | 10]  # 11 01 01 10 01 01 01 01, then a run of 10
    assert encode_chunks([1, 0] * 5) == [0xAAA0]  # 8 to 14 mixed symbols at the end: a padded one-bit vector
    assert encode_chunks([1, 0, 1]) == [0xD100]  # 7 or fewer: a two-bit vector, as libwebrtc writes it
    for symbols in ([0, 1, 2] * 30, [1] * 13 + [0] + [2] * 3, [2] * 6 + [1]):
        decoded = [s for chunk in encode_chunks(symbols) for s in decode_chunk(chunk)]
        assert decoded[: len(symbols)] == symbols and not any(decoded[len(symbols) :])


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (RUN_OF_TWENTY[:-8], "length field exceeds"),
        (bytes.fromhex("8fcd0004" "00000001" "00000002" "0000" "0000" "00000000"), "reports no packets"),
        (bytes.fromhex("8fcd0004" "00000001" "00000002" "0000" "0020" "00000000"), "chunks exceed"),
        (bytes.fromhex("8fcd0005" "00000001" "00000002" "0000" "0002" "00000000" "4002" "0100"), "deltas exceed"),
        (bytes.fromhex("8fcd0005" "00000001" "00000002" "0000" "0001" "00000000" "6001" "0000"), "reserved"),
        (bytes.fromhex("8fcd0005" "00000001" "00000002" "0000" "0001" "00000000" "f000" "0000"), "reserved"),
        (bytes.fromhex("81cd0002" "00000001" "00000002"), "not an RTCP transport feedback"),
        # 2049 statuses from one 2-byte run-length chunk: refused before they are expanded
        (bytes.fromhex("8fcd0005" "00000001" "00000002" "0000" "0801" "00000000" "2801" "0000"), "at most 2048"),
    ],
)
def test_malformed_feedback_is_refused(data: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TransportFeedback.parse(data)


def test_building_refuses_what_the_format_cannot_carry() -> None:
    with pytest.raises(ValueError, match="1..65535"):
        bytes(TransportFeedback(1, 2, 0, 0, 0, []))
    with pytest.raises(ValueError, match="does not fit 16 bits"):
        bytes(TransportFeedback(1, 2, 0, 0, 0, [0, 0x8000]))
    with pytest.raises(ValueError, match="24 bits"):
        bytes(TransportFeedback(1, 2, 0, 1 << 24, 0, [0]))


def test_the_header_extension_is_read_and_patched_in_place() -> None:
    block = rtp.build_extension_block([(1, b"0"), (5, extension_value(0x1234))])
    packet = bytearray(rtp.build_packet(96, 7, 0, 0xAB, b"payload", extensions=block))
    offset = rtp.find_extension(packet, 5)
    assert read_sequence(packet, offset) == 0x1234
    write_sequence(packet, offset, 0x10001)
    assert read_sequence(packet, offset) == 1 and rtp.read_extensions(bytes(packet))[5] == b"\x00\x01"


def test_the_sequence_of_an_unvalidated_packet_is_read_only_when_its_extension_block_fits() -> None:
    block = rtp.build_extension_block([(3, extension_value(513))])
    packet = rtp.build_packet(96, 7, 0, 0xAB, b"x" * 20, extensions=block)
    assert packet_sequence(packet, 3) == 513
    assert packet_sequence(packet, 4) == -1  # another id
    assert packet_sequence(rtp.build_packet(96, 7, 0, 0xAB, b"x" * 20), 3) == -1  # no extension block
    assert packet_sequence(packet[:15], 3) == -1
    overrun = bytearray(packet)
    overrun[14:16] = b"\x00\x40"  # the block claims 64 words
    assert packet_sequence(bytes(overrun), 3) == -1
    csrcs = bytearray(packet)
    csrcs[0] |= 0x0F  # 15 CSRCs: the block would start past the end
    assert packet_sequence(bytes(csrcs), 3) == -1
