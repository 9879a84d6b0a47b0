//! The sink every ingest protocol writes into: one publisher's broadcast on the bus, with
//! H.264 access units made decodable on their own and AAC transcoded to Opus.

use std::time::Instant;

use bytes::Bytes;
use media::bitstream::avc::{self, AvcConfig};
use media::{tracks, AudioCodec, BroadcastProducer, Codec, Frame, TrackProducer, VideoCodec};
use tracing::{debug, info, warn};

use crate::transcode::AacToOpus;

/// The notice viewers see when the encoder sends B-frames.
pub const BFRAMES_NOTICE: &str = "This stream has B-frames, which browsers cannot play smoothly \
over WebRTC. In OBS: Settings > Output > Streaming, set x264 Options to bframes=0 (or Max \
B-frames to 0 for hardware encoders), then restart the stream.";

/// A publisher's broadcast and the state needed to feed it.
pub struct Publish {
    broadcast: BroadcastProducer,
    video: TrackProducer,
    audio: TrackProducer,
    avc: Option<AvcConfig>,
    aac: Option<AacToOpus>,
    bframes: bool,
    video_frames: u64,
}

impl Publish {
    /// Starts feeding `broadcast`: creates its `video` and `audio.opus` tracks.
    pub fn new(broadcast: BroadcastProducer) -> Self {
        let video = broadcast.create_track(tracks::VIDEO);
        let audio = broadcast.create_track(tracks::AUDIO_OPUS);
        audio.set_codec(Codec::Audio(AudioCodec::Opus { channels: 2 }));
        Self {
            broadcast,
            video,
            audio,
            avc: None,
            aac: None,
            bframes: false,
            video_frames: 0,
        }
    }

    /// The broadcast being fed.
    pub fn broadcast(&self) -> &BroadcastProducer {
        &self.broadcast
    }

    /// New H.264 decoder configuration (an `avcC` record).
    pub fn avc_config(&mut self, record: &Bytes) {
        match AvcConfig::parse(record) {
            Ok(config) => {
                let codec = VideoCodec::H264 {
                    sps: config.sps.clone(),
                    pps: config.pps.clone(),
                };
                info!(codec = %codec.describe(), "video configured");
                self.video.set_codec(Codec::Video(codec));
                self.avc = Some(config);
            }
            Err(err) => warn!(%err, "ignoring malformed AVC sequence header"),
        }
    }

    /// One H.264 access unit in AVCC form, decode time `dts_ms` plus composition offset.
    pub fn avc_frame(&mut self, data: &Bytes, dts_ms: u64, cts_ms: i32, arrived: Instant) {
        let Some(config) = &self.avc else {
            debug!("video before its sequence header; dropped");
            return;
        };
        let (payload, keyframe) = match avc::avcc_to_annexb(data, config) {
            Ok(au) => au,
            Err(err) => {
                debug!(%err, "dropping malformed video frame");
                return;
            }
        };
        if cts_ms != 0 && !self.bframes {
            self.bframes = true;
            warn!("publisher sends B-frames; viewers are told which setting to change");
            self.broadcast.set_notice(Some(BFRAMES_NOTICE.to_owned()));
        }
        let pts_ms = dts_ms.saturating_add_signed(i64::from(cts_ms));
        self.video_frames += 1;
        self.video
            .write(Frame::new(pts_ms * 90, keyframe, payload, arrived));
    }

    /// New AAC configuration (an AudioSpecificConfig).
    pub fn aac_config(&mut self, asc: &Bytes) {
        match AacToOpus::new(asc) {
            Ok(t) => {
                info!(input = %t.describe(), "audio configured, transcoding to Opus");
                self.aac = Some(t);
            }
            Err(err) => warn!(%err, "cannot transcode this audio; the stream has no sound"),
        }
    }

    /// One raw AAC access unit at `timestamp_ms`.
    pub fn aac_frame(&mut self, data: &[u8], timestamp_ms: u64, arrived: Instant) {
        let Some(aac) = &mut self.aac else { return };
        match aac.push(data, timestamp_ms) {
            Ok(packets) => {
                for p in packets {
                    let frame = Frame::new(p.timestamp, p.group_start, p.data, arrived);
                    self.audio.write(frame);
                }
            }
            Err(err) => debug!(%err, "dropping undecodable audio frame"),
        }
    }

    /// Frames of video written so far.
    pub fn video_frames(&self) -> u64 {
        self.video_frames
    }
}
