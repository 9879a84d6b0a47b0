//! Pure bitstream helpers: AVCC <-> Annex B, AudioSpecificConfig. Every length read from input
//! is checked; malformed input is an error, never a panic.

pub mod aac;
pub mod avc;
pub mod hevc;

/// Malformed bitstream input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum BitstreamError {
    /// The input ended before a length it declared.
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A field holds a value this code does not support.
    #[error("unsupported {0}")]
    Unsupported(&'static str),
}

#[cfg(test)]
mod fuzz {
    //! Arbitrary bytes never panic the parsers (cargo-fuzz needs nightly, which this
    //! toolchain lacks; proptest covers the same contract on stable).
    use bytes::Bytes;
    use proptest::prelude::*;

    use super::aac::AudioSpecificConfig;
    use super::avc::{avcc_to_annexb, AvcConfig};

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]
        #[test]
        fn parsers_never_panic(data in proptest::collection::vec(any::<u8>(), 0..512), size in 1usize..5) {
            let data = Bytes::from(data);
            let _ = AudioSpecificConfig::parse(&data);
            let _ = AvcConfig::parse(&data);
            let config = AvcConfig { length_size: size, sps: vec![], pps: vec![] };
            let _ = avcc_to_annexb(&data, &config);
            let _ = super::avc::annexb_parameter_sets(&data);
        }
    }
}
