//! One viewer: a str0m `Rtc` driven by its own task, fed datagrams by the UDP loop and frames
//! by the bus.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use media::{tracks, BroadcastConsumer, Frame, TrackConsumer};
use str0m::format::Codec;
use str0m::media::{Frequency, MediaKind, MediaTime, Mid, Pt};
use str0m::net::{Protocol, Receive};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Notify};
use tracing::{debug, info, trace};

use crate::latency::Latency;
use crate::{SessionId, Sfu};

/// Datagrams queued for one session before new ones are dropped.
pub(crate) const QUEUE: usize = 256;

pub(crate) struct Datagram {
    pub(crate) source: SocketAddr,
    pub(crate) data: Vec<u8>,
    pub(crate) at: Instant,
}

pub(crate) struct SessionHandle {
    pub(crate) tx: mpsc::Sender<Datagram>,
    pub(crate) hangup: Arc<Notify>,
    pub(crate) channel: media::ChannelName,
}

/// One outgoing media line: where to write and with which payload type.
struct Line {
    mid: Mid,
    pt: Pt,
    frequency: Frequency,
    track: TrackConsumer,
}

pub(crate) struct Session {
    pub(crate) id: SessionId,
    pub(crate) rtc: Rtc,
    pub(crate) rx: mpsc::Receiver<Datagram>,
    pub(crate) hangup: Arc<Notify>,
    pub(crate) broadcast: BroadcastConsumer,
    pub(crate) sfu: Sfu,
    /// Arrival time of the latest video frame written, until its first packet leaves.
    pub(crate) awaiting_send: Option<Instant>,
    pub(crate) latency: Latency,
    pub(crate) joined: Instant,
}

impl Session {
    pub(crate) async fn run(mut self) {
        let started = Instant::now();
        let reason = self.drive().await;
        let secs = started.elapsed().as_secs();
        match self.latency.summary() {
            Some((frames, p50, p99)) => {
                info!(
                    reason,
                    secs,
                    frames,
                    p50_us = p50,
                    p99_us = p99,
                    "viewer left; server-added video latency"
                )
            }
            None => info!(reason, secs, "viewer left"),
        }
        self.sfu.remove_session(self.id);
    }

    async fn drive(&mut self) -> &'static str {
        let socket = self.sfu.inner.socket.clone();
        let local = self.sfu.inner.local_addr;
        let (mut video, mut audio): (Option<Line>, Option<Line>) = (None, None);
        let mut connected = false;
        loop {
            let deadline = match self
                .poll(&socket, &mut video, &mut audio, &mut connected)
                .await
            {
                Ok(deadline) => deadline,
                Err(reason) => return reason,
            };
            let hangup = self.hangup.clone();
            let ended = self.broadcast.clone();
            tokio::select! {
                _ = hangup.notified() => {
                    self.rtc.disconnect();
                    return "hung up";
                }
                _ = ended.closed() => {
                    self.rtc.disconnect();
                    return "stream ended";
                }
                datagram = self.rx.recv() => {
                    let Some(d) = datagram else { return "shut down" };
                    let Ok(contents) = d.data.as_slice().try_into() else { continue };
                    let input = Input::Receive(d.at, Receive { proto: Protocol::Udp, source: d.source, destination: local, contents });
                    if let Err(err) = self.rtc.handle_input(input) {
                        debug!(%err, "rtc input");
                        return "protocol error";
                    }
                }
                frame = next_frame(&mut video), if connected => self.write(&mut video, frame),
                frame = next_frame(&mut audio), if connected => self.write(&mut audio, frame),
                _ = tokio::time::sleep_until(deadline.into()) => {
                    if self.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                        return "protocol error";
                    }
                }
            }
        }
    }

    /// Sends what str0m has to send and handles its events; returns its next deadline.
    async fn poll(
        &mut self,
        socket: &UdpSocket,
        video: &mut Option<Line>,
        audio: &mut Option<Line>,
        connected: &mut bool,
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
                    if let Some(arrived) = self.awaiting_send.take() {
                        self.latency.record(arrived.elapsed());
                    }
                    if let Err(err) = socket.send_to(&t.contents, t.destination).await {
                        trace!(%err, "udp send");
                    }
                }
                Output::Timeout(deadline) => return Ok(deadline),
                Output::Event(event) => match event {
                    Event::Connected => {
                        *connected = true;
                        info!("viewer connected");
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        return Err("ice disconnected");
                    }
                    Event::MediaAdded(m) => {
                        let line = self.line(m.mid, m.kind);
                        match m.kind {
                            MediaKind::Video => *video = line,
                            MediaKind::Audio => *audio = line,
                        }
                    }
                    Event::KeyframeRequest(req) => {
                        // Answer from the cache: restart at the latest keyframe at once.
                        if let Some(v) = video.as_mut().filter(|v| v.mid == req.mid) {
                            debug!(kind = ?req.kind, "keyframe request answered from cache");
                            v.track.restart_at_latest_group();
                        }
                    }
                    _ => {}
                },
            }
        }
    }

    /// The payload type and track for a media line the viewer offered.
    fn line(&mut self, mid: Mid, kind: MediaKind) -> Option<Line> {
        let writer = self.rtc.writer(mid)?;
        let (want, track, frequency) = match kind {
            MediaKind::Video => (Codec::H264, tracks::VIDEO, Frequency::NINETY_KHZ),
            MediaKind::Audio => (Codec::Opus, tracks::AUDIO_OPUS, Frequency::FORTY_EIGHT_KHZ),
        };
        // Prefer H.264 packetization-mode 1 (what browsers decode with any profile).
        let pt = writer
            .payload_params()
            .filter(|p| p.spec().codec == want)
            .max_by_key(|p| p.spec().format.packetization_mode == Some(1))
            .map(|p| p.pt())?;
        let track = self.broadcast.track(track)?;
        Some(Line {
            mid,
            pt,
            frequency,
            track,
        })
    }

    fn write(&mut self, line: &mut Option<Line>, frame: Option<Frame>) {
        let Some(l) = line else { return };
        let Some(frame) = frame else {
            // The track ended; stop reading it.
            *line = None;
            return;
        };
        let Some(writer) = self.rtc.writer(l.mid) else {
            return;
        };
        let time = MediaTime::new(frame.timestamp, l.frequency);
        match writer.write(l.pt, frame.arrived, time, &frame.payload[..]) {
            // Cached frames sent at join arrived before the viewer did; they measure the cache,
            // not the server's added latency.
            Ok(()) if l.frequency == Frequency::NINETY_KHZ && frame.arrived >= self.joined => {
                self.awaiting_send = Some(frame.arrived)
            }
            Ok(()) => {}
            Err(err) => debug!(%err, "rtc write"),
        }
    }
}

async fn next_frame(line: &mut Option<Line>) -> Option<Frame> {
    match line {
        Some(l) => l.track.next_frame().await,
        None => std::future::pending().await,
    }
}
