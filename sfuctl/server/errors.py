"""Errors the signaling layer turns into structured replies."""

from __future__ import annotations


class SignalingError(Exception):
    """A request that cannot be done; `code` is stable, `message` says what was wrong and how to fix it."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def bad_request(message: str) -> SignalingError:
    return SignalingError("bad_request", message)


def not_found(what: str, ident: object) -> SignalingError:
    return SignalingError("not_found", f"no {what} with id {ident!r}")


def wrong_state(message: str) -> SignalingError:
    return SignalingError("wrong_state", message)


def unauthorized(message: str) -> SignalingError:
    """No token, or one that does not verify (forged, expired, malformed)."""
    return SignalingError("unauthorized", message)


def forbidden(message: str) -> SignalingError:
    """A valid token that does not grant what was asked; the message names the missing grant."""
    return SignalingError("forbidden", message)
