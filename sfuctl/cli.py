"""The `sfuctl` command line: a thin click layer over the library."""

from __future__ import annotations

import click

from . import __version__
from .commands.agent import agent
from .commands.bots import bots
from .commands.cluster import cluster
from .commands.conventions import group
from .commands.media import media
from .commands.run import run
from .commands.serve import serve
from .commands.stats import stats
from .commands.token import token


@group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
       exit_codes={0: "success; each command lists its own exit statuses in its --help"})
@click.version_option(__version__, prog_name="sfuctl")
def main() -> None:
    """sfuctl: a WebRTC SFU and the tools to prove it holds under load.

    \b
    Example:
      sfuctl serve &                                   # the SFU on 127.0.0.1:8080
      sfuctl bots --url ws://127.0.0.1:8080 --count 10 # load it
      sfuctl stats --url ws://127.0.0.1:8080           # watch it
    Errors print one line, `error: ...`, on stderr. `--json [FILE]` writes JSON to FILE, or to stdout when bare
    or `-`. Durations take `45s`, `500ms`, `2m` or a number of seconds.
    """


main.add_command(serve)
main.add_command(bots)
main.add_command(media)
main.add_command(stats)
main.add_command(run)
main.add_command(agent)
main.add_command(token)
main.add_command(cluster)


if __name__ == "__main__":
    main()
