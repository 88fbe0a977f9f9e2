"""Signaling frames in: size and JSON nesting checked before parsing, the request id recovered for error replies.

Every frame a client sends goes through `parse_request`, in the worker and in the front. It returns the request
or raises `RequestError`, which carries the id of the request when it can be read (so that a `too_large` or
`too_deep` reply still matches its request) and never anything else.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .errors import SignalingError

# A string literal, or one bracket: the tokens that decide nesting (brackets inside strings do not count).
_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')
_ID_VALUE = re.compile(r'\s*:\s*(-?\d{1,15}(?![\d.eE])|"(?:[^"\\]|\\.){0,128}")')
# The id of an oversized frame is looked for in its first bytes only (clients put it first: docs/protocol.md).
ID_SEARCH_BYTES = 4096


@dataclass(frozen=True)
class Request:
    """One well-formed request: `{"id": ..., "method": "...", "params": {...}}`."""

    id: int | str
    method: str
    params: dict


class RequestError(SignalingError):
    """A frame that is not a request the server can take; `request_id` is its id when it could be read."""

    def __init__(self, code: str, message: str, request_id: int | str | None = None) -> None:
        super().__init__(code, message)
        self.request_id = request_id


def _scan(text: str, max_depth: int) -> tuple[int, int | str | None]:
    """(deepest nesting, capped at max_depth + 1; the top-level "id" if it is a number or a short string)."""
    depth = deepest = 0
    request_id: int | str | None = None
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token == "{" or token == "[":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > max_depth:
                    break
        elif token == "}" or token == "]":
            depth -= 1
        elif depth == 1 and token == '"id"' and request_id is None:
            value = _ID_VALUE.match(text, match.end())
            if value is not None:
                try:
                    request_id = json.loads(value.group(1))
                except ValueError:
                    pass
    return deepest, request_id


def recover_id(text: str) -> int | str | None:
    """The top-level id of a frame that may be malformed, oversized or nested too deep; None if unreadable."""
    return _scan(text[:ID_SEARCH_BYTES], 1 << 30)[1]


def parse_request(text: str, max_bytes: int, max_depth: int) -> Request:
    """Check size and nesting (before parsing), parse, and check the request's shape; RequestError otherwise."""
    if len(text) > max_bytes:
        raise RequestError("too_large", f"message of {len(text)} bytes exceeds the limit of {max_bytes}", recover_id(text))
    # Cheap bound first: fewer brackets than the limit cannot nest deeper than it.
    if text.count("{") + text.count("[") > max_depth:
        deepest, request_id = _scan(text, max_depth)
        if deepest > max_depth:
            raise RequestError("too_deep", f"JSON nested deeper than {max_depth} levels", request_id)
    try:
        message = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise RequestError("bad_json", f"message is not JSON: {exc}", recover_id(text)) from None
    request_id = message.get("id") if isinstance(message, dict) else None
    if not isinstance(request_id, (int, str)) or isinstance(request_id, bool):
        request_id = None
    if not isinstance(message, dict) or not isinstance(message.get("method"), str):
        raise RequestError("bad_request", 'a request is an object {"id": ..., "method": "...", "params": {...}}', request_id)
    if request_id is None:
        raise RequestError("bad_request", "a request needs an 'id' (number or string) to match its response")
    params = message.get("params", {})
    if not isinstance(params, dict):
        raise RequestError("bad_request", "'params' must be an object", request_id)
    return Request(request_id, message["method"], params)
