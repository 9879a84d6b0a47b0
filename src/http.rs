//! The node's HTTP listener: HTTP/1.1 with hyper, bounded. At most `max_connections` served at
//! once (more wait in the kernel's accept queue), `max_connections_per_ip` from one client
//! address (more are closed at once), a request's headers within `header_timeout_secs` (which
//! also ends a keep-alive connection idle that long), and a whole request within
//! `request_timeout_secs` (`408`), so half-sent requests and slow bodies hold nothing for long.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use admission::PerIp;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::net::TcpListener;
use tower_http::add_extension::AddExtension;
use tower_http::timeout::TimeoutLayer;
use tracing::debug;

/// The HTTP listener's settings (`[http]`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Connections served at once.
    pub max_connections: usize,
    /// Connections one client address may hold at once (0: no cap).
    pub max_connections_per_ip: usize,
    /// Seconds a client has to send a request's headers; a keep-alive connection idle this
    /// long is closed.
    pub header_timeout_secs: u64,
    /// Seconds a request may take, body included, before it is answered `408`.
    pub request_timeout_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            max_connections: 1024,
            max_connections_per_ip: 64,
            header_timeout_secs: 10,
            request_timeout_secs: 30,
        }
    }
}

/// Serves `app` on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    config: &HttpConfig,
    per_ip: PerIp,
) -> std::io::Result<()> {
    let app = app.layer(TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        Duration::from_secs(config.request_timeout_secs.max(1)),
    ));
    let mut http1 = hyper::server::conn::http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(config.header_timeout_secs.max(1)))
        .max_headers(64);
    let http1 = Arc::new(http1);
    ingest::listen::accept_loop(
        listener,
        "http",
        config.max_connections,
        per_ip,
        move |stream, peer| {
            let _ = stream.set_nodelay(true);
            let app = AddExtension::new(app.clone(), sfu::ClientAddr(peer));
            let service = TowerToHyperService::new(app);
            let http1 = http1.clone();
            async move {
                if let Err(err) = http1.serve_connection(TokioIo::new(stream), service).await {
                    debug!(%err, "http connection ended");
                }
            }
        },
    )
    .await;
    Ok(())
}
