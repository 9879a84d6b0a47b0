//! starling-moqt-client: subscribe to one MoQT (draft-18, ALPN "moqt-18") track over raw QUIC
//! with mutual TLS, and print every object received for N seconds.
//!
//! usage: starling-moqt-client ADDR SERVER_NAME CLIENT_CERT.pem CLIENT_KEY.pem CA.pem|sha256:HEX NAMESPACE TRACK SECONDS
//!   ADDR          e.g. 127.0.0.1:4443
//!   SERVER_NAME   TLS SNI / name checked against the server cert (also sent as SETUP AUTHORITY)
//!   CA.pem        PEM CA bundle to verify the relay, or `sha256:<hex>` to pin the relay's leaf cert
//!   NAMESPACE     '/'-separated tuple, e.g. "alice" (1 field) or "alice/cam" (2 fields)
use std::{io::Write, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use moq_transport::{
    coding::TrackNamespace,
    serve::{Track, TrackReaderMode},
    session::{transport::quinn as wtq, Transport},
    setup::DraftVersion,
};
use rustls::{
    client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    crypto::{verify_tls13_signature, CryptoProvider},
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime},
    DigitallySignedStruct, SignatureScheme,
};
use wtq::quinn;

/// Accepts exactly one server leaf certificate, identified by its SHA-256 (DER) fingerprint.
#[derive(Debug)]
struct PinnedVerifier {
    sha256: Vec<u8>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, end_entity.as_ref());
        if got.as_ref() == self.sha256.as_slice() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "server cert fingerprint mismatch: got {}",
                hex(got.as_ref())
            )))
        }
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.2 not used by QUIC".into()))
    }
    fn verify_tls13_signature(
        &self,
        msg: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        // Still proves the server holds the pinned cert's private key.
        verify_tls13_signature(
            msg,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Result<Vec<u8>> {
    let s: String = s.chars().filter(|c| *c != ':').collect();
    if s.len() != 64 {
        bail!("sha256 fingerprint must be 32 bytes of hex");
    }
    (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).context("bad hex"))
        .collect()
}

fn tls_config(cert: &str, key: &str, ca_or_pin: &str) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("open {cert}"))?
        .collect::<Result<_, _>>()
        .context("parse client cert PEM")?;
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("read key {key}"))?;
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?;
    let mut cfg = if let Some(fp) = ca_or_pin.strip_prefix("sha256:") {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                sha256: unhex(fp)?,
                provider,
            }))
            .with_client_auth_cert(chain, key)?
    } else {
        let mut roots = rustls::RootCertStore::empty();
        for c in
            CertificateDer::pem_file_iter(ca_or_pin).with_context(|| format!("open {ca_or_pin}"))?
        {
            roots.add(c.context("parse CA PEM")?)?;
        }
        builder
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)?
    };
    // Raw QUIC MoQT: the draft version is negotiated purely by ALPN ("moqt-18").
    cfg.alpn_protocols = vec![DraftVersion::Draft18.alpn_bytes().to_vec()];
    Ok(cfg)
}

#[tokio::main]
async fn main() -> Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 9 {
        bail!(
            "usage: {} ADDR SERVER_NAME CERT KEY CA|sha256:HEX NAMESPACE TRACK SECONDS",
            a[0]
        );
    }
    let addr: SocketAddr = a[1].parse().context("ADDR")?;
    let server_name = &a[2];
    let secs: u64 = a[8].parse().context("SECONDS")?;

    // --- QUIC endpoint with our own rustls config (client auth) ---
    let crypto =
        quinn::crypto::rustls::QuicClientConfig::try_from(tls_config(&a[3], &a[4], &a[5])?)?;
    let bind: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()?;
    let mut endpoint = quinn::Endpoint::client(bind)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));
    let conn = endpoint
        .connect(addr, server_name)?
        .await
        .context("QUIC/TLS handshake")?;
    eprintln!(
        "connected, alpn={:?}",
        conn.handshake_data()
            .and_then(|h| h.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|h| h.protocol)
            .map(|p| String::from_utf8_lossy(&p).into_owned())
    );

    // The URL is metadata only: host:port -> SETUP AUTHORITY, path (if not "/") -> SETUP PATH.
    let url = url::Url::parse(&format!("moqt://{}:{}/", server_name, addr.port()))?;
    let wt = wtq::Session::raw(conn, url, wtq::proto::ConnectResponse::default());
    let (session, mut subscriber) =
        moq_transport::session::Subscriber::connect(wt.into(), Transport::RawQuic)
            .await
            .context("SETUP")?;
    // Session::run must be polled for anything (incl. SUBSCRIBE_OK) to progress.
    let run = tokio::spawn(session.run());

    let namespace =
        TrackNamespace::try_from(a[6].as_str()).map_err(|e| anyhow::anyhow!("namespace: {e:?}"))?;
    let (writer, reader) = Track::new(namespace, a[7].as_str()).produce();

    let work = async move {
        let sub = subscriber
            .subscribe_open(writer)
            .await
            .context("SUBSCRIBE")?;
        eprintln!("SUBSCRIBE_OK: {:?}", sub.subscribe_ok());
        match reader.mode().await.context("waiting for first data")? {
            TrackReaderMode::Subgroups(mut subgroups) => {
                while let Some(mut sg) = subgroups.next().await? {
                    tokio::spawn(async move {
                        while let Ok(Some(mut obj)) = sg.next().await {
                            let payload = obj.read_all().await.unwrap_or_default();
                            let _ = writeln!(
                                std::io::stdout(),
                                "group={} subgroup={} object={} status={:?} len={}",
                                sg.info.group_id,
                                sg.info.subgroup_id,
                                obj.object_id,
                                obj.status,
                                payload.len()
                            );
                        }
                    });
                }
            }
            TrackReaderMode::Datagrams(mut dg) => {
                while let Some(d) = dg.read().await? {
                    let _ = writeln!(
                        std::io::stdout(),
                        "group={} object={} status={:?} len={} (datagram)",
                        d.group_id,
                        d.object_id,
                        d.status,
                        d.payload.len()
                    );
                }
            }
            TrackReaderMode::Stream(_) => {
                bail!("unexpected Stream mode (subscriber side never produces it)")
            }
        }
        drop(sub);
        anyhow::Ok(())
    };

    tokio::select! {
        r = tokio::time::timeout(Duration::from_secs(secs), work) => match r {
            Ok(r) => r?,
            Err(_) => eprintln!("done after {secs}s"),
        },
        r = run => bail!("session ended: {:?}", r?),
    }
    endpoint.close(0u32.into(), b"bye");
    Ok(())
}
