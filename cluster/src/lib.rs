//! The cluster's memory: which nodes exist, what they serve, how loaded they are, and which
//! node owns each channel. One [`Registry`] trait with backends: in memory (one node, the
//! default of `starling serve`) and Redis over TLS (a cluster). Placement is a pure function.
#![warn(missing_docs, unreachable_pub)]

mod bundle;
mod memory;
mod model;
mod placement;
mod redis;
mod redis_events;
mod registry;
mod routing;
mod upstream;

pub use bundle::{download as download_bundle, from_paths as bundle_from_paths, BundleError};
pub use memory::MemoryRegistry;
pub use model::{Load, NodeId, NodeInfo, Ports, Role, Tier};
pub use placement::{choose, choose_viewer, VIEWER_LOAD_BAND};
pub use redis::{RedisRegistry, TlsFiles};
pub use registry::{Certificate, Claim, Event, Registry, RegistryError};
pub use routing::RoutingTable;
pub use upstream::{rank, serves_relay, upstreams};

#[cfg(test)]
mod conformance;
