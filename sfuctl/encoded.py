"""Pre-encoded frames for sending without encoding: demux a file once, packetize every frame for RTP.

VP8 payloads follow RFC 7741 and always carry a 4-byte descriptor with a 15-bit picture ID at
payload bytes 2-3 (see patch_vp8_picture_id); H.264 payloads follow RFC 6184 packetization-mode 1
(single NAL unit, STAP-A, FU-A) without access unit delimiters; an Opus payload is the packet itself.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import NamedTuple

import av

MAX_PAYLOAD = 1200
VP8_PICTURE_ID_OFFSET = 2

# canonical FFmpeg codec name -> (RTP codec name, clock rate)
_VIDEO_CODECS = {"vp8": ("VP8", 90000), "h264": ("H264", 90000)}
_AUDIO_CODECS = {"opus": ("opus", 48000)}

_NAL_TYPE_AUD = 9
_NAL_TYPE_STAP_A = 24
_NAL_TYPE_FU_A = 28


class EncodedFrame(NamedTuple):
    """One frame: its RTP payloads, the RTP clock ticks until the next frame, and whether it is a keyframe."""

    payloads: tuple[bytes, ...]
    duration: int
    keyframe: bool


@dataclass(frozen=True, slots=True)
class EncodedTrack:
    """A whole track packetized in memory. bitrate counts RTP payload bytes (bps, average)."""

    kind: str
    codec: str
    clock_rate: int
    frames: list[EncodedFrame]
    frame_interval: float
    bitrate: int


def load_track(path: Path, kind: str, max_payload: int = MAX_PAYLOAD) -> EncodedTrack:
    """Demux the first kind ("audio" or "video") stream of path and packetize each frame.

    Raises ValueError naming the file when it has no such stream, an unsupported codec,
    fewer than two frames or timestamps that do not increase (B-frames).
    """
    if kind not in ("audio", "video"):
        raise ValueError(f"kind must be 'audio' or 'video', not {kind!r}")
    if max_payload < 64:
        raise ValueError(f"max_payload {max_payload} is too small: use at least 64 bytes")
    try:
        container = av.open(str(path))
    except av.error.InvalidDataError as error:
        raise ValueError(f"{path}: not a media file ({error})") from None
    with container:
        streams = container.streams.video if kind == "video" else container.streams.audio
        if not streams:
            raise ValueError(f"{path}: no {kind} stream")
        stream = streams[0]
        codec_name = stream.codec_context.codec.canonical_name
        supported = _VIDEO_CODECS if kind == "video" else _AUDIO_CODECS
        if codec_name not in supported:
            raise ValueError(f"{path}: {kind} codec {codec_name} is not supported (use VP8, H.264 or Opus)")
        codec, clock_rate = supported[codec_name]
        packets = [
            (packet.pts, bytes(packet), packet.is_keyframe)
            for packet in container.demux(stream)
            if packet.size and packet.pts is not None
        ]
        time_base = stream.time_base
    assert time_base is not None
    if len(packets) < 2:
        raise ValueError(f"{path}: the {kind} stream needs at least 2 frames, it has {len(packets)}")

    ticks = _rtp_ticks([pts for pts, _, _ in packets], time_base * clock_rate, path)
    durations = [later - earlier for earlier, later in zip(ticks, ticks[1:])]
    durations.append(round(ticks[-1] / (len(ticks) - 1)))
    frames = [
        EncodedFrame(_packetize(codec, data, index, max_payload), duration, keyframe)
        for index, ((_, data, keyframe), duration) in enumerate(zip(packets, durations))
    ]
    total_ticks = ticks[-1] + durations[-1]
    payload_bytes = sum(len(payload) for frame in frames for payload in frame.payloads)
    return EncodedTrack(
        kind=kind,
        codec=codec,
        clock_rate=clock_rate,
        frames=frames,
        frame_interval=total_ticks / len(frames) / clock_rate,
        bitrate=round(payload_bytes * 8 * clock_rate / total_ticks),
    )


def patch_vp8_picture_id(packet: bytearray, payload_offset: int, picture_id: int) -> None:
    """Write a 15-bit picture ID into a VP8 payload made here, which starts at payload_offset in packet.

    A sender looping a track keeps picture IDs continuous this way (the stored ones restart each loop).
    """
    struct.pack_into("!H", packet, payload_offset + VP8_PICTURE_ID_OFFSET, 0x8000 | (picture_id & 0x7FFF))


class FrameCursor:
    """Endless real-time walk over a track's frames with continuous RTP timestamps across loops."""

    __slots__ = ("_frames", "_seconds", "_next_keyframe", "_index", "_timestamp", "_keyframe_requested")

    def __init__(self, track: EncodedTrack, start_timestamp: int | None = None) -> None:
        if not track.frames:
            raise ValueError("track has no frames")
        self._frames = track.frames
        # One float object per distinct duration, so next() allocates none.
        seconds_of = {frame.duration: frame.duration / track.clock_rate for frame in track.frames}
        self._seconds = [seconds_of[frame.duration] for frame in track.frames]
        self._next_keyframe = _next_keyframe_table(track.frames)
        self._index = 0
        self._timestamp = random.getrandbits(32) if start_timestamp is None else start_timestamp & 0xFFFFFFFF
        self._keyframe_requested = False

    def next(self) -> tuple[int, EncodedFrame, float]:
        """(RTP timestamp, frame, seconds until the following frame) of the next frame to send."""
        index = self._index
        if self._keyframe_requested:
            self._keyframe_requested = False
            index = self._next_keyframe[index]
        frame = self._frames[index]
        timestamp = self._timestamp
        self._timestamp = (timestamp + frame.duration) & 0xFFFFFFFF
        self._index = index + 1 if index + 1 < len(self._frames) else 0
        return timestamp, frame, self._seconds[index]

    def request_keyframe(self) -> None:
        """Make the next frame returned the next keyframe of the track (an answer to PLI or FIR).

        Frames before it are skipped; timestamps keep advancing by frame durations only, so they
        stay in step with the real-time pacing.
        """
        self._keyframe_requested = True


def _rtp_ticks(pts: list[int], ticks_per_pts: Fraction, path: Path) -> list[int]:
    """Each packet's time from the first one, in RTP clock ticks, rounded without drift."""
    first = pts[0]
    ticks = []
    for index, value in enumerate(pts):
        if index and value <= pts[index - 1]:
            raise ValueError(
                f"{path}: timestamps do not increase at frame {index} (B-frames?): "
                "re-encode without B-frames"
            )
        ticks.append(round((value - first) * ticks_per_pts))
    return ticks


def _next_keyframe_table(frames: list[EncodedFrame]) -> list[int]:
    """For each index, the index of the first keyframe at or after it, wrapping; itself if none exists."""
    count = len(frames)
    keyframes = [index for index, frame in enumerate(frames) if frame.keyframe]
    if not keyframes:
        return list(range(count))
    table = [0] * count
    following = keyframes[0] + count  # the first keyframe of the next loop
    for index in range(count - 1, -1, -1):
        if frames[index].keyframe:
            following = index
        table[index] = following % count
    return table


def _packetize(codec: str, data: bytes, index: int, max_payload: int) -> tuple[bytes, ...]:
    if codec == "VP8":
        return _packetize_vp8(data, index & 0x7FFF, max_payload)
    if codec == "H264":
        return _packetize_h264(data, max_payload)
    return (data,)


def _even_chunks(data: bytes, room: int) -> Iterator[bytes]:
    """data cut into the fewest chunks of at most room bytes, sizes differing by at most one."""
    count = -(-len(data) // room)
    size, larger = divmod(len(data), count)
    position = 0
    for chunk in range(count):
        end = position + size + (chunk < larger)
        yield data[position:end]
        position = end


def _packetize_vp8(data: bytes, picture_id: int, max_payload: int) -> tuple[bytes, ...]:
    # X=1, S=1 on the first packet, PID=0; I=1; M=1 and a 15-bit picture ID.
    high, low = 0x80 | picture_id >> 8, picture_id & 0xFF
    first = bytes((0x90, 0x80, high, low))
    rest = bytes((0x80, 0x80, high, low))
    return tuple(
        (first if number == 0 else rest) + chunk
        for number, chunk in enumerate(_even_chunks(data, max_payload - len(first)))
    )


def _split_annex_b(data: bytes) -> list[bytes]:
    """The NAL units of an Annex B access unit, without start codes and trailing zero bytes."""
    units = []
    start = data.find(b"\x00\x00\x01")
    while start != -1:
        start += 3
        end = data.find(b"\x00\x00\x01", start)
        unit = data[start : len(data) if end == -1 else end].rstrip(b"\x00")
        if unit:
            units.append(unit)
        start = end
    return units


def _packetize_h264(data: bytes, max_payload: int) -> tuple[bytes, ...]:
    payloads: list[bytes] = []
    group: list[bytes] = []  # small NAL units waiting to share a STAP-A
    group_size = 1  # the STAP-A header byte

    def flush() -> None:
        nonlocal group_size
        if len(group) == 1:
            payloads.append(group[0])
        elif group:
            header = max(unit[0] & 0x60 for unit in group) | max(unit[0] & 0x80 for unit in group)
            payloads.append(
                bytes((header | _NAL_TYPE_STAP_A,)) + b"".join(struct.pack("!H", len(unit)) + unit for unit in group)
            )
        group.clear()
        group_size = 1

    for unit in _split_annex_b(data):
        if unit[0] & 0x1F == _NAL_TYPE_AUD:
            continue  # the RTP marker bit delimits access units
        if len(unit) > max_payload:
            flush()
            payloads.extend(_fragment_h264(unit, max_payload))
            continue
        if group_size + 2 + len(unit) > max_payload:
            flush()
        group.append(unit)
        group_size += 2 + len(unit)
    flush()
    return tuple(payloads)


def _fragment_h264(unit: bytes, max_payload: int) -> list[bytes]:
    """FU-A fragments of one NAL unit."""
    indicator = unit[0] & 0xE0 | _NAL_TYPE_FU_A
    nal_type = unit[0] & 0x1F
    chunks = list(_even_chunks(unit[1:], max_payload - 2))
    last = len(chunks) - 1
    return [
        bytes((indicator, nal_type | (0x80 if number == 0 else 0) | (0x40 if number == last else 0))) + chunk
        for number, chunk in enumerate(chunks)
    ]
