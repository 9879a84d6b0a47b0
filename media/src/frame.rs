use std::any::Any;
use std::fmt;
use std::sync::{Arc, OnceLock};
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
    /// What an egress derives from this frame once and every reader shares (the SFU's RTP
    /// payloads). Cloning the frame shares it.
    pub derived: Derived,
}

impl Frame {
    /// A frame with nothing derived from it yet.
    pub fn new(timestamp: u64, keyframe: bool, payload: Bytes, arrived: Instant) -> Self {
        Self {
            timestamp,
            keyframe,
            payload,
            arrived,
            derived: Derived::default(),
        }
    }
}

/// A write-once slot for one value of any type, shared by the clones of a frame.
#[derive(Clone, Default)]
pub struct Derived(Arc<OnceLock<Arc<dyn Any + Send + Sync>>>);

impl Derived {
    /// The value, made by `make` on first use. `None` if a value of another type is there.
    pub fn get_or_init<T: Any + Send + Sync>(&self, make: impl FnOnce() -> T) -> Option<&T> {
        self.0
            .get_or_init(|| Arc::new(make()))
            .as_ref()
            .downcast_ref()
    }
}

impl fmt::Debug for Derived {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.get().is_some() {
            "Derived(set)"
        } else {
            "Derived(empty)"
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_what_was_derived_once() {
        let frame = Frame::new(0, true, Bytes::from_static(b"x"), Instant::now());
        let clone = frame.clone();
        let mut made = 0;
        assert_eq!(
            frame.derived.get_or_init(|| {
                made += 1;
                7u32
            }),
            Some(&7)
        );
        assert_eq!(clone.derived.get_or_init(|| 8u32), Some(&7));
        assert_eq!(clone.derived.get_or_init(|| "other type"), None);
        assert_eq!(made, 1);
    }
}
