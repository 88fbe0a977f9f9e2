"""Transport: the server end of one peer's ICE + DTLS + SRTP connection.

It owns the Connection (the media plane) and routes what comes out of it: RTP to producers by SSRC, RTCP
through its RtcpRouter to the producers' and consumers' RTCP units it names. Replacing the media plane means replacing Connection.
"""

from __future__ import annotations

import logging
import random
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Callable, Protocol

from ..rtc import rtcp
from ..rtc.arrival_recorder import ArrivalRecorder
from ..rtc.bandwidth_estimator import BandwidthEstimator
from ..rtc.connection import Connection
from ..rtc.dcep import ChannelParameters
from ..rtc.ice import IceParameters
from ..rtc.rtcp_router import RtcpRouter, receiver_reports
from ..rtc.sctp import SctpAssociation
from ..rtc.rtp import read_extensions
from ..rtc.prober import Prober
from ..rtc.sdp import MID_URI, Codec, MediaAnswer, MediaOffer, TransportOffer, build_answer, dtls_role_for
from ..rtc.send_history import SendHistory
from ..rtc.transport_feedback import TransportFeedback, packet_sequence
from .errors import bad_request
from .feedback_estimate import FeedbackEstimate
from .layer_allocation import LayerAllocation
from .simulcast_producer import SimulcastProducer
from .ice_tcp import TcpAddress

# A REMB packet names at most this many SSRCs (its count is one byte).
MAX_REMB_SSRCS = 255

if TYPE_CHECKING:
    from .consumer import Consumer
    from .data_consumer import DataConsumer
    from .data_producer import DataProducer
    from .producer import Producer
    from .worker import Worker

log = logging.getLogger(__name__)

# Remote ICE ufrags remembered per transport, so that a restart back to old credentials is refused.
OLD_UFRAGS_KEPT = 8


class DataEvents(Protocol):
    """What a transport tells its owner about data channels (the owner decides what they become)."""

    def on_data_open(self, transport: Transport) -> None: ...

    def on_data_channel(self, transport: Transport, stream_id: int, parameters: ChannelParameters) -> None: ...

    def on_data_channel_closed(self, transport: Transport, stream_id: int) -> None: ...


class Transport:
    """One ICE/DTLS/SRTP association; holds the producers it receives and the consumers it sends."""

    def __init__(
        self, *, id: str, worker: Worker, cname: str, on_closed: Callable[[Transport, str], None], data_events: DataEvents | None = None
    ) -> None:
        self.id = id
        self.worker = worker
        self.cname = cname
        self.rtcp_ssrc = random.randint(1, 0xFFFFFFFF)
        self.connected = False
        self.closed = False
        self.rtcp_router = RtcpRouter()
        self._sdes = bytes(rtcp.Sdes(self.rtcp_ssrc, cname))  # the SDES closing each of its RRs
        self.producers: dict[int, Producer] = {}  # by SSRC: a simulcast producer's encodings are here one by one
        self.producers_by_mid: dict[str, Producer | SimulcastProducer] = {}
        self.consumers: dict[int, Consumer] = {}
        self.consumers_by_mid: dict[str, Consumer] = {}
        # Data channels, when the offer had an m=application section: routed by SCTP stream id.
        self.sctp: SctpAssociation | None = None
        self.data_producers: dict[int, DataProducer] = {}
        self.data_consumers: dict[int, DataConsumer] = {}
        self.data_ignored = 0
        self._data_events = data_events
        self._sctp_remote: tuple[int, int] = (0, 0)
        self._remote_ice: IceParameters | None = None
        self._old_remote_ufrags: deque[str] = deque(maxlen=OLD_UFRAGS_KEPT)
        self.mids: tuple[str, ...] = ()  # the offered m-lines it carries (its BUNDLE group, or one m-line)
        self.bundle_tag: tuple[str, str, int] | None = None  # (kind, mid, payload type) of its first accepted m-line
        self.ice_restarts = 0
        self.setup = "passive"  # the answer's a=setup for its m-lines
        self._mid_extension_id: int | None = None
        self.allocation: LayerAllocation | None = None  # made with the first simulcast consumer
        # Transport-wide congestion control, receive side: set once the peer sends transport-cc sequences.
        self.arrivals: ArrivalRecorder | None = None
        self._transport_cc_id = 0
        # Send side: set once a consumer stamps transport-wide sequences (the peer negotiated transport-cc).
        self.history: SendHistory | None = None
        self.estimator: BandwidthEstimator | None = None
        self.prober: Prober | None = None  # padding-only probe clusters on the transport's own probe SSRC
        self._probes_as_video = False  # the probes have a video consumer's payload type
        # What arrived from the peer over the last report interval (a publisher's send estimate at work).
        self.incoming_bitrate_bps = 0.0
        self._received_mark: tuple[float, int] | None = None  # (time, bytes received) at the last report
        self.transport_feedback_received = 0
        self._session_id = random.randint(1, 2**62)
        self._on_closed = on_closed
        self.connection = Connection(
            role="lite",
            certificate=worker.certificate,
            send=worker.sender(),
            send_srtp=worker.srtp_sender(),
            on_rtp=self._on_rtp,
            on_rtcp=self.rtcp_router.route,
            on_state=self._on_state,
            consent_timeout=worker.config.consent_timeout,
        )
        worker.register(self)

    @property
    def invalid_rtcp(self) -> int:
        """RTCP datagrams that did not parse."""
        return self.rtcp_router.invalid

    @property
    def state(self) -> str:
        return self.connection.state

    # -- negotiation ----------------------------------------------------------------------------------
    @property
    def remote_ice(self) -> IceParameters | None:
        """The peer's current ICE credentials (None before its first offer)."""
        return self._remote_ice

    def apply_offer(self, offer: TransportOffer, application: MediaOffer | None = None) -> None:
        """Start ICE/DTLS on the first offer; an offer with new ICE credentials restarts ICE. `offer` is the part of
        a client's offer this transport carries; `application` its m=application section (data channels), if any."""
        self.check_offer(offer)
        if self._remote_ice is None:
            role = dtls_role_for(offer.setup)
            self.connection.set_remote(offer.ice, offer.fingerprints, role)  # first: it raises before changing state
            self._remote_ice = offer.ice
            self.setup = "active" if role == "client" else "passive"
        elif offer.ice != self._remote_ice:
            self.restart_ice(offer.ice)
        self.mids = offer.mids
        events = self._data_events
        if application is not None and self.sctp is None and events is not None:
            self.sctp = SctpAssociation(
                self.connection,
                on_open=lambda: events.on_data_open(self),
                on_channel=lambda stream_id, p: events.on_data_channel(self, stream_id, p),
                on_message=self._on_data_message,
                on_channel_closed=lambda stream_id: events.on_data_channel_closed(self, stream_id),
            )
            # RFC 8841: a=max-message-size absent means 64 KiB; 0 means no limit.
            remote_max = application.max_message_size if application.max_message_size is not None else 65536
            self._sctp_remote = (application.sctp_port or 5000, remote_max)
            if self.connected:
                self.sctp.start(*self._sctp_remote)

    def check_offer(self, offer: TransportOffer) -> None:
        """Raise before anything changes if the offer cannot apply to this transport."""
        self.check_ice_restart(offer.ice)

    def check_ice_restart(self, remote: IceParameters) -> None:
        """Raise (bad_request) unless `remote` keeps the current credentials or is a valid ICE restart."""
        current = self._remote_ice
        if current is None or remote == current:
            return
        if remote.ufrag == current.ufrag:
            raise bad_request("a=ice-pwd changed but a=ice-ufrag did not: an ICE restart changes both (RFC 8839)")
        if remote.ufrag in self._old_remote_ufrags:
            raise bad_request("ICE restart with credentials this connection used before: a restart takes new ones")
        if self.connection.state != "connected":
            raise bad_request(f"ICE restart before the connection is up (it is {self.connection.state})")

    def restart_ice(self, remote: IceParameters) -> None:
        """New ICE credentials on both sides (the next answer carries ours); DTLS, SRTP, producers and
        consumers carry on, and media moves to the first address that checks with the new credentials."""
        self.check_ice_restart(remote)
        assert self._remote_ice is not None
        old_ufrag = self.connection.local_ice.ufrag
        self.connection.restart_ice()
        self._old_remote_ufrags.append(self._remote_ice.ufrag)
        self._remote_ice = remote
        self.ice_restarts += 1
        self.worker.rekey(self, old_ufrag)
        log.info("transport %s: ICE restarted", self.id)

    def answered(self, media: list[MediaAnswer]) -> None:
        """Take note of an answer: this transport's first accepted m-line is its tag (ICE restarts answer under it)."""
        accepted = next((m for m in media if m.codec is not None and m.offer.mid in self.mids), None)
        if accepted is not None:
            self.bundle_tag = (accepted.offer.kind, accepted.offer.mid, accepted.codec.payload_type)

    def answer(self, media: list[MediaAnswer], bundle: tuple[str, ...] | None) -> str:
        """The answer SDP, with this transport's ICE credentials and setup at session level (an m-line on another
        transport names its own in MediaAnswer.transport); `bundle` is the offer's BUNDLE group."""
        return build_answer(
            session_id=self._session_id,
            ice=self.connection.local_ice,
            fingerprint=self.connection.local_fingerprint,
            candidate=self.worker.host_candidates,
            setup=self.setup,
            media=media,
            bundle=bundle,
        )

    def add_producer(self, producer: Producer | SimulcastProducer, mid_extension_id: int | None) -> None:
        self.producers_by_mid[producer.mid] = producer
        for stream in producer.receive_streams():
            if stream.ssrc is not None:
                self._route_stream(stream)
        if mid_extension_id is not None:
            self._mid_extension_id = mid_extension_id
        producer.on_close.add(self._on_producer_closed)

    def record_arrivals(self, extension_id: int) -> None:
        """The peer stamps transport-wide sequences with header extension `extension_id` (negotiated on an m-line
        it sends): record every packet's arrival and send transport feedback (the worker ticks this transport)."""
        self._transport_cc_id = extension_id
        if self.arrivals is None:
            self.arrivals = ArrivalRecorder(self.rtcp_ssrc)
            self.worker.congestion_due(self)

    def send_history(self, transport_cc_id: int, codec: Codec) -> SendHistory:
        """The transport-wide sequence and send times shared by the consumers that stamp them (the peer
        negotiated transport-cc, header extension `transport_cc_id`, on their m-lines, with `codec`); its feedback
        drives this transport's bandwidth estimate. Its probes go with the payload type of the first video codec
        (of an audio one until a video consumer comes): probes make room for video, and a receiver may drop
        padding of an audio payload type, or feed it to its audio jitter buffer."""
        video = codec.mime_type.startswith("video/")
        if self.history is None:
            self.history = SendHistory()
            self.estimator = BandwidthEstimator()
            self.prober = Prober(codec.payload_type, transport_cc_id, self.history, self.connection.send_rtp)
            self.rtcp_router.on_transport_feedback = self._on_transport_feedback
            self.worker.congestion_due(self)  # the initial probe clusters, paced from the tick
        elif video and not self._probes_as_video and self.prober is not None:
            self.prober.payload_type = codec.payload_type
        self._probes_as_video = self._probes_as_video or video
        return self.history

    @property
    def probe_ssrc(self) -> int | None:
        """The SSRC of the probe packets (None without transport-cc towards the peer)."""
        return self.prober.ssrc if self.prober is not None else None

    def _on_transport_feedback(self, feedback: TransportFeedback, now: float) -> None:
        if self.history is None or self.estimator is None:
            return
        self.transport_feedback_received += 1
        self.estimator.on_feedback(self.history.on_feedback(feedback, now), now)
        if self.estimator.probe.active:  # a result asks for further probing, paced from the tick
            self.worker.congestion_due(self)
        path_rtt = self.estimator.feedback_rtt
        for consumer in self.consumers.values():  # no retransmission while the previous copy may be queued
            consumer.rtcp.path_rtt = path_rtt

    @property
    def available_outgoing_bitrate_bps(self) -> float | None:
        """The bandwidth estimate towards the peer (None without transport-cc)."""
        return self.estimator.available_bps if self.estimator is not None else None

    def _on_producer_closed(self, producer: Producer | SimulcastProducer) -> None:
        if self.producers_by_mid.get(producer.mid) is producer:
            del self.producers_by_mid[producer.mid]
        for stream in producer.receive_streams():
            if stream.ssrc is not None and self.producers.get(stream.ssrc) is stream:
                del self.producers[stream.ssrc]
                self.rtcp_router.remove_receiving(stream.ssrc, stream.rtcp)

    def add_consumer(self, consumer: Consumer) -> None:
        self.consumers[consumer.ssrc] = consumer
        self.consumers_by_mid[consumer.mid] = consumer
        self.rtcp_router.add_sending(consumer.ssrc, consumer.rtcp)
        consumer.on_close.add(self._on_consumer_closed)
        if self.allocation is None and isinstance(consumer.producer, SimulcastProducer):
            estimate = None
            if self.estimator is not None and self.prober is not None:
                estimate = FeedbackEstimate(self.estimator, self.prober.send)
            self.allocation = LayerAllocation(self.consumers, estimate)
            self.rtcp_router.on_remb = self.allocation.on_remb
        if self.connected:
            consumer.on_transport_connected(time.monotonic())

    def _on_consumer_closed(self, consumer: Consumer) -> None:
        if self.consumers.get(consumer.ssrc) is consumer:
            del self.consumers[consumer.ssrc]
            self.rtcp_router.remove_sending(consumer.ssrc, consumer.rtcp)
        if self.consumers_by_mid.get(consumer.mid) is consumer:
            del self.consumers_by_mid[consumer.mid]

    # -- media plane callbacks --------------------------------------------------------------------------
    def _on_data_message(self, stream_id: int, ppid: int, payload: bytes) -> None:
        producer = self.data_producers.get(stream_id)
        if producer is None:
            self.data_ignored += 1  # e.g. a message sent back on a channel the server opened
            return
        producer.receive(ppid, payload, time.monotonic())

    def _on_rtp(self, data: bytes) -> None:
        now = time.monotonic()
        arrivals = self.arrivals
        if arrivals is not None:  # every packet counts, whatever its SSRC (retransmissions, padding, probes)
            sequence = packet_sequence(data, self._transport_cc_id)
            if sequence >= 0:
                arrivals.record(sequence, now)
        producer = self.producers.get(int.from_bytes(data[8:12], "big"))
        if producer is None:
            producer = self._learn_ssrc(data)
            if producer is None:
                return
        producer.receive(data, now)

    def _learn_ssrc(self, data: bytes) -> Producer | None:
        """Bind an unsignaled SSRC to its producer (slow path): by the MID header extension (a simulcast producer's
        encoding by the RID one), else by payload type when exactly one plain producer without an SSRC has it (an
        offer written before its sender knew its SSRC)."""
        unbound = [p for p in self.producers_by_mid.values() if any(s.ssrc is None for s in p.receive_streams())]
        if not unbound:
            return None
        extensions: dict[int, bytes] = {}
        if self._mid_extension_id is not None:
            try:
                extensions = read_extensions(data)
            except ValueError:
                return None
        mid = extensions.get(self._mid_extension_id) if self._mid_extension_id is not None else None
        producer = self.producers_by_mid.get(mid.decode(errors="replace")) if mid else None
        if producer is None:
            payload_type = data[1] & 0x7F
            matching = [p for p in unbound if not isinstance(p, SimulcastProducer) and p.codec.payload_type == payload_type]
            producer = matching[0] if len(matching) == 1 else None
        ssrc = int.from_bytes(data[8:12], "big")
        stream: Producer | None = None
        if isinstance(producer, SimulcastProducer):
            rid_id = producer.rid_extension_id
            stream = producer.layer_for(ssrc, extensions.get(rid_id) if rid_id is not None else None)
        elif producer is not None and producer.ssrc is None:
            producer.ssrc = ssrc
            stream = producer
        if stream is None:
            return None
        self._route_stream(stream)
        return stream

    def _route_stream(self, stream: Producer) -> None:
        """Packets and SRs of a known SSRC go to its (encoding's) Producer; an SSRC it had before (a publisher
        that restarted an encoding) no longer does. Runs once per new SSRC, so the scan costs nothing per packet."""
        assert stream.ssrc is not None
        for old in [ssrc for ssrc, routed in self.producers.items() if routed is stream and ssrc != stream.ssrc]:
            del self.producers[old]
            self.rtcp_router.remove_receiving(old, stream.rtcp)
        self.producers[stream.ssrc] = stream
        self.rtcp_router.add_receiving(stream.ssrc, stream.rtcp)

    def _on_state(self, state: str) -> None:
        log.debug("transport %s: %s", self.id, state)
        if state == "connected":
            self.connected = True
            if self.sctp is not None:
                self.sctp.start(*self._sctp_remote)
            now = time.monotonic()
            for consumer in list(self.consumers.values()):
                consumer.on_transport_connected(now)
        elif state in ("failed", "closed") and not self.closed:
            self._on_closed(self, state)

    # -- periodic work --------------------------------------------------------------------------------
    def send_rtcp(self, packet: bytes) -> None:
        self.connection.send_rtcp(packet)

    def congestion_tick(self, now: float) -> bool:
        """Every tick while transport-wide congestion control has work per tick: the probe clusters and the
        transport feedback that are due. False once there is none (no feedback to send, no probing under way)."""
        if not self.connected:
            return True
        estimator = self.estimator
        if estimator is not None and self.prober is not None:
            self.prober.send(estimator.probes(now))
        arrivals = self.arrivals
        if arrivals is None:
            return estimator is not None and estimator.probe.active
        if not arrivals.media_ssrc and self.producers:
            arrivals.media_ssrc = next(iter(self.producers))
        for packet in arrivals.feedback(now):
            self.send_rtcp(packet)
        return True

    def feedback_due(self, producer: Producer) -> None:
        """A producer of this transport has NACKs or keyframe requests pending: the worker ticks it."""
        self.worker.feedback_due(producer)

    def report(self, now: float) -> None:
        """Once per interval: RR for the producers, SR for each consumer, bitrate samples and producer scores."""
        self._sample_incoming(now)
        if self.connected:
            streams = [stream for producer in self.producers_by_mid.values() for stream in producer.receive_streams()]
            send_reports(now, self.rtcp_ssrc, self._sdes, streams, self.consumers.values(), self.send_rtcp)
            cap = self.worker.config.max_incoming_bitrate
            if cap is not None and self.producers:  # the publisher's cap, with REMB (serve --max-incoming-bitrate)
                self.send_rtcp(bytes(rtcp.Remb(self.rtcp_ssrc, cap, list(self.producers)[:MAX_REMB_SSRCS])))
            if self.estimator is not None:  # the path's RTT, from the peer's receiver reports
                rtts = [c.rtcp.rtt_ms for c in self.consumers.values() if c.rtcp.rtt_ms is not None]
                if rtts:
                    self.estimator.on_rtt(min(rtts) / 1000)
            if self.allocation is not None:
                self.allocation.run(now)
            for producer in self.producers_by_mid.values():
                if isinstance(producer, SimulcastProducer):
                    producer.update_demand(now)

    def _sample_incoming(self, now: float) -> None:
        received, mark = self.connection.bytes_received, self._received_mark
        if mark is not None and now > mark[0]:
            self.incoming_bitrate_bps = (received - mark[1]) * 8 / (now - mark[0])
        self._received_mark = (now, received)

    def close(self) -> None:
        """Idempotent: stop the connection and forget the routes (producers/consumers are closed by the peer)."""
        if self.closed:
            return
        self.closed = True
        self.connected = False
        self.worker.unregister(self)
        if self.sctp is not None:
            self.sctp.close()
        if self.prober is not None:
            self.prober.close()
        self.connection.close()

    def stats(self) -> dict:
        c = self.connection
        ice_state, dtls_state = ice_dtls_states(c.state, c.remote_addr is not None, c.srtp_profile is not None)
        return {
            "id": self.id,
            "state": c.state,
            "ice_state": ice_state,
            "dtls_state": dtls_state,
            "srtp_profile": c.srtp_profile,
            "remote_address": f"{c.remote_addr[0]}:{c.remote_addr[1]}" if c.remote_addr else None,
            "ice_protocol": ("tcp" if c.remote_addr.__class__ is TcpAddress else "udp") if c.remote_addr else None,
            "producers": len(self.producers_by_mid),
            "consumers": len(self.consumers_by_mid),
            "bytes_received": c.bytes_received,
            "bytes_sent": c.bytes_sent,
            "packets_received": c.packets_received,
            "packets_sent": c.packets_sent,
            "srtp_errors": c.srtp_errors,
            "invalid_rtcp": self.invalid_rtcp,
            "sctp_state": self.sctp.state if self.sctp is not None else None,
            "data_channels": len(self.sctp.streams) if self.sctp is not None else 0,
            "data_invalid": (self.sctp.invalid_messages + self.sctp.errors + self.data_ignored) if self.sctp is not None else 0,
            "transport_cc_packets": self.arrivals.packets if self.arrivals is not None else 0,
            "transport_feedback_sent": self.arrivals.feedback_packets if self.arrivals is not None else 0,
            "transport_feedback_received": self.transport_feedback_received,
            "incoming_bitrate_bps": round(self.incoming_bitrate_bps),
            "max_incoming_bitrate_bps": self.worker.config.max_incoming_bitrate if self.producers else None,
            **estimator_stats(self.estimator),
        }


def send_reports(
    now: float,
    rtcp_ssrc: int,
    sdes: bytes,
    producers: Iterable[Producer],
    consumers: Iterable[Consumer],
    send_rtcp: Callable[[bytes], None],
) -> None:
    """One report interval of a transport: bitrate samples and scores, RRs for `producers`, an SR per consumer."""
    blocks = []
    for producer in producers:
        producer.meter.sample(now)
        producer.update_quality()
        block = producer.report_block(now)
        if block is not None:
            blocks.append(block)
    for packet in receiver_reports(rtcp_ssrc, blocks, sdes):
        send_rtcp(packet)
    for consumer in consumers:
        consumer.meter.sample(now)
        report = consumer.sender_report(now)
        if report is not None:
            send_rtcp(report)


def estimator_stats(estimator: BandwidthEstimator | None) -> dict:
    """The send-side estimate's figures in a transport's stats (nulls and zeros without transport-cc)."""
    if estimator is None:
        return {"available_outgoing_bitrate_bps": None, "overuse_events": 0, "probe_clusters": 0, "probe_results": 0}
    figures = estimator.stats()
    return {key: figures[key] for key in ("available_outgoing_bitrate_bps", "overuse_events", "probe_clusters", "probe_results")}


def ice_dtls_states(state: str, ice_selected: bool, srtp_ready: bool) -> tuple[str, str]:
    """ICE and DTLS states from a connection's combined state, its selected pair and its SRTP keys."""
    if state in ("closed", "failed"):
        return state, state
    if state == "new":
        return "new", "new"
    if not ice_selected:
        return "checking", "new"
    return "connected", "connected" if srtp_ready else "connecting"
