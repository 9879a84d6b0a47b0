//! The relay: any viewer on any node watches any channel. Broadcasts move between nodes over
//! MoQ (moq-net on quinn), in tiers: a primary pulls through a secondary, which pulls from the
//! origin (the node holding the publisher) or from a secondary nearer it
//! ([`cluster::upstreams`]). The relay maps the bus to MoQ one to one (broadcast, track, group,
//! frame, plus a JSON catalog track) and never parses codecs.
//!
//! - One upstream subscription per track per node, however many viewers or downstream nodes
//!   want it: a channel is pulled onto the bus once, and the bus fans it out.
//! - Every node caches recent groups: the bus keeps the latest groups of each track, and
//!   moq-net's cache, bounded in bytes for the whole node, serves downstream nodes.
//! - Only cluster nodes connect: certificates pinned by the fingerprints in the registry
//!   ([`identity`]).
//! - A dead or draining upstream is replaced within about two seconds, into the same bus
//!   tracks: viewers keep their PeerConnection.
#![warn(missing_docs, unreachable_pub)]

pub mod catalog;
mod config;
mod downstream;
mod endpoint;
mod export;
pub mod identity;
mod import;
mod metrics;
mod peers;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use cluster::{NodeId, NodeInfo, Role, RoutingTable, Tier};
use media::{BroadcastConsumer, Bus, ChannelName};
use moq_net::{cache, origin, Hop};
use tokio::sync::watch;
use web_transport_quinn::quinn;

pub use catalog::{Catalog, CatalogError, CatalogTrack, WireCodec};
pub use config::RelayConfig;
pub use endpoint::EndpointError;
pub use identity::{Identity, IdentityError};

use import::PullState;
use metrics::{inc, Metrics};

/// The MoQ namespace of channels: channel `alice` is broadcast `live/alice` (a MoQ client
/// subscribes to namespace `live/alice`, track `video`). An empty namespace, the alternative,
/// is one that moq-transport clients do not accept when it is announced.
pub const NAMESPACE: &str = "live";

/// A channel's MoQ broadcast path.
pub(crate) fn path(channel: &ChannelName) -> String {
    format!("{NAMESPACE}/{channel}")
}

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Its certificate.
    #[error(transparent)]
    Identity(#[from] IdentityError),
    /// Its endpoint.
    #[error(transparent)]
    Endpoint(#[from] EndpointError),
    /// moq-net refused the origin's route.
    #[error("relay origin: {0}")]
    Origin(String),
}

/// Who this node is, for choosing upstreams before its registration reaches the table.
#[derive(Clone, Debug)]
pub struct Me {
    /// Its id.
    pub id: NodeId,
    /// Its region.
    pub region: String,
}

pub(crate) struct Shared {
    pub(crate) bus: Bus,
    pub(crate) routing: Arc<RoutingTable>,
    pub(crate) config: RelayConfig,
    pub(crate) identity: Identity,
    pub(crate) endpoint: quinn::Endpoint,
    pub(crate) pool: cache::Pool,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) peers: peers::Peers,
    me: Me,
    hop: Hop,
    pulls: Mutex<HashMap<ChannelName, watch::Receiver<PullState>>>,
}

impl Shared {
    /// This node as the routing table has it (or as configured, until it is there).
    pub(crate) fn me(&self, nodes: &[NodeInfo]) -> NodeInfo {
        nodes
            .iter()
            .find(|n| n.id == self.me.id)
            .cloned()
            .unwrap_or_else(|| NodeInfo {
                id: self.me.id.clone(),
                roles: vec![Role::Relay],
                region: self.me.region.clone(),
                public_host: String::new(),
                ports: cluster::Ports::default(),
                load: cluster::Load::default(),
                draining: false,
                tier: self.config.tier,
                relay_fingerprint: self.identity.fingerprint.clone(),
            })
    }

    /// A MoQ origin sharing this node's cache budget.
    pub(crate) fn new_origin(&self) -> origin::Producer {
        let mut config = origin::Config::new(self.hop);
        config.pool = self.pool.clone();
        let (origin, driver) = origin::Producer::new(config);
        tokio::spawn(moq_net::time::run(driver));
        origin
    }

    /// The channel on this bus, pulled from upstream if it is not here: one pull per channel
    /// however many ask at once.
    pub(crate) async fn pull(self: &Arc<Self>, name: ChannelName) -> Option<BroadcastConsumer> {
        let mut state = {
            let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
            match pulls.get(&name) {
                Some(state) if *state.borrow() != PullState::Over => {
                    inc(&self.metrics.hits);
                    state.clone()
                }
                _ => {
                    inc(&self.metrics.misses);
                    let (tx, rx) = watch::channel(PullState::Starting);
                    pulls.insert(name.clone(), rx.clone());
                    tokio::spawn(import::run(self.clone(), name.clone(), tx));
                    rx
                }
            }
        };
        let ready = tokio::time::timeout(
            import::READY_WITHIN + std::time::Duration::from_secs(1),
            state.wait_for(|s| *s != PullState::Starting),
        )
        .await;
        match ready {
            Ok(Ok(s)) if *s == PullState::Ready => self.bus.subscribe(&name),
            _ => None,
        }
    }

    pub(crate) fn forget_pull(&self, name: &ChannelName) {
        let mut pulls = self.pulls.lock().unwrap_or_else(|e| e.into_inner());
        if pulls
            .get(name)
            .is_some_and(|s| *s.borrow() == PullState::Over)
        {
            pulls.remove(name);
        }
    }
}

/// The relay of one node. Cheap to clone.
#[derive(Clone)]
pub struct Relay {
    shared: Arc<Shared>,
    /// Keeps the route downstream nodes see; dropping it would retract it.
    _edge: Arc<origin::Producer>,
}

impl Relay {
    /// Binds the relay's QUIC endpoint and serves: downstream nodes may subscribe to any
    /// channel this node has or can pull. Viewers' misses on `bus` are pulled through it once
    /// [`Relay::serve_bus`] is called.
    pub fn start(
        config: RelayConfig,
        me: Me,
        bus: Bus,
        routing: Arc<RoutingTable>,
    ) -> Result<Self, RelayError> {
        let identity = match (&config.certificate, &config.key) {
            (Some(cert), Some(key)) => Identity::from_pem_files(cert, key)?,
            _ => Identity::generate(endpoint::SERVER_NAME)?,
        };
        let trusted: identity::Trusted = {
            let routing = routing.clone();
            let extra: Vec<String> = config
                .trusted_clients
                .iter()
                .map(|f| f.trim().replace(':', "").to_ascii_lowercase())
                .collect();
            Arc::new(move |fingerprint: &str| {
                extra.iter().any(|f| f == fingerprint)
                    || routing
                        .nodes()
                        .iter()
                        .any(|n| n.relay_fingerprint == fingerprint)
            })
        };
        let endpoint = endpoint::bind(config.listen, &identity, trusted)?;
        let pool =
            cache::Pool::new(cache::Config::default().with_capacity(config.cache_bytes as u64));
        let hop = Hop::new(hop_id(&me.id)).map_err(|e| RelayError::Origin(format!("{e:?}")))?;
        let shared = Arc::new(Shared {
            bus,
            routing,
            config,
            identity,
            endpoint,
            pool,
            metrics: Arc::new(Metrics::default()),
            peers: peers::Peers::default(),
            me,
            hop,
            pulls: Mutex::new(HashMap::new()),
        });
        let edge = shared.new_origin();
        // Any path: requests for channels this node does not have are pulled on demand.
        let dynamic = edge
            .dynamic(NAMESPACE, origin::Route::default())
            .map_err(|e| RelayError::Origin(e.to_string()))?;
        tokio::spawn(export::serve_requests(shared.clone(), dynamic));
        tokio::spawn(downstream::accept(shared.clone(), edge.clone()));
        Ok(Self {
            shared,
            _edge: Arc::new(edge),
        })
    }

    /// Lets viewers of `bus` watch channels published on other nodes.
    pub fn serve_bus(&self) {
        self.shared
            .bus
            .set_remote(Arc::new(Puller(self.shared.clone())));
    }

    /// Where the relay listens.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.shared.endpoint.local_addr().ok()
    }

    /// SHA-256 of this node's relay certificate (hex), for the registry.
    pub fn fingerprint(&self) -> &str {
        &self.shared.identity.fingerprint
    }

    /// This node's tier.
    pub fn tier(&self) -> Tier {
        self.shared.config.tier
    }

    /// The relay's metrics, Prometheus text.
    pub fn metrics(&self) -> String {
        self.shared
            .metrics
            .render(self.shared.config.tier, self.shared.pool.used())
    }

    /// Stops accepting and closes every relay connection.
    pub fn close(&self) {
        self.shared.endpoint.close(0u32.into(), b"shutting down");
    }
}

struct Puller(Arc<Shared>);

impl media::Remote for Puller {
    fn pull(&self, name: ChannelName) -> media::Pull {
        let shared = self.0.clone();
        Box::pin(async move { shared.pull(name).await })
    }

    fn served_again(&self, _name: &ChannelName) {
        inc(&self.0.metrics.hits);
    }
}

/// A node's MoQ hop id: a hash of its id, in moq-net's range (1 to 2^62 - 1).
fn hop_id(id: &NodeId) -> u64 {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, id.as_str().as_bytes());
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&digest.as_ref()[..8]);
    (u64::from_be_bytes(bytes) >> 2).max(1)
}

/// Entry points for the fuzz targets (`fuzz/`): everything the relay parses of what a peer
/// sends, besides moq-net's own framing.
#[doc(hidden)]
pub mod fuzzing {
    /// A frame object, a catalog and a keyframe request, each from the same bytes.
    pub fn peer_input(data: &[u8]) {
        let _ = crate::wire::decode(bytes::Bytes::copy_from_slice(data));
        if let Ok(catalog) = crate::Catalog::decode(data) {
            for track in &catalog.tracks {
                let _ = track.codec.as_ref().map(crate::WireCodec::to_codec);
            }
        }
        let _ = crate::downstream::parse_request(data);
    }
}
