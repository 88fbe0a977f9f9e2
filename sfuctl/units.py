"""Units as sfuctl reads and writes them: durations like scenario files ('45s', '2m'), bitrates in b/s, kb/s, Mb/s."""

from __future__ import annotations

import math
import re

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(value: object) -> float:
    """'45s', '500ms', '2m', '1m30s' -> seconds; ValueError for anything else (bare numbers included)."""
    if isinstance(value, str):
        text = value.strip().replace(" ", "")
        parts = _DURATION_PART.findall(text)
        if parts and "".join(number + unit for number, unit in parts) == text:
            return math.fsum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    raise ValueError(f"bad duration {value!r}: write a number with a unit, e.g. \"45s\", \"500ms\" or \"2m\"")


def format_bitrate(bps: float) -> str:
    """1234567 -> '1.23 Mb/s' (SI prefixes, three significant digits)."""
    for factor, unit in ((1e9, "Gb/s"), (1e6, "Mb/s"), (1e3, "kb/s")):
        if bps >= factor:
            value = bps / factor
            return f"{value:.3g} {unit}" if value < 100 else f"{value:.0f} {unit}"
    return f"{bps:.0f} b/s"


def format_value(value: float, unit: str) -> str:
    """A measured value with its unit and sensible precision: 558066 bit/s -> '558 kb/s', 3.49855 ms -> '3.5 ms',
    0.0123 (0..1) -> '1.23%'."""
    if unit == "bit/s":
        return format_bitrate(value)
    if unit == "0..1":
        return f"{value * 100:.3g}%"
    if unit == "ms":
        return f"{value:.0f} ms" if abs(value) >= 100 else f"{value:.2g} ms" if abs(value) < 10 else f"{value:.3g} ms"
    return f"{value:.3g} {unit}" if value != int(value) else f"{value:.0f} {unit}"
