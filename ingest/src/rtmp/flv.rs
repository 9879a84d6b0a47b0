//! FLV tag bodies as RTMP carries them (video and audio messages). Pure; checks every length.
//!
//! Legacy AVC and AAC, and enhanced RTMP video (v1: the `IsExHeader` bit, a packet type and a
//! FourCC): HEVC (`hvc1`), AV1 (`av01`) and AVC (`avc1`) as OBS 30+ sends them. Hand-written:
//! the headers are a few bytes each, and what follows goes to `media::bitstream`; a crate such
//! as scuffle-flv would bring its own codec stack for the same.

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
    /// HEVCDecoderConfigurationRecord (enhanced RTMP).
    HevcSequenceHeader(Bytes),
    /// Length-prefixed H.265 access unit with its composition time offset (ms).
    HevcFrame {
        /// Composition time offset: PTS - DTS in milliseconds.
        cts_ms: i32,
        /// Length-prefixed NAL units.
        data: Bytes,
    },
    /// AV1CodecConfigurationRecord (enhanced RTMP).
    Av1SequenceHeader(Bytes),
    /// AV1 temporal unit (OBUs, low-overhead format); `keyframe` from the FLV frame type.
    Av1Frame {
        /// The FLV frame type says key frame.
        keyframe: bool,
        /// The OBUs.
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
        return enhanced_video(first, body);
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

/// Enhanced RTMP packet types.
const SEQUENCE_START: u8 = 0;
const CODED_FRAMES: u8 = 1;
const CODED_FRAMES_X: u8 = 3;
const MULTITRACK: u8 = 6;
/// FLV frame types.
const FRAME_KEY: u8 = 1;

/// An enhanced RTMP video body: `[1 | frame type (3) | packet type (4)] [FourCC] payload`.
fn enhanced_video(first: u8, body: &Bytes) -> Result<VideoTag, Truncated> {
    let (frame_type, packet_type) = ((first >> 4) & 0x07, first & 0x0f);
    let fourcc = body.get(1..5).ok_or(Truncated("enhanced video"))?;
    if frame_type == FRAME_INFO || packet_type == MULTITRACK {
        return Ok(if packet_type == MULTITRACK {
            VideoTag::Unsupported("multitrack".into())
        } else {
            VideoTag::Ignored
        });
    }
    // CodedFrames of AVC and HEVC carry a composition time; CodedFramesX has it zero.
    let with_cts = |body: &Bytes| -> Result<(i32, Bytes), Truncated> {
        let cts = body.get(5..8).ok_or(Truncated("enhanced video"))?;
        Ok((
            i32::from_be_bytes([cts[0], cts[1], cts[2], 0]) >> 8,
            body.slice(8..),
        ))
    };
    Ok(match (fourcc, packet_type) {
        (b"hvc1", SEQUENCE_START) => VideoTag::HevcSequenceHeader(body.slice(5..)),
        (b"hvc1", CODED_FRAMES) => {
            let (cts_ms, data) = with_cts(body)?;
            VideoTag::HevcFrame { cts_ms, data }
        }
        (b"hvc1", CODED_FRAMES_X) => VideoTag::HevcFrame {
            cts_ms: 0,
            data: body.slice(5..),
        },
        (b"avc1", SEQUENCE_START) => VideoTag::AvcSequenceHeader(body.slice(5..)),
        (b"avc1", CODED_FRAMES) => {
            let (cts_ms, data) = with_cts(body)?;
            VideoTag::AvcFrame { cts_ms, data }
        }
        (b"avc1", CODED_FRAMES_X) => VideoTag::AvcFrame {
            cts_ms: 0,
            data: body.slice(5..),
        },
        (b"av01", SEQUENCE_START) => VideoTag::Av1SequenceHeader(body.slice(5..)),
        (b"av01", CODED_FRAMES | CODED_FRAMES_X) => VideoTag::Av1Frame {
            keyframe: frame_type == FRAME_KEY,
            data: body.slice(5..),
        },
        (b"hvc1" | b"avc1" | b"av01", _) => VideoTag::Ignored, // end of sequence, metadata
        (other, _) => VideoTag::Unsupported(String::from_utf8_lossy(other).into_owned()),
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
        let vp9 = Bytes::from_static(&[0x90, b'v', b'p', b'0', b'9', 0]);
        assert_eq!(video(&vp9), Ok(VideoTag::Unsupported("vp09".into())));
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

    #[test]
    fn enhanced_rtmp_hevc_av1_and_avc() {
        let hvcc = Bytes::from_static(&[0x90, b'h', b'v', b'c', b'1', 1, 2, 3]);
        assert_eq!(
            video(&hvcc),
            Ok(VideoTag::HevcSequenceHeader(Bytes::from_static(&[1, 2, 3])))
        );
        // Key frame, CodedFrames, composition time 40 ms.
        let frame = Bytes::from_static(&[0x91, b'h', b'v', b'c', b'1', 0, 0, 40, 9, 9]);
        assert_eq!(
            video(&frame),
            Ok(VideoTag::HevcFrame {
                cts_ms: 40,
                data: Bytes::from_static(&[9, 9])
            })
        );
        let x = Bytes::from_static(&[0xa3, b'h', b'v', b'c', b'1', 7]);
        assert_eq!(
            video(&x),
            Ok(VideoTag::HevcFrame {
                cts_ms: 0,
                data: Bytes::from_static(&[7])
            })
        );
        let av1 = Bytes::from_static(&[0x91, b'a', b'v', b'0', b'1', 0x12, 0]);
        assert_eq!(
            video(&av1),
            Ok(VideoTag::Av1Frame {
                keyframe: true,
                data: Bytes::from_static(&[0x12, 0])
            })
        );
        let avc = Bytes::from_static(&[0x90, b'a', b'v', b'c', b'1', 1]);
        assert_eq!(
            video(&avc),
            Ok(VideoTag::AvcSequenceHeader(Bytes::from_static(&[1])))
        );
        assert_eq!(
            video(&Bytes::from_static(&[0x92, b'h', b'v', b'c', b'1'])),
            Ok(VideoTag::Ignored),
            "end of sequence"
        );
        assert_eq!(
            video(&Bytes::from_static(&[0x91, b'v', b'p', b'0', b'9', 1])),
            Ok(VideoTag::Unsupported("vp09".into()))
        );
        assert!(video(&Bytes::from_static(&[0x91, b'h', b'v'])).is_err());
        assert!(video(&Bytes::from_static(&[0x91, b'h', b'v', b'c', b'1', 0])).is_err());
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
