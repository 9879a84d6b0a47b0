//! The one UDP socket: receives every peer's datagrams and routes each to its session, by
//! source address once str0m has answered that address, else by the ICE ufrag in a STUN request.
//!
//! An address is bound to a session only when the session's `Rtc` sends to it: str0m answers a
//! STUN check only after its integrity (the session's ICE password) checked out, so a stranger
//! who learns a ufrag cannot bind addresses. Each session keeps a few addresses and ufrags at
//! most, so the table is bounded by the number of sessions.

use std::collections::{HashMap, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use std::io::IoSliceMut;

use quinn_udp::RecvMeta;
use tokio::io::Interest;
use tracing::{trace, warn};

use crate::peer::Datagram;
use crate::{stun, SessionId, Sfu};

/// Largest datagram accepted; WebRTC keeps packets under the path MTU.
const MAX_DATAGRAM: usize = 2048;
/// Remote addresses bound to one session at most (its candidates, a network change); the
/// oldest goes first.
pub(crate) const ADDRS_PER_SESSION: usize = 8;
/// Local ufrags one session keeps at most (its first and those of ICE restarts).
pub(crate) const UFRAGS_PER_SESSION: usize = 4;

#[derive(Default)]
pub(crate) struct Routes {
    by_ufrag: HashMap<String, SessionId>,
    by_addr: HashMap<SocketAddr, SessionId>,
    /// What each session has in the two maps, so removing it scans nothing.
    sessions: HashMap<SessionId, Held>,
}

#[derive(Default)]
struct Held {
    ufrags: VecDeque<String>,
    addrs: VecDeque<SocketAddr>,
}

impl Routes {
    pub(crate) fn add_ufrag(&mut self, ufrag: String, id: SessionId) {
        let held = self.sessions.entry(id).or_default();
        held.ufrags.push_back(ufrag.clone());
        if held.ufrags.len() > UFRAGS_PER_SESSION {
            if let Some(old) = held.ufrags.pop_front() {
                if self.by_ufrag.get(&old) == Some(&id) {
                    self.by_ufrag.remove(&old);
                }
            }
        }
        self.by_ufrag.insert(ufrag, id);
    }

    /// Routes datagrams from `addr` to session `id` (whose `Rtc` just sent to it). An address
    /// bound to another session moves (a NAT rebinding handed it on).
    pub(crate) fn bind(&mut self, addr: SocketAddr, id: SessionId) {
        if !self.sessions.contains_key(&id) {
            return; // removed meanwhile
        }
        match self.by_addr.insert(addr, id) {
            Some(old) if old == id => return,
            Some(old) => {
                if let Some(other) = self.sessions.get_mut(&old) {
                    other.addrs.retain(|a| *a != addr);
                }
            }
            None => {}
        }
        let Some(held) = self.sessions.get_mut(&id) else {
            return;
        };
        held.addrs.push_back(addr);
        if held.addrs.len() > ADDRS_PER_SESSION {
            if let Some(old) = held.addrs.pop_front() {
                self.by_addr.remove(&old);
            }
        }
    }

    pub(crate) fn remove(&mut self, id: SessionId) {
        let Some(held) = self.sessions.remove(&id) else {
            return;
        };
        for ufrag in held.ufrags {
            if self.by_ufrag.get(&ufrag) == Some(&id) {
                self.by_ufrag.remove(&ufrag);
            }
        }
        for addr in held.addrs {
            if self.by_addr.get(&addr) == Some(&id) {
                self.by_addr.remove(&addr);
            }
        }
    }

    /// Addresses bound in all.
    pub(crate) fn addrs(&self) -> usize {
        self.by_addr.len()
    }

    pub(crate) fn route(&self, source: SocketAddr, packet: &[u8]) -> Option<SessionId> {
        if let Some(ufrag) = stun::local_ufrag(packet) {
            // A STUN check names its session; it may come from a new address (ICE restart,
            // network change). It binds nothing until the session has answered it.
            return self.by_ufrag.get(ufrag).copied();
        }
        self.by_addr.get(&source).copied()
    }
}

pub(crate) async fn receive_loop(sfu: Sfu) {
    let socket = sfu.inner.socket.clone();
    let egress = sfu.inner.egress.clone();
    // The socket has UDP GRO on (quinn-udp turns it on), so one read may carry up to
    // `gro_segments` datagrams from one source, `stride` bytes apart. quinn-udp also asks for
    // each datagram's destination address (IP_PKTINFO / IPV6_PKTINFO): on a wildcard socket
    // that is the address the peer used, which str0m must be told and answer from.
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
        // A dual-stack socket reports IPv4 peers as IPv4-mapped IPv6; str0m's candidates are
        // plain IPv4.
        let source = SocketAddr::new(meta.addr.ip().to_canonical(), meta.addr.port());
        let destination = sfu.local_for(meta.dst_ip.map(|ip| ip.to_canonical()));
        for packet in buf[..len].chunks(meta.stride.max(1)) {
            deliver(&sfu, source, destination, packet);
        }
    }
}

/// Hands one datagram to its session, if it has one.
fn deliver(sfu: &Sfu, source: SocketAddr, destination: SocketAddr, packet: &[u8]) {
    let Some(id) = sfu.routes().route(source, packet) else {
        trace!(%source, "datagram for no session");
        return;
    };
    let tx = sfu.peers().get(&id).map(|s| s.datagrams.clone());
    if let Some(tx) = tx {
        let datagram = Datagram {
            source,
            destination,
            data: packet.to_vec(),
            at: Instant::now(),
        };
        // A session that cannot keep up loses datagrams rather than queueing them.
        if tx.try_send(datagram).is_err() {
            trace!(%source, "session queue full; datagram dropped");
        }
    }
}

/// The local address to tell str0m a datagram arrived on: the candidate with the datagram's
/// destination IP; else (a candidate configured for a NAT's public address, which the host
/// never sees) the first candidate of the same family, else the first.
pub(crate) fn local_candidate(
    candidates: &[SocketAddr],
    destination: Option<IpAddr>,
    bound: SocketAddr,
) -> SocketAddr {
    let same_family = |a: &&SocketAddr| destination.is_none_or(|ip| a.is_ipv4() == ip.is_ipv4());
    destination
        .and_then(|ip| candidates.iter().find(|a| a.ip() == ip))
        .or_else(|| candidates.iter().find(same_family))
        .or(candidates.first())
        .copied()
        .unwrap_or(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(ufrag: &str) -> Vec<u8> {
        let username = format!("{ufrag}:remote");
        let padded = username.len().next_multiple_of(4);
        let mut p = vec![0x00, 0x01];
        p.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
        p.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
        p.extend_from_slice(&[0; 12]);
        p.extend_from_slice(&0x0006u16.to_be_bytes());
        p.extend_from_slice(&(username.len() as u16).to_be_bytes());
        p.extend_from_slice(username.as_bytes());
        p.resize(20 + 4 + padded, 0);
        p
    }

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], 1000 + i))
    }

    #[test]
    fn a_stun_check_binds_nothing_until_the_session_answers() {
        let mut routes = Routes::default();
        let id = SessionId(1);
        routes.add_ufrag("abcd".into(), id);
        // Checks from many addresses reach the session, but bind none of them.
        for i in 0..1000 {
            assert_eq!(routes.route(addr(i), &binding_request("abcd")), Some(id));
        }
        assert_eq!(routes.addrs(), 0);
        assert_eq!(routes.route(addr(1), b"\x80rtp"), None);
        // The session answered addr(1): its media now routes by address.
        routes.bind(addr(1), id);
        assert_eq!(routes.route(addr(1), b"\x80rtp"), Some(id));
    }

    #[test]
    fn a_session_holds_a_bounded_number_of_addresses_and_ufrags() {
        let mut routes = Routes::default();
        let id = SessionId(7);
        for i in 0..100u16 {
            routes.add_ufrag(format!("u{i}"), id);
            routes.bind(addr(i), id);
        }
        assert_eq!(routes.addrs(), ADDRS_PER_SESSION);
        assert_eq!(routes.by_ufrag.len(), UFRAGS_PER_SESSION);
        // The newest are kept.
        assert_eq!(routes.route(addr(99), b"\x80"), Some(id));
        assert_eq!(routes.route(addr(0), b"\x80"), None);
        assert_eq!(routes.route(addr(0), &binding_request("u99")), Some(id));
        routes.remove(id);
        assert_eq!(routes.addrs(), 0);
        assert!(routes.by_ufrag.is_empty() && routes.sessions.is_empty());
    }

    #[test]
    fn an_address_moves_to_the_session_that_answered_it_last() {
        let mut routes = Routes::default();
        let (a, b) = (SessionId(1), SessionId(2));
        routes.add_ufrag("a".into(), a);
        routes.add_ufrag("b".into(), b);
        routes.bind(addr(1), a);
        routes.bind(addr(1), b);
        assert_eq!(routes.route(addr(1), b"\x80"), Some(b));
        routes.remove(a);
        assert_eq!(routes.route(addr(1), b"\x80"), Some(b));
        // A removed session binds nothing.
        routes.bind(addr(2), a);
        assert_eq!(routes.addrs(), 1);
    }

    #[test]
    fn the_local_candidate_is_the_one_the_datagram_was_sent_to() {
        let v4 = |a, b, c, d| SocketAddr::from(([a, b, c, d], 8189));
        let candidates = [v4(10, 0, 0, 1), v4(192, 168, 1, 1), v4(127, 0, 0, 1)];
        let bound = v4(0, 0, 0, 0);
        let to = |ip: [u8; 4]| Some(IpAddr::from(ip));
        assert_eq!(
            local_candidate(&candidates, to([192, 168, 1, 1]), bound),
            candidates[1]
        );
        assert_eq!(
            local_candidate(&candidates, to([127, 0, 0, 1]), bound),
            candidates[2]
        );
        // A public address configured for a NAT: the host sees its private one.
        let public = [v4(203, 0, 113, 5)];
        assert_eq!(
            local_candidate(&public, to([10, 9, 9, 9]), bound),
            public[0]
        );
        assert_eq!(local_candidate(&public, None, bound), public[0]);
        assert_eq!(local_candidate(&[], None, bound), bound);
    }
}
