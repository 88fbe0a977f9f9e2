"""Threshold expressions: the grammar (what parses, what is refused and how the message says it) and the
aggregates they are judged on."""

from __future__ import annotations

import pytest

from sfuctl.scenario.thresholds import AGGREGATES, Expression, aggregate, parse_expression


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("p95 < 0.01", ("p95", "<", 0.01)),
        ("p50>300000", ("p50", ">", 300000.0)),
        ("  count == 0 ", ("count", "==", 0.0)),
        ("max <= 1e6", ("max", "<=", 1e6)),
        ("min >= -3", ("min", ">=", -3.0)),
        ("avg != .5", ("avg", "!=", 0.5)),
        ("sum < 300_000", ("sum", "<", 300000.0)),
        ("rate < 2.5E-1", ("rate", "<", 0.25)),
        ("p99 > 7.", ("p99", ">", 7.0)),
    ],
)
def test_expressions_parse(text: str, parsed: tuple) -> None:
    expression = parse_expression(text)
    assert (expression.aggregate, expression.op, expression.value) == parsed
    assert expression.text == text


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("p95 < ", "bad threshold 'p95 < ': expected AGGREGATE OP NUMBER, e.g. \"p95 < 0.01\""),
        ("p95 << 1", "bad threshold 'p95 << 1': expected AGGREGATE OP NUMBER, e.g. \"p95 < 0.01\""),
        ("p95 < 1 ms", "bad threshold 'p95 < 1 ms': expected AGGREGATE OP NUMBER, e.g. \"p95 < 0.01\""),
        ("p(95) < 1", "bad threshold 'p(95) < 1': unknown aggregate 'p(95)'; write p95"),
        ("p75 < 1", "bad threshold 'p75 < 1': unknown aggregate 'p75'; use one of "
                    "p50, p90, p95, p99, avg, min, max, count, sum, rate"),
        ("mean < 1", "bad threshold 'mean < 1': unknown aggregate 'mean'; use one of "
                     "p50, p90, p95, p99, avg, min, max, count, sum, rate"),
        ("count = 0", "bad threshold 'count = 0': unknown operator '='; write '=='"),
        ("p95 < inf", "bad threshold 'p95 < inf': expected AGGREGATE OP NUMBER, e.g. \"p95 < 0.01\""),
        ("", "bad threshold '': expected AGGREGATE OP NUMBER, e.g. \"p95 < 0.01\""),
        (0.5, "a threshold is a string like \"p95 < 0.01\", not 0.5"),
    ],
)
def test_bad_expressions_say_what_is_wrong(text: object, message: str) -> None:
    with pytest.raises(ValueError) as error:
        parse_expression(text)  # type: ignore[arg-type]
    assert str(error.value) == message


VALUES = [5.0, 1.0, 4.0, 2.0, 3.0, 10.0, 6.0, 7.0, 9.0, 8.0]


@pytest.mark.parametrize(
    ("name", "values", "window", "expected"),
    [
        ("p50", VALUES, 10, 5.0),
        ("p90", VALUES, 10, 9.0),
        ("p95", VALUES, 10, 10.0),
        ("p99", VALUES, 10, 10.0),
        ("p95", [7.0], 10, 7.0),
        ("avg", VALUES, 10, 5.5),
        ("min", VALUES, 10, 1.0),
        ("max", VALUES, 10, 10.0),
        ("count", VALUES, 10, 10.0),
        ("sum", VALUES, 10, 55.0),
        ("rate", VALUES, 10, 5.5),  # sum per second of the window
        ("rate", [1.0, 1.0], 4, 0.5),
        ("count", [], 10, 0.0),
        ("sum", [], 10, 0.0),
        ("rate", [], 10, 0.0),
        ("rate", [1.0], 0, None),
        ("p50", [], 10, None),
        ("avg", [], 10, None),
        ("min", [], 10, None),
        ("max", [], 10, None),
    ],
)
def test_aggregates(name: str, values: list[float], window: float, expected: float | None) -> None:
    assert aggregate(name, values, window) == expected


def test_every_aggregate_of_the_grammar_is_computed() -> None:
    for name in AGGREGATES:
        assert aggregate(name, [1.0, 2.0], 1.0) is not None


@pytest.mark.parametrize(
    ("text", "measured", "holds"),
    [
        ("p95 < 0.01", 0.009, True),
        ("p95 < 0.01", 0.01, False),
        ("p95 <= 0.01", 0.01, True),
        ("p50 > 300000", 300001, True),
        ("p50 > 300000", 300000, False),
        ("p50 >= 300000", 300000, True),
        ("count == 0", 0.0, True),
        ("count == 0", 1.0, False),
        ("count != 0", 1.0, True),
        ("p95 < 1000", None, False),  # nothing measured never passes
        ("count == 0", None, False),
    ],
)
def test_a_threshold_holds_only_for_a_measured_value_that_satisfies_it(text: str, measured: float | None, holds: bool) -> None:
    assert parse_expression(text).holds(measured) is holds


def test_an_expression_prints_normalized() -> None:
    assert str(parse_expression("p50>300_000")) == "p50 > 300000"
    assert isinstance(parse_expression("max<1"), Expression)
