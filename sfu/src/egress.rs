//! Sending on the shared UDP socket in batches: the datagrams one peer's poll produces for one
//! destination go out in a single `sendmsg` with UDP GSO (a frame's RTP packets are all
//! MTU-sized but the last, which is what GSO wants), where the kernel supports it, else one by
//! one. One syscall and one trip through the stack per frame instead of per packet.

use std::cell::Cell;
use std::io::{self, IoSliceMut};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use quinn_udp::{RecvMeta, Transmit, UdpSocketState};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tracing::{trace, warn};

/// A GSO send carries at most this many bytes (the UDP length limit, with headroom).
const MAX_BATCH_BYTES: usize = 60_000;

thread_local! {
    /// A batch buffer between batches, for the next batch on this thread: a peer holds one only
    /// while it fills and sends it, so a thousand idle viewers hold none, and a frame's batch
    /// does not regrow a buffer from nothing (a frame at 2.5 Mbit/s is ~10 packets).
    static SPARE: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

/// Where a datagram goes: to the peer's address, from our candidate it sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Path {
    pub(crate) local: SocketAddr,
    pub(crate) remote: SocketAddr,
}

impl Path {
    pub(crate) fn new(local: SocketAddr, remote: SocketAddr) -> Self {
        Self { local, remote }
    }
}

/// The socket every peer sends on, with what the kernel supports on it.
pub(crate) struct Egress {
    socket: Arc<UdpSocket>,
    state: UdpSocketState,
    /// The socket is IPv6 (dual stack): IPv4 addresses go out IPv4-mapped.
    ipv6: bool,
    /// The socket is bound to every address and our candidates are the host's own: each
    /// datagram leaves from the candidate its peer sent to (IP_PKTINFO), so a host with several
    /// addresses answers from the one the peer used.
    pin_source: bool,
    /// Bytes handed to the kernel so far (UDP payloads), for the node's bitrate out.
    sent: AtomicU64,
}

impl Egress {
    pub(crate) fn new(socket: Arc<UdpSocket>, pin_source: bool) -> io::Result<Self> {
        let state = UdpSocketState::new((&*socket).into())?;
        let ipv6 = socket.local_addr()?.is_ipv6();
        Ok(Self {
            socket,
            state,
            ipv6,
            pin_source,
            sent: AtomicU64::new(0),
        })
    }

    /// Bytes sent so far.
    pub(crate) fn bytes_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// How many datagrams one read may carry (UDP GRO); 1 without GRO.
    pub(crate) fn gro_segments(&self) -> usize {
        self.state.gro_segments()
    }

    /// One read from the socket, GRO-aware (see [`UdpSocketState::recv`]).
    pub(crate) fn recv(
        &self,
        socket: &UdpSocket,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> io::Result<usize> {
        self.state.recv(socket.into(), bufs, meta)
    }

    /// An address as this socket takes it.
    fn wire(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(v4) if self.ipv6 => IpAddr::V6(v4.to_ipv6_mapped()),
            ip => ip,
        }
    }

    async fn send(&self, path: Path, contents: &[u8], segment_size: Option<usize>) {
        let transmit = Transmit {
            destination: SocketAddr::new(self.wire(path.remote.ip()), path.remote.port()),
            ecn: None,
            contents,
            segment_size,
            src_ip: self.pin_source.then(|| self.wire(path.local.ip())),
        };
        let transmit = &transmit;
        let sent = self
            .socket
            .async_io(Interest::WRITABLE, || {
                self.state.try_send((&*self.socket).into(), transmit)
            })
            .await;
        match sent {
            // One add per batch (a frame's packets to one viewer), not per packet.
            Ok(()) => {
                self.sent
                    .fetch_add(transmit.contents.len() as u64, Ordering::Relaxed);
            }
            // Loss on a full or failing socket is left to RTP to recover.
            Err(err) => trace!(%err, "udp send"),
        }
    }
}

/// One peer's datagrams waiting to go out together.
pub(crate) struct Batch {
    egress: Arc<Egress>,
    buf: Vec<u8>,
    path: Option<Path>,
    segment: usize,
    count: usize,
    /// A shorter datagram ends a GSO batch: only the last segment may be short.
    closed: bool,
}

impl Batch {
    pub(crate) fn new(egress: Arc<Egress>) -> Self {
        Self {
            egress,
            buf: Vec::new(),
            path: None,
            segment: 0,
            count: 0,
            closed: false,
        }
    }

    /// Adds a datagram; sends what was waiting first if this one cannot join it.
    pub(crate) async fn push(&mut self, path: Path, datagram: &[u8]) {
        self.make_room(path, datagram.len()).await;
        self.buf.extend_from_slice(datagram);
        self.added(datagram.len());
    }

    /// Adds a datagram of `len` bytes that `fill` writes in place (no copy in between); a
    /// datagram `fill` refuses (returns false) is left out.
    pub(crate) async fn push_with(
        &mut self,
        path: Path,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> bool,
    ) {
        self.make_room(path, len).await;
        let start = self.buf.len();
        self.buf.resize(start + len, 0);
        if fill(&mut self.buf[start..]) {
            self.added(len);
        } else {
            self.buf.truncate(start);
        }
    }

    /// Sends what was waiting if a datagram of `len` bytes on `path` cannot join it.
    async fn make_room(&mut self, path: Path, len: usize) {
        let fits = self.count > 0
            && !self.closed
            && self.path == Some(path)
            && len <= self.segment
            && self.count < self.egress.state.max_gso_segments()
            && self.buf.len() + len <= MAX_BATCH_BYTES;
        if !fits {
            self.flush().await;
            self.path = Some(path);
            self.segment = len;
            if self.buf.capacity() == 0 {
                // Another peer on this thread may hold the spare while it waits to send; then
                // this batch gets its own, which becomes the spare after.
                self.buf = SPARE.take();
                self.buf.reserve_exact(MAX_BATCH_BYTES);
            }
        }
    }

    fn added(&mut self, len: usize) {
        self.count += 1;
        self.closed = len < self.segment;
    }

    /// Sends what is waiting.
    pub(crate) async fn flush(&mut self) {
        let Some(path) = self.path.take() else {
            return;
        };
        if self.count > 0 {
            let segment_size = (self.count > 1).then_some(self.segment);
            self.egress.send(path, &self.buf, segment_size).await;
        }
        let mut buf = std::mem::take(&mut self.buf);
        buf.clear();
        let spare = SPARE.take();
        SPARE.set(if spare.capacity() >= buf.capacity() {
            spare
        } else {
            buf
        });
        self.count = 0;
        self.closed = false;
    }
}

/// Logs once at start whether batches go out with GSO.
pub(crate) fn log_capabilities(egress: &Egress) {
    let segments = egress.state.max_gso_segments();
    if segments > 1 {
        tracing::info!(segments, "udp: sending with GSO");
    } else {
        warn!("udp: GSO is not available; sending one datagram per syscall");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn receive_all(socket: &UdpSocket) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0; 2048];
        while let Ok(Ok(n)) =
            tokio::time::timeout(Duration::from_millis(200), socket.recv(&mut buf)).await
        {
            got.push(buf[..n].to_vec());
        }
        got
    }

    #[tokio::test]
    async fn a_batch_arrives_as_the_datagrams_it_was_given_in_order() {
        let sender = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let a = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let b = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
        let (to_a, to_b) = (a.local_addr().expect("a"), b.local_addr().expect("b"));
        let from = sender.local_addr().expect("from");
        let mut batch = Batch::new(Arc::new(Egress::new(sender, false).expect("egress")));

        // A frame: three full packets and a short last one; then one that must not join
        // (longer than the segment), then another destination.
        let sent_a: Vec<Vec<u8>> = [1200, 1200, 1200, 300, 1250]
            .iter()
            .enumerate()
            .map(|(i, &len)| vec![i as u8; len])
            .collect();
        for d in &sent_a {
            batch.push(Path::new(from, to_a), d).await;
        }
        batch.push(Path::new(from, to_b), &[9; 100]).await;
        batch.flush().await;
        batch.flush().await; // nothing left: sends nothing

        assert_eq!(receive_all(&a).await, sent_a);
        assert_eq!(receive_all(&b).await, vec![vec![9; 100]]);
    }

    #[tokio::test]
    async fn a_coalesced_read_splits_back_into_the_datagrams_sent() {
        let sender = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let receiver = Arc::new(UdpSocket::bind("127.0.0.1:0").await.expect("bind"));
        let to = receiver.local_addr().expect("addr");
        let inbound = Egress::new(receiver.clone(), false).expect("egress");
        let from = sender.local_addr().expect("from");
        let mut batch = Batch::new(Arc::new(Egress::new(sender, false).expect("egress")));
        let sent: Vec<Vec<u8>> = (0..5u8)
            .map(|i| vec![i; if i == 4 { 80 } else { 1000 }])
            .collect();
        for d in &sent {
            batch.push(Path::new(from, to), d).await;
        }
        batch.flush().await;

        // The receive path the SFU uses: one read may hold several datagrams, `stride` apart.
        let mut buf = vec![0u8; 2048 * inbound.gro_segments().max(1)];
        let mut got = Vec::new();
        while got.len() < sent.len() {
            let mut meta = [RecvMeta::default()];
            let read = tokio::time::timeout(
                Duration::from_secs(2),
                receiver.async_io(Interest::READABLE, || {
                    let mut bufs = [IoSliceMut::new(&mut buf)];
                    inbound.recv(&receiver, &mut bufs, &mut meta)
                }),
            )
            .await;
            assert!(matches!(read, Ok(Ok(_))), "{read:?}");
            let [meta] = meta;
            got.extend(buf[..meta.len].chunks(meta.stride).map(<[u8]>::to_vec));
        }
        assert_eq!(got, sent);
    }

    /// A wildcard socket answers from the address the peer used: here 127.0.0.2 and 127.0.0.3
    /// (both on loopback), from an IPv4 socket and from a dual-stack IPv6 one.
    #[tokio::test]
    async fn a_wildcard_socket_sends_from_the_local_address_of_the_path() {
        for wildcard in ["0.0.0.0:0", "[::]:0"] {
            let sender = Arc::new(UdpSocket::bind(wildcard).await.expect("bind"));
            let port = sender.local_addr().expect("port").port();
            let batch_egress = Arc::new(Egress::new(sender, true).expect("egress"));
            let receiver = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
            let to = receiver.local_addr().expect("addr");
            for local in [[127, 0, 0, 2], [127, 0, 0, 3]] {
                let mut batch = Batch::new(batch_egress.clone());
                let local = SocketAddr::from((local, port));
                batch.push(Path::new(local, to), b"hello").await;
                batch.flush().await;
                let mut buf = [0u8; 64];
                let (n, from) =
                    tokio::time::timeout(Duration::from_secs(2), receiver.recv_from(&mut buf))
                        .await
                        .expect("a datagram")
                        .expect("recv");
                assert_eq!(&buf[..n], b"hello");
                assert_eq!(from, local, "sent from {wildcard}");
            }
        }
    }
}
