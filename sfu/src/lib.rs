//! The SFU: serves viewers over WebRTC with str0m. One `Rtc` per viewer, one UDP socket for all,
//! ICE-lite; WHEP (`POST /whep/{channel}`) creates viewers.
#![warn(missing_docs, unreachable_pub)]

mod config;
mod latency;
mod session;
mod stun;
mod udp;
mod whep;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use media::Bus;
use tokio::net::UdpSocket;

pub use config::WebRtcConfig;
pub use whep::router;

use session::SessionHandle;
use udp::Routes;

/// Identifies one viewer session; its hex form is the last part of the WHEP `Location`.
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

/// A running SFU. Cheap to clone.
#[derive(Clone)]
pub struct Sfu {
    inner: Arc<Inner>,
}

struct Inner {
    bus: Bus,
    config: WebRtcConfig,
    socket: Arc<UdpSocket>,
    local_addr: SocketAddr,
    candidates: Vec<SocketAddr>,
    routes: Mutex<Routes>,
    sessions: Mutex<HashMap<SessionId, SessionHandle>>,
}

/// The SFU could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SfuError {
    /// Binding the UDP socket failed.
    #[error("cannot bind WebRTC UDP {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    /// No address to offer as an ICE candidate.
    #[error("no address to offer viewers; set webrtc.candidates")]
    NoCandidates,
}

impl Sfu {
    /// Binds the WebRTC UDP socket and starts its receive loop.
    pub async fn start(config: WebRtcConfig, bus: Bus) -> Result<Self, SfuError> {
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
        let inner = Inner {
            bus,
            config,
            socket: Arc::new(socket),
            local_addr,
            candidates,
            routes: Mutex::default(),
            sessions: Mutex::default(),
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

    /// The addresses offered to viewers as ICE host candidates.
    pub fn candidates(&self) -> &[SocketAddr] {
        &self.inner.candidates
    }

    /// Number of viewer sessions.
    pub fn viewers(&self) -> usize {
        self.sessions().len()
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<SessionId, SessionHandle>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn routes(&self) -> MutexGuard<'_, Routes> {
        self.inner.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remove_session(&self, id: SessionId) {
        self.sessions().remove(&id);
        self.routes().remove(id);
    }
}
