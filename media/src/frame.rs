use std::time::Instant;

use bytes::Bytes;

/// One media frame: a video access unit or an audio packet.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Presentation time in the track's timescale (90 kHz for video, the sample rate for audio).
    pub timestamp: u64,
    /// True when a decoder can start here; a keyframe starts a new group.
    pub keyframe: bool,
    /// The payload (Annex B for H.264). Cloning shares the bytes.
    pub payload: Bytes,
    /// When the ingest received the frame; used for server-added latency.
    pub arrived: Instant,
}
