//! The TLS certificates a node serves (HTTPS, RTMPS, the front's public name), chosen by the
//! name the client asks for (SNI):
//! 1. the registry's certificate for that name (`starling cluster put-certificate`), re-read
//!    every [`REFRESH`] so a certificate put or replaced there is served without a restart;
//! 2. else the files of `[https] certificate` / `key`;
//! 3. else one self-signed certificate made at start for this node's names (a single node;
//!    `serve` says so at start, browsers warn).

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tracing::{info, warn};

/// How often the registry's certificates are read again.
pub const REFRESH: Duration = Duration::from_secs(2);

/// Names whose registry certificate is followed at most (each is one registry read a
/// [`REFRESH`]); names beyond it are served the default certificate.
const MAX_NAMES: usize = 64;

/// Why a certificate could not be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CertError {
    /// A file could not be read or holds no PEM of the kind expected.
    #[error("{0}: {1}")]
    File(String, String),
    /// The key does not fit the certificate, or is of a kind rustls cannot sign with.
    #[error("certificate and key: {0}")]
    Key(String),
    /// The self-signed certificate could not be made.
    #[error("self-signed certificate: {0}")]
    Generate(String),
}

/// Where the default certificate came from, for the start banner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `[https] certificate` / `key`.
    Files,
    /// Made at start for these names.
    SelfSigned(Vec<String>),
}

/// Reads a name's certificate from the registry: `Err` when the registry cannot be reached.
pub type Fetch = Arc<
    dyn Fn(String) -> Pin<Box<dyn Future<Output = Result<Option<cluster::Certificate>, ()>> + Send>>
        + Send
        + Sync,
>;

/// A [`Fetch`] from `registry`.
pub fn fetch_from<R: cluster::Registry + 'static>(registry: Arc<R>) -> Fetch {
    Arc::new(move |name| {
        let registry = registry.clone();
        Box::pin(async move { registry.certificate(&name).await.map_err(|_| ()) })
    })
}

/// The certificates of one node, shared by its TLS listeners.
pub struct Certificates {
    default: Arc<CertifiedKey>,
    origin: Origin,
    fetch: Fetch,
    /// Registry certificates by name (lowercase); `None`: the registry has none for it.
    by_name: RwLock<HashMap<String, Option<Arc<CertifiedKey>>>>,
}

impl std::fmt::Debug for Certificates {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Certificates")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// A certificate chain and key in PEM, ready to serve.
pub fn certified_key(chain_pem: &[u8], key_pem: &[u8]) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(chain_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Key(e.to_string()))?;
    if chain.is_empty() {
        return Err(CertError::Key("no certificate in the chain".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| CertError::Key(e.to_string()))?;
    let certified = CertifiedKey::from_der(chain, key, &provider())
        .map_err(|e| CertError::Key(e.to_string()))?;
    Ok(certified)
}

impl Certificates {
    /// From `[https] certificate` / `key` files if given, else self-signed for `names`; the
    /// registry's certificates by name through `fetch`.
    pub fn new(
        files: Option<(&Path, &Path)>,
        names: &[String],
        fetch: Fetch,
    ) -> Result<Self, CertError> {
        let (default, origin) = match files {
            Some((chain, key)) => {
                let read = |p: &Path| {
                    std::fs::read(p)
                        .map_err(|e| CertError::File(p.display().to_string(), e.to_string()))
                };
                (certified_key(&read(chain)?, &read(key)?)?, Origin::Files)
            }
            None => {
                let mut names: Vec<String> = names.to_vec();
                names.push("localhost".into());
                names.sort();
                names.dedup();
                let made = rcgen::generate_simple_self_signed(names.clone())
                    .map_err(|e| CertError::Generate(e.to_string()))?;
                let certified = certified_key(
                    made.cert.pem().as_bytes(),
                    made.signing_key.serialize_pem().as_bytes(),
                )?;
                (certified, Origin::SelfSigned(names))
            }
        };
        Ok(Self {
            default: Arc::new(default),
            origin,
            fetch,
            by_name: RwLock::default(),
        })
    }

    /// Where the default certificate came from.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// The certificate served for `name` now.
    pub fn for_name(&self, name: Option<&str>) -> Arc<CertifiedKey> {
        let by_name = self.by_name.read().unwrap_or_else(|e| e.into_inner());
        name.and_then(|n| by_name.get(n).cloned().flatten())
            .unwrap_or_else(|| self.default.clone())
    }

    /// Follows the registry's certificate for `name` from now on (the node's own name, the
    /// public name).
    pub fn watch(&self, name: &str) {
        let mut by_name = self.by_name.write().unwrap_or_else(|e| e.into_inner());
        if by_name.len() < MAX_NAMES {
            by_name.entry(name.to_ascii_lowercase()).or_insert(None);
        }
    }

    /// Before a handshake for `name`: a name not followed yet is looked up in the registry
    /// once, and followed if the registry has a certificate for it (the public name asked of
    /// a node over RTMPS, say). Names the registry does not know are not remembered.
    pub async fn prepare(&self, name: Option<&str>) {
        let Some(name) = name.map(str::to_ascii_lowercase) else {
            return;
        };
        {
            let by_name = self.by_name.read().unwrap_or_else(|e| e.into_inner());
            if by_name.contains_key(&name) || by_name.len() >= MAX_NAMES {
                return;
            }
        }
        if let Some(key) = self.read(&name).await {
            let mut by_name = self.by_name.write().unwrap_or_else(|e| e.into_inner());
            if by_name.len() < MAX_NAMES {
                info!(name, "TLS certificate for this name from the registry");
                by_name.insert(name, Some(key));
            }
        }
    }

    async fn read(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        let stored = (self.fetch)(name.to_owned()).await.ok()??;
        match certified_key(stored.chain_pem.as_bytes(), stored.key_pem.as_bytes()) {
            Ok(key) => Some(Arc::new(key)),
            Err(err) => {
                warn!(%err, name, "registry certificate unusable; serving the default");
                None
            }
        }
    }

    /// Reads the registry's certificate of every followed name again, every [`REFRESH`],
    /// until the task is dropped.
    pub async fn follow(self: Arc<Self>) {
        let mut tick = tokio::time::interval(REFRESH);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.refresh().await;
        }
    }

    /// One pass of [`Certificates::follow`].
    pub async fn refresh(&self) {
        let names: Vec<String> = {
            let by_name = self.by_name.read().unwrap_or_else(|e| e.into_inner());
            by_name.keys().cloned().collect()
        };
        for name in names {
            let Ok(stored) = (self.fetch)(name.clone()).await else {
                continue; // registry away: keep serving what we have
            };
            let fresh = match stored {
                None => None,
                Some(c) => match certified_key(c.chain_pem.as_bytes(), c.key_pem.as_bytes()) {
                    Ok(key) => Some(Arc::new(key)),
                    Err(err) => {
                        warn!(%err, name, "registry certificate unusable; serving the default");
                        None
                    }
                },
            };
            let mut by_name = self.by_name.write().unwrap_or_else(|e| e.into_inner());
            let Some(slot) = by_name.get_mut(&name) else {
                continue;
            };
            let changed = match (&*slot, &fresh) {
                (None, None) => false,
                (Some(a), Some(b)) => a.cert != b.cert,
                _ => true,
            };
            if changed {
                info!(
                    name,
                    from_registry = fresh.is_some(),
                    "TLS certificate for this name changed"
                );
                *slot = fresh;
            }
        }
    }

    /// Ends TLS on `stream` with the certificate for the name the client asks for (looked up
    /// in the registry first if new, see [`Certificates::prepare`]); `None` if the handshake
    /// fails or takes longer than `timeout`. For RTMPS.
    pub async fn accept<S>(
        self: &Arc<Self>,
        stream: S,
        config: &Arc<rustls::ServerConfig>,
        timeout: Duration,
    ) -> Option<tokio_rustls::server::TlsStream<S>>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    {
        let handshake = async {
            let lazy =
                tokio_rustls::LazyConfigAcceptor::new(rustls::server::Acceptor::default(), stream);
            let start = lazy.await.ok()?;
            let name = start.client_hello().server_name().map(str::to_owned);
            self.prepare(name.as_deref()).await;
            start.into_stream(config.clone()).await.ok()
        };
        tokio::time::timeout(timeout, handshake)
            .await
            .ok()
            .flatten()
    }

    /// A rustls server configuration serving these certificates, with `alpn`: made once per
    /// listener.
    pub fn server_config(self: &Arc<Self>, alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let mut config = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports TLS 1.2 and 1.3")
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(Resolver(self.clone())));
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }
}

#[derive(Debug)]
struct Resolver(Arc<Certificates>);

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.for_name(hello.server_name()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pem_pair(name: &str) -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec![name.to_owned()]).unwrap();
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    #[tokio::test]
    async fn a_certificate_put_in_the_registry_is_served_after_a_refresh() {
        let registry = Arc::new(cluster::MemoryRegistry::new());
        let certs =
            Certificates::new(None, &["node-a.test".into()], fetch_from(registry.clone())).unwrap();
        assert!(
            matches!(certs.origin(), Origin::SelfSigned(n) if n.contains(&"node-a.test".to_owned()))
        );
        certs.watch("Live.Test");
        let default = certs.for_name(Some("live.test"));
        certs.refresh().await;
        assert_eq!(certs.for_name(Some("live.test")).cert, default.cert);

        let (chain, key) = pem_pair("live.test");
        let stored = cluster::Certificate::from_pem(chain, key).unwrap();
        cluster::Registry::put_certificate(&*registry, "live.test", stored)
            .await
            .unwrap();
        certs.refresh().await;
        let served = certs.for_name(Some("live.test"));
        assert_ne!(served.cert, default.cert);
        // Other names keep the default.
        assert_eq!(certs.for_name(Some("other.test")).cert, default.cert);
        assert_eq!(certs.for_name(None).cert, default.cert);

        // A name first asked for by a client: looked up once, followed if the registry has it.
        let (chain, key) = pem_pair("other.test");
        let stored = cluster::Certificate::from_pem(chain, key).unwrap();
        cluster::Registry::put_certificate(&*registry, "other.test", stored)
            .await
            .unwrap();
        certs.prepare(Some("unknown.test")).await;
        certs.prepare(Some("Other.Test")).await;
        assert_ne!(certs.for_name(Some("other.test")).cert, default.cert);
        assert!(!certs.by_name.read().unwrap().contains_key("unknown.test"));
    }

    #[test]
    fn files_give_the_default_certificate() {
        let dir = std::env::temp_dir().join(format!("starling-certs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (chain, key) = pem_pair("files.test");
        std::fs::write(dir.join("c.pem"), &chain).unwrap();
        std::fs::write(dir.join("k.pem"), &key).unwrap();
        let fetch: Fetch = Arc::new(|_| Box::pin(async { Ok(None) }));
        let certs = Certificates::new(
            Some((&dir.join("c.pem"), &dir.join("k.pem"))),
            &[],
            fetch.clone(),
        )
        .unwrap();
        assert_eq!(certs.origin(), &Origin::Files);
        let expected = certified_key(chain.as_bytes(), key.as_bytes()).unwrap();
        assert_eq!(certs.for_name(Some("any.test")).cert, expected.cert);
        let missing =
            Certificates::new(Some((&dir.join("no.pem"), &dir.join("k.pem"))), &[], fetch);
        assert!(matches!(missing, Err(CertError::File(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_key_of_another_certificate_is_refused() {
        let (chain, _) = pem_pair("a.test");
        let (_, key) = pem_pair("a.test");
        assert!(certified_key(chain.as_bytes(), key.as_bytes()).is_err());
        assert!(certified_key(b"not pem", b"").is_err());
    }
}
