"""The commands the README and docs/ show are valid: each `sfuctl` command line in a code block parses with the
real command line (options and values), each inline `sfuctl ...` names a real command and real options, and
every scenario file they name exists and validates."""

from __future__ import annotations

import re
import shlex
import warnings
from pathlib import Path

import click
import pytest

from sfuctl.cli import main
from sfuctl.scenario.model import load_scenario

ROOT = Path(__file__).parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```[a-z]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`(sfuctl [a-z][^`]*)`")
SHELL_BREAKS = {"|", "&&", "||", ";", "&", ">", ">>", "2>"}


def _commands(text: str) -> list[list[str]]:
    """Each `sfuctl ...` command of a shell snippet as argument lists (comments, pipes and chains cut off); a
    command starts a line or follows a pipe or a chain."""
    found = []
    for line in text.replace("\\\n", " ").splitlines():
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError:
            continue
        command: list[str] | None = None
        starts = True
        for token in tokens:
            if command is None:
                command = [] if token == "sfuctl" and starts else None
                starts = token in SHELL_BREAKS
            elif token in SHELL_BREAKS or token.endswith(("&", ";")):
                if token.endswith(("&", ";")) and token not in SHELL_BREAKS:
                    command.append(token.rstrip("&;"))
                found.append(command)
                command = None
            else:
                command.append(token)
        if command is not None:
            found.append(command)
    return found


def _exports(text: str) -> dict[str, str]:
    """The environment a snippet sets with `export NAME=value ...` (commands after it read it)."""
    env = {}
    for line in text.splitlines():
        tokens = shlex.split(line, comments=True) if line.strip().startswith("export ") else []
        env.update(token.split("=", 1) for token in tokens[1:] if "=" in token)
    return env


def _snippets() -> list[tuple[str, list[str], bool, dict[str, str]]]:
    """(where, arguments, in a code block, environment) for every command shown; `sfuctl run/bots` in prose
    names two commands, not one."""
    shown = []
    for path in DOCS:
        text = path.read_text()
        for block in FENCE.findall(text):
            shown += [(path.name, args, True, _exports(block)) for args in _commands(block)]
        for span in INLINE.findall(FENCE.sub("", text)):
            shown += [(path.name, args, False, {}) for args in _commands(span) if args and "/" not in args[0]]
    return shown


SHOWN = _snippets()


def _resolve(args: list[str]) -> tuple[click.Command, list[str], click.Context]:
    """The command `args` names (through groups) and the arguments left for it."""
    with warnings.catch_warnings():  # click 8.2+ deprecates protected_args, the only way to this in 8.x
        warnings.simplefilter("ignore", DeprecationWarning)
        return _resolve_in(args)


def _resolve_in(args: list[str]) -> tuple[click.Command, list[str], click.Context]:
    ctx = main.make_context("sfuctl", list(args), resilient_parsing=True)
    command: click.Command = main
    rest = [*ctx.protected_args, *ctx.args]
    while isinstance(command, click.Group) and rest:
        name, sub, rest = command.resolve_command(ctx, rest)
        assert sub is not None, f"no command {name!r}"
        command = sub
        if isinstance(command, click.Group):
            ctx = command.make_context(name or "", rest, parent=ctx, resilient_parsing=True)
            rest = [*ctx.protected_args, *ctx.args]
    return command, rest, ctx


def test_the_docs_show_commands() -> None:
    assert sum(1 for _, _, block, _ in SHOWN if block) >= 15
    assert {args[0] for _, args, _, _ in SHOWN if args} >= {"serve", "bots", "stats", "run", "media"}


@pytest.mark.parametrize(("where", "args", "env"), [(w, a, e) for w, a, block, e in SHOWN if block],
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v if isinstance(v, str) else "")
def test_a_command_in_a_code_block_parses(where: str, args: list[str], env: dict[str, str], tmp_path: Path,
                                          monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # output paths are checked (their directories made) here, not in the tree
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    command, rest, parent = _resolve(args)
    try:
        command.make_context(command.name or "", rest, parent=parent)
    except click.exceptions.Exit:
        pass  # --help, --version
    except click.ClickException as exc:
        if isinstance(exc, click.BadParameter) and "does not exist" in exc.format_message():
            return  # an input file of the reader's own (a key, a media file), not something the docs ship
        pytest.fail(f"{where}: sfuctl {' '.join(args)}: {exc.format_message()}")


@pytest.mark.parametrize(("where", "args"), [(w, a) for w, a, block, _ in SHOWN if not block],
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v)
def test_an_inline_command_names_real_options(where: str, args: list[str]) -> None:
    command, rest, _ = _resolve(args)
    known = {opt for param in command.params for opt in (*param.opts, *param.secondary_opts)}
    for token in rest:
        if token.startswith("--"):
            assert token.split("=")[0] in known, f"{where}: sfuctl {' '.join(args)}: no option {token}"


@pytest.mark.parametrize("name", sorted({t for _, args, _, _ in SHOWN for t in args if t.startswith("scenarios/")}))
def test_a_scenario_file_the_docs_name_validates(name: str) -> None:
    if "NAME" in name:
        return
    load_scenario(ROOT / name)  # ScenarioError lists every problem
