//! This node in the cluster registry: who it is, what it serves and how loaded it is, renewed
//! every second; `GET /api/nodes` lists what the registry knows. With no Redis configured the
//! registry is this process's own (in memory), so it lists this node; with Redis, the cluster.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use cluster::{Claim, Load, NodeId, NodeInfo, Ports, Registry, Role};
use tracing::{info, warn};

/// How long a registration lives without renewal.
const TTL: Duration = Duration::from_secs(5);
/// How often it is renewed.
const RENEW: Duration = Duration::from_secs(1);

/// This node's id: the configured one, else the host's name, else `starling`.
pub fn node_id(configured: Option<&str>) -> anyhow::Result<NodeId> {
    if let Some(id) = configured {
        return NodeId::new(id).ok_or_else(|| {
            anyhow::anyhow!("node id {id:?}: use 1-64 characters of A-Z a-z 0-9 _ - .")
        });
    }
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    Ok(NodeId::new(host.trim()).unwrap_or_else(|| NodeId::new("starling").expect("valid id")))
}

/// What this node registers, before its load is filled in.
pub fn info(id: NodeId, region: &str, public_host: &str, ports: Ports) -> NodeInfo {
    NodeInfo {
        id,
        roles: vec![Role::Ingest, Role::Sfu, Role::Signaling],
        region: region.to_owned(),
        public_host: public_host.to_owned(),
        ports,
        load: Load::default(),
        draining: false,
    }
}

/// Keeps `info` registered, with the load `load` reports, until `stop` fires; then
/// deregisters it at once (graceful shutdown).
pub async fn renew<R: Registry + 'static>(
    registry: Arc<R>,
    mut info: NodeInfo,
    load: impl Fn() -> Load + Send + 'static,
    registered: Arc<AtomicBool>,
    mut stop: tokio::sync::oneshot::Receiver<()>,
) {
    let mut tick = tokio::time::interval(RENEW);
    let mut failing = false;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => break,
        }
        info.load = load();
        let result = registry.register(info.clone(), TTL).await;
        registered.store(result.is_ok(), Ordering::Relaxed);
        match result {
            Ok(()) if failing => {
                failing = false;
                info!("registry: reachable again; this node is registered");
            }
            Ok(()) => {}
            Err(err) if !failing => {
                failing = true;
                warn!(%err, "registry: cannot renew this node; media keeps flowing");
            }
            Err(_) => {}
        }
    }
    if let Err(err) = registry.deregister(&info.id).await {
        warn!(%err, "registry: could not deregister this node; it expires with its TTL");
    }
}

/// `GET /api/nodes`: the live nodes as JSON. `GET /healthz`: the node is alive, and whether
/// its last registration reached the registry (the node serves either way).
pub fn router<R: Registry + 'static>(registry: Arc<R>, registered: Arc<AtomicBool>) -> Router {
    Router::new()
        .route("/api/nodes", get(nodes::<R>))
        .with_state(registry)
        .route(
            "/healthz",
            get(move || {
                let up = registered.load(Ordering::Relaxed);
                async move {
                    if up {
                        "ok\nregistry: ok\n"
                    } else {
                        "ok\nregistry: unavailable (retrying)\n"
                    }
                }
            }),
        )
}

async fn nodes<R: Registry>(State(registry): State<Arc<R>>) -> Json<Vec<NodeInfo>> {
    Json(registry.nodes().await.unwrap_or_default())
}

/// Channel claims for ingest, made in `registry` for node `id`. A registry that cannot be
/// reached does not keep publishers out: the channel goes unclaimed and a warning says so.
pub fn claims<R: Registry + 'static>(registry: Arc<R>, id: NodeId) -> Arc<dyn ingest::Claims> {
    Arc::new(RegistryClaims { registry, id })
}

struct RegistryClaims<R> {
    registry: Arc<R>,
    id: NodeId,
}

impl<R: Registry + 'static> ingest::Claims for RegistryClaims<R> {
    fn claim<'a>(
        &'a self,
        channel: &'a media::ChannelName,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), ingest::HeldElsewhere>> + Send + 'a>,
    > {
        Box::pin(async move {
            match self.registry.claim_channel(channel, &self.id).await {
                Ok(Claim::Owned) => Ok(()),
                Ok(Claim::OwnedBy(node)) => Err(ingest::HeldElsewhere(node.to_string())),
                Err(err) => {
                    warn!(%err, %channel, "registry: channel not claimed; admitting its publisher");
                    Ok(())
                }
            }
        })
    }

    fn release(&self, channel: media::ChannelName) {
        let (registry, id) = (self.registry.clone(), self.id.clone());
        tokio::spawn(async move {
            if let Err(err) = registry.release_channel(&channel, &id).await {
                warn!(%err, %channel, "registry: channel not released; it expires with this node");
            }
        });
    }
}
