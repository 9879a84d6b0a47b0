//! Admission: who may publish a channel on this node. The publishers' table (channels and
//! their keys), the cluster's claims on channels, the check that no one else is live on the
//! channel here, and the per-client-address caps of the node's listeners. Every way in (RTMP,
//! SRT, FTL in `ingest`; WHIP in `sfu`) asks the same [`Admission`], so neither depends on the
//! other.
#![warn(missing_docs, unreachable_pub)]

mod auth;
mod claims;
pub mod limits;
pub mod listen;
pub mod token;

use std::sync::Arc;

pub use auth::{AuthError, ChannelConfig, ConfigError, Publishers, StreamKey};
pub use claims::{Claimed, Claims, HeldElsewhere};
pub use limits::{IpPermit, Limits, PerIp};
use media::{Bus, BusError, ChannelName};

/// The publishing policy of a node over its bus: cheap to clone, one per node.
#[derive(Clone)]
pub struct Admission {
    bus: Bus,
    publishers: Arc<Publishers>,
    claims: Option<Arc<dyn Claims>>,
    limits: Arc<Limits>,
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

impl Admission {
    /// Publishers into `bus` under `publishers`' policy, with no claims (one node) and fresh
    /// per-address caps.
    pub fn new(bus: Bus, publishers: Publishers) -> Self {
        Self {
            bus,
            publishers: Arc::new(publishers),
            claims: None,
            limits: Arc::default(),
        }
    }

    /// In a cluster: publishers are admitted only once their channel is claimed.
    pub fn with_claims(mut self, claims: Arc<dyn Claims>) -> Self {
        self.claims = Some(claims);
        self
    }

    /// The per-client-address caps of the node's listeners (one set per node).
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// The channels and their keys.
    pub fn publishers(&self) -> &Publishers {
        &self.publishers
    }

    /// The bus publishers write into.
    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// True when any name may publish (no channels configured).
    pub fn is_open(&self) -> bool {
        self.publishers.is_open()
    }

    /// Claims `channel` for this node (in a cluster), before its publisher is admitted.
    pub async fn claim(&self, channel: &ChannelName) -> Result<Claimed, Refusal> {
        let Some(claims) = &self.claims else {
            return Ok(Claimed::nothing());
        };
        claims.claim(channel).await.map_err(Refusal::Elsewhere)?;
        Ok(Claimed::new(claims.clone(), channel.clone()))
    }

    /// Authorises a publisher before its connection is set up (SRT: before the handshake that
    /// may still fail), without starting anything: the channel it may publish to, unless the
    /// name or key is refused or another publisher is live there.
    pub fn authorize(&self, channel: &str, key: Option<&str>) -> Result<ChannelName, Refusal> {
        let name = self.publishers.authorize(channel, key)?;
        self.not_live(name)
    }

    /// Authorises an FTL publisher by its HMAC-SHA512 of `challenge` under the channel's key,
    /// without starting anything, like [`Admission::authorize`].
    pub fn authorize_hmac(
        &self,
        channel: &str,
        challenge: &[u8],
        tag: &[u8],
    ) -> Result<ChannelName, Refusal> {
        let name = self.publishers.authorize_hmac(channel, challenge, tag)?;
        self.not_live(name)
    }

    /// Authorises an RTMP-style stream key without starting anything (see
    /// [`Admission::authorize`]).
    pub fn authorize_stream_key(&self, stream_key: &str) -> Result<ChannelName, Refusal> {
        let name = self.publishers.authorize_stream_key(stream_key)?;
        self.not_live(name)
    }

    /// Authorises a WHIP publisher sent by the front with a publish token instead of its key
    /// ([`token`]), good at `now` (Unix seconds), like [`Admission::authorize`]. On a node with
    /// no channels configured any name may publish, token or not.
    pub fn authorize_token(
        &self,
        channel: &str,
        token: &str,
        now: u64,
    ) -> Result<ChannelName, Refusal> {
        let name = ChannelName::new(channel).map_err(|_| AuthError::BadName)?;
        if !self.is_open() {
            let Some(key) = self.publishers.key(&name) else {
                return Err(AuthError::UnknownChannel.into());
            };
            if !token::verify(key, &name, token, now) {
                return Err(AuthError::WrongKey(name).into());
            }
        }
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
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission")
            .field("publishers", &self.publishers)
            .field("claims", &self.claims.is_some())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(n: &str) -> ChannelName {
        ChannelName::new(n).unwrap()
    }

    #[test]
    fn a_channel_live_here_refuses_a_second_publisher() {
        let bus = Bus::with_config(Default::default());
        let admission = Admission::new(bus.clone(), Publishers::default());
        assert_eq!(admission.authorize("alice", None).unwrap(), name("alice"));
        let _live = bus.publish(name("alice")).unwrap();
        let refusal = admission.authorize("alice", None).unwrap_err();
        assert!(matches!(refusal, Refusal::Live(_)));
        assert_eq!(refusal.code(), "NetStream.Publish.BadName");
        let refusal = Admission::new(
            bus,
            Publishers::with_channels([(name("bob"), StreamKey::new("k"))]),
        )
        .authorize_stream_key("bob?key=x")
        .unwrap_err();
        assert_eq!(refusal.code(), "NetStream.Publish.Rejected");
    }
}
