//! Ingest: turns publishers (RTMP today) into broadcasts on the media bus.
#![warn(missing_docs, unreachable_pub)]

mod auth;
mod publish;
pub mod rtmp;
pub mod transcode;

use std::sync::Arc;

pub use auth::{AuthError, ChannelConfig, ConfigError, Publishers, StreamKey};
use media::{Bus, BusError};
pub use publish::{Publish, BFRAMES_NOTICE};
pub use rtmp::RtmpConfig;

/// What every ingest protocol shares: the bus and the publishing policy. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    bus: Bus,
    publishers: Arc<Publishers>,
}

/// Why a publisher was turned away. Never holds the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// Name or key not accepted.
    #[error(transparent)]
    Auth(#[from] AuthError),
    /// Another publisher is live on the channel.
    #[error(transparent)]
    Live(#[from] BusError),
}

impl Refusal {
    /// The RTMP status code that tells a client why.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Auth(_) => "NetStream.Publish.Rejected",
            Refusal::Live(_) => "NetStream.Publish.BadName",
        }
    }
}

impl Ingest {
    /// Ingest into `bus` under `publishers`' policy.
    pub fn new(bus: Bus, publishers: Publishers) -> Self {
        Self {
            bus,
            publishers: Arc::new(publishers),
        }
    }

    /// Authorises an RTMP-style stream key and starts its broadcast.
    pub fn start(&self, stream_key: &str) -> Result<Publish, Refusal> {
        let channel = self.publishers.authorize_stream_key(stream_key)?;
        Ok(Publish::new(self.bus.publish(channel)?))
    }
}
