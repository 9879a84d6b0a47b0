//! The node's cluster API and health: `GET /api/nodes` (the live nodes) and
//! `GET /api/cluster/channels` (each channel's origin node), both from this node's routing
//! table, so they answer while the registry is down; `GET /healthz`: the node is alive, and
//! whether its last registration reached the registry (the node serves either way).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use cluster::{NodeId, NodeInfo, RoutingTable};
use media::ChannelName;
use serde::Serialize;

/// `/api/nodes`, `/api/cluster/channels` and `/healthz`.
pub(crate) fn routes(routing: Arc<RoutingTable>, registered: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/api/nodes", get(nodes))
        .route("/api/cluster/channels", get(origins))
        .with_state(routing)
        .route("/healthz", get(healthz).with_state(registered))
}

async fn nodes(State(routing): State<Arc<RoutingTable>>) -> Json<Vec<NodeInfo>> {
    Json(routing.nodes())
}

/// A channel and the node holding its publisher, as `/api/cluster/channels` lists them.
#[derive(Serialize)]
struct Origin {
    channel: ChannelName,
    node: NodeId,
}

async fn origins(State(routing): State<Arc<RoutingTable>>) -> Json<Vec<Origin>> {
    Json(
        routing
            .channels()
            .into_iter()
            .map(|(channel, node)| Origin { channel, node })
            .collect(),
    )
}

async fn healthz(State(registered): State<Arc<AtomicBool>>) -> &'static str {
    if registered.load(Ordering::Relaxed) {
        "ok\nregistry: ok\n"
    } else {
        "ok\nregistry: unavailable (retrying)\n"
    }
}
