import json
import math
import struct
from pathlib import Path

import av
import pytest
from click.testing import CliRunner

from sfuctl.commands.media import media
from sfuctl.media import (
    _GLYPHS,
    MediaFiles,
    MediaSpec,
    _FrameCounter,
    default_cache_dir,
    ensure_default_media,
    make_media,
    media_paths,
)

SMALL = dict(width=320, height=180, fps=10, duration=3.0, video_bitrate=200_000, keyframe_interval=1.0)


def video_packets(path: Path) -> tuple[av.video.stream.VideoStream, list[av.Packet]]:
    container = av.open(str(path))
    stream = container.streams.video[0]
    return stream, [packet for packet in container.demux(stream) if packet.size]


@pytest.mark.parametrize(
    ("codec", "suffix", "decoder", "container_format"),
    [("vp8", ".ivf", "vp8", "ivf"), ("h264", ".ts", "h264", "mpegts")],
)
def test_make_media_writes_video_with_requested_codec_size_frames_keyframes_and_bitrate(
    tmp_path: Path, codec: str, suffix: str, decoder: str, container_format: str
) -> None:
    spec = MediaSpec(**SMALL, video_codec=codec)
    files = make_media(spec, tmp_path)

    assert files.video is not None and files.video.suffix == suffix
    stream, packets = video_packets(files.video)
    assert stream.codec_context.codec.canonical_name == decoder
    assert stream.container.format.name == container_format
    assert (stream.codec_context.width, stream.codec_context.height) == (320, 180)
    assert len(packets) == 30
    assert [index for index, packet in enumerate(packets) if packet.is_keyframe] == [0, 10, 20]
    bitrate = sum(packet.size for packet in packets) * 8 / spec.duration
    assert 0.65 * spec.video_bitrate <= bitrate <= 1.35 * spec.video_bitrate


def test_h264_is_annex_b_constrained_baseline_without_b_frames(tmp_path: Path) -> None:
    files = make_media(MediaSpec(**SMALL, video_codec="h264"), tmp_path)

    assert files.video is not None
    stream, packets = video_packets(files.video)
    assert stream.codec_context.profile == "Constrained Baseline"
    assert all(bytes(packet).startswith((b"\x00\x00\x01", b"\x00\x00\x00\x01")) for packet in packets)
    assert [packet.pts for packet in packets] == sorted(packet.pts for packet in packets)


def read_counter(frame: av.VideoFrame, counter: _FrameCounter) -> str:
    """The digits drawn by _FrameCounter, read back from the centres of the glyph cells."""
    plane = frame.planes[0]
    luma = bytes(plane)
    cell = counter.cell
    digits = ""
    for position in range(5):
        rows = []
        for glyph_row in range(5):
            y = counter.y + cell * (1 + glyph_row) + cell // 2
            row = ""
            for column in range(3):
                x = counter.x + cell * (1 + 4 * position + column) + cell // 2
                row += "#" if luma[y * plane.line_size + x] > 128 else "."
            rows.append(row)
        matches = [digit for digit, glyph in _GLYPHS.items() if list(glyph) == rows]
        digits += matches[0] if matches else "?"
    return digits


def test_decoded_vp8_shows_the_frame_number(tmp_path: Path) -> None:
    spec = MediaSpec(width=640, height=360, fps=6, duration=2.0)
    files = make_media(spec, tmp_path)

    assert files.video is not None
    with av.open(str(files.video)) as container:
        frames = list(container.decode(video=0))
    counter = _FrameCounter(spec.width, spec.height)
    assert [read_counter(frame, counter) for frame in frames] == [f"{index:05d}" for index in range(12)]
    box = [
        bytes(frame.planes[0])[row * frame.planes[0].line_size : row * frame.planes[0].line_size + counter.box_width]
        for frame in frames[:3]
        for row in range(counter.y, counter.y + counter.box_height)
    ]
    assert len(set(box)) > len(box) // 3  # the region really changes from frame to frame


def rms(samples: list[int]) -> float:
    return math.sqrt(sum(value * value for value in samples) / len(samples))


def decoded_audio(path: Path) -> tuple[av.audio.stream.AudioStream, list[int]]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        samples: list[int] = []
        for frame in container.decode(stream):
            for pcm in resampler.resample(frame):
                samples.extend(struct.unpack(f"<{pcm.samples}h", bytes(pcm.planes[0])[: 2 * pcm.samples]))
        return stream, samples


@pytest.mark.parametrize(
    ("audio", "pause_to_voice"),
    [("tone", (0.9, 1.1)), ("speech", (0.0, 0.05))],
)
def test_audio_is_stereo_opus_48k_and_speech_pauses(tmp_path: Path, audio: str, pause_to_voice: tuple[float, float]) -> None:
    files = make_media(MediaSpec(**SMALL, audio=audio), tmp_path)

    assert files.audio is not None and files.audio.suffix == ".ogg"
    stream, samples = decoded_audio(files.audio)
    assert (stream.codec_context.codec.canonical_name, stream.sample_rate, stream.channels) == ("opus", 48000, 2)
    assert abs(len(samples) / 48000 - 3.0) < 0.05
    # speech pauses for 0.7 s every 2.9 s, from t=0; the tone never does.
    pause, voice = rms(samples[4800:28800]), rms(samples[48000:96000])
    assert voice > 1000
    low, high = pause_to_voice
    assert low <= pause / voice <= high


def test_progress_counts_every_frame_up_to_the_total(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    make_media(MediaSpec(**SMALL), tmp_path, lambda done, total: calls.append((done, total)))

    assert calls[-1] == (30 + 150, 30 + 150)
    assert [done for done, _ in calls] == list(range(1, 181))


def test_make_media_leaves_only_the_final_files(tmp_path: Path) -> None:
    files = make_media(MediaSpec(**SMALL), tmp_path / "new" / "dir")

    assert sorted((tmp_path / "new" / "dir").iterdir()) == sorted([files.video, files.audio])


def test_file_names_follow_the_settings_that_shape_each_file(tmp_path: Path) -> None:
    base = media_paths(MediaSpec(**SMALL), tmp_path)
    other_audio = media_paths(MediaSpec(**SMALL, audio="speech"), tmp_path)
    other_video = media_paths(MediaSpec(**{**SMALL, "video_bitrate": 300_000}), tmp_path)

    assert other_audio.video == base.video and other_audio.audio != base.audio
    assert other_video.audio == base.audio and other_video.video != base.video
    assert media_paths(MediaSpec(**SMALL), tmp_path) == base


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"SFUCTL_CACHE_DIR": "/x/cache", "XDG_CACHE_HOME": "/x/xdg", "HOME": "/x/home"}, "/x/cache"),
        ({"SFUCTL_CACHE_DIR": "", "XDG_CACHE_HOME": "/x/xdg", "HOME": "/x/home"}, "/x/xdg/sfuctl"),
        ({"SFUCTL_CACHE_DIR": "", "XDG_CACHE_HOME": "", "HOME": "/x/home"}, "/x/home/.cache/sfuctl"),
    ],
)
def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], expected: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert default_cache_dir() == Path(expected)


def test_ensure_default_media_makes_the_files_once(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SFUCTL_CACHE_DIR", str(tmp_path))
    calls: list[int] = []

    first = ensure_default_media(lambda done, total: calls.append(done))
    made = len(calls)
    second = ensure_default_media(lambda done, total: calls.append(done))

    assert first == second == media_paths(MediaSpec(), tmp_path)
    assert made == 250 + 500 and len(calls) == made
    assert first.video is not None and video_packets(first.video)[0].codec_context.width == 640


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"width": 641}, "video size 641x360 is not supported: use even numbers from 64x48 to 3840x2160"),
        ({"height": 40}, "video size 640x40 is not supported: use even numbers from 64x48 to 3840x2160"),
        ({"fps": 0}, "fps 0 is out of range: use 1 to 120"),
        ({"video_bitrate": 1000}, "video bitrate 1000 b/s is out of range: use 50 kb/s to 50 Mb/s"),
        ({"duration": 0}, "duration 0 s is out of range: use more than 0 and at most 3600 s"),
        ({"duration": 0.01}, "duration 0.01 s is shorter than one frame at 25 fps"),
        ({"keyframe_interval": -1}, "keyframe interval -1 s is out of range: use more than 0 and at most 3600 s"),
        ({"video_codec": "vp9"}, "video codec 'vp9' is not supported: use 'vp8' or 'h264'"),
        ({"audio": "music"}, "audio 'music' is not supported: use 'tone' or 'speech'"),
    ],
)
def test_media_spec_rejects_bad_settings(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError) as error:
        MediaSpec(**changes)  # type: ignore[arg-type]
    assert str(error.value) == message


def test_cli_make_prints_json_paths(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        media,
        ["make", "--width", "192", "--height", "108", "--fps", "10", "--bitrate", "100", "--duration", "2",
         "--keyframe-interval", "1", "--codec", "h264", "--audio", "speech", "--out", str(tmp_path), "--json"],
    )

    assert result.exit_code == 0, result.output
    paths = json.loads(result.stdout)
    assert MediaFiles(Path(paths["video"]), Path(paths["audio"])) == media_paths(
        MediaSpec(width=192, height=108, fps=10, video_bitrate=100_000, duration=2, keyframe_interval=1,
                  video_codec="h264", audio="speech"),
        tmp_path,
    )
    stream, packets = video_packets(Path(paths["video"]))
    assert stream.codec_context.codec.canonical_name == "h264" and len(packets) == 20


def test_cli_help_shows_an_example() -> None:
    result = CliRunner().invoke(media, ["make", "--help"])

    assert result.exit_code == 0
    assert "Example: sfuctl media make --codec h264 --duration 20" in result.output


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--width", "641"], "error: video size 641x360 is not supported: use even numbers from 64x48 to 3840x2160"),
        (["--out", "{file}/sub"], "pass a writable directory with --out DIR"),
    ],
)
def test_cli_errors_are_one_line_with_exit_code_2(tmp_path: Path, arguments: list[str], expected: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    arguments = [argument.replace("{file}", str(blocker)) for argument in arguments]

    result = CliRunner().invoke(media, ["make", "--duration", "0.5", *arguments])

    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0], result.stderr
