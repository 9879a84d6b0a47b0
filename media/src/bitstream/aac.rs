//! AAC: the AudioSpecificConfig (ISO 14496-3 1.6.2.1), enough to set up a decoder.

use super::BitstreamError;

const SAMPLE_RATES: [u32; 13] = [
    96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350,
];

/// The fields of an AudioSpecificConfig a decoder set-up needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AudioSpecificConfig {
    /// Audio object type (2 = AAC-LC).
    pub object_type: u8,
    /// Sampling rate in Hz.
    pub sample_rate: u32,
    /// Channel configuration (1 = mono, 2 = stereo, ...).
    pub channels: u8,
}

impl AudioSpecificConfig {
    /// Parses the first bytes of an AudioSpecificConfig.
    pub fn parse(data: &[u8]) -> Result<Self, BitstreamError> {
        let mut bits = Bits { data, pos: 0 };
        let mut object_type = bits.take(5)? as u8;
        if object_type == 31 {
            object_type = 32 + bits.take(6)? as u8;
        }
        let index = bits.take(4)? as usize;
        let sample_rate = if index == 15 {
            // An explicit rate is accepted only if it is one of AAC's own: a decoder set up
            // for 1 Hz made 400 MB of samples from 50 frames of 6 bytes.
            let explicit = bits.take(24)?;
            if !SAMPLE_RATES.contains(&explicit) {
                return Err(BitstreamError::Unsupported("AAC sample rate"));
            }
            explicit
        } else {
            *SAMPLE_RATES
                .get(index)
                .ok_or(BitstreamError::Unsupported("AAC sampling index"))?
        };
        let channels = bits.take(4)? as u8;
        Ok(Self {
            object_type,
            sample_rate,
            channels,
        })
    }
}

struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bits<'_> {
    fn take(&mut self, n: usize) -> Result<u32, BitstreamError> {
        let mut v = 0u32;
        for _ in 0..n {
            let byte = self
                .data
                .get(self.pos / 8)
                .ok_or(BitstreamError::Truncated("AudioSpecificConfig"))?;
            v = (v << 1) | u32::from((byte >> (7 - self.pos % 8)) & 1);
            self.pos += 1;
        }
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_lc_44100_stereo() {
        let c = AudioSpecificConfig::parse(&[0x12, 0x10]).unwrap();
        assert_eq!(
            c,
            AudioSpecificConfig {
                object_type: 2,
                sample_rate: 44100,
                channels: 2
            }
        );
    }

    #[test]
    fn parses_lc_48000_mono() {
        let c = AudioSpecificConfig::parse(&[0x11, 0x88]).unwrap();
        assert_eq!(
            c,
            AudioSpecificConfig {
                object_type: 2,
                sample_rate: 48000,
                channels: 1
            }
        );
    }

    #[test]
    fn truncated_and_bad_index_are_errors() {
        assert!(AudioSpecificConfig::parse(&[]).is_err());
        assert!(AudioSpecificConfig::parse(&[0x12]).is_err());
        assert!(AudioSpecificConfig::parse(&[0x16, 0x90]).is_err()); // index 13
    }

    /// AAC-LC, the escape index (15), then a 24-bit rate and stereo.
    fn explicit(rate: u32) -> Vec<u8> {
        let bits: u64 = (2 << 35) | (15 << 31) | (u64::from(rate) << 7) | (2 << 3);
        bits.to_be_bytes()[3..].to_vec()
    }

    #[test]
    fn an_explicit_rate_must_be_a_real_aac_rate() {
        let c = AudioSpecificConfig::parse(&explicit(48_000)).unwrap();
        assert_eq!((c.sample_rate, c.channels), (48_000, 2));
        for rate in [0, 1, 1000, 7349, 96_001, 0xff_ffff] {
            assert!(
                AudioSpecificConfig::parse(&explicit(rate)).is_err(),
                "{rate}"
            );
        }
    }
}
