//! Which registry this node uses: Redis over TLS when `redis_url` is set (the TLS files from
//! the bundle URL or from paths), otherwise its own in memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use cluster::{MemoryRegistry, RedisRegistry};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tracing::{info, warn};

/// A secret from the config or environment: never printed.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<secret>")
    }
}

/// The three TLS files, by path (Docker/Kubernetes secrets).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsPaths {
    /// The CA of the Redis server's certificate.
    pub ca_file: PathBuf,
    /// This node's client certificate.
    pub cert_file: PathBuf,
    /// Its key.
    pub key_file: PathBuf,
}

/// The registry a node ended up with.
pub enum Backend {
    /// This process's own.
    Memory(Arc<MemoryRegistry>),
    /// The cluster's, in Redis.
    Redis(Arc<RedisRegistry>),
    /// The cluster's, in Redis, being connected in the background.
    Connecting(Arc<Connecting>),
}

/// Calls the same method on whichever registry the backend holds.
macro_rules! delegate {
    ($self:ident, $r:ident => $call:expr) => {
        match $self {
            Backend::Memory($r) => $call,
            Backend::Redis($r) => $call,
            Backend::Connecting($r) => $call,
        }
    };
}

impl cluster::Registry for Backend {
    async fn register(
        &self,
        node: cluster::NodeInfo,
        ttl: Duration,
    ) -> Result<bool, cluster::RegistryError> {
        delegate!(self, r => r.register(node, ttl).await)
    }

    async fn deregister(&self, id: &cluster::NodeId) -> Result<(), cluster::RegistryError> {
        delegate!(self, r => r.deregister(id).await)
    }

    async fn nodes(&self) -> Result<Vec<cluster::NodeInfo>, cluster::RegistryError> {
        delegate!(self, r => r.nodes().await)
    }

    async fn set_draining(
        &self,
        id: &cluster::NodeId,
        draining: bool,
    ) -> Result<bool, cluster::RegistryError> {
        delegate!(self, r => r.set_draining(id, draining).await)
    }

    async fn claim_channel(
        &self,
        channel: &media::ChannelName,
        node: &cluster::NodeId,
    ) -> Result<cluster::Claim, cluster::RegistryError> {
        delegate!(self, r => r.claim_channel(channel, node).await)
    }

    async fn release_channel(
        &self,
        channel: &media::ChannelName,
        node: &cluster::NodeId,
    ) -> Result<bool, cluster::RegistryError> {
        delegate!(self, r => r.release_channel(channel, node).await)
    }

    async fn channels(
        &self,
    ) -> Result<Vec<(media::ChannelName, cluster::NodeId)>, cluster::RegistryError> {
        delegate!(self, r => r.channels().await)
    }

    async fn put_certificate(
        &self,
        name: &str,
        certificate: cluster::Certificate,
    ) -> Result<(), cluster::RegistryError> {
        delegate!(self, r => r.put_certificate(name, certificate).await)
    }

    async fn certificate(
        &self,
        name: &str,
    ) -> Result<Option<cluster::Certificate>, cluster::RegistryError> {
        delegate!(self, r => r.certificate(name).await)
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<cluster::Event> {
        delegate!(self, r => r.events())
    }
}

/// How long to try reaching Redis.
pub enum Connect {
    /// At most this long, then fail (the `cluster` commands).
    Within(Duration),
    /// For as long as it takes, in the background, while the node serves (`serve`).
    InBackground,
}

/// A Redis registry not reached yet: calls fail as unavailable until it is.
pub struct Connecting {
    registry: tokio::sync::OnceCell<Arc<RedisRegistry>>,
    events: tokio::sync::broadcast::Sender<cluster::Event>,
}

impl Connecting {
    fn get(&self) -> Result<&Arc<RedisRegistry>, cluster::RegistryError> {
        self.registry
            .get()
            .ok_or_else(|| cluster::RegistryError::Unavailable("Redis not reached yet".into()))
    }

    /// Retries with backoff until connected; then forwards its events.
    async fn connect(self: Arc<Self>, url: String, tls: Option<cluster::TlsFiles>) {
        let mut delay = Duration::from_millis(250);
        loop {
            match RedisRegistry::connect(&url, tls.clone(), "starling:").await {
                Ok(registry) => {
                    info!("registry: connected to Redis");
                    let mut events = cluster::Registry::events(&registry);
                    let registry = Arc::new(registry);
                    let _ = self.registry.set(registry);
                    // Followers could read nothing until now.
                    let _ = self.events.send(cluster::Event::Resync);
                    loop {
                        match events.recv().await {
                            Ok(event) => {
                                let _ = self.events.send(event);
                            }
                            Err(RecvError::Lagged(_)) => {
                                let _ = self.events.send(cluster::Event::Resync);
                            }
                            Err(RecvError::Closed) => return,
                        }
                    }
                }
                Err(err) => {
                    warn!(%err, retry_in_ms = delay.as_millis() as u64, "registry: cannot reach Redis; serving meanwhile");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}

impl cluster::Registry for Connecting {
    async fn register(
        &self,
        node: cluster::NodeInfo,
        ttl: Duration,
    ) -> Result<bool, cluster::RegistryError> {
        self.get()?.register(node, ttl).await
    }

    async fn deregister(&self, id: &cluster::NodeId) -> Result<(), cluster::RegistryError> {
        self.get()?.deregister(id).await
    }

    async fn nodes(&self) -> Result<Vec<cluster::NodeInfo>, cluster::RegistryError> {
        self.get()?.nodes().await
    }

    async fn set_draining(
        &self,
        id: &cluster::NodeId,
        draining: bool,
    ) -> Result<bool, cluster::RegistryError> {
        self.get()?.set_draining(id, draining).await
    }

    async fn claim_channel(
        &self,
        channel: &media::ChannelName,
        node: &cluster::NodeId,
    ) -> Result<cluster::Claim, cluster::RegistryError> {
        self.get()?.claim_channel(channel, node).await
    }

    async fn release_channel(
        &self,
        channel: &media::ChannelName,
        node: &cluster::NodeId,
    ) -> Result<bool, cluster::RegistryError> {
        self.get()?.release_channel(channel, node).await
    }

    async fn channels(
        &self,
    ) -> Result<Vec<(media::ChannelName, cluster::NodeId)>, cluster::RegistryError> {
        self.get()?.channels().await
    }

    async fn put_certificate(
        &self,
        name: &str,
        certificate: cluster::Certificate,
    ) -> Result<(), cluster::RegistryError> {
        self.get()?.put_certificate(name, certificate).await
    }

    async fn certificate(
        &self,
        name: &str,
    ) -> Result<Option<cluster::Certificate>, cluster::RegistryError> {
        self.get()?.certificate(name).await
    }

    fn events(&self) -> tokio::sync::broadcast::Receiver<cluster::Event> {
        self.events.subscribe()
    }
}

/// Opens the registry the configuration names.
pub async fn open(
    url: Option<&str>,
    bundle_url: Option<&Secret>,
    paths: Option<&TlsPaths>,
    insecure: bool,
    connect: Connect,
) -> anyhow::Result<Backend> {
    let Some(url) = url else {
        return Ok(Backend::Memory(Arc::new(MemoryRegistry::new())));
    };
    let tls = match (bundle_url, paths) {
        (Some(bundle), _) => Some(
            cluster::download_bundle(&bundle.0)
                .await
                .context("STARLING_REDIS_TLS_BUNDLE_URL")?,
        ),
        (None, Some(p)) => Some(
            cluster::bundle_from_paths(&p.ca_file, &p.cert_file, &p.key_file)
                .context("[redis_tls] files")?,
        ),
        (None, None) if insecure => {
            warn!(
                "registry: Redis without TLS (redis_insecure = true): keep it on a private network"
            );
            None
        }
        (None, None) => bail!(
            "Redis needs TLS: set STARLING_REDIS_TLS_BUNDLE_URL or the [redis_tls] files \
             (or redis_insecure = true for a plain-TCP Redis)"
        ),
    };
    if tls.is_some() && !url.starts_with("rediss://") {
        bail!("with TLS files the Redis URL must be rediss://");
    }
    let connect_for = match connect {
        Connect::Within(limit) => limit,
        Connect::InBackground => {
            let connecting = Arc::new(Connecting {
                registry: tokio::sync::OnceCell::new(),
                events: tokio::sync::broadcast::channel(1024).0,
            });
            tokio::spawn(connecting.clone().connect(url.to_owned(), tls));
            return Ok(Backend::Connecting(connecting));
        }
    };
    let started = std::time::Instant::now();
    let mut delay = Duration::from_millis(250);
    loop {
        match RedisRegistry::connect(url, tls.clone(), "starling:").await {
            Ok(registry) => {
                info!("registry: connected to Redis");
                return Ok(Backend::Redis(Arc::new(registry)));
            }
            Err(err) if started.elapsed() < connect_for => {
                warn!(%err, retry_in_ms = delay.as_millis() as u64, "registry: cannot reach Redis");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(err).context("registry: Redis unreachable"),
        }
    }
}
