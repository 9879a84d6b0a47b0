//! Video in (H.264 with B-frames, or H.265 or AV1), H.264 without B-frames out, at the
//! source's size and at a ladder's lower ones: libavcodec decodes, libx264 encodes with
//! zero-latency tuning and no B-frames, so WebRTC receivers, which do not reorder, play every
//! frame. Through ffmpeg-next over Debian's
//! FFmpeg (5.1), the library made for this, rather than bindings of our own.
//!
//! Measured (`cargo bench -p ingest --bench reencode`, one core of this 2-core Xeon): a 720p30
//! High-profile stream with 3 B-frames (b-pyramid) decoded and re-encoded at `veryfast`, 2.5
//! Mbit/s: 15.6-17.3 ms per frame at p50, 23-26 ms at p99, about half a core per channel. The
//! decoder holds back as many frames as the stream reorders (2 here, 67 ms at 30 fps): the
//! latency a re-encode adds at least.

use bytes::Bytes;
use ffmpeg_next as ff;
use media::bitstream::avc;
use tracing::debug;

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

/// Largest picture decoded (3840 x 2160): what a publisher's parameter sets can make this
/// node allocate and encode.
pub const MAX_PIXELS: u32 = 3840 * 2160;

/// Time base of everything here: 90 kHz, as the bus has it.
const TIME_BASE: (i32, i32) = (1, 90_000);

/// A layer of a ladder: its height (the width keeps the source's aspect) and bitrate.
#[derive(Clone, Debug, serde::Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LayerSpec {
    /// The bus track it goes to (`video.m`, `video.l`: simulcast layers the SFU chooses among).
    pub track: String,
    /// Height in pixels (even; the width follows the source's aspect).
    pub height: u32,
    /// Bits per second.
    pub bitrate: usize,
}

/// One encoded output: the source's size (re-encoded without B-frames) or a ladder layer.
struct Output {
    /// `None`: the source's size.
    height: Option<u32>,
    settings: VideoSettings,
    encoder: Option<ff::encoder::video::Encoder>,
    scaler: Option<ff::software::scaling::Context>,
    scaled: ff::frame::Video,
    /// The decoded size and format the encoder and scaler were made for: another (the source
    /// changed resolution or pixel format) makes them anew, with a keyframe and new parameter
    /// sets.
    made_for: Option<(u32, u32, ff::format::Pixel)>,
}

impl Output {
    fn new(height: Option<u32>, settings: VideoSettings) -> Self {
        Self {
            height,
            settings,
            encoder: None,
            scaler: None,
            scaled: ff::frame::Video::empty(),
            made_for: None,
        }
    }

    /// Forgets the encoder and scaler: the next picture makes them anew.
    fn reset(&mut self) {
        self.encoder = None;
        self.scaler = None;
        self.scaled = ff::frame::Video::empty();
        self.made_for = None;
    }

    /// Encodes `picture` (decoded, of `size`) scaled to this output, as a picture of `kind`;
    /// what the encoder has ready goes to `out` under `index`.
    fn encode(
        &mut self,
        picture: &ff::frame::Video,
        size: (u32, u32, ff::format::Pixel),
        kind: ff::picture::Type,
        index: usize,
        out: &mut Vec<(usize, EncodedFrame)>,
    ) -> Result<(), VideoError> {
        if self.made_for.is_some_and(|was| was != size) {
            self.reset();
        }
        self.made_for = Some(size);
        let Self {
            height,
            settings,
            encoder,
            scaler,
            scaled,
            ..
        } = self;
        let picture = match sized(*height, scaler, scaled, picture)? {
            Some(scaled) => {
                scaled.set_pts(picture.pts());
                scaled.set_kind(kind);
                &*scaled
            }
            None => picture,
        };
        if encoder.is_none() {
            let (w, h) = (picture.width(), picture.height());
            *encoder = Some(open_encoder(settings, w, h)?);
        }
        let encoder = encoder
            .as_mut()
            .ok_or_else(|| VideoError::Setup("encoder".into()))?;
        encoder.send_frame(picture).map_err(codec)?;
        drain(encoder, index, out);
        Ok(())
    }
}

/// What a [`Reencode`] decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Annex B access units.
    H264,
    /// Annex B access units, parameter sets in band.
    H265,
    /// Temporal units of low-overhead OBUs, the sequence header in front of keyframes.
    Av1,
}

impl Source {
    fn codec_id(self) -> ff::codec::Id {
        match self {
            Source::H264 => ff::codec::Id::H264,
            Source::H265 => ff::codec::Id::HEVC,
            Source::Av1 => ff::codec::Id::AV1,
        }
    }
}

/// A decoder and its outputs, each encoded with libx264 once the first picture shows the size.
/// Every output makes a keyframe where the source has one (and none elsewhere, scene cuts
/// included, within the keyframe interval), so a viewer can switch between layers at any of
/// the source's keyframes.
pub struct Reencode {
    decoder: ff::decoder::Video,
    outputs: Vec<Output>,
    picture: ff::frame::Video,
    /// The next picture is a keyframe in every output (asked for by a viewer).
    keyframe_next: bool,
}

fn setup(err: ff::Error) -> VideoError {
    VideoError::Setup(err.to_string())
}

fn codec(err: ff::Error) -> VideoError {
    VideoError::Codec(err.to_string())
}

impl Reencode {
    /// A re-encoder of H.264 at the source's size with `settings`: output 0.
    pub fn new(settings: VideoSettings) -> Result<Self, VideoError> {
        let mut reencode = Self::decoder_only(Source::H264)?;
        reencode.add_full(settings);
        Ok(reencode)
    }

    /// A decoder of `source` with no outputs yet.
    pub fn decoder_only(source: Source) -> Result<Self, VideoError> {
        ff::init().map_err(setup)?;
        // libavcodec and libx264 talk on stderr; only their errors belong in a node's log.
        ff::log::set_level(ff::log::Level::Error);
        let decoder = ff::decoder::find(source.codec_id())
            .ok_or_else(|| VideoError::Setup(format!("no {source:?} decoder in libavcodec")))?;
        let mut context = ff::codec::Context::new_with_codec(decoder);
        context.set_time_base(TIME_BASE);
        // A publisher's parameter sets may claim any size: larger than 4K is refused by the
        // decoder before it allocates for it.
        let mut options = ff::Dictionary::new();
        options.set("max_pixels", &MAX_PIXELS.to_string());
        let decoder = context
            .decoder()
            .open_as_with(decoder, options)
            .and_then(|opened| opened.video())
            .map_err(setup)?;
        Ok(Self {
            decoder,
            outputs: Vec::new(),
            picture: ff::frame::Video::empty(),
            keyframe_next: false,
        })
    }

    /// Adds an output at the source's size; its index.
    pub fn add_full(&mut self, settings: VideoSettings) -> usize {
        self.outputs.push(Output::new(None, settings));
        self.outputs.len() - 1
    }

    /// Adds a ladder layer; its index.
    pub fn add_layer(&mut self, layer: &LayerSpec, preset: &str) -> usize {
        let settings = VideoSettings {
            bitrate: layer.bitrate,
            preset: preset.to_owned(),
            ..VideoSettings::default()
        };
        self.outputs
            .push(Output::new(Some(layer.height.max(2) & !1), settings));
        self.outputs.len() - 1
    }

    /// Makes the next picture out of the decoder a keyframe in every output (they stay
    /// aligned), for a viewer that asked for one.
    pub fn keyframe_next(&mut self) {
        self.keyframe_next = true;
    }

    /// One access unit (Annex B) presented at `pts` (90 kHz); what the outputs have ready,
    /// each with its output's index.
    pub fn push(&mut self, au: &[u8], pts: u64) -> Result<Vec<(usize, EncodedFrame)>, VideoError> {
        let mut packet = ff::Packet::copy(au);
        packet.set_pts(i64::try_from(pts).ok());
        self.decoder.send_packet(&packet).map_err(codec)?;
        let mut out = Vec::new();
        while self.decoder.receive_frame(&mut self.picture).is_ok() {
            let pts = self.picture.pts().or(self.picture.timestamp());
            // Taken at every picture: a request that meets the source's keyframe is answered.
            let asked = std::mem::take(&mut self.keyframe_next);
            let kind = if self.picture.is_key() || asked {
                ff::picture::Type::I
            } else {
                ff::picture::Type::None
            };
            self.picture.set_pts(pts);
            self.picture.set_kind(kind);
            let size = (
                self.picture.width(),
                self.picture.height(),
                self.picture.format(),
            );
            for (index, output) in self.outputs.iter_mut().enumerate() {
                // One output's failure costs that output this picture, not the others theirs:
                // it starts anew at the next, a keyframe in every output (still aligned).
                if let Err(err) = output.encode(&self.picture, size, kind, index, &mut out) {
                    debug!(%err, output = index, "picture not encoded; that output starts anew");
                    output.reset();
                    self.keyframe_next = true;
                }
            }
        }
        Ok(out)
    }
}

/// The picture an output of `height` encodes scaled to its height (and to 4:2:0) into
/// `scaled`, or `None` when the decoded one is it already.
fn sized<'a>(
    height: Option<u32>,
    scaler: &mut Option<ff::software::scaling::Context>,
    scaled: &'a mut ff::frame::Video,
    picture: &ff::frame::Video,
) -> Result<Option<&'a mut ff::frame::Video>, VideoError> {
    let (w, h) = (picture.width(), picture.height());
    let target_h = height.unwrap_or(h).min(h).max(2) & !1;
    let target_w = ((u64::from(w) * u64::from(target_h) / u64::from(h.max(1))) as u32).max(2) & !1;
    let format = ff::format::Pixel::YUV420P;
    if picture.format() == format && (target_w, target_h) == (w, h) {
        return Ok(None);
    }
    if scaler.is_none() {
        *scaler = Some(
            ff::software::scaling::Context::get(
                picture.format(),
                w,
                h,
                format,
                target_w,
                target_h,
                ff::software::scaling::Flags::BILINEAR,
            )
            .map_err(setup)?,
        );
    }
    let scaler = scaler
        .as_mut()
        .ok_or_else(|| VideoError::Setup("scaler".into()))?;
    scaler.run(picture, scaled).map_err(codec)?;
    Ok(Some(scaled))
}

fn drain(
    encoder: &mut ff::encoder::video::Encoder,
    index: usize,
    out: &mut Vec<(usize, EncodedFrame)>,
) {
    let mut packet = ff::Packet::empty();
    while encoder.receive_packet(&mut packet).is_ok() {
        let Some(data) = packet.data() else { continue };
        let data = Bytes::copy_from_slice(data);
        let keyframe = avc::annexb_nal_units(&data)
            .iter()
            .any(|u| avc::nal_type(u) == avc::nal::IDR);
        out.push((
            index,
            EncodedFrame {
                pts: packet
                    .pts()
                    .and_then(|p| u64::try_from(p).ok())
                    .unwrap_or(0),
                keyframe,
                data,
            },
        ));
    }
}

fn open_encoder(
    settings: &VideoSettings,
    width: u32,
    height: u32,
) -> Result<ff::encoder::video::Encoder, VideoError> {
    let x264 = ff::encoder::find_by_name("libx264")
        .ok_or_else(|| VideoError::Setup("no libx264 in libavcodec".into()))?;
    let mut context = ff::codec::Context::new_with_codec(x264)
        .encoder()
        .video()
        .map_err(setup)?;
    context.set_width(width);
    context.set_height(height);
    context.set_format(ff::format::Pixel::YUV420P);
    context.set_time_base(TIME_BASE);
    // Rate control spends the bitrate per frame at this rate (without it, libx264 takes the
    // 90 kHz time base for the frame rate and starves every frame).
    context.set_frame_rate(Some((30, 1)));
    context.set_max_b_frames(0);
    context.set_gop(settings.keyframe_interval);
    context.set_bit_rate(settings.bitrate);
    let mut options = ff::Dictionary::new();
    options.set("preset", &settings.preset);
    options.set("tune", "zerolatency");
    options.set("profile", "main");
    // Keyframes only where the source has them (forced) or at the interval: the same pictures
    // in every output, so layers switch cleanly.
    options.set("sc_threshold", "0");
    context.open_with(options).map_err(setup)
}

/// Streams for tests and benchmarks (not an API).
#[doc(hidden)]
pub mod samples {
    use super::*;

    /// `n` pictures (`width` x `height`) of a moving gradient, encoded as OBS does by
    /// default: High profile with 3 B-frames and b-pyramid, a keyframe a second at 30 fps; each
    /// access unit with its presentation time (90 kHz), in decode order.
    pub fn obs_like(width: u32, height: u32, n: i64) -> Vec<(Vec<u8>, u64)> {
        encoded(width, height, n, true)
    }

    /// [`obs_like`] without B-frames (`bframes=0`, as the README asks of OBS).
    pub fn without_bframes(width: u32, height: u32, n: i64) -> Vec<(Vec<u8>, u64)> {
        encoded(width, height, n, false)
    }

    /// `n` pictures encoded by libavcodec's `encoder` (`libx265`, `libaom-av1`) without
    /// reordering, as the bus carries them (H.265 Annex B with parameter sets in band; AV1
    /// temporal units with the sequence header in band).
    pub fn other_codec(encoder: &str, width: u32, height: u32, n: i64) -> Vec<(Vec<u8>, u64)> {
        let mut options = ff::Dictionary::new();
        match encoder {
            "libx265" => options.set("x265-params", "bframes=0:keyint=30:log-level=error"),
            _ => {
                options.set("usage", "realtime");
                options.set("cpu-used", "8");
                options.set("lag-in-frames", "0");
            }
        }
        encode_with(encoder, options, width, height, n, 0)
    }

    fn encoded(width: u32, height: u32, n: i64, bframes: bool) -> Vec<(Vec<u8>, u64)> {
        let mut options = ff::Dictionary::new();
        options.set("preset", "veryfast");
        options.set("profile", "high");
        if bframes {
            options.set("x264-params", "b-pyramid=normal");
        }
        encode_with(
            "libx264",
            options,
            width,
            height,
            n,
            if bframes { 3 } else { 0 },
        )
    }

    fn encode_with(
        name: &str,
        options: ff::Dictionary,
        width: u32,
        height: u32,
        n: i64,
        bframes: usize,
    ) -> Vec<(Vec<u8>, u64)> {
        ff::init().expect("libx264 in libavcodec");
        ff::log::set_level(ff::log::Level::Error);
        let codec = ff::encoder::find_by_name(name).expect("the encoder in libavcodec");
        let mut context = ff::codec::Context::new_with_codec(codec)
            .encoder()
            .video()
            .expect("the encoder in libavcodec");
        context.set_width(width);
        context.set_height(height);
        context.set_format(ff::format::Pixel::YUV420P);
        context.set_time_base(TIME_BASE);
        context.set_frame_rate(Some((30, 1)));
        context.set_max_b_frames(bframes);
        context.set_gop(30);
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
            out.extend(reencode.push(au, *pts).unwrap().into_iter().map(|(_, f)| f));
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
    fn a_ladder_keyframes_on_the_same_pictures_in_every_layer() {
        let input = samples::obs_like(320, 240, 90);
        let mut reencode = Reencode::decoder_only(Source::H264).unwrap();
        let full = reencode.add_full(VideoSettings::default());
        let spec = |track: &str, height| LayerSpec {
            track: track.into(),
            height,
            bitrate: 200_000,
        };
        let m = reencode.add_layer(&spec("video.m", 120), "veryfast");
        let l = reencode.add_layer(&spec("video.l", 61), "veryfast");
        let mut keyframes = [Vec::new(), Vec::new(), Vec::new()];
        let mut sizes = [0usize; 3];
        for (au, pts) in &input {
            for (index, frame) in reencode.push(au, *pts).unwrap() {
                sizes[index] += 1;
                if frame.keyframe {
                    keyframes[index].push(frame.pts);
                }
                if index != full && frame.keyframe {
                    let (sps, _) = avc::annexb_parameter_sets(&frame.data);
                    assert!(!sps.is_empty());
                }
            }
        }
        // The source has a keyframe a second (and at scene cuts): the same in every layer.
        assert!(keyframes[full].len() >= 3, "{keyframes:?}");
        assert_eq!(keyframes[full], keyframes[m]);
        assert_eq!(keyframes[full], keyframes[l]);
        assert!(sizes.iter().all(|n| *n >= input.len() - 4), "{sizes:?}");
    }

    #[test]
    fn a_keyframe_asked_for_comes_at_the_next_picture_in_every_output() {
        let input = samples::without_bframes(320, 240, 45);
        let mut reencode = Reencode::decoder_only(Source::H264).unwrap();
        reencode.add_full(VideoSettings::default());
        let spec = LayerSpec {
            track: "video.l".into(),
            height: 120,
            bitrate: 100_000,
        };
        reencode.add_layer(&spec, "veryfast");
        let mut keyframes = [Vec::new(), Vec::new()];
        for (n, (au, pts)) in input.iter().enumerate() {
            // Asked for at picture 10 (the source's keyframes are at 0 and 30).
            if n == 10 {
                reencode.keyframe_next();
            }
            for (index, frame) in reencode.push(au, *pts).unwrap() {
                if frame.keyframe {
                    keyframes[index].push(frame.pts / 3000);
                }
            }
        }
        assert_eq!(keyframes[0], [0, 10, 30]);
        assert_eq!(keyframes[1], [0, 10, 30]);
    }

    #[test]
    fn h265_and_av1_decode_to_h264() {
        for (source, codec) in [(Source::H265, "libx265"), (Source::Av1, "libaom-av1")] {
            let input = samples::other_codec(codec, 160, 96, 20);
            let mut reencode = Reencode::decoder_only(source).unwrap();
            reencode.add_full(VideoSettings::default());
            let mut out = Vec::new();
            for (au, pts) in &input {
                out.extend(reencode.push(au, *pts).unwrap().into_iter().map(|(_, f)| f));
            }
            assert!(
                out.len() >= input.len() - 4,
                "{source:?}: {} of {}",
                out.len(),
                input.len()
            );
            assert!(out[0].keyframe, "{source:?}");
        }
    }

    #[test]
    fn a_new_resolution_mid_stream_starts_again_with_a_keyframe() {
        let mut input = samples::without_bframes(320, 240, 20);
        let later = samples::without_bframes(160, 128, 20);
        input.extend(later.into_iter().map(|(au, pts)| (au, pts + 20 * 3000)));
        let mut reencode = Reencode::decoder_only(Source::H264).unwrap();
        reencode.add_full(VideoSettings::default());
        let spec = LayerSpec {
            track: "video.l".into(),
            height: 64,
            bitrate: 100_000,
        };
        reencode.add_layer(&spec, "veryfast");
        let mut counts = [0, 0];
        let mut keyframes = [Vec::new(), Vec::new()];
        for (au, pts) in &input {
            for (index, frame) in reencode.push(au, *pts).unwrap() {
                counts[index] += 1;
                if frame.keyframe {
                    keyframes[index].push(frame.pts / 3000);
                }
            }
        }
        assert_eq!(counts, [40, 40]);
        assert_eq!(keyframes, [vec![0, 20], vec![0, 20]]);
    }

    #[test]
    fn a_picture_larger_than_4k_is_not_decoded() {
        let input = samples::without_bframes(4096, 2304, 2);
        let mut reencode = Reencode::new(VideoSettings::default()).unwrap();
        for (au, pts) in &input {
            let out = reencode.push(au, *pts);
            assert!(out.as_ref().map_or(true, Vec::is_empty), "{out:?}");
        }
        // 4K itself is.
        let input = samples::without_bframes(3840, 2160, 1);
        let mut reencode = Reencode::new(VideoSettings::default()).unwrap();
        let out = reencode.push(&input[0].0, input[0].1).unwrap();
        assert_eq!(out.len(), 1);
    }

    #[test]
    fn garbage_is_an_error_not_a_crash() {
        let mut reencode = Reencode::new(VideoSettings::default()).unwrap();
        for junk in [&[0u8, 0, 0, 1, 0x65, 0xff, 0x00][..], &[1, 2, 3], &[]] {
            let _ = reencode.push(junk, 0);
        }
    }
}
