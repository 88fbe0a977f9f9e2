"""The dashboard rendered to text by rich at 80 and 160 columns: contents, order, colours and layout."""

from __future__ import annotations

from io import StringIO

import pytest
from rich.console import Console

from sfuctl.dashboard import Dashboard, format_bitrate, kind_cell, peer_pair, severity, sparkline

URL = "ws://127.0.0.1:8080"


def consumer(ident: str, peer: str, source: str, kind: str = "video", **figures) -> dict:
    values = {"bitrate_bps": 300_000, "fraction_lost": 0.0, "jitter_ms": 2.0, "rtt_ms": 10.0, "score": 10,
              "nack_count": 0, "pli_count": 0}  # fmt: skip
    values.update(figures)
    return {"id": ident, "peer": f"peer-{peer}", "peer_name": peer, "producer_id": f"p-{source}",
            "producer_peer": f"peer-{source}", "producer_peer_name": source, "kind": kind,
            "codec": "VP8" if kind == "video" else "opus", "ssrc": 1, "paused": False, "packets": 100,
            "bytes": 100_000, "packets_lost": 0, "fir_count": 0, "retransmitted": 0, "reports_received": 3,
            "producer_score": 10, **values}  # fmt: skip


def snapshot(*rooms: dict) -> dict:
    return {
        "version": 1,
        "time": 1700000000.0,
        "server": {"uptime_s": 3725, "rooms": len(rooms), "peers": 4, "producers": 2, "consumers": 4,
                   "transports": 8, "bitrate_in_bps": 350_000, "bitrate_out_bps": 1_250_000, "cpu_percent": 12.4,
                   "rtc_port": 40000, "unknown_datagrams": 0},  # fmt: skip
        "rooms": list(rooms),
    }


def room(name: str, consumers: list[dict]) -> dict:
    producers = [{"bitrate_bps": 300_000}, {"bitrate_bps": 50_000}]
    return {"name": name, "peers": [{}, {}, {}], "producers": producers, "consumers": consumers}


DEMO = snapshot(
    room(
        "demo",
        [
            consumer("c1", "bob", "alice"),
            consumer("c2", "carol", "alice", "audio", bitrate_bps=48_000, fraction_lost=0.05, score=8, nack_count=3, pli_count=1),
            consumer("c3", "dave", "alice", rtt_ms=None),
            consumer("c4", "erin", "alice", jitter_ms=30.0),
        ],
    )
)


def render(dashboard: Dashboard, data: dict | None, width: int, color: bool = False, **options) -> str:
    console = Console(file=StringIO(), width=width, record=True, color_system="standard" if color else None, force_terminal=color)
    console.print(dashboard.view(data, url=URL, **options))
    return console.export_text(styles=color)


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if "←" in line and "peer ← from" not in line]


@pytest.mark.parametrize("width", [80, 160])
def test_the_dashboard_fits_and_shows_totals_and_every_consumer(width):
    text = render(Dashboard(), DEMO, width)
    assert max(len(line) for line in text.splitlines()) <= width
    assert "sfuctl stats ws://127.0.0.1:8080" in text
    for total in ("rooms 1", "peers 4", "prod 2", "cons 4", "in 350 kb/s", "out 1.25 Mb/s", "CPU 12%"):
        assert total in text
    assert "room demo · 3 peers · 2 producers 350 kb/s in · 4 consumers 948 kb/s out" in text
    carol = next(row for row in table_rows(text) if "carol" in row).split()
    assert carol[:4] == ["carol", "←", "alice", "audio"]
    for cell in ("48", "kb/s", "5.0%", "2.0", "10", "3/1", "8"):
        assert cell in carol
    dave = next(row for row in table_rows(text) if "dave" in row)
    assert "–" in dave  # no RTT yet


def test_wide_terminals_get_the_codec_and_a_bitrate_sparkline():
    dashboard = Dashboard()
    for rate in (100_000, 200_000, 400_000):
        data = snapshot(room("demo", [consumer("c1", "bob", "alice", bitrate_bps=rate)]))
        dashboard.update(data)
    wide, narrow = render(dashboard, data, 160), render(dashboard, data, 80)
    assert "codec" in wide and "bitrate, last 12" in wide
    assert "VP8" in table_rows(wide)[0] and table_rows(wide)[0].rstrip().endswith("▃▅█")
    assert "codec" not in narrow and "last 12" not in narrow and "▃▅█" not in narrow


def test_wide_terminals_show_the_servers_estimate_of_each_subscribers_link_and_each_publishers_uplink():
    data = snapshot(room("demo", [consumer("c1", "bob", "alice"), consumer("c2", "carol", "alice"), consumer("c3", "alice", "dave")]))
    send = {"producers": 2, "incoming_bitrate_bps": 700_000, "available_outgoing_bitrate_bps": None}
    data["rooms"][0]["peers"] = [
        {"id": "peer-alice", "name": "alice", "transports": [send, {**send, "producers": 0, "incoming_bitrate_bps": 9_000}]},
        {"id": "peer-bob", "name": "bob", "transports": [{"producers": 0, "available_outgoing_bitrate_bps": 1_250_000}]},
        {"id": "peer-carol", "name": "carol", "transports": [{"producers": 0, "available_outgoing_bitrate_bps": None}]},
    ]
    for width in (120, 160):
        wide = render(Dashboard(), data, width)
        assert max(len(line) for line in wide.splitlines()) <= width
        rows = {row.split()[0]: row for row in table_rows(wide)}
        assert "estimate" in wide and "uplink" in wide
        assert rows["bob"].split("kb/s")[1].split() == ["1.25", "Mb/s", "700"]  # bob's estimate, alice's uplink
        assert rows["carol"].split("kb/s")[1].split() == ["–", "700"]
        assert rows["alice"].split("kb/s")[1].split()[:2] == ["–", "–"]  # dave publishes nothing here
    narrow = render(Dashboard(), data, 80)
    assert "estimate" not in narrow and "uplink" not in narrow


def test_rows_are_ordered_worst_first_and_other_sorts_work():
    worst = [row.split()[0] for row in table_rows(render(Dashboard(), DEMO, 160))]
    assert worst == ["carol", "erin", "bob", "dave"]  # red (5% loss), yellow (30 ms jitter), then fine
    by_peer = [row.split()[0] for row in table_rows(render(Dashboard(), DEMO, 160, sort="peer"))]
    assert by_peer == ["bob", "carol", "dave", "erin"]
    by_bitrate = [row.split()[0] for row in table_rows(render(Dashboard(), DEMO, 160, sort="bitrate"))]
    assert by_bitrate[-1] == "carol"
    with pytest.raises(ValueError, match=r"^unknown sort 'fast'; expected one of worst, score, loss, rtt, jitter, bitrate, peer$"):
        Dashboard().view(DEMO, url=URL, sort="fast")


def test_rows_are_coloured_by_their_worst_figure():
    lines = render(Dashboard(), DEMO, 160, color=True).splitlines()
    carol, erin, bob = (next(line for line in lines if name in line) for name in ("carol", "erin", "bob"))
    assert "\x1b[1;31m" in carol  # bold red: 5% loss
    assert "\x1b[33m" in erin  # yellow: 30 ms jitter
    assert "\x1b[1;31m" not in bob and "\x1b[33m" not in bob


@pytest.mark.parametrize(
    "figures, level",
    [
        ({}, 0),
        ({"fraction_lost": 0.01}, 1),
        ({"fraction_lost": 0.021}, 2),
        ({"jitter_ms": 25.0}, 1),
        ({"jitter_ms": 60.0}, 2),
        ({"rtt_ms": 200.0}, 1),
        ({"rtt_ms": 301.0}, 2),
        ({"rtt_ms": None}, 0),
        ({"score": 7}, 1),
        ({"score": 4}, 2),
        ({"score": 7, "fraction_lost": 0.5}, 2),
    ],
)
def test_severity_thresholds(figures, level):
    assert severity(consumer("c", "a", "b", **figures)) == level


def test_banner_waiting_and_empty_states():
    dashboard = Dashboard()
    waiting = render(dashboard, None, 80, banner="reconnecting to ws://127.0.0.1:8080: connection refused")
    assert waiting.splitlines()[0] == "reconnecting to ws://127.0.0.1:8080: connection refused"
    assert "waiting for the first snapshot from ws://127.0.0.1:8080" in waiting
    assert "no rooms" in render(dashboard, snapshot(), 80)
    assert "no room named 'x'" in render(dashboard, DEMO, 80, room="x")
    assert "no consumers" in render(dashboard, snapshot(room("quiet", [])), 80)


def test_room_option_keeps_one_room():
    data = snapshot(room("a", [consumer("c1", "bob", "alice")]), room("b", [consumer("c2", "zed", "yan")]))
    text = render(Dashboard(), data, 80, room="b")
    assert "room b" in text and "room a" not in text and "zed" in text and "bob" not in text


def test_dashboard_forgets_consumers_that_are_gone():
    dashboard = Dashboard(history=3)
    for rate in (1, 2, 3, 4):
        dashboard.update(snapshot(room("a", [consumer("c1", "bob", "alice", bitrate_bps=rate)])))
    assert list(dashboard.bitrates["c1"]) == [2, 3, 4]
    dashboard.update(snapshot(room("a", [])))
    assert dashboard.bitrates == {}


@pytest.mark.parametrize(
    "bps, text",
    [(0, "0 b/s"), (999, "999 b/s"), (48_000, "48 kb/s"), (312_345, "312 kb/s"), (1_250_000, "1.25 Mb/s"), (12_500_000, "12.5 Mb/s"), (2e9, "2 Gb/s")],
)
def test_format_bitrate(bps, text):
    assert format_bitrate(bps) == text


@pytest.mark.parametrize(
    "values, line",
    [([], ""), ([0, 0], "▁▁"), ([1, 2, 4, 8], "▂▃▅█"), ([5, 5], "██")],
)
def test_sparkline(values, line):
    assert sparkline(values) == line


@pytest.mark.parametrize(
    "peer, source, width, text",
    [
        ("bob", "alice", 20, "bob ← alice"),
        ("carol-with-a-long-name", "alice", 20, "carol-with-… ← alice"),
        ("x" * 30, "y" * 30, 20, "xxxxxxx… ← yyyyyyyy…"),
    ],
)
def test_peer_pair_fits_its_width(peer, source, width, text):
    assert peer_pair(peer, source, width) == text
    assert len(text) <= width


def test_peer_pair_needs_room():
    with pytest.raises(ValueError, match=r"^a peer pair needs a width of at least 5, got 4$"):
        peer_pair("a", "b", 4)


def crowded() -> dict:
    """3 rooms of 8 streams; one stream of room-3 loses 5%."""
    return snapshot(*[
        room(f"room-{r}", [consumer(f"c{r}{i}", f"p{i}", f"s{r}", fraction_lost=0.05 if (r, i) == (3, 2) else 0.0)
                           for i in range(8)])
        for r in (1, 2, 3)
    ])


@pytest.mark.parametrize("height", [24, 12])
def test_a_short_terminal_shows_the_header_the_worst_room_first_and_what_it_left_out(height):
    text = render(Dashboard(), crowded(), 80, max_lines=height)
    lines = text.splitlines()
    assert len(lines) <= height
    assert lines[0].startswith("sfuctl stats ") and lines[1].startswith("rooms 3")
    rooms = [line.split()[1] for line in lines if line.startswith("room room-")]
    assert rooms[0] == "room-3"  # its red row makes it the worst
    assert table_rows(text)[0].split()[0] == "p2"
    streams = sum(int(line.split("+")[1].split()[0]) for line in lines if "more streams" in line)
    more_rooms = next((int(line.split("+")[1].split()[0]) for line in lines if "more rooms" in line), 0)
    assert len(table_rows(text)) + streams + 8 * more_rooms == 24  # every stream is shown or counted
    if height == 12:
        assert more_rooms == 2


def test_a_tall_terminal_shows_every_room_in_order():
    text = render(Dashboard(), crowded(), 80, max_lines=60)
    assert [line.split()[1] for line in text.splitlines() if line.startswith("room room-")] == ["room-1", "room-2", "room-3"]
    assert len(table_rows(text)) == 24 and "more" not in text


def test_the_rooms_overview_is_one_line_per_room_worst_first():
    text = render(Dashboard(), crowded(), 80, rooms=True)
    rows = [line.split() for line in text.splitlines() if line.strip().startswith("room-")]
    assert [row[0] for row in rows] == ["room-3", "room-1", "room-2"]
    assert rows[0][-3:] == ["5.0%", "10", "1/0"] and rows[1][-3:] == ["0.0%", "10", "0/0"]
@pytest.mark.parametrize(
    ("extra", "cell"),
    [({}, "video"), ({"spatial_layer": 1}, "video L1"), ({"spatial_layer": None}, "video L?")],
)
def test_the_kind_cell_shows_a_simulcast_consumer_layer(extra: dict, cell: str) -> None:
    assert kind_cell(consumer("c1", "a", "b") | extra) == cell
