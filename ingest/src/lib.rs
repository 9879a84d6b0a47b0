//! Ingest: turns publishers (RTMP, SRT, FTL) into broadcasts on the media bus.
#![warn(missing_docs, unreachable_pub)]

mod auth;
mod claims;
pub mod es;
pub mod ftl;
pub mod limits;
pub mod listen;
pub mod mpegts;
mod publish;
pub mod rtmp;
pub mod srt;
pub mod transcode;
mod untrusted;
mod unwrap;

use std::sync::Arc;

pub use auth::{AuthError, ChannelConfig, ConfigError, Publishers, StreamKey};
pub use claims::{Claimed, Claims, HeldElsewhere};
pub use ftl::FtlConfig;
use media::{Bus, BusError, ChannelName};
pub use publish::{Publish, BFRAMES_NOTICE};
pub use rtmp::RtmpConfig;
pub use srt::SrtConfig;

/// What every ingest protocol shares: the bus and the publishing policy. Cheap to clone.
#[derive(Clone)]
pub struct Ingest {
    bus: Bus,
    publishers: Arc<Publishers>,
    claims: Option<Arc<dyn Claims>>,
    limits: Arc<limits::Limits>,
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
    /// Another node of the cluster holds the channel's publisher.
    #[error("channel is live on node {}", .0 .0)]
    Elsewhere(HeldElsewhere),
}

impl Refusal {
    /// The RTMP status code that tells a client why.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Auth(_) => "NetStream.Publish.Rejected",
            Refusal::Live(_) | Refusal::Elsewhere(_) => "NetStream.Publish.BadName",
        }
    }
}

impl Ingest {
    /// Ingest into `bus` under `publishers`' policy.
    pub fn new(bus: Bus, publishers: Publishers) -> Self {
        Self {
            bus,
            publishers: Arc::new(publishers),
            claims: None,
            limits: Arc::default(),
        }
    }

    /// The per-client-address caps of the node's listeners (one set per node).
    pub fn limits(&self) -> &limits::Limits {
        &self.limits
    }

    /// In a cluster: publishers are admitted only once their channel is claimed.
    pub fn with_claims(mut self, claims: Arc<dyn Claims>) -> Self {
        self.claims = Some(claims);
        self
    }

    /// Claims `channel` for this node (in a cluster), before its publisher is admitted.
    pub async fn claim(&self, channel: &ChannelName) -> Result<Claimed, Refusal> {
        let Some(claims) = &self.claims else {
            return Ok(Claimed::nothing());
        };
        claims.claim(channel).await.map_err(Refusal::Elsewhere)?;
        Ok(Claimed::new(claims.clone(), channel.clone()))
    }

    /// The bus publishers write into.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// True when any name may publish (no channels configured).
    pub fn is_open(&self) -> bool {
        self.publishers.is_open()
    }

    /// Authorises a publisher before its connection is set up (SRT: before the handshake that
    /// may still fail), without starting anything: the channel it may publish to, unless the
    /// name or key is refused or another publisher is live there.
    pub fn authorize(&self, channel: &str, key: Option<&str>) -> Result<ChannelName, Refusal> {
        let name = self.publishers.authorize(channel, key)?;
        self.not_live(name)
    }

    fn not_live(&self, name: ChannelName) -> Result<ChannelName, Refusal> {
        if self
            .bus
            .live()
            .iter()
            // A copy pulled from another node does not hold the channel here.
            .any(|b| b.name == name && b.publishing && !b.relayed)
        {
            return Err(BusError::AlreadyLive(name).into());
        }
        Ok(name)
    }

    /// Authorises an FTL publisher by its HMAC-SHA512 of `challenge` under the channel's key,
    /// without starting anything, like [`Ingest::authorize`].
    pub fn authorize_hmac(
        &self,
        channel: &str,
        challenge: &[u8],
        tag: &[u8],
    ) -> Result<ChannelName, Refusal> {
        let name = self.publishers.authorize_hmac(channel, challenge, tag)?;
        self.not_live(name)
    }

    /// Authorises an RTMP-style stream key without starting anything (see [`Ingest::authorize`]).
    pub fn authorize_stream_key(&self, stream_key: &str) -> Result<ChannelName, Refusal> {
        let name = self.publishers.authorize_stream_key(stream_key)?;
        self.not_live(name)
    }

    /// Starts the broadcast of a channel already authorised (and claimed, in a cluster).
    pub fn start_authorized(&self, channel: ChannelName) -> Result<Publish, Refusal> {
        Ok(Publish::new(self.bus.publish(channel)?))
    }
}
