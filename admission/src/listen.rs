//! The accept loop every TCP listener shares (RTMP, FTL, HTTP): at most `limit` connections
//! served at once (more wait in the kernel's accept queue), at most `per_ip`'s cap from one
//! client address (more are closed at once), one task each, in a span naming the peer.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tracing::{info_span, warn, Instrument};

use crate::limits::PerIp;

/// Accepts on `listener` until the task is dropped; `serve` runs each connection.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    protocol: &'static str,
    limit: usize,
    per_ip: PerIp,
    serve: F,
) where
    F: Fn(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(limit.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                warn!(%err, protocol, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let place = match per_ip.try_acquire(peer.ip()) {
            Ok(place) => place,
            Err(refused) => {
                if refused.is_power_of_two() {
                    warn!(protocol, %peer, refused, cap = per_ip.limit(),
                        "connection refused: too many from this address");
                }
                continue; // dropping the stream closes it
            }
        };
        let connection = serve(stream, peer);
        tokio::spawn(
            async move {
                connection.await;
                drop((place, permit));
            }
            .instrument(info_span!("conn", protocol, %peer)),
        );
    }
}
