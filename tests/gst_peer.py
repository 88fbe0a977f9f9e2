"""GStreamer's webrtcbin as an independent WHIP publisher or WHEP player, run by the system python3.

GStreamer's Python bindings live in the system interpreter (GObject introspection), not in the venv, so tests
start this file as a process: `python3 tests/gst_peer.py {whip|whep} URL BUNDLE_POLICY SECONDS [transport-cc]`. It
posts its offer, applies the answer, runs until its stdin closes (at most SECONDS), deletes its resource and exits.
Every half second, and once more at the end, it prints a JSON line: {"video": decoded video frames, "audio": decoded
audio buffers, "pads": [mid, SSRC] of each stream webrtcbin gave a pad, "answered": {mid: the answer's a=ssrc
values}, "error": null or the first error, "done": true on the last line}. A player with `transport-cc` offers the
transport-wide sequence header extension too (webrtcbin then sends transport feedback). libnice's UPnP is off (it
would multicast) and loopback candidates are gathered (see add_loopback_address).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import sys
import urllib.error
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PUBLISH = (
    "webrtcbin name=w bundle-policy={policy} "
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=180,framerate=25/1 ! videoconvert ! "
    "vp8enc deadline=1 keyframe-max-dist=25 ! rtpvp8pay ! application/x-rtp,media=video,encoding-name=VP8,payload=96 ! w. "
    "audiotestsrc is-live=true wave=sine ! audioconvert ! audioresample ! opusenc ! rtpopuspay ! "
    "application/x-rtp,media=audio,encoding-name=OPUS,payload=97 ! w."
)
RECEIVE_CAPS = {
    "video": "application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000",
    "audio": "application/x-rtp,media=audio,encoding-name=OPUS,payload=97,clock-rate=48000",
}
# The caps field that makes webrtcbin offer the transport-wide sequence header extension (id 3).
TRANSPORT_CC_CAPS = ",extmap-3=(string)http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def add_loopback_address(webrtc: Gst.Element) -> None:
    """Let libnice gather 127.0.0.1 (it skips loopback when another interface exists) and turn UPnP off.

    libnice has no introspection data on Debian, so nice_agent_add_local_address is called through ctypes.
    """
    capsule = ctypes.pythonapi.PyCapsule_GetPointer
    capsule.restype, capsule.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    gobject = ctypes.CDLL(ctypes.util.find_library("gobject-2.0"))
    gobject.g_object_ref.argtypes = [ctypes.c_void_p]
    ice = webrtc.get_property("ice-agent")
    agent = ice.get_property("agent")
    # GStreamer 1.22 hands both objects out with a reference the Python wrappers then drop (the ICE object is
    # still floating): take one more each, or they are freed under webrtcbin.
    gobject.g_object_ref(capsule(ice.__gpointer__, None))
    gobject.g_object_ref(capsule(agent.__gpointer__, None))
    agent.set_property("upnp", False)
    nice = ctypes.CDLL(ctypes.util.find_library("nice") or "libnice.so.10")
    nice.nice_address_new.restype = ctypes.c_void_p
    nice.nice_address_set_from_string.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
    nice.nice_agent_add_local_address.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
    nice.nice_address_free.argtypes = [ctypes.c_void_p]
    address = nice.nice_address_new()
    nice.nice_address_set_from_string(address, b"127.0.0.1")
    nice.nice_agent_add_local_address(capsule(agent.__gpointer__, None), address)
    nice.nice_address_free(address)


class Peer:
    def __init__(self, mode: str, url: str, policy: str, transport_cc: bool = False) -> None:
        self.mode, self.url = mode, url
        self.counts = {"video": 0, "audio": 0}
        self.pads: list[tuple[str | None, int]] = []
        self.answered: dict[str, list[int]] = {}
        self.error: str | None = None
        self.location: str | None = None
        self.loop = GLib.MainLoop()
        if mode == "whip":
            self.pipeline = Gst.parse_launch(PUBLISH.format(policy=policy))
            self.webrtc = self.pipeline.get_by_name("w")
        else:
            self.pipeline = Gst.Pipeline.new("player")
            self.webrtc = Gst.ElementFactory.make("webrtcbin", "w")
            self.webrtc.set_property("bundle-policy", policy)
            self.pipeline.add(self.webrtc)
            for caps in RECEIVE_CAPS.values():
                direction = GstWebRTC.WebRTCRTPTransceiverDirection.RECVONLY
                caps += TRANSPORT_CC_CAPS if transport_cc else ""
                self.webrtc.emit("add-transceiver", direction, Gst.Caps.from_string(caps))
            self.webrtc.connect("pad-added", self.on_pad)
        add_loopback_address(self.webrtc)
        self.pipeline.get_bus().add_signal_watch()
        self.pipeline.get_bus().connect("message::error", self.on_error)

    def run(self, seconds: float) -> None:
        if self.mode == "whip":  # offer once the encoders' pads are linked, as an application does
            self.webrtc.connect("on-negotiation-needed", lambda *_: GLib.idle_add(self.negotiate))
        else:
            GLib.idle_add(self.negotiate)
        self.pipeline.set_state(Gst.State.PLAYING)
        GLib.timeout_add(int(seconds * 1000), self.loop.quit)
        GLib.io_add_watch(sys.stdin.fileno(), GLib.IO_IN | GLib.IO_HUP, lambda *_: self.loop.quit())
        GLib.timeout_add(500, lambda: self.report(done=False) or True)
        self.loop.run()
        self.delete()
        self.pipeline.set_state(Gst.State.NULL)
        self.report(done=True)

    def report(self, done: bool) -> None:
        print(json.dumps({**self.counts, "pads": self.pads, "answered": self.answered, "error": self.error, "done": done}), flush=True)

    def fail(self, message: str) -> None:
        self.error = self.error or message
        self.loop.quit()

    def on_error(self, _bus: Gst.Bus, message: Gst.Message) -> None:
        error, _ = message.parse_error()
        self.fail(f"GStreamer: {error.message}")

    def negotiate(self) -> bool:
        if self.location is not None or self.error is not None:
            return False
        # The offer belongs to its promise's reply: both stay referenced while the offer is used.
        offer_promise = Gst.Promise.new()
        self.webrtc.emit("create-offer", None, offer_promise)
        offer_promise.wait()
        offer_reply = offer_promise.get_reply()
        offer = offer_reply.get_value("offer")
        promise = Gst.Promise.new()
        self.webrtc.emit("set-local-description", offer, promise)
        promise.wait()
        request = urllib.request.Request(
            self.url, data=offer.sdp.as_text().encode(), headers={"Content-Type": "application/sdp"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                self.location = response.headers["Location"]
                answer_text = response.read().decode()
        except urllib.error.HTTPError as exc:
            self.fail(f"POST {exc.code}: {exc.read().decode().strip()}")
            return False
        except (urllib.error.URLError, OSError) as exc:
            self.fail(f"POST: {exc}")
            return False
        self.answered = answered_ssrcs(answer_text)
        _, sdp = GstSdp.SDPMessage.new_from_text(answer_text)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        promise = Gst.Promise.new()
        self.webrtc.emit("set-remote-description", answer, promise)
        promise.wait()
        reply = promise.get_reply()
        if reply is not None and reply.has_field("error"):
            self.fail(f"set-remote-description: {reply.get_value('error').message}")
        return False

    def on_pad(self, _webrtc: Gst.Element, pad: Gst.Pad) -> None:
        if pad.direction != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps().get_structure(0)
        kind = caps.get_value("media")
        transceiver = pad.get_property("transceiver")
        self.pads.append((transceiver.get_property("mid") if transceiver else None, caps.get_value("ssrc")))
        decode = "rtpvp8depay ! vp8dec" if kind == "video" else "rtpopusdepay ! opusdec"
        # async=false: a pad whose stream never carries a frame (padding-only probes on an SSRC of their own get a
        # pad too) must not hold the pipeline in PAUSED waiting for its sink to preroll.
        branch = Gst.parse_bin_from_description(f"queue ! {decode} ! fakesink name=sink signal-handoffs=true async=false", True)
        self.pipeline.add(branch)
        branch.sync_state_with_parent()
        pad.link(branch.get_static_pad("sink"))
        branch.get_by_name("sink").connect("handoff", lambda *_: self.counts.__setitem__(kind, self.counts[kind] + 1))

    def delete(self) -> None:
        if self.location is None:
            return
        base = self.url.split("/", 3)
        request = urllib.request.Request(f"{base[0]}//{base[2]}{self.location}", method="DELETE")
        try:
            urllib.request.urlopen(request, timeout=5).close()
        except urllib.error.URLError as exc:
            self.error = self.error or f"DELETE: {exc}"


def answered_ssrcs(answer: str) -> dict[str, list[int]]:
    """The a=ssrc values of each m-line of an SDP answer, in order, by mid."""
    found: dict[str, list[int]] = {}
    for section in answer.split("\r\nm=")[1:]:
        lines = section.split("\r\n")
        mid = next((line[6:] for line in lines if line.startswith("a=mid:")), "")
        found[mid] = [int(line[7:].split()[0]) for line in lines if line.startswith("a=ssrc:")]
    return found


def main() -> None:
    mode, url, policy, seconds = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
    Gst.init(None)
    Peer(mode, url, policy, transport_cc=sys.argv[5:6] == ["transport-cc"]).run(seconds)


if __name__ == "__main__":
    main()
