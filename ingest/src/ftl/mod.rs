//! FTL ingest (OBS up to 29, ftl-sdk): the control conversation on TCP, then RTP H.264 + Opus
//! on a UDP port of our range, from the control connection's address only, with NACKs for
//! lost video.

mod connection;
mod control;
mod front;
mod media;

pub use front::{serve_front, Pick};

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Deserialize;
use tokio::net::{TcpListener, UdpSocket};

use crate::Ingest;

/// FTL listener settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FtlConfig {
    /// TCP address of the control connection.
    pub listen: SocketAddr,
    /// First UDP port handed to publishers for media.
    pub media_port_first: u16,
    /// How many UDP ports from `media_port_first` (one per live publisher).
    pub media_port_count: u16,
    /// Seconds a client may take from connecting to streaming.
    pub handshake_timeout_secs: u64,
    /// Seconds without media after which a publisher is told `408` and its channel ends.
    pub idle_timeout_secs: u64,
    /// Control connections one client address may hold at once (0: no cap).
    pub max_connections_per_ip: usize,
    /// FTL channel ids (the number before the `-` in an FTL stream key) to channel names.
    /// An id not listed publishes to the channel named by the number itself.
    pub channels: BTreeMap<String, String>,
}

impl Default for FtlConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8084)),
            media_port_first: 8085,
            media_port_count: 100,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 10,
            max_connections_per_ip: 4,
            channels: BTreeMap::new(),
        }
    }
}

impl FtlConfig {
    fn handshake_timeout(&self) -> Duration {
        Duration::from_secs(self.handshake_timeout_secs.max(1))
    }

    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }

    /// The channel name for an FTL channel id.
    fn channel_name(&self, channel_id: u32) -> String {
        let id = channel_id.to_string();
        self.channels.get(&id).cloned().unwrap_or(id)
    }
}

/// The media ports not in use.
struct Ports {
    free: Mutex<BTreeSet<u16>>,
}

/// A media socket bound on one of the range's ports; the port goes back when dropped.
struct Lease {
    ports: Arc<Ports>,
    port: u16,
    socket: UdpSocket,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.ports
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(self.port);
    }
}

impl Ports {
    fn new(first: u16, count: u16) -> Self {
        let last = first.saturating_add(count.saturating_sub(1));
        Self {
            free: Mutex::new((first..=last).filter(|_| count > 0).collect()),
        }
    }

    /// Binds the first free port of the range that the system lets us have.
    async fn lease(self: &Arc<Self>, ip: std::net::IpAddr) -> Option<Lease> {
        let candidates: Vec<u16> = {
            let free = self.free.lock().unwrap_or_else(|e| e.into_inner());
            free.iter().copied().collect()
        };
        for port in candidates {
            let taken = self
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&port);
            if !taken {
                continue;
            }
            match UdpSocket::bind(SocketAddr::new(ip, port)).await {
                Ok(socket) => {
                    return Some(Lease {
                        ports: self.clone(),
                        port,
                        socket,
                    })
                }
                Err(_) => {
                    // In use by another program: give it back and try the next.
                    self.free
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(port);
                }
            }
        }
        None
    }
}

/// Entry points for the fuzz targets in `fuzz/` (not an API).
#[doc(hidden)]
pub mod fuzzing {
    use std::time::{Duration, Instant};

    use bytes::Bytes;

    use super::control::{Action, Control, CHALLENGE_LEN};
    use super::media::{Rtp, VideoReceiver};

    /// Feeds `data` as control lines: whatever comes, the conversation answers or refuses.
    pub fn control_lines(data: &[u8]) {
        let mut control = Control::new([7; CHALLENGE_LEN]);
        for line in data.split(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(line);
            match control.on_line(&line) {
                Action::Authenticate { .. } => {
                    control.authenticated(Ok(()));
                }
                Action::StartMedia(_) => {
                    control.media_port(Ok(8085));
                }
                Action::Refuse(_) | Action::Disconnect => return,
                Action::Reply(_) | Action::Nothing => {}
            }
        }
    }

    /// Feeds `data` as datagrams (split at `0xff 0xfe`) to a video receiver, 5 ms apart.
    pub fn media_datagrams(data: &[u8]) {
        let mut video = VideoReceiver::default();
        let mut now = Instant::now();
        for datagram in data.split(|&b| b == 0xfe) {
            if let Some(rtp) = Rtp::parse(&Bytes::copy_from_slice(datagram)) {
                video.push(rtp, now);
            }
            now += Duration::from_millis(5);
            let _ = video.poll(now);
        }
    }
}

/// Accepts FTL control connections on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, config: FtlConfig, ingest: Ingest) {
    let ports = Arc::new(Ports::new(config.media_port_first, config.media_port_count));
    // Connections handshaking or streaming: twice the media ports, so handshakes that will be
    // refused do not wait behind live publishers.
    let limit = usize::from(config.media_port_count) * 2;
    let per_ip = ingest.limits().per_ip("ftl", config.max_connections_per_ip);
    let config = Arc::new(config);
    admission::listen::accept_loop(listener, "ftl", limit, per_ip, move |stream, _| {
        let (config, ingest, ports) = (config.clone(), ingest.clone(), ports.clone());
        async move { connection::run(stream, &config, &ingest, &ports).await }
    })
    .await;
}
