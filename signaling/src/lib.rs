//! The HTTP front of a node: the channel list, the browser player, the JSON API, health.
#![warn(missing_docs, unreachable_pub)]

mod pages;

pub use pages::router;
