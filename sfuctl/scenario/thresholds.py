"""Threshold expressions: `AGGREGATE OP NUMBER`, parsed and evaluated over a metric's samples.

Grammar (whitespace optional around OP):

    expression := aggregate op number
    aggregate  := p50 | p90 | p95 | p99 | avg | min | max | count | sum | rate
    op         := < | <= | > | >= | == | !=
    number     := a decimal number, optionally signed, with an optional exponent (1e6) and `_` between digits

Percentiles are nearest-rank. `count` is the number of samples and `sum` their total (both 0 without
samples); `rate` is the sum per second of the measured window. The others have no value without samples,
and a threshold without a value fails: a metric nothing measured cannot pass.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from ..bots.report import percentile
from .histogram import LogHistogram

AGGREGATES = ("p50", "p90", "p95", "p99", "avg", "min", "max", "count", "sum", "rate")
OPERATORS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    ">": operator.gt,
}
_EXPRESSION = re.compile(
    r"\s*(?P<aggregate>[A-Za-z0-9_()]+)\s*(?P<op><=|>=|==|!=|<|>|=)\s*"
    r"(?P<number>[+-]?(?:\d(?:_?\d)*(?:\.(?:\d(?:_?\d)*)?)?|\.\d(?:_?\d)*)(?:[eE][+-]?\d+)?)\s*"
)
_K6_PERCENTILE = re.compile(r"p\((\d+)\)")
EXAMPLE = '"p95 < 0.01"'


@dataclass(frozen=True)
class Expression:
    """One parsed threshold: `aggregate op value`; `text` is the expression as written."""

    aggregate: str
    op: str
    value: float
    text: str

    def holds(self, measured: float | None) -> bool:
        """Whether the measured aggregate satisfies the expression; no value never does."""
        return measured is not None and OPERATORS[self.op](measured, self.value)

    def __str__(self) -> str:
        return f"{self.aggregate} {self.op} {self.value:g}"


def parse_expression(text: str) -> Expression:
    """Parse `p95 < 0.01`; ValueError says what is wrong and how a good one looks."""
    if not isinstance(text, str):
        raise ValueError(f"a threshold is a string like {EXAMPLE}, not {text!r}")
    match = _EXPRESSION.fullmatch(text)
    if match is None:
        raise ValueError(f"bad threshold {text!r}: expected AGGREGATE OP NUMBER, e.g. {EXAMPLE}")
    aggregate, op, number = match["aggregate"], match["op"], match["number"]
    if aggregate not in AGGREGATES:
        k6 = _K6_PERCENTILE.fullmatch(aggregate)
        hint = f"write p{k6[1]}" if k6 and f"p{k6[1]}" in AGGREGATES else f"use one of {', '.join(AGGREGATES)}"
        raise ValueError(f"bad threshold {text!r}: unknown aggregate {aggregate!r}; {hint}")
    if op == "=":
        raise ValueError(f"bad threshold {text!r}: unknown operator '='; write '=='")
    return Expression(aggregate, op, float(number.replace("_", "")), text)


def aggregate(name: str, values: Sequence[float] | LogHistogram, window_s: float) -> float | None:
    """The aggregate `name` of `values` (the samples, or a histogram of them: merged load agents' samples);
    `window_s` (seconds measured) is only used by `rate`."""
    histogram = values if isinstance(values, LogHistogram) else None
    total = histogram.sum if histogram is not None else math.fsum(values)
    if name == "count":
        return float(len(values))
    if name == "sum":
        return float(total)
    if name == "rate":
        return total / window_s if window_s > 0 else None
    if not len(values):
        return None
    if name == "avg":
        return total / len(values)
    if name == "min":
        return float(histogram.min if histogram is not None else min(values))
    if name == "max":
        return float(histogram.max if histogram is not None else max(values))
    if name in ("p50", "p90", "p95", "p99"):
        fraction = int(name[1:]) / 100
        return histogram.percentile(fraction) if histogram is not None else percentile(list(values), fraction)
    raise ValueError(f"unknown aggregate {name!r}; use one of {', '.join(AGGREGATES)}")
