//! H.265: the decoder configuration record (`hvcC`, ISO 14496-15 8.3.3) as enhanced RTMP
//! carries it, and its length-prefixed access units made into Annex B.

use bytes::{BufMut, Bytes, BytesMut};

use super::avc::avcc_nal_units;
use super::BitstreamError;

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// The type of an H.265 NAL unit (bits 1-6 of its first header byte).
pub fn nal_type(unit: &[u8]) -> u8 {
    unit.first().map_or(0xff, |h| (h >> 1) & 0x3f)
}

/// Whether a NAL unit is an IRAP picture's slice (BLA, IDR, CRA: types 16-21): a keyframe.
pub fn is_irap(unit: &[u8]) -> bool {
    (16..=21).contains(&nal_type(unit))
}

/// Video, sequence and picture parameter sets.
const PARAMETER_SETS: [u8; 3] = [32, 33, 34];
/// Access unit delimiter.
const AUD: u8 = 35;

/// What a decoder needs from an `hvcC` record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HevcConfig {
    /// Bytes in each NAL unit length prefix (1, 2 or 4).
    pub length_size: usize,
    /// The parameter sets (VPS, SPS, PPS, in the record's order), without start codes.
    pub parameter_sets: Vec<Bytes>,
}

impl HevcConfig {
    /// Parses an HEVCDecoderConfigurationRecord.
    pub fn parse(data: &Bytes) -> Result<Self, BitstreamError> {
        if data.len() < 23 {
            return Err(BitstreamError::Truncated("hvcC"));
        }
        if data[0] != 1 {
            return Err(BitstreamError::Unsupported("hvcC version"));
        }
        let length_size = usize::from(data[21] & 0x03) + 1;
        if length_size == 3 {
            return Err(BitstreamError::Unsupported("3-byte NAL lengths"));
        }
        let arrays = data[22];
        let mut pos = 23;
        let mut parameter_sets = Vec::new();
        for _ in 0..arrays {
            let header = data
                .get(pos..pos + 3)
                .ok_or(BitstreamError::Truncated("hvcC array"))?;
            let count = usize::from(u16::from_be_bytes([header[1], header[2]]));
            pos += 3;
            for _ in 0..count {
                let len = data
                    .get(pos..pos + 2)
                    .map(|l| usize::from(u16::from_be_bytes([l[0], l[1]])))
                    .ok_or(BitstreamError::Truncated("hvcC NAL length"))?;
                let unit = data
                    .get(pos + 2..pos + 2 + len)
                    .ok_or(BitstreamError::Truncated("hvcC NAL unit"))?;
                if !unit.is_empty() {
                    parameter_sets.push(data.slice(pos + 2..pos + 2 + len));
                }
                pos += 2 + len;
            }
        }
        Ok(Self {
            length_size,
            parameter_sets,
        })
    }
}

/// Converts one length-prefixed H.265 access unit to Annex B. Access unit delimiters are
/// dropped; an IRAP picture without parameter sets gets `config`'s in front, so every keyframe
/// decodes on its own. Returns the Annex B bytes and whether it is a keyframe.
pub fn to_annexb(data: &Bytes, config: &HevcConfig) -> Result<(Bytes, bool), BitstreamError> {
    let units = avcc_nal_units(data, config.length_size)?;
    let keyframe = units.iter().any(|u| is_irap(u));
    let has_params = units.iter().any(|u| PARAMETER_SETS.contains(&nal_type(u)));
    let mut out = BytesMut::with_capacity(data.len() + 128);
    let params = config
        .parameter_sets
        .iter()
        .filter(|_| keyframe && !has_params);
    for unit in params.chain(units.iter().filter(|u| nal_type(u) != AUD)) {
        out.put_slice(&START_CODE);
        out.put_slice(unit);
    }
    Ok((out.freeze(), keyframe))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An hvcC with one VPS, SPS and PPS (contents arbitrary) and 4-byte lengths.
    fn record() -> Bytes {
        let mut r = vec![1];
        r.extend([0; 20]);
        r.push(0xfc | 3);
        r.push(3);
        for (t, body) in [(32u8, &[1u8, 2][..]), (33, &[3, 4, 5]), (34, &[6])] {
            r.push(0x80 | t);
            r.extend(1u16.to_be_bytes());
            let unit: Vec<u8> = [&[t << 1, 1][..], body].concat();
            r.extend((unit.len() as u16).to_be_bytes());
            r.extend(unit);
        }
        Bytes::from(r)
    }

    #[test]
    fn the_record_gives_its_parameter_sets_and_length_size() {
        let c = HevcConfig::parse(&record()).expect("hvcC");
        assert_eq!(c.length_size, 4);
        let types: Vec<u8> = c.parameter_sets.iter().map(|u| nal_type(u)).collect();
        assert_eq!(types, vec![32, 33, 34]);
        assert!(HevcConfig::parse(&record().slice(..30)).is_err());
        assert!(HevcConfig::parse(&Bytes::from_static(&[1, 2, 3])).is_err());
    }

    #[test]
    fn a_keyframe_gets_the_parameter_sets_in_front() {
        let c = HevcConfig::parse(&record()).expect("hvcC");
        // An AUD, then an IDR_W_RADL slice (type 19).
        let au = Bytes::from_static(&[0, 0, 0, 3, 70, 1, 0x50, 0, 0, 0, 3, 38, 1, 0xaf]);
        let (annexb, key) = to_annexb(&au, &c).expect("convert");
        assert!(key);
        let types: Vec<u8> = crate::bitstream::avc::annexb_nal_units(&annexb)
            .iter()
            .map(|u| nal_type(u))
            .collect();
        assert_eq!(types, vec![32, 33, 34, 19]);
        // A trailing picture (type 1) is not a keyframe and gets nothing added.
        let (delta, key) =
            to_annexb(&Bytes::from_static(&[0, 0, 0, 3, 2, 1, 0xd0]), &c).expect("delta");
        assert!(!key);
        assert_eq!(&delta[..], &[0, 0, 0, 1, 2, 1, 0xd0]);
        assert!(to_annexb(&Bytes::from_static(&[0, 0, 0, 9, 2]), &c).is_err());
    }
}
