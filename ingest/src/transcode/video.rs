//! H.264 with B-frames in, H.264 without out (issue 19's first piece; not wired to publishers
//! yet): libavcodec decodes, libx264 encodes with zero-latency tuning and no B-frames, so
//! WebRTC receivers, which do not reorder, play every frame. Through ffmpeg-next over Debian's
//! FFmpeg (5.1), the library made for this, rather than bindings of our own.
//!
//! Measured (spike, 2026-12-03, one core of this 2-core Xeon): a 720p30 High-profile stream
//! with 3 B-frames (b-pyramid) decoded and re-encoded at `veryfast`: 12.6 ms per frame at p50,
//! 14.8 ms at p99, so about 38% of a core per channel. The decoder holds back as many frames as
//! the stream reorders (2-3 at 30 fps, about 100 ms): the latency a re-encode adds at least.

use bytes::Bytes;
use ffmpeg_next as ff;
use media::bitstream::avc;

/// Why video could not be re-encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VideoError {
    /// libavcodec or libx264 could not be set up.
    #[error("video transcoder set-up: {0}")]
    Setup(String),
    /// An access unit did not decode, or a picture did not encode.
    #[error("video transcode: {0}")]
    Codec(String),
}

/// The encoder's settings.
#[derive(Clone, Debug)]
pub struct VideoSettings {
    /// Bits per second the encoder aims at.
    pub bitrate: usize,
    /// Frames between keyframes at most.
    pub keyframe_interval: u32,
    /// x264 preset (`veryfast` keeps a 720p30 channel under half a core).
    pub preset: String,
}

impl Default for VideoSettings {
    fn default() -> Self {
        Self {
            bitrate: 2_500_000,
            keyframe_interval: 60,
            preset: "veryfast".into(),
        }
    }
}

/// One re-encoded access unit (Annex B, parameter sets in front of keyframes).
#[derive(Debug)]
pub struct EncodedFrame {
    /// Presentation time at 90 kHz, as it came in.
    pub pts: u64,
    /// Whether it is an IDR picture.
    pub keyframe: bool,
    /// The access unit.
    pub data: Bytes,
}

/// Time base of everything here: 90 kHz, as the bus has it.
const TIME_BASE: (i32, i32) = (1, 90_000);

/// A decoder and, once the first picture shows its size, an encoder.
pub struct Reencode {
    settings: VideoSettings,
    decoder: ff::decoder::Video,
    encoder: Option<ff::encoder::video::Encoder>,
    picture: ff::frame::Video,
}

fn setup(err: ff::Error) -> VideoError {
    VideoError::Setup(err.to_string())
}

fn codec(err: ff::Error) -> VideoError {
    VideoError::Codec(err.to_string())
}

impl Reencode {
    /// A re-encoder of H.264 with `settings`.
    pub fn new(settings: VideoSettings) -> Result<Self, VideoError> {
        ff::init().map_err(setup)?;
        // libavcodec and libx264 talk on stderr; only their errors belong in a node's log.
        ff::log::set_level(ff::log::Level::Error);
        let h264 = ff::decoder::find(ff::codec::Id::H264)
            .ok_or_else(|| VideoError::Setup("no H.264 decoder in libavcodec".into()))?;
        let mut context = ff::codec::Context::new_with_codec(h264);
        context.set_time_base(TIME_BASE);
        let decoder = context.decoder().video().map_err(setup)?;
        Ok(Self {
            settings,
            decoder,
            encoder: None,
            picture: ff::frame::Video::empty(),
        })
    }

    /// One access unit (Annex B) presented at `pts` (90 kHz); what the encoder has ready.
    pub fn push(&mut self, au: &[u8], pts: u64) -> Result<Vec<EncodedFrame>, VideoError> {
        let mut packet = ff::Packet::copy(au);
        packet.set_pts(i64::try_from(pts).ok());
        self.decoder.send_packet(&packet).map_err(codec)?;
        let mut out = Vec::new();
        while self.decoder.receive_frame(&mut self.picture).is_ok() {
            let pts = self.picture.pts().or(self.picture.timestamp());
            self.picture.set_pts(pts);
            self.picture.set_kind(ff::picture::Type::None);
            if self.encoder.is_none() {
                self.encoder = Some(self.open_encoder()?);
            }
            let encoder = self
                .encoder
                .as_mut()
                .ok_or_else(|| VideoError::Setup("encoder".into()))?;
            encoder.send_frame(&self.picture).map_err(codec)?;
            Self::drain(encoder, &mut out);
        }
        Ok(out)
    }

    fn drain(encoder: &mut ff::encoder::video::Encoder, out: &mut Vec<EncodedFrame>) {
        let mut packet = ff::Packet::empty();
        while encoder.receive_packet(&mut packet).is_ok() {
            let Some(data) = packet.data() else { continue };
            let data = Bytes::copy_from_slice(data);
            let keyframe = avc::annexb_nal_units(&data)
                .iter()
                .any(|u| avc::nal_type(u) == avc::nal::IDR);
            out.push(EncodedFrame {
                pts: packet
                    .pts()
                    .and_then(|p| u64::try_from(p).ok())
                    .unwrap_or(0),
                keyframe,
                data,
            });
        }
    }

    fn open_encoder(&self) -> Result<ff::encoder::video::Encoder, VideoError> {
        let x264 = ff::encoder::find_by_name("libx264")
            .ok_or_else(|| VideoError::Setup("no libx264 in libavcodec".into()))?;
        let mut context = ff::codec::Context::new_with_codec(x264)
            .encoder()
            .video()
            .map_err(setup)?;
        context.set_width(self.picture.width());
        context.set_height(self.picture.height());
        context.set_format(ff::format::Pixel::YUV420P);
        context.set_time_base(TIME_BASE);
        context.set_max_b_frames(0);
        context.set_gop(self.settings.keyframe_interval);
        context.set_bit_rate(self.settings.bitrate);
        let mut options = ff::Dictionary::new();
        options.set("preset", &self.settings.preset);
        options.set("tune", "zerolatency");
        options.set("profile", "main");
        context.open_with(options).map_err(setup)
    }
}

/// Streams for tests and benchmarks (not an API).
#[doc(hidden)]
pub mod samples {
    use super::*;

    /// `n` pictures (`width` x `height`) of a moving gradient, encoded as OBS does by
    /// default: High profile with 3 B-frames and b-pyramid, a keyframe a second at 30 fps; each
    /// access unit with its presentation time (90 kHz), in decode order.
    pub fn obs_like(width: u32, height: u32, n: i64) -> Vec<(Vec<u8>, u64)> {
        ff::init().expect("libx264 in libavcodec");
        ff::log::set_level(ff::log::Level::Error);
        let x264 = ff::encoder::find_by_name("libx264").expect("libx264 in libavcodec");
        let mut context = ff::codec::Context::new_with_codec(x264)
            .encoder()
            .video()
            .expect("libx264 in libavcodec");
        context.set_width(width);
        context.set_height(height);
        context.set_format(ff::format::Pixel::YUV420P);
        context.set_time_base(TIME_BASE);
        context.set_max_b_frames(3);
        context.set_gop(30);
        let mut options = ff::Dictionary::new();
        options.set("preset", "veryfast");
        options.set("profile", "high");
        options.set("x264-params", "b-pyramid=normal");
        let mut encoder = context.open_with(options).expect("libx264 in libavcodec");
        let mut out = Vec::new();
        let mut take = |encoder: &mut ff::encoder::video::Encoder| {
            let mut packet = ff::Packet::empty();
            while encoder.receive_packet(&mut packet).is_ok() {
                let pts = u64::try_from(packet.pts().expect("libx264 in libavcodec"))
                    .expect("libx264 in libavcodec");
                out.push((packet.data().expect("libx264 in libavcodec").to_vec(), pts));
            }
        };
        for i in 0..n {
            let mut picture = ff::frame::Video::new(ff::format::Pixel::YUV420P, width, height);
            for (plane, value) in [(0, 16 + (i * 3) % 200), (1, 128), (2, 128)] {
                let stride = picture.stride(plane);
                let data = picture.data_mut(plane);
                for (at, byte) in data.iter_mut().enumerate() {
                    *byte = (value as usize + (at % stride) / 4) as u8;
                }
            }
            picture.set_pts(Some(i * 3000));
            encoder.send_frame(&picture).expect("libx264 in libavcodec");
            take(&mut encoder);
        }
        encoder.send_eof().expect("libx264 in libavcodec");
        take(&mut encoder);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn b_frames_in_none_out_every_picture_in_order() {
        let input = samples::obs_like(320, 240, 90);
        let reordered = input.windows(2).any(|w| w[1].1 < w[0].1);
        assert!(reordered, "the input must have B-frames");
        let mut reencode = Reencode::new(VideoSettings::default()).unwrap();
        let mut out = Vec::new();
        for (au, pts) in &input {
            out.extend(reencode.push(au, *pts).unwrap());
        }
        // Decode order is presentation order now, and the first picture is a keyframe with
        // its parameter sets, so a viewer can start there.
        assert!(out.windows(2).all(|w| w[1].pts > w[0].pts), "no reordering");
        assert!(out[0].keyframe);
        let (sps, pps) = avc::annexb_parameter_sets(&out[0].data);
        assert!(!sps.is_empty() && !pps.is_empty());
        // The decoder and encoder hold back only the reorder depth.
        assert!(
            out.len() >= input.len() - 4,
            "{} of {}",
            out.len(),
            input.len()
        );
    }

    #[test]
    fn garbage_is_an_error_not_a_crash() {
        let mut reencode = Reencode::new(VideoSettings::default()).unwrap();
        for junk in [&[0u8, 0, 0, 1, 0x65, 0xff, 0x00][..], &[1, 2, 3], &[]] {
            let _ = reencode.push(junk, 0);
        }
    }
}
