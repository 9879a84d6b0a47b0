//! What every peer (viewer or publisher) shares: its handle in the SFU's table, the datagrams
//! and control messages it is fed, and the plumbing between a str0m `Rtc` and the socket.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use media::ChannelName;
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, IceCreds, Input, Rtc};
use tokio::sync::mpsc;
use tracing::debug;

use crate::egress::{Batch, Path};
use crate::layers::LayerStatus;
use crate::{SessionId, Sfu};

/// Datagrams queued for one peer before new ones are dropped.
pub(crate) const QUEUE: usize = 512;
/// Control messages queued for one peer (HTTP requests on its resource).
pub(crate) const CONTROL_QUEUE: usize = 16;

pub(crate) struct Datagram {
    pub(crate) source: SocketAddr,
    /// Our candidate the datagram was sent to (see [`crate::udp::local_candidate`]).
    pub(crate) destination: SocketAddr,
    pub(crate) data: Vec<u8>,
    pub(crate) at: Instant,
}

/// Requests on a peer's HTTP resource (its `Location`), passed to its task.
pub(crate) enum Control {
    /// `DELETE`: end the session.
    HangUp,
    /// `PATCH` with candidates (trickle ICE).
    Candidates(Vec<Candidate>),
    /// `PATCH` with new credentials (ICE restart): the remote's and our new ones. Boxed: the
    /// queue's slots are as large as the largest message, and this one is rare.
    IceRestart(Box<IceRestart>),
    /// A viewer's layer choice: a track name, or `None` for automatic.
    Layer(Option<String>),
}

pub(crate) struct IceRestart {
    pub(crate) remote: IceCreds,
    pub(crate) local: IceCreds,
}

/// What the SFU keeps about a running peer.
pub(crate) struct PeerHandle {
    pub(crate) datagrams: mpsc::Sender<Datagram>,
    pub(crate) control: mpsc::Sender<Control>,
    pub(crate) channel: ChannelName,
    /// The remote's current ICE ufrag, to tell a trickle PATCH from an ICE restart.
    pub(crate) remote_ufrag: Mutex<String>,
    /// Viewers only: the layer being sent and the choices.
    pub(crate) layers: Option<Arc<Mutex<LayerStatus>>>,
}

impl PeerHandle {
    pub(crate) fn is_publisher(&self) -> bool {
        self.layers.is_none()
    }
}

/// The receiving ends a peer task owns. Dropping it (the task ended, or panicked) takes the
/// peer out of the SFU's table and routes, which frees its viewer or publisher slot.
pub(crate) struct PeerIo {
    pub(crate) datagrams: mpsc::Receiver<Datagram>,
    pub(crate) control: mpsc::Receiver<Control>,
    pub(crate) out: Batch,
    pub(crate) sfu: Sfu,
    pub(crate) id: SessionId,
    /// The remote address the `Rtc` sent to last; bound in the routes when it changes.
    bound: Option<SocketAddr>,
    /// The session's place under its client address's cap of unconnected sessions, given
    /// back when it connects.
    pub(crate) pending: Option<admission::IpPermit>,
}

impl Drop for PeerIo {
    fn drop(&mut self) {
        self.sfu.remove_peer(self.id);
    }
}

impl PeerIo {
    pub(crate) fn new(
        sfu: Sfu,
        id: SessionId,
        datagrams: mpsc::Receiver<Datagram>,
        control: mpsc::Receiver<Control>,
    ) -> Self {
        Self {
            datagrams,
            control,
            out: Batch::new(sfu.inner.egress.clone()),
            sfu,
            id,
            bound: None,
            pending: None,
        }
    }

    /// Feeds one datagram to `rtc`.
    pub(crate) fn receive(&self, rtc: &mut Rtc, d: &Datagram) -> Result<(), &'static str> {
        let Ok(contents) = d.data.as_slice().try_into() else {
            return Ok(()); // not STUN/DTLS/RTP: ignore
        };
        let input = Input::Receive(
            d.at,
            Receive {
                proto: Protocol::Udp,
                source: d.source,
                destination: d.destination,
                contents,
            },
        );
        rtc.handle_input(input).map_err(|err| {
            debug!(%err, "rtc input");
            "protocol error"
        })
    }

    /// Queues one datagram str0m produced; [`PeerIo::flush`] sends what is queued. str0m sends
    /// only to addresses whose STUN checks passed its integrity check (or the pair it
    /// nominated), so the address is bound to this session here, not when a check arrives.
    pub(crate) async fn send(&mut self, t: &str0m::net::Transmit) {
        if self.bound != Some(t.destination) {
            self.bound = Some(t.destination);
            self.sfu.routes().bind(t.destination, self.id);
        }
        self.out
            .push(Path::new(t.source, t.destination), &t.contents)
            .await;
    }

    /// Sends the datagrams of this poll (call when str0m has nothing more to send).
    pub(crate) async fn flush(&mut self) {
        self.out.flush().await;
    }
}

/// Applies the ICE part of a control message; returns false for anything else.
pub(crate) fn apply_ice(rtc: &mut Rtc, control: &Control) -> bool {
    match control {
        Control::Candidates(candidates) => {
            for c in candidates {
                rtc.add_remote_candidate(c.clone());
            }
            true
        }
        Control::IceRestart(restart) => {
            let mut api = rtc.direct_api();
            api.set_remote_ice_credentials(restart.remote.clone());
            api.set_local_ice_credentials(restart.local.clone());
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::{Sfu, WebRtcConfig};

    /// A peer task that panics still gives back its slot and its routes: they go with its
    /// `PeerIo`, which the unwinding task drops.
    #[tokio::test]
    async fn a_panicking_peer_task_releases_its_slot_and_routes() {
        let config = WebRtcConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            ..WebRtcConfig::default()
        };
        let publishers = admission::Publishers::from_config(&BTreeMap::new()).expect("open");
        let admission =
            admission::Admission::new(media::Bus::with_config(Default::default()), publishers);
        let sfu = Sfu::start(config, admission).await.expect("sfu");
        let name = media::ChannelName::new("c").expect("name");
        let status = std::sync::Arc::default();
        let (_, io) = crate::http::register(&sfu, name, "ufrag".into(), "r".into(), Some(status));
        sfu.routes().bind(([192, 0, 2, 1], 9).into(), io.id);
        assert_eq!((sfu.viewers(), sfu.bound_addresses()), (1, 1));
        let task = tokio::spawn(async move {
            let _io = io;
            panic!("a bug in a peer task");
        });
        assert!(task.await.is_err(), "the task panicked");
        assert_eq!((sfu.viewers(), sfu.bound_addresses()), (0, 0));
    }
}
