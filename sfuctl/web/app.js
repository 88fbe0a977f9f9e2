// The page: a join form, the tiles, errors, a stats overlay refreshed every second, and hooks for tests
// (window.sfuctl). URL parameters: room, name, token (an access token, docs/security.md), autojoin=1,
// ice=URL[,URL...] (+ iceUser, icePass), relay=1 (TURN only).

import { Session, describe } from "./session.js";
import { BitrateMeter, outboundStreams } from "./stats.js";
import { Tiles } from "./tiles.js";

const STATS_INTERVAL_MS = 1000;
const MEDIA_CONSTRAINTS = {
  audio: true,
  // 720p when the camera has it: published as simulcast (session.js), so each viewer gets what fits its tile.
  video: { width: { ideal: 1280 }, height: { ideal: 720 }, frameRate: { ideal: 25 } },
};

const params = new URLSearchParams(location.search);
const form = document.getElementById("join-form");
const roomInput = document.getElementById("room");
const nameInput = document.getElementById("name");
const tokenInput = document.getElementById("token");
const joinButton = document.getElementById("join");
const leaveButton = document.getElementById("leave");
const statusLine = document.getElementById("status");
const muteButtons = { audio: document.getElementById("mute-audio"), video: document.getElementById("mute-video") };
const statsButton = document.getElementById("toggle-stats");
const emptyState = document.getElementById("empty");
const errorList = document.getElementById("errors");
const tiles = new Tiles(document.getElementById("tiles"), (peerId, width, height) =>
  app.session?.setViewSize(peerId, width, height),
);
const chatLog = document.getElementById("chat-log");
const chatInput = document.getElementById("chat-input");
const chatSend = document.getElementById("chat-send");
const meter = new BitrateMeter();

const REJOIN_FIRST_DELAY_MS = 250; // first wait before joining again after `reconnect` (doubling, +-50% jitter)
const REJOIN_MAX_DELAY_MS = 5000; // longest wait between attempts
const REJOIN_ATTEMPTS = 8; // then the page stays out, the last error shown
const app = { state: "idle", session: null, localStream: null, errors: [], messages: [], activeSpeaker: null };

function setState(state, text) {
  app.state = state;
  document.body.dataset.state = state;
  statusLine.textContent = text;
  const idle = state === "idle";
  joinButton.disabled = !idle;
  roomInput.disabled = nameInput.disabled = tokenInput.disabled = !idle;
  leaveButton.disabled = state !== "joined";
  chatInput.disabled = chatSend.disabled = state !== "joined";
  for (const [kind, button] of Object.entries(muteButtons)) {
    button.disabled = state !== "joined" || !app.localStream?.getTracks().some((t) => t.kind === kind);
    if (idle) setPressed(button, false);
  }
  showEmptyState();
}

/** What to do when there is nothing to see: before joining, and alone in a room. */
function showEmptyState() {
  const room = roomInput.value.trim() || "ROOM";
  const bots = `sfuctl bots --url ${signalingUrl()} --room ${room} --count 3`;
  if (app.state === "idle") {
    emptyState.replaceChildren("Pick a room and your name, then Join. Anyone who opens the same address joins " +
      "the same room; to have someone to talk to, run ", code(bots), ".");
  } else if (app.state === "joined" && tiles.tiles.size <= 1) {
    emptyState.replaceChildren(`Nobody else is in room ${room} yet. Share this page's address (it names the room), ` +
      "or add test peers: ", code(bots), ".");
  } else {
    emptyState.replaceChildren();
  }
}

function code(text) {
  const node = document.createElement("code");
  node.textContent = text;
  return node;
}

function setPressed(button, pressed) {
  button.setAttribute("aria-pressed", String(pressed));
}

/** Mute the microphone or turn the camera off: the producer pauses on the server and the local track stops. */
async function toggleMute(kind) {
  const button = muteButtons[kind];
  const paused = button.getAttribute("aria-pressed") !== "true";
  button.disabled = true;
  try {
    await app.session?.setPaused(kind, paused);
    for (const track of app.localStream?.getTracks() ?? []) if (track.kind === kind) track.enabled = !paused;
    setPressed(button, paused);
    button.textContent = kind === "audio" ? (paused ? "Unmute mic" : "Mute mic") : paused ? "Camera on" : "Camera off";
  } catch (error) {
    showError(`could not ${paused ? "pause" : "resume"} your ${kind}: ${describe(error)}`);
  } finally {
    button.disabled = app.state !== "joined";
  }
}

/** One line in the chat log; `from` is a name, or null for our own messages. */
function showChat(from, text) {
  app.messages.push({ from, text });
  const item = document.createElement("li");
  const who = document.createElement("b");
  who.textContent = from ?? "you";
  item.append(who, `: ${text}`);
  chatLog.append(item);
  item.scrollIntoView({ block: "end" });
}

/** Send a chat message through the SFU; false when the chat channel is not open. */
function chat(text) {
  if (!text || !app.session?.sendChat(text)) return false;
  showChat(null, text);
  return true;
}

function showError(text) {
  app.errors.push(text);
  console.warn(`sfuctl: ${text}`);
  const item = document.createElement("li");
  const message = document.createElement("span");
  message.textContent = text;
  const dismiss = document.createElement("button");
  dismiss.type = "button";
  dismiss.textContent = "×";
  dismiss.title = "dismiss";
  dismiss.onclick = () => item.remove();
  item.append(message, dismiss);
  errorList.append(item);
}

function clearErrors() {
  app.errors = [];
  errorList.replaceChildren();
}

function signalingUrl() {
  return `${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}/ws`;
}

/** RTCPeerConnection configuration: the ICE servers ice= gives, else those the server hands out when joining
 * (none: the SFU announces its address); relay=1 sends everything through TURN (iceTransportPolicy "relay"). */
function rtcConfig() {
  const relay = params.get("relay") === "1" ? { iceTransportPolicy: "relay" } : {};
  const urls = (params.get("ice") || "").split(",").map((u) => u.trim()).filter(Boolean);
  if (urls.length === 0) return { iceServers: [], ...relay };
  const server = { urls };
  if (params.get("iceUser")) server.username = params.get("iceUser");
  if (params.get("icePass")) server.credential = params.get("icePass");
  return { iceServers: [server], ...relay };
}

async function openCamera() {
  if (!navigator.mediaDevices?.getUserMedia) {
    showError("this page cannot use the camera: open it over https or as http://localhost (browsers allow cameras only on secure pages); joining to watch only");
    return null;
  }
  try {
    return await navigator.mediaDevices.getUserMedia(MEDIA_CONSTRAINTS);
  } catch (error) {
    showError(`camera/microphone unavailable (${describe(error)}); joining to watch only`);
    return null;
  }
}

async function join(room, name) {
  room = room.trim();
  name = name.trim();
  if (app.state !== "idle") return false;
  clearErrors();
  if (!room) {
    showError("enter a room name");
    return false;
  }
  setState("joining", `joining room ${room}…`);
  rememberInUrl(room, name);
  const stream = (app.localStream = await openCamera());
  const self = tiles.ensure("self", `${name || "anonymous"} (you)`, true);
  for (const track of stream?.getTracks() ?? []) tiles.addTrack("self", track);
  self.root.classList.toggle("no-camera", !stream);
  const session = (app.session = new Session({
    url: signalingUrl(),
    room,
    name,
    token: tokenInput.value.trim() || null,
    rtcConfig: rtcConfig(),
    events: {
      peer: (peer) => {
        tiles.ensure(peer.id, peer.name || "anonymous");
        showEmptyState();
      },
      peerLeft: (peerId) => {
        tiles.remove(peerId);
        showEmptyState();
      },
      track: (peerId, track) => tiles.addTrack(peerId, track),
      trackEnded: (peerId, track) => tiles.removeTrack(peerId, track),
      chat: (peerId, name, text) => showChat(name, text),
      activeSpeaker: (peerId) => {
        app.activeSpeaker = peerId;
        tiles.setSpeaking(peerId === session.peerId ? "self" : peerId);
      },
      error: showError,
      closed: (reason) => {
        showError(reason);
        teardown();
      },
      reconnect: (reason) => rejoin(session, room, name, reason),
    },
  }));
  try {
    await session.join(stream);
  } catch (error) {
    if (app.session !== session) return false; // the connection dropped and was reported already
    showError(`could not join room ${room}: ${describe(error)}`);
    await session.leave();
    teardown();
    return false;
  }
  if (app.session === session) setState("joined", `in room ${room} as ${name || "anonymous"}`);
  return app.session === session;
}

/** The server asked us to join again (its node drains): leave, then join with backoff until it works. */
async function rejoin(session, room, name, reason) {
  if (app.session !== session) return;
  setState("leaving", `${reason}: joining again…`);
  await session.leave();
  teardown();
  for (let attempt = 0, delay = REJOIN_FIRST_DELAY_MS; attempt < REJOIN_ATTEMPTS; attempt++, delay = Math.min(delay * 2, REJOIN_MAX_DELAY_MS)) {
    await new Promise((resolve) => setTimeout(resolve, delay * (0.5 + Math.random())));
    if (app.state !== "idle") return; // joined or left by hand meanwhile
    if (await join(room, name)) return;
  }
}

async function leave() {
  const session = app.session;
  if (!session || app.state !== "joined") return;
  setState("leaving", "leaving…");
  await session.leave();
  teardown();
}

function teardown() {
  for (const track of app.localStream?.getTracks() ?? []) track.stop();
  app.localStream = null;
  app.session = null;
  app.activeSpeaker = null;
  tiles.clear();
  setState("idle", "not in a room");
}

function rememberInUrl(room, name) {
  const next = new URLSearchParams(params);
  next.set("room", room);
  if (name) next.set("name", name);
  next.delete("autojoin");
  history.replaceState(null, "", `?${next}`);
}

// -- stats overlay ------------------------------------------------------------------------------------
async function refreshStats() {
  const session = app.session;
  if (!session) return;
  const received = await session.streamStats();
  const sent = session.sendPc ? await outboundStreams(session.sendPc) : [];
  meter.retain(new Set([...received.map((s) => `in-${s.ssrc}`), ...sent.map((s) => `out-${s.ssrc}`)]));
  const byPeer = new Map();
  for (const s of received) {
    s.bitrate = meter.update(`in-${s.ssrc}`, s.bytesReceived, s.timestamp);
    if (!byPeer.has(s.peerId)) byPeer.set(s.peerId, []);
    byPeer.get(s.peerId).push(s);
  }
  for (const [peerId, streams] of byPeer) {
    streams.sort((a, b) => b.kind.localeCompare(a.kind)); // video first
    tiles.setStats(peerId, streams.map(receivedLine));
  }
  sent.sort((a, b) => b.kind.localeCompare(a.kind));
  tiles.setStats("self", sent.map((s) => sentLine(s, meter.update(`out-${s.ssrc}`, s.bytesSent, s.timestamp))));
}

function receivedLine(s) {
  const total = s.packetsReceived + s.packetsLost;
  const lossPercent = total > 0 ? (100 * Math.max(0, s.packetsLost)) / total : 0;
  const parts = [`${s.kind} ${s.codec}`];
  if (s.kind === "video") parts.push(`${s.frameWidth}×${s.frameHeight} ${Math.round(s.framesPerSecond)} fps`);
  if (s.spatialLayers > 1) parts.push(`layer ${s.layer ?? "?"} of 0-${s.spatialLayers - 1}`);
  parts.push(kbps(s.bitrate), `lost ${s.packetsLost} (${lossPercent.toFixed(1)}%)`, `jitter ${(1000 * s.jitter).toFixed(1)} ms`);
  if (s.kind === "video") parts.push(`${s.framesDecoded} frames`);
  if (s.paused) parts.push("paused");
  return parts.join(" · ");
}

function sentLine(s, bitrate) {
  const parts = [`sending ${s.kind} ${s.codec}`];
  if (s.kind === "video") parts.push(`${s.frameWidth}×${s.frameHeight} ${Math.round(s.framesPerSecond)} fps`);
  parts.push(kbps(bitrate));
  return parts.join(" · ");
}

function kbps(bps) {
  return `${Math.round(bps / 1000)} kbps`;
}

function scheduleStats() {
  setTimeout(async () => {
    try {
      await refreshStats();
    } catch (error) {
      console.warn("sfuctl: stats", error);
    }
    scheduleStats();
  }, STATS_INTERVAL_MS);
}

// -- start ----------------------------------------------------------------------------------------------
form.addEventListener("submit", (event) => {
  event.preventDefault();
  join(roomInput.value, nameInput.value);
});
leaveButton.addEventListener("click", leave);
document.getElementById("chat-form").addEventListener("submit", (event) => {
  event.preventDefault();
  if (chat(chatInput.value.trim())) chatInput.value = "";
  else showError("the chat is not connected yet");
});
muteButtons.audio.addEventListener("click", () => toggleMute("audio"));
muteButtons.video.addEventListener("click", () => toggleMute("video"));
statsButton.addEventListener("click", () => {
  const hidden = document.body.classList.toggle("no-stats");
  setPressed(statsButton, !hidden);
  statsButton.textContent = hidden ? "Show stats" : "Hide stats";
});
roomInput.addEventListener("input", showEmptyState);
roomInput.value = params.get("room") || "";
nameInput.value = params.get("name") || "";
tokenInput.value = params.get("token") || "";
setState("idle", "not in a room");
scheduleStats();

/** Hooks for automated tests and the console. stats(): per remote stream, jitter in seconds. */
window.sfuctl = {
  get state() {
    return app.state;
  },
  get peerId() {
    return app.session?.peerId ?? null;
  },
  get errors() {
    return [...app.errors];
  },
  /** Chat messages shown, oldest first: {from: name (null for ours), text}. */
  get messages() {
    return [...app.messages];
  },
  /** The peer id the server names as speaking (activeSpeaker), or null. */
  get activeSpeaker() {
    return app.activeSpeaker;
  },
  /** The audio level (0..1) of each received audio track's source, as Chromium reads it from the packets. */
  audioLevels: () => app.session?.audioLevels() ?? [],
  join: (room, name) => join(room, name),
  chat: (text) => chat(text),
  leave: () => leave(),
  mute: (kind) => toggleMute(kind),
  async stats() {
    const streams = app.session ? await app.session.streamStats() : [];
    return streams.map((s) => ({ ...s, bitrate: meter.rate(`in-${s.ssrc}`) }));
  },
};

if (params.get("autojoin") === "1" && roomInput.value) join(roomInput.value, nameInput.value);
