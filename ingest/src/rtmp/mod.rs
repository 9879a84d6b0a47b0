//! RTMP ingest: a TCP listener, one task per connection driving rml_rtmp's sans-IO session.

mod amf0;
mod connection;
pub mod flv;
mod guard;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tokio::net::{TcpListener, TcpStream};

use crate::Ingest;

/// RTMP listener settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RtmpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Address of RTMPS (RTMP over TLS; certificates as for HTTPS).
    pub tls_listen: SocketAddr,
    /// Connections served at once; more wait in the accept queue.
    pub max_connections: usize,
    /// Connections one client address may hold at once; more are closed (0: no cap).
    pub max_connections_per_ip: usize,
    /// Seconds a client may take to handshake and start publishing.
    pub handshake_timeout_secs: u64,
    /// Seconds without any data after which a publisher is dropped and its channel ends.
    pub idle_timeout_secs: u64,
}

impl Default for RtmpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 1935)),
            tls_listen: SocketAddr::from(([0, 0, 0, 0], 1936)),
            max_connections: 256,
            max_connections_per_ip: 4,
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
    let limit = config.max_connections;
    let per_ip = ingest
        .limits()
        .per_ip("rtmp", config.max_connections_per_ip);
    admission::listen::accept_loop(listener, "rtmp", limit, per_ip, move |stream, _| {
        let _ = stream.set_nodelay(true);
        let (config, ingest) = (config.clone(), ingest.clone());
        async move { connection::run(stream, &config, &ingest).await }
    })
    .await;
}

/// Accepts RTMPS connections on `listener` until the task is dropped: `tls` ends TLS on each
/// (`None`: the handshake failed or took too long), then it is RTMP as on [`serve`]. RTMP and
/// RTMPS share `config`'s caps, each on its own listener.
pub async fn serve_tls<F, Fut, S>(listener: TcpListener, config: RtmpConfig, ingest: Ingest, tls: F)
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Option<S>> + Send + 'static,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let config = Arc::new(config);
    let limit = config.max_connections;
    let per_ip = ingest
        .limits()
        .per_ip("rtmps", config.max_connections_per_ip);
    admission::listen::accept_loop(listener, "rtmps", limit, per_ip, move |stream, _| {
        let _ = stream.set_nodelay(true);
        let (config, ingest) = (config.clone(), ingest.clone());
        let handshake = tls(stream);
        async move {
            match handshake.await {
                Some(stream) => connection::run(stream, &config, &ingest).await,
                None => tracing::debug!("rtmps: TLS handshake failed"),
            }
        }
    })
    .await;
}

/// Entry points for the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing {
    use rml_rtmp::handshake::{Handshake, PeerType};
    use rml_rtmp::sessions::{
        ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
    };

    use crate::untrusted::guarded;

    use super::flv;
    use super::guard::Guard;

    /// An RTMP connection's bytes as a whole: the handshake on them, and, as if the handshake
    /// were done, the guard, rml_rtmp's chunk stream and AMF0 commands (connections and
    /// publishes accepted), and the FLV tags of any media, in reads of varying size. rml_rtmp
    /// runs guarded, as in the server; the AMF0 walk also runs on the bytes directly.
    pub fn connection(data: &[u8]) {
        // Our own AMF0 walk, outside the guard: a panic in it is a bug of ours.
        let _ = super::amf0::check(data);
        let _ = guarded(|| Handshake::new(PeerType::Server).process_bytes(data));
        let Ok((mut session, _)) = ServerSession::new(ServerSessionConfig::new()) else {
            return;
        };
        let mut guard = Guard::new();
        let mut publishing = false;
        let read = usize::from(data.first().copied().unwrap_or(1)).max(1) * 16;
        for part in data.chunks(read) {
            let Ok(Ok(results)) = guard.parse(&mut session, part, publishing) else {
                return;
            };
            for result in results {
                let ServerSessionResult::RaisedEvent(event) = result else {
                    continue;
                };
                match event {
                    ServerSessionEvent::ConnectionRequested { request_id, .. } => {
                        let _ = session.accept_request(request_id);
                    }
                    ServerSessionEvent::PublishStreamRequested { request_id, .. } => {
                        publishing = session.accept_request(request_id).is_ok();
                    }
                    ServerSessionEvent::AudioDataReceived { data, .. } => {
                        let _ = flv::audio(&data);
                    }
                    ServerSessionEvent::VideoDataReceived { data, .. } => {
                        let _ = flv::video(&data);
                    }
                    _ => {}
                }
            }
        }
    }
}
