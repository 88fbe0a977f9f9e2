"""`sfuctl media`: generate the local test media that bots publish."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from sfuctl.media import AUDIO_KINDS, VIDEO_CODECS, MediaSpec, default_cache_dir, make_media

_DEFAULTS = MediaSpec()


class MediaError(click.ClickException):
    """A one-line error about the requested media, exit code 2."""

    exit_code = 2


@click.group()
def media() -> None:
    """Local test media: a moving test pattern with a frame counter, and Opus audio."""


@media.command(
    short_help="Generate test video and audio files.",
    epilog="Example: sfuctl media make --codec h264 --duration 20",
)
@click.option("--width", type=int, default=_DEFAULTS.width, show_default=True, help="Video width in pixels.")
@click.option("--height", type=int, default=_DEFAULTS.height, show_default=True, help="Video height in pixels.")
@click.option("--fps", type=int, default=_DEFAULTS.fps, show_default=True, help="Frames per second.")
@click.option(
    "--bitrate", type=int, default=_DEFAULTS.video_bitrate // 1000, show_default=True, help="Video bitrate in kbps."
)
@click.option(
    "--keyframe-interval",
    type=float,
    default=_DEFAULTS.keyframe_interval,
    show_default=True,
    help="Seconds between keyframes.",
)
@click.option("--duration", type=float, default=_DEFAULTS.duration, show_default=True, help="Length in seconds.")
@click.option(
    "--codec", type=click.Choice(VIDEO_CODECS), default=_DEFAULTS.video_codec, show_default=True, help="Video codec."
)
@click.option(
    "--audio", type=click.Choice(AUDIO_KINDS), default=_DEFAULTS.audio, show_default=True, help="Audio content."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output directory [default: the cache directory, $SFUCTL_CACHE_DIR or ~/.cache/sfuctl].",
)
@click.option("--json", "as_json", is_flag=True, help="Print the file paths as JSON.")
def make(
    width: int,
    height: int,
    fps: int,
    bitrate: int,
    keyframe_interval: float,
    duration: float,
    codec: str,
    audio: str,
    out: Path | None,
    as_json: bool,
) -> None:
    """Encode a video file (VP8 in IVF or H.264 in MPEG-TS) and an Opus audio file (OGG)."""
    try:
        spec = MediaSpec(
            width=width,
            height=height,
            fps=fps,
            video_bitrate=bitrate * 1000,
            keyframe_interval=keyframe_interval,
            duration=duration,
            video_codec=codec,
            audio=audio,
        )
    except ValueError as error:
        raise MediaError(str(error)) from None
    directory = out if out is not None else default_cache_dir()
    progress = Progress(
        TextColumn("encoding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = progress.add_task("encoding", total=spec.video_frames + spec.audio_frames)
    try:
        with progress:
            files = make_media(spec, directory, lambda done, total: progress.update(task, completed=done))
    except OSError as error:
        raise MediaError(
            f"cannot write media to {directory}: {error.strerror or error}; pass a writable directory with --out DIR"
        ) from None
    if as_json:
        click.echo(json.dumps({"video": str(files.video), "audio": str(files.audio)}))
    else:
        click.echo(f"video: {files.video}")
        click.echo(f"audio: {files.audio}")
