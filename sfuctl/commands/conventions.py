"""What every `sfuctl` command does the same way: errors, exit codes in --help, environment variables in each
option's help, `--json [FILE]`, durations, output paths checked before the work starts.

A command is declared with `@command(exit_codes={...})` (or `@group(...)`) and raises `CommandError` for a
one-line failure; every error, including click's own usage errors, prints as `error: ...` on stderr.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from ..units import parse_duration

F = TypeVar("F", bound=Callable[..., Any])

EXIT_USAGE = 2
"""click's status for a bad command line; every command lists it."""

STDOUT = "-"
"""The FILE that means standard output, for `--json` and other output options."""

STOP_SIGNALS = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
"""The signals that stop a long command cleanly, with the name a user knows them by."""

PLAIN_WIDTH = 1000
"""Columns of output that is not a terminal (a log, a pipe, CI): wide enough that no line wraps."""


class CommandError(click.ClickException):
    """A failure the user can fix: one line on stderr (`error: MESSAGE`), then the command's exit code."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def make_console(stderr: bool = False) -> Console:
    """The rich console of a command: the terminal's width on a terminal; elsewhere lines never wrap."""
    terminal = Console(stderr=stderr)
    return terminal if terminal.is_terminal else Console(stderr=stderr, width=PLAIN_WIDTH, soft_wrap=True)


def print_error(message: str) -> None:
    """`error: MESSAGE` as one unwrapped line on stderr: the one error format of every command."""
    click.echo(f"error: {message}", err=True)


def _show(exc: click.ClickException) -> None:
    message = exc.format_message()
    if message[:1].isupper() and message[1:2].islower():  # click's own messages start with a capital
        message = message[0].lower() + message[1:]
    if isinstance(exc, click.UsageError) and exc.ctx is not None:
        message = message.rstrip(".") + f" (see '{exc.ctx.command_path} --help')"
    print_error(" ".join(message.split()))


class _Conventions:
    """Mixed into click's Command and Group: error printing, an exit-status section and env vars in --help."""

    exit_codes: Mapping[int, str]

    def _adopt(self, exit_codes: Mapping[int, str] | None) -> None:
        codes = dict(exit_codes or {0: "success"})
        codes.setdefault(EXIT_USAGE, "a bad command line (unknown option, invalid value)")
        self.exit_codes = dict(sorted(codes.items()))
        for param in getattr(self, "params", []):
            if isinstance(param, click.Option) and param.envvar:
                param.show_envvar = True

    def format_exit_codes(self, formatter: click.HelpFormatter) -> None:
        with formatter.section("Exit status"):
            formatter.write_dl([(str(code), meaning) for code, meaning in self.exit_codes.items()])

    def main(self, args: Sequence[str] | None = None, prog_name: str | None = None,
             complete_var: str | None = None, standalone_mode: bool = True, **extra: Any) -> Any:
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)  # type: ignore[misc]
        try:
            result = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)  # type: ignore[misc]
        except click.ClickException as exc:
            _show(exc)
            sys.exit(exc.exit_code)
        except click.Abort:
            print_error("interrupted")
            sys.exit(1)
        sys.exit(result if isinstance(result, int) else 0)


class Command(_Conventions, click.Command):
    """A click command following the conventions; `exit_codes` maps each status to its meaning."""

    def __init__(self, *args: Any, exit_codes: Mapping[int, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._adopt(exit_codes)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.format_exit_codes(formatter)
        super().format_epilog(ctx, formatter)


class Group(_Conventions, click.Group):
    """A click group following the conventions; its command list shows each summary whole (wrapped, never cut)."""

    command_class = Command

    def __init__(self, *args: Any, exit_codes: Mapping[int, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._adopt(exit_codes)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            cmd = self.get_command(ctx, name)
            if cmd is not None and not cmd.hidden:
                rows.append((name, cmd.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self.format_exit_codes(formatter)
        super().format_epilog(ctx, formatter)


def command(name: str | None = None, *, exit_codes: Mapping[int, str] | None = None, **kwargs: Any) -> Callable[[F], Command]:
    """`@click.command` with the conventions: `@command(exit_codes={0: "...", 1: "..."}, epilog="Example: ...")`."""
    return click.command(name, cls=Command, exit_codes=exit_codes, **kwargs)  # type: ignore[return-value]


def group(name: str | None = None, *, exit_codes: Mapping[int, str] | None = None, **kwargs: Any) -> Callable[[F], Group]:
    """`@click.group` with the conventions."""
    return click.group(name, cls=Group, exit_codes=exit_codes, **kwargs)  # type: ignore[return-value]


class Duration(click.ParamType):
    """A duration as in scenario files, `45s`, `500ms`, `2m`, `1m30s`, or a bare number of seconds."""

    name = "DURATION"

    def __init__(self, minimum: float = 0.0, maximum: float | None = None) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)):
            seconds = float(value)
        else:
            try:
                seconds = float(value)
            except ValueError:
                try:
                    seconds = parse_duration(value)
                except ValueError as exc:
                    self.fail(str(exc).replace("bad duration", "not a duration:"), param, ctx)
        if seconds < self.minimum or (self.maximum is not None and seconds > self.maximum):
            upper = f" and {self.maximum:g} s" if self.maximum is not None else ""
            self.fail(f"{value} is out of range: give between {self.minimum:g} s{upper}", param, ctx)
        return seconds


class OutputPath(click.ParamType):
    """A file to write (or `-` for stdout when `stdout`), checked when parsed: its directory is made and a file
    can be created there, so a long run never ends in 'cannot write'."""

    name = "FILE"

    def __init__(self, stdout: bool = True) -> None:
        self.stdout = stdout

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path | str:
        if isinstance(value, Path):
            return value
        if value == STDOUT:
            if self.stdout:
                return value
            self.fail("'-' (stdout) is only for --json: give a file name", param, ctx)
        path = Path(value)
        try:
            check_writable(path)
        except OSError as exc:
            self.fail(f"cannot write {path}: {exc.strerror or exc}; pick another path", param, ctx)
        return path


def check_writable(path: Path) -> None:
    """Raise OSError unless `path` can be written: its directory is created, a new file created and removed."""
    if path.is_dir():
        raise IsADirectoryError(21, "it is a directory", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    existed = path.exists()
    with open(path, "a"):
        pass
    if not existed:
        path.unlink()


def json_option(help: str, *, name: str = "json_path") -> Callable[[F], F]:
    """`--json [FILE]`: a bare `--json` or `--json -` writes to stdout, `--json FILE` to FILE (checked before the
    command runs). The value reaches the command as None, `"-"` or a Path."""
    return click.option(
        "--json", name, type=OutputPath(), is_flag=False, flag_value=STDOUT, default=None, metavar="[FILE]",
        help=f"{help} A bare --json or '-' writes to stdout.",
    )


def write_output(target: Path | str, text: str) -> None:
    """Write `text` to stdout (`-`) or to a file atomically (a temporary file renamed into place)."""
    if target == STDOUT:
        click.echo(text, nl=not text.endswith("\n"))
        return
    path = Path(target)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def on_stop_signals(callback: Callable[[str], None]) -> None:
    """Call `callback("Ctrl-C")` or `callback("SIGTERM")` when the running loop gets one of STOP_SIGNALS."""
    loop = asyncio.get_running_loop()
    for sig, label in STOP_SIGNALS.items():
        loop.add_signal_handler(sig, callback, label)
