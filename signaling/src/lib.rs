//! The HTTP front of a node: the channel list, the browser player, the JSON API, health.
//! [`node_routes`] puts together every HTTP route of a node, from the handlers the other crates
//! export (the SFU's WHIP and WHEP).
#![warn(missing_docs, unreachable_pub)]

mod api;
pub mod certs;
pub mod front;
pub mod https;
pub mod listener;
mod metrics;
mod pages;
pub mod passthrough;
pub mod rate;
mod routes;
pub mod sni;
pub mod tcp_front;

pub use metrics::MetricsSource;
pub use pages::router;
pub use routes::{node_routes, NodeRoutes};
