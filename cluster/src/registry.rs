//! The registry's contract, which every backend meets (`conformance` tests hold them to it).

use std::future::Future;
use std::time::Duration;

use media::ChannelName;
use tokio::sync::broadcast;

use crate::model::{NodeId, NodeInfo};

/// What a registry call can fail with.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry cannot be reached (Redis down); callers keep their local view.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// A channel was claimed for a node that is not registered.
    #[error("node {0} is not registered")]
    NotRegistered(NodeId),
    /// What was to be stored is not acceptable (a bad name, too large).
    #[error("{0}")]
    Invalid(String),
}

/// The outcome of claiming a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// The channel is now (or was already) the claiming node's.
    Owned,
    /// Another node owns it.
    OwnedBy(NodeId),
}

/// A change in the registry, for nodes keeping a local routing table.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A node registered.
    NodeUp(NodeInfo),
    /// A node changed what routing looks at (draining, roles, ports, host, region) or its load
    /// moved (viewers, ingest streams, bitrate out by more than an eighth).
    NodeChanged(NodeInfo),
    /// A node deregistered or stopped renewing.
    NodeGone(NodeId),
    /// A channel got an origin node.
    ChannelClaimed {
        /// The channel.
        channel: ChannelName,
        /// Its origin.
        node: NodeId,
    },
    /// A channel's origin let it go (or died).
    ChannelReleased {
        /// The channel.
        channel: ChannelName,
        /// The node that had it.
        node: NodeId,
    },
    /// Events may have been missed (the registry's event stream was lost and is back): reread
    /// the registry.
    Resync,
}

/// The cluster registry. Calls are cheap to repeat: a node renews by registering again.
pub trait Registry: Send + Sync {
    /// Registers or renews `node`; it vanishes `ttl` after its last renewal. True when this
    /// registered it anew (the first time, or after it expired or the registry lost it, as a
    /// restarted Redis does): the node should then claim its channels again.
    fn register(
        &self,
        node: NodeInfo,
        ttl: Duration,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;

    /// Removes a node at once (graceful shutdown), with the channels it owns.
    fn deregister(&self, id: &NodeId) -> impl Future<Output = Result<(), RegistryError>> + Send;

    /// The live nodes, sorted by id.
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeInfo>, RegistryError>> + Send;

    /// Marks a node draining or not; false if there is no such node.
    fn set_draining(
        &self,
        id: &NodeId,
        draining: bool,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;

    /// Makes `node` the channel's origin unless another node is: atomic, so of two nodes
    /// claiming at once exactly one gets [`Claim::Owned`].
    fn claim_channel(
        &self,
        channel: &ChannelName,
        node: &NodeId,
    ) -> impl Future<Output = Result<Claim, RegistryError>> + Send;

    /// Lets a channel go if `node` owns it; whether it did.
    fn release_channel(
        &self,
        channel: &ChannelName,
        node: &NodeId,
    ) -> impl Future<Output = Result<bool, RegistryError>> + Send;

    /// Every owned channel with its origin, sorted by channel.
    fn channels(
        &self,
    ) -> impl Future<Output = Result<Vec<(ChannelName, NodeId)>, RegistryError>> + Send;

    /// Stores the TLS certificate chain and key for a public name, so any front can serve it.
    fn put_certificate(
        &self,
        name: &str,
        certificate: Certificate,
    ) -> impl Future<Output = Result<(), RegistryError>> + Send;

    /// The TLS certificate stored for a public name, if any.
    fn certificate(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<Certificate>, RegistryError>> + Send;

    /// Changes from now on (a subscriber that lags loses the oldest and should resync).
    fn events(&self) -> broadcast::Receiver<Event>;
}

/// A public name's TLS certificate chain and private key, in PEM. The key never reaches a log.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Certificate {
    /// The certificate chain, leaf first.
    pub chain_pem: String,
    /// The private key.
    pub key_pem: String,
}

impl Certificate {
    /// A certificate chain and its key, checked: PEM, and the key is the leaf's.
    pub fn from_pem(chain_pem: String, key_pem: String) -> Result<Self, RegistryError> {
        use crate::bundle::{key_matches, PairError};
        match key_matches(chain_pem.as_bytes(), key_pem.as_bytes()) {
            Ok(()) => Ok(Self { chain_pem, key_pem }),
            Err(PairError::Certificate) => Err(RegistryError::Invalid(
                "the chain does not start with a PEM certificate".into(),
            )),
            Err(PairError::Key) => Err(RegistryError::Invalid(
                "the key is not a PEM private key (RSA, ECDSA or Ed25519)".into(),
            )),
            Err(PairError::Mismatch) => Err(RegistryError::Invalid(
                "the key does not belong to the chain's first certificate".into(),
            )),
        }
    }
}

impl std::fmt::Debug for Certificate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificate")
            .field("chain_pem", &format!("{} bytes", self.chain_pem.len()))
            .field("key_pem", &"<redacted>")
            .finish()
    }
}

/// Public names stored, at most; a name is at most this long.
pub(crate) const MAX_CERTIFICATES: usize = 10_000;
pub(crate) const MAX_NAME: usize = 253;
/// A certificate chain and key together are at most this large.
pub(crate) const MAX_CERTIFICATE_BYTES: usize = 64 * 1024;

/// Checks a public name and certificate's size before storing them.
pub(crate) fn check_certificate(
    name: &str,
    certificate: &Certificate,
) -> Result<(), RegistryError> {
    let valid_name = !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'*'));
    if !valid_name {
        return Err(RegistryError::Invalid(format!(
            "{name:?} is not a host name"
        )));
    }
    if certificate.chain_pem.len() + certificate.key_pem.len() > MAX_CERTIFICATE_BYTES {
        return Err(RegistryError::Invalid(
            "certificate and key over 64 KiB".into(),
        ));
    }
    Ok(())
}

/// Whether a renewal is news for the nodes' routing tables: what routing looks at changed
/// (roles, region, host, ports, draining, relay tier and certificate), or the load did (viewers or ingest streams, or
/// bitrate out by more than an eighth). So a busy node announces itself at most once a renewal
/// and an idle one never.
pub(crate) fn worth_announcing(old: &NodeInfo, new: &NodeInfo) -> bool {
    let routing = (
        &old.roles,
        &old.region,
        &old.public_host,
        &old.ports,
        old.draining,
        old.tier,
        &old.relay_fingerprint,
    ) != (
        &new.roles,
        &new.region,
        &new.public_host,
        &new.ports,
        new.draining,
        new.tier,
        &new.relay_fingerprint,
    );
    let (a, b) = (&old.load, &new.load);
    let bitrate_moved =
        a.bitrate_out.abs_diff(b.bitrate_out) > a.bitrate_out.max(b.bitrate_out) / 8;
    routing || a.viewers != b.viewers || a.ingest_streams != b.ingest_streams || bitrate_moved
}

/// How many events a subscriber may lag behind before it loses the oldest.
pub(crate) const EVENT_BACKLOG: usize = 1024;

/// Bounds on what a registry keeps.
pub(crate) const MAX_NODES: usize = 10_000;
pub(crate) const MAX_CHANNELS: usize = 100_000;

/// A TTL is at least this (a node renews every second).
pub(crate) const MIN_TTL: Duration = Duration::from_secs(1);
