//! The SFU: WebRTC with str0m, one UDP socket for every peer, ICE-lite. Viewers come in by
//! WHEP (`POST /whep/{channel}`), publishers by WHIP (`POST /whip/{channel}`); each peer is one
//! `Rtc` driven by its own task, fed datagrams by the UDP loop.
#![warn(missing_docs, unreachable_pub)]

mod config;
mod dtls;
mod egress;
mod http;
mod latency;
mod layers;
mod media_out;
mod peer;
mod publisher;
mod rtp_out;
mod sdpfrag;
mod srtp;
mod stun;
mod udp;
mod viewer;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use admission::Admission;
use media::Bus;
use tokio::net::UdpSocket;

pub use config::WebRtcConfig;
pub use http::whip::{bearer, refusal_response};
pub use http::whip_whep_routes;

use peer::PeerHandle;
use udp::Routes;

/// Identifies one peer session; its hex form is the last part of the WHEP/WHIP `Location`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SessionId(u128);

impl SessionId {
    fn random() -> Self {
        Self(rand::random())
    }

    fn parse(s: &str) -> Option<Self> {
        (s.len() == 32)
            .then(|| u128::from_str_radix(s, 16).ok())
            .flatten()
            .map(Self)
    }
}

impl std::fmt::Display for SessionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// A number for a peer's log lines. Its session id is a capability (whoever knows it may hang
/// up or change the session), so it is never logged.
fn peer_number() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The address of the client of an HTTP request, put in the request's extensions by the
/// server that accepted its connection; the per-address caps of WHIP and WHEP offers use it.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// A running SFU. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Bus,
    admission: Admission,
    config: WebRtcConfig,
    socket: Arc<UdpSocket>,
    egress: Arc<egress::Egress>,
    local_addr: SocketAddr,
    candidates: Vec<SocketAddr>,
    routes: Mutex<Routes>,
    peers: Mutex<HashMap<SessionId, PeerHandle>>,
    /// Keyframe requests (PLI/FIR) sent to WebRTC publishers, for `/metrics`.
    keyframe_requests: AtomicU64,
    /// Sessions not yet connected, per client address.
    pending_per_ip: admission::PerIp,
    /// What this node's roles let it take: viewers (`sfu`), WebRTC publishers (`ingest`).
    takes_viewers: AtomicBool,
    takes_publishers: AtomicBool,
}

/// The SFU could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// Binding the UDP socket failed.
    #[error("cannot bind WebRTC UDP {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// No address to offer as an ICE candidate.
    #[error("no address to offer peers; set webrtc.candidates")]
    NoCandidates,
}

impl Sfu {
    /// Whether this node takes WebRTC viewers (role `sfu`) and WHIP publishers (role
    /// `ingest`); refused ones hear 503 with the reason.
    pub fn set_roles(&self, viewers: bool, publishers: bool) {
        self.inner.takes_viewers.store(viewers, Ordering::Relaxed);
        self.inner
            .takes_publishers
            .store(publishers, Ordering::Relaxed);
    }

    /// Binds the WebRTC UDP socket and starts its receive loop. Viewers read `admission`'s
    /// bus; WHIP publishers are admitted by `admission` and write into its bus.
    pub async fn start(config: WebRtcConfig, admission: Admission) -> Result<Self, SfuError> {
        let socket = UdpSocket::bind(config.listen)
            .await
            .map_err(|e| SfuError::Bind(config.listen, e))?;
        let local_addr = socket
            .local_addr()
            .map_err(|e| SfuError::Bind(config.listen, e))?;
        let candidates = config.candidate_addrs(local_addr);
        if candidates.is_empty() {
            return Err(SfuError::NoCandidates);
        }
        let socket = Arc::new(socket);
        // Bound to every address with the host's own as candidates: answer each peer from
        // the address it used (see `egress::Egress`).
        let pin_source = config.candidates.is_empty() && local_addr.ip().is_unspecified();
        let egress = egress::Egress::new(socket.clone(), pin_source)
            .map_err(|e| SfuError::Bind(config.listen, e))?;
        egress::log_capabilities(&egress);
        let pending_per_ip = admission
            .limits()
            .per_ip("webrtc", config.max_pending_per_ip);
        let inner = Inner {
            pending_per_ip,
            bus: admission.bus().clone(),
            admission,
            config,
            socket,
            egress: Arc::new(egress),
            local_addr,
            candidates,
            routes: Mutex::default(),
            peers: Mutex::default(),
            keyframe_requests: AtomicU64::new(0),
            takes_viewers: AtomicBool::new(true),
            takes_publishers: AtomicBool::new(true),
        };
        let sfu = Self {
            inner: Arc::new(inner),
        };
        tokio::spawn(udp::receive_loop(sfu.clone()));
        Ok(sfu)
    }

    /// The bound UDP address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The addresses offered to peers as ICE host candidates.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.inner.candidates
    }

    /// Number of viewer sessions.
    pub fn viewers(&self) -> usize {
        self.peers().values().filter(|p| !p.is_publisher()).count()
    }

    /// Bytes of media and control sent to peers so far (UDP payloads).
    pub fn bytes_sent(&self) -> u64 {
        self.inner.egress.bytes_sent()
    }

    /// Number of WebRTC (WHIP) publisher sessions.
    pub fn publishers(&self) -> usize {
        self.peers().values().filter(|p| p.is_publisher()).count()
    }

    /// Remote addresses the UDP socket routes to sessions (a few per session at most).
    pub fn bound_addresses(&self) -> usize {
        self.routes().addrs()
    }

    /// Keyframe requests sent to WebRTC publishers so far.
    pub fn keyframe_requests_sent(&self) -> u64 {
        self.inner.keyframe_requests.load(Ordering::Relaxed)
    }

    /// The SFU's part of the node's `/metrics`, in Prometheus' text format: its sessions,
    /// routed addresses and keyframe requests.
    pub fn metrics(&self) -> String {
        format!(
            "# HELP starling_viewers WebRTC viewer sessions on this node.\n\
             # TYPE starling_viewers gauge\n\
             starling_viewers {}\n\
             # HELP starling_webrtc_publishers WebRTC (WHIP) publisher sessions on this node.\n\
             # TYPE starling_webrtc_publishers gauge\n\
             starling_webrtc_publishers {}\n\
             # HELP starling_webrtc_bound_addresses Peer addresses the WebRTC socket routes to sessions.\n\
             # TYPE starling_webrtc_bound_addresses gauge\n\
             starling_webrtc_bound_addresses {}\n\
             # HELP starling_publisher_keyframe_requests_total Keyframe requests (PLI/FIR) sent to WebRTC publishers.\n\
             # TYPE starling_publisher_keyframe_requests_total counter\n\
             starling_publisher_keyframe_requests_total {}\n",
            self.viewers(),
            self.publishers(),
            self.bound_addresses(),
            self.keyframe_requests_sent(),
        )
    }

    fn count_keyframe_request(&self) {
        self.inner.keyframe_requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Hangs up every session (the node is stopping) and waits up to `grace` for their tasks
    /// to end.
    pub async fn close_all(&self, grace: std::time::Duration) {
        let controls: Vec<_> = self.peers().values().map(|p| p.control.clone()).collect();
        for control in controls {
            let _ = control.try_send(peer::Control::HangUp);
        }
        let deadline = tokio::time::Instant::now() + grace;
        while !self.peers().is_empty() && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The candidate to tell str0m a datagram sent to `destination` arrived on.
    fn local_for(&self, destination: Option<std::net::IpAddr>) -> SocketAddr {
        udp::local_candidate(&self.inner.candidates, destination, self.inner.local_addr)
    }

    fn peers(&self) -> MutexGuard<'_, HashMap<SessionId, PeerHandle>> {
        self.inner.peers.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.inner.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove_peer(&self, id: SessionId) {
        self.peers().remove(&id);
        self.routes().remove(id);
    }
}

/// Entry points for the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing {
    use std::net::SocketAddr;

    use crate::udp::Routes;
    use crate::SessionId;

    /// A WHIP/WHEP offer body (and a trickle PATCH body) as the handlers take it, up to the
    /// answer of an ICE-lite `Rtc` that knows every codec Starling moves.
    pub fn offer(body: &[u8]) {
        if let Ok(body) = std::str::from_utf8(body) {
            crate::http::fuzz_offer(body);
        }
    }

    /// A datagram on the WebRTC port, routed among sessions with known ufrags and addresses;
    /// the table stays within its bounds whatever comes.
    pub fn route(datagram: &[u8]) {
        let mut routes = Routes::default();
        let source = SocketAddr::from(([192, 0, 2, 1], 5000));
        for i in 0..3u128 {
            routes.add_ufrag(format!("u{i}"), SessionId(i));
            routes.bind(
                SocketAddr::from(([192, 0, 2, 1], 5000 + i as u16)),
                SessionId(i),
            );
        }
        if let Some(id) = routes.route(source, datagram) {
            routes.bind(source, id);
        }
        let _ = crate::stun::local_ufrag(datagram);
        assert!(routes.addrs() <= 3 * crate::udp::ADDRS_PER_SESSION);
    }
}
