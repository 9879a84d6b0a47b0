//! Upstream nodes this node pulls from: one MoQ session per node, shared by every channel
//! pulled through it, dialled on first use and forgotten when it closes; and the keyframe
//! channel beside it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use cluster::{NodeId, NodeInfo};
use media::ChannelName;
use moq_net::origin;
use tokio::sync::Mutex;
use web_transport_quinn::quinn;

use crate::endpoint::{self, CONTROL_ALPN, NODE_ALPN, SERVER_NAME};
use crate::Shared;

/// A dial that takes longer than this has failed (the next path is tried).
const DIAL_WITHIN: Duration = Duration::from_secs(2);
/// A keyframe request is `channel track`: at most this long.
pub(crate) const MAX_CONTROL_BYTES: usize = 160;

/// A MoQ session to an upstream node, and where what it announces lands.
pub(crate) struct Peer {
    pub(crate) session: moq_net::Session,
    pub(crate) origin: origin::Producer,
}

/// The upstream sessions, by node.
#[derive(Default)]
pub(crate) struct Peers {
    sessions: Mutex<HashMap<NodeId, Arc<Peer>>>,
    control: Mutex<HashMap<NodeId, quinn::Connection>>,
}

impl Peers {
    /// The session to `node`, dialled if there is none open.
    pub(crate) async fn session(
        &self,
        shared: &Arc<Shared>,
        node: &NodeInfo,
    ) -> Result<Arc<Peer>, String> {
        let mut sessions = self.sessions.lock().await;
        if let Some(peer) = sessions.get(&node.id) {
            return Ok(peer.clone());
        }
        let conn = dial(shared, node, NODE_ALPN).await?;
        let origin = shared.new_origin();
        let (session, driver) = moq_net::Client::new()
            .with_subscriber(origin.clone())
            .connect(
                std::time::Instant::now(),
                web_transport_quinn::Session::raw(conn),
            )
            .await
            .map_err(|e| format!("MoQ setup with {}: {e}", node.id))?;
        tokio::spawn(moq_net::time::run(driver));
        let peer = Arc::new(Peer { session, origin });
        sessions.insert(node.id.clone(), peer.clone());
        // Forgotten once closed, so the next pull dials again.
        let (shared, id, watched) = (shared.clone(), node.id.clone(), peer.clone());
        tokio::spawn(async move {
            watched.session.closed().await;
            let mut sessions = shared.peers.sessions.lock().await;
            if sessions.get(&id).is_some_and(|p| Arc::ptr_eq(p, &watched)) {
                sessions.remove(&id);
            }
        });
        Ok(peer)
    }

    /// Asks `node` for a keyframe on a track of a channel (it passes the request on upstream
    /// if it pulls the channel too).
    pub(crate) async fn request_keyframe(
        &self,
        shared: &Arc<Shared>,
        node: &NodeInfo,
        channel: &ChannelName,
        track: &str,
    ) -> Result<(), String> {
        let conn = self.control(shared, node).await?;
        let mut stream = conn.open_uni().await.map_err(|e| e.to_string())?;
        let message = format!("{channel} {track}");
        stream
            .write_all(message.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream.finish().map_err(|e| e.to_string())?;
        Ok(())
    }

    /// The keyframe connection to `node`, dialled if there is none open.
    pub(crate) async fn control(
        &self,
        shared: &Arc<Shared>,
        node: &NodeInfo,
    ) -> Result<quinn::Connection, String> {
        let mut control = self.control.lock().await;
        if let Some(conn) = control.get(&node.id).filter(|c| c.close_reason().is_none()) {
            return Ok(conn.clone());
        }
        let conn = dial(shared, node, CONTROL_ALPN).await?;
        control.insert(node.id.clone(), conn.clone());
        Ok(conn)
    }
}

/// A QUIC connection to `node`'s relay, its certificate pinned to the registry's fingerprint.
async fn dial(shared: &Shared, node: &NodeInfo, alpn: &str) -> Result<quinn::Connection, String> {
    let ipv6 = shared.endpoint.local_addr().is_ok_and(|a| a.is_ipv6());
    let addr = resolve(&node.public_host, node.ports.relay, ipv6).await?;
    let config = endpoint::client(&shared.identity, &node.relay_fingerprint, alpn)
        .map_err(|e| e.to_string())?;
    let connecting = shared
        .endpoint
        .connect_with(config, addr, SERVER_NAME)
        .map_err(|e| format!("dial {}: {e}", node.id))?;
    match tokio::time::timeout(DIAL_WITHIN, connecting).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(err)) => Err(format!("dial {}: {err}", node.id)),
        Err(_) => Err(format!("dial {}: no answer in {DIAL_WITHIN:?}", node.id)),
    }
}

/// An address of `host` the endpoint can reach: IPv4 from an IPv4 socket; either from an IPv6
/// one (IPv4 mapped).
async fn resolve(host: &str, port: u16, ipv6: bool) -> Result<SocketAddr, String> {
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| format!("resolve {host}: {e}"))?
        .collect();
    let usable = addrs.iter().find(|a| ipv6 || a.is_ipv4()).copied();
    let addr = usable.ok_or_else(|| format!("resolve {host}: no usable address"))?;
    Ok(match addr {
        SocketAddr::V4(v4) if ipv6 => SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port()),
        other => other,
    })
}
