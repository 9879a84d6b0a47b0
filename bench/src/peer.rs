//! One str0m peer on its own loopback UDP socket: the offer/answer over HTTP and the I/O loop.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use str0m::change::{SdpAnswer, SdpPendingOffer};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;

use crate::http;

pub struct Peer {
    pub rtc: Rtc,
    socket: UdpSocket,
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
            local,
            buf: vec![0; 2048],
            resource,
        })
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
                received = self.socket.recv_from(&mut self.buf) => {
                    let (n, source) = received?;
                    let Ok(contents) = self.buf[..n].try_into() else { continue };
                    self.rtc.handle_input(Input::Receive(
                        Instant::now(),
                        Receive { proto: Protocol::Udp, source, destination: self.local, contents },
                    ))?;
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
