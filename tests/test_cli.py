"""The conventions every command follows, as a user meets them: `error: ...` lines and exit codes, --help that
lists exit codes and environment variables, `--json [FILE]`, durations with units, output paths checked first,
and `sfuctl serve` refusing what cannot work before it starts."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from sfuctl.cli import main
from sfuctl.commands.bots import clock
from sfuctl.commands.conventions import Duration

SFUCTL = [sys.executable, "-c", "from sfuctl.cli import main; main(prog_name='sfuctl')"]
COMMANDS = [["serve"], ["bots"], ["stats"], ["run"], ["media"], ["media", "make"], ["agent"], ["cluster"], ["cluster", "status"]]


def sfuctl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*SFUCTL, *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("command", [[], *COMMANDS], ids=lambda c: " ".join(c) or "sfuctl")
def test_every_help_lists_the_exit_codes_and_shows_environment_variables(command: list[str]) -> None:
    result = CliRunner().invoke(main, [*command, "--help"], terminal_width=100)
    assert result.exit_code == 0, result.output
    assert "Exit status:" in result.output
    assert "  2  " in result.output  # a bad command line, in every command
    if command in (["serve"], ["bots"], ["stats"], ["agent"], ["cluster", "status"]):
        assert "[env var: SFUCTL_" in " ".join(result.output.split())


def test_the_command_list_shows_each_summary_whole() -> None:
    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    text = " ".join(result.output.split())
    for name in ("serve", "bots", "stats", "run", "media"):
        summary = main.get_command(click.Context(main), name).get_short_help_str(limit=10_000)  # type: ignore[union-attr]
        assert " ".join(summary.split()) in text


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nosuch"], "error: no such command 'nosuch' (see 'sfuctl --help')"),
        (["bots", "--count", "0"], "error: invalid value for '--count': 0 is not in the range 1<=x<=10000 (see 'sfuctl bots --help')"),
        (["bots", "--duration", "ten"], "error: invalid value for '--duration': not a duration: 'ten': write a number with a unit"),
        (["serve", "--announced-ip", "not an ip"], "'not an ip' is not an IP address and does not resolve"),
        (["serve", "--workers", "3", "--rtc-port-range", "40000-40001"], "each worker takes its own slice of the range"),
        (["run", "x.toml", "--html", "/proc/x.html"], "error: invalid value for '--html': cannot write /proc/x.html"),
        (["run", "x.toml", "--junit", "-"], "'-' (stdout) is only for --json"),
    ],
)
def test_a_bad_command_line_is_one_error_line_and_exit_code_2(args: list[str], message: str) -> None:
    result = sfuctl(*args, timeout=90)  # a process: a server that wrongly starts is killed by the timeout
    assert result.returncode == 2, result.stdout + result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr


def test_output_paths_are_checked_before_anything_runs(tmp_path: Path) -> None:
    """A path that cannot be written fails at once, before any scenario work (the file does not even exist)."""
    result = sfuctl("run", str(tmp_path / "missing.toml"), "--json", "/proc/out.json", timeout=20)
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid value for '--json': cannot write /proc/out.json")
    good = tmp_path / "new" / "dir" / "out.json"
    result = CliRunner().invoke(main, ["run", str(tmp_path / "missing.toml"), "--json", str(good)])
    assert result.exit_code == 1  # the missing scenario file, judged after the paths
    assert json.loads(good.read_text())["status"] == "failed"


@pytest.mark.parametrize(("text", "seconds"), [("45", 45.0), ("45s", 45.0), ("2m", 120.0), ("500ms", 0.5), ("1m30s", 90.0)])
def test_durations_take_units_or_seconds(text: str, seconds: float) -> None:
    assert Duration().convert(text, None, None) == seconds


def test_a_duration_out_of_range_names_the_range() -> None:
    with pytest.raises(click.BadParameter, match="10m is out of range: give between 1 s and 300 s"):
        Duration(1, 300).convert("10m", None, None)


def test_json_bare_or_dash_writes_to_stdout_and_file_to_the_file(tmp_path: Path) -> None:
    args = ["media", "make", "--width", "64", "--height", "48", "--fps", "5", "--duration", "1s", "--out", str(tmp_path)]
    bare = CliRunner().invoke(main, [*args, "--json"])
    dash = CliRunner().invoke(main, [*args, "--json", "-"])
    to_file = CliRunner().invoke(main, [*args, "--json", str(tmp_path / "paths.json")])
    assert bare.exit_code == dash.exit_code == to_file.exit_code == 0, bare.output + dash.output + to_file.output
    assert json.loads(bare.stdout) == json.loads(dash.stdout) == json.loads((tmp_path / "paths.json").read_text())
    assert to_file.stdout == ""


def _busy_udp_ports(count: int) -> tuple[list[socket.socket], int]:
    """`count` consecutive UDP ports on 127.0.0.1, all bound by this test."""
    for _ in range(50):
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        first = probe.getsockname()[1]
        held = [probe]
        try:
            for port in range(first + 1, first + count):
                sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                held.append(sock)
                sock.bind(("127.0.0.1", port))
            return held, first
        except OSError:
            for sock in held:
                sock.close()
    raise RuntimeError("no consecutive free UDP ports")


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_with_its_media_ports_taken_is_one_line_naming_the_range_and_exit_1(workers: int) -> None:
    held, first = _busy_udp_ports(2)
    try:
        result = sfuctl("serve", "--port", "0", "--workers", str(workers), "--rtc-port-range", f"{first}-{first + 1}")
    finally:
        for sock in held:
            sock.close()
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr  # no worker traceback
    assert lines[0].startswith("error: no free UDP port in ")
    assert f"pick another --rtc-port-range (now {first}-{first + 1}" in lines[0]
    if workers == 2:
        assert "(the slice of worker 1)" in lines[0] and "split over 2 workers" in lines[0]


def test_serve_with_its_signaling_port_taken_is_one_line_and_exit_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = sfuctl("serve", "--port", str(port), "--workers", "1", "--rtc-port-range", "0-0")
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: cannot listen on 127.0.0.1:{port}: "), result.stderr
    assert lines[0].endswith("pick another --port or --host")


def test_the_bots_live_clock_reads_hours_minutes_seconds() -> None:
    assert [clock(s) for s in (0.0, 59.9, 61.0, 3725.4)] == ["0:00:00", "0:00:59", "0:01:01", "1:02:05"]


@pytest.mark.parametrize("workers", [1, 2])
def test_serve_logs_joins_and_closes_and_its_banner_is_one_line_in_a_log(workers: int) -> None:
    from websockets.sync.client import connect

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    process = subprocess.Popen(
        [*SFUCTL, "serve", "--port", str(port), "--rtc-port-range", "0", "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                ws = connect(f"ws://127.0.0.1:{port}", open_timeout=2)
                break
            except OSError:
                assert process.poll() is None and time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        with ws:
            ws.send(json.dumps({"id": 1, "method": "join", "params": {"room": "logged", "name": "ann"}}))
            peer_id = json.loads(ws.recv(timeout=10))["result"]["peerId"]
    finally:
        time.sleep(0.5)  # the close reaches the worker
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    lines = stderr.splitlines()
    assert any(f"peer {peer_id} (ann) joined room logged from 127.0.0.1" in line for line in lines), stderr
    assert any(f"peer {peer_id} (ann) closed" in line for line in lines), stderr
    banner = next(line for line in lines if line.startswith("sfuctl serve signaling"))
    assert banner.endswith(f"{workers} worker(s) · Ctrl-C to stop")
    assert all(line.strip() for line in lines)  # no blank or whitespace-only lines
