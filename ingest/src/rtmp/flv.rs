//! FLV tag bodies as RTMP carries them (video and audio messages). Pure; checks every length.
//!
//! Legacy AVC and AAC only for now; enhanced RTMP (the `IsExHeader` bit, FourCC codecs) is
//! recognised and reported as unsupported. Hand-written because the legacy headers are a few
//! bytes; scuffle-flv is the candidate when HEVC/AV1 arrive.

use bytes::Bytes;

/// A parsed video tag body.
#[derive(Debug, PartialEq, Eq)]
pub enum VideoTag {
    /// AVCDecoderConfigurationRecord.
    AvcSequenceHeader(Bytes),
    /// AVCC access unit with its composition time offset (ms).
    AvcFrame {
        /// Composition time offset: PTS - DTS in milliseconds.
        cts_ms: i32,
        /// Length-prefixed NAL units.
        data: Bytes,
    },
    /// End of sequence, video info/command frames: nothing to do.
    Ignored,
    /// A codec this server does not take yet (FLV codec id, or the FourCC of enhanced RTMP).
    Unsupported(String),
}

/// A parsed audio tag body.
#[derive(Debug, PartialEq, Eq)]
pub enum AudioTag {
    /// AudioSpecificConfig.
    AacSequenceHeader(Bytes),
    /// One raw AAC access unit.
    AacFrame(Bytes),
    /// A codec this server does not take yet (FLV sound format).
    Unsupported(u8),
}

/// A tag body too short for its header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("truncated FLV {0} tag")]
pub struct Truncated(&'static str);

const CODEC_AVC: u8 = 7;
const FRAME_INFO: u8 = 5;
const SOUND_AAC: u8 = 10;

/// Parses a video message's body.
pub fn video(body: &Bytes) -> Result<VideoTag, Truncated> {
    let first = *body.first().ok_or(Truncated("video"))?;
    if first & 0x80 != 0 {
        // Enhanced RTMP: 4-bit packet type, then a FourCC.
        let fourcc = body.get(1..5).ok_or(Truncated("video"))?;
        return Ok(VideoTag::Unsupported(
            String::from_utf8_lossy(fourcc).into_owned(),
        ));
    }
    let (frame_type, codec) = (first >> 4, first & 0x0f);
    if codec != CODEC_AVC {
        return Ok(VideoTag::Unsupported(format!("FLV video codec {codec}")));
    }
    if frame_type == FRAME_INFO {
        return Ok(VideoTag::Ignored);
    }
    let header = body.get(1..5).ok_or(Truncated("video"))?;
    // Composition time: signed 24-bit big-endian.
    let cts_ms = (i32::from_be_bytes([header[1], header[2], header[3], 0])) >> 8;
    let data = body.slice(5..);
    Ok(match header[0] {
        0 => VideoTag::AvcSequenceHeader(data),
        1 => VideoTag::AvcFrame { cts_ms, data },
        _ => VideoTag::Ignored,
    })
}

/// Parses an audio message's body.
pub fn audio(body: &Bytes) -> Result<AudioTag, Truncated> {
    let first = *body.first().ok_or(Truncated("audio"))?;
    let format = first >> 4;
    if format != SOUND_AAC {
        return Ok(AudioTag::Unsupported(format));
    }
    let packet_type = *body.get(1).ok_or(Truncated("audio"))?;
    let data = body.slice(2..);
    Ok(if packet_type == 0 {
        AudioTag::AacSequenceHeader(data)
    } else {
        AudioTag::AacFrame(data)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn avc_sequence_header_and_frame() {
        let seq = Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 2, 3]);
        assert_eq!(
            video(&seq),
            Ok(VideoTag::AvcSequenceHeader(Bytes::from_static(&[1, 2, 3])))
        );
        let frame = Bytes::from_static(&[0x27, 1, 0, 0, 0x50, 9]);
        assert_eq!(
            video(&frame),
            Ok(VideoTag::AvcFrame {
                cts_ms: 80,
                data: Bytes::from_static(&[9])
            })
        );
        let negative = Bytes::from_static(&[0x27, 1, 0xff, 0xff, 0xd8, 9]);
        assert_eq!(
            video(&negative),
            Ok(VideoTag::AvcFrame {
                cts_ms: -40,
                data: Bytes::from_static(&[9])
            })
        );
    }

    #[test]
    fn other_codecs_are_reported() {
        let hevc = Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1', 0]);
        assert_eq!(video(&hevc), Ok(VideoTag::Unsupported("hvc1".into())));
        assert_eq!(
            video(&Bytes::from_static(&[0x12])),
            Ok(VideoTag::Unsupported("FLV video codec 2".into()))
        );
        assert_eq!(
            audio(&Bytes::from_static(&[0x2f, 0])),
            Ok(AudioTag::Unsupported(2))
        );
    }

    #[test]
    fn aac() {
        let seq = Bytes::from_static(&[0xaf, 0, 0x12, 0x10]);
        assert_eq!(
            audio(&seq),
            Ok(AudioTag::AacSequenceHeader(Bytes::from_static(&[
                0x12, 0x10
            ])))
        );
        let raw = Bytes::from_static(&[0xaf, 1, 0x21]);
        assert_eq!(
            audio(&raw),
            Ok(AudioTag::AacFrame(Bytes::from_static(&[0x21])))
        );
    }

    #[test]
    fn truncated_bodies_are_errors() {
        for body in [&[][..], &[0x17], &[0x17, 0, 0], &[0x90, b'h']] {
            assert!(video(&Bytes::copy_from_slice(body)).is_err(), "{body:?}");
        }
        assert!(audio(&Bytes::new()).is_err());
        assert!(audio(&Bytes::from_static(&[0xaf])).is_err());
    }
}

#[cfg(test)]
mod fuzz {
    use bytes::Bytes;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn tag_parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let data = Bytes::from(data);
            let _ = super::video(&data);
            let _ = super::audio(&data);
        }
    }
}
