//! The relay's one QUIC endpoint: it accepts other nodes (and trusted outside MoQ clients) and
//! dials upstream nodes, from the same UDP port.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use web_transport_quinn::quinn;

use crate::identity::{self, Identity, Trusted};

/// ALPN of the keyframe-request connection between nodes (not MoQ: MoQ has no way for a
/// subscriber to ask its publisher for a keyframe).
pub(crate) const CONTROL_ALPN: &str = "starling-keyframe-1";
/// The MoQ version nodes speak among themselves.
pub(crate) const NODE_ALPN: &str = "moq-lite-06";
/// The name a node's relay certificate is made for and dialled by; identity is the pinned
/// fingerprint, not the name.
pub(crate) const SERVER_NAME: &str = "starling-relay";

/// A dead upstream is noticed within this (keep-alives go every `KEEP_ALIVE`), so its
/// subscribers move to another path within about two seconds.
const IDLE_TIMEOUT: Duration = Duration::from_millis(1500);
const KEEP_ALIVE: Duration = Duration::from_millis(300);
/// Each group is a unidirectional stream, each subscription a bidirectional one.
const STREAMS: u32 = 1024;

fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // 1.5 s is within what quinn's VarInt takes.
    if let Ok(idle) = IDLE_TIMEOUT.try_into() {
        t.max_idle_timeout(Some(idle));
    }
    t.keep_alive_interval(Some(KEEP_ALIVE));
    t.max_concurrent_uni_streams(STREAMS.into());
    t.max_concurrent_bidi_streams(STREAMS.into());
    Arc::new(t)
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// The TLS configuration was refused.
    #[error("relay TLS: {0}")]
    Tls(#[from] rustls::Error),
    /// QUIC refused the TLS configuration.
    #[error("relay QUIC crypto: {0}")]
    Crypto(String),
    /// The UDP socket could not be bound.
    #[error("relay {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
}

/// Binds the endpoint: MoQ (every version moq-net speaks, the nodes' first) and the keyframe
/// channel, for clients whose certificate `trusted` accepts.
pub(crate) fn bind(
    listen: SocketAddr,
    identity: &Identity,
    trusted: Trusted,
) -> Result<quinn::Endpoint, EndpointError> {
    let mut alpn: Vec<Vec<u8>> = vec![NODE_ALPN.into()];
    alpn.extend(
        moq_net::ALPNS
            .iter()
            .filter(|a| **a != NODE_ALPN)
            .map(|a| a.as_bytes().to_vec()),
    );
    alpn.push(CONTROL_ALPN.into());
    let tls = identity::server_config(identity, trusted, alpn)?;
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls)
        .map_err(|e| EndpointError::Crypto(e.to_string()))?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    config.transport_config(transport());
    quinn::Endpoint::server(config, listen).map_err(|e| EndpointError::Bind(listen, e))
}

/// A client configuration for dialling a node whose certificate has `fingerprint`.
pub(crate) fn client(
    identity: &Identity,
    fingerprint: &str,
    alpn: &str,
) -> Result<quinn::ClientConfig, EndpointError> {
    let tls = identity::client_config(identity, fingerprint, vec![alpn.as_bytes().to_vec()])?;
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)
        .map_err(|e| EndpointError::Crypto(e.to_string()))?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    config.transport_config(transport());
    Ok(config)
}

/// The ALPN a connection agreed on.
pub(crate) fn alpn(conn: &quinn::Connection) -> Option<Vec<u8>> {
    conn.handshake_data()?
        .downcast::<quinn::crypto::rustls::HandshakeData>()
        .ok()?
        .protocol
}
