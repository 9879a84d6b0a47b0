//! Audio elementary streams as MPEG-TS carries them: AAC in ADTS frames (ISO 14496-3 1.A.2)
//! and Opus access units behind their control headers (ETSI TS 102 366 annex, as ffmpeg
//! muxes them). Pure and total: malformed input ends the split, it never panics.

use bytes::Bytes;

/// One AAC frame out of an ADTS stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdtsFrame {
    /// The AudioSpecificConfig the header describes (object type, rate, channels).
    pub config: [u8; 2],
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// The raw AAC frame (header removed).
    pub data: Bytes,
}

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// Splits a run of ADTS frames. Stops at the first header that is not one, or a frame that is
/// cut short.
pub fn adts_frames(data: &Bytes) -> Vec<AdtsFrame> {
    let mut frames = Vec::new();
    let mut at = 0;
    while let Some(h) = data.get(at..at + 7) {
        if h[0] != 0xff || h[1] & 0xf6 != 0xf0 {
            break; // no sync word, or layer != 0
        }
        let header_len = if h[1] & 0x01 != 0 { 7 } else { 9 };
        let object_type = (h[2] >> 6) + 1;
        let rate_index = (h[2] >> 2) & 0x0f;
        let channels = ((h[2] & 0x01) << 2) | (h[3] >> 6);
        let length =
            (usize::from(h[3] & 0x03) << 11) | (usize::from(h[4]) << 3) | usize::from(h[5] >> 5);
        let Some(&sample_rate) = SAMPLE_RATES.get(usize::from(rate_index)) else {
            break;
        };
        if length <= header_len || at + length > data.len() {
            break;
        }
        let asc = (u16::from(object_type) << 11)
            | (u16::from(rate_index) << 7)
            | (u16::from(channels) << 3);
        frames.push(AdtsFrame {
            config: asc.to_be_bytes(),
            sample_rate,
            data: data.slice(at + header_len..at + length),
        });
        at += length;
    }
    frames
}

/// Splits a PES payload of Opus access units, each behind its control header (prefix
/// `0x3ff`, trim flags, a 0xff-continued size, then the optional trims and extension).
pub fn opus_packets(data: &Bytes) -> Vec<Bytes> {
    let mut packets = Vec::new();
    let mut at = 0;
    while let Some(h) = data.get(at..at + 2) {
        if u16::from_be_bytes([h[0], h[1]]) >> 5 != 0x3ff {
            break;
        }
        let (start_trim, end_trim, extension) =
            (h[1] & 0x10 != 0, h[1] & 0x08 != 0, h[1] & 0x04 != 0);
        at += 2;
        let mut size = 0usize;
        loop {
            let Some(&b) = data.get(at) else {
                return packets;
            };
            at += 1;
            size += usize::from(b);
            if b != 0xff {
                break;
            }
        }
        at += 2 * usize::from(start_trim) + 2 * usize::from(end_trim);
        if extension {
            let Some(&len) = data.get(at) else {
                return packets;
            };
            at += 1 + usize::from(len);
        }
        let Some(packet) = data.get(at..at + size) else {
            return packets;
        };
        if !packet.is_empty() {
            packets.push(data.slice(at..at + size));
        }
        at += size;
    }
    packets
}

/// How many 48 kHz samples an Opus packet holds (RFC 6716 3.1), or `None` if malformed.
pub fn opus_samples(packet: &[u8]) -> Option<u32> {
    let toc = *packet.first()?;
    let config = toc >> 3;
    let per_frame = match config {
        0..=11 => [480, 960, 1920, 2880][usize::from(config % 4)],
        12..=15 => [480, 960][usize::from(config % 2)],
        _ => [120, 240, 480, 960][usize::from(config % 4)],
    };
    let frames = match toc & 0x03 {
        0 => 1,
        1 | 2 => 2,
        _ => u32::from(*packet.get(1)? & 0x3f),
    };
    Some(per_frame * frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adts(raw: &[u8], rate_index: u8, channels: u8) -> Vec<u8> {
        let length = 7 + raw.len();
        let mut h = vec![
            0xff,
            0xf1,
            (1 << 6) | (rate_index << 2) | (channels >> 2),
            ((channels & 3) << 6) | (length >> 11) as u8,
            (length >> 3) as u8,
            ((length & 7) << 5) as u8 | 0x1f,
            0xfc,
        ];
        h.extend_from_slice(raw);
        h
    }

    #[test]
    fn adts_frames_split_with_their_config() {
        let mut run = adts(&[1; 100], 4, 2);
        run.extend(adts(&[2; 50], 4, 2));
        run.extend([0xff, 0xf1, 0x50]); // a cut header: ignored
        let frames = adts_frames(&Bytes::from(run));
        assert_eq!(frames.len(), 2);
        assert_eq!(&frames[1].data[..], &[2; 50]);
        // AAC-LC (2), 44.1 kHz (index 4), stereo: the ASC every muxer writes, 0x12 0x10.
        assert_eq!(frames[0].config, [0x12, 0x10]);
        assert_eq!(frames[0].sample_rate, 44_100);
    }

    #[test]
    fn opus_access_units_split_past_their_control_headers() {
        let mut data = vec![0x7f, 0xe0, 3, 0xfc, 1, 2];
        // A 300-byte packet: size 255 + 45, with a start trim.
        data.extend([0x7f, 0xf0, 0xff, 45, 0, 0]);
        data.extend(vec![0xf8; 300]);
        let packets = opus_packets(&Bytes::from(data));
        assert_eq!(packets.len(), 2);
        assert_eq!(&packets[0][..], &[0xfc, 1, 2]);
        assert_eq!(packets[1].len(), 300);
        assert!(opus_packets(&Bytes::from_static(&[0x7f, 0xe0, 50, 1])).is_empty());
    }

    #[test]
    fn opus_durations_follow_the_toc() {
        assert_eq!(opus_samples(&[0xfc]), Some(960)); // CELT 20 ms, one frame
        assert_eq!(opus_samples(&[0xfd]), Some(1920)); // two frames
        assert_eq!(opus_samples(&[0x08 | 0x03, 3]), Some(3 * 960)); // SILK 20 ms x3
        assert_eq!(opus_samples(&[]), None);
    }
}
