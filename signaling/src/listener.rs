//! The node's HTTP listeners: HTTP/1.1 with hyper, bounded, over plain TCP (`--http`) or TLS
//! (`--https`, see [`crate::https`]). At most `max_connections` served at once (more wait in
//! the kernel's accept queue), `max_connections_per_ip` from one client address (more are
//! closed at once), a request's headers within `header_timeout_secs` (which also ends a
//! keep-alive connection idle that long), and a whole request within `request_timeout_secs`
//! (`408`), so half-sent requests and slow bodies hold nothing for long.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use admission::limits::PerIp;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde::Deserialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tower_http::add_extension::AddExtension;
use tower_http::timeout::TimeoutLayer;
use tracing::debug;

/// The HTTP listener's settings (`[http]`; HTTPS shares them).
#[derive(Debug, Clone, Deserialize)]
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

/// How HTTP/1.1 is served on a connection, with the timeouts of [`HttpConfig`].
#[derive(Clone)]
pub struct Http {
    http1: Arc<hyper::server::conn::http1::Builder>,
    request_timeout: Duration,
}

impl Http {
    /// From the settings.
    pub fn new(config: &HttpConfig) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(config.header_timeout_secs.max(1)))
            .max_headers(64);
        Self {
            http1: Arc::new(http1),
            request_timeout: Duration::from_secs(config.request_timeout_secs.max(1)),
        }
    }

    /// `app` with the whole-request timeout: once per router, before serving it.
    pub fn bounded(&self, app: Router) -> Router {
        app.layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            self.request_timeout,
        ))
    }

    /// Serves `app` (made [`Http::bounded`]) on one connection from `peer` until it ends.
    pub async fn serve<IO>(&self, io: IO, app: Router, peer: SocketAddr)
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = AddExtension::new(app, sfu::ClientAddr(peer));
        let service = TowerToHyperService::new(app);
        if let Err(err) = self.http1.serve_connection(TokioIo::new(io), service).await {
            debug!(%err, "http connection ended");
        }
    }
}

/// Serves `app` over plain HTTP on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, app: Router, config: &HttpConfig, per_ip: PerIp) {
    let http = Http::new(config);
    let app = http.bounded(app);
    admission::listen::accept_loop(
        listener,
        "http",
        config.max_connections,
        per_ip,
        move |stream, peer| {
            let _ = stream.set_nodelay(true);
            let (http, app) = (http.clone(), app.clone());
            async move { http.serve(stream, app, peer).await }
        },
    )
    .await;
}
