//! The sink every ingest protocol writes into: one publisher's broadcast on the bus, with
//! H.264 access units made decodable on their own and AAC transcoded to Opus.

use std::sync::Arc;
use std::time::Instant;

use bytes::{BufMut, Bytes, BytesMut};
use media::bitstream::avc::{self, nal, AvcConfig};
use media::bitstream::hevc::{self, HevcConfig};
use media::{tracks, AudioCodec, BroadcastProducer, Codec, Frame, TrackProducer, VideoCodec};
use tracing::{debug, info, warn};

use crate::es;
use crate::transcode::on_demand::OnDemand;
use crate::transcode::video::{LayerSpec, Source};
use crate::transcode::video_worker::{Budget, VideoWorker};
use crate::transcode::AacWorker;

/// The notice viewers see when the encoder sends B-frames.
pub const BFRAMES_NOTICE: &str = "This stream has B-frames, which browsers cannot play smoothly \
over WebRTC. In OBS: Settings > Output > Streaming, set x264 Options to bframes=0 (or Max \
B-frames to 0 for hardware encoders), then restart the stream.";

/// The notice viewers see when the encoder sends B-frames and Starling re-encodes the video.
pub const REENCODED_NOTICE: &str = "This stream has B-frames, which browsers cannot play \
smoothly over WebRTC, so the server re-encodes its video without them (a little more latency). \
To spare that: in OBS, Settings > Output > Streaming, set x264 Options to bframes=0.";

/// The track the source video stays on while `video` carries it re-encoded: not a simulcast
/// layer (`video.*`), so viewers are not offered it.
pub const ORIGINAL_VIDEO: &str = tracks::ORIGINAL_VIDEO;

/// A publisher's broadcast and the state needed to feed it.
pub struct Publish {
    broadcast: BroadcastProducer,
    video: Arc<TrackProducer>,
    /// Shared with the AAC transcoder's thread, which writes the Opus it makes.
    audio: Arc<TrackProducer>,
    avc: Option<AvcConfig>,
    aac: Option<AacWorker>,
    bframes: bool,
    video_frames: u64,
    /// The ADTS header's configuration the transcoder was set up with.
    adts_config: Option<[u8; 2]>,
    hevc: bool,
    hevc_config: Option<HevcConfig>,
    av1: bool,
    av1_config: Option<Bytes>,
    opus_packets: u64,
    /// Re-encoders of this node, when it has any to give.
    budget: Option<Arc<Budget>>,
    /// This channel's lower layers, made from its H.264 (empty: none).
    ladder: Vec<LayerSpec>,
    /// Their tracks (see [`Publish::offer_layers`]); kept open if the re-encoder ends, so
    /// their viewers move to a layer that plays.
    layers: Vec<(LayerSpec, Arc<TrackProducer>)>,
    /// Whether the ladder was started (or could not be; tried again at each access unit
    /// while every re-encoder is busy, a look at an atomic count).
    ladder_tried: bool,
    /// Told the log that every re-encoder was busy (once a channel).
    busy_told: bool,
    /// This channel's, once its ladder or its B-frames called for one.
    reencoder: Option<VideoWorker>,
    /// The source video, kept on the bus while `video` is re-encoded.
    original: Option<TrackProducer>,
    /// H.264 for viewers that cannot decode this channel's H.265 or AV1.
    on_demand: Option<OnDemand>,
    /// `video` takes the source again from its next keyframe (its re-encoder ended).
    source_after_keyframe: bool,
}

/// The H.264 codec `config` describes.
fn h264_codec(config: &AvcConfig) -> VideoCodec {
    VideoCodec::H264 {
        sps: config.sps.clone(),
        pps: config.pps.clone(),
    }
}

/// Opus packets passed through start a group on the bus every second (50 x 20 ms).
const OPUS_PACKETS_PER_GROUP: u64 = 50;

impl Publish {
    /// Starts feeding `broadcast`: creates its `video` and `audio.opus` tracks.
    pub fn new(broadcast: BroadcastProducer) -> Self {
        let video = Arc::new(broadcast.create_track(tracks::VIDEO));
        let audio = Arc::new(broadcast.create_track(tracks::AUDIO_OPUS));
        audio.set_codec(Codec::Audio(AudioCodec::Opus { channels: 2 }));
        Self {
            broadcast,
            video,
            audio,
            avc: None,
            aac: None,
            bframes: false,
            video_frames: 0,
            adts_config: None,
            hevc: false,
            hevc_config: None,
            av1: false,
            av1_config: None,
            opus_packets: 0,
            budget: None,
            ladder: Vec::new(),
            layers: Vec::new(),
            ladder_tried: false,
            busy_told: false,
            reencoder: None,
            original: None,
            on_demand: None,
            source_after_keyframe: false,
        }
    }

    /// Re-encodes H.264 video with B-frames, and makes `ladder`'s lower layers from H.264,
    /// when `budget` has room (one place for both).
    pub fn with_transcoding(mut self, budget: Arc<Budget>, ladder: Vec<LayerSpec>) -> Self {
        self.budget = Some(budget);
        self.ladder = ladder;
        self
    }

    /// Whether the video is being re-encoded (a ladder, or without B-frames).
    pub fn reencoding(&self) -> bool {
        self.reencoder.is_some()
    }

    /// One H.264 access unit onto the bus: as it is, or through the re-encoder once that
    /// runs (the source then on [`ORIGINAL_VIDEO`]).
    fn write_h264(&mut self, frame: Frame) {
        if frame.keyframe {
            self.retry_reencode();
        }
        self.start_ladder();
        if let Some(reencoder) = &mut self.reencoder {
            reencoder.push(&frame);
            if !reencoder.is_running() {
                self.reencoder_ended();
            } else {
                if let Some(original) = &self.original {
                    original.write(frame.clone());
                }
                if reencoder.started() {
                    return;
                }
            }
        }
        if self.source_after_keyframe {
            if !frame.keyframe {
                return;
            }
            self.source_after_keyframe = false;
        }
        self.video.write(frame);
    }

    /// The re-encoder's thread ended by itself (libavcodec failed, or it panicked): viewers
    /// get the source on `video` again from its next keyframe, as before the re-encode, and
    /// this channel is transcoded no more (nor tried again, which could fail the same way).
    fn reencoder_ended(&mut self) {
        warn!("the video re-encoder ended; viewers get the video as it is sent");
        self.reencoder = None;
        self.budget = None;
        self.ladder.clear();
        self.broadcast.set_transcoding(None);
        if self.original.take().is_some() {
            // `video` carried the re-encode: its pictures and parameters go.
            self.source_after_keyframe = true;
            if let Some(config) = &self.avc {
                self.video.set_codec(Codec::Video(h264_codec(config)));
            }
            if self.bframes {
                self.broadcast.set_notice(Some(BFRAMES_NOTICE.to_owned()));
            }
        }
    }

    /// The source's H.264 parameters: on `video`, or on the original's track while `video`
    /// carries the re-encoder's.
    fn set_h264_codec(&mut self, codec: VideoCodec) {
        match &self.original {
            Some(original) => original.set_codec(Codec::Video(codec)),
            None => self.video.set_codec(Codec::Video(codec)),
        }
        self.offer_layers();
    }

    /// The ladder's tracks, on the bus from the first H.264 parameters on (empty until the
    /// ladder runs): a viewer who joins while every re-encoder is busy is answered as a viewer
    /// of layers (its bandwidth estimated), so it can move to one once the ladder starts.
    fn offer_layers(&mut self) {
        let may = self.budget.as_ref().is_some_and(|b| b.max_channels() > 0);
        if !self.layers.is_empty() || !may {
            return;
        }
        self.layers = self
            .ladder
            .iter()
            .map(|spec| {
                let track = Arc::new(self.broadcast.create_track(&spec.track));
                (spec.clone(), track)
            })
            .collect();
    }

    /// Starts the channel's ladder at its first H.264 access unit, if it has one and the node
    /// has room: the layers on their tracks, keyframes on the source's keyframes.
    fn start_ladder(&mut self) {
        if std::mem::replace(&mut self.ladder_tried, true) || self.ladder.is_empty() {
            return;
        }
        let Some(budget) = &self.budget else { return };
        let Some(slot) = budget.try_take() else {
            if !std::mem::replace(&mut self.busy_told, true) {
                warn!("every video re-encoder is busy (transcode.max_channels); no ladder for this channel until one frees");
            }
            self.ladder_tried = false;
            return;
        };
        self.offer_layers();
        match VideoWorker::start_ladder(self.video.clone(), self.layers.clone(), slot) {
            Ok(worker) => {
                info!(layers = self.ladder.len(), "video ladder started");
                self.reencoder = Some(worker);
                let heights: Vec<String> = self
                    .ladder
                    .iter()
                    .map(|l| format!("{}p", l.height))
                    .collect();
                self.broadcast.set_transcoding(Some(format!(
                    "The server makes lower layers of this stream ({}), so that viewers on slow \
                     links keep a picture.",
                    heights.join(", ")
                )));
            }
            Err(err) => warn!(%err, "cannot make this channel's ladder"),
        }
    }

    /// At a keyframe: the re-encode without B-frames that found every re-encoder busy is
    /// tried again (the ladder is, in [`Publish::start_ladder`]).
    fn retry_reencode(&mut self) {
        if !self.bframes || self.original.is_some() || self.hevc {
            return;
        }
        if self.start_reencoder() {
            info!("a video re-encoder came free; this channel's B-frames are re-encoded away now");
            self.broadcast.set_notice(Some(REENCODED_NOTICE.to_owned()));
        }
    }

    /// Re-encodes this channel's H.264 without B-frames onto `video` (the ladder's re-encoder
    /// if it has one, else one of its own), if the node has room.
    fn start_reencoder(&mut self) -> bool {
        self.start_ladder();
        let Some(config) = &self.avc else {
            return false;
        };
        let original = || {
            let original = self.broadcast.create_track(ORIGINAL_VIDEO);
            original.set_codec(Codec::Video(h264_codec(config)));
            original
        };
        if let Some(reencoder) = &mut self.reencoder {
            reencoder.reencode_full();
            self.original = Some(original());
            return true;
        }
        let Some(budget) = &self.budget else {
            return false;
        };
        let Some(slot) = budget.try_take() else {
            if !std::mem::replace(&mut self.busy_told, true) {
                warn!("every video re-encoder is busy (transcode.max_channels); B-frames pass as they are until one frees");
            }
            return false;
        };
        match VideoWorker::start(self.video.clone(), slot) {
            Ok(worker) => {
                self.original = Some(original());
                self.reencoder = Some(worker);
                true
            }
            Err(err) => {
                warn!(%err, "cannot re-encode this video; B-frames pass as they are");
                false
            }
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
                let codec = h264_codec(&config);
                info!(codec = %codec.describe(), "video configured");
                self.set_h264_codec(codec);
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
        self.note_bframes(cts_ms != 0);
        let pts_ms = dts_ms.saturating_add_signed(i64::from(cts_ms));
        self.video_frames += 1;
        self.write_h264(Frame::new(pts_ms * 90, keyframe, payload, arrived));
    }

    /// New AAC configuration (an AudioSpecificConfig).
    pub fn aac_config(&mut self, asc: &Bytes) {
        if self.aac.as_ref().is_some_and(|t| t.is_for(asc)) {
            return;
        }
        match AacWorker::start(asc, self.audio.clone()) {
            Ok(t) => {
                info!(input = %t.describe(), "audio configured, transcoding to Opus");
                self.aac = Some(t);
            }
            Err(err) => warn!(%err, "cannot transcode this audio; the stream has no sound"),
        }
    }

    /// One raw AAC access unit at `timestamp_ms`.
    pub fn aac_frame(&mut self, data: &[u8], timestamp_ms: u64, arrived: Instant) {
        self.tick_on_demand(arrived);
        if let Some(aac) = &mut self.aac {
            aac.push(data, timestamp_ms, arrived);
        }
    }

    /// One H.264 access unit in Annex B (MPEG-TS), times at 90 kHz. Parameter sets in the
    /// stream configure the track; a keyframe without them gets the last ones put in front.
    pub fn h264_annexb(&mut self, au: &Bytes, pts: u64, dts: u64, arrived: Instant) {
        let units = avc::annexb_nal_units(au);
        let (sps, pps) = avc::annexb_parameter_sets(au);
        let changed = self
            .avc
            .as_ref()
            .is_none_or(|c| c.sps != sps || c.pps != pps);
        if !sps.is_empty() && !pps.is_empty() && changed {
            let codec = VideoCodec::H264 {
                sps: sps.clone(),
                pps: pps.clone(),
            };
            info!(codec = %codec.describe(), "video configured");
            self.set_h264_codec(codec);
            self.avc = Some(AvcConfig {
                length_size: 4,
                sps,
                pps,
            });
        }
        let Some(config) = &self.avc else {
            debug!("video before its parameter sets; dropped");
            return;
        };
        let keyframe = units.iter().any(|u| avc::nal_type(u) == nal::IDR);
        let has_params = units.iter().any(|u| avc::nal_type(u) == nal::SPS);
        let mut out = BytesMut::with_capacity(au.len() + 64);
        let params = config.sps.iter().chain(&config.pps);
        let units = units.iter().filter(|u| avc::nal_type(u) != nal::AUD);
        for unit in params.filter(|_| keyframe && !has_params).chain(units) {
            out.put_slice(&[0, 0, 0, 1]);
            out.put_slice(unit);
        }
        self.note_bframes(pts != dts);
        self.video_frames += 1;
        self.write_h264(Frame::new(pts, keyframe, out.freeze(), arrived));
    }

    /// New H.265 decoder configuration (an `hvcC` record, enhanced RTMP).
    pub fn hevc_config(&mut self, record: &Bytes) {
        match HevcConfig::parse(record) {
            Ok(config) => {
                self.hevc_config = Some(config);
                // Known before the first frame: a viewer who joins now is answered for it.
                self.configure_h265();
                self.offer_h264(Source::H265);
            }
            Err(err) => warn!(%err, "ignoring malformed HEVC sequence header"),
        }
    }

    /// One length-prefixed H.265 access unit (enhanced RTMP), decode time `dts_ms` plus the
    /// composition offset.
    pub fn hevc_frame(&mut self, data: &Bytes, dts_ms: u64, cts_ms: i32, arrived: Instant) {
        let Some(config) = &self.hevc_config else {
            debug!("video before its sequence header; dropped");
            return;
        };
        let annexb = match hevc::to_annexb(data, config) {
            Ok((annexb, _)) => annexb,
            Err(err) => {
                debug!(%err, "dropping malformed video frame");
                return;
            }
        };
        let pts_ms = dts_ms.saturating_add_signed(i64::from(cts_ms));
        self.h265_annexb(&annexb, pts_ms * 90, dts_ms * 90, arrived);
    }

    /// New AV1 configuration (an `av1C` record, enhanced RTMP): its config OBUs (the
    /// sequence header) go in front of keyframes that lack them.
    pub fn av1_config(&mut self, record: &Bytes) {
        // Marker and version (1), profile and level (1), tier, depth, ... (1), delay (1).
        if record.len() < 4 || record[0] != 0x81 {
            warn!("ignoring malformed AV1 sequence header");
            return;
        }
        self.av1_config = Some(record.slice(4..));
        if !self.av1 {
            self.av1 = true;
            info!(codec = %VideoCodec::Av1.describe(), "video configured");
            self.video.set_codec(Codec::Video(VideoCodec::Av1));
        }
        self.offer_h264(Source::Av1);
    }

    /// One AV1 temporal unit (OBUs in the low-overhead format), at `pts_ms`.
    pub fn av1_frame(&mut self, data: &Bytes, pts_ms: u64, keyframe: bool, arrived: Instant) {
        let Some(config) = &self.av1_config else {
            debug!("video before its sequence header; dropped");
            return;
        };
        // A sequence header OBU is type 1: bits 3-6 of the OBU header.
        let has_sequence_header = data.first().is_some_and(|h| (h >> 3) & 0x0f == 1)
            || data.get(2).is_some_and(|h| (h >> 3) & 0x0f == 1);
        let payload = if keyframe && !has_sequence_header && !config.is_empty() {
            let mut joined = BytesMut::with_capacity(config.len() + data.len());
            joined.put_slice(config);
            joined.put_slice(data);
            joined.freeze()
        } else {
            data.clone()
        };
        self.video_frames += 1;
        self.write_for_h264(
            Source::Av1,
            Frame::new(pts_ms * 90, keyframe, payload, arrived),
        );
    }

    /// A frame of H.265 or AV1 onto `video`, and to the H.264 made from it while a viewer
    /// needs that (offered once the node has re-encoders).
    fn write_for_h264(&mut self, source: Source, frame: Frame) {
        self.offer_h264(source);
        if let Some(on_demand) = &mut self.on_demand {
            on_demand.push(&frame, &self.broadcast);
        }
        self.video.write(frame);
    }

    /// Offers H.264 made from `source` video to viewers that cannot decode it, if the node
    /// has re-encoders.
    fn offer_h264(&mut self, source: Source) {
        if self.on_demand.is_none() {
            if let Some(budget) = self.budget.as_ref().filter(|b| b.max_channels() > 0) {
                self.on_demand = Some(OnDemand::offer(source, &self.broadcast, budget.clone()));
            }
        }
    }

    /// At the channel's audio: on-demand H.264 stops when unwatched even while no video
    /// comes (an encoder that lost its camera), giving its re-encoder back.
    fn tick_on_demand(&mut self, arrived: Instant) {
        if let Some(on_demand) = &mut self.on_demand {
            on_demand.tick(arrived, &self.broadcast);
        }
    }

    fn configure_h265(&mut self) {
        if !self.hevc {
            self.hevc = true;
            info!(codec = %VideoCodec::H265.describe(), "video configured");
            self.video.set_codec(Codec::Video(VideoCodec::H265));
        }
    }

    /// One H.265 access unit in Annex B (parameter sets travel in band), PTS at 90 kHz.
    pub fn h265_annexb(&mut self, au: &Bytes, pts: u64, dts: u64, arrived: Instant) {
        self.configure_h265();
        // IRAP pictures (BLA, IDR, CRA: NAL types 16-21) start a group.
        let keyframe = avc::annexb_nal_units(au).iter().any(|u| {
            u.first()
                .is_some_and(|h| (16..=21).contains(&((h >> 1) & 0x3f)))
        });
        self.note_bframes(pts != dts);
        self.video_frames += 1;
        self.write_for_h264(Source::H265, Frame::new(pts, keyframe, au.clone(), arrived));
    }

    /// A run of ADTS AAC frames (MPEG-TS), the first at `timestamp_ms`.
    pub fn aac_adts(&mut self, data: &Bytes, timestamp_ms: u64, arrived: Instant) {
        let mut at = timestamp_ms as f64;
        for frame in es::adts_frames(data) {
            if self.adts_config != Some(frame.config) {
                self.adts_config = Some(frame.config);
                self.aac_config(&Bytes::copy_from_slice(&frame.config));
            }
            self.aac_frame(&frame.data, at as u64, arrived);
            // 1024 samples per AAC frame, in milliseconds.
            at += 1024.0 * 1000.0 / f64::from(frame.sample_rate);
        }
    }

    /// Opus access units as MPEG-TS carries them, the first at `timestamp` (48 kHz): passed
    /// through as they are.
    pub fn opus_ts(&mut self, data: &Bytes, timestamp: u64, arrived: Instant) {
        let mut at = timestamp;
        for packet in es::opus_packets(data) {
            let Some(samples) = es::opus_samples(&packet) else {
                continue;
            };
            self.opus_packet(packet, at, arrived);
            at += u64::from(samples);
        }
    }

    /// One Opus packet at `timestamp` (48 kHz), passed through (malformed ones dropped).
    pub fn opus_packet(&mut self, packet: Bytes, timestamp: u64, arrived: Instant) {
        self.tick_on_demand(arrived);
        if es::opus_samples(&packet).is_none() {
            return;
        }
        let group_start = self.opus_packets.is_multiple_of(OPUS_PACKETS_PER_GROUP);
        self.opus_packets += 1;
        self.audio
            .write(Frame::new(timestamp, group_start, packet, arrived));
    }

    fn note_bframes(&mut self, reordered: bool) {
        if reordered && !self.bframes {
            self.bframes = true;
            // H.264 is re-encoded without them when the node has room; else viewers are told
            // which setting to change.
            if !self.hevc && self.start_reencoder() {
                info!("publisher sends B-frames; its video is re-encoded without them");
                self.broadcast.set_notice(Some(REENCODED_NOTICE.to_owned()));
            } else {
                warn!("publisher sends B-frames; viewers are told which setting to change");
                self.broadcast.set_notice(Some(BFRAMES_NOTICE.to_owned()));
            }
        }
    }

    /// Frames of video written so far.
    pub fn video_frames(&self) -> u64 {
        self.video_frames
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use media::{Bus, ChannelName, TrackLimits};

    use super::*;
    use crate::transcode::video::samples;
    use crate::transcode::video_worker::TranscodeConfig;

    /// A channel fed on a node with one re-encoder (and `ladder`), a viewer's look at its
    /// broadcast, and the node's re-encoders.
    fn one_reencoder(ladder: Vec<LayerSpec>) -> (Publish, media::BroadcastConsumer, Arc<Budget>) {
        let bus = Bus::new(TrackLimits::default());
        let broadcast = bus.publish(ChannelName::new("obs").unwrap()).unwrap();
        let consumer = broadcast.consume();
        let budget = Budget::new(TranscodeConfig {
            max_channels: 1,
            ..TranscodeConfig::default()
        });
        let publish = Publish::new(broadcast).with_transcoding(budget.clone(), ladder);
        (publish, consumer, budget)
    }

    #[test]
    fn b_frames_are_re_encoded_once_a_re_encoder_frees() {
        let (mut publish, consumer, budget) = one_reencoder(Vec::new());
        let input = samples::obs_like(160, 96, 90);
        let busy = budget.try_take().unwrap();
        let start = Instant::now();
        let push = |publish: &mut Publish, range: std::ops::Range<usize>| {
            for i in range {
                let (au, pts) = &input[i % input.len()];
                // Decode order with the pictures' own times: B-frames show as pts != dts.
                let dts = (i as u64) * 3000;
                let pts = pts + 6000;
                publish.h264_annexb(&Bytes::from(au.clone()), pts, dts, start);
            }
        };
        push(&mut publish, 0..20);
        assert!(!publish.reencoding());
        assert_eq!(consumer.notice().as_deref(), Some(BFRAMES_NOTICE));
        drop(busy);
        // At the source's next keyframe (one a second: picture 30).
        push(&mut publish, 20..40);
        assert!(publish.reencoding());
        assert_eq!(consumer.notice().as_deref(), Some(REENCODED_NOTICE));
        assert!(consumer.track(ORIGINAL_VIDEO).is_some());
    }

    #[test]
    fn a_re_encoder_that_ends_gives_viewers_the_source_again() {
        let (mut publish, consumer, budget) = one_reencoder(Vec::new());
        let input = samples::obs_like(160, 96, 60);
        let start = Instant::now();
        let mut next = 0usize;
        let mut push = |publish: &mut Publish| {
            let (au, pts) = &input[next % input.len()];
            // Times go on rising past the end of the sample, which starts again.
            let lap = (next / input.len() * input.len()) as u64 * 3000;
            let dts = (next as u64) * 3000;
            publish.h264_annexb(&Bytes::from(au.clone()), pts + 6000 + lap, dts, start);
            next += 1;
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !publish.reencoder.as_ref().is_some_and(VideoWorker::started) {
            assert!(Instant::now() < deadline, "the re-encode never showed");
            push(&mut publish);
            std::thread::sleep(Duration::from_millis(5));
        }
        let source_sps = publish.avc.as_ref().unwrap().sps.clone();
        let video = consumer.track(tracks::VIDEO).unwrap();
        let reencoded_sps = |video: &media::TrackConsumer| match video.codec() {
            Some(Codec::Video(VideoCodec::H264 { sps, .. })) => sps,
            other => panic!("not H.264: {other:?}"),
        };
        assert_ne!(reencoded_sps(&video), source_sps, "x264 makes its own");

        // Its thread ends (as if libavcodec had failed): the source is `video` again.
        publish.reencoder.as_ref().unwrap().end_for_test();
        while publish.reencoding() {
            assert!(
                Instant::now() < deadline,
                "the ended re-encoder was not noticed"
            );
            push(&mut publish);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert_eq!(reencoded_sps(&video), source_sps);
        assert_eq!(consumer.notice().as_deref(), Some(BFRAMES_NOTICE));
        assert!(consumer.transcoding().is_none());
        let mut reader = consumer.track(tracks::VIDEO).unwrap();
        reader.skip_to_next_group();
        for _ in 0..40 {
            push(&mut publish);
        }
        // From the source's next keyframe on, its own pictures (its parameter sets in front).
        let first = reader
            .try_next_frame()
            .unwrap()
            .expect("no source pictures");
        assert!(first.keyframe);
        assert_eq!(avc::annexb_parameter_sets(&first.payload).0, source_sps);
        let mut pictures = 1;
        while let Ok(Some(_)) = reader.try_next_frame() {
            pictures += 1;
        }
        assert!(pictures >= 10, "{pictures} pictures after the keyframe");
        // Its place is given back, and nothing tries to take it again.
        let deadline = Instant::now() + Duration::from_secs(5);
        while budget.running() > 0 {
            assert!(Instant::now() < deadline, "the place was not given back");
            std::thread::sleep(Duration::from_millis(10));
        }
        for _ in 0..40 {
            push(&mut publish);
        }
        assert!(!publish.reencoding());
        assert_eq!(budget.running(), 0);
    }

    #[test]
    fn a_ladders_layers_are_offered_before_a_re_encoder_frees() {
        let (mut publish, consumer, budget) = one_reencoder(vec![LayerSpec {
            track: "video.l".into(),
            height: 48,
            bitrate: 100_000,
        }]);
        let input = samples::without_bframes(160, 96, 60);
        let start = Instant::now();
        let push = |publish: &mut Publish, range: std::ops::Range<usize>| {
            for i in range {
                let (au, pts) = &input[i % input.len()];
                publish.h264_annexb(&Bytes::from(au.clone()), *pts, *pts, start);
            }
        };
        let busy = budget.try_take().unwrap();
        push(&mut publish, 0..20);
        // Offered (a viewer now is answered as a viewer of layers), empty, no re-encoder.
        assert!(!publish.reencoding());
        let layer = consumer
            .peek_track("video.l")
            .expect("the layer is offered");
        assert!(layer.latest_group().is_none());
        drop(busy);
        push(&mut publish, 20..21);
        assert!(publish.reencoding());
        // The same track gets the layer's pictures once the ladder runs (from picture 30).
        push(&mut publish, 21..60);
        let deadline = Instant::now() + Duration::from_secs(5);
        while layer.latest_group().is_none() {
            assert!(
                Instant::now() < deadline,
                "no pictures on the offered layer"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
