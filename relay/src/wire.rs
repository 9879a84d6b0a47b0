//! A bus frame as a MoQ frame (object): a small header, then the payload untouched.
//!
//! ```text
//! flags (1 byte: bit 0 keyframe; others 0) | timestamp (QUIC varint) | payload
//! ```
//!
//! The media timestamp and the keyframe flag cross the wire; the arrival `Instant` does not (a
//! receiving node stamps its own). Pure: decoding checks every length and never panics.

use bytes::{BufMut, Bytes, BytesMut};

/// A frame read off the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WireFrame {
    /// Presentation time in the track's timescale.
    pub timestamp: u64,
    /// A decoder can start here.
    pub keyframe: bool,
    /// The payload, sharing the received bytes.
    pub payload: Bytes,
}

/// Why a frame could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WireError {
    /// Shorter than its header.
    #[error("frame shorter than its header")]
    Truncated,
    /// Flags this version does not know.
    #[error("unknown frame flags {0:#04x}")]
    Flags(u8),
}

const KEYFRAME: u8 = 1;
/// A timestamp is below 2^62 (a QUIC varint's range).
const MAX_TIMESTAMP: u64 = (1 << 62) - 1;

/// The header for a frame: to be sent before its payload.
pub fn header(timestamp: u64, keyframe: bool) -> Bytes {
    let mut out = BytesMut::with_capacity(9);
    out.put_u8(if keyframe { KEYFRAME } else { 0 });
    put_varint(&mut out, timestamp.min(MAX_TIMESTAMP));
    out.freeze()
}

/// A frame's wire bytes: header and payload in one buffer (one copy of the payload).
pub fn encode(timestamp: u64, keyframe: bool, payload: &[u8]) -> Bytes {
    let head = header(timestamp, keyframe);
    let mut out = BytesMut::with_capacity(head.len() + payload.len());
    out.extend_from_slice(&head);
    out.extend_from_slice(payload);
    out.freeze()
}

/// Reads a frame; the payload shares `wire`'s bytes.
pub fn decode(wire: Bytes) -> Result<WireFrame, WireError> {
    let (&flags, rest) = wire.split_first().ok_or(WireError::Truncated)?;
    if flags & !KEYFRAME != 0 {
        return Err(WireError::Flags(flags));
    }
    let (timestamp, used) = get_varint(rest).ok_or(WireError::Truncated)?;
    Ok(WireFrame {
        timestamp,
        keyframe: flags & KEYFRAME != 0,
        payload: wire.slice(1 + used..),
    })
}

fn put_varint(out: &mut BytesMut, v: u64) {
    if v < 1 << 6 {
        out.put_u8(v as u8);
    } else if v < 1 << 14 {
        out.put_u16(0x4000 | v as u16);
    } else if v < 1 << 30 {
        out.put_u32(0x8000_0000 | v as u32);
    } else {
        out.put_u64(0xc000_0000_0000_0000 | v);
    }
}

/// A QUIC varint at the start of `bytes`, and how many bytes it took.
fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    let first = *bytes.first()?;
    let len = 1usize << (first >> 6);
    let raw = bytes.get(..len)?;
    let mut v = u64::from(first & 0x3f);
    for b in &raw[1..] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_cross_with_their_timestamp_and_keyframe_flag() {
        for ts in [
            0,
            63,
            64,
            16_383,
            16_384,
            (1 << 30) - 1,
            1 << 30,
            MAX_TIMESTAMP,
        ] {
            for key in [false, true] {
                let wire = encode(ts, key, b"payload");
                let frame = decode(wire).expect("decodes");
                assert_eq!(
                    frame,
                    WireFrame {
                        timestamp: ts,
                        keyframe: key,
                        payload: Bytes::from_static(b"payload")
                    }
                );
            }
        }
    }

    #[test]
    fn short_or_strange_frames_are_refused() {
        assert_eq!(decode(Bytes::new()), Err(WireError::Truncated));
        assert_eq!(
            decode(Bytes::from_static(&[0, 0x40])),
            Err(WireError::Truncated)
        );
        assert_eq!(
            decode(Bytes::from_static(&[2, 0])),
            Err(WireError::Flags(2))
        );
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_decode_or_are_refused_without_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..32)) {
            let _ = decode(Bytes::from(bytes));
        }
    }
}
