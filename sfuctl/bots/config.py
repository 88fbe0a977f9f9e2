"""What a bots run does (BotsConfig) and who does what (BotPlan per bot: name, room, role, start time)."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from urllib.parse import urlsplit

from sfuctl.client.source import source_address
from sfuctl.encoded import EncodedTrack, load_track
from sfuctl.rtc.batching import REPORT_INTERVAL
from sfuctl.rtc.simulcast import MAX_LAYERS
from sfuctl.tokens import check_secret, claims, mint

from .impairment import ImpairmentConfig, ImpairmentStep

MAX_BOTS = 10_000
MAX_ROOM_NAME = 64
MODES = ("websocket", "whip", "whep")
TOKEN_TTL = 3600.0  # a bot's token is checked once, when it joins, within the run's first hour


@dataclass(frozen=True)
class BotsConfig:
    """Settings of one run. `media` lists files (VP8/H.264 video, Opus audio); empty means the default media.

    `impaired` lists the bot indexes (0-based) that get `impairment`; None means every bot.
    `duration` None runs until stopped. `decode` runs a real decoder per consumer (costly).
    `mode` "whip" / "whep": `url` is a WHIP / WHEP endpoint (http[s]://) every bot publishes to / plays from,
    with `token` as its bearer token; the room is the URL's last path segment.
    `mesh`: the bots of a room connect to each other directly (a full mesh; the server only relays signaling).
    `token`: one access token for every bot (?token= on the websocket, Bearer on WHIP/WHEP); `auth_secret`:
    the server's secret, to mint each bot its own token (docs/security.md).
    `data_rate`: chat messages per second each publishing bot sends on a data channel (0: no data channels).
    `ice_restart_every`: each joined bot restarts ICE on its transports this often (seconds), each time from a
    new local port, as a network change would (websocket: renegotiation; WHIP/WHEP: PATCH, RFC 9725).
    `speakers`: the first N publishing bots of each room take turns talking (sfuctl.bots.speech) and every
    publishing bot sends audio levels (RFC 6464); None sends no levels.
    `simulcast`: publishers send every video file of `media` (lowest first; default: the simulcast test media)
    as the encodings of one simulcast track, with RIDs.
    `reconnect`: a websocket bot whose signaling or transport is lost joins its room again (with backoff, as it
    always does on the server's `reconnect` notification) instead of ending disconnected.
    `ice_tcp`: reach the server over its ICE-TCP passive candidates (RFC 6544) instead of UDP. The bots bind
    ::1 when the server's URL names an IPv6 address, 127.0.0.1 otherwise (`local_host`). `relay`: every transport
    relays through the TURN server the server hands out (join reply; OPTIONS Link headers for WHIP/WHEP).
    """

    url: str
    count: int = 1
    rooms: int = 1
    room: str | None = None
    publishers: int | None = None
    audio: bool = True
    video: bool = True
    subscribe: bool = True
    media: tuple[str, ...] = ()
    ramp: float = 5.0
    duration: float | None = None
    processes: int = 1
    seed: int = 0
    impairment: ImpairmentConfig = field(default_factory=ImpairmentConfig)
    impaired: tuple[int, ...] | None = None
    connect_timeout: float = 10.0
    join_timeout: float = 20.0
    rtcp_interval: float = REPORT_INTERVAL
    sample_interval: float = 1.0
    decode: bool = False
    mode: str = "websocket"
    token: str | None = None
    mesh: bool = False
    auth_secret: str | None = None
    data_rate: float = 0.0
    ice_restart_every: float | None = None
    speakers: int | None = None
    simulcast: bool = False
    reconnect: bool = False
    ice_tcp: bool = False
    relay: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {self.mode!r}")
        if self.mode == "websocket" and not self.url.startswith(("ws://", "wss://")):
            raise ValueError(f"url must start with ws:// or wss://, not {self.url!r}")
        if self.mode != "websocket" and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"{self.mode.upper()} url must start with http:// or https://, not {self.url!r}")
        if not 1 <= self.count <= MAX_BOTS:
            raise ValueError(f"count must be between 1 and {MAX_BOTS}, not {self.count}")
        if not 1 <= self.rooms <= self.count:
            raise ValueError(f"rooms must be between 1 and the bot count ({self.count}), not {self.rooms}")
        if self.room is not None and not 1 <= len(self.room) <= MAX_ROOM_NAME:
            raise ValueError(f"room name must be 1 to {MAX_ROOM_NAME} characters")
        if self.publishers is not None and self.publishers < 0:
            raise ValueError(f"publishers must be 0 or more, not {self.publishers}")
        if not 0 < self.ramp <= 1000:
            raise ValueError(f"ramp must be more than 0 and at most 1000 joins per second, not {self.ramp}")
        if self.duration is not None and not self.duration > 0:
            raise ValueError(f"duration must be more than 0 seconds, not {self.duration}")
        if not 1 <= self.processes <= 256:
            raise ValueError(f"processes must be between 1 and 256, not {self.processes}")
        if self.mesh and self.mode != "websocket":
            raise ValueError("a mesh call needs the sfuctl server's signaling (ws://), not WHIP/WHEP")
        if self.token is not None and self.auth_secret is not None:
            raise ValueError("give a token or an auth secret to mint tokens with, not both")
        if self.token is not None and self.mode == "websocket" and self.count > 1:
            raise ValueError("one token gives every bot the same identity (each join would replace the last): use the auth secret to mint one per bot")
        if self.auth_secret is not None:
            check_secret(self.auth_secret)
        if not 0 <= self.data_rate <= 1000:
            raise ValueError(f"data rate must be between 0 and 1000 messages per second, not {self.data_rate}")
        if self.data_rate and (self.mode != "websocket" or self.mesh):
            raise ValueError("data channels go through the sfuctl server's signaling (ws://), not WHIP/WHEP or a mesh")
        if self.ice_restart_every is not None and not self.ice_restart_every > 0:
            raise ValueError(f"ice_restart_every must be more than 0 seconds, not {self.ice_restart_every}")
        if self.ice_restart_every is not None and self.mesh:
            raise ValueError("ICE restarts are for bots connected to a server, not a mesh")
        if self.speakers is not None:
            if not 0 <= self.speakers <= self.count:
                raise ValueError(f"speakers must be between 0 and the bot count ({self.count}), not {self.speakers}")
            if not self.audio:
                raise ValueError("speakers talk on their audio: drop --no-audio or --speakers")
            if self.mode != "websocket" or self.mesh:
                raise ValueError("the active speaker comes from the sfuctl server's signaling (ws://), not WHIP/WHEP or a mesh")
        if self.simulcast and (self.mesh or self.mode != "websocket"):
            raise ValueError("simulcast needs the sfuctl server's signaling (ws://): it cannot go with --mesh, --whip or --whep")
        if self.simulcast and not self.video:
            raise ValueError("simulcast is a video feature: it cannot go with --no-video")
        if self.reconnect and (self.mode != "websocket" or self.mesh):
            raise ValueError("reconnecting is for bots joined through the sfuctl server's signaling (ws://), not WHIP/WHEP or a mesh")
        if self.relay and (self.ice_tcp or self.mesh):
            raise ValueError("--relay reaches the server through TURN over UDP: not with --ice-tcp or --mesh")
        if self.ice_tcp and self.mesh:
            raise ValueError("ICE-TCP reaches a server's passive candidates; mesh bots connect to each other over UDP")
        if not (self.audio or self.video):
            raise ValueError("bots need audio or video (both --no-audio and --no-video were given)")
        for name in ("connect_timeout", "join_timeout", "rtcp_interval", "sample_interval"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be more than 0, not {getattr(self, name)}")

    @property
    def local_host(self) -> str:
        """The address the bots' sockets bind: the one this machine sends from towards the server's host."""
        return source_address(urlsplit(self.url).hostname or "127.0.0.1")

    @property
    def room_count(self) -> int:
        return 1 if self.room is not None or self.mode != "websocket" else self.rooms

    @property
    def endpoint_room(self) -> str:
        """The room of a WHIP/WHEP endpoint: the last segment of its path (the endpoint itself if none)."""
        return urlsplit(self.url).path.rstrip("/").rsplit("/", 1)[-1] or self.url

    def is_impaired(self, index: int) -> bool:
        return self.impairment.active and (self.impaired is None or index in self.impaired)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["media"] = list(self.media)
        data["impaired"] = list(self.impaired) if self.impaired is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict) -> BotsConfig:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["impairment"] = ImpairmentConfig(**values.get("impairment", {}))
        values["media"] = tuple(values.get("media", ()))
        if values.get("impaired") is not None:
            values["impaired"] = tuple(values["impaired"])
        return cls(**values)


def default_processes() -> int:
    """One bot process per core."""
    return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class BotPlan:
    """One bot: its 0-based index, name, room, whether it publishes / subscribes, and its start offset (s).

    `stop_offset` makes it leave at that offset (None: when the run ends). `network` is its own impairment
    timeline (offsets from the start of the run); empty means the config's `impairment` when `impaired`.
    `mesh`: it connects to the other bots of its room directly instead of through the SFU.
    """

    index: int
    name: str
    room: str
    publish: bool
    subscribe: bool
    start_offset: float
    impaired: bool
    stop_offset: float | None = None
    network: tuple[ImpairmentStep, ...] = ()
    mesh: bool = False
    token: str | None = None  # its own access token, minted where the secret is (load agents never get it)
    speaker: int | None = None  # its turn among its room's speakers (0-based), None when it never talks

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> BotPlan:
        values = dict(data)
        values["network"] = tuple(ImpairmentStep.from_dict(step) for step in data.get("network", ()))
        return cls(**values)

    def impairment_timeline(self, default: ImpairmentConfig) -> tuple[ImpairmentStep, ...]:
        """What this bot's sockets go through: its own timeline, else `default` from the start when impaired."""
        if self.network:
            return self.network
        return (ImpairmentStep(0.0, default),) if self.impaired else ()


def bot_identity(plan: BotPlan, seed: int) -> str:
    """A bot's identity in its room (its peer id): unique within a run, the same wherever the bot runs."""
    return f"{plan.name}-{seed:08x}"


def access_token(config: BotsConfig, plan: BotPlan) -> str | None:
    """The bot's access token: its plan's own, one minted from the config's auth secret for its room, identity
    and role (the kinds it sends, subscribe if it subscribes, data for a mesh), or the config's shared one."""
    if plan.token is not None:
        return plan.token
    if config.auth_secret is None:
        return config.token
    kinds = tuple(kind for kind, on in (("audio", config.audio), ("video", config.video)) if on and plan.publish)
    body = claims(
        room=plan.room,
        identity=bot_identity(plan, config.seed),
        ttl=TOKEN_TTL,
        publish=kinds,
        subscribe=plan.subscribe,
        data=plan.mesh,
    )
    return mint(config.auth_secret, body)


def plan_bots(config: BotsConfig) -> list[BotPlan]:
    """Bots join in index order at `ramp` per second; bot i goes to room (i mod rooms) + 1, so the rooms fill
    evenly during the ramp; the first `publishers` bots of each room publish, the first `speakers` of those talk.
    WHIP bots only publish and WHEP bots only play, all to the endpoint's room."""
    plans = []
    per_room: dict[str, int] = {}
    for index in range(config.count):
        if config.mode != "websocket":
            room = config.endpoint_room
            publish, subscribe = config.mode == "whip", config.mode == "whep"
            speaker = None
        else:
            room = config.room if config.room is not None else f"room-{index % config.rooms + 1}"
            position = per_room[room] = per_room.get(room, 0) + 1
            publish = config.publishers is None or position <= config.publishers
            subscribe = config.subscribe
            speaker = position - 1 if publish and position <= (config.speakers or 0) else None
        plans.append(
            BotPlan(
                index=index,
                name=f"bot-{index + 1}",
                room=room,
                publish=publish,
                subscribe=subscribe,
                start_offset=index / config.ramp,
                impaired=config.is_impaired(index),
                mesh=config.mesh,
                speaker=speaker,
            )
        )
    return plans


def load_layers(paths: list[str] | tuple[str, ...]) -> tuple[EncodedTrack, ...]:
    """Every video track of `paths` in order, as simulcast encodings (lowest first).

    Raises ValueError unless there are 1 to MAX_LAYERS with one codec and one frame rate (switching between
    encodings needs their frames to line up).
    """
    layers = []
    for path in paths:
        try:
            layers.append(load_track(Path(path), "video"))
        except ValueError:
            continue  # an audio-only file
        except OSError as error:
            raise ValueError(f"{path}: {error.strerror or error}") from None
    if not 1 <= len(layers) <= MAX_LAYERS:
        raise ValueError(f"simulcast needs 1 to {MAX_LAYERS} video files (lowest first), got {len(layers)}")
    if len({t.codec for t in layers}) != 1 or len({round(t.frame_interval, 4) for t in layers}) != 1:
        raise ValueError("simulcast video files must share one codec and one frame rate")
    return tuple(layers)


def load_tracks(paths: list[str] | tuple[str, ...], audio: bool, video: bool) -> dict[str, EncodedTrack]:
    """The first video and the first audio track found in `paths`, for the kinds wanted.

    Raises ValueError when a wanted kind is in none of the files.
    """
    tracks: dict[str, EncodedTrack] = {}
    wanted = [kind for kind, on in (("video", video), ("audio", audio)) if on]
    for kind in wanted:
        errors = []
        for path in paths:
            try:
                tracks[kind] = load_track(Path(path), kind)
                break
            except ValueError as error:
                errors.append(str(error))
            except OSError as error:
                errors.append(f"{path}: {error.strerror or error}")
        if kind not in tracks:
            detail = "; ".join(errors) if errors else "no media files given"
            raise ValueError(f"no usable {kind} track in the media ({detail}); use --no-{kind} to run without")
    return tracks
