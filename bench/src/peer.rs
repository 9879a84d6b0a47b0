//! One str0m peer on its own loopback UDP socket: the offer/answer over HTTP and the I/O loop.

use std::io::IoSliceMut;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use quinn_udp::{RecvMeta, UdpSocketState};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::io::Interest;
use tokio::net::UdpSocket;

use crate::http;

/// A light viewer's count of the RTP packets it lets pass without decrypting them: sequence
/// numbers are in the clear in SRTP, so loss needs no keys.
pub struct Skim {
    measuring: Arc<AtomicBool>,
    pub packets: u64,
    first: Option<u64>,
    pub last: u64,
    roc: u64,
    last16: Option<u16>,
}

impl Skim {
    pub fn new(measuring: Arc<AtomicBool>) -> Self {
        Self {
            measuring,
            packets: 0,
            first: None,
            last: 0,
            roc: 0,
            last16: None,
        }
    }

    /// The sequence numbers the counted packets spanned.
    pub fn span(&self) -> u64 {
        self.first.map_or(0, |first| self.last - first + 1)
    }

    /// Counts `datagram` if it is RTP (not RTCP, STUN or DTLS); returns whether it was.
    fn count(&mut self, datagram: &[u8]) -> bool {
        let is_rtp = datagram.len() >= 12
            && datagram[0] >> 6 == 2
            && !(64..=95).contains(&(datagram[1] & 0x7f));
        if !is_rtp {
            return false;
        }
        let seq = u16::from_be_bytes([datagram[2], datagram[3]]);
        if self
            .last16
            .is_some_and(|last| seq < last && last - seq > 0x8000)
        {
            self.roc += 1;
        }
        self.last16 = Some(seq);
        if self.measuring.load(Ordering::Relaxed) {
            let extended = (self.roc << 16) | u64::from(seq);
            self.first.get_or_insert(extended);
            self.last = self.last.max(extended);
            self.packets += 1;
        }
        true
    }
}

/// One read: (bytes, datagram stride, source). Without GRO the stride is the whole read.
async fn read(
    socket: &UdpSocket,
    gro: Option<&UdpSocketState>,
    buf: &mut [u8],
) -> std::io::Result<(usize, usize, SocketAddr)> {
    let Some(state) = gro else {
        let (n, source) = socket.recv_from(buf).await?;
        return Ok((n, n, source));
    };
    socket
        .async_io(Interest::READABLE, || {
            let mut meta = [RecvMeta::default()];
            state.recv(socket.into(), &mut [IoSliceMut::new(buf)], &mut meta)?;
            Ok((meta[0].len, meta[0].stride, meta[0].addr))
        })
        .await
}

pub struct Peer {
    pub rtc: Rtc,
    /// Set for a light viewer: RTP is counted here and never reaches str0m.
    pub skim: Option<Skim>,
    socket: UdpSocket,
    /// Set when the socket reads with UDP GRO (see [`Peer::use_gro`]).
    gro: Option<UdpSocketState>,
    local: SocketAddr,
    buf: Vec<u8>,
    /// The session's resource, for the DELETE at the end.
    pub resource: String,
}

impl Peer {
    /// Binds a socket and adds it as our host candidate.
    pub async fn bind(mut rtc: Rtc) -> Result<(Rtc, UdpSocket, SocketAddr)> {
        let socket = UdpSocket::bind("127.0.0.1:0").await?;
        let local = socket.local_addr()?;
        rtc.add_local_candidate(Candidate::host(local, "udp")?);
        Ok((rtc, socket, local))
    }

    /// POSTs the offer to `endpoint` and applies the answer.
    pub async fn negotiate(
        mut rtc: Rtc,
        socket: UdpSocket,
        local: SocketAddr,
        offer: String,
        pending: SdpPendingOffer,
        endpoint: &str,
    ) -> Result<Self> {
        let reply = http::send("POST", endpoint, &offer).await?;
        if reply.status != 201 {
            bail!("POST {endpoint}: {} {}", reply.status, reply.body.trim());
        }
        let answer = SdpAnswer::from_sdp_string(&reply.body).context("answer")?;
        rtc.sdp_api().accept_answer(pending, answer)?;
        let resource = format!(
            "{}{}",
            http::origin(endpoint),
            reply.location.context("no Location")?
        );
        Ok(Self {
            rtc,
            socket,
            gro: None,
            local,
            buf: vec![0; 2048],
            resource,
            skim: None,
        })
    }

    /// Reads with UDP GRO: the kernel hands over a GSO batch from the server as one buffer,
    /// as a NIC would take it, instead of charging the sender for delivering every datagram
    /// into this socket on loopback.
    pub fn use_gro(&mut self) -> Result<()> {
        let state = UdpSocketState::new((&self.socket).into())?;
        self.buf = vec![0; 2048 * state.gro_segments().max(1)];
        self.gro = Some(state);
        Ok(())
    }

    /// Runs the connection until `until`, handing every event to `on_event`.
    pub async fn run_until(
        &mut self,
        until: Instant,
        on_event: &mut impl FnMut(&mut Rtc, Event),
    ) -> Result<()> {
        loop {
            let timeout = match self.rtc.poll_output()? {
                Output::Timeout(t) => t,
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                    continue;
                }
                Output::Event(event) => {
                    on_event(&mut self.rtc, event);
                    continue;
                }
            };
            if !self.rtc.is_alive() {
                bail!("connection closed");
            }
            let now = Instant::now();
            if now >= until {
                return Ok(());
            }
            if timeout <= now {
                self.rtc.handle_input(Input::Timeout(now))?;
                continue;
            }
            let wait = timeout.min(until) - now;
            tokio::select! {
                received = read(&self.socket, self.gro.as_ref(), &mut self.buf) => {
                    let (len, stride, source) = received?;
                    for datagram in self.buf[..len].chunks(stride.max(1)) {
                        if self.skim.as_mut().is_some_and(|s| s.count(datagram)) {
                            continue;
                        }
                        let Ok(contents) = datagram.try_into() else { continue };
                        self.rtc.handle_input(Input::Receive(
                            Instant::now(),
                            Receive { proto: Protocol::Udp, source, destination: self.local, contents },
                        ))?;
                    }
                }
                _ = tokio::time::sleep(wait) => {
                    self.rtc.handle_input(Input::Timeout(Instant::now()))?;
                }
            }
        }
    }

    pub async fn hang_up(mut self) {
        self.rtc.disconnect();
        let _ = http::send("DELETE", &self.resource, "").await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rtp(seq: u16) -> Vec<u8> {
        let mut p = vec![0x80, 96, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p
    }

    #[test]
    fn skim_counts_rtp_across_a_sequence_wrap_and_lets_the_rest_pass() {
        let mut skim = Skim::new(Arc::new(AtomicBool::new(true)));
        for seq in [65_533, 65_534, 65_535, 1, 2] {
            assert!(skim.count(&rtp(seq)));
        }
        // An RTCP receiver report, a STUN request and a DTLS record go on to str0m.
        assert!(!skim.count(&[0x81, 201, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0]));
        assert!(!skim.count(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, 0, 0, 0, 0]));
        assert!(!skim.count(&[22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
        assert_eq!((skim.packets, skim.span()), (5, 6), "seq 0 was lost");
    }
}
