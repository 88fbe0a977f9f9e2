"""`sfuctl media`: generate the local test media that bots publish."""

from __future__ import annotations

import json
from pathlib import Path

import click
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from sfuctl.media import (
    AUDIO_KINDS,
    SIMULCAST_TOP,
    VIDEO_CODECS,
    MediaSpec,
    default_cache_dir,
    make_media,
    make_simulcast_media,
    simulcast_specs,
)

from .conventions import (
    CommandError,
    Duration,
    group,
    json_option,
    make_console,
    write_output,
)

_DEFAULTS = MediaSpec()
EXIT_BAD_MEDIA = 2


@group(short_help="Make local test media (a moving pattern with a frame counter, Opus audio).")
def media() -> None:
    """Local test media: a moving test pattern with a frame counter, and Opus audio."""


@media.command(
    short_help="Generate test video and audio files.",
    exit_codes={0: "the files are written", 2: "unsupported settings, an unwritable directory, or a bad command line"},
    epilog="Example: sfuctl media make --codec h264 --duration 20\n\n"
    "Three simulcast encodings (1280x720, 640x360, 320x180): sfuctl media make --simulcast",
)
@click.option(
    "--width", type=int, default=None, help=f"Video width in pixels [default: {_DEFAULTS.width}, {SIMULCAST_TOP[0]} with --simulcast]."
)
@click.option(
    "--height", type=int, default=None, help=f"Video height in pixels [default: {_DEFAULTS.height}, {SIMULCAST_TOP[1]} with --simulcast]."
)
@click.option("--fps", type=int, default=_DEFAULTS.fps, show_default=True, help="Frames per second.")
@click.option(
    "--bitrate",
    type=int,
    default=None,
    help=f"Video bitrate in kb/s [default: {_DEFAULTS.video_bitrate // 1000}, {SIMULCAST_TOP[2] // 1000} for the top encoding with --simulcast].",
)
@click.option(
    "--simulcast",
    is_flag=True,
    help="Write three encodings of the same video (the given size, /2 and /4; 100%, 1/3 and 1/10 of the bitrate) "
    "with the same frame rate and keyframes at the same frames.",
)
@click.option(
    "--keyframe-interval",
    type=Duration(),
    default=_DEFAULTS.keyframe_interval,
    show_default=True,
    help="Time between keyframes (2, 2s, 500ms).",
)
@click.option("--duration", type=Duration(), default=_DEFAULTS.duration, show_default=True, help="Length (10, 10s, 1m).")
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
@json_option("Write the file paths as JSON to FILE.")
def make(
    width: int | None,
    height: int | None,
    fps: int,
    bitrate: int | None,
    keyframe_interval: float,
    duration: float,
    codec: str,
    audio: str,
    simulcast: bool,
    out: Path | None,
    json_path: Path | str | None,
) -> None:
    """Encode a video file (VP8 in IVF or H.264 in MPEG-TS) and an Opus audio file (OGG)."""
    default_width, default_height, default_bitrate = (
        SIMULCAST_TOP if simulcast else (_DEFAULTS.width, _DEFAULTS.height, _DEFAULTS.video_bitrate)
    )
    try:
        spec = MediaSpec(
            width=default_width if width is None else width,
            height=default_height if height is None else height,
            fps=fps,
            video_bitrate=default_bitrate if bitrate is None else bitrate * 1000,
            keyframe_interval=keyframe_interval,
            duration=duration,
            video_codec=codec,
            audio=audio,
        )
        specs = simulcast_specs(spec) if simulcast else (spec,)
    except ValueError as error:
        raise CommandError(str(error), EXIT_BAD_MEDIA) from None
    directory = out if out is not None else default_cache_dir()
    progress = Progress(
        TextColumn("encoding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=make_console(stderr=True),
        transient=True,
    )
    task = progress.add_task("encoding", total=sum(s.video_frames for s in specs) + spec.audio_frames)
    update = lambda done, total: progress.update(task, completed=done)  # noqa: E731
    try:
        with progress:
            if simulcast:
                layers = make_simulcast_media(spec, directory, update)
            else:
                files = make_media(spec, directory, update)
    except OSError as error:
        raise CommandError(
            f"cannot write media to {directory}: {error.strerror or error}; pass a writable directory with --out DIR",
            EXIT_BAD_MEDIA,
        ) from None
    if simulcast:
        if json_path is not None:
            write_output(json_path, json.dumps({"videos": [str(v) for v in layers.videos], "audio": str(layers.audio)}) + "\n")
        else:
            for layer_spec, video in zip(specs, layers.videos):
                click.echo(f"video {layer_spec.width}x{layer_spec.height}: {video}")
            click.echo(f"audio: {layers.audio}")
        return
    if json_path is not None:
        write_output(json_path, json.dumps({"video": str(files.video), "audio": str(files.audio)}) + "\n")
    else:
        click.echo(f"video: {files.video}")
        click.echo(f"audio: {files.audio}")
