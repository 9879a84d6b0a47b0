//! Pure bitstream helpers: AVCC <-> Annex B, AudioSpecificConfig. Every length read from input
//! is checked; malformed input is an error, never a panic.

pub mod aac;
pub mod avc;

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
