//! One webrtc-rs peer connection as a WHIP/WHEP client: host candidates on the route to the
//! server only, the DTLS certificate and cipher suites the test asks for, and the offer/answer
//! exchange over HTTP.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rtc::crypto::{self, SignatureScheme};
use rtc::dtls::cipher_suite::CipherSuiteId;
use rtc::ice::mdns::MulticastDnsMode;
use rtc::interceptor::Registry;
use rtc::peer_connection::certificate::{CertificateParams, RTCCertificate};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::MediaEngine;
use rtc::peer_connection::configuration::setting_engine::SettingEngineBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use tokio::sync::{mpsc, watch};
use webrtc::media_stream::track_remote::TrackRemote;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};

use crate::http::{self, Url};

/// How the client does DTLS.
#[derive(Clone, Debug, Default)]
pub struct Dtls {
    /// A PKCS#8 PEM RSA key to sign a self-signed certificate with; ECDSA P-256 otherwise.
    pub rsa_key: Option<String>,
    /// Offer only ECDHE_ECDSA cipher suites.
    pub ecdsa_only: bool,
}

/// Events from the peer connection, for the one task that drives a client.
struct Handler {
    gathered: watch::Sender<bool>,
    state: watch::Sender<RTCPeerConnectionState>,
    tracks: mpsc::UnboundedSender<Arc<dyn TrackRemote>>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            self.gathered.send_replace(true);
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        eprintln!("webrtc-rs: connection {state}");
        self.state.send_replace(state);
    }

    async fn on_track(&self, track: Arc<dyn TrackRemote>) {
        let _ = self.tracks.send(track);
    }
}

pub struct Peer {
    pub pc: Box<dyn PeerConnection>,
    gathered: watch::Receiver<bool>,
    state: watch::Receiver<RTCPeerConnectionState>,
    pub tracks: mpsc::UnboundedReceiver<Arc<dyn TrackRemote>>,
}

impl Peer {
    /// A peer connection with host candidates on `server`'s route only.
    pub async fn new(mut media: MediaEngine, dtls: &Dtls, server: &str) -> Result<Self> {
        let local = Url::parse(server)?.local_ip()?;
        let registry = register_default_interceptors(Registry::new(), &mut media)?;
        let mut config = RTCConfigurationBuilder::new();
        if let Some(path) = &dtls.rsa_key {
            config = config.with_certificates(vec![rsa_certificate(path)?]);
        }
        // Host candidates on the route to the server only, and no mDNS: a test's network
        // namespace has no multicast-capable interface.
        let mut settings = SettingEngineBuilder::new()
            .with_include_loopback_candidate(true)
            .with_multicast_dns_mode(MulticastDnsMode::Disabled);
        if dtls.ecdsa_only {
            settings = settings.with_dtls_cipher_suites(vec![
                CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_128_Gcm_Sha256,
                CipherSuiteId::Tls_Ecdhe_Ecdsa_With_ChaCha20_Poly1305_Sha256,
                CipherSuiteId::Tls_Ecdhe_Ecdsa_With_Aes_256_Cbc_Sha,
            ]);
        }
        let (gathered_tx, gathered) = watch::channel(false);
        let (state_tx, state) = watch::channel(RTCPeerConnectionState::New);
        let (tracks_tx, tracks) = mpsc::unbounded_channel();
        let handler = Arc::new(Handler {
            gathered: gathered_tx,
            state: state_tx,
            tracks: tracks_tx,
        });
        let runtime = webrtc::runtime::default_runtime().context("no webrtc-rs runtime")?;
        let pc = PeerConnectionBuilder::new()
            .with_configuration(config.build())
            .with_media_engine(media)
            .with_setting_engine(settings.build())
            .with_interceptor_registry(registry)
            .with_handler(handler)
            .with_runtime(runtime)
            .with_udp_addrs(vec![std::net::SocketAddr::new(local, 0).to_string()])
            .build()
            .await?;
        Ok(Self {
            pc: Box::new(pc),
            gathered,
            state,
            tracks,
        })
    }

    /// Makes the offer with every candidate in it, POSTs it, applies the answer and waits for
    /// the connection. Returns the session's resource URL.
    pub async fn negotiate(&mut self, endpoint: &str, bearer: Option<&str>) -> Result<Url> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer).await?;
        tokio::time::timeout(Duration::from_secs(5), self.gathered.wait_for(|done| *done))
            .await
            .context("ICE gathering did not complete in 5 s")??;
        let sdp = self
            .pc
            .local_description()
            .await
            .context("no local description")?
            .sdp;

        let url = Url::parse(endpoint)?;
        let auth = bearer.map(|key| format!("Bearer {key}"));
        let mut headers = vec![("Content-Type", "application/sdp")];
        if let Some(auth) = &auth {
            headers.push(("Authorization", auth));
        }
        let reply = http::request("POST", &url, &headers, &sdp).await?;
        if reply.status != 201 {
            bail!("POST answered {}: {}", reply.status, reply.body.trim());
        }
        let resource = url.join(reply.location.as_deref().context("201 without Location")?)?;
        self.pc
            .set_remote_description(RTCSessionDescription::answer(reply.body)?)
            .await?;

        let connected = tokio::time::timeout(
            Duration::from_secs(10),
            self.state.wait_for(|state| {
                matches!(
                    state,
                    RTCPeerConnectionState::Connected
                        | RTCPeerConnectionState::Failed
                        | RTCPeerConnectionState::Closed
                )
            }),
        )
        .await
        .map(|state| state.map(|state| *state));
        match connected {
            Ok(Ok(RTCPeerConnectionState::Connected)) => Ok(resource),
            Ok(Ok(state)) => bail!("connection {state}"),
            _ => bail!("not connected within 10 s ({})", *self.state.borrow()),
        }
    }

    pub fn is_connected(&self) -> bool {
        *self.state.borrow() == RTCPeerConnectionState::Connected
    }

    /// Ends the session: `DELETE` on the resource, then closes the peer connection.
    pub async fn hang_up(&self, resource: &Url, bearer: Option<&str>) -> Result<u16> {
        let auth = bearer.map(|key| format!("Bearer {key}"));
        let headers: Vec<(&str, &str)> = auth
            .iter()
            .map(|auth| ("Authorization", auth.as_str()))
            .collect();
        let reply = http::request("DELETE", resource, &headers, "").await?;
        self.pc.close().await?;
        Ok(reply.status)
    }
}

/// A self-signed certificate around an RSA key read from a PKCS#8 PEM file (the `rtc` crate
/// cannot generate RSA keys, so the test makes one with openssl).
fn rsa_certificate(path: &str) -> Result<RTCCertificate> {
    let pem = std::fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    let der = pem::parse(pem)?.into_contents();
    let provider = crypto::default_provider()?;
    let key = provider
        .crypto()
        .import_signing_key(SignatureScheme::RsaPkcs1Sha256, &der)?;
    Ok(RTCCertificate::generate_from_signing_key(
        CertificateParams::new(vec!["webrtc-rs.test".to_owned()])?,
        SignatureScheme::RsaPkcs1Sha256,
        key,
    )?)
}
