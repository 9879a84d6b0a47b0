//! `[relay]`: where the relay listens, its tier, its cache and who may connect.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cluster::Tier;
use serde::Deserialize;

/// The relay's settings.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    /// QUIC (UDP) listen address.
    pub listen: SocketAddr,
    /// `primary` (viewer-facing) or `secondary` (a shield between primaries and origins).
    pub tier: Tier,
    /// Payload bytes of groups cached for other nodes, across all tracks of this node (least
    /// recently used go first).
    pub cache_bytes: usize,
    /// Seconds an upstream subscription is kept after its last local or downstream consumer
    /// left, so a viewer who reloads finds it warm.
    pub linger_secs: u64,
    /// SHA-256 fingerprints (hex) of client certificates accepted besides the cluster's nodes:
    /// outside MoQ clients the operator lets in.
    pub trusted_clients: Vec<String>,
    /// PEM certificate chain of this node's relay (default: a self-signed one made at start;
    /// its fingerprint goes to the registry either way).
    pub certificate: Option<PathBuf>,
    /// PEM private key of `certificate`.
    pub key: Option<PathBuf>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 4443)),
            tier: Tier::Primary,
            cache_bytes: 256 << 20,
            linger_secs: 5,
            trusted_clients: Vec::new(),
            certificate: None,
            key: None,
        }
    }
}

impl RelayConfig {
    /// How long an unused upstream subscription is kept.
    pub fn linger(&self) -> Duration {
        Duration::from_secs(self.linger_secs)
    }
}
