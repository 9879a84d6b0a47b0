#!/usr/bin/python3
"""WHIP publisher built on GStreamer's webrtcbin: a third WebRTC stack for the interop tests.

GStreamer does DTLS with OpenSSL and a self-signed RSA-2048 certificate, which is what makes it
worth testing. VP8 from videotestsrc is sent for --seconds after the connection is up.

    STARLING_KEY=secret whip_publish.py http://127.0.0.1:8080/whip/CHANNEL [--seconds N]

Prints one JSON line ({"connected": true, ...}) and exits 0 once connected and done; exits 1
with the reason on stderr otherwise. The key comes from the environment, never the argv.
"""
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

PIPELINE = (
    "webrtcbin name=w bundle-policy=max-bundle "
    "videotestsrc is-live=true pattern=ball ! video/x-raw,width=320,height=240,framerate=30/1 "
    "! vp8enc deadline=1 keyframe-max-dist=30 ! rtpvp8pay pt=96 "
    "! application/x-rtp,media=video,encoding-name=VP8,payload=96,clock-rate=90000 ! w."
)


def main():
    url = sys.argv[1]
    seconds = float(sys.argv[sys.argv.index("--seconds") + 1]) if "--seconds" in sys.argv else 5.0
    key = os.environ.get("STARLING_KEY", "")
    Gst.init(None)
    pipeline = Gst.parse_launch(PIPELINE)
    webrtc = pipeline.get_by_name("w")
    # libnice leaves loopback out of its host candidates; the server is on loopback.
    # (Keep the agent referenced for the whole run: PyGObject drops a reference it never took
    # when a wrapper of this type is collected.)
    ice = webrtc.get_property("ice-agent")
    ice.emit("add-local-ip-address", "127.0.0.1")
    loop = GLib.MainLoop()
    outcome = {"connected": False, "status": None, "error": None}
    started = time.monotonic()

    def fail(reason):
        outcome["error"] = reason
        loop.quit()

    def post_offer():
        offer = webrtc.get_property("local-description").sdp.as_text()
        request = urllib.request.Request(url, data=offer.encode(), method="POST")
        request.add_header("Content-Type", "application/sdp")
        request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                outcome["status"] = reply.status
                answer_sdp = reply.read().decode()
                outcome["location"] = reply.headers.get("Location")
        except urllib.error.HTTPError as err:
            outcome["status"] = err.code
            fail(f"POST answered {err.code}: {err.read().decode().strip()}")
            return
        _, sdp = GstSdp.SDPMessage.new_from_text(answer_sdp)
        answer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.ANSWER, sdp)
        webrtc.emit("set-remote-description", answer, None)

    def on_gathering(element, _):
        if element.get_property("ice-gathering-state") == GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            GLib.idle_add(lambda: post_offer() and False)

    def on_state(element, _):
        state = element.get_property("connection-state")
        print(f"gstreamer: connection {state.value_nick}", file=sys.stderr)
        if state == GstWebRTC.WebRTCPeerConnectionState.CONNECTED and not outcome["connected"]:
            outcome["connected"] = True
            outcome["connect_ms"] = int((time.monotonic() - started) * 1000)
            GLib.timeout_add(int(seconds * 1000), loop.quit)
        elif state == GstWebRTC.WebRTCPeerConnectionState.FAILED:
            fail("connection failed")

    def on_offer(promise, _):
        reply = promise.get_reply()
        offer = reply.get_value("offer") if reply and reply.has_field("offer") else None
        if offer is None:
            fail(f"create-offer failed: {reply.to_string() if reply else None}")
            return
        webrtc.emit("set-local-description", offer, None)

    def on_negotiation_needed(element):
        if outcome.get("offered"):
            return
        outcome["offered"] = True
        for i in range(64):
            transceiver = element.emit("get-transceiver", i)
            if transceiver is None:
                break
            transceiver.set_property("direction", GstWebRTC.WebRTCRTPTransceiverDirection.SENDONLY)
        element.emit("create-offer", None, Gst.Promise.new_with_change_func(on_offer, None))

    webrtc.connect("on-negotiation-needed", on_negotiation_needed)
    webrtc.connect("notify::ice-gathering-state", on_gathering)
    webrtc.connect("notify::connection-state", on_state)
    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message::error", lambda _b, m: fail(f"pipeline error: {m.parse_error()[0].message}"))
    GLib.timeout_add(15_000, lambda: outcome["connected"] or fail("not connected within 15 s"))
    pipeline.set_state(Gst.State.PLAYING)
    loop.run()

    if outcome.get("location") and outcome["connected"]:
        resource = urllib.parse.urljoin(url, outcome["location"])
        request = urllib.request.Request(resource, method="DELETE")
        request.add_header("Authorization", f"Bearer {key}")
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                outcome["delete_status"] = reply.status
        except urllib.error.HTTPError as err:
            outcome["delete_status"] = err.code
    pipeline.set_state(Gst.State.NULL)
    outcome.pop("offered", None)
    print(json.dumps(outcome))
    ok = outcome["connected"] and not outcome["error"]
    if not ok:
        print(f"gstreamer: {outcome['error']}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown, where PyGObject may unref the ICE agent a second time.
    os._exit(0 if ok else 1)


if __name__ == "__main__":
    main()
