//! One WebRTC publisher (WHIP): a str0m `Rtc` whose incoming media becomes a broadcast on the
//! bus. Each video layer (simulcast `rid`) is its own track, `video` or `video.{rid}`; Opus is
//! `audio.opus`. Keyframe requests from viewers arrive through the bus and leave as PLI/FIR,
//! rate-limited per layer.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::bitstream::avc;
use media::{
    tracks, AudioCodec, BroadcastProducer, Codec as MediaCodec, Frame, TrackProducer, VideoCodec,
};
use str0m::format::Codec;
use str0m::media::{KeyframeRequestKind, MediaData, MediaKind, Mid, Rid};
use str0m::{Event, IceConnectionState, Input, Output, Rtc};
use tracing::{debug, info};

use crate::peer::{apply_ice, Control, PeerIo};
use crate::Sfu;

/// At most one keyframe request per layer towards the publisher in this time.
const KEYFRAME_REQUEST_INTERVAL: Duration = Duration::from_millis(500);
/// A publisher that sends no media for this long is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

pub(crate) struct Publisher {
    pub(crate) rtc: Rtc,
    pub(crate) io: PeerIo,
    pub(crate) broadcast: BroadcastProducer,
    pub(crate) sfu: Sfu,
    /// The channel held in the cluster registry while publishing.
    pub(crate) _claim: admission::Claimed,
}

/// One incoming stream (a media line, and a simulcast layer of it).
struct Incoming {
    mid: Mid,
    rid: Option<Rid>,
    producer: TrackProducer,
    /// H.264: parameter sets seen so far, to describe the codec.
    sps: Option<Bytes>,
    /// Audio: timestamp of the current group's first frame (audio groups last about 1 s).
    group_start: Option<u64>,
    last_request: Option<Instant>,
}

impl Publisher {
    /// Not an `async fn`, which would keep `self` twice in its future (see the viewer's).
    #[allow(clippy::manual_async_fn)] // rust-lang/rust#62958
    pub(crate) fn run(mut self) -> impl std::future::Future<Output = ()> {
        async move {
            let started = Instant::now();
            let mut incoming: HashMap<(Mid, Option<Rid>), Incoming> = HashMap::new();
            let reason = self.drive(&mut incoming).await;
            info!(reason, secs = started.elapsed().as_secs(), "publisher left");
            // Dropping `self.io` takes the publisher out of the SFU's tables.
        }
    }

    async fn drive(
        &mut self,
        incoming: &mut HashMap<(Mid, Option<Rid>), Incoming>,
    ) -> &'static str {
        let mut last_media = Instant::now();
        // When a rate-limited keyframe request is due.
        let mut request_due: Option<Instant> = None;
        loop {
            let deadline = match self.poll(incoming, &mut last_media).await {
                Ok(deadline) => deadline,
                Err(reason) => return reason,
            };
            let idle_at = last_media + IDLE_TIMEOUT;
            let wake = request_due.map_or(deadline, |d| d.min(deadline));
            tokio::select! {
                control = self.io.control.recv() => match control {
                    None | Some(Control::HangUp) => {
                        self.rtc.disconnect();
                        return "hung up";
                    }
                    Some(other) => { apply_ice(&mut self.rtc, &other); }
                },
                datagram = self.io.datagrams.recv() => {
                    let Some(d) = datagram else { return "shut down" };
                    if let Err(reason) = self.io.receive(&mut self.rtc, &d) {
                        return reason;
                    }
                }
                _ = self.broadcast.keyframe_requested() => {
                    request_due = self.send_keyframe_requests(incoming);
                }
                _ = tokio::time::sleep_until(idle_at.into()) => {
                    self.rtc.disconnect();
                    return "timed out (no media)";
                }
                _ = tokio::time::sleep_until(wake.into()) => {
                    if request_due.is_some_and(|d| d <= Instant::now()) {
                        request_due = self.send_keyframe_requests(incoming);
                    }
                    if self.rtc.handle_input(Input::Timeout(Instant::now())).is_err() {
                        return "protocol error";
                    }
                }
            }
        }
    }

    async fn poll(
        &mut self,
        incoming: &mut HashMap<(Mid, Option<Rid>), Incoming>,
        last_media: &mut Instant,
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
                Output::Transmit(t) => self.io.send(&t).await,
                Output::Timeout(deadline) => {
                    self.io.flush().await;
                    return Ok(deadline);
                }
                Output::Event(event) => match event {
                    Event::Connected => {
                        self.io.pending = None;
                        info!("publisher connected");
                    }
                    Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                        return Err("ice disconnected");
                    }
                    Event::MediaData(data) => {
                        *last_media = Instant::now();
                        self.media(incoming, data);
                    }
                    _ => {}
                },
            }
        }
    }

    fn media(&mut self, incoming: &mut HashMap<(Mid, Option<Rid>), Incoming>, data: MediaData) {
        let codec = data.params.spec().codec;
        let Some(kind) = media_kind(codec) else {
            return;
        };
        let key = (data.mid, data.rid);
        if let std::collections::hash_map::Entry::Vacant(slot) = incoming.entry(key) {
            let name = match (kind, data.rid) {
                (MediaKind::Audio, _) => tracks::AUDIO_OPUS.to_owned(),
                (MediaKind::Video, None) => tracks::VIDEO.to_owned(),
                (MediaKind::Video, Some(rid)) => format!("{}.{}", tracks::VIDEO, &*rid),
            };
            let producer = self.broadcast.create_track(&name);
            match kind {
                MediaKind::Audio => {
                    producer.set_codec(MediaCodec::Audio(AudioCodec::Opus { channels: 2 }))
                }
                MediaKind::Video => {
                    producer.accept_keyframe_requests();
                    if let Some(v) = video_codec(codec) {
                        producer.set_codec(MediaCodec::Video(v));
                    }
                }
            }
            info!(track = %name, codec = ?codec, "publisher track");
            slot.insert(Incoming {
                mid: data.mid,
                rid: data.rid,
                producer,
                sps: None,
                group_start: None,
                last_request: None,
            });
            if kind == MediaKind::Video && !data.is_keyframe() {
                // Start with a keyframe rather than waiting for the encoder's next one.
                self.request_keyframe(incoming.get_mut(&key));
            }
        }
        let Some(track) = incoming.get_mut(&key) else {
            return;
        };
        let payload = Bytes::from_owner(data.data.clone());
        let clock = match kind {
            MediaKind::Audio => 48_000,
            MediaKind::Video => 90_000,
        };
        let denom = u64::from(data.time.denom()).max(1);
        let timestamp = (u128::from(data.time.numer()) * clock / u128::from(denom)) as u64;
        let keyframe = match kind {
            MediaKind::Video => data.is_keyframe(),
            // Every Opus packet decodes on its own: start a group about every second.
            MediaKind::Audio => match track.group_start {
                Some(start) if timestamp.saturating_sub(start) < clock as u64 => false,
                _ => {
                    track.group_start = Some(timestamp);
                    true
                }
            },
        };
        if keyframe && codec == Codec::H264 {
            describe_h264(track, &payload);
        }
        track
            .producer
            .write(Frame::new(timestamp, keyframe, payload, data.network_time));
        if kind == MediaKind::Video && !data.contiguous {
            // Packets were lost for good: the decoder needs a fresh start.
            self.request_keyframe(incoming.get_mut(&key));
        }
    }

    /// Sends the keyframe requests viewers made; returns when to try again for those held back
    /// by the rate limit.
    fn send_keyframe_requests(
        &mut self,
        incoming: &mut HashMap<(Mid, Option<Rid>), Incoming>,
    ) -> Option<Instant> {
        let now = Instant::now();
        let mut due: Option<Instant> = None;
        for track in incoming.values_mut() {
            if !track.producer.keyframe_wanted() {
                continue;
            }
            match track.last_request.map(|t| t + KEYFRAME_REQUEST_INTERVAL) {
                Some(next) if next > now => due = Some(due.map_or(next, |d| d.min(next))),
                _ => {
                    track.producer.take_keyframe_request();
                    self.request_keyframe(Some(track));
                }
            }
        }
        due
    }

    /// A PLI (or FIR) to the publisher for one layer, at most once per interval.
    fn request_keyframe(&mut self, track: Option<&mut Incoming>) {
        let Some(track) = track else { return };
        let now = Instant::now();
        if track
            .last_request
            .is_some_and(|t| now.duration_since(t) < KEYFRAME_REQUEST_INTERVAL)
        {
            return;
        }
        let Some(mut writer) = self.rtc.writer(track.mid) else {
            return;
        };
        let kind = if writer.is_request_keyframe_possible(KeyframeRequestKind::Pli) {
            KeyframeRequestKind::Pli
        } else {
            KeyframeRequestKind::Fir
        };
        match writer.request_keyframe(track.rid, kind) {
            Ok(()) => {
                track.last_request = Some(now);
                self.sfu.count_keyframe_request();
                debug!(rid = ?track.rid, ?kind, "keyframe requested from publisher");
            }
            Err(err) => debug!(%err, "cannot request keyframe"),
        }
    }
}

fn media_kind(codec: Codec) -> Option<MediaKind> {
    match codec {
        Codec::Opus => Some(MediaKind::Audio),
        c if video_codec(c).is_some() => Some(MediaKind::Video),
        other => {
            debug!(codec = ?other, "ignoring media in a codec viewers are not served");
            None
        }
    }
}

fn video_codec(codec: Codec) -> Option<VideoCodec> {
    match codec {
        Codec::H264 => Some(VideoCodec::H264 {
            sps: Vec::new(),
            pps: Vec::new(),
        }),
        Codec::H265 => Some(VideoCodec::H265),
        Codec::Vp8 => Some(VideoCodec::Vp8),
        Codec::Vp9 => Some(VideoCodec::Vp9),
        Codec::Av1 => Some(VideoCodec::Av1),
        _ => None,
    }
}

/// Describes an H.264 track from the parameter sets in a keyframe, when they change.
fn describe_h264(track: &mut Incoming, keyframe: &Bytes) {
    let (sps, pps) = avc::annexb_parameter_sets(keyframe);
    let Some(first) = sps.first() else { return };
    if track.sps.as_ref() == Some(first) {
        return;
    }
    track.sps = Some(first.clone());
    let codec = VideoCodec::H264 { sps, pps };
    debug!(codec = %codec.describe(), "publisher video configured");
    track.producer.set_codec(MediaCodec::Video(codec));
}
