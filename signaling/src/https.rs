//! The HTTPS listener (`--https`, 8443 by default; 443 on a front). Each connection's
//! ClientHello is read without terminating TLS ([`crate::sni`]), then:
//! - on a node that is no front (no `[front] public_name`): TLS ends here, the node's routes;
//! - on a front, by the name asked for (SNI):
//!   - the public name: TLS ends here, and the front's routes answer (307s to nodes);
//!   - this node's own name: TLS ends here, the node's routes;
//!   - another registered node's own name: the TCP stream is passed to that node's HTTPS port
//!     untouched, so TLS ends there with that node's certificate;
//!   - anything else, or no name: refused. The front is never an open proxy.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use cluster::{NodeId, NodeInfo, RoutingTable};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tracing::debug;

use crate::certs::Certificates;
use crate::passthrough::{self, Prefixed};
use crate::rate::RatePerIp;
use crate::sni::{self, Peek};

/// The HTTPS listener's settings (`[https]`; HTTP's timeouts apply to its requests too).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpsConfig {
    /// Address to listen on (443 on a front).
    pub listen: SocketAddr,
    /// The default certificate chain (PEM, leaf first); without it, a self-signed one.
    pub certificate: Option<std::path::PathBuf>,
    /// Its private key (PEM).
    pub key: Option<std::path::PathBuf>,
    /// Connections served at once (pass-throughs included).
    pub max_connections: usize,
    /// Connections one client address may hold at once (0: no cap).
    pub max_connections_per_ip: usize,
    /// Seconds a client has to send its ClientHello and finish the handshake.
    pub hello_timeout_secs: u64,
}

impl Default for HttpsConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            certificate: None,
            key: None,
            max_connections: 4096,
            max_connections_per_ip: 64,
            hello_timeout_secs: 5,
        }
    }
}

/// Where a TLS connection goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// TLS ends here; this node's routes.
    Node,
    /// TLS ends here; the front's routes (the public name).
    Front,
    /// To this node's HTTPS port, untouched.
    PassThrough(NodeInfo),
    /// Closed: why.
    Refuse(&'static str),
}

/// Who this listener is, for [`destination`].
#[derive(Debug, Clone)]
pub struct Names {
    /// This node's id.
    pub me: NodeId,
    /// This node's own name (`public_host`).
    pub own: String,
    /// The public name, when this node is a front.
    pub public: Option<String>,
}

/// Where a ClientHello asking for `sni` goes, given the registered `nodes`. Pure.
pub fn destination(names: &Names, sni: Option<&str>, nodes: &[NodeInfo]) -> Destination {
    let Some(public) = &names.public else {
        return Destination::Node;
    };
    let Some(sni) = sni else {
        return Destination::Refuse("no server name");
    };
    if sni.eq_ignore_ascii_case(public) {
        return Destination::Front;
    }
    if sni.eq_ignore_ascii_case(&names.own) {
        return Destination::Node;
    }
    match nodes
        .iter()
        .find(|n| n.public_host.eq_ignore_ascii_case(sni) && n.ports.https != 0)
    {
        Some(n) if n.id == names.me => Destination::Node,
        Some(n) => Destination::PassThrough(n.clone()),
        None => Destination::Refuse("unknown server name"),
    }
}

/// What the HTTPS listener counted, for `/metrics`.
#[derive(Debug, Default)]
pub struct HttpsMetrics {
    /// TLS connections ended here (node or front).
    pub terminated: AtomicU64,
    /// Connections passed to another node.
    pub passed: AtomicU64,
    /// Connections refused: unknown or missing name.
    pub refused_name: AtomicU64,
    /// Connections refused: not a ClientHello, malformed, too large, or too slow.
    pub refused_hello: AtomicU64,
    /// Pass-throughs that could not reach their node.
    pub pass_failed: AtomicU64,
}

impl HttpsMetrics {
    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "# HELP starling_https_connections_total TLS connections by what became of them.\n\
             # TYPE starling_https_connections_total counter\n\
             starling_https_connections_total{{outcome=\"terminated\"}} {}\n\
             starling_https_connections_total{{outcome=\"passed_through\"}} {}\n\
             starling_https_connections_total{{outcome=\"refused_name\"}} {}\n\
             starling_https_connections_total{{outcome=\"refused_hello\"}} {}\n\
             starling_https_connections_total{{outcome=\"pass_failed\"}} {}",
            get(&self.terminated),
            get(&self.passed),
            get(&self.refused_name),
            get(&self.refused_hello),
            get(&self.pass_failed),
        );
    }
}

/// The HTTPS listener's parts.
pub struct Https {
    /// Who this node is.
    pub names: Names,
    /// The certificates served.
    pub certs: Arc<Certificates>,
    /// The cluster as this node sees it.
    pub routing: Arc<RoutingTable>,
    /// This node's routes.
    pub node: Router,
    /// The front's routes (the public name), on a front.
    pub front: Option<Router>,
    /// TLS with [`Https::certs`] (made once with [`Certificates::server_config`]).
    pub tls: Arc<rustls::ServerConfig>,
    /// How HTTP is served over TLS.
    pub http: crate::listener::Http,
    /// New connections per client address (the front's flood guard).
    pub new_connections: Arc<RatePerIp>,
    /// How long a client has to send its whole ClientHello.
    pub hello_timeout: Duration,
    /// A passed-through connection with nothing moving either way this long is closed.
    pub idle: Duration,
    /// What happened to connections.
    pub metrics: Arc<HttpsMetrics>,
}

impl Https {
    /// Serves one accepted connection to its end.
    pub async fn connection(self: Arc<Self>, mut stream: TcpStream, peer: SocketAddr) {
        if !self.new_connections.allow(peer.ip(), Instant::now()) {
            debug!(%peer, "https: too many new connections from this address");
            return;
        }
        let _ = stream.set_nodelay(true);
        let hello = tokio::time::timeout(self.hello_timeout, read_hello(&mut stream)).await;
        let (buf, server_name) = match hello {
            Ok(Ok(read)) => read,
            Ok(Err(why)) => {
                self.metrics.refused_hello.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, reason = why, "https: refused before TLS");
                return;
            }
            Err(_) => {
                self.metrics.refused_hello.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, "https: no ClientHello in time");
                return;
            }
        };
        // Only a front looks names up among the nodes (a copy of the table per connection).
        let nodes = match self.names.public {
            Some(_) => self.routing.nodes(),
            None => Vec::new(),
        };
        let to = destination(&self.names, server_name.as_deref(), &nodes);
        let app = match to {
            Destination::Node => self.node.clone(),
            Destination::Front => match &self.front {
                Some(front) => front.clone(),
                None => self.node.clone(),
            },
            Destination::PassThrough(node) => {
                let target = match passthrough::connect(&node.public_host, node.ports.https).await {
                    Ok(target) => target,
                    Err(err) => {
                        self.metrics.pass_failed.fetch_add(1, Ordering::Relaxed);
                        debug!(%peer, node = %node.id, %err, "https: pass-through failed");
                        return;
                    }
                };
                self.metrics.passed.fetch_add(1, Ordering::Relaxed);
                let ended = passthrough::join(stream, target, &buf, self.idle).await;
                debug!(%peer, node = %node.id, ?ended, "https: pass-through ended");
                return;
            }
            Destination::Refuse(why) => {
                self.metrics.refused_name.fetch_add(1, Ordering::Relaxed);
                debug!(%peer, reason = why, "https: refused");
                return;
            }
        };
        self.metrics.terminated.fetch_add(1, Ordering::Relaxed);
        self.certs.prepare(server_name.as_deref()).await;
        let acceptor = tokio_rustls::TlsAcceptor::from(self.tls.clone());
        let tls = match tokio::time::timeout(
            self.hello_timeout,
            acceptor.accept(Prefixed::new(buf, stream)),
        )
        .await
        {
            Ok(Ok(tls)) => tls,
            Ok(Err(err)) => {
                debug!(%peer, %err, "https: TLS handshake failed");
                return;
            }
            Err(_) => return,
        };
        self.http.serve(tls, app, peer).await;
    }

    /// Accepts on `listener` until the task is dropped.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        max_connections: usize,
        per_ip: admission::limits::PerIp,
    ) {
        admission::listen::accept_loop(listener, "https", max_connections, per_ip, move |s, p| {
            self.clone().connection(s, p)
        })
        .await;
    }
}

/// Reads until the buffer holds a whole ClientHello: the bytes read and the name asked for.
async fn read_hello(stream: &mut TcpStream) -> Result<(Vec<u8>, Option<String>), &'static str> {
    let mut buf = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk).await.map_err(|_| "read failed")?;
        if n == 0 {
            return Err("closed before a whole ClientHello");
        }
        buf.extend_from_slice(&chunk[..n]);
        match sni::peek(&buf) {
            Ok(Peek::Hello(hello)) => return Ok((buf, hello.server_name)),
            Ok(Peek::Incomplete) if buf.len() <= sni::MAX_CLIENT_HELLO => {}
            Ok(Peek::Incomplete) => return Err("ClientHello too large"),
            Err(_) => return Err("not a valid ClientHello"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cluster::{Load, Ports, Role};

    fn node(id: &str, host: &str, https: u16) -> NodeInfo {
        NodeInfo {
            id: NodeId::new(id).unwrap(),
            roles: vec![Role::Sfu],
            region: "eu".into(),
            public_host: host.into(),
            ports: Ports {
                https,
                ..Ports::default()
            },
            load: Load::default(),
            draining: false,
            tier: Default::default(),
            relay_fingerprint: String::new(),
        }
    }

    #[test]
    fn names_choose_the_way() {
        let nodes = [
            node("front", "live.test", 443),
            node("a", "node-a.live.test", 8443),
            node("b", "node-b.live.test", 8443),
            node("c", "node-c.live.test", 0),
        ];
        let front = Names {
            me: NodeId::new("front").unwrap(),
            own: "front.live.test".into(),
            public: Some("live.test".into()),
        };
        let to = |sni| destination(&front, sni, &nodes);
        assert_eq!(to(Some("live.test")), Destination::Front);
        assert_eq!(to(Some("LIVE.test")), Destination::Front);
        assert_eq!(to(Some("front.live.test")), Destination::Node);
        assert_eq!(
            to(Some("node-b.live.test")),
            Destination::PassThrough(nodes[2].clone())
        );
        // No HTTPS port registered: nothing to pass to.
        assert!(matches!(
            to(Some("node-c.live.test")),
            Destination::Refuse(_)
        ));
        assert!(matches!(to(Some("example.com")), Destination::Refuse(_)));
        assert!(matches!(to(None), Destination::Refuse(_)));
        // A node that is no front serves whatever it is asked for.
        let plain = Names {
            public: None,
            ..front
        };
        assert_eq!(destination(&plain, None, &nodes), Destination::Node);
        assert_eq!(destination(&plain, Some("x"), &nodes), Destination::Node);
    }
}
