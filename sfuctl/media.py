"""Synthetic test media: a moving pattern with a frame counter, and a tone or speech-like audio.

Everything is generated locally with PyAV's FFmpeg (lavfi sources, libvpx / libx264 / libopus).
Video goes to VP8 in IVF or H.264 (Annex B) in MPEG-TS, audio to Opus in OGG: containers that
keep timestamps and can be sent without decoding (see sfuctl.encoded).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
from av.audio.stream import AudioStream
from av.filter import Graph
from av.video.frame import PictureType, VideoFrame
from av.video.stream import VideoStream

Progress = Callable[[int, int], None]

AUDIO_SAMPLE_RATE = 48000
AUDIO_FRAME_SAMPLES = 960  # 20 ms, Opus's usual frame for WebRTC
VIDEO_CODECS = ("vp8", "h264")
AUDIO_KINDS = ("tone", "speech")
# Simulcast encodings, lowest first: each divides the top size by this factor (what browsers send with
# scaleResolutionDownBy 4/2/1) and gets this share of the top bitrate (1.5 Mb/s -> 500 and 150 kb/s, about
# the rates libwebrtc gives 720p/360p/180p).
SIMULCAST_SCALES = (4, 2, 1)
SIMULCAST_BITRATE_SHARES = (0.1, 1 / 3, 1.0)
SIMULCAST_TOP = (1280, 720, 1_500_000)  # default size and bitrate of the top encoding
# Bump when the generated content changes, so cached files made by an older version are not reused.
_GENERATOR_VERSION = 1

# A voice-like signal: a fundamental gliding around 140 Hz with two harmonics, syllables at ~3.7 Hz,
# and a 0.7 s pause every 2.9 s. phi is the integrated phase of the gliding fundamental.
_PHI = "(140*t-20*cos(2*PI*0.7*t))"
_AUDIO_EXPRESSIONS = {
    "tone": "0.3*sin(2*PI*440*t)",
    "speech": (
        f"0.25*(sin(2*PI*{_PHI})+0.6*sin(4*PI*{_PHI})+0.3*sin(6*PI*{_PHI}))"
        "*(0.55-0.45*cos(2*PI*3.7*t))*gt(mod(t,2.9),0.7)"
    ),
}

# 3x5 glyphs of the frame counter's digits, one string of "on" cells per row.
_GLYPHS = {
    "0": ("###", "#.#", "#.#", "#.#", "###"),
    "1": (".#.", "##.", ".#.", ".#.", "###"),
    "2": ("###", "..#", "###", "#..", "###"),
    "3": ("###", "..#", "###", "..#", "###"),
    "4": ("#.#", "#.#", "###", "..#", "..#"),
    "5": ("###", "#..", "###", "..#", "###"),
    "6": ("###", "#..", "###", "#.#", "###"),
    "7": ("###", "..#", "..#", "..#", "..#"),
    "8": ("###", "#.#", "###", "#.#", "###"),
    "9": ("###", "#.#", "###", "..#", "###"),
}
_COUNTER_DIGITS = 5
_LUMA_BLACK = 16
_LUMA_WHITE = 235
_CHROMA_NEUTRAL = 128


@dataclass(frozen=True, slots=True)
class MediaSpec:
    """What to generate. Bitrates in bits per second, times in seconds."""

    width: int = 640
    height: int = 360
    fps: int = 25
    video_bitrate: int = 550_000
    keyframe_interval: float = 2.0
    duration: float = 10.0
    video_codec: str = "vp8"
    audio: str = "tone"
    audio_bitrate: int = 32_000

    def __post_init__(self) -> None:
        if self.width % 2 or self.height % 2 or not (64 <= self.width <= 3840 and 48 <= self.height <= 2160):
            raise ValueError(
                f"video size {self.width}x{self.height} is not supported: "
                "use even numbers from 64x48 to 3840x2160"
            )
        if not 1 <= self.fps <= 120:
            raise ValueError(f"fps {self.fps} is out of range: use 1 to 120")
        if not 50_000 <= self.video_bitrate <= 50_000_000:
            raise ValueError(f"video bitrate {self.video_bitrate} b/s is out of range: use 50 kb/s to 50 Mb/s")
        if not 6_000 <= self.audio_bitrate <= 510_000:
            raise ValueError(f"audio bitrate {self.audio_bitrate} b/s is out of range: use 6 kb/s to 510 kb/s")
        if not 0 < self.duration <= 3600:
            raise ValueError(f"duration {self.duration} s is out of range: use more than 0 and at most 3600 s")
        if not 0 < self.keyframe_interval <= 3600:
            raise ValueError(
                f"keyframe interval {self.keyframe_interval} s is out of range: use more than 0 and at most 3600 s"
            )
        if self.video_frames < 1:
            raise ValueError(f"duration {self.duration} s is shorter than one frame at {self.fps} fps")
        if self.video_codec not in VIDEO_CODECS:
            raise ValueError(f"video codec {self.video_codec!r} is not supported: use 'vp8' or 'h264'")
        if self.audio not in AUDIO_KINDS:
            raise ValueError(f"audio {self.audio!r} is not supported: use 'tone' or 'speech'")

    @property
    def video_frames(self) -> int:
        """Number of video frames in the file."""
        return round(self.fps * self.duration)

    @property
    def audio_frames(self) -> int:
        """Number of 20 ms audio frames in the file (at least one)."""
        return max(1, round(self.duration * AUDIO_SAMPLE_RATE / AUDIO_FRAME_SAMPLES))

    @property
    def keyframe_frames(self) -> int:
        """Distance between keyframes, in frames."""
        return max(1, round(self.keyframe_interval * self.fps))


@dataclass(frozen=True, slots=True)
class MediaFiles:
    """Paths of a generated (or user-supplied) media set; None when that kind is absent."""

    video: Path | None
    audio: Path | None


@dataclass(frozen=True, slots=True)
class SimulcastFiles:
    """The encodings of one video, lowest first (same frame rate, keyframes at the same frames), and the audio."""

    videos: tuple[Path, ...]
    audio: Path


def simulcast_specs(top: MediaSpec) -> tuple[MediaSpec, ...]:
    """The spec of each simulcast encoding, lowest first, from the top one's size, bitrate and GOP."""
    if top.width % 8 or top.height % 8:
        raise ValueError(
            f"simulcast needs a top size divisible by 8 (it is divided by 4 and stays even), not {top.width}x{top.height}"
        )
    specs = []
    for scale, share in zip(SIMULCAST_SCALES, SIMULCAST_BITRATE_SHARES):
        fields = {name: getattr(top, name) for name in top.__dataclass_fields__}
        fields.update(width=top.width // scale, height=top.height // scale, video_bitrate=max(50_000, round(top.video_bitrate * share)))
        specs.append(MediaSpec(**fields))
    return tuple(specs)


def make_simulcast_media(top: MediaSpec, directory: Path, progress: Progress | None = None) -> SimulcastFiles:
    """Write the simulcast encodings of top (see simulcast_specs) and its audio; return their paths."""
    specs = simulcast_specs(top)
    directory.mkdir(parents=True, exist_ok=True)
    paths = [media_paths(spec, directory) for spec in specs]
    total = sum(spec.video_frames for spec in specs) + top.audio_frames
    report = progress or _ignore_progress
    done = 0
    for spec, files in zip(specs, paths):
        assert files.video is not None
        _write_atomically(files.video, lambda tmp, spec=spec, base=done: _write_video(spec, tmp, lambda n: report(base + n, total)))
        done += spec.video_frames
    audio = paths[-1].audio
    assert audio is not None
    _write_atomically(audio, lambda tmp: _write_audio(top, tmp, lambda n: report(done + n, total)))
    return SimulcastFiles(videos=tuple(f.video for f in paths if f.video is not None), audio=audio)


def ensure_simulcast_media(progress: Progress | None = None) -> SimulcastFiles:
    """The default simulcast set in default_cache_dir(), generated on first use."""
    width, height, bitrate = SIMULCAST_TOP
    top = MediaSpec(width=width, height=height, video_bitrate=bitrate)
    directory = default_cache_dir()
    paths = [media_paths(spec, directory) for spec in simulcast_specs(top)]
    if all(f.video is not None and f.video.exists() for f in paths) and paths[-1].audio.exists():
        return SimulcastFiles(tuple(f.video for f in paths), paths[-1].audio)
    return make_simulcast_media(top, directory, progress)


def default_cache_dir() -> Path:
    """$SFUCTL_CACHE_DIR, else $XDG_CACHE_HOME/sfuctl, else ~/.cache/sfuctl."""
    explicit = os.environ.get("SFUCTL_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "sfuctl"


def media_paths(spec: MediaSpec, directory: Path) -> MediaFiles:
    """Where make_media writes the files of spec: names carry a hash of the settings that shape them."""
    video_key = (
        _GENERATOR_VERSION, spec.width, spec.height, spec.fps, spec.video_bitrate,
        float(spec.keyframe_interval), float(spec.duration), spec.video_codec,
    )
    audio_key = (_GENERATOR_VERSION, spec.audio, spec.audio_bitrate, float(spec.duration))
    extension = "ivf" if spec.video_codec == "vp8" else "ts"
    return MediaFiles(
        video=directory / f"video-{spec.video_codec}-{spec.width}x{spec.height}-{_digest(video_key)}.{extension}",
        audio=directory / f"audio-{spec.audio}-opus-{_digest(audio_key)}.ogg",
    )


def make_media(spec: MediaSpec, directory: Path, progress: Progress | None = None) -> MediaFiles:
    """Write the video and audio files of spec into directory (created if missing); return their paths.

    progress, if given, is called as progress(done, total) after each encoded frame.
    Each file is written under a temporary name and renamed, so readers never see a partial file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    files = media_paths(spec, directory)
    assert files.video is not None and files.audio is not None
    total = spec.video_frames + spec.audio_frames
    report = progress or _ignore_progress
    _write_atomically(files.video, lambda tmp: _write_video(spec, tmp, lambda done: report(done, total)))
    _write_atomically(
        files.audio,
        lambda tmp: _write_audio(spec, tmp, lambda done: report(spec.video_frames + done, total)),
    )
    return files


def ensure_default_media(progress: Progress | None = None) -> MediaFiles:
    """The default MediaSpec's files in default_cache_dir(), generated on first use."""
    spec = MediaSpec()
    directory = default_cache_dir()
    files = media_paths(spec, directory)
    if files.video is not None and files.video.exists() and files.audio is not None and files.audio.exists():
        return files
    return make_media(spec, directory, progress)


def default_media(simulcast: bool = False, progress: Progress | None = None) -> tuple[str, ...]:
    """The paths of the default media, generated in default_cache_dir() on first use: the video then the
    audio, or with `simulcast` the encodings of the simulcast set, lowest first, then its audio."""
    if simulcast:
        layers = ensure_simulcast_media(progress)
        return tuple(str(path) for path in (*layers.videos, layers.audio))
    files = ensure_default_media(progress)
    return tuple(str(path) for path in (files.video, files.audio) if path is not None)


def _digest(key: tuple[object, ...]) -> str:
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]


def _ignore_progress(done: int, total: int) -> None:
    """Progress callback used when the caller gave none."""


def _write_atomically(path: Path, write: Callable[[Path], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _pull(sink: av.filter.context.FilterContext, count: int) -> Iterator[av.VideoFrame | av.AudioFrame]:
    """The first count frames that reach sink, the end of a configured source-only filter graph."""
    for _ in range(count):
        yield sink.pull()


def _write_video(spec: MediaSpec, path: Path, done: Callable[[int], None]) -> None:
    graph = Graph()
    source = graph.add("testsrc2", f"size={spec.width}x{spec.height}:rate={spec.fps}")
    pixel_format = graph.add("format", "pix_fmts=yuv420p")
    sink = graph.add("buffersink")
    source.link_to(pixel_format)
    pixel_format.link_to(sink)
    graph.configure()

    container_format = "ivf" if spec.video_codec == "vp8" else "mpegts"
    with av.open(str(path), "w", format=container_format) as container:
        stream = _add_video_stream(container, spec)
        counter = _FrameCounter(spec.width, spec.height)
        gop = spec.keyframe_frames
        for index, frame in enumerate(_pull(sink, spec.video_frames)):
            assert isinstance(frame, VideoFrame)
            counter.draw(frame, index)
            # lavfi marks every frame I; NONE lets the encoder choose, I forces a keyframe.
            frame.pict_type = PictureType.I if index % gop == 0 else PictureType.NONE
            container.mux(stream.encode(frame))
            done(index + 1)
        container.mux(stream.encode(None))


def _add_video_stream(container: av.container.OutputContainer, spec: MediaSpec) -> VideoStream:
    gop = spec.keyframe_frames
    rate = str(spec.video_bitrate)
    if spec.video_codec == "vp8":
        stream = container.add_stream("libvpx", rate=spec.fps)
        options = {
            # Realtime one-pass CBR (minrate = maxrate = bitrate), no alt-ref frames, no look-ahead:
            # one visible frame per packet, as a WebRTC sender produces.
            "deadline": "realtime",
            "cpu-used": "8",
            "lag-in-frames": "0",
            "auto-alt-ref": "0",
            "minrate": rate,
            "maxrate": rate,
            "bufsize": rate,
            "keyint_min": str(gop),
        }
    else:
        stream = container.add_stream("libx264", rate=spec.fps)
        stream.codec_context.profile = "Baseline"
        options = {
            # Constrained Baseline without B-frames, fixed keyframe spacing, VBV-capped rate.
            "preset": "veryfast",
            "tune": "zerolatency",
            "x264-params": f"keyint={gop}:min-keyint={gop}:scenecut=0:bframes=0",
            "maxrate": rate,
            "bufsize": rate,
        }
    assert isinstance(stream, VideoStream)
    stream.width = spec.width
    stream.height = spec.height
    stream.pix_fmt = "yuv420p"
    stream.codec_context.bit_rate = spec.video_bitrate
    stream.codec_context.gop_size = gop
    stream.codec_context.options = options
    return stream


def _write_audio(spec: MediaSpec, path: Path, done: Callable[[int], None]) -> None:
    graph = Graph()
    expression = _AUDIO_EXPRESSIONS[spec.audio]
    source = graph.add(
        "aevalsrc", f"exprs='{expression}|{expression}':s={AUDIO_SAMPLE_RATE}:c=stereo:n={AUDIO_FRAME_SAMPLES}"
    )
    # Stereo, as WebRTC's opus/48000/2 says (FFmpeg's WHIP muxer refuses mono input); both channels are equal.
    sample_format = graph.add("aformat", "sample_fmts=s16:channel_layouts=stereo")
    sink = graph.add("abuffersink")
    source.link_to(sample_format)
    sample_format.link_to(sink)
    graph.configure()

    with av.open(str(path), "w", format="ogg") as container:
        stream = container.add_stream("libopus", rate=AUDIO_SAMPLE_RATE)
        assert isinstance(stream, AudioStream)
        stream.layout = "stereo"
        stream.format = "s16"
        stream.codec_context.bit_rate = spec.audio_bitrate
        stream.codec_context.options = {"application": "voip", "vbr": "constrained"}
        for index, frame in enumerate(_pull(sink, spec.audio_frames)):
            container.mux(stream.encode(frame))
            done(index + 1)
        container.mux(stream.encode(None))


class _FrameCounter:
    """Draws the frame number as blocky white digits on a black box in the top-left corner."""

    def __init__(self, width: int, height: int) -> None:
        # Cell size in pixels: even, so the box maps onto whole chroma samples; the box stays
        # within a quarter of the width (6 px cells, a 132x42 box at 640x360).
        self.cell = cell = 2 * max(1, min(height // 120, width // 200))
        self.x = self.y = cell
        box_width = cell * (1 + 4 * _COUNTER_DIGITS)
        self.box_width, self.box_height = box_width, cell * 7
        self.black_row = bytes([_LUMA_BLACK]) * box_width
        self.neutral_row = bytes([_CHROMA_NEUTRAL]) * (box_width // 2)
        # Each digit's row as luma bytes: three cells and a one-cell gap.
        self.rows = {
            digit: [
                b"".join(bytes([_LUMA_WHITE if on == "#" else _LUMA_BLACK]) * cell for on in row + ".")
                for row in glyph
            ]
            for digit, glyph in _GLYPHS.items()
        }

    def draw(self, frame: VideoFrame, number: int) -> None:
        digits = f"{number % 10**_COUNTER_DIGITS:0{_COUNTER_DIGITS}d}"
        cell, x, y = self.cell, self.x, self.y
        luma = memoryview(frame.planes[0]).cast("B")
        stride = frame.planes[0].line_size
        margin = self.black_row[:cell]
        lines = [self.black_row] * cell
        for glyph_row in range(5):
            row = margin + b"".join(self.rows[digit][glyph_row] for digit in digits)
            lines += [row] * cell
        lines += [self.black_row] * cell
        for offset, line in enumerate(lines):
            start = (y + offset) * stride + x
            luma[start : start + self.box_width] = line
        for plane in frame.planes[1:]:
            chroma = memoryview(plane).cast("B")
            for offset in range(self.box_height // 2):
                start = (y // 2 + offset) * plane.line_size + x // 2
                chroma[start : start + self.box_width // 2] = self.neutral_row
