//! This node in the cluster registry: who it is, what it serves and how loaded it is, renewed
//! every second (`signaling`'s `GET /api/nodes` lists the nodes this node's routing table
//! knows, and `/healthz` whether the last renewal got through). With no Redis configured the
//! registry is this process's own (in memory); with Redis, the cluster's.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
        tier: Default::default(),
        relay_fingerprint: String::new(),
    }
}

/// What this node reports at each renewal: its load, and the channels whose publishers it
/// holds (claimed again whenever the registry had lost this node, as a restarted Redis has).
pub struct Status {
    /// How busy it is.
    pub load: Load,
    /// The channels published here.
    pub channels: Vec<media::ChannelName>,
}

/// Keeps `info` registered, with what `status` reports, until `stop` fires; then deregisters
/// it at once (graceful shutdown).
pub async fn renew<R: Registry + 'static>(
    registry: Arc<R>,
    mut info: NodeInfo,
    mut status: impl FnMut() -> Status + Send + 'static,
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
        let Status { load, channels } = status();
        info.load = load;
        let result = registry.register(info.clone(), TTL).await;
        registered.store(result.is_ok(), Ordering::Relaxed);
        match result {
            Ok(fresh) => {
                if std::mem::take(&mut failing) {
                    info!("registry: reachable again; this node is registered");
                }
                if fresh {
                    reclaim(&*registry, &info.id, &channels).await;
                }
            }
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

/// Claims the channels published here again, after the registry lost this node.
async fn reclaim(registry: &impl Registry, id: &NodeId, channels: &[media::ChannelName]) {
    for channel in channels {
        match registry.claim_channel(channel, id).await {
            Ok(Claim::Owned) => info!(%channel, "registry: channel claimed again"),
            Ok(Claim::OwnedBy(other)) => warn!(
                %channel, %other,
                "registry: channel is live here and claimed by another node (published to both \
                 while the registry was away)"
            ),
            Err(err) => warn!(%err, %channel, "registry: channel not claimed again"),
        }
    }
}

/// Bitrate out from a byte counter sampled at each renewal.
#[derive(Default)]
pub struct Bitrate {
    last: Option<(u64, Instant)>,
    bits_per_second: u64,
}

impl Bitrate {
    /// Takes a sample of the counter; the rate since the previous sample.
    pub fn update(&mut self, bytes: u64, now: Instant) -> u64 {
        if let Some((before, then)) = self.last {
            let secs = now.duration_since(then).as_secs_f64();
            if secs > 0.0 {
                self.bits_per_second = (bytes.saturating_sub(before) as f64 * 8.0 / secs) as u64;
            }
        }
        self.last = Some((bytes, now));
        self.bits_per_second
    }
}

/// Channel claims for ingest, made in `registry` for node `id`. A registry that cannot be
/// reached does not keep publishers out: the channel goes unclaimed and a warning says so.
pub fn claims<R: Registry + 'static>(registry: Arc<R>, id: NodeId) -> Arc<dyn admission::Claims> {
    Arc::new(RegistryClaims { registry, id })
}

struct RegistryClaims<R> {
    registry: Arc<R>,
    id: NodeId,
}

impl<R: Registry + 'static> admission::Claims for RegistryClaims<R> {
    fn claim<'a>(
        &'a self,
        channel: &'a media::ChannelName,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), admission::HeldElsewhere>> + Send + 'a>,
    > {
        Box::pin(async move {
            match self.registry.claim_channel(channel, &self.id).await {
                Ok(Claim::Owned) => Ok(()),
                Ok(Claim::OwnedBy(node)) => Err(admission::HeldElsewhere(node.to_string())),
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
