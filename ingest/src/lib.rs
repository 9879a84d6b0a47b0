//! Ingest: turns publishers (RTMP, SRT, FTL) into broadcasts on the media bus.
#![warn(missing_docs, unreachable_pub)]

pub mod es;
pub mod ftl;
pub mod mpegts;
mod publish;
pub mod rtmp;
pub mod srt;
pub mod transcode;
mod untrusted;
mod unwrap;

pub use admission::{
    limits, Admission, AuthError, ChannelConfig, Claimed, Claims, ConfigError, HeldElsewhere,
    Publishers, Refusal, StreamKey,
};
pub use ftl::FtlConfig;
use std::sync::Arc;

use media::{Bus, ChannelName};
pub use publish::{Publish, BFRAMES_NOTICE, ORIGINAL_VIDEO, REENCODED_NOTICE};
pub use rtmp::RtmpConfig;
pub use srt::SrtConfig;
pub use transcode::video_worker::TranscodeConfig;

/// What every ingest protocol shares: the node's [`Admission`] (its bus, publishing policy,
/// claims and per-address caps). Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    admission: Admission,
    transcoding: Option<Arc<transcode::video_worker::Budget>>,
}

impl Ingest {
    /// Ingest under `admission`'s policy, into its bus.
    pub fn new(admission: Admission) -> Self {
        Self {
            admission,
            transcoding: None,
        }
    }

    /// Publishers' H.264 with B-frames is re-encoded without them, within `budget`.
    pub fn with_transcoding(mut self, budget: Arc<transcode::video_worker::Budget>) -> Self {
        self.transcoding = Some(budget);
        self
    }

    /// The admission policy this ingest asks.
    pub fn admission(&self) -> &Admission {
        &self.admission
    }

    /// The per-client-address caps of the node's listeners (one set per node).
    pub fn limits(&self) -> &limits::Limits {
        self.admission.limits()
    }

    /// Claims `channel` for this node (in a cluster), before its publisher is admitted.
    pub async fn claim(&self, channel: &ChannelName) -> Result<Claimed, Refusal> {
        self.admission.claim(channel).await
    }

    /// The bus publishers write into.
    pub fn bus(&self) -> &Bus {
        self.admission.bus()
    }

    /// True when any name may publish (no channels configured).
    pub fn is_open(&self) -> bool {
        self.admission.is_open()
    }

    /// See [`Admission::authorize`].
    pub fn authorize(&self, channel: &str, key: Option<&str>) -> Result<ChannelName, Refusal> {
        self.admission.authorize(channel, key)
    }

    /// See [`Admission::authorize_hmac`].
    pub fn authorize_hmac(
        &self,
        channel: &str,
        challenge: &[u8],
        tag: &[u8],
    ) -> Result<ChannelName, Refusal> {
        self.admission.authorize_hmac(channel, challenge, tag)
    }

    /// See [`Admission::authorize_stream_key`].
    pub fn authorize_stream_key(&self, stream_key: &str) -> Result<ChannelName, Refusal> {
        self.admission.authorize_stream_key(stream_key)
    }

    /// Starts the broadcast of a channel already authorised (and claimed, in a cluster).
    pub fn start_authorized(&self, channel: ChannelName) -> Result<Publish, Refusal> {
        let ladder = self
            .transcoding
            .as_ref()
            .map(|budget| budget.ladder_for(channel.as_str()));
        let publish = Publish::new(self.bus().publish(channel)?);
        Ok(match (&self.transcoding, ladder) {
            (Some(budget), Some(ladder)) => publish.with_transcoding(budget.clone(), ladder),
            _ => publish,
        })
    }
}
