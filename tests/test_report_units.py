"""Numbers as the reports print them, and what the report's plots draw besides the data."""

from __future__ import annotations

import pytest

from sfuctl.scenario.svg import FADED, Line, line_chart
from sfuctl.units import format_value


@pytest.mark.parametrize(
    ("value", "unit", "text"),
    [(558066, "bit/s", "558 kb/s"), (3.49855, "ms", "3.5 ms"), (18.33, "ms", "18.3 ms"), (491.2, "ms", "491 ms"),
     (0.0123, "0..1", "1.23%"), (3, "bots", "3 bots"), (12.5, "% of a core", "12.5 % of a core")],
)
def test_measured_values_get_their_unit_and_a_sensible_precision(value: float, unit: str, text: str) -> None:
    assert format_value(value, unit) == text


def test_a_chart_draws_threshold_lines_in_range_and_fades_the_rooms_it_is_told_to() -> None:
    lines = [Line("room-1", [(0.0, 1.0), (1.0, 2.0)]), Line("room-2", [(0.0, 0.5), (1.0, 0.5)], faded=True),
             Line("room-3", [(0.0, 1.5), (1.0, 1.5)])]
    svg = line_chart("Jitter", "ms", lines, 2.0, limits=[(30.0, "consumer.jitter_ms: p95 < 30")])
    assert svg.count('class="limit"') == 1 and "consumer.jitter_ms: p95 &lt; 30" in svg
    assert ">30<" in svg  # the y axis reaches the limit even though the data stays far below it
    assert FADED in svg and svg.index(FADED) < svg.index("room-1")  # faded lines are drawn first, underneath
    assert 'start">room-1</text>' in svg and 'start">room-2</text>' not in svg  # left out of the legend
