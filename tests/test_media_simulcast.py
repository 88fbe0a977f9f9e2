"""Simulcast test media: three encodings at the same frame rate with keyframes at the same frames."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from sfuctl.commands.media import media
from sfuctl.encoded import load_track
from sfuctl.media import MediaSpec, make_simulcast_media, simulcast_specs
from sfuctl.rtc.vp8 import keyframe_size

TOP = MediaSpec(width=320, height=192, fps=10, duration=3.0, video_bitrate=600_000, keyframe_interval=1.0)


def test_simulcast_specs_scale_size_and_bitrate_lowest_first() -> None:
    specs = simulcast_specs(MediaSpec(width=1280, height=720, video_bitrate=1_500_000))
    assert [(s.width, s.height, s.video_bitrate) for s in specs] == [
        (320, 180, 150_000), (640, 360, 500_000), (1280, 720, 1_500_000),
    ]
    assert len({(s.fps, s.keyframe_interval, s.duration, s.video_codec) for s in specs}) == 1


def test_simulcast_specs_refuse_a_size_that_does_not_divide() -> None:
    with pytest.raises(ValueError, match="divisible by 8"):
        simulcast_specs(MediaSpec(width=644, height=360))


def test_encodings_share_frame_count_and_keyframe_positions(tmp_path: Path) -> None:
    files = make_simulcast_media(TOP, tmp_path)
    tracks = [load_track(path, "video") for path in files.videos]
    assert [len(t.frames) for t in tracks] == [30, 30, 30]
    keyframes = [[i for i, f in enumerate(t.frames) if f.keyframe] for t in tracks]
    assert keyframes == [[0, 10, 20]] * 3
    assert len({t.frame_interval for t in tracks}) == 1
    assert [keyframe_size(t.frames[0].payloads[0]) for t in tracks] == [(80, 48), (160, 96), (320, 192)]
    assert tracks[0].bitrate < tracks[1].bitrate < tracks[2].bitrate
    assert load_track(files.audio, "audio").codec == "opus"


def test_cli_make_simulcast_prints_three_videos(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        media,
        ["make", "--simulcast", "--width", "320", "--height", "192", "--fps", "10", "--bitrate", "600",
         "--duration", "1", "--out", str(tmp_path), "--json"],
    )
    assert result.exit_code == 0, result.output
    paths = json.loads(result.stdout)
    assert len(paths["videos"]) == 3 and all(Path(p).exists() for p in paths["videos"])
    assert ["80x48", "160x96", "320x192"] == [Path(p).name.split("-")[2] for p in paths["videos"]]


def test_cli_make_simulcast_refuses_an_odd_size_in_one_line() -> None:
    result = CliRunner().invoke(media, ["make", "--simulcast", "--width", "644", "--height", "360"])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: simulcast needs a top size divisible by 8 (it is divided by 4 and stays even), not 644x360"
    ]
