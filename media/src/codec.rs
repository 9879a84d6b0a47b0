use bytes::Bytes;

/// What a track carries and what a decoder needs to start.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Codec {
    /// A video codec.
    Video(VideoCodec),
    /// An audio codec.
    Audio(AudioCodec),
}

/// Video codecs and their parameter sets.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum VideoCodec {
    /// H.264; frames are Annex B.
    H264 {
        /// Sequence parameter sets (NAL units without start codes).
        sps: Vec<Bytes>,
        /// Picture parameter sets (NAL units without start codes).
        pps: Vec<Bytes>,
    },
    /// H.265; frames are Annex B with parameter sets in band.
    H265,
    /// VP8.
    Vp8,
    /// VP9.
    Vp9,
    /// AV1 (OBUs as carried over RTP, RFC 9628 depacketised).
    Av1,
}

/// Audio codecs.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum AudioCodec {
    /// Opus; timestamps at 48 kHz.
    Opus {
        /// Channel count (1 or 2).
        channels: u8,
    },
    /// AAC with its AudioSpecificConfig.
    Aac {
        /// The AudioSpecificConfig bytes.
        config: Bytes,
    },
}

impl Codec {
    /// A short human name, e.g. `H.264 High@4.1` or `Opus`.
    pub fn describe(&self) -> String {
        match self {
            Codec::Video(v) => v.describe(),
            Codec::Audio(AudioCodec::Opus { .. }) => "Opus".to_owned(),
            Codec::Audio(AudioCodec::Aac { .. }) => "AAC".to_owned(),
        }
    }
}

impl VideoCodec {
    /// A short human name with profile and level, e.g. `H.264 High@4.1`.
    pub fn describe(&self) -> String {
        match self {
            VideoCodec::H264 { sps, .. } => match sps.first().and_then(|s| s.get(1..4)) {
                Some(&[profile, _, level]) => format!(
                    "H.264 {}@{}.{}",
                    crate::bitstream::avc::profile_name(profile),
                    level / 10,
                    level % 10
                ),
                _ => "H.264".to_owned(),
            },
            VideoCodec::H265 => "H.265".to_owned(),
            VideoCodec::Vp8 => "VP8".to_owned(),
            VideoCodec::Vp9 => "VP9".to_owned(),
            VideoCodec::Av1 => "AV1".to_owned(),
        }
    }

    /// The codec family without parameters, e.g. `H.264`, for matching against what a viewer
    /// can decode.
    pub fn family(&self) -> &'static str {
        match self {
            VideoCodec::H264 { .. } => "H.264",
            VideoCodec::H265 => "H.265",
            VideoCodec::Vp8 => "VP8",
            VideoCodec::Vp9 => "VP9",
            VideoCodec::Av1 => "AV1",
        }
    }
}
