// One stay in a room (docs/protocol.md): a send connection for our camera and microphone, a receive
// connection with one recvonly transceiver per producer of the others, renegotiated with a full offer
// whenever producers come and go. Negotiations run one at a time. A "chat" data channel on the send
// connection becomes the server's data producer; the server opens a channel on the receive connection for each
// of the others' (dataConsumerAdded says whose). A camera of 540 lines or more is published as simulcast (three
// encodings, lowest first); each remote video tile's size is sent as setMaxSize, so the server forwards the
// smallest encoding that fills it.

import { Signaling, SignalingError } from "./signaling.js";
import { inboundStreams } from "./stats.js";

// Simulcast encodings, lowest first as the server reads them (docs/protocol.md, Simulcast): quarter, half, full.
const SIMULCAST_ENCODINGS = [
  { rid: "q", scaleResolutionDownBy: 4 },
  { rid: "h", scaleResolutionDownBy: 2 },
  { rid: "f" },
];
// The lowest camera height published as simulcast: its quarter encoding still has 135 lines.
const SIMULCAST_MIN_HEIGHT = 540;
// A tile's size goes to the server at most this often while it is being resized (the last size wins).
const VIEW_SIZE_DELAY_MS = 300;

export class Session {
  /**
   * url: the signaling websocket; token: an access token sent with join (null on an open server);
   * rtcConfig: RTCPeerConnection configuration (without iceServers, those of the join reply are used);
   * events: {peer(peer), peerLeft(peerId), track(peerId, track), trackEnded(peerId, track), chat(peerId, name, text),
   *          activeSpeaker(peerId or null), error(text), closed(reason), reconnect(reason): the server asks us to
   *          join again (its cluster node shuts down; another node takes the room)}.
   */
  constructor({ url, room, name, token, rtcConfig, events }) {
    this.url = url;
    this.room = room;
    this.name = name;
    this.token = token;
    this.rtcConfig = rtcConfig;
    this.events = events;
    this.signaling = null;
    this.peerId = null;
    this.peers = new Map(); // peerId -> {id, name}
    this.producers = new Map(); // producerId -> producer info, the others' only
    this.ownProducers = []; // this peer's producers {id, kind, paused}, once published
    this.subscriptions = new Map(); // mid -> {producer, transceiver}
    this.consumers = new Map(); // mid -> consumer info from the last subscribe
    this.unreceivable = new Set(); // producer ids the server rejected for us (no common codec)
    this.layers = new Map(); // consumer id -> spatial layer forwarded now (consumerLayersChanged)
    this.viewSizes = new Map(); // peer id -> {width, height} in device pixels of its tile
    this.viewTimers = new Map(); // peer id -> pending setMaxSize timer
    this.sendPc = null;
    this.recvPc = null;
    this.chatChannel = null;
    this.dataConsumers = new Map(); // stream id on the receive connection -> dataConsumerAdded params
    this.pendingData = new Map(); // stream id -> messages that came before their dataConsumerAdded
    this.queue = Promise.resolve();
    this.syncQueued = false;
    this.producersChanged = false;
    this.closed = false;
  }

  /** Connect, join, publish `localStream` (may be null: receive only) and subscribe to the room. */
  async join(localStream) {
    this.signaling = await Signaling.connect(
      this.url,
      (method, params) => this.notified(method, params),
      (reason) => this.lost(reason),
    );
    const request = { room: this.room, name: this.name };
    if (this.token) request.token = this.token; // in join, not the websocket URL: URLs end up in logs
    const joined = await this.signaling.request("join", request);
    this.peerId = joined.peerId;
    if (this.rtcConfig.iceServers.length === 0 && joined.iceServers) {
      this.rtcConfig = { ...this.rtcConfig, iceServers: joined.iceServers };
    }
    for (const peer of joined.peers) this.addPeer(peer);
    for (const producer of joined.producers) this.addProducer(producer);
    await this.enqueue(() => this.publish(localStream)).catch((error) => this.events.error(describe(error)));
    this.requestSync();
  }

  /** Leave the room and release both connections; the session cannot be used again. */
  async leave() {
    if (this.closed) return;
    this.closed = true;
    if (this.signaling) {
      try {
        await this.signaling.request("leave", {}, 2000);
      } catch {
        // Closing the websocket leaves the room as well.
      }
      this.signaling.close();
    }
    this.sendPc?.close();
    this.recvPc?.close();
  }

  /** Per remote stream: who sends it and what getStats() says about it (jitter in seconds). */
  /** The audio level (0..1) each audio receiver's source last sent (RFC 6464, getSynchronizationSources). */
  audioLevels() {
    if (!this.recvPc || this.closed) return [];
    return this.recvPc
      .getReceivers()
      .filter((receiver) => receiver.track?.kind === "audio")
      .map((receiver) => receiver.getSynchronizationSources()[0]?.audioLevel ?? null);
  }

  async streamStats() {
    if (!this.recvPc || this.closed) return [];
    const streams = await inboundStreams(this.recvPc);
    const result = [];
    for (const stream of streams) {
      const subscription = this.subscriptions.get(stream.mid);
      if (!subscription) continue;
      const producer = subscription.producer;
      const consumer = this.consumers.get(stream.mid);
      result.push({
        ...stream,
        peerId: producer.peerId,
        peerName: this.peers.get(producer.peerId)?.name ?? producer.peerName,
        producerId: producer.id,
        consumerId: consumer?.id ?? null,
        paused: producer.paused,
        spatialLayers: producer.spatialLayers ?? 1,
        layer: consumer ? (this.layers.get(consumer.id) ?? null) : null,
      });
    }
    return result;
  }

  // -- negotiation ------------------------------------------------------------------------------------
  enqueue(task) {
    const run = this.queue.then(task);
    this.queue = run.catch(() => {});
    return run;
  }

  requestSync() {
    this.producersChanged = true;
    if (this.syncQueued || this.closed) return;
    this.syncQueued = true;
    this.enqueue(async () => {
      this.syncQueued = false;
      this.producersChanged = false;
      await this.syncSubscriptions();
    }).catch((error) => {
      // A producer that closed while we asked for it: the notification has queued a fresh attempt.
      const raced = error instanceof SignalingError && error.code === "not_found" && this.producersChanged;
      if (!raced && !this.closed) this.events.error(`subscribing failed: ${describe(error)}`);
    });
  }

  /** Send one chat message to the room; false if the chat channel is not open (yet). */
  sendChat(text) {
    if (this.chatChannel?.readyState !== "open") return false;
    this.chatChannel.send(text);
    return true;
  }

  /** Publish `stream` (null: nothing to show) and the chat channel. */
  async publish(stream) {
    const pc = (this.sendPc = this.createPc("sending"));
    this.chatChannel = pc.createDataChannel("chat");
    for (const track of stream?.getTracks() ?? []) {
      const init = { direction: "sendonly", streams: [stream] };
      if (track.kind === "video" && (track.getSettings().height ?? 0) >= SIMULCAST_MIN_HEIGHT) {
        init.sendEncodings = SIMULCAST_ENCODINGS;
      }
      pc.addTransceiver(track, init);
    }
    await pc.setLocalDescription(await pc.createOffer());
    let result;
    try {
      result = await this.signaling.request("publish", { sdp: pc.localDescription.sdp });
    } catch (error) {
      throw new Error(`publishing failed: ${describe(error)}`);
    }
    await pc.setRemoteDescription({ type: "answer", sdp: result.sdp });
    this.ownProducers = result.producers;
  }

  /** Pause or resume this peer's producers of `kind` on the server: the others stop or resume receiving them. */
  async setPaused(kind, paused) {
    for (const producer of this.ownProducers.filter((p) => p.kind === kind)) {
      await this.signaling.request(paused ? "pauseProducer" : "resumeProducer", { producerId: producer.id });
      producer.paused = paused;
    }
  }

  /**
   * Make the receive connection carry exactly the others' current producers (one full offer). A transceiver
   * whose producer closed turns inactive and serves the next producer of its kind: stopping them instead would
   * close the connection's transport once none is left, and the server would take that as us leaving.
   */
  async syncSubscriptions() {
    if (this.closed) return;
    let changed = false;
    if (!this.recvPc) {
      this.recvPc = this.createPc("receiving");
      this.recvPc.ontrack = (event) => this.trackArrived(event);
      // Only for the m=application section: the server opens the channels that carry the others' messages.
      this.recvPc.createDataChannel("sfuctl", { negotiated: true, id: 0 });
      this.recvPc.ondatachannel = (event) => {
        const channel = event.channel;
        channel.onmessage = (message) => this.dataArrived(channel.id, message.data);
      };
      changed = true;
    }
    const pc = this.recvPc;
    for (const [mid, subscription] of this.subscriptions) {
      if (this.wanted(subscription.producer)) continue;
      this.subscriptions.delete(mid);
      this.consumers.delete(mid);
      subscription.transceiver.direction = "inactive";
      this.events.trackEnded(subscription.producer.peerId, subscription.transceiver.receiver.track);
      changed = true;
    }
    const subscribed = new Set([...this.subscriptions.values()].map((s) => s.producer.id));
    const idle = pc.getTransceivers().filter((t) => t.direction === "inactive" && !t.stopped);
    const added = [];
    for (const producer of this.producers.values()) {
      if (subscribed.has(producer.id) || !this.wanted(producer)) continue;
      const index = idle.findIndex((t) => t.receiver.track.kind === producer.kind);
      const reused = index >= 0 ? idle.splice(index, 1)[0] : null;
      if (reused) reused.direction = "recvonly";
      const transceiver = reused ?? pc.addTransceiver(producer.kind, { direction: "recvonly" });
      added.push({ producer, transceiver, reused: Boolean(reused) });
      changed = true;
    }
    if (!changed) return;
    await pc.setLocalDescription(await pc.createOffer());
    for (const subscription of added) this.subscriptions.set(subscription.transceiver.mid, subscription);
    const map = {};
    for (const [mid, subscription] of this.subscriptions) map[mid] = subscription.producer.id;
    let result;
    try {
      result = await this.signaling.request("subscribe", { sdp: pc.localDescription.sdp, subscriptions: map });
    } catch (error) {
      for (const { transceiver } of added) this.subscriptions.delete(transceiver.mid);
      await pc.setLocalDescription({ type: "rollback" });
      for (const { transceiver, reused } of added) {
        if (reused) transceiver.direction = "inactive";
        else transceiver.stop(); // never negotiated: it leaves no trace
      }
      throw error;
    }
    await pc.setRemoteDescription({ type: "answer", sdp: result.sdp });
    const known = new Set([...this.consumers.values()].map((c) => c.id));
    this.consumers = new Map(result.consumers.map((c) => [c.mid, c]));
    const current = new Set(result.consumers.map((c) => c.id));
    for (const consumerId of this.layers.keys()) if (!current.has(consumerId)) this.layers.delete(consumerId);
    const fresh = result.consumers.filter((c) => !known.has(c.id)); // the others already have their tile's size
    for (const peerId of this.viewSizes.keys()) this.sendViewSize(peerId, fresh);
    for (const rejected of result.rejected) {
      this.unreceivable.add(rejected.producerId);
      const producer = this.producers.get(rejected.producerId);
      const who = producer ? `${this.peers.get(producer.peerId)?.name ?? producer.peerName}'s ${producer.kind}` : rejected.producerId;
      this.events.error(`cannot receive ${who}: ${rejected.reason}`);
    }
    if (result.rejected.length) this.requestSync(); // free their transceivers
  }

  /** The tile of `peerId` is `width` x `height` device pixels: ask for the encoding that fills it. */
  setViewSize(peerId, width, height) {
    this.viewSizes.set(peerId, { width: Math.max(1, Math.round(width)), height: Math.max(1, Math.round(height)) });
    if (this.viewTimers.has(peerId)) return;
    this.viewTimers.set(
      peerId,
      setTimeout(() => {
        this.viewTimers.delete(peerId);
        this.sendViewSize(peerId);
      }, VIEW_SIZE_DELAY_MS),
    );
  }

  /** Send `peerId`'s tile size to its simulcast video consumers (all of them, or those in `consumers`). */
  sendViewSize(peerId, consumers = this.consumers.values()) {
    const size = this.viewSizes.get(peerId);
    if (!size || this.closed) return;
    for (const consumer of consumers) {
      const producer = this.producers.get(consumer.producerId);
      if (consumer.kind !== "video" || producer?.peerId !== peerId || (producer.spatialLayers ?? 1) < 2) continue;
      this.signaling
        .request("setMaxSize", { consumerId: consumer.id, width: size.width, height: size.height })
        .catch((error) => {
          if (!this.closed) console.warn("sfuctl: setMaxSize", describe(error));
        });
    }
  }

  dataArrived(streamId, data) {
    const consumer = this.dataConsumers.get(streamId);
    if (!consumer) {
      if (!this.pendingData.has(streamId)) this.pendingData.set(streamId, []);
      this.pendingData.get(streamId).push(data);
      return;
    }
    if (consumer.label !== "chat" || typeof data !== "string") return;
    this.events.chat(consumer.peerId, this.peers.get(consumer.peerId)?.name ?? "anonymous", data);
  }

  wanted(producer) {
    return this.producers.has(producer.id) && !this.unreceivable.has(producer.id);
  }

  trackArrived(event) {
    const subscription = this.subscriptions.get(event.transceiver.mid);
    if (subscription) this.events.track(subscription.producer.peerId, event.track);
  }

  createPc(purpose) {
    const pc = new RTCPeerConnection(this.rtcConfig);
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === "failed" && !this.closed) {
        this.events.error(
          `the ${purpose} media connection failed (ICE/DTLS): is the server's --announced-ip reachable from this browser?`,
        );
      }
    };
    return pc;
  }

  // -- notifications ----------------------------------------------------------------------------------
  notified(method, params) {
    if (this.closed) return;
    switch (method) {
      case "peerJoined":
        this.addPeer(params.peer);
        break;
      case "closed": // e.g. duplicate_identity: the same identity joined from elsewhere
        this.lost(`the server closed the session: ${params.code} (${params.message})`);
        break;
      case "reconnect":
        this.events.reconnect(params.message || "the server asked to reconnect");
        break;
      case "peerLeft":
        this.removePeer(params.peerId);
        break;
      case "peersChanged": // a room of more than 100 peers: the joins and leaves of the last second at once
        for (const peer of params.joined) this.addPeer(peer);
        for (const peerId of params.left) this.removePeer(peerId);
        break;
      case "producerAdded":
        this.addProducer(params.producer);
        this.requestSync();
        break;
      case "producerClosed":
        this.producers.delete(params.producerId);
        this.requestSync();
        break;
      case "producerPaused":
      case "producerResumed": {
        const producer = this.producers.get(params.producerId);
        if (producer) producer.paused = method === "producerPaused";
        break;
      }
      case "dataConsumerAdded": {
        this.dataConsumers.set(params.streamId, params);
        const pending = this.pendingData.get(params.streamId) ?? [];
        this.pendingData.delete(params.streamId);
        for (const data of pending) this.dataArrived(params.streamId, data);
        break;
      }
      case "activeSpeaker":
        this.events.activeSpeaker(params.peerId);
        break;
      case "consumerLayersChanged":
        this.layers.set(params.consumerId, params.spatialLayer);
        break;
      case "dataConsumerClosed":
        for (const [streamId, consumer] of this.dataConsumers) {
          if (consumer.id === params.dataConsumerId) this.dataConsumers.delete(streamId);
        }
        break;
      default: // consumerClosed follows producerClosed, which already renegotiates; others are not for us.
        break;
    }
  }

  addPeer(peer) {
    this.peers.set(peer.id, peer);
    this.events.peer(peer);
  }

  /** A peer left: its producers go with it (the next sync closes their consumers). */
  removePeer(peerId) {
    for (const producer of [...this.producers.values()]) {
      if (producer.peerId === peerId) this.producers.delete(producer.id);
    }
    this.peers.delete(peerId);
    this.viewSizes.delete(peerId);
    clearTimeout(this.viewTimers.get(peerId));
    this.viewTimers.delete(peerId);
    this.requestSync();
    this.events.peerLeft(peerId);
  }

  addProducer(producer) {
    if (producer.peerId === this.peerId) return;
    this.producers.set(producer.id, producer);
    if (!this.peers.has(producer.peerId)) this.addPeer({ id: producer.peerId, name: producer.peerName });
  }

  lost(reason) {
    if (this.closed) return;
    this.closed = true;
    this.sendPc?.close();
    this.recvPc?.close();
    this.events.closed(reason);
  }
}

/** A readable one-line reason for an error of any origin. */
export function describe(error) {
  if (error instanceof SignalingError) return error.message;
  if (error?.name && error.name !== "Error") return `${error.name}: ${error.message}`;
  return error?.message || String(error);
}
