// Per-stream figures from RTCPeerConnection.getStats(), and bitrates from successive samples.

/** The inbound RTP streams of a receive connection: one entry per SSRC (jitter in seconds). */
export async function inboundStreams(pc) {
  const report = await pc.getStats();
  const midByTrack = new Map(pc.getTransceivers().map((t) => [t.receiver.track.id, t.mid]));
  const streams = [];
  report.forEach((s) => {
    if (s.type !== "inbound-rtp") return;
    streams.push({
      mid: s.mid ?? midByTrack.get(s.trackIdentifier) ?? null,
      kind: s.kind,
      ssrc: s.ssrc,
      codec: codecName(report, s.codecId),
      packetsReceived: s.packetsReceived ?? 0,
      packetsLost: s.packetsLost ?? 0,
      jitter: s.jitter ?? 0,
      bytesReceived: s.bytesReceived ?? 0,
      framesDecoded: s.framesDecoded ?? 0,
      frameWidth: s.frameWidth ?? 0,
      frameHeight: s.frameHeight ?? 0,
      framesPerSecond: s.framesPerSecond ?? 0,
      timestamp: s.timestamp,
    });
  });
  return streams;
}

/** The outbound RTP streams of a send connection, one entry per SSRC. */
export async function outboundStreams(pc) {
  const report = await pc.getStats();
  const streams = [];
  report.forEach((s) => {
    if (s.type !== "outbound-rtp") return;
    streams.push({
      kind: s.kind,
      ssrc: s.ssrc,
      codec: codecName(report, s.codecId),
      bytesSent: s.bytesSent ?? 0,
      frameWidth: s.frameWidth ?? 0,
      frameHeight: s.frameHeight ?? 0,
      framesPerSecond: s.framesPerSecond ?? 0,
      timestamp: s.timestamp,
    });
  });
  return streams;
}

function codecName(report, codecId) {
  const codec = codecId ? report.get(codecId) : null;
  return codec ? codec.mimeType.split("/")[1] : "";
}

/** Bits per second of each stream between two samples of its byte counter. */
export class BitrateMeter {
  constructor() {
    this.last = new Map(); // key -> {bytes, timestamp, bps}
  }

  /** Record `bytes` at `timestamp` (ms) for `key`; returns the rate since the previous sample (0 at first). */
  update(key, bytes, timestamp) {
    const previous = this.last.get(key);
    let bps = previous ? previous.bps : 0;
    if (previous && timestamp > previous.timestamp) {
      bps = (8 * (bytes - previous.bytes) * 1000) / (timestamp - previous.timestamp);
    }
    this.last.set(key, { bytes, timestamp, bps });
    return bps;
  }

  /** Forget every stream not in `keys` (streams come and go during a call). */
  retain(keys) {
    for (const key of [...this.last.keys()]) if (!keys.has(key)) this.last.delete(key);
  }

  /** The last rate computed for `key`, without taking a sample. */
  rate(key) {
    return this.last.get(key)?.bps ?? 0;
  }
}
