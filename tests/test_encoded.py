import re
import struct
from fractions import Fraction
from pathlib import Path

import av
import pytest

from sfuctl.encoded import EncodedFrame, EncodedTrack, FrameCursor, load_track, patch_vp8_picture_id
from sfuctl.media import MediaFiles, MediaSpec, make_media

SPEC = dict(width=320, height=180, fps=10, duration=3.0, video_bitrate=300_000, keyframe_interval=1.0)
FRAME_TICKS = 9000  # 10 fps at 90 kHz


@pytest.fixture(scope="module")
def vp8(tmp_path_factory: pytest.TempPathFactory) -> MediaFiles:
    return make_media(MediaSpec(**SPEC, video_codec="vp8"), tmp_path_factory.mktemp("vp8"))


@pytest.fixture(scope="module")
def h264(tmp_path_factory: pytest.TempPathFactory) -> MediaFiles:
    return make_media(MediaSpec(**SPEC, video_codec="h264"), tmp_path_factory.mktemp("h264"))


def file_bitrate(path: Path, kind: str) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.video[0] if kind == "video" else container.streams.audio[0]
        return sum(packet.size for packet in container.demux(stream)) * 8 / 3.0


def vp8_depacketize(frame: EncodedFrame) -> bytes:
    """The VP8 frame of one EncodedFrame, checking each RFC 7741 descriptor on the way."""
    picture_ids = {payload[2:4] for payload in frame.payloads}
    assert len(picture_ids) == 1
    assert [payload[0] for payload in frame.payloads] == [0x90] + [0x80] * (len(frame.payloads) - 1)
    assert all(payload[1] == 0x80 and payload[2] & 0x80 for payload in frame.payloads)
    return b"".join(payload[4:] for payload in frame.payloads)


def h264_depacketize(frame: EncodedFrame) -> tuple[bytes, set[int]]:
    """The Annex B access unit of one EncodedFrame (RFC 6184 mode 1) and the packet types seen."""
    units: list[bytes] = []
    fragment = b""
    kinds = set()
    for payload in frame.payloads:
        kind = payload[0] & 0x1F
        kinds.add(kind)
        if kind == 24:  # STAP-A
            position = 1
            while position < len(payload):
                (size,) = struct.unpack_from("!H", payload, position)
                units.append(payload[position + 2 : position + 2 + size])
                position += 2 + size
            assert position == len(payload)
        elif kind == 28:  # FU-A
            start, end = payload[1] & 0x80, payload[1] & 0x40
            if start:
                assert not fragment
                fragment = bytes((payload[0] & 0xE0 | payload[1] & 0x1F,))
            fragment += payload[2:]
            if end:
                units.append(fragment)
                fragment = b""
        else:
            units.append(payload)
    assert not fragment
    return b"".join(b"\x00\x00\x00\x01" + unit for unit in units), kinds


@pytest.mark.parametrize("max_payload", [1200, 300])
def test_vp8_track_packetizes_within_the_limit_and_decodes(vp8: MediaFiles, max_payload: int) -> None:
    assert vp8.video is not None
    track = load_track(vp8.video, "video", max_payload)

    assert (track.kind, track.codec, track.clock_rate, len(track.frames)) == ("video", "VP8", 90000, 30)
    assert max(len(payload) for frame in track.frames for payload in frame.payloads) <= max_payload
    assert any(len(frame.payloads) > 1 for frame in track.frames)
    assert [index for index, frame in enumerate(track.frames) if frame.keyframe] == [0, 10, 20]
    assert {frame.duration for frame in track.frames} == {FRAME_TICKS}
    assert track.frame_interval == pytest.approx(0.1)
    assert track.bitrate == pytest.approx(file_bitrate(vp8.video, "video"), rel=0.05)
    picture_ids = [struct.unpack_from("!H", frame.payloads[0], 2)[0] & 0x7FFF for frame in track.frames]
    assert picture_ids == list(range(30))

    decoder = av.CodecContext.create("vp8", "r")
    decoded = [decoder.decode(av.Packet(vp8_depacketize(frame))) for frame in track.frames]
    assert all(len(frames) == 1 and frames[0].width == 320 for frames in decoded)


@pytest.mark.parametrize(("max_payload", "packet_types"), [(1200, {1, 24, 28}), (100, {24, 28})])
def test_h264_track_packetizes_within_the_limit_and_decodes(
    h264: MediaFiles, max_payload: int, packet_types: set[int]
) -> None:
    assert h264.video is not None
    track = load_track(h264.video, "video", max_payload)

    assert (track.codec, track.clock_rate, len(track.frames)) == ("H264", 90000, 30)
    assert max(len(payload) for frame in track.frames for payload in frame.payloads) <= max_payload
    assert [index for index, frame in enumerate(track.frames) if frame.keyframe] == [0, 10, 20]
    assert {frame.duration for frame in track.frames} == {FRAME_TICKS}
    assert track.bitrate == pytest.approx(file_bitrate(h264.video, "video"), rel=0.05)

    decoder = av.CodecContext.create("h264", "r")
    seen: set[int] = set()
    decoded = 0
    for frame in track.frames:
        access_unit, kinds = h264_depacketize(frame)
        seen |= kinds
        decoded += len(decoder.decode(av.Packet(access_unit)))
    decoded += len(decoder.decode(None))
    assert decoded == 30
    assert 9 not in seen  # access unit delimiters are dropped
    assert packet_types <= seen


def test_opus_track_has_one_payload_per_20_ms_packet(vp8: MediaFiles) -> None:
    assert vp8.audio is not None
    track = load_track(vp8.audio, "audio")

    assert (track.kind, track.codec, track.clock_rate) == ("audio", "opus", 48000)
    assert all(len(frame.payloads) == 1 and frame.keyframe for frame in track.frames)
    assert {frame.duration for frame in track.frames} == {960}
    assert track.frame_interval == pytest.approx(0.02)
    assert 145 <= len(track.frames) <= 152
    assert track.bitrate == pytest.approx(file_bitrate(vp8.audio, "audio"), rel=0.05)


def write_video(path: Path, codec: str, container_format: str, options: dict[str, str]) -> Path:
    with av.open(str(path), "w", format=container_format) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        stream.codec_context.options = options
        for index in range(10):
            frame = av.VideoFrame(64, 48, "yuv420p")
            frame.pts, frame.time_base = index, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def test_load_track_rejects_files_it_cannot_send(vp8: MediaFiles, tmp_path: Path) -> None:
    assert vp8.audio is not None and vp8.video is not None
    garbage = tmp_path / "zeros.bin"
    garbage.write_bytes(bytes(4096))
    mpeg2 = write_video(tmp_path / "clip.ts", "mpeg2video", "mpegts", {})
    b_frames = write_video(tmp_path / "bframes.ts", "libx264", "mpegts", {"x264-params": "bframes=2:b-adapt=0:scenecut=0"})
    cases = [
        (vp8.audio, "video", f"{vp8.audio}: no video stream"),
        (vp8.video, "audio", f"{vp8.video}: no audio stream"),
        (mpeg2, "video", f"{mpeg2}: video codec mpeg2video is not supported (use VP8, H.264 or Opus)"),
        (b_frames, "video", rf"{b_frames}: timestamps do not increase at frame \d+ \(B-frames\?\): re-encode without B-frames"),
        (vp8.video, "data", "kind must be 'audio' or 'video', not 'data'"),
    ]
    for path, kind, message in cases:
        with pytest.raises(ValueError) as error:
            load_track(path, kind)
        # x264's lookahead decides where the first B-frame lands, so that case is a pattern.
        assert str(error.value) == message or re.fullmatch(message, str(error.value))
    with pytest.raises(ValueError, match=f"^{garbage}: not a media file"):
        load_track(garbage, "video")


def synthetic_track(keyframes: list[bool], duration: int = FRAME_TICKS) -> EncodedTrack:
    frames = [EncodedFrame((bytes((index,)),), duration, keyframe) for index, keyframe in enumerate(keyframes)]
    return EncodedTrack("video", "VP8", 90000, frames, duration / 90000, 0)


def test_cursor_loops_seamlessly_with_continuous_timestamps(vp8: MediaFiles) -> None:
    assert vp8.video is not None
    track = load_track(vp8.video, "video")
    start = 0xFFFFFFFF - 5 * FRAME_TICKS  # wraps the 32-bit timestamp during the first loop
    cursor = FrameCursor(track, start)

    sent = [cursor.next() for _ in range(2 * len(track.frames) + 5)]

    assert sent[0][0] == start
    assert [frame for _, frame, _ in sent] == (track.frames * 3)[: len(sent)]
    assert all(frame is track.frames[index % 30] for index, (_, frame, _) in enumerate(sent))
    steps = {(later[0] - earlier[0]) & 0xFFFFFFFF for earlier, later in zip(sent, sent[1:])}
    assert steps == {FRAME_TICKS}
    assert {seconds for _, _, seconds in sent} == {0.1}


def test_cursor_uses_each_frame_duration_and_a_random_start() -> None:
    track = EncodedTrack(
        "video", "VP8", 90000,
        [EncodedFrame((b"a",), 3000, True), EncodedFrame((b"b",), 3003, False), EncodedFrame((b"c",), 3001, False)],
        0.0334, 0,
    )
    cursor = FrameCursor(track, 100)

    assert [cursor.next() for _ in range(4)] == [
        (100, track.frames[0], 3000 / 90000),
        (3100, track.frames[1], 3003 / 90000),
        (6103, track.frames[2], 3001 / 90000),
        (9104, track.frames[0], 3000 / 90000),
    ]
    assert len({FrameCursor(track).next()[0] for _ in range(8)}) > 1


@pytest.mark.parametrize(
    ("keyframes", "sent_before", "expected_index"),
    [
        ([True] + [False] * 9 + [True] + [False] * 9, 3, 10),  # skips ahead to the next keyframe
        ([True] + [False] * 9 + [True] + [False] * 9, 10, 10),  # already at a keyframe: no skip
        ([True] + [False] * 9 + [True] + [False] * 9, 14, 0),  # past the last keyframe: wraps around
        ([False, False, True, False], 0, 2),
        ([False] * 4, 1, 1),  # no keyframe at all: carries on
    ],
)
def test_request_keyframe_lands_on_the_next_keyframe_without_a_timestamp_jump(
    keyframes: list[bool], sent_before: int, expected_index: int
) -> None:
    track = synthetic_track(keyframes)
    cursor = FrameCursor(track, 0)
    for _ in range(sent_before):
        cursor.next()

    cursor.request_keyframe()
    timestamp, frame, _ = cursor.next()
    following = cursor.next()

    assert frame is track.frames[expected_index]
    assert timestamp == sent_before * FRAME_TICKS
    assert following[1] is track.frames[(expected_index + 1) % len(keyframes)]
    assert following[0] == timestamp + FRAME_TICKS


def test_request_keyframe_on_a_generated_file(h264: MediaFiles) -> None:
    assert h264.video is not None
    track = load_track(h264.video, "video")
    cursor = FrameCursor(track, 0)
    for _ in range(13):
        cursor.next()

    cursor.request_keyframe()
    timestamp, frame, _ = cursor.next()

    assert frame.keyframe and frame is track.frames[20]
    assert timestamp == 13 * FRAME_TICKS


def test_patch_vp8_picture_id_rewrites_the_15_bit_field(vp8: MediaFiles) -> None:
    assert vp8.video is not None
    payload = load_track(vp8.video, "video").frames[7].payloads[0]
    packet = bytearray(12) + payload

    patch_vp8_picture_id(packet, 12, 0x8000 + 0x1234)

    assert packet[12:16] == bytes((0x90, 0x80, 0x92, 0x34))
    assert packet[16:] == payload[4:]
