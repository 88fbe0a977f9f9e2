"""When RTCP goes out and how much one packet carries: the rules both ends (server and bots) share.

Every constant here sets what a peer sees on the wire; docs/architecture.md lists them.
"""

from __future__ import annotations

# Due NACKs and keyframe requests are collected and sent this often (RFC 4585 allows early feedback at once;
# 20 ms keeps a NACK well inside a 100-200 ms retransmission window while bounding the work per tick).
TICK_INTERVAL = 0.02
# Receiver and sender reports (and bitrate samples) go out this often: RFC 3550's 5 s minimum reduced, as
# browsers do for media streams, so that loss and RTT figures follow the call within a second.
REPORT_INTERVAL = 1.0
# Sequence numbers per NACK packet: 64 need at most 64 PID/BLP pairs (268 bytes), well under the MTU.
NACK_BATCH = 64
# Report blocks per RR/SR: the 5-bit count field of the RTCP header (RFC 3550 6.4.1).
REPORT_BLOCKS_MAX = 31
# The server asks a publisher for a keyframe at most this often; requests in between merge into one.
KEYFRAME_MERGE_WINDOW = 0.5
# A keyframe still awaited (the request or the keyframe was lost) is asked for again this often; a bot asks
# for one no more often than this either.
KEYFRAME_RETRY_INTERVAL = 1.0


def batches(items: list, size: int) -> list[list]:
    """`items` cut into consecutive lists of at most `size`."""
    return [items[start : start + size] for start in range(0, len(items), size)]
