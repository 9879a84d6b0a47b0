//! The HTTP front of a node: the channel list, the browser player, the JSON API, health.
//! [`node_routes`] puts together every HTTP route of a node, from the handlers the other crates
//! export (the SFU's WHIP and WHEP).
#![warn(missing_docs, unreachable_pub)]

mod api;
mod metrics;
mod pages;
mod routes;
pub mod sni;

pub use metrics::MetricsSource;
pub use pages::router;
pub use routes::{node_routes, NodeRoutes};
