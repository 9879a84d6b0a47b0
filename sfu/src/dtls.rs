//! DTLS 1.2 for str0m on OpenSSL, so that clients with RSA certificates connect.
//!
//! str0m's built-in DTLS (dimpl 0.9) only takes ECDSA client certificates: its
//! CertificateRequest names `ecdsa_sign` alone, so an OpenSSL client holding an RSA key (GStreamer's
//! webrtcbin, which generates RSA-2048) sends no certificate and the handshake fails, and a client
//! that sends RSA anyway is refused at CertificateVerify. OpenSSL's server asks for RSA and ECDSA
//! and checks either. Our own certificate stays ECDSA P-256 (str0m's generator), so clients that
//! offer only ECDHE_ECDSA suites connect too. SRTP, STUN and fingerprints keep str0m's aws-lc-rs
//! provider; only the handshake moves here.
//!
//! Peers' certificates are self-signed; OpenSSL accepts any, and str0m checks the one it got
//! against the SDP fingerprint.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use dimpl::{CryptoError as DimplCryptoError, CryptoOperation};
use openssl::pkey::PKey;
use openssl::srtp::SrtpProfileId;
use openssl::ssl::{
    ErrorCode, Ssl, SslContext, SslContextBuilder, SslMethod, SslMode, SslOptions, SslStream,
    SslVerifyMode,
};
use openssl::x509::X509;
use str0m::crypto::dtls::{
    DtlsCert, DtlsImplError, DtlsInstance, DtlsOutput, DtlsProvider, DtlsVersion, KeyingMaterial,
    ProtocolVersion, SrtpProfile,
};
use str0m::crypto::{CryptoError, CryptoProvider};
use tracing::{debug, info};

/// str0m's default crypto with the DTLS handshake on OpenSSL. `retire`: established sessions
/// without application data let OpenSSL's state go after [`RETIRE_AFTER`] (viewers, which are
/// many; a publisher keeps it, so its leaving is read from its close alert at once).
pub(crate) fn crypto_provider(retire: bool) -> Arc<CryptoProvider> {
    fn provider(dtls: &'static OpensslDtls) -> Arc<CryptoProvider> {
        Arc::new(CryptoProvider {
            dtls_provider: dtls,
            ..str0m::crypto::from_feature_flags()
        })
    }
    static KEEPING: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| provider(&OpensslDtls { retire: false }));
    static RETIRING: LazyLock<Arc<CryptoProvider>> =
        LazyLock::new(|| provider(&OpensslDtls { retire: true }));
    Arc::clone(if retire { &RETIRING } else { &KEEPING })
}

/// The certificate every session of this process presents (ECDSA P-256, made at first use),
/// so a join neither generates a key nor builds an OpenSSL context: str0m would make one per
/// `Rtc`. `None` if the provider cannot generate one (str0m then fails to build the `Rtc`).
pub(crate) fn certificate() -> Option<DtlsCert> {
    static CERT: LazyLock<Option<DtlsCert>> =
        LazyLock::new(|| OpensslDtls { retire: false }.generate_certificate());
    CERT.clone()
}

/// ECDHE only (forward secrecy); as a server our ECDSA key picks the ECDSA suites.
const CIPHERS: &str = "ECDHE+AESGCM:ECDHE+CHACHA20:ECDHE+AES256";
/// AES-128-GCM first (OpenSSL's server takes its own order): a third fewer AES rounds than
/// AES-256 on every packet sent; 128-bit keys are what SRTP's mandatory profile has always used.
const SRTP_PROFILES: &str = "SRTP_AEAD_AES_128_GCM:SRTP_AEAD_AES_256_GCM:SRTP_AES128_CM_SHA1_80";
const SRTP_LABEL: &str = "EXTRACTOR-dtls_srtp";
/// Datagrams waiting for OpenSSL to read, at most (a handshake flight is a handful).
const MAX_QUEUED: usize = 64;
/// How often a handshake in progress is polled, so OpenSSL can retransmit a lost flight.
const HANDSHAKE_TICK: Duration = Duration::from_millis(250);
/// How long an established session keeps OpenSSL's state (~70 KiB: record buffers, the last
/// flight) to resend its last flight to a peer that missed it, or to read an alert. Peers
/// retransmit a lost flight after 1, 2, 4 and 8 s (RFC 6347's doubling timer): this covers
/// four losses in a row. A session that carries application data (SCTP) keeps it for good.
/// A session whose peer has shown it finished too ([`PeerFinished`]) lets go at once.
const RETIRE_AFTER: Duration = Duration::from_secs(16);
/// The MTU when str0m does not give one.
const DEFAULT_MTU: usize = 1150;

#[derive(Debug)]
struct OpensslDtls {
    retire: bool,
}

impl DtlsProvider for OpensslDtls {
    fn generate_certificate(&self) -> Option<DtlsCert> {
        // ECDSA P-256, the certificate every WebRTC client accepts.
        str0m::crypto::from_feature_flags()
            .dtls_provider
            .generate_certificate()
    }

    fn new_dtls(
        &self,
        cert: &DtlsCert,
        _now: Instant,
        version: DtlsVersion,
        mtu: Option<usize>,
    ) -> Result<Box<dyn DtlsInstance>, CryptoError> {
        if version == DtlsVersion::Dtls13 {
            return Err(CryptoError::Other("DTLS 1.3 is not offered".into()));
        }
        let ssl = new_ssl(cert, mtu.unwrap_or(DEFAULT_MTU))
            .map_err(|err| CryptoError::Other(format!("OpenSSL DTLS setup: {err}")))?;
        Ok(Box::new(Session {
            stream: Some(
                SslStream::new(ssl, Datagrams::default())
                    .map_err(|err| CryptoError::Other(format!("OpenSSL DTLS setup: {err}")))?,
            ),
            connected_at: None,
            peer_finished: PeerFinished::default(),
            application_data: !self.retire,
            may_have_output: true,
            active: None,
            connected: false,
            connected_told: false,
            secrets: None,
            received: VecDeque::new(),
            closing: false,
            close_notify_received: false,
            close_notify_told: false,
        }))
    }
}

fn new_ssl(cert: &DtlsCert, mtu: usize) -> Result<Ssl, openssl::error::ErrorStack> {
    let ctx = context(cert)?;
    let mut ssl = Ssl::new(&ctx)?;
    ssl.set_mtu(u32::try_from(mtu).unwrap_or(DEFAULT_MTU as u32))?;
    Ok(ssl)
}

/// The OpenSSL context for `cert`, built once and shared by every session that presents it
/// (one per session cost ~10 KiB and a parse of the key on every join).
fn context(cert: &DtlsCert) -> Result<SslContext, openssl::error::ErrorStack> {
    static BUILT: Mutex<Option<(Vec<u8>, SslContext)>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, ctx)) = built.as_ref().filter(|(der, _)| *der == cert.certificate) {
        return Ok(ctx.clone());
    }
    let ctx = build_context(cert)?;
    *built = Some((cert.certificate.clone(), ctx.clone()));
    Ok(ctx)
}

fn build_context(cert: &DtlsCert) -> Result<SslContext, openssl::error::ErrorStack> {
    let mut ctx = SslContextBuilder::new(SslMethod::dtls())?;
    ctx.set_cipher_list(CIPHERS)?;
    ctx.set_tlsext_use_srtp(SRTP_PROFILES)?;
    ctx.set_verify_callback(
        SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT,
        |_, _| true,
    );
    let certificate = X509::from_der(&cert.certificate)?;
    let key = PKey::private_key_from_der(&cert.private_key)?;
    ctx.set_certificate(&certificate)?;
    ctx.set_private_key(&key)?;
    ctx.set_options(SslOptions::NO_DTLSV1 | SslOptions::NO_QUERY_MTU | SslOptions::NO_TICKET);
    // An established session only handles the odd alert: its ~34 kB of record buffers go
    // back while idle.
    ctx.set_mode(SslMode::RELEASE_BUFFERS);
    Ok(ctx.build())
}

/// OpenSSL's transport: datagrams in from str0m, datagrams out to str0m, one per read or write.
#[derive(Default)]
struct Datagrams {
    incoming: VecDeque<Vec<u8>>,
    outgoing: VecDeque<Vec<u8>>,
}

impl io::Read for Datagrams {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(datagram) = self.incoming.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        let n = datagram.len().min(buf.len());
        buf[..n].copy_from_slice(&datagram[..n]);
        Ok(n)
    }
}

impl io::Write for Datagrams {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.outgoing.push_back(buf.to_vec());
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// What the handshake yields for str0m: the peer's certificate and the SRTP keys.
struct Secrets {
    peer_cert: Option<Vec<u8>>,
    keying: Option<(Vec<u8>, SrtpProfile)>,
}

struct Session {
    /// `None` once retired ([`RETIRE_AFTER`]): SRTP has its keys, and what the peer sends on
    /// DTLS after that (an alert when it closes) is dropped; ICE notices a peer that left.
    stream: Option<SslStream<Datagrams>>,
    connected_at: Option<Instant>,
    peer_finished: PeerFinished,
    /// Application data (SCTP) went either way, or the session is not one to retire: it
    /// keeps OpenSSL.
    application_data: bool,
    /// OpenSSL may have queued datagrams since `poll_output` last found none: false spares
    /// the per-poll trip through OpenSSL to its BIO once a session is established.
    may_have_output: bool,
    active: Option<bool>,
    connected: bool,
    connected_told: bool,
    secrets: Option<Secrets>,
    received: VecDeque<Vec<u8>>,
    closing: bool,
    close_notify_received: bool,
    close_notify_told: bool,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpensslDtlsSession")
            .field("active", &self.active)
            .field("connected", &self.connected)
            .finish()
    }
}

impl Session {
    /// When an established session without application data lets OpenSSL's state go.
    fn retire_at(&self) -> Option<Instant> {
        let keep = self.stream.is_none() || self.application_data || self.closing;
        let wait = if self.peer_finished.is_confirmed() {
            Duration::ZERO
        } else {
            RETIRE_AFTER
        };
        self.connected_at.filter(|_| !keep).map(|at| at + wait)
    }
}

/// Told by the viewer task when the peer's SRTCP opens with the session's keys (for viewers
/// whose video it seals, [`crate::media_out`]): the peer has finished its handshake, so it got
/// our last flight and will not ask for it again, and the session lets OpenSSL's state go at
/// once instead of after [`RETIRE_AFTER`]. With viewers joining in bursts, that state (~70 KiB
/// each) held for 16 s was most of the server's memory peak, and the holes it left most of the
/// gap between the live heap and the RSS. As after [`RETIRE_AFTER`], a close alert the peer
/// sends later is dropped: its session ends by WHEP `DELETE` or when ICE sees it gone.
#[derive(Clone, Default)]
pub(crate) struct PeerFinished(Arc<AtomicBool>);

impl PeerFinished {
    pub(crate) fn confirm(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    pub(crate) fn is_confirmed(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

fn failed(operation: CryptoOperation) -> DtlsImplError {
    DtlsImplError::CryptoError(DimplCryptoError::OperationFailed(operation))
}

impl Session {
    /// Runs the handshake as far as the datagrams received allow.
    fn handshake(&mut self) -> Result<(), DtlsImplError> {
        self.may_have_output = true;
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        let step = match self.active {
            _ if self.connected => return Ok(()),
            None => return Ok(()),
            Some(true) => stream.connect(),
            Some(false) => stream.accept(),
        };
        match step {
            Ok(()) => {
                self.connected = true;
                self.connected_at = Some(Instant::now());
                self.secrets = Some(self.export_secrets()?);
                Ok(())
            }
            Err(err) if matches!(err.code(), ErrorCode::WANT_READ | ErrorCode::WANT_WRITE) => {
                Ok(())
            }
            Err(err) => {
                info!(%err, "DTLS handshake failed");
                Err(failed(CryptoOperation::VerifySignature))
            }
        }
    }

    fn export_secrets(&self) -> Result<Secrets, DtlsImplError> {
        let Some(ssl) = self.stream.as_ref().map(SslStream::ssl) else {
            return Err(failed(CryptoOperation::CompleteKeyExchange));
        };
        let peer_cert = ssl.peer_certificate().and_then(|cert| cert.to_der().ok());
        let profile = match ssl.selected_srtp_profile().map(|p| p.id()) {
            Some(SrtpProfileId::SRTP_AEAD_AES_256_GCM) => SrtpProfile::AEAD_AES_256_GCM,
            Some(SrtpProfileId::SRTP_AEAD_AES_128_GCM) => SrtpProfile::AEAD_AES_128_GCM,
            Some(SrtpProfileId::SRTP_AES128_CM_SHA1_80) => SrtpProfile::AES128_CM_SHA1_80,
            _ => {
                debug!("DTLS: the peer agreed no SRTP profile we support");
                return Err(failed(CryptoOperation::CompleteKeyExchange));
            }
        };
        let mut keying = vec![0; profile.keying_material_len()];
        ssl.export_keying_material(&mut keying, SRTP_LABEL, None)
            .map_err(|_| failed(CryptoOperation::CompleteKeyExchange))?;
        // The viewer task seals its media itself (media_out) and takes the keys here.
        crate::srtp::offer(
            &keying,
            profile,
            self.active == Some(true),
            &self.peer_finished,
        );
        Ok(Secrets {
            peer_cert,
            keying: Some((keying, profile)),
        })
    }

    /// Decrypts what arrived after the handshake.
    fn read_application_data(&mut self) -> Result<(), DtlsImplError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(());
        };
        self.may_have_output = true;
        let mut buf = vec![0; 16 * 1024];
        loop {
            match stream.ssl_read(&mut buf) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    self.application_data = true;
                    if self.received.len() >= MAX_QUEUED {
                        return Err(DtlsImplError::ReceiveQueueFull);
                    }
                    self.received.push_back(buf[..n].to_vec());
                }
                Err(err) if err.code() == ErrorCode::WANT_READ => return Ok(()),
                Err(err) if err.code() == ErrorCode::ZERO_RETURN => {
                    self.close_notify_received = true;
                    self.closing = true;
                    return Ok(());
                }
                Err(err) => {
                    debug!(%err, "DTLS read failed");
                    return Err(failed(CryptoOperation::Decrypt));
                }
            }
        }
    }
}

impl DtlsInstance for Session {
    fn set_active(&mut self, active: bool) {
        self.active = Some(active);
        // A client speaks first.
        let _ = self.handshake();
    }

    fn handle_packet(&mut self, packet: &[u8]) -> Result<(), DtlsImplError> {
        let Some(stream) = self.stream.as_mut() else {
            return Ok(()); // retired
        };
        let incoming = &mut stream.get_mut().incoming;
        if incoming.len() >= MAX_QUEUED {
            return Err(DtlsImplError::ReceiveQueueFull);
        }
        incoming.push_back(packet.to_vec());
        if self.connected {
            self.read_application_data()
        } else {
            self.handshake()?;
            if self.connected {
                self.read_application_data()?;
            }
            Ok(())
        }
    }

    fn poll_output<'a>(&mut self, buf: &'a mut [u8]) -> DtlsOutput<'a> {
        let next = match self.stream.as_mut() {
            Some(stream) if self.may_have_output => stream.get_mut().outgoing.pop_front(),
            _ => None,
        };
        self.may_have_output = next.is_some();
        if let Some(datagram) = next {
            if datagram.len() > buf.len() {
                let needed = datagram.len();
                if let Some(stream) = self.stream.as_mut() {
                    stream.get_mut().outgoing.push_front(datagram);
                }
                self.may_have_output = true;
                return DtlsOutput::BufferTooSmall { needed };
            }
            buf[..datagram.len()].copy_from_slice(&datagram);
            return DtlsOutput::Packet(&buf[..datagram.len()]);
        }
        if self.connected && !self.connected_told {
            self.connected_told = true;
            return DtlsOutput::Connected;
        }
        if let Some(secrets) = &mut self.secrets {
            if let Some(cert) = secrets.peer_cert.take() {
                if cert.len() > buf.len() {
                    let needed = cert.len();
                    secrets.peer_cert = Some(cert);
                    return DtlsOutput::BufferTooSmall { needed };
                }
                buf[..cert.len()].copy_from_slice(&cert);
                return DtlsOutput::PeerCert(&buf[..cert.len()]);
            }
            if let Some((keying, profile)) = secrets.keying.take() {
                return DtlsOutput::KeyingMaterial(KeyingMaterial::new(&keying), profile);
            }
        }
        if self.close_notify_received && !self.close_notify_told {
            self.close_notify_told = true;
            return DtlsOutput::CloseNotify;
        }
        if let Some(data) = self.received.pop_front() {
            if data.len() > buf.len() {
                let needed = data.len();
                self.received.push_front(data);
                return DtlsOutput::BufferTooSmall { needed };
            }
            buf[..data.len()].copy_from_slice(&data);
            return DtlsOutput::ApplicationData(&buf[..data.len()]);
        }
        let now = Instant::now();
        let next = match self.retire_at() {
            Some(at) => at.max(now),
            None if self.connected => now + Duration::from_secs(3600),
            None => now + HANDSHAKE_TICK,
        };
        DtlsOutput::Timeout(next)
    }

    fn handle_timeout(&mut self, now: Instant) -> Result<(), DtlsImplError> {
        if self.retire_at().is_some_and(|at| at <= now) {
            debug!("DTLS established; OpenSSL's state let go");
            self.stream = None;
            return Ok(());
        }
        // OpenSSL retransmits a flight whose timer ran out when the handshake is driven.
        self.handshake()
    }

    fn send_application_data(&mut self, data: &[u8]) -> Result<usize, DtlsImplError> {
        if !self.connected || data.is_empty() {
            return Ok(0);
        }
        let Some(stream) = self.stream.as_mut() else {
            // Only sessions without application data retire; this one never wrote before.
            return Err(failed(CryptoOperation::Encrypt));
        };
        self.application_data = true;
        self.may_have_output = true;
        stream.ssl_write(data).map_err(|err| {
            debug!(%err, "DTLS write failed");
            failed(CryptoOperation::Encrypt)
        })
    }

    fn is_active(&self) -> bool {
        self.active.unwrap_or(false)
    }

    fn protocol_version(&self) -> Option<ProtocolVersion> {
        self.connected.then_some(ProtocolVersion::DTLS1_2)
    }

    fn is_closing(&self) -> bool {
        self.closing
    }

    fn is_closed(&self) -> bool {
        self.closing
            && self
                .stream
                .as_ref()
                .is_none_or(|s| s.get_ref().outgoing.is_empty())
    }

    fn close(&mut self) -> Result<(), DtlsImplError> {
        if let Some(stream) = self
            .stream
            .as_mut()
            .filter(|_| self.connected && !self.closing)
        {
            self.may_have_output = true;
            let _ = stream.shutdown();
        }
        self.closing = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openssl::asn1::Asn1Time;
    use openssl::hash::MessageDigest;
    use openssl::rsa::Rsa;
    use openssl::x509::X509Builder;

    /// A self-signed RSA-2048 certificate, as GStreamer makes.
    fn rsa_cert() -> DtlsCert {
        let key = PKey::from_rsa(Rsa::generate(2048).expect("rsa")).expect("pkey");
        let mut x509 = X509Builder::new().expect("builder");
        x509.set_pubkey(&key).expect("pubkey");
        x509.set_not_before(&Asn1Time::days_from_now(0).expect("time"))
            .expect("not before");
        x509.set_not_after(&Asn1Time::days_from_now(1).expect("time"))
            .expect("not after");
        x509.sign(&key, MessageDigest::sha256()).expect("sign");
        DtlsCert {
            certificate: x509.build().to_der().expect("der"),
            private_key: key.private_key_to_der().expect("key der"),
        }
    }

    struct Outcome {
        connected: bool,
        peer_cert: Option<Vec<u8>>,
        keying: Option<(Vec<u8>, SrtpProfile)>,
    }

    /// Moves datagrams between the two until both are quiet; returns what each reported.
    type Peer = dyn DtlsInstance + 'static;

    fn run(a: &mut Peer, b: &mut Peer) -> [Outcome; 2] {
        let mut outcomes = [(); 2].map(|_| Outcome {
            connected: false,
            peer_cert: None,
            keying: None,
        });
        let mut buf = vec![0; 4096];
        for _ in 0..50 {
            let mut moved = false;
            for a_sends in [true, false] {
                let (sender, receiver, outcome) = if a_sends {
                    (&mut *a, &mut *b, &mut outcomes[0])
                } else {
                    (&mut *b, &mut *a, &mut outcomes[1])
                };
                loop {
                    match sender.poll_output(&mut buf) {
                        DtlsOutput::Packet(p) => {
                            let p = p.to_vec();
                            receiver.handle_packet(&p).expect("handle packet");
                            moved = true;
                        }
                        DtlsOutput::Connected => outcome.connected = true,
                        DtlsOutput::PeerCert(c) => outcome.peer_cert = Some(c.to_vec()),
                        DtlsOutput::KeyingMaterial(k, p) => outcome.keying = Some((k.to_vec(), p)),
                        DtlsOutput::Timeout(_) => break,
                        other => panic!("unexpected {other:?}"),
                    }
                }
            }
            if !moved {
                break;
            }
        }
        outcomes
    }

    fn pair(client_cert: &DtlsCert) -> (DtlsCert, Box<dyn DtlsInstance>, Box<dyn DtlsInstance>) {
        let provider = crypto_provider(true);
        let server_cert = provider.dtls_provider.generate_certificate().expect("cert");
        let now = Instant::now();
        let mut server = provider
            .dtls_provider
            .new_dtls(&server_cert, now, DtlsVersion::Dtls12, None)
            .expect("server");
        let mut client = provider
            .dtls_provider
            .new_dtls(client_cert, now, DtlsVersion::Dtls12, None)
            .expect("client");
        server.set_active(false);
        client.set_active(true);
        (server_cert, server, client)
    }

    #[test]
    fn an_rsa_client_completes_the_handshake_and_both_sides_share_srtp_keys() {
        let client_cert = rsa_cert();
        let (server_cert, mut server, mut client) = pair(&client_cert);
        let [c, s] = run(client.as_mut(), server.as_mut());
        assert!(c.connected && s.connected);
        assert_eq!(s.peer_cert.as_deref(), Some(&client_cert.certificate[..]));
        assert_eq!(c.peer_cert.as_deref(), Some(&server_cert.certificate[..]));
        let (server_keys, profile) = s.keying.expect("server keys");
        assert_eq!(server_keys.len(), profile.keying_material_len());
        assert_eq!(c.keying.expect("client keys"), (server_keys, profile));
    }

    #[test]
    fn a_garbled_handshake_fails_with_an_error_and_a_flood_is_bounded() {
        let (_, mut server, _) = pair(&rsa_cert());
        // A DTLS 1.2 handshake record header followed by nonsense.
        let mut garbage = vec![22, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 40];
        garbage.extend([0xab; 40]);
        let result = server.handle_packet(&garbage);
        assert!(result.is_err(), "{result:?}");

        // Datagrams that arrive before the role is known wait, up to the queue's limit.
        let mut idle_unstarted = crypto_provider(true)
            .dtls_provider
            .new_dtls(&rsa_cert(), Instant::now(), DtlsVersion::Dtls12, None)
            .expect("dtls");
        let full = (0..2 * MAX_QUEUED)
            .map(|_| idle_unstarted.handle_packet(&[0; 10]))
            .filter(|r| matches!(r, Err(DtlsImplError::ReceiveQueueFull)))
            .count();
        assert_eq!(full, MAX_QUEUED);
    }

    #[test]
    fn an_established_session_lets_openssl_go_unless_it_carries_application_data() {
        let (_, mut server, mut client) = pair(&rsa_cert());
        let [c, s] = run(client.as_mut(), server.as_mut());
        assert!(c.connected && s.connected);
        let mut buf = vec![0; 2048];
        let DtlsOutput::Timeout(retire) = server.poll_output(&mut buf) else {
            panic!("a quiet established session waits");
        };
        let in_about = retire.saturating_duration_since(Instant::now());
        assert!(
            in_about > RETIRE_AFTER - Duration::from_secs(2),
            "{in_about:?}"
        );

        // Before the time: still able to answer the peer.
        server
            .handle_timeout(Instant::now())
            .expect("early timeout");
        client
            .send_application_data(b"hello")
            .expect("client writes");
        let DtlsOutput::Packet(record) = client.poll_output(&mut buf) else {
            panic!("the client's record");
        };
        let record = record.to_vec();
        server.handle_packet(&record).expect("server reads");
        let mut got = None;
        while let DtlsOutput::ApplicationData(d) | DtlsOutput::Packet(d) =
            server.poll_output(&mut buf)
        {
            got = Some(d.to_vec());
        }
        assert_eq!(got.as_deref(), Some(&b"hello"[..]));
        // It carried application data: it keeps OpenSSL past the time.
        server
            .handle_timeout(Instant::now() + RETIRE_AFTER * 2)
            .expect("timeout");
        server.handle_packet(&record).expect("still reads");

        // A session that carried none lets go, then drops what arrives and closes at once.
        let (_, mut server, mut client) = pair(&rsa_cert());
        let _ = run(client.as_mut(), server.as_mut());
        server
            .handle_timeout(Instant::now() + RETIRE_AFTER + Duration::from_secs(1))
            .expect("retire");
        client
            .send_application_data(b"late")
            .expect("client writes");
        let DtlsOutput::Packet(record) = client.poll_output(&mut buf) else {
            panic!("the client's record");
        };
        let record = record.to_vec();
        server
            .handle_packet(&record)
            .expect("dropped, not an error");
        let DtlsOutput::Timeout(next) = server.poll_output(&mut buf) else {
            panic!("nothing comes out of a retired session");
        };
        assert!(next > Instant::now() + Duration::from_secs(600));
        assert!(server.send_application_data(b"x").is_err());
        server.close().expect("close");
        assert!(server.is_closing() && server.is_closed());
    }

    #[test]
    fn a_session_whose_peer_shows_it_has_the_keys_lets_openssl_go_at_once() {
        let (_, mut server, mut client) = pair(&rsa_cert());
        // The client completes last (at the server's Finished): its keys are the ones kept.
        let ([c, s], keys) = crate::srtp::collect(|| run(client.as_mut(), server.as_mut()));
        assert!(c.connected && s.connected);
        let keys = keys.expect("AES-GCM keys offered");
        let mut buf = vec![0; 2048];
        let DtlsOutput::Timeout(retire) = client.poll_output(&mut buf) else {
            panic!("a quiet established session waits");
        };
        assert!(retire > Instant::now() + RETIRE_AFTER - Duration::from_secs(2));

        // The peer's SRTCP opened: the next poll asks for the timeout now, which lets go.
        keys.peer_finished.confirm();
        let DtlsOutput::Timeout(retire) = client.poll_output(&mut buf) else {
            panic!("still waiting");
        };
        assert!(retire <= Instant::now());
        client.handle_timeout(Instant::now()).expect("retire");
        assert!(client.send_application_data(b"x").is_err(), "retired");
        // The server, whose peer showed nothing, keeps its state.
        server
            .handle_timeout(Instant::now())
            .expect("early timeout");
        assert!(server.send_application_data(b"x").is_ok());
    }
}
