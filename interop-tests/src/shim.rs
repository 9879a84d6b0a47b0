//! A UDP bottleneck between one WebRTC client and the server, on loopback: packets towards the
//! client pass a rate limit with a bounded queue (drop-tail past `MAX_QUEUE_DELAY`), like a slow
//! access link, and optionally every n-th of them is lost. The client is pointed at
//! [`Shim::addr`] by rewriting the answer's candidate.

use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

/// Longest a packet waits in the bottleneck's queue before it is dropped instead.
const MAX_QUEUE_DELAY: Duration = Duration::from_millis(150);

/// A running shim; its threads stop when it is dropped.
pub struct Shim {
    addr: SocketAddr,
    rate_bps: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    lose_every: Arc<AtomicU64>,
    lost: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

impl Shim {
    /// Relays between a client (whoever sends to [`Shim::addr`] first) and `server`.
    pub fn start(server: SocketAddr) -> Result<Self> {
        let front = UdpSocket::bind("127.0.0.1:0")?;
        let back = UdpSocket::bind("127.0.0.1:0")?;
        back.connect(server)?;
        for s in [&front, &back] {
            s.set_read_timeout(Some(Duration::from_millis(100)))?;
        }
        let shim = Self {
            addr: front.local_addr()?,
            rate_bps: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            lose_every: Arc::new(AtomicU64::new(0)),
            lost: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let client: Arc<Mutex<Option<SocketAddr>>> = Arc::default();
        let (front, back) = (Arc::new(front), Arc::new(back));

        // Client -> server: untouched.
        let (f, b, c, stop) = (
            front.clone(),
            back.clone(),
            client.clone(),
            shim.stop.clone(),
        );
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = f.recv_from(&mut buf) {
                    *c.lock().unwrap() = Some(from);
                    let _ = b.send(&buf[..n]);
                }
            }
        });

        // Server -> client: through the bottleneck.
        let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
        let (b, rate, dropped, stop) = (
            back.clone(),
            shim.rate_bps.clone(),
            shim.dropped.clone(),
            shim.stop.clone(),
        );
        let (lose_every, lost) = (shim.lose_every.clone(), shim.lost.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            let mut next_free = Instant::now();
            let mut seen = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Ok(n) = b.recv(&mut buf) else { continue };
                seen += 1;
                let every = lose_every.load(Ordering::Relaxed);
                if every > 0 && seen.is_multiple_of(every) {
                    lost.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let now = Instant::now();
                let bps = rate.load(Ordering::Relaxed);
                let depart = if bps == 0 { now } else { next_free.max(now) };
                if depart.duration_since(now) > MAX_QUEUE_DELAY {
                    dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                if let Some(us) = (n as u64 * 8 * 1_000_000).checked_div(bps) {
                    next_free = depart + Duration::from_micros(us);
                }
                let _ = tx.send((depart, buf[..n].to_vec()));
            }
        });
        let (f, stop) = (front, shim.stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((depart, packet)) = rx.recv_timeout(Duration::from_millis(100)) else {
                    continue;
                };
                if let Some(wait) = depart.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                if let Some(to) = *client.lock().unwrap() {
                    let _ = f.send_to(&packet, to);
                }
            }
        });
        Ok(shim)
    }

    /// Where the client should send.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Limits server -> client traffic to `bps` bits per second; 0 removes the limit.
    pub fn set_rate(&self, bps: u64) {
        self.rate_bps.store(bps, Ordering::Relaxed);
    }

    /// Loses every `n`th server -> client packet (0: none), like a lossy radio link.
    pub fn lose_every(&self, n: u64) {
        self.lose_every.store(n, Ordering::Relaxed);
    }

    /// Packets lost on purpose so far.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Packets dropped by the bottleneck so far.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

impl Drop for Shim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A shim viewer's state: its video stats, and its session's `Location` (see
/// [`crate::Browser::watch_through`]).
pub const SHIM_STATE: &str = "return JSON.parse(JSON.stringify(window.v));";

/// A bare WHEP viewer whose answer points at the shim instead of the server; its video stats
/// land in `window.v.video` every 500 ms, the session's `Location` in `window.v.loc`.
pub(crate) fn viewer_script(channel: &str, shim: &Shim) -> String {
    r#"
      window.v = {};
      (async () => {
        const pc = new RTCPeerConnection();
        pc.addTransceiver("video", { direction: "recvonly" });
        pc.addTransceiver("audio", { direction: "recvonly" });
        const el = document.createElement("video");
        el.muted = true; el.autoplay = true; document.body.appendChild(el);
        pc.ontrack = e => {
          if (e.track.kind === "video") { el.srcObject = new MediaStream([e.track]); el.play().catch(() => {}); }
        };
        await pc.setLocalDescription(await pc.createOffer());
        await new Promise(r => {
          if (pc.iceGatheringState === "complete") return r();
          pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") r(); };
          setTimeout(r, 1000);
        });
        const res = await fetch("/whep/CHANNEL", {
          method: "POST", headers: { "Content-Type": "application/sdp" }, body: pc.localDescription.sdp,
        });
        window.v.loc = res.headers.get("Location");
        const sdp = (await res.text()).replace(/(a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1 )\d+/g, "$1" + PORT);
        await pc.setRemoteDescription({ type: "answer", sdp });
        setInterval(async () => {
          (await pc.getStats()).forEach(s => {
            if (s.type === "inbound-rtp" && s.kind === "video") {
              window.v.video = {
                framesDecoded: s.framesDecoded, frameWidth: s.frameWidth, nackCount: s.nackCount,
                packetsLost: s.packetsLost, packetsReceived: s.packetsReceived,
                retransmittedPacketsReceived: s.retransmittedPacketsReceived,
                freezeCount: s.freezeCount, pliCount: s.pliCount, framesDropped: s.framesDropped,
              };
            }
          });
        }, 500);
      })();
      return true;
    "#
    .replace("CHANNEL", channel)
    .replace("PORT", &shim.addr().port().to_string())
}
