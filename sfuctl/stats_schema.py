"""The stats snapshot's wire schema (docs/stats.md) and its validator, shared by the server and its clients.

The server builds snapshots (Worker.snapshot, merged by the front); `sfuctl stats`, the dashboard and the tests
read them and check them here. Nothing in this module imports the server.
"""

from __future__ import annotations

import math
from typing import Any

SCHEMA_VERSION = 1
MAX_SCORE = 10  # quality scores run 0..MAX_SCORE

# Field types of each object in a snapshot: "int", "number" (int or float), "str", "bool", "object", "array";
# a trailing "?" allows null. Fields may be added within a version; removing or retyping one bumps it.
FIELDS: dict[str, dict[str, str]] = {
    "snapshot": {"version": "int", "time": "number", "server": "object", "rooms": "array"},
    "server": {
        "uptime_s": "number",
        "rooms": "int",
        "peers": "int",
        "producers": "int",
        "consumers": "int",
        "transports": "int",
        "bitrate_in_bps": "number",
        "bitrate_out_bps": "number",
        "cpu_percent": "number",
        "rtc_port": "int",
        "unknown_datagrams": "int",
        "loop_lag_p95_ms": "number",
        "pipes": "array",
        "tasks": "int",
        "tcp_connections": "int",
        "tcp_dropped": "int",
    },
    "room": {
        "name": "str",
        "peers": "array",
        "producers": "array",
        "consumers": "array",
        "data_producers": "array",
        "data_consumers": "array",
        "active_speaker": "str?",
    },
    "peer": {"id": "str", "name": "str", "worker": "int", "transports": "array"},
    "pipe": {
        "worker": "int",
        "port": "int",
        "remote_port": "int?",
        "streams_out": "int",
        "streams_in": "int",
        "packets_sent": "int",
        "bytes_sent": "int",
        "packets_received": "int",
        "bytes_received": "int",
        "dropped_foreign": "int",
        "dropped_invalid": "int",
        "unknown_ssrc": "int",
        "invalid_rtcp": "int",
        "rooms": "int",
    },
    "transport": {
        "id": "str",
        "state": "str",
        "ice_state": "str",
        "dtls_state": "str",
        "srtp_profile": "str?",
        "remote_address": "str?",
        "ice_protocol": "str?",
        "producers": "int",
        "consumers": "int",
        "bytes_received": "int",
        "bytes_sent": "int",
        "packets_received": "int",
        "packets_sent": "int",
        "srtp_errors": "int",
        "invalid_rtcp": "int",
        "sctp_state": "str?",
        "data_channels": "int",
        "data_invalid": "int",
        "transport_cc_packets": "int",
        "transport_feedback_sent": "int",
        "transport_feedback_received": "int",
        "incoming_bitrate_bps": "number",
        "max_incoming_bitrate_bps": "number?",
        "available_outgoing_bitrate_bps": "number?",
        "overuse_events": "int",
        "probe_clusters": "int",
        "probe_results": "int",
    },
    "producer": {
        "id": "str",
        "peer": "str",
        "peer_name": "str",
        "kind": "str",
        "codec": "str",
        "ssrc": "int?",
        "paused": "bool",
        "packets": "int",
        "bytes": "int",
        "bitrate_bps": "number",
        "packets_lost": "int",
        "fraction_lost": "number",
        "jitter_ms": "number",
        "rtt_ms": "number?",
        "nack_count": "int",
        "pli_count": "int",
        "fir_count": "int",
        "keyframes": "int",
        "consumers": "int",
        "score": "int",
        "audio_level_dbov": "int?",
    },
    "consumer": {
        "id": "str",
        "peer": "str",
        "peer_name": "str",
        "producer_id": "str",
        "producer_peer": "str",
        "producer_peer_name": "str",
        "kind": "str",
        "codec": "str",
        "ssrc": "int",
        "paused": "bool",
        "packets": "int",
        "bytes": "int",
        "bitrate_bps": "number",
        "packets_lost": "int",
        "fraction_lost": "number",
        "jitter_ms": "number",
        "rtt_ms": "number?",
        "nack_count": "int",
        "pli_count": "int",
        "fir_count": "int",
        "retransmitted": "int",
        "retransmissions_refused": "int",
        "reports_received": "int",
        "score": "int",
        "producer_score": "int",
    },
    "data_producer": {
        "id": "str",
        "peer": "str",
        "peer_name": "str",
        "label": "str",
        "stream_id": "int",
        "messages_in": "int",
        "bytes_in": "int",
        "dropped": "int",
        "dropped_oversize": "int",
        "dropped_rate": "int",
        "consumers": "int",
    },
    "data_consumer": {
        "id": "str",
        "peer": "str",
        "data_producer": "str",
        "label": "str",
        "stream_id": "int",
        "messages_out": "int",
        "bytes_out": "int",
        "dropped": "int",
    },
}
# Where arrays and objects lead: (parent object, field) -> the object type of the value or of its items.
CHILDREN: dict[tuple[str, str], str] = {
    ("snapshot", "server"): "server",
    ("snapshot", "rooms"): "room",
    ("server", "pipes"): "pipe",
    ("room", "peers"): "peer",
    ("room", "producers"): "producer",
    ("room", "consumers"): "consumer",
    ("room", "data_producers"): "data_producer",
    ("room", "data_consumers"): "data_consumer",
    ("peer", "transports"): "transport",
}
RANGES: dict[str, tuple[float, float]] = {
    "score": (0, MAX_SCORE),
    "producer_score": (0, MAX_SCORE),
    "fraction_lost": (0.0, 1.0),
}


def validate_snapshot(snapshot: Any) -> None:
    """Raise ValueError naming the first field that breaks the schema of docs/stats.md."""
    _validate(snapshot, "snapshot", "snapshot")
    if snapshot["version"] != SCHEMA_VERSION:
        raise ValueError(f"snapshot.version: this sfuctl reads version {SCHEMA_VERSION}, got {snapshot['version']}")


def _validate(value: Any, kind: str, path: str) -> None:
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected object, got {type(value).__name__}")
    for name, type_name in FIELDS[kind].items():
        where = f"{path}.{name}"
        if name not in value:
            raise ValueError(f"{where}: missing")
        field = value[name]
        nullable = type_name.endswith("?")
        type_name = type_name.rstrip("?")
        if field is None:
            if not nullable:
                raise ValueError(f"{where}: expected {type_name}, got null")
            continue
        if not _has_type(field, type_name):
            raise ValueError(f"{where}: expected {type_name}, got {type(field).__name__} {field!r}"[:200])
        if name in RANGES:
            low, high = RANGES[name]
            if not low <= field <= high:
                raise ValueError(f"{where}: {field} outside {low}..{high}")
        child = CHILDREN.get((kind, name))
        if child is not None:
            if type_name == "array":
                for index, item in enumerate(field):
                    _validate(item, child, f"{where}[{index}]")
            else:
                _validate(field, child, where)


def _has_type(value: Any, type_name: str) -> bool:
    if type_name == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if type_name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return isinstance(value, {"str": str, "bool": bool, "object": dict, "array": list}[type_name])
