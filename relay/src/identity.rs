//! Trust between nodes: each node has a relay certificate of its own (made at start, or read
//! from files) and publishes its SHA-256 fingerprint in the registry. A node's QUIC endpoint
//! accepts a client only if the client's certificate is one the registry lists for a live node,
//! or one the operator trusts by fingerprint (`[relay] trusted_clients`); a node dialling a
//! peer pins the fingerprint the registry lists for that peer. Both checks run in the TLS
//! handshake, with the TLS 1.3 signature checked, so a stranger never gets a MoQ session.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// A node's relay certificate and key. The key never reaches a log.
pub struct Identity {
    /// The certificate (self-signed unless read from files).
    pub chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    /// SHA-256 of the leaf certificate, lowercase hex.
    pub fingerprint: String,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .field("key", &"<redacted>")
            .finish()
    }
}

/// Why an identity could not be made or read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The certificate could not be generated.
    #[error("generating the relay certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// A file could not be read or holds no certificate or key.
    #[error("relay certificate files: {0}")]
    Files(String),
}

impl Identity {
    /// A fresh self-signed ECDSA P-256 certificate named after the node.
    pub fn generate(name: &str) -> Result<Self, IdentityError> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let params = rcgen::CertificateParams::new(vec![name.to_owned()])?;
        let cert = params.self_signed(&key)?;
        let der = CertificateDer::from(cert.der().to_vec());
        let key = PrivateKeyDer::try_from(key.serialize_der())
            .map_err(|e| IdentityError::Files(e.to_owned()))?;
        Ok(Self::new(vec![der], key))
    }

    /// A certificate chain and key read from PEM files.
    pub fn from_pem_files(
        chain: &std::path::Path,
        key: &std::path::Path,
    ) -> Result<Self, IdentityError> {
        use rustls_pki_types::pem::PemObject;
        let chain: Vec<_> = CertificateDer::pem_file_iter(chain)
            .and_then(|certs| certs.collect::<Result<_, _>>())
            .map_err(|e| IdentityError::Files(format!("certificate: {e}")))?;
        if chain.is_empty() {
            return Err(IdentityError::Files("no certificate in the file".into()));
        }
        let key = PrivateKeyDer::from_pem_file(key)
            .map_err(|e| IdentityError::Files(format!("key: {e}")))?;
        Ok(Self::new(chain, key))
    }

    fn new(chain: Vec<CertificateDer<'static>>, key: PrivateKeyDer<'static>) -> Self {
        let fingerprint = fingerprint(&chain[0]);
        Self {
            chain,
            key,
            fingerprint,
        }
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        self.key.clone_key()
    }
}

/// SHA-256 of a certificate, lowercase hex.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        cert.as_ref(),
    ))
}

/// Which client fingerprints a node accepts, asked at each handshake (the registry changes).
pub type Trusted = Arc<dyn Fn(&str) -> bool + Send + Sync>;

pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// The server side: this node's certificate; clients must present a trusted one.
pub(crate) fn server_config(
    identity: &Identity,
    trusted: Trusted,
    alpn: Vec<Vec<u8>>,
) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(PinnedClients {
        trusted,
        provider: provider.clone(),
    });
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(identity.chain.clone(), identity.key())?;
    config.alpn_protocols = alpn;
    Ok(config)
}

/// The client side: presents this node's certificate; the server must be the one pinned.
pub fn client_config(
    identity: &Identity,
    server_fingerprint: &str,
    alpn: Vec<Vec<u8>>,
) -> Result<rustls::ClientConfig, rustls::Error> {
    let provider = provider();
    let verifier = Arc::new(PinnedServer {
        fingerprint: server_fingerprint.to_ascii_lowercase(),
        provider: provider.clone(),
    });
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_auth_cert(identity.chain.clone(), identity.key())?;
    config.alpn_protocols = alpn;
    Ok(config)
}

fn untrusted() -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::ApplicationVerificationFailure)
}

fn tls13_signature(
    provider: &CryptoProvider,
    message: &[u8],
    cert: &CertificateDer<'_>,
    dss: &DigitallySignedStruct,
) -> Result<HandshakeSignatureValid, rustls::Error> {
    rustls::crypto::verify_tls13_signature(
        message,
        cert,
        dss,
        &provider.signature_verification_algorithms,
    )
}

#[derive(Debug)]
struct PinnedServer {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedServer {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if fingerprint(end_entity) == self.fingerprint {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(untrusted())
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

struct PinnedClients {
    trusted: Trusted,
    provider: Arc<CryptoProvider>,
}

impl fmt::Debug for PinnedClients {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinnedClients")
    }
}

impl ClientCertVerifier for PinnedClients {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if (self.trusted)(&fingerprint(end_entity)) {
            Ok(ClientCertVerified::assertion())
        } else {
            Err(untrusted())
        }
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::PeerIncompatible(
            rustls::PeerIncompatible::Tls13RequiredForQuic,
        ))
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        tls13_signature(&self.provider, message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}
