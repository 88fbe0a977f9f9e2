"""`sfuctl token create`: mint an access token for a server started with --auth-secret (docs/security.md)."""

from __future__ import annotations

import json
from typing import NoReturn

import click

from ..scenario.model import parse_duration
from ..tokens import TokenError, claims, mint, parse_kinds

EXIT_BAD_OPTION = 2


@click.group()
def token() -> None:
    """Access tokens for servers started with --auth-secret (docs/security.md).

    \b
    Example:
      sfuctl token create --room demo --identity alice --ttl 1h
    """


@token.command()
@click.option("--room", default=None, help="The room the token may join (omit only with --admin).")
@click.option("--identity", default=None, help="The peer's id in the room (1-64 letters, digits, ._-~ etc.).")
@click.option("--name", default=None, help="Display name [default: the name given in join, else the identity].")
@click.option("--ttl", default="1h", show_default=True, help="Lifetime, e.g. 30m, 1h, 24h.")
@click.option("--publish", default="audio,video", show_default=True, help="Kinds it may publish: audio, video, audio,video or none.")
@click.option("--subscribe/--no-subscribe", default=True, show_default=True, help="May subscribe to the room's producers.")
@click.option("--data/--no-data", default=True, show_default=True, help="May send data (relay, data channels).")
@click.option("--admin", is_flag=True, help="May read stats and /metrics of every room.")
@click.option("--secret", envvar="SFUCTL_AUTH_SECRET", default=None, help="The server's --auth-secret [default: $SFUCTL_AUTH_SECRET].")
@click.option("--json", "as_json", is_flag=True, help='Print {"token": ..., "claims": {...}} instead of the bare token.')
def create(
    room: str | None,
    identity: str | None,
    name: str | None,
    ttl: str,
    publish: str,
    subscribe: bool,
    data: bool,
    admin: bool,
    secret: str | None,
    as_json: bool,
) -> None:
    """Print an access token (a JWT signed with HS256).

    \b
    Examples:
      sfuctl token create --room demo --identity alice --ttl 1h
      sfuctl token create --room demo --identity viewer-7 --publish none
      sfuctl token create --admin --ttl 24h          # for sfuctl stats --token and /metrics
      sfuctl bots --url "ws://127.0.0.1:8080/ws?token=$(sfuctl token create --room demo --identity bot)"
    Exit status: 0 printed, 2 a bad option (the message says which).
    """
    if secret is None:
        _fail("no secret: pass --secret or set SFUCTL_AUTH_SECRET (the server's --auth-secret)")
    try:
        lifetime = parse_duration(ttl)
    except ValueError as exc:
        _fail(f"--ttl: {exc}")
    try:
        body = claims(
            room=room,
            identity=identity,
            name=name,
            ttl=lifetime,
            publish=parse_kinds(publish),
            subscribe=subscribe,
            data=data,
            admin=admin,
        )
        signed = mint(secret, body)
    except TokenError as exc:
        _fail(str(exc))
    click.echo(json.dumps({"token": signed, "claims": body}) if as_json else signed)


def _fail(message: str) -> NoReturn:
    click.echo(f"sfuctl token create: {message}", err=True)
    raise click.exceptions.Exit(EXIT_BAD_OPTION)
