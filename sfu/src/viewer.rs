//! One viewer: a str0m `Rtc` driven by its own task, fed datagrams by the UDP loop and frames
//! by the bus. Picks a simulcast layer from the bandwidth estimate, switches at keyframes, and
//! survives a publisher reconnect without renegotiating.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use media::{tracks, BroadcastConsumer, Frame, Timeline, TrackConsumer, VideoCodec};
use str0m::bwe::{Bitrate, BweKind};
use str0m::format::Codec;
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tracing::{debug, info};

use crate::egress::Path;
use crate::latency::Latency;
use crate::layers::{choose, Layer, LayerStatus};
use crate::media_out::{self, MediaOut};
use crate::peer::{apply_ice, Control, PeerIo};
use crate::rtp_out;
use crate::srtp::{self, Keys};

/// How often the layer choice is revisited.
const LAYER_TICK: Duration = Duration::from_millis(500);
/// Window over which layer bitrates are measured.
const BITRATE_WINDOW: Duration = Duration::from_secs(2);
/// A cached group younger than this answers a join or keyframe request; an older one (a
/// WebRTC publisher keyframes only on request) is not replayed: a fresh keyframe is asked for.
const MAX_REPLAY_AGE: Duration = Duration::from_millis(1500);
/// The resend buffer is made anew this long after a viewer's first live video frame.
const RESEND_SHRINK_AFTER: Duration = Duration::from_secs(1);
/// A viewer whose client has not connected (ICE and DTLS) this long after its offer is dropped,
/// so offers that never connect do not hold viewer slots.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// At most one keyframe answered per viewer in this time, however often it asks.
const KEYFRAME_ANSWER_INTERVAL: Duration = Duration::from_millis(500);

pub(crate) struct Viewer {
    pub(crate) rtc: Rtc,
    pub(crate) io: PeerIo,
    pub(crate) broadcast: BroadcastConsumer,
    pub(crate) status: Arc<Mutex<LayerStatus>>,
    /// Media lines negotiated before the task started.
    pub(crate) added: Vec<(Mid, MediaKind)>,
    pub(crate) joined: Instant,
    /// The `Rtc` is in RTP mode: frames go out as shared payloads ([`rtp_out`]).
    pub(crate) rtp_mode: bool,
    /// H.264 video and Opus audio may be sealed and sent by this task ([`MediaOut`]): RTP
    /// mode, one layer.
    pub(crate) own_media: bool,
    /// A viewer of a ladder made here: str0m's cap on the share of resends applies, and video
    /// goes out unpaced (see [`crate::http::keep_for_resends`] and
    /// [`crate::http::send_video_unpaced`]). Set at the offer, or once the ladder starts.
    pub(crate) own_ladder: bool,
    /// The session's SRTP keys, once DTLS has made them (AEAD profiles only).
    pub(crate) keys: Option<Keys>,
    /// The one video track this viewer gets instead of the layers (H.264 made on demand for a
    /// viewer that cannot decode the stream's codec); `video` itself once that is H.264 (the
    /// publisher came back in it, see [`Viewer::take_h264_source`]).
    pub(crate) video_track: Option<&'static str>,
}

/// One outgoing media line and where its frames come from.
struct Line {
    mid: Mid,
    kind: MediaKind,
    pt: Option<Pt>,
    codec: Option<Codec>,
    numbering: rtp_out::Numbering,
    /// The rest of a frame being written in chunks (RTP mode).
    backlog: Option<rtp_out::Backlog>,
    /// This task seals and sends the line's media itself.
    out: Option<MediaOut>,
    /// The timeline is rebased at the next frame: str0m gets that frame's first packet, so its
    /// sender reports follow the new mapping at once.
    rebased: bool,
    frequency: Frequency,
    /// Name of the track being sent.
    name: String,
    /// `None` while the publisher is away (reconnect grace period).
    current: Option<TrackConsumer>,
    /// A layer being switched to; it takes over at its first frame (a keyframe).
    pending: Option<TrackConsumer>,
    timeline: Timeline,
    last_keyframe_answer: Option<Instant>,
}

impl Line {
    /// The frames come from another source (or restart at a cached group): a new timeline.
    fn source_changed(&mut self) {
        self.timeline.source_changed();
        self.rebased = true;
    }

    /// Keeps what is left of a chunked write; whether anything was written.
    fn keep(&mut self, written: rtp_out::Written) -> bool {
        match written {
            rtp_out::Written::Nothing => false,
            rtp_out::Written::All => true,
            rtp_out::Written::Part(backlog) => {
                self.backlog = Some(backlog);
                true
            }
        }
    }
}

enum LineEvent {
    Frame(Frame),
    Switched(Frame),
    PendingEnded,
    Ended,
    Resumed(TrackConsumer),
    Gone,
}

#[derive(Default)]
struct Counters {
    connected: bool,
    estimate: Option<u64>,
    /// Arrival time of the latest video frame written, until its first packet leaves.
    awaiting_send: Option<Instant>,
    latency: Latency,
    /// The publisher came back in a codec this RTP-mode session cannot packetize.
    codec_changed: bool,
    resend_buffer: ResendBuffer,
    /// Video packets resent by this task ([`MediaOut`]), if it sends the video itself.
    sealed_here: Option<u64>,
    /// The video frame awaiting its first packet is sent by this task, not str0m.
    awaiting_here: bool,
}

/// Where a viewer's resend buffer is in being made anew after the join burst.
#[derive(Default)]
enum ResendBuffer {
    /// No live video frame sent yet.
    #[default]
    Joining,
    /// To be made anew at the first frame from this time on.
    RenewAt(Instant),
    /// Made anew; it grows with live video only.
    Renewed,
}

impl Viewer {
    /// The viewer's task. Not an `async fn`: one would keep `self` twice in its future (the
    /// argument, then the binding it is moved to), 10 KiB more per viewer (`-Zprint-type-sizes`).
    #[allow(clippy::manual_async_fn)] // rust-lang/rust#62958
    pub(crate) fn run(mut self) -> impl std::future::Future<Output = ()> {
        async move {
            let started = Instant::now();
            let mut counters = Counters::default();
            let reason = self.drive(&mut counters).await;
            let secs = started.elapsed().as_secs();
            let switches = self.lock_status().switches;
            let resent = counters.sealed_here;
            match counters.latency.summary() {
                Some((frames, p50, p99)) => info!(
                    reason,
                    secs,
                    switches,
                    resent,
                    frames,
                    p50_us = p50,
                    p99_us = p99,
                    "viewer left; server-added video latency"
                ),
                None => info!(reason, secs, switches, resent, "viewer left"),
            }
            // Dropping `self.io` takes the viewer out of the SFU's tables.
        }
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, LayerStatus> {
        self.status.lock().unwrap_or_else(|e| e.into_inner())
    }

    async fn drive(&mut self, c: &mut Counters) -> &'static str {
        let (mut video, mut audio): (Option<Line>, Option<Line>) = (None, None);
        for (mid, kind) in std::mem::take(&mut self.added) {
            let line = Some(self.new_line(mid, kind));
            match kind {
                MediaKind::Video => video = line,
                MediaKind::Audio => audio = line,
            }
        }
        let mut tick = tokio::time::interval(LAYER_TICK);
        // One timer for str0m's deadlines, moved rather than made anew on every wake.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        // Made once: while the publisher is connected, polling it at every wake takes no lock.
        let broadcast = self.broadcast.clone();
        let ended = broadcast.closed();
        tokio::pin!(ended);
        let connect_by = tokio::time::sleep_until((self.joined + CONNECT_TIMEOUT).into());
        tokio::pin!(connect_by);
        loop {
            let deadline = match self.poll(c, &mut video, &mut audio).await {
                Ok(deadline) => deadline,
                Err(reason) => return reason,
            };
            if c.codec_changed {
                // The player reconnects and negotiates the new codec.
                self.rtc.disconnect();
                return "codec changed";
            }
            if [&video, &audio]
                .into_iter()
                .flatten()
                .any(|l| l.backlog.is_some())
            {
                // The previous chunk went out in the poll above; write the next.
                for line in [video.as_mut(), audio.as_mut()].into_iter().flatten() {
                    self.write_backlog(line);
                }
                self.release_written();
                continue;
            }
            let connected = c.connected;
            if timer.deadline() != deadline.into() {
                timer.as_mut().reset(deadline.into());
            }
            tokio::select! {
                control = self.io.control.recv() => match control {
                    None | Some(Control::HangUp) => {
                        self.rtc.disconnect();
                        return "hung up";
                    }
                    Some(Control::Layer(preferred)) => {
                        self.lock_status().preferred = preferred;
                        self.choose_layer(c, &mut video);
                    }
                    Some(other) => {
                        if matches!(other, Control::IceRestart(_)) {
                            // The media address may move: str0m's packets tell.
                            for line in [video.as_mut(), audio.as_mut()].into_iter().flatten() {
                                if let Some(out) = line.out.as_mut() {
                                    out.forget_destination();
                                }
                            }
                        }
                        apply_ice(&mut self.rtc, &other);
                    }
                },
                _ = &mut ended => {
                    self.rtc.disconnect();
                    return "stream ended";
                }
                _ = &mut connect_by, if !connected => {
                    self.rtc.disconnect();
                    return "not connected in time";
                }
                datagram = self.io.datagrams.recv() => {
                    let Some(d) = datagram else { return "shut down" };
                    let received = self.collecting_keys(|v| v.io.receive(&mut v.rtc, &d));
                    if let Err(reason) = received {
                        return reason;
                    }
                    if let Some(out) = video.as_mut().and_then(|l| l.out.as_mut()) {
                        out.on_datagram(&d.data);
                    }
                }
                e = line_event(&mut video, &self.broadcast, self.video_track), if connected => {
                    self.on_line_event(c, &mut video, e);
                }
                e = line_event(&mut audio, &self.broadcast, None), if connected => {
                    self.on_line_event(c, &mut audio, e);
                }
                _ = tick.tick(), if connected => self.choose_layer(c, &mut video),
                _ = &mut timer => {
                    let timed = self.collecting_keys(|v| {
                        v.rtc.handle_input(Input::Timeout(Instant::now()))
                    });
                    if timed.is_err() {
                        return "protocol error";
                    }
                }
            }
        }
    }

    /// Calls into the `Rtc` (`f`), keeping the SRTP keys of a DTLS handshake completed inside
    /// (until it has them, and only if it seals media itself).
    fn collecting_keys<T>(&mut self, f: impl FnOnce(&mut Self) -> T) -> T {
        if !self.own_media || self.keys.is_some() {
            return f(self);
        }
        let (out, keys) = srtp::collect(|| f(self));
        if keys.is_some() {
            self.keys = keys;
        }
        out
    }

    /// Sends what str0m has to send and handles its events; returns its next deadline.
    async fn poll(
        &mut self,
        c: &mut Counters,
        video: &mut Option<Line>,
        audio: &mut Option<Line>,
    ) -> Result<Instant, &'static str> {
        loop {
            if !self.rtc.is_alive() {
                return Err("connection closed");
            }
            let output = self.rtc.poll_output().map_err(|err| {
                debug!(%err, "rtc output");
                "protocol error"
            })?;
            match output {
                Output::Transmit(t) => {
                    if !c.awaiting_here {
                        if let Some(arrived) = c.awaiting_send.take() {
                            c.latency.record(arrived.elapsed());
                        }
                    }
                    for line in [video.as_mut(), audio.as_mut()].into_iter().flatten() {
                        if let Some(out) = line.out.as_mut() {
                            out.sent_to(&t.contents, Path::new(t.source, t.destination));
                        }
                    }
                    self.io.send(&t).await;
                }
                Output::Timeout(deadline) => {
                    // After str0m's packets: the rest of a frame follows its first packet.
                    if let Some(out) = video.as_mut().and_then(|l| l.out.as_mut()) {
                        let started = out.send(&mut self.io.out).await;
                        c.sealed_here = Some(out.resent);
                        if started && c.awaiting_here {
                            c.awaiting_here = false;
                            if let Some(arrived) = c.awaiting_send.take() {
                                c.latency.record(arrived.elapsed());
                            }
                        }
                    }
                    if let Some(out) = audio.as_mut().and_then(|l| l.out.as_mut()) {
                        out.send(&mut self.io.out).await;
                    }
                    self.io.flush().await;
                    return Ok(deadline);
                }
                Output::Event(event) => match event {
                    Event::Connected => {
                        c.connected = true;
                        self.io.pending = None;
                        info!("viewer connected");
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        return Err("ice disconnected");
                    }
                    Event::MediaAdded(m)
                        if ![&*video, &*audio]
                            .iter()
                            .any(|l| l.as_ref().is_some_and(|l| l.mid == m.mid)) =>
                    {
                        let line = Some(self.new_line(m.mid, m.kind));
                        match m.kind {
                            MediaKind::Video => *video = line,
                            MediaKind::Audio => *audio = line,
                        }
                    }
                    Event::KeyframeRequest(req) => {
                        if let Some(v) = video.as_mut().filter(|v| v.mid == req.mid) {
                            answer_keyframe_request(v);
                        }
                    }
                    Event::EgressBitrateEstimate(
                        BweKind::Twcc { estimate, .. } | BweKind::Remb { estimate, .. },
                    ) => {
                        c.estimate = Some(estimate.as_u64());
                    }
                    _ => {}
                },
            }
        }
    }

    /// A media line the viewer offered, fed from the matching track.
    fn new_line(&mut self, mid: Mid, kind: MediaKind) -> Line {
        let (track, frequency) = match kind {
            MediaKind::Video => (self.first_video_layer(), Frequency::NINETY_KHZ),
            MediaKind::Audio => (
                self.broadcast.track(tracks::AUDIO_OPUS),
                Frequency::FORTY_EIGHT_KHZ,
            ),
        };
        let name = track
            .as_ref()
            .map_or(String::new(), |t| t.name().to_owned());
        let mut line = Line {
            mid,
            kind,
            pt: None,
            codec: None,
            numbering: rtp_out::Numbering::new(),
            backlog: None,
            out: None,
            rebased: false,
            frequency,
            name,
            current: None,
            pending: None,
            timeline: Timeline::new(frequency.get() as u64),
            last_keyframe_answer: None,
        };
        if let Some(track) = track {
            self.start_track(&mut line, track);
        }
        if kind == MediaKind::Video {
            self.lock_status().current = Some(line.name.clone()).filter(|n| !n.is_empty());
        }
        line
    }

    /// The layer a new viewer starts on: the top one by bitrate, or any video track while
    /// bitrates are not known yet.
    fn first_video_layer(&self) -> Option<TrackConsumer> {
        if let Some(name) = self.video_track {
            return self.broadcast.track(name);
        }
        let layers = video_layers(&self.broadcast, Instant::now());
        let name = choose(&layers, None, None, None)
            .map(str::to_owned)
            .or_else(|| {
                let names = self.broadcast.track_names();
                names.into_iter().find(|n| tracks::is_video(n))
            })?;
        self.broadcast.track(&name)
    }

    /// Starts sending `track` on `line`: payload type for its codec, and the join rule.
    fn start_track(&mut self, line: &mut Line, mut track: TrackConsumer) {
        let negotiated = payload_type(&mut self.rtc, line.mid, line.kind, &track);
        line.pt = negotiated.map(|(pt, _)| pt);
        line.codec = negotiated.map(|(_, codec)| codec);
        if line.pt.is_none() {
            debug!(track = track.name(), "viewer cannot decode this track");
        }
        join_at_fresh_keyframe(&mut track);
        line.name = track.name().to_owned();
        line.current = Some(track);
        line.pending = None;
        line.source_changed();
    }

    fn on_line_event(&mut self, c: &mut Counters, line: &mut Option<Line>, event: LineEvent) {
        let Some(l) = line.as_mut() else { return };
        match event {
            LineEvent::Frame(frame) => self.write(c, l, frame),
            LineEvent::Switched(frame) => {
                if let Some(next) = l.pending.take() {
                    debug!(from = %l.name, to = next.name(), "layer switched");
                    l.name = next.name().to_owned();
                    l.current = Some(next);
                    l.source_changed();
                    let mut status = self.lock_status();
                    status.current = Some(l.name.clone());
                    status.pending = None;
                    status.switches += 1;
                }
                self.write(c, l, frame);
            }
            LineEvent::PendingEnded => {
                l.pending = None;
                self.lock_status().pending = None;
            }
            LineEvent::Ended => {
                debug!(track = %l.name, "track ended; waiting for the publisher");
                l.current = None;
                l.pending = None;
            }
            LineEvent::Resumed(track) => {
                info!(track = track.name(), "publisher back; resuming");
                self.start_track(l, track);
                if l.kind == MediaKind::Video {
                    self.lock_status().current = Some(l.name.clone());
                }
            }
            LineEvent::Gone => *line = None,
        }
    }

    fn write(&mut self, c: &mut Counters, line: &mut Line, frame: Frame) {
        let Some(pt) = line.pt else { return };
        let ts = line
            .timeline
            .map(frame.timestamp, frame.keyframe, frame.arrived);
        if line.timeline.jumped() {
            // A publisher back through a relay on the same track: str0m gets this frame's
            // first packet, so its sender reports follow the new timeline.
            debug!(kind = ?line.kind, "the source's clock jumped; timeline rebased");
            line.rebased = true;
        }
        let arrived = frame.arrived;
        let mut here = false;
        let written = match line.codec {
            Some(codec) if self.rtp_mode && rtp_out::shareable(codec) => {
                self.start_media_out(line, pt, codec);
                if let Some(out) = line.out.as_mut() {
                    let to_str0m = std::mem::take(&mut line.rebased);
                    let wrote = out.write(
                        &mut self.rtc,
                        line.mid,
                        pt,
                        &mut line.numbering,
                        (frame, ts),
                        to_str0m,
                    );
                    here = wrote == media_out::Wrote::Here;
                    wrote != media_out::Wrote::Nothing
                } else {
                    line.backlog = Some(rtp_out::Backlog {
                        frame,
                        rtp_time: ts,
                        next: 0,
                    });
                    self.write_backlog(line)
                }
            }
            _ if self.rtp_mode => {
                c.codec_changed = true;
                false
            }
            _ => {
                let Some(writer) = self.rtc.writer(line.mid) else {
                    return;
                };
                let time = MediaTime::new(ts, line.frequency);
                writer
                    .write(pt, frame.arrived, time, &frame.payload[..])
                    .map_err(|err| debug!(%err, "rtc write"))
                    .is_ok()
            }
        };
        // Cached frames sent at join arrived before the viewer did; they measure the cache,
        // not the server's added latency.
        if written && line.kind == MediaKind::Video && arrived >= self.joined {
            c.awaiting_send = Some(arrived);
            c.awaiting_here = here;
            self.shrink_resends_after_join(c, line, arrived);
        }
        if !here {
            self.release_written();
        }
    }

    /// Lets this task seal and send the line's media (a shareable codec), once DTLS has made
    /// the keys.
    fn start_media_out(&mut self, line: &mut Line, pt: Pt, codec: Codec) {
        if !self.own_media || line.out.is_some() {
            return;
        }
        let Some(keys) = self.keys.as_ref() else {
            return;
        };
        line.out = MediaOut::new(&mut self.rtc, line.mid, pt, codec, keys);
        debug!(kind = ?line.kind, sealed_here = line.out.is_some(), "media out");
    }

    /// The cached group replayed at join grows str0m's resend buffer (or ours, [`MediaOut`]) to
    /// its cap, and it never shrinks. A while after the first live frame those packets are past
    /// the resend window, so the buffer is made anew, to grow only as far as live video needs.
    fn shrink_resends_after_join(&mut self, c: &mut Counters, line: &mut Line, arrived: Instant) {
        match c.resend_buffer {
            ResendBuffer::Joining => {
                c.resend_buffer = ResendBuffer::RenewAt(arrived + RESEND_SHRINK_AFTER);
            }
            ResendBuffer::RenewAt(at) if arrived >= at => {
                let mid = line.mid;
                crate::http::keep_for_resends(
                    &mut self.rtc,
                    &[(mid, MediaKind::Video)],
                    false,
                    self.own_ladder,
                );
                if let Some(out) = line.out.as_mut() {
                    out.joined();
                }
                c.resend_buffer = ResendBuffer::Renewed;
            }
            ResendBuffer::RenewAt(_) | ResendBuffer::Renewed => {}
        }
    }

    /// str0m holds what was written until its next timeout; this is that timeout, so the next
    /// poll sends the packets before another frame (or chunk) is written. Otherwise a burst
    /// (the cached group replayed at join) piles up in str0m's send queue, whose capacity then
    /// stays with the viewer.
    fn release_written(&mut self) {
        if let Err(err) = self.rtc.handle_input(Input::Timeout(Instant::now())) {
            debug!(%err, "rtc timeout after write");
        }
    }

    /// Writes the next chunk of the line's backlog (RTP mode); whether anything was written.
    fn write_backlog(&mut self, line: &mut Line) -> bool {
        let (Some(todo), Some(pt), Some(codec)) = (line.backlog.take(), line.pt, line.codec) else {
            return false;
        };
        let written = rtp_out::write(
            &mut self.rtc,
            line.mid,
            pt,
            codec,
            &mut line.numbering,
            todo,
        );
        line.keep(written)
    }

    /// A viewer given H.264 made from a codec it cannot decode has that one track. A publisher
    /// back within the grace period in H.264 makes no such track (and on a node that pulls the
    /// channel, the pulled one stays open and silent): the viewer takes `video` as it is, on
    /// the same session.
    fn take_h264_source(&mut self, line: &mut Line) {
        if line.name == tracks::VIDEO {
            return;
        }
        let Some(track) = h264_source(&self.broadcast) else {
            return;
        };
        info!(from = %line.name, "publisher back in H.264; sending its video as it is");
        self.start_track(line, track);
        self.lock_status().current = Some(line.name.clone());
    }

    /// A viewer who joined while the channel's ladder waited for a re-encoder (its layer tracks
    /// are offered from the start) is made a viewer of a ladder made here once it runs.
    fn follow_own_ladder(&mut self, c: &Counters, mid: Mid) {
        if self.own_ladder || self.broadcast.transcoding().is_none() {
            return;
        }
        self.own_ladder = true;
        let video = [(mid, MediaKind::Video)];
        crate::http::send_video_unpaced(&mut self.rtc, &video);
        // Still joining: the buffer is made anew with the cap after the join burst.
        if matches!(c.resend_buffer, ResendBuffer::Renewed) {
            crate::http::keep_for_resends(&mut self.rtc, &video, false, true);
        }
    }

    /// Revisits the layer: the viewer's choice, or what the estimate allows.
    fn choose_layer(&mut self, c: &Counters, video: &mut Option<Line>) {
        let Some(line) = video.as_mut() else { return };
        if self.video_track.is_some() {
            self.take_h264_source(line);
            return;
        }
        let layers = video_layers(&self.broadcast, Instant::now());
        let mut status = self.lock_status();
        status.available = layers.clone();
        status.estimate = c.estimate;
        let Some(current) = line.current.as_ref() else {
            return;
        };
        let target = choose(
            &layers,
            c.estimate,
            Some(current.name()),
            status.preferred.as_deref(),
        )
        .map(str::to_owned);
        drop(status);
        if layers.len() > 1 {
            self.follow_own_ladder(c, line.mid);
            // Let the estimator probe far enough for the top layer to pass the step-up rule,
            // so a viewer moved down can move up (probing to 1.3x the top layer could never
            // show the 1.43x that rule needs).
            let target = crate::layers::probe_target(layers[0].bitrate);
            self.rtc
                .bwe()
                .set_bitrate(Bitrate::ZERO, Bitrate::bps(target));
        }
        let Some(target) = target else { return };
        if target == line.name {
            if line.pending.take().is_some() {
                self.lock_status().pending = None;
            }
            return;
        }
        if line.pending.as_ref().is_some_and(|p| p.name() == target) {
            return;
        }
        let Some(mut next) = self.broadcast.track(&target) else {
            return;
        };
        next.skip_to_next_group();
        next.request_keyframe();
        debug!(from = %line.name, to = %target, estimate = ?c.estimate, "switching layer at next keyframe");
        line.pending = Some(next);
        self.lock_status().pending = Some(target);
    }
}

/// The live video layers, highest bitrate first; layers not sending are left out.
fn video_layers(broadcast: &BroadcastConsumer, now: Instant) -> Vec<Layer> {
    let mut layers: Vec<Layer> = broadcast
        .track_names()
        .into_iter()
        .filter(|n| tracks::is_video(n))
        .filter_map(|name| {
            let track = broadcast.peek_track(&name).filter(|t| !t.is_closed())?;
            let bitrate = track.bitrate(now, BITRATE_WINDOW)?;
            Some(Layer { name, bitrate })
        })
        .collect();
    layers.sort_by_key(|l| std::cmp::Reverse(l.bitrate));
    layers
}

/// The broadcast's `video` if it is live H.264 (known from its parameters): a track a viewer
/// given H.264 made from another codec can take as it is.
fn h264_source(broadcast: &BroadcastConsumer) -> Option<TrackConsumer> {
    let look = broadcast.peek_track(tracks::VIDEO)?;
    let h264 = matches!(
        look.codec(),
        Some(media::Codec::Video(VideoCodec::H264 { .. }))
    );
    // A counted consumer (`clone`), as the viewer will read it.
    (h264 && !look.is_closed()).then(|| look.clone())
}

/// A joining viewer gets the cached group if it is recent; if it is old and the publisher can
/// make a keyframe on request, the viewer waits for a fresh one instead of replaying it.
fn join_at_fresh_keyframe(track: &mut TrackConsumer) {
    let old = track
        .latest_group_age(Instant::now())
        .is_none_or(|age| age > MAX_REPLAY_AGE);
    if old && track.accepts_keyframe_requests() {
        track.skip_to_next_group();
        track.request_keyframe();
    }
}

/// A viewer asked for a keyframe (PLI/FIR): answer from the cache when the latest group is
/// recent or the publisher cannot make one; otherwise ask the publisher (coalesced on the
/// bus with every other viewer's request).
fn answer_keyframe_request(line: &mut Line) {
    let now = Instant::now();
    if line
        .last_keyframe_answer
        .is_some_and(|t| now.duration_since(t) < KEYFRAME_ANSWER_INTERVAL)
    {
        return;
    }
    let Some(track) = line.current.as_mut() else {
        return;
    };
    line.last_keyframe_answer = Some(now);
    let recent = track
        .latest_group_age(now)
        .is_some_and(|age| age <= MAX_REPLAY_AGE);
    if recent || !track.request_keyframe() {
        debug!("keyframe request answered from cache");
        track.restart_at_latest_group();
        line.source_changed();
    } else {
        debug!("keyframe request passed to the publisher");
    }
}

/// The payload type (and codec) to send `track` with on `mid`, if the viewer can decode it.
fn payload_type(
    rtc: &mut Rtc,
    mid: Mid,
    kind: MediaKind,
    track: &TrackConsumer,
) -> Option<(Pt, Codec)> {
    let want = match kind {
        MediaKind::Audio => Codec::Opus,
        MediaKind::Video => track
            .codec()
            .map_or(Codec::H264, |c| crate::http::str0m_codec(&c)),
    };
    // Prefer H.264 packetization-mode 1 (what browsers decode with any profile).
    crate::http::negotiated(rtc, mid)
        .iter()
        .filter(|p| p.spec().codec == want)
        .max_by_key(|p| p.spec().format.packetization_mode == Some(1))
        .map(|p| (p.pt(), want))
}

/// The next thing to happen on `line`; `video_track` is the viewer's one video track, if it
/// does not take the layers.
async fn line_event(
    line: &mut Option<Line>,
    broadcast: &BroadcastConsumer,
    video_track: Option<&str>,
) -> LineEvent {
    let Some(l) = line else {
        return std::future::pending().await;
    };
    let Some(current) = l.current.as_mut() else {
        let found = match (l.kind, video_track) {
            (MediaKind::Video, Some(name)) => broadcast.live_track(name).await,
            (MediaKind::Video, None) => broadcast.live_track_where(tracks::is_video).await,
            (MediaKind::Audio, _) => broadcast.live_track(tracks::AUDIO_OPUS).await,
        };
        return found.map_or(LineEvent::Gone, LineEvent::Resumed);
    };
    match l.pending.as_mut() {
        None => match current.next_frame().await {
            Some(f) => LineEvent::Frame(f),
            None => LineEvent::Ended,
        },
        Some(pending) => tokio::select! {
            f = current.next_frame() => f.map_or(LineEvent::Ended, LineEvent::Frame),
            f = pending.next_frame() => f.map_or(LineEvent::PendingEnded, LineEvent::Switched),
        },
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use media::{tracks, Bus, ChannelName, Codec, TrackLimits, VideoCodec};

    /// A viewer of H.264 made from H.265 takes `video` only once it is H.264.
    #[test]
    fn only_an_h264_video_is_a_source_to_take() {
        let bus = Bus::new(TrackLimits::default());
        let broadcast = bus.publish(ChannelName::new("swap").unwrap()).unwrap();
        let viewers = broadcast.consume();
        assert!(super::h264_source(&viewers).is_none(), "no video yet");
        let video = broadcast.create_track(tracks::VIDEO);
        assert!(
            super::h264_source(&viewers).is_none(),
            "parameters not known"
        );
        video.set_codec(Codec::Video(VideoCodec::H265));
        assert!(super::h264_source(&viewers).is_none(), "H.265");
        video.set_codec(Codec::Video(VideoCodec::H264 {
            sps: vec![Bytes::from_static(&[0x67])],
            pps: vec![Bytes::from_static(&[0x68])],
        }));
        let taken = super::h264_source(&viewers).expect("H.264");
        assert_eq!(taken.name(), tracks::VIDEO);
        drop(video);
        assert!(super::h264_source(&viewers).is_none(), "closed");
    }

    /// Each viewer's task is one allocation of this future: it must hold the `Viewer` (str0m's
    /// `Rtc` is most of it) once, plus the loop's own state.
    #[test]
    fn a_viewer_task_holds_the_viewer_once() {
        fn future_size<F: std::future::Future>(_: fn(super::Viewer) -> F) -> usize {
            std::mem::size_of::<F>()
        }
        let viewer = std::mem::size_of::<super::Viewer>();
        let task = future_size(super::Viewer::run);
        assert!(task < viewer + 6 * 1024, "viewer {viewer} B, task {task} B");
    }
}
