"""Helpers for the `sfuctl run` tests: small media, a scenario file around it, the command as a subprocess."""

from __future__ import annotations

import sys
from pathlib import Path

from sfuctl.media import MediaSpec, make_media

# `sfuctl run` without depending on the console script being installed or registered.
RUN = [sys.executable, "-c", "from sfuctl.commands.run import run; run()"]


def small_media(directory: Path) -> tuple[str, str]:
    files = make_media(MediaSpec(duration=2.0, keyframe_interval=1.0), directory)
    return str(files.video), str(files.audio)


def scenario_file(directory: Path, media: tuple[str, str], duration: str, thresholds: str, name: str = "t") -> Path:
    """2 bots in one room, in this process (fast), on the embedded server."""
    path = directory / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\nduration = "{duration}"\n\n[bots]\ncount = 2\nramp = 10\nprocesses = 1\nseed = 3\n'
        f'media = ["{media[0]}", "{media[1]}"]\n\n[thresholds]\n{thresholds}'
    )
    return path
