//! The one UDP socket: receives every viewer's datagrams and routes each to its session, by
//! source address once known, else by the ICE ufrag in a STUN request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use std::io::IoSliceMut;

use quinn_udp::RecvMeta;
use tokio::io::Interest;
use tracing::{trace, warn};

use crate::peer::Datagram;
use crate::{stun, SessionId, Sfu};

/// Largest datagram accepted; WebRTC keeps packets under the path MTU.
const MAX_DATAGRAM: usize = 2048;

#[derive(Default)]
pub(crate) struct Routes {
    by_ufrag: HashMap<String, SessionId>,
    by_addr: HashMap<SocketAddr, SessionId>,
}

impl Routes {
    pub(crate) fn add_ufrag(&mut self, ufrag: String, id: SessionId) {
        self.by_ufrag.insert(ufrag, id);
    }

    pub(crate) fn remove(&mut self, id: SessionId) {
        self.by_ufrag.retain(|_, s| *s != id);
        self.by_addr.retain(|_, s| *s != id);
    }

    fn route(&mut self, source: SocketAddr, packet: &[u8]) -> Option<SessionId> {
        if let Some(ufrag) = stun::local_ufrag(packet) {
            // A STUN check names its session; it may come from a new address (ICE restart,
            // network change), so it always (re)binds the address.
            let id = *self.by_ufrag.get(ufrag)?;
            self.by_addr.insert(source, id);
            return Some(id);
        }
        self.by_addr.get(&source).copied()
    }
}

pub(crate) async fn receive_loop(sfu: Sfu) {
    let socket = sfu.inner.socket.clone();
    let egress = sfu.inner.egress.clone();
    // The socket has UDP GRO on (quinn-udp turns it on), so one read may carry up to
    // `gro_segments` datagrams from one source, `stride` bytes apart.
    let mut buf = vec![0u8; MAX_DATAGRAM * egress.gro_segments().max(1)];
    let mut meta = [RecvMeta::default()];
    loop {
        let received = socket
            .async_io(Interest::READABLE, || {
                let mut bufs = [IoSliceMut::new(&mut buf)];
                egress.recv(&socket, &mut bufs, &mut meta)
            })
            .await;
        match received {
            Ok(_) => {}
            Err(err) => {
                // ICMP errors from a viewer that went away surface here on some systems.
                trace!(%err, "udp receive error");
                if err.kind() != std::io::ErrorKind::ConnectionReset {
                    warn!(%err, "webrtc udp receive failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                continue;
            }
        }
        let [meta] = meta;
        let len = meta.len.min(buf.len());
        for packet in buf[..len].chunks(meta.stride.max(1)) {
            deliver(&sfu, meta.addr, packet);
        }
    }
}

/// Hands one datagram to its session, if it has one.
fn deliver(sfu: &Sfu, source: SocketAddr, packet: &[u8]) {
    let Some(id) = sfu.routes().route(source, packet) else {
        trace!(%source, "datagram for no session");
        return;
    };
    let tx = sfu.peers().get(&id).map(|s| s.datagrams.clone());
    if let Some(tx) = tx {
        let datagram = Datagram {
            source,
            data: packet.to_vec(),
            at: Instant::now(),
        };
        // A session that cannot keep up loses datagrams rather than queueing them.
        if tx.try_send(datagram).is_err() {
            trace!(%source, "session queue full; datagram dropped");
        }
    }
}
