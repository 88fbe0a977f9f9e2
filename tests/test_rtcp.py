import struct
import time

import pytest
from aiortc import rtp as aiortc_rtp

from sfuctl.rtc.rtcp import (
    Bye,
    Fir,
    Nack,
    Pli,
    ReceiverReport,
    Remb,
    ReportBlock,
    Sdes,
    SenderReport,
    ntp_from_unix,
    ntp_middle,
    ntp_now,
    parse_compound,
    rtt_ms,
)

SR_BLOCK = ReportBlock(
    ssrc=0x55667788, fraction_lost=64, packets_lost=-2, highest_sequence=65541, jitter=32,
    lsr=0xA1B28000, dlsr=0x00010000,
)
SR = SenderReport(
    ssrc=0x11223344, ntp_timestamp=0xE5C8A1B280000000, rtp_timestamp=90000, packet_count=100,
    octet_count=120000, reports=[SR_BLOCK],
)
SR_SDES = bytes.fromhex(
    # SR: V=2 RC=1, PT 200, length 12 words
    "81c8000c" "11223344" "e5c8a1b2" "80000000" "00015f90" "00000064" "0001d4c0"
    # report block: ssrc, fraction 64 + lost -2, highest 65541, jitter 32, LSR, DLSR 1 s
    "55667788" "40fffffe" "00010005" "00000020" "a1b28000" "00010000"
    # SDES: SC=1, PT 202, length 3 words; chunk: ssrc, CNAME "abcd", null item, padding
    "81ca0003" "11223344" "0104" "61626364" "00" "00"
)
RR_TWO_BLOCKS = bytes.fromhex(
    "82c9000d" "01020304"
    "aaaaaaaa" "00000000" "000003e8" "00000000" "00000000" "00000000"
    "bbbbbbbb" "ff7fffff" "ffffffff" "0000005a" "12345678" "00008000"
)
RR = ReceiverReport(
    ssrc=0x01020304,
    reports=[
        ReportBlock(0xAAAAAAAA, 0, 0, 1000, 0, 0, 0),
        ReportBlock(0xBBBBBBBB, 255, 0x7FFFFF, 0xFFFFFFFF, 90, 0x12345678, 0x8000),
    ],
)
# NACK: PID 100, BLP 0x8005 -> 101, 103 and 116 also lost
NACK_WITH_BLP = bytes.fromhex("81cd0003" "00000001" "00000002" "0064" "8005")


def test_compound_sr_sdes_fixture():
    assert parse_compound(SR_SDES) == [SR, Sdes(0x11223344, "abcd", [(0x11223344, "abcd")])]
    assert bytes(SR) + bytes(Sdes(0x11223344, "abcd")) == SR_SDES


def test_rr_with_two_blocks_fixture():
    assert ReceiverReport.parse(RR_TWO_BLOCKS) == RR
    assert parse_compound(RR_TWO_BLOCKS) == [RR]
    assert bytes(RR) == RR_TWO_BLOCKS


def test_nack_with_blp_fixture():
    nack = Nack.parse(NACK_WITH_BLP)
    assert nack == Nack(1, 2, [100, 101, 103, 116])
    assert bytes(nack) == NACK_WITH_BLP


@pytest.mark.parametrize(
    ("lost", "pairs"),
    [
        ([7], [(7, 0)]),
        ([100, 101, 103, 116], [(100, 0x8005)]),
        ([100, 117], [(100, 0), (117, 0)]),  # 17 apart: outside one BLP
        ([65534, 65535, 0, 5, 30], [(65534, 0b1000011), (30, 0)]),  # across the wrap
        ([65535] + list(range(0, 16)), [(65535, 0xFFFF)]),
        ([3, 3, 4], [(3, 1)]),  # duplicates collapse
    ],
)
def test_nack_packs_pid_blp_pairs(lost, pairs):
    data = bytes(Nack(0xA, 0xB, lost))
    fci = data[12:]
    assert [struct.unpack_from("!HH", fci, i) for i in range(0, len(fci), 4)] == pairs
    assert Nack.parse(data).lost == sorted(set(lost), key=lost.index)
    (theirs,) = aiortc_rtp.RtcpPacket.parse(data)
    assert [s & 0xFFFF for s in theirs.lost] == Nack.parse(data).lost  # aiortc does not wrap BLP bits


def test_nack_needs_a_sequence_number():
    with pytest.raises(ValueError, match="^NACK needs at least one sequence number$"):
        bytes(Nack(1, 2, []))


PACKETS = [
    SR,
    SenderReport(1, 0, 0, 0, 0, []),
    RR,
    ReceiverReport(5, []),
    Sdes(0xDEADBEEF, "user@example", [(0xDEADBEEF, "user@example")]),
    Sdes(1, "", [(1, "")]),
    Sdes(1, "a", [(1, "a"), (2, "bbbb"), (3, "ccc")]),
    Bye([0x11111111, 0x22222222]),
    Bye([]),
    Nack(1, 2, [10, 11, 40]),
    Pli(0x01010101, 0x02020202),
    Fir(7, [(0xABCDEF01, 3), (0x10203040, 255)]),
    Fir(7, []),
    Remb(9, 1_000_000, [1, 2, 3]),
    Remb(9, 0, []),
    Remb(9, 123_456, [4]),
]


@pytest.mark.parametrize("packet", PACKETS, ids=lambda p: type(p).__name__)
def test_round_trip(packet):
    data = bytes(packet)
    assert len(data) % 4 == 0
    assert int.from_bytes(data[2:4]) == len(data) // 4 - 1
    assert type(packet).parse(data) == packet
    assert parse_compound(data) == [packet]


def test_compound_of_everything_round_trips():
    data = b"".join(bytes(p) for p in PACKETS)
    assert parse_compound(data) == PACKETS


def test_serialization_matches_aiortc():
    info = aiortc_rtp.RtcpSenderInfo(
        ntp_timestamp=SR.ntp_timestamp, rtp_timestamp=90000, packet_count=100, octet_count=120000
    )
    block = aiortc_rtp.RtcpReceiverInfo(
        ssrc=0x55667788, fraction_lost=64, packets_lost=-2, highest_sequence=65541, jitter=32,
        lsr=0xA1B28000, dlsr=0x00010000,
    )
    theirs = [
        aiortc_rtp.RtcpSrPacket(ssrc=0x11223344, sender_info=info, reports=[block]),
        aiortc_rtp.RtcpSdesPacket(
            chunks=[aiortc_rtp.RtcpSourceInfo(ssrc=0x11223344, items=[(1, b"abcd")])]
        ),
        aiortc_rtp.RtcpRrPacket(ssrc=0x01020304, reports=[block]),
        aiortc_rtp.RtcpByePacket(sources=[1, 2]),
        aiortc_rtp.RtcpPsfbPacket(fmt=1, ssrc=3, media_ssrc=4),
        aiortc_rtp.RtcpPsfbPacket(
            fmt=15, ssrc=5, media_ssrc=0, fci=aiortc_rtp.pack_remb_fci(1_000_000, [6, 7])
        ),
        aiortc_rtp.RtcpRtpfbPacket(fmt=1, ssrc=8, media_ssrc=9, lost=[1, 2, 3, 40]),
    ]
    ours = [
        SR,
        Sdes(0x11223344, "abcd"),
        ReceiverReport(0x01020304, [SR_BLOCK]),
        Bye([1, 2]),
        Pli(3, 4),
        Remb(5, 1_000_000, [6, 7]),
        Nack(8, 9, [1, 2, 3, 40]),
    ]
    for their_packet, our_packet in zip(theirs, ours):
        assert bytes(their_packet) == bytes(our_packet), type(our_packet).__name__
    assert parse_compound(b"".join(bytes(p) for p in theirs)) == [
        SR, Sdes(0x11223344, "abcd", [(0x11223344, "abcd")]), *ours[2:]
    ]


def test_remb_bitrate_mantissa_and_exponent():
    assert Remb.parse(bytes(Remb(1, 1_000_001, []))).bitrate == 1_000_000  # low bits do not fit
    assert Remb.parse(bytes(Remb(1, (1 << 18) - 1, []))).bitrate == (1 << 18) - 1
    big = 0x3FFFF << 63
    assert Remb.parse(bytes(Remb(1, big, []))).bitrate == big
    with pytest.raises(ValueError, match="^REMB bitrate .* out of range$"):
        bytes(Remb(1, 1 << 81, []))
    with pytest.raises(ValueError, match="^REMB bitrate -1 out of range$"):
        bytes(Remb(1, -1, []))


def test_sdes_keeps_first_cname_per_chunk():
    data = bytes.fromhex(
        "83ca0009"
        # chunk 1: NAME "x", CNAME "c1", CNAME "zz" (ignored), null item ending at a boundary
        "00000001" "0201" "78" "01026331" "01027a7a" "00"
        # chunk 2: only a NAME item: no CNAME to keep
        "00000002" "0201" "79" "00"
        # chunk 3: CNAME "c3", end exactly at a boundary -> a whole null word
        "00000003" "0102" "6333" "00000000"
    )
    assert Sdes.parse(data) == Sdes(1, "c1", [(1, "c1"), (3, "c3")])


def test_bye_with_reason_keeps_sources():
    data = bytes.fromhex("82cb0004" "00000001" "00000002" "03627965" "00000000")
    assert Bye.parse(data) == Bye([1, 2])


def test_padding_is_stripped():
    # PLI with 4 bytes of RTCP padding (P bit, last byte = count)
    data = bytes.fromhex("a1ce0003" "00000001" "00000002" "00000004")
    assert parse_compound(data) == [Pli(1, 2)]


@pytest.mark.parametrize(
    "unknown",
    [
        bytes.fromhex("80cc0002" "00000001" "6e616d65"),  # APP
        bytes.fromhex("80cf0002" "00000001" "05000000"),  # XR
        bytes.fromhex("8fce0003" "00000001" "00000000" "41424344"),  # AFB that is not REMB
        bytes.fromhex("82ce0003" "00000001" "00000002" "00000000"),  # SLI
        bytes.fromhex("83cd0002" "00000001" "00000002"),  # TMMBR-like RTPFB FMT 3
    ],
)
def test_compound_skips_unknown_packets(unknown):
    assert parse_compound(unknown + RR_TWO_BLOCKS + unknown) == [RR]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\x81\xc8\x00", "RTCP packet too short"),
        (SR_SDES[:-4], "RTCP length field exceeds data"),  # truncated SDES
        (SR_SDES[:20], "RTCP length field exceeds data"),  # truncated SR
        (RR_TWO_BLOCKS + b"\x81", "RTCP packet too short"),  # trailing garbage
        (bytes.fromhex("41c90001" "01020304"), "unsupported RTCP version 1"),
        (
            bytes.fromhex("83c90007" "01020304") + RR_TWO_BLOCKS[8:32],  # RC 3, room for one block
            "RTCP report count exceeds packet length",
        ),
        (bytes.fromhex("81c80001" "11223344"), "RTCP SR too short"),
        (bytes.fromhex("80c90000"), "RTCP RR too short"),
        (bytes.fromhex("a1ce0002" "00000001" "00000009"), "RTCP padding exceeds packet"),
        (bytes.fromhex("a1ce0002" "00000001" "00000000"), "RTCP padding exceeds packet"),
        (bytes.fromhex("82ca0002" "00000001" "01020000"), "RTCP SDES chunk exceeds packet length"),
        (bytes.fromhex("81ca0002" "00000001" "01096162"), "RTCP SDES item exceeds packet length"),
        (bytes.fromhex("81ca0001" "00000001"), "RTCP SDES chunk exceeds packet length"),
        (bytes.fromhex("83cb0002" "00000001" "00000002"), "RTCP BYE source count exceeds packet length"),
        (bytes.fromhex("81cd0001" "00000001"), "RTCP feedback packet too short"),
        (
            bytes.fromhex("a1cd0004" "00000001" "00000002" "00010000" "00000002"),  # 2 bytes padding
            "RTCP NACK FCI length is not a multiple of 4",
        ),
        (
            bytes.fromhex("84ce0003" "00000001" "00000000" "00000002"),
            "RTCP FIR FCI length is not a multiple of 8",
        ),
        (
            bytes.fromhex("8fce0005" "00000001" "00000000" "52454d42" "02000100" "00000007"),
            "RTCP REMB SSRC count exceeds packet length",
        ),
        (bytes.fromhex("8fce0003" "00000001" "00000000" "52454d42"), "RTCP REMB too short"),
    ],
)
def test_malformed_compound_raises(data, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        parse_compound(data)


@pytest.mark.parametrize(
    ("parser", "data", "message"),
    [
        (SenderReport.parse, RR_TWO_BLOCKS, r"not an RTCP SR packet \(type 201\)"),
        (ReceiverReport.parse, SR_SDES, r"not an RTCP RR packet \(type 200\)"),
        (Sdes.parse, RR_TWO_BLOCKS, r"not an RTCP SDES packet \(type 201\)"),
        (Bye.parse, RR_TWO_BLOCKS, r"not an RTCP BYE packet \(type 201\)"),
        (Nack.parse, bytes(Pli(1, 2)), r"not an RTCP NACK packet \(type 206, FMT 1\)"),
        (Pli.parse, bytes(Fir(1, [])), r"not an RTCP PLI packet \(type 206, FMT 4\)"),
        (Fir.parse, bytes(Pli(1, 2)), r"not an RTCP FIR packet \(type 206, FMT 1\)"),
        (Remb.parse, bytes(Nack(1, 2, [3])), r"not an RTCP REMB packet \(type 205, FMT 1\)"),
        (
            Remb.parse,
            bytes.fromhex("8fce0003" "00000001" "00000000" "41424344"),
            "RTCP application layer feedback is not REMB",
        ),
        (ReportBlock.parse, bytes(SR_BLOCK)[:23], "RTCP report block too short"),
    ],
)
def test_parse_rejects_other_packets(parser, data, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        parser(data)


@pytest.mark.parametrize(
    ("block", "message"),
    [
        (ReportBlock(1, 256, 0, 0, 0, 0, 0), "fraction_lost 256 outside 0..255"),
        (ReportBlock(1, 0, 0x800000, 0, 0, 0, 0), "packets_lost 8388608 outside the signed 24-bit range"),
        (ReportBlock(1, 0, -0x800001, 0, 0, 0, 0), "packets_lost -8388609 outside the signed 24-bit range"),
    ],
)
def test_report_block_rejects_out_of_range_fields(block, message):
    with pytest.raises(ValueError, match=f"^{message}$"):
        bytes(block)


def test_report_block_signed_lost_extremes():
    for lost in (-0x800000, -1, 0, 0x7FFFFF):
        block = ReportBlock(1, 0, lost, 0, 0, 0, 0)
        assert ReportBlock.parse(bytes(block)).packets_lost == lost


def test_build_limits():
    with pytest.raises(ValueError, match="^RTCP count 32 exceeds 31$"):
        bytes(Bye(list(range(32))))
    with pytest.raises(ValueError, match="^SDES CNAME longer than 255 bytes$"):
        bytes(Sdes(1, "x" * 256))
    with pytest.raises(ValueError, match="^REMB carries at most 255 SSRCs$"):
        bytes(Remb(1, 1, list(range(256))))


def test_ntp_conversion():
    assert ntp_from_unix(0.0) == 2208988800 << 32
    assert ntp_from_unix(1.5) == (2208988801 << 32) | 0x80000000
    assert ntp_from_unix(1.25) & 0xFFFFFFFF == 0x40000000
    before = ntp_from_unix(time.time())
    now = ntp_now()
    after = ntp_from_unix(time.time())
    assert before <= now <= after
    assert ntp_middle(0x0123456789ABCDEF) == 0x456789AB
    assert ntp_middle(SR.ntp_timestamp) == 0xA1B28000


@pytest.mark.parametrize(
    ("lsr", "dlsr", "arrival", "expected"),
    [
        # RFC 3550 6.4.1 example: A 0xb710:8000, DLSR 0x0005:4000, LSR 0xb705:2000 -> 6.125 s
        (0xB7052000, 0x00054000, 0xB7108000, 6125.0),
        (0xFFFF8000, 0x00004000, 0x00000000, 250.0),  # A wrapped past 2^32
        (0x00010000, 0x00010000, 0x00020000, 0.0),
        (0x00010000, 0x00020000, 0x00020000, 0.0),  # negative: clock skew, clamped
        (0, 0x1000, 0x20000, None),
    ],
)
def test_rtt_ms(lsr, dlsr, arrival, expected):
    assert rtt_ms(lsr, dlsr, arrival) == expected
