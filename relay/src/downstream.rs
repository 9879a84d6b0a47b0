//! Who connects to this node's relay: other nodes (and outside MoQ clients the operator
//! trusts), already authenticated by the TLS handshake. A MoQ session reads this node's edge
//! origin; a keyframe connection carries keyframe requests for channels this node serves.

use std::sync::Arc;

use media::ChannelName;
use moq_net::origin;
use tracing::{debug, info};
use web_transport_quinn::quinn;

use crate::endpoint::{self, CONTROL_ALPN};
use crate::metrics::{inc, Held};
use crate::peers::MAX_CONTROL_BYTES;
use crate::Shared;

/// Connections at once from downstream (nodes and clients); more are refused.
const MAX_CONNECTIONS: usize = 1024;
/// Keyframe requests a connection may have in flight.
const MAX_CONTROL_STREAMS: usize = 16;

/// Accepts connections until the endpoint closes.
pub(crate) async fn accept(shared: Arc<Shared>, edge: origin::Producer) {
    while let Some(incoming) = shared.endpoint.accept().await {
        if shared.endpoint.open_connections() > MAX_CONNECTIONS {
            incoming.refuse();
            continue;
        }
        let (shared, edge) = (shared.clone(), edge.clone());
        tokio::spawn(async move {
            let remote = incoming.remote_address();
            let conn = match incoming.await {
                Ok(conn) => conn,
                Err(err) => {
                    // A stranger's certificate ends here, in the handshake.
                    info!(%remote, %err, "relay: connection refused");
                    return;
                }
            };
            if endpoint::alpn(&conn).as_deref() == Some(CONTROL_ALPN.as_bytes()) {
                control(&shared, conn).await;
            } else {
                session(&shared, &edge, conn).await;
            }
        });
    }
}

async fn session(shared: &Shared, edge: &origin::Producer, conn: quinn::Connection) {
    let remote = conn.remote_address();
    let accepted = moq_net::Server::new()
        .with_publisher(edge.consume())
        .accept(
            std::time::Instant::now(),
            web_transport_quinn::Session::raw(conn),
        )
        .await;
    let (session, driver) = match accepted {
        Ok(ok) => ok,
        Err(err) => {
            debug!(%remote, %err, "relay: MoQ setup failed");
            return;
        }
    };
    let _held = Held::new(&shared.metrics.downstream_sessions);
    debug!(%remote, version = %session.version(), "relay: downstream session");
    tokio::spawn(moq_net::time::run(driver));
    let why = session.closed().await;
    debug!(%remote, %why, "relay: downstream session ended");
}

/// Keyframe requests: one unidirectional stream each, `channel track`.
async fn control(shared: &Shared, conn: quinn::Connection) {
    let permits = Arc::new(tokio::sync::Semaphore::new(MAX_CONTROL_STREAMS));
    while let Ok(mut stream) = conn.accept_uni().await {
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let _ = stream.stop(0u32.into());
            continue;
        };
        let bus = shared.bus.clone();
        let metrics = shared.metrics.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let Ok(bytes) = stream.read_to_end(MAX_CONTROL_BYTES).await else {
                return;
            };
            let Some((channel, track)) = parse_request(&bytes) else {
                return;
            };
            inc(&metrics.keyframe_requests_down);
            debug!(%channel, %track, "relay: keyframe request from downstream");
            if let Some(track) = bus.subscribe(&channel).and_then(|b| b.peek_track(&track)) {
                track.request_keyframe();
            }
        });
    }
}

/// `channel track` with a valid channel and track name.
pub(crate) fn parse_request(bytes: &[u8]) -> Option<(ChannelName, String)> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (channel, track) = text.split_once(' ')?;
    let channel = ChannelName::new(channel).ok()?;
    crate::catalog::valid_track_name(track).then(|| (channel, track.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_name_a_channel_and_a_track() {
        let (channel, track) = parse_request(b"alice video").expect("valid");
        assert_eq!((channel.as_str(), track.as_str()), ("alice", "video"));
        for bad in [
            &b"alice"[..],
            b"alice ../x",
            b"../a video",
            b"\xff video",
            b"",
        ] {
            assert!(parse_request(bad).is_none(), "{bad:?}");
        }
    }
}
