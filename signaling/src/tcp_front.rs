//! RTMP and RTMPS through the public name: each connection is passed, untouched, to an ingest
//! node placement picks (the channel is in the RTMP stream, which the front does not read; the
//! node claims it as it does for a direct publisher). RTMPS passes through as TLS: the node
//! serves the public name's certificate from the registry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cluster::{NodeInfo, Ports, Role, RoutingTable};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, info};

use crate::passthrough;
use crate::rate::RatePerIp;

/// A TCP front for one protocol.
pub struct TcpFront {
    /// `rtmp` or `rtmps`, for logs and metrics.
    pub protocol: &'static str,
    /// The node's port for it.
    pub port: fn(&Ports) -> u16,
    /// The cluster as this node sees it.
    pub routing: Arc<RoutingTable>,
    /// Where newcomers are placed near.
    pub region: Option<String>,
    /// Nothing moving either way this long closes the pair.
    pub idle: Duration,
    /// New connections per client address.
    pub new_connections: Arc<RatePerIp>,
    /// Connections passed to a node.
    pub passed: AtomicU64,
    /// Connections with no node to pass to, or whose node could not be reached.
    pub failed: AtomicU64,
}

impl TcpFront {
    /// The ingest node for a new connection: the least loaded with this protocol's port.
    pub fn pick(&self) -> Option<NodeInfo> {
        let nodes: Vec<NodeInfo> = self
            .routing
            .nodes()
            .into_iter()
            .filter(|n| (self.port)(&n.ports) != 0)
            .collect();
        cluster::choose(&nodes, Role::Ingest, self.region.as_deref()).cloned()
    }

    async fn connection(self: Arc<Self>, stream: TcpStream, peer: SocketAddr) {
        if !self.new_connections.allow(peer.ip(), Instant::now()) {
            debug!(%peer, protocol = self.protocol, "front: too many new connections");
            return;
        }
        let Some(node) = self.pick() else {
            self.failed.fetch_add(1, Ordering::Relaxed);
            info!(%peer, protocol = self.protocol, "front: no ingest node to pass to");
            return;
        };
        let target = match passthrough::connect(&node.public_host, (self.port)(&node.ports)).await {
            Ok(target) => target,
            Err(err) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                info!(%peer, node = %node.id, %err, protocol = self.protocol, "front: ingest node unreachable");
                return;
            }
        };
        self.passed.fetch_add(1, Ordering::Relaxed);
        let _ = stream.set_nodelay(true);
        debug!(%peer, node = %node.id, protocol = self.protocol, "front: passed to ingest node");
        let ended = passthrough::join(stream, target, &[], self.idle).await;
        debug!(%peer, node = %node.id, ?ended, "front: pass-through ended");
    }

    /// Accepts on `listener` until the task is dropped.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        max_connections: usize,
        per_ip: admission::limits::PerIp,
    ) {
        let protocol = self.protocol;
        admission::listen::accept_loop(listener, protocol, max_connections, per_ip, move |s, p| {
            self.clone().connection(s, p)
        })
        .await;
    }

    /// Prometheus text.
    pub fn render(&self, out: &mut String) {
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "starling_front_tcp_connections_total{{protocol=\"{p}\",outcome=\"passed\"}} {}\n\
             starling_front_tcp_connections_total{{protocol=\"{p}\",outcome=\"failed\"}} {}",
            self.passed.load(Ordering::Relaxed),
            self.failed.load(Ordering::Relaxed),
            p = self.protocol,
        );
    }
}
