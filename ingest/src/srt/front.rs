//! SRT's public UDP port, in front of srt-tokio's listener.
//!
//! srt-tokio 0.4 parses and handles every datagram of every caller in one listener task, and
//! panics on some that anyone can send: a malformed loss list, an unknown handshake
//! extension, key material when the node has no passphrase (`unimplemented!("expected no
//! secrets")`), key material that is not a request. The task's end closes every SRT
//! connection of the node. So the front owns the public socket, screens each datagram with
//! srt-protocol's own parser (a panic in it is caught; the datagram is dropped), refuses what
//! would panic the listener, and relays the rest to srt-tokio's listener on loopback through
//! one local socket per caller, so srt-tokio still tells callers apart. Callers are bounded
//! in number, and a caller silent for a while is forgotten.

use std::collections::HashMap;
use std::io::Cursor;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use srt_protocol::packet::{ControlTypes, HandshakeVsInfo, Packet, SrtControlPacket};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

/// Largest SRT datagram (1500-byte MTU; srt-tokio uses 1316-byte payloads).
const MAX_DATAGRAM: usize = 1500;
/// A caller that has only handshaken is forgotten after this long without a datagram; one
/// that sent media, after [`IDLE`].
const HANDSHAKE_IDLE: Duration = Duration::from_secs(5);
const IDLE: Duration = Duration::from_secs(30);

/// Each caller's loopback port (as srt-tokio sees it) to its real address.
#[derive(Clone, Default)]
pub(crate) struct Callers(Arc<Mutex<HashMap<u16, SocketAddr>>>);

impl Callers {
    /// The real address of a caller srt-tokio sees at `relayed`.
    pub(crate) fn real(&self, relayed: SocketAddr) -> SocketAddr {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(&relayed.port()).copied().unwrap_or(relayed)
    }

    fn set(&self, port: u16, caller: Option<SocketAddr>) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match caller {
            Some(caller) => map.insert(port, caller),
            None => map.remove(&port),
        };
    }
}

/// Why a datagram was not relayed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Screened {
    /// Not SRT that srt-protocol parses (or it panicked parsing it).
    Malformed,
    /// A handshake with key material, and the node has no passphrase.
    EncryptsWithoutPassphrase,
    /// A handshake whose key material is not a request.
    KeyMaterialNotARequest,
}

/// Whether srt-tokio's listener may be given `datagram`. Pure but for the panic it catches.
pub(crate) fn screen(datagram: &[u8], passphrase: bool) -> Result<Packet, Screened> {
    let parsed = crate::untrusted::guarded(|| Packet::parse(&mut Cursor::new(datagram), false));
    let Some(Ok(packet)) = parsed else {
        return Err(Screened::Malformed);
    };
    if let Packet::Control(control) = &packet {
        if let ControlTypes::Handshake(handshake) = &control.control_type {
            if let HandshakeVsInfo::V5(info) = &handshake.info {
                match &info.ext_km {
                    None => {}
                    Some(_) if !passphrase => return Err(Screened::EncryptsWithoutPassphrase),
                    Some(SrtControlPacket::KeyRefreshRequest(_)) => {}
                    Some(_) => return Err(Screened::KeyMaterialNotARequest),
                }
            }
        }
    }
    Ok(packet)
}

/// One caller's relay: its loopback socket (connected to srt-tokio's listener) and the task
/// that sends srt-tokio's answers back to it.
struct Flow {
    socket: Arc<UdpSocket>,
    back: JoinHandle<()>,
    last: Instant,
    /// Sent more than handshakes.
    established: bool,
}

/// Relays `public` (the SRT port) to srt-tokio's listener at `inner`, for at most
/// `max_callers` callers at once, until the task is dropped.
pub(crate) async fn run(
    public: UdpSocket,
    inner: SocketAddr,
    passphrase: bool,
    max_callers: usize,
    callers: Callers,
) {
    let public = Arc::new(public);
    let mut flows: HashMap<SocketAddr, Flow> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut sweep = tokio::time::interval(Duration::from_secs(1));
    let mut refused: u64 = 0;
    loop {
        tokio::select! {
            received = public.recv_from(&mut buf) => {
                let (len, caller) = match received {
                    Ok(received) => received,
                    Err(err) => {
                        debug!(%err, "srt receive");
                        continue;
                    }
                };
                let datagram = &buf[..len];
                let packet = match screen(datagram, passphrase) {
                    Ok(packet) => packet,
                    Err(why) => {
                        refused += 1;
                        if refused.is_power_of_two() || why != Screened::Malformed {
                            warn!(peer = %caller, reason = ?why, refused, "srt datagram refused");
                        }
                        continue;
                    }
                };
                let handshake = matches!(
                    &packet,
                    Packet::Control(c) if matches!(c.control_type, ControlTypes::Handshake(_))
                );
                if !flows.contains_key(&caller) {
                    // Only a handshake starts a caller, and only while there is room.
                    if !handshake || flows.len() >= max_callers {
                        continue;
                    }
                    match open(&public, inner, caller, &callers).await {
                        Ok(flow) => {
                            flows.insert(caller, flow);
                        }
                        Err(err) => {
                            warn!(%err, "srt: no loopback socket for a caller");
                            continue;
                        }
                    }
                }
                if let Some(flow) = flows.get_mut(&caller) {
                    flow.last = Instant::now();
                    flow.established |= !handshake;
                    // A full loopback socket drops the datagram, as the network would.
                    let _ = flow.socket.try_send(datagram);
                }
            }
            _ = sweep.tick() => {
                let now = Instant::now();
                flows.retain(|_, flow| {
                    let idle = if flow.established { IDLE } else { HANDSHAKE_IDLE };
                    let keep = now.duration_since(flow.last) < idle;
                    if !keep {
                        flow.back.abort();
                        if let Ok(local) = flow.socket.local_addr() {
                            callers.set(local.port(), None);
                        }
                    }
                    keep
                });
            }
        }
    }
}

/// A loopback socket for `caller`, connected to srt-tokio's listener, and its way back.
async fn open(
    public: &Arc<UdpSocket>,
    inner: SocketAddr,
    caller: SocketAddr,
    callers: &Callers,
) -> std::io::Result<Flow> {
    let socket = UdpSocket::bind(SocketAddr::new(IpAddr::from([127, 0, 0, 1]), 0)).await?;
    socket.connect(inner).await?;
    let socket = Arc::new(socket);
    callers.set(socket.local_addr()?.port(), Some(caller));
    let back = tokio::spawn({
        let (socket, public) = (socket.clone(), public.clone());
        async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            while let Ok(len) = socket.recv(&mut buf).await {
                let _ = public.send_to(&buf[..len], caller).await;
            }
        }
    });
    Ok(Flow {
        socket,
        back,
        last: Instant::now(),
        established: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_and_truncated_packets_are_malformed_not_panics() {
        assert_eq!(screen(&[], false).err(), Some(Screened::Malformed));
        assert_eq!(screen(&[0x80; 7], false).err(), Some(Screened::Malformed));
        // Every short prefix of a control header, and a NAK with odd loss lists: answered,
        // never a panic out of the screen.
        let mut nak = vec![0x80, 0x03, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        for word in [[0x80, 0, 0, 5], [0, 0, 0, 1], [0xff; 4]] {
            nak.extend_from_slice(&word);
            let _ = screen(&nak, false);
        }
        for len in 0..nak.len() {
            let _ = screen(&nak[..len], true);
        }
    }
}
