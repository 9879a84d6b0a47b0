//! Which registry this node uses: Redis over TLS when `redis_url` is set (the TLS files from
//! the bundle URL or from paths), otherwise its own in memory.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use cluster::{MemoryRegistry, RedisRegistry};
use serde::Deserialize;
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
}

/// Opens the registry the configuration names.
pub async fn open(
    url: Option<&str>,
    bundle_url: Option<&Secret>,
    paths: Option<&TlsPaths>,
    insecure: bool,
    connect_for: Duration,
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
