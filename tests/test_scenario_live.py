"""The live view of `sfuctl run`: on a terminal it fits the screen at 80 columns and wider (however many
consumers the dashboard has) and shows every room; without a terminal it prints plain periodic lines."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from sfuctl.bots.stats import RoomCounters, Sample
from sfuctl.scenario.live import PlainView, TerminalView, rooms_table
from sfuctl.scenario.model import parse_scenario

SCENARIO = parse_scenario('duration = "60s"\n[bots]\ncount = 50\nrooms = 10\n', Path("meeting.toml"))


def snapshot(rooms: int = 10, peers: int = 5) -> dict:
    consumer = {"peer": "peer-1", "peer_name": "bot-1", "producer_peer_name": "bot-2", "kind": "video", "codec": "VP8",
                "bitrate_bps": 550_000.0, "fraction_lost": 0.0, "jitter_ms": 1.0, "rtt_ms": 2.0, "nack_count": 0,
                "pli_count": 0, "score": 10}
    return {
        "version": 1, "time": 0.0,
        "server": {"uptime_s": 30.0, "rooms": rooms, "peers": rooms * peers, "producers": 100, "consumers": 400,
                   "bitrate_in_bps": 2.9e7, "bitrate_out_bps": 1.2e8, "cpu_percent": 31.0},
        "rooms": [{"name": f"room-{r + 1}", "peers": [{}] * peers, "producers": [{"bitrate_bps": 1.0}] * 10,
                   "consumers": [{**consumer, "id": f"c-{r}-{i}"} for i in range(40)]} for r in range(rooms)],
    }


def sample() -> Sample:
    room = RoomCounters(bots=5, joined=5, active=5, streams_sent=10, streams_received=40, sent_bps=2.9e6,
                        received_bps=1.2e7, expected=1000, lost=0, lost_first=3, jitter_sum=40.0, jitter_count=40,
                        rtt_sum=80.0, rtt_count=40)
    return Sample.from_counters(30.0, {f"room-{r + 1}": room for r in range(10)})


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 50)])
def test_the_terminal_view_fits_the_screen_and_shows_every_room(width: int, height: int) -> None:
    console = Console(file=io.StringIO(), width=width, height=height, force_terminal=True, color_system=None)
    view = TerminalView(SCENARIO, console)
    view.server_ready("ws://127.0.0.1:1/ws", True)
    view.started(0.0)
    view.sample(30.0, sample())
    view.snapshot(snapshot())
    lines = console.render_lines(view.render(), console.options, pad=False)
    text = ["".join(segment.text for segment in line) for line in lines]
    assert len(text) == height - 1 and all(len(line) <= width for line in text)
    assert text[0].startswith("sfuctl run meeting") and "stage 1/1: 50 bots" in text[0]
    assert any(line.startswith("bots 50/50 up") for line in text)
    assert [line.split()[0] for line in text if line.startswith("room-")] == [f"room-{r}" for r in range(1, 9)]
    assert any("+2 more rooms (the worst are shown)" in line for line in text)
    assert any(line.startswith("sfuctl stats ws://127.0.0.1:1/ws") for line in text)
    if height >= 40:  # the dashboard cuts itself to the lines left, and says what it left out
        assert any("more streams" in line for line in text)
        assert any(line.startswith("+") and "more rooms" in line for line in text)


def test_cut_rooms_keep_the_worst() -> None:
    clean = RoomCounters(bots=5, joined=5, active=5, expected=1000, lost=0)
    lossy = RoomCounters(bots=5, joined=5, active=5, expected=1000, lost=50)
    counters = {**{f"room-{r}": clean for r in range(1, 10)}, "room-10": lossy}
    console = Console(file=io.StringIO(), width=120, color_system=None)
    console.print(rooms_table(Sample.from_counters(30.0, counters), limit=3))
    text = console.file.getvalue().splitlines()
    assert [line.split()[0] for line in text if line.startswith("room-")] == ["room-10", "room-1", "room-2"]
    assert any("+7 more rooms (the worst are shown)" in line for line in text)


def test_without_a_terminal_the_view_prints_a_line_every_few_seconds() -> None:
    out = io.StringIO()
    view = PlainView(SCENARIO, Console(file=out, width=200))
    view.server_ready("ws://127.0.0.1:1/ws", True)
    view.snapshot(snapshot())
    for second in range(1, 12):
        view.sample(float(second), sample())
    lines = out.getvalue().splitlines()
    assert lines[0] == "server ws://127.0.0.1:1/ws (embedded)"
    assert lines[1] == "[  1.0 s] stage 1/1: 50 bots"
    progress = [line for line in lines if "/60 s]" in line]
    assert [line[:13] for line in progress] == ["[  1.0/60 s] ", "[  5.0/60 s] ", "[ 10.0/60 s] "]
    assert progress[0].endswith("freezes 0 · server cpu 31% out 120 Mb/s")
