//! H.264: the AVCDecoderConfigurationRecord (ISO 14496-15) and AVCC -> Annex B.

use bytes::{BufMut, Bytes, BytesMut};

use super::BitstreamError;

const START_CODE: [u8; 4] = [0, 0, 0, 1];

/// NAL unit types this crate cares about.
pub mod nal {
    /// Instantaneous decoder refresh (keyframe) slice.
    pub const IDR: u8 = 5;
    /// Sequence parameter set.
    pub const SPS: u8 = 7;
    /// Picture parameter set.
    pub const PPS: u8 = 8;
    /// Access unit delimiter.
    pub const AUD: u8 = 9;
}

/// The decoder configuration from an FLV/MP4 `avcC` box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AvcConfig {
    /// Bytes in each NAL unit length prefix (1, 2 or 4).
    pub length_size: usize,
    /// Sequence parameter sets.
    pub sps: Vec<Bytes>,
    /// Picture parameter sets.
    pub pps: Vec<Bytes>,
}

impl AvcConfig {
    /// Parses an AVCDecoderConfigurationRecord.
    pub fn parse(data: &Bytes) -> Result<Self, BitstreamError> {
        let mut r = Reader { data, pos: 0 };
        if r.u8("avcC version")? != 1 {
            return Err(BitstreamError::Unsupported("avcC version"));
        }
        r.skip(3, "avcC profile")?;
        let length_size = usize::from(r.u8("avcC length size")? & 0x03) + 1;
        if length_size == 3 {
            return Err(BitstreamError::Unsupported("NAL length size 3"));
        }
        let sps_count = r.u8("avcC SPS count")? & 0x1f;
        let sps = (0..sps_count)
            .map(|_| r.sized("avcC SPS"))
            .collect::<Result<Vec<_>, _>>()?;
        let pps_count = r.u8("avcC PPS count")?;
        let pps = (0..pps_count)
            .map(|_| r.sized("avcC PPS"))
            .collect::<Result<Vec<_>, _>>()?;
        if sps.is_empty() {
            return Err(BitstreamError::Truncated("avcC without SPS"));
        }
        Ok(Self {
            length_size,
            sps,
            pps,
        })
    }
}

struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn u8(&mut self, what: &'static str) -> Result<u8, BitstreamError> {
        let b = *self
            .data
            .get(self.pos)
            .ok_or(BitstreamError::Truncated(what))?;
        self.pos += 1;
        Ok(b)
    }

    fn skip(&mut self, n: usize, what: &'static str) -> Result<(), BitstreamError> {
        if self.data.len() < self.pos + n {
            return Err(BitstreamError::Truncated(what));
        }
        self.pos += n;
        Ok(())
    }

    fn sized(&mut self, what: &'static str) -> Result<Bytes, BitstreamError> {
        let len = usize::from(u16::from_be_bytes([self.u8(what)?, self.u8(what)?]));
        let start = self.pos;
        self.skip(len, what)?;
        Ok(self.data.slice(start..start + len))
    }
}

/// Splits length-prefixed (AVCC) NAL units, checking every length against the input.
pub fn avcc_nal_units(data: &Bytes, length_size: usize) -> Result<Vec<Bytes>, BitstreamError> {
    let mut units = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let prefix = data
            .get(pos..pos + length_size)
            .ok_or(BitstreamError::Truncated("NAL length"))?;
        let len = prefix
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        pos += length_size;
        let end = pos.checked_add(len).filter(|e| *e <= data.len());
        let end = end.ok_or(BitstreamError::Truncated("NAL unit"))?;
        if len > 0 {
            units.push(data.slice(pos..end));
        }
        pos = end;
    }
    Ok(units)
}

/// The type of a NAL unit (its low 5 header bits).
pub fn nal_type(unit: &[u8]) -> u8 {
    unit.first().map_or(0, |h| h & 0x1f)
}

/// Converts one AVCC access unit to Annex B. Access unit delimiters are dropped; if the access
/// unit has an IDR slice but no SPS/PPS, `config`'s are put in front so every keyframe is
/// decodable on its own. Returns the Annex B bytes and whether it holds an IDR slice.
pub fn avcc_to_annexb(data: &Bytes, config: &AvcConfig) -> Result<(Bytes, bool), BitstreamError> {
    let units = avcc_nal_units(data, config.length_size)?;
    let idr = units.iter().any(|u| nal_type(u) == nal::IDR);
    let has_params = units.iter().any(|u| nal_type(u) == nal::SPS);
    let mut out = BytesMut::with_capacity(data.len() + 64);
    if idr && !has_params {
        for unit in config.sps.iter().chain(&config.pps) {
            out.put_slice(&START_CODE);
            out.put_slice(unit);
        }
    }
    for unit in units.iter().filter(|u| nal_type(u) != nal::AUD) {
        out.put_slice(&START_CODE);
        out.put_slice(unit);
    }
    Ok((out.freeze(), idr))
}

/// Splits an Annex B byte stream at its start codes (`00 00 01` or `00 00 00 01`); empty units
/// are skipped. Pure and total: any input gives some (possibly empty) list.
pub fn annexb_nal_units(data: &Bytes) -> Vec<Bytes> {
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i] == 0 && data[i + 1] == 0 && data[i + 2] == 1 {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut units = Vec::with_capacity(starts.len());
    for (n, &start) in starts.iter().enumerate() {
        let mut end = starts.get(n + 1).map_or(data.len(), |next| next - 3);
        // A four-byte start code leaves one zero byte at the end of the previous unit.
        while end > start && data[end - 1] == 0 && n + 1 < starts.len() {
            end -= 1;
        }
        if end > start {
            units.push(data.slice(start..end));
        }
    }
    units
}

/// The SPS and PPS units of an Annex B access unit (empty lists when it has none).
pub fn annexb_parameter_sets(data: &Bytes) -> (Vec<Bytes>, Vec<Bytes>) {
    let units = annexb_nal_units(data);
    let pick = |t: u8| units.iter().filter(|u| nal_type(u) == t).cloned().collect();
    (pick(nal::SPS), pick(nal::PPS))
}

/// The name of an H.264 `profile_idc`.
pub fn profile_name(profile_idc: u8) -> &'static str {
    match profile_idc {
        66 => "Baseline",
        77 => "Main",
        88 => "Extended",
        100 => "High",
        110 => "High 10",
        122 => "High 4:2:2",
        244 => "High 4:4:4",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annexb_split_finds_units_and_parameter_sets() {
        let au = Bytes::from_static(&[
            0, 0, 0, 1, 0x67, 1, 2, 0, 0, 1, 0x68, 3, 0, 0, 0, 1, 0x65, 9, 9, 0,
        ]);
        let units = annexb_nal_units(&au);
        assert_eq!(units.len(), 3);
        assert_eq!(&units[0][..], &[0x67, 1, 2]);
        assert_eq!(&units[1][..], &[0x68, 3]);
        assert_eq!(&units[2][..], &[0x65, 9, 9, 0]);
        let (sps, pps) = annexb_parameter_sets(&au);
        assert_eq!((sps.len(), pps.len()), (1, 1));
        assert!(annexb_nal_units(&Bytes::from_static(&[0, 0])).is_empty());
        assert!(annexb_nal_units(&Bytes::from_static(&[0, 0, 1])).is_empty());
    }

    fn record() -> Bytes {
        // version 1, High@3.1, length size 4, one SPS, one PPS.
        Bytes::from_static(&[
            1, 100, 0, 31, 0xff, 0xe1, 0, 4, 0x67, 100, 0, 31, 1, 0, 2, 0x68, 0xee,
        ])
    }

    #[test]
    fn parses_decoder_configuration_record() {
        let c = AvcConfig::parse(&record()).unwrap();
        assert_eq!(c.length_size, 4);
        assert_eq!(c.sps, vec![Bytes::from_static(&[0x67, 100, 0, 31])]);
        assert_eq!(c.pps, vec![Bytes::from_static(&[0x68, 0xee])]);
    }

    #[test]
    fn every_truncation_of_the_record_is_an_error() {
        let full = record();
        for len in 0..full.len() {
            assert!(AvcConfig::parse(&full.slice(..len)).is_err(), "len {len}");
        }
    }

    #[test]
    fn keyframe_gets_parameter_sets_in_front() {
        let c = AvcConfig::parse(&record()).unwrap();
        let au = Bytes::from_static(&[0, 0, 0, 2, 0x09, 0xf0, 0, 0, 0, 3, 0x65, 1, 2]);
        let (annexb, idr) = avcc_to_annexb(&au, &c).unwrap();
        assert!(idr);
        let want: &[u8] = &[
            0, 0, 0, 1, 0x67, 100, 0, 31, 0, 0, 0, 1, 0x68, 0xee, 0, 0, 0, 1, 0x65, 1, 2,
        ];
        assert_eq!(&annexb[..], want);
    }

    #[test]
    fn inter_frame_is_passed_through() {
        let c = AvcConfig::parse(&record()).unwrap();
        let au = Bytes::from_static(&[0, 0, 0, 2, 0x41, 7]);
        let (annexb, idr) = avcc_to_annexb(&au, &c).unwrap();
        assert!(!idr);
        assert_eq!(&annexb[..], &[0, 0, 0, 1, 0x41, 7]);
    }

    #[test]
    fn lying_length_is_an_error_not_a_panic() {
        let c = AvcConfig::parse(&record()).unwrap();
        let au = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0x41]);
        assert_eq!(
            avcc_to_annexb(&au, &c),
            Err(BitstreamError::Truncated("NAL unit"))
        );
        let au = Bytes::from_static(&[0, 0]);
        assert_eq!(
            avcc_to_annexb(&au, &c),
            Err(BitstreamError::Truncated("NAL length"))
        );
    }
}
