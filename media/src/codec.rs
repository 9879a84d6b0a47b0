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
        }
    }
}
