//! RTMP ingest: a TCP listener, one task per connection driving rml_rtmp's sans-IO session.

mod connection;
pub mod flv;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tracing::{info_span, warn, Instrument};

use crate::Ingest;

/// RTMP listener settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Seconds a client may take to handshake and start publishing.
    pub handshake_timeout_secs: u64,
    /// Seconds without any data after which a publisher is dropped and its channel ends.
    pub idle_timeout_secs: u64,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            max_connections: 256,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 10,
        }
    }
}

impl RtmpConfig {
    fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs)
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }
}

/// Accepts RTMP connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, config: RtmpConfig, ingest: Ingest) {
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(%err, "rtmp accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let (config, ingest) = (config.clone(), ingest.clone());
        let span = info_span!("rtmp", %peer);
        tokio::spawn(
            async move {
                connection::run(stream, &config, &ingest).await;
                drop(permit);
            }
            .instrument(span),
        );
    }
}
