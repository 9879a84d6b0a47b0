//! SRT ingest (srt-tokio): a listener that admits publishers by their stream id, refuses the
//! rest with SRT rejection codes, and demuxes each publisher's MPEG-TS onto the bus.

mod connection;
mod front;
mod streamid;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use media::ChannelName;
use serde::Deserialize;
use srt_protocol::settings::KeySettings;
use srt_tokio::access::{RejectReason, ServerRejectReason};
use srt_tokio::options::Passphrase;
use srt_tokio::{ConnectionRequest, SrtListener};
use tokio::net::UdpSocket;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::{info, info_span, warn, Instrument};

use crate::limits::{IpPermit, PerIp};
use crate::{Ingest, Refusal};
use streamid::Mode;

/// SRT listener settings.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SrtConfig {
    /// UDP address to listen on.
    pub listen: SocketAddr,
    /// Receive latency (the time SRT has to recover a lost packet), in milliseconds.
    pub latency_ms: u64,
    /// Encryption passphrase (10 to 79 characters) callers must use; none: unencrypted. A
    /// secret: set it in the config file or `STARLING_SRT__PASSPHRASE`, never on the command line.
    pub passphrase: Option<String>,
    /// Publishers served at once; more are refused with "overloaded".
    pub max_connections: usize,
    /// Publishers one client address may have at once; more are refused with "overloaded"
    /// (0: no cap).
    pub max_connections_per_ip: usize,
    /// Seconds without media after which a publisher is dropped and its channel ends.
    pub idle_timeout_secs: u64,
}

impl Default for SrtConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 9000)),
            latency_ms: 200,
            passphrase: None,
            max_connections: 64,
            max_connections_per_ip: 4,
            idle_timeout_secs: 10,
        }
    }
}

// The passphrase never appears in logs or debug output.
impl std::fmt::Debug for SrtConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SrtConfig")
            .field("listen", &self.listen)
            .field("latency_ms", &self.latency_ms)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<set>"))
            .field("max_connections", &self.max_connections)
            .field("max_connections_per_ip", &self.max_connections_per_ip)
            .field("idle_timeout_secs", &self.idle_timeout_secs)
            .finish()
    }
}

impl SrtConfig {
    fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }

    /// Checks what cannot be checked per caller: the passphrase's length.
    pub fn validate(&self) -> Result<(), String> {
        match &self.passphrase {
            Some(p) if Passphrase::try_from(p.clone()).is_err() => {
                Err("srt.passphrase must be 10 to 79 characters".to_owned())
            }
            _ => Ok(()),
        }
    }
}

/// Serves SRT on `config.listen` until the task is dropped. The public port is the front's
/// (see [`front`]), which relays what it lets through to srt-tokio's listener on loopback.
/// srt-tokio 0.4's listener task can still stop on a caller; it is bound again when it does.
pub async fn serve(config: SrtConfig, ingest: Ingest) -> std::io::Result<()> {
    let config = Arc::new(config);
    let permits = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let per_ip = ingest.limits().per_ip("srt", config.max_connections_per_ip);
    let public = UdpSocket::bind(config.listen).await?;
    let mut inner_socket = Some(UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await?);
    let inner = inner_socket
        .as_ref()
        .map_or(Ok(config.listen), UdpSocket::local_addr)?;
    let callers = front::Callers::default();
    let _front = AbortOnDrop(tokio::spawn(front::run(
        public,
        inner,
        config.passphrase.is_some(),
        config.max_connections * 2 + 16,
        callers.clone(),
    )));
    info!(listen = %config.listen, "srt listening");
    loop {
        let socket = match inner_socket.take() {
            Some(socket) => socket,
            None => match UdpSocket::bind(inner).await {
                Ok(socket) => socket,
                Err(err) => {
                    warn!(%err, "srt listener cannot bind again; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            },
        };
        let (listener, mut incoming) = SrtListener::builder()
            .latency(Duration::from_millis(config.latency_ms))
            .set(|o| o.session.peer_idle_timeout = config.idle_timeout())
            .socket(socket)
            .bind(inner)
            .await?;
        while let Some(request) = incoming.incoming().next().await {
            let remote = callers.real(request.remote());
            admit(request, remote, &config, &ingest, (&permits, &per_ip)).await;
        }
        drop(listener);
        warn!("srt listener stopped (a caller's handshake broke it); listening again");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Aborts a task when dropped (the SRT front ends with `serve`).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Accepts or refuses one caller; an accepted publisher runs in its own task.
async fn admit(
    request: ConnectionRequest,
    remote: SocketAddr,
    config: &Arc<SrtConfig>,
    ingest: &Ingest,
    permits: (&Arc<Semaphore>, &PerIp),
) {
    let span = info_span!("srt", peer = %remote);
    let id = request.stream_id().map(|s| s.to_string());
    let decided = match decide(id.as_deref(), remote, config, ingest, permits) {
        Ok((channel, permit)) => match ingest.claim(&channel).await {
            Ok(claim) => Ok((channel, permit, claim)),
            Err(refusal) => Err((ServerRejectReason::Conflict, refusal.to_string())),
        },
        Err(refused) => Err(refused),
    };
    let (channel, permit, claim) = match decided {
        Ok(admitted) => admitted,
        Err((reason, why)) => {
            span.in_scope(|| {
                warn!(reason = %why, code = reason as i32 - 1000, "srt publish refused");
            });
            // Best effort: the caller may already be gone.
            let _ = request.reject(RejectReason::Server(reason)).await;
            return;
        }
    };
    let keys = config.passphrase.as_ref().and_then(|p| {
        Passphrase::try_from(p.clone())
            .ok()
            .map(|passphrase| KeySettings {
                // The caller's own key length: ffmpeg sends "unspecified" unless pbkeylen is set.
                key_size: request.key_size(),
                passphrase,
            })
    });
    let (config, ingest) = (config.clone(), ingest.clone());
    tokio::spawn(
        async move {
            // Accepting completes the handshake; a caller with the wrong passphrase fails here,
            // before anything goes live.
            match request.accept(keys).await {
                Ok(socket) => match ingest.start_authorized(channel) {
                    Ok(publish) => connection::run(socket, publish, &config).await,
                    // Another publisher got in during the handshake; closing tells this one.
                    Err(err) => warn!(%err, "srt publish refused after the handshake"),
                },
                Err(err) => warn!(%err, "srt handshake failed (passphrase?)"),
            }
            drop(claim);
            drop(permit);
        }
        .instrument(span),
    );
}

/// The channel a caller may publish to, or the rejection it gets (with why, for the log).
fn decide(
    id: Option<&str>,
    remote: SocketAddr,
    config: &SrtConfig,
    ingest: &Ingest,
    (permits, per_ip): (&Arc<Semaphore>, &PerIp),
) -> Result<(ChannelName, (OwnedSemaphorePermit, IpPermit)), (ServerRejectReason, String)> {
    let wanted =
        streamid::parse(id).map_err(|err| (ServerRejectReason::BadRequest, err.to_string()))?;
    if wanted.mode != Mode::Publish {
        let why = "only publishing (m=publish) is served over SRT".to_owned();
        return Err((ServerRejectReason::Forbidden, why));
    }
    let permit = permits.clone().try_acquire_owned().map_err(|_| {
        let why = format!("{} publishers already", config.max_connections);
        (ServerRejectReason::Overload, why)
    })?;
    let place = per_ip.try_acquire(remote.ip()).map_err(|_| {
        let why = format!("{} publishers from this address already", per_ip.limit());
        (ServerRejectReason::Overload, why)
    })?;
    let channel = ingest
        .authorize(&wanted.channel, wanted.key.as_deref())
        .map_err(|refusal| {
            let reason = match refusal {
                Refusal::Auth(_) => ServerRejectReason::Unauthorized,
                Refusal::Live(_) | Refusal::Elsewhere(_) => ServerRejectReason::Conflict,
                _ => ServerRejectReason::Forbidden,
            };
            (reason, refusal.to_string())
        })?;
    Ok((channel, (permit, place)))
}

/// Entry points for the fuzz targets (`fuzz/`); not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// A datagram on the SRT port, screened as the front screens it (with and without a
    /// passphrase): whatever comes, an answer, never a panic.
    pub fn screen(datagram: &[u8]) {
        let _ = super::front::screen(datagram, false);
        let _ = super::front::screen(datagram, true);
    }
}
