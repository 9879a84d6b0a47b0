//! The media bus: everything media meets here.
//!
//! A [`Bus`] holds live [`Broadcast`](BroadcastConsumer)s by [`ChannelName`]. A broadcast holds
//! named tracks; a track is a sequence of groups, each starting at a decodable point (a video
//! keyframe, or about a second of audio), each holding [`Frame`]s. Producers write, any number of
//! consumers read:
//!
//! - payloads are [`bytes::Bytes`], never copied on fan-out;
//! - a new consumer starts at the start of the latest group, so a viewer gets a picture at once;
//! - a slow consumer skips to the newest group instead of growing a queue: the cache is
//!   bounded by [`TrackLimits`], never by the number or speed of consumers, and a consumer holds
//!   at most the group it is in;
//! - consumers read without a lock they would share: a group's frames sit in write-once slots.
//!
//! The model mirrors MoQ's (broadcast > track > group > frame) so the relay can map it 1:1.
#![warn(missing_docs, unreachable_pub)]

pub mod bitstream;
mod broadcast;
mod bus;
mod codec;
mod frame;
mod group;
mod name;
mod timeline;
mod track;
mod wakers;

pub use broadcast::{BroadcastConsumer, BroadcastProducer};
pub use bus::{Bus, BusConfig, BusError, LiveBroadcast, Pull, Remote, TrackInfo};
pub use codec::{AudioCodec, Codec, VideoCodec};
pub use frame::{Derived, Frame};
pub use name::{ChannelName, InvalidName};
pub use timeline::Timeline;
pub use track::{TrackConsumer, TrackLimits, TrackProducer, TrackStats};

/// Well-known track names.
pub mod tracks {
    /// The main video track (H.264 Annex B for now). Simulcast layers are `video.{rid}`.
    pub const VIDEO: &str = "video";

    /// True for the main video track and simulcast layers (`video`, `video.h`, ...).
    pub fn is_video(name: &str) -> bool {
        name == VIDEO || name.starts_with("video.")
    }
    /// Opus audio at 48 kHz, what browsers play over WebRTC.
    pub const AUDIO_OPUS: &str = "audio.opus";
    /// The source video while `video` carries its re-encode (without B-frames): not a layer,
    /// and not relayed.
    pub const ORIGINAL_VIDEO: &str = "original.video";
    /// H.264 made on demand from an H.265 or AV1 `video`, for viewers that cannot decode it:
    /// not a simulcast layer. The ingest node makes it while the track has consumers.
    pub const VIDEO_H264: &str = "h264.video";
}
