import pytest

from sfuctl.encoded import _packetize_vp8
from sfuctl.rtc.rtp import is_keyframe
from sfuctl.rtc.vp8 import PictureNumbering, keyframe_size, parse_descriptor, renumbered

# A VP8 keyframe's first bytes: frame tag (P=0), start code, 320x180 (little-endian 14-bit fields).
KEY_BODY = bytes((0x10, 0x02, 0x00)) + b"\x9d\x01\x2a" + (320).to_bytes(2, "little") + (180).to_bytes(2, "little") + b"xx"
DELTA_BODY = bytes((0x11, 0x02, 0x00)) + b"payload"


@pytest.mark.parametrize(
    ("descriptor", "fields"),
    [
        # No X byte: start of partition 0 only.
        (b"\x10", dict(start=True, partition=0, picture_id=None, tl0picidx=None, tid=None, size=1)),
        # X, I with a 7-bit PictureID.
        (b"\x90\x80\x05", dict(picture_id=5, picture_id_bits=7, picture_id_offset=2, size=3)),
        # X, I (15-bit), L, T: what Chromium sends with temporal layers; TID 2, Y set.
        (
            b"\x90\xe0\x81\x23\x07\xa0",
            dict(picture_id=0x123, picture_id_bits=15, tl0picidx=7, tl0picidx_offset=4, tid=2, layer_sync=True, size=6),
        ),
        # K without T: the KEYIDX byte is skipped, no TID.
        (b"\x90\x10\x1f", dict(tid=None, size=3)),
        # A continuation packet of partition 1.
        (b"\x81\x80\x80\x01", dict(start=False, partition=1, picture_id=1, size=4)),
    ],
)
def test_parse_descriptor_reads_each_field(descriptor, fields):
    d = parse_descriptor(descriptor + DELTA_BODY)
    for name, value in fields.items():
        assert getattr(d, name) == value, name
    assert d.keyframe is False


@pytest.mark.parametrize(
    "payload",
    [b"", b"\x90", b"\x90\x80", b"\x90\x80\x81", b"\x90\x40", b"\x90\x20", b"\x90\xe0\x81\x23\x07"],
)
def test_parse_descriptor_rejects_truncated(payload):
    with pytest.raises(ValueError, match="VP8"):
        parse_descriptor(payload)


@pytest.mark.parametrize(
    ("payload", "keyframe", "size"),
    [
        (b"\x90\x80\x80\x01" + KEY_BODY, True, (320, 180)),
        (b"\x10" + KEY_BODY, True, (320, 180)),
        (b"\x90\x80\x80\x01" + DELTA_BODY, False, None),
        (b"\x80\x80\x80\x01" + KEY_BODY, False, None),  # S=0: not the frame's first packet
        (b"\x90\x80\x80\x01" + KEY_BODY[:5], True, None),  # keyframe, too short for its size
        (b"\x90\x80\x80\x01" + b"\x10\x02\x00XYZ1234", True, None),  # bad start code
        (b"\x90", False, None),
    ],
)
def test_keyframe_and_size_agree_with_rtp_is_keyframe(payload, keyframe, size):
    assert is_keyframe("VP8", payload) is keyframe
    if len(payload) > 1:
        assert parse_descriptor(payload).keyframe is keyframe
    assert keyframe_size(payload) == size


def test_keyframe_size_reads_packets_made_by_the_bots_packetizer():
    (first, *_rest) = _packetize_vp8(KEY_BODY + bytes(3000), 42, 1200)
    assert keyframe_size(first) == (320, 180)
    assert parse_descriptor(first).picture_id == 42


@pytest.mark.parametrize(
    ("descriptor", "picture_id", "tl0", "expected"),
    [
        (b"\x90\xe0\x81\x23\x07\xa0", 0x7FFE, 0x1FF, b"\x90\xe0\xff\xfe\xff\xa0"),
        (b"\x90\xc0\x05\x07", 130, 9, b"\x90\xc0\x02\x09"),  # 7-bit PictureID stays 7 bits
        (b"\x90\x80\x80\x01", 7, 9, b"\x90\x80\x80\x07"),  # no L: no TL0PICIDX written
        (b"\x10", 7, 9, b"\x10"),
    ],
)
def test_renumbering_replaces_only_present_fields(descriptor, picture_id, tl0, expected):
    payload = descriptor + DELTA_BODY
    d = parse_descriptor(payload)
    offsets = (picture_id - (d.picture_id or 0), tl0 - (d.tl0picidx or 0))
    out = bytes(renumbered(payload[: d.size], d, *offsets)) + payload[d.size :]
    assert out == expected + DELTA_BODY
    assert parse_descriptor(out).size == len(descriptor)


def descriptor(picture_id: int, tl0: int) -> bytes:
    return bytes((0x90, 0xC0, 0x80 | picture_id >> 8, picture_id & 0xFF, tl0)) + DELTA_BODY


def send(numbering: PictureNumbering, d, newest: bool = True):
    out = numbering.map(d)
    if newest:
        numbering.note(d)
    return out


def test_numbering_is_continuous_across_a_switch_and_wraps():
    numbering = PictureNumbering(first_picture_id=0x7FFE, first_tl0picidx=0xFE)
    out = []
    source_a = [parse_descriptor(descriptor(p, t)) for p, t in ((100, 10), (101, 11), (101, 11), (102, 12))]
    numbering.rebase(source_a[0])
    out += [send(numbering, d) for d in source_a]
    source_b = [parse_descriptor(descriptor(p, t)) for p, t in ((5000, 200), (5001, 201))]
    numbering.rebase(source_b[0])
    out += [send(numbering, d) for d in source_b]
    assert out == [(0x7FFE, 0xFE), (0x7FFF, 0xFF), (0x7FFF, 0xFF), (0, 0), (1, 1), (2, 2)]


def test_numbering_keeps_a_retransmission_out_of_the_last_sent():
    numbering = PictureNumbering(first_picture_id=10, first_tl0picidx=0)
    d = [parse_descriptor(descriptor(p, 0)) for p in (50, 51, 49)]
    numbering.rebase(d[0])
    assert [send(numbering, x, newest=x.picture_id != 49)[0] for x in d] == [10, 11, 9]
    switched = parse_descriptor(descriptor(900, 0))
    numbering.rebase(switched)
    assert numbering.map(switched)[0] == 12


def test_numbering_without_first_values_keeps_the_first_source_numbers():
    numbering = PictureNumbering()
    first = parse_descriptor(descriptor(300, 40))
    numbering.rebase(first)
    assert send(numbering, first) == (300, 40) and (numbering.pid_offset, numbering.tl0_offset) == (0, 0)
    other = parse_descriptor(descriptor(7, 1))
    numbering.rebase(other)
    assert numbering.map(other) == (301, 41)
