//! The publisher's video: an H.264 Annex B file cut into access units, each sent with an SEI
//! message carrying the wall-clock time it left, which viewers read back for end-to-end latency.

use std::time::{SystemTime, UNIX_EPOCH};

/// Marks our SEI (user_data_unregistered); no zero bytes, so no emulation prevention needed.
const UUID: [u8; 16] = *b"StarlingBenchTs!";

/// Splits an Annex B stream into access units at its access unit delimiters (x264 `aud=1`).
pub fn access_units(stream: &[u8]) -> Vec<Vec<u8>> {
    let mut units = Vec::new();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 4 <= stream.len() {
        if stream[i..i + 3] == [0, 0, 1] {
            if stream[i + 3] & 0x1f == 9 {
                starts.push(if i > 0 && stream[i - 1] == 0 {
                    i - 1
                } else {
                    i
                });
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    for (n, &start) in starts.iter().enumerate() {
        let end = starts.get(n + 1).copied().unwrap_or(stream.len());
        units.push(stream[start..end].to_vec());
    }
    units
}

/// Whether the access unit holds an IDR slice.
pub fn is_keyframe(unit: &[u8]) -> bool {
    unit.windows(4)
        .any(|w| w[..3] == [0, 0, 1] && w[3] & 0x1f == 5)
}

pub fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The access unit with a timestamp SEI put after its delimiter.
pub fn stamped(unit: &[u8], micros: u64) -> Vec<u8> {
    let hex = format!("{micros:016x}");
    let mut sei = vec![0, 0, 0, 1, 6, 5, 32];
    sei.extend_from_slice(&UUID);
    sei.extend_from_slice(hex.as_bytes());
    sei.push(0x80);
    // After the AUD (start code + 2 bytes); units without one get the SEI in front.
    let aud_end = if unit.starts_with(&[0, 0, 0, 1]) {
        6
    } else {
        5
    };
    let split = if unit.len() >= aud_end { aud_end } else { 0 };
    let mut out = Vec::with_capacity(unit.len() + sei.len());
    out.extend_from_slice(&unit[..split]);
    out.extend_from_slice(&sei);
    out.extend_from_slice(&unit[split..]);
    out
}

/// The send time a frame carries, if it has our SEI.
pub fn stamp_of(frame: &[u8]) -> Option<u64> {
    let at = frame.windows(UUID.len()).position(|w| w == UUID)? + UUID.len();
    let hex = std::str::from_utf8(frame.get(at..at + 16)?).ok()?;
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_survives_the_round_trip() {
        let unit = [0, 0, 0, 1, 9, 0xf0, 0, 0, 0, 1, 0x65, 1, 2, 3];
        let frame = stamped(&unit, 1_234_567_890_123);
        assert_eq!(stamp_of(&frame), Some(1_234_567_890_123));
        assert_eq!(access_units(&[&unit[..], &unit[..]].concat()).len(), 2);
    }
}
