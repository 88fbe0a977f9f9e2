"""Minting, claim checks and credential scrubbing (no network)."""

from __future__ import annotations

import logging

import jwt
import pytest

from sfuctl.runtime import CredentialFilter
from sfuctl.server.auth import Authenticator, bearer_token, grant_from_claims
from sfuctl.server.config import ServerConfig
from sfuctl.server.errors import SignalingError
from sfuctl.tokens import TokenError, claims, mint, parse_kinds, scrub

SECRET = "s" * 32


def test_a_minted_token_verifies_into_its_grants() -> None:
    token = mint(SECRET, claims(room="r", identity="alice", ttl=60, publish=("audio",), subscribe=False, data=False, name="Alice"))
    grant = Authenticator(ServerConfig(auth_secret=SECRET)).verify(token)
    assert (grant.identity, grant.name, grant.room) == ("alice", "Alice", "r")
    assert grant.publish == {"audio"} and not grant.subscribe and not grant.data and not grant.admin


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"room": "r", "identity": "a b"}, "identity"),
        ({"room": "r", "identity": None}, "needs an identity"),
        ({"room": None, "identity": None}, "admin token"),
        ({"room": "x" * 65, "identity": "a"}, "1 to 64"),
        ({"room": "r", "identity": "a", "ttl": 0}, "lifetime"),
        ({"room": "r", "identity": "a", "publish": ("screen",)}, "screen"),
    ],
)
def test_claims_refuse_tokens_nobody_could_use(kwargs, fragment) -> None:
    with pytest.raises(TokenError, match=fragment):
        claims(**{"ttl": 60, **kwargs})


def test_short_secrets_are_refused_on_both_ends() -> None:
    with pytest.raises(TokenError, match="at least 32"):
        mint("short", claims(room="r", identity="a", ttl=60))
    with pytest.raises(ValueError, match="at least 32"):
        Authenticator(ServerConfig(auth_secret="short"))


def test_publish_kinds_parse() -> None:
    assert parse_kinds("audio,video") == ("audio", "video")
    assert parse_kinds("Video") == ("video",)
    assert parse_kinds("none") == ()
    with pytest.raises(TokenError, match="'screen'"):
        parse_kinds("audio,screen")


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"sub": "a", "room": "r", "grants": {"publish": "audio"}}, "'publish'"),
        ({"sub": "a", "room": "r", "grants": {"admin": "yes"}}, "'admin'"),
        ({"sub": "a", "room": "r", "grants": {"root": True}}, "unknown grant"),
        ({"room": "r"}, "'sub'"),
        ({"sub": "a b", "room": "r"}, "'sub'"),
    ],
)
def test_malformed_claims_are_unauthorized(body, fragment) -> None:
    with pytest.raises(SignalingError) as caught:
        grant_from_claims(body)
    assert caught.value.code == "unauthorized" and fragment in caught.value.message


def test_a_token_without_expiry_is_refused() -> None:
    token = jwt.encode({"sub": "a", "room": "r"}, SECRET, algorithm="HS256")
    with pytest.raises(SignalingError, match="exp"):
        Authenticator(ServerConfig(auth_secret=SECRET)).verify(token)


def test_the_bearer_scheme_is_case_insensitive() -> None:
    assert bearer_token("Bearer abc") == bearer_token("bearer abc") == bearer_token("BEARER  abc ") == "abc"
    assert bearer_token("Basic abc") is None and bearer_token("Bearer") is None and bearer_token(None) is None


def test_credentials_never_reach_the_logs(caplog: pytest.LogCaptureFixture) -> None:
    token = mint(SECRET, claims(room="r", identity="a", ttl=60))
    assert token not in scrub(f"GET /ws?token={token}&x=1")
    assert scrub("Authorization: Bearer s3cret") == "Authorization: Bearer ***"
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "connect to %s", (f"ws://h/ws?token={token}",), None)
    CredentialFilter().filter(record)
    assert record.getMessage() == "connect to ws://h/ws?token=***"
