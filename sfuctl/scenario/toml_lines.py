"""Where a key of a TOML file is written: tomllib gives values without positions, so error messages find
the line of a key path (`("thresholds", "consumer.jitter_ms", 0)`) with this small scanner.

It reads tables (`[a.b]`), arrays of tables (`[[a]]`, also nested), `key = value` lines with bare, quoted and
dotted keys, and the elements of arrays (`[ ... ]`, on one line or many). It is best effort: a path it
cannot place falls back to its closest enclosing key, and a file tomllib rejects is never scanned.
"""

from __future__ import annotations

import re

Path = tuple[str | int, ...]
_BARE = re.compile(r"[A-Za-z0-9_-]+")


def key_lines(text: str) -> dict[Path, int]:
    """Map each key path of the document to its 1-based line; array elements get their index."""
    lines: dict[Path, int] = {}
    counts: dict[Path, int] = {}
    current: dict[tuple[str, ...], int] = {}  # array-of-tables name -> index of its last element
    table: Path = ()
    source = text.splitlines()
    number = 0
    while number < len(source):
        line = source[number]
        number += 1
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.startswith("[["):
            names, _ = _read_key(stripped[2:], "]")
            if names is None:
                continue
            key = _resolve(tuple(names[:-1]), current) + (names[-1],)
            index = counts[key] = counts.get(key, -1) + 1
            current[tuple(names)] = index
            for name in [n for n in current if n[: len(names)] == tuple(names) and len(n) > len(names)]:
                del current[name]  # a new element restarts the arrays nested in it
            table = key + (index,)
            lines.setdefault(key, number)
            lines.setdefault(table, number)
        elif stripped.startswith("["):
            names, _ = _read_key(stripped[1:], "]")
            if names is None:
                continue
            table = _resolve(tuple(names), current)
            lines.setdefault(table, number)
        else:
            names, rest = _read_key(stripped, "=")
            if names is None:
                continue
            path = table + tuple(names)
            lines.setdefault(path, number)
            number = _scan_value(rest, source, number, path, lines)
    return lines


def line_of(lines: dict[Path, int], path: Path) -> int | None:
    """The line of `path`, else of its closest enclosing key that has one."""
    for end in range(len(path), 0, -1):
        line = lines.get(path[:end])
        if line is not None:
            return line
    return None


def _resolve(names: tuple[str, ...], current: dict[tuple[str, ...], int]) -> Path:
    """Insert the current element index after every prefix that names an array of tables."""
    path: list[str | int] = []
    for end in range(1, len(names) + 1):
        path.append(names[end - 1])
        index = current.get(names[:end])
        if index is not None:
            path.append(index)
    return tuple(path)


def _read_key(text: str, terminator: str) -> tuple[list[str] | None, str]:
    """A dotted key up to `terminator` ('=' or ']'): its parts and the text after the terminator."""
    parts: list[str] = []
    i = 0
    while True:
        while i < len(text) and text[i] in " \t":
            i += 1
        if i >= len(text):
            return None, ""
        if text[i] in "\"'":
            quote = text[i]
            j = i + 1
            while j < len(text) and text[j] != quote:
                j += 2 if quote == '"' and text[j] == "\\" else 1
            if j >= len(text):
                return None, ""
            parts.append(text[i + 1 : j])
            i = j + 1
        else:
            match = _BARE.match(text, i)
            if match is None:
                return None, ""
            parts.append(match.group())
            i = match.end()
        while i < len(text) and text[i] in " \t":
            i += 1
        if i < len(text) and text[i] == ".":
            i += 1
            continue
        if i < len(text) and text[i] == terminator:
            return parts, text[i + 1 :]
        return None, ""


def _scan_value(rest: str, source: list[str], number: int, path: Path, lines: dict[Path, int]) -> int:
    """Record the line of each element of an array value starting in `rest`; return the last line used.
    Inside an inline table ({...}) nothing is recorded: its keys fall back to the table's own line."""
    depth = 0
    array = False  # the value is an array (its elements are at depth 1)
    expecting = False
    index = 0
    text, line = rest, number
    while True:
        i = 0
        while i < len(text):
            char = text[i]
            if char == "#":
                break
            if depth == 1 and array and expecting and char not in " \t,]":
                lines.setdefault(path + (index,), line)
                index += 1
                expecting = False
            if char in "\"'":
                end = _string_end(text, i)
                if end is None:
                    return line  # a multi-line string: nothing to place inside it
                i = end
                continue
            if char in "[{":
                depth += 1
                if depth == 1:
                    array = expecting = char == "["
            elif char in "]}":
                depth -= 1
                if depth <= 0:
                    return line
            elif char == "," and depth == 1 and array:
                expecting = True
            i += 1
        if depth <= 0 or line >= len(source):
            return line
        text = source[line]
        line += 1


def _string_end(text: str, start: int) -> int | None:
    """The index after the string literal starting at `start`, or None when it does not end on this line."""
    quote = text[start]
    if text.startswith(quote * 3, start):
        return None
    j = start + 1
    while j < len(text):
        if text[j] == "\\" and quote == '"':
            j += 2
            continue
        if text[j] == quote:
            return j + 1
        j += 1
    return None
