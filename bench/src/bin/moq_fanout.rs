//! `moq-fanout`: relay fan-out. N MoQ subscribers (moq-net over raw QUIC, one connection each)
//! read one ~2.5 Mbit/s, 30 fps video track from a relay; prints a markdown row per N with the
//! frames each received against those published, and the relay process's CPU over the window.
//! The same subscribers measure Starling's relay and kixelated's moq-relay (`bench/relay-fanout`
//! starts them). With `--publish`, this process also publishes the track (for a relay that
//! takes publishers over MoQ); otherwise something else feeds the relay (ffmpeg, for Starling).
//! Loopback only; bounded in subscribers and time.
//!
//! moq-fanout --addr 127.0.0.1:4443 --path live/bench --track video --relay-pid PID
//!            [--pin SHA256 | --insecure] [--cert C --key K] [--subscribers 25,50] [--seconds 10]
//!            [--publish] [--server-name NAME]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use bytes::{BufMut, BytesMut};
use moq_net::{origin, track, Timestamp};
use rustls::pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use web_transport_quinn::quinn;

const MAX_SUBSCRIBERS: usize = 2000;
const MAX_SECONDS: u64 = 120;
const FPS: u64 = 30;
const BITRATE: usize = 2_500_000;

struct Args {
    addr: SocketAddr,
    server_name: String,
    path: String,
    track: String,
    pin: Option<String>,
    cert: Option<String>,
    key: Option<String>,
    subscribers: Vec<usize>,
    seconds: u64,
    publish: bool,
    relay_pid: String,
}

fn parse() -> Result<Args> {
    let mut a = Args {
        addr: "127.0.0.1:4443".parse()?,
        server_name: "starling-relay".into(),
        path: "live/bench".into(),
        track: "video".into(),
        pin: None,
        cert: None,
        key: None,
        subscribers: vec![25, 50],
        seconds: 10,
        publish: false,
        relay_pid: String::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--addr" => a.addr = value()?.parse()?,
            "--server-name" => a.server_name = value()?,
            "--path" => a.path = value()?,
            "--track" => a.track = value()?,
            "--pin" => a.pin = Some(value()?),
            "--insecure" => a.pin = None,
            "--cert" => a.cert = Some(value()?),
            "--key" => a.key = Some(value()?),
            "--subscribers" => {
                a.subscribers = value()?
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()?
            }
            "--seconds" => a.seconds = value()?.parse()?,
            "--publish" => a.publish = true,
            "--relay-pid" => a.relay_pid = value()?,
            other => bail!("unknown flag {other}"),
        }
    }
    if a.subscribers.iter().any(|n| *n > MAX_SUBSCRIBERS) || a.seconds > MAX_SECONDS {
        bail!("at most {MAX_SUBSCRIBERS} subscribers and {MAX_SECONDS} s");
    }
    if a.relay_pid.is_empty() {
        bail!("--relay-pid is needed for the relay's CPU");
    }
    Ok(a)
}

/// Accepts the server whose certificate has the pinned SHA-256, or any with no pin (a
/// self-signed test relay); TLS 1.3 signatures are checked either way.
#[derive(Debug)]
struct Pin {
    sha256: Option<String>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        match &self.sha256 {
            Some(pin) if relay::identity::fingerprint(end_entity) != *pin => {
                Err(rustls::Error::General("pinned certificate mismatch".into()))
            }
            _ => Ok(rustls::client::danger::ServerCertVerified::assertion()),
        }
    }
    fn verify_tls12_signature(
        &self,
        _: &[u8],
        _: &CertificateDer<'_>,
        _: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        Err(rustls::Error::General("TLS 1.3 only".into()))
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

fn client_config(args: &Args) -> Result<quinn::ClientConfig> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(Pin {
            sha256: args.pin.clone(),
            provider,
        }));
    let mut tls = match (&args.cert, &args.key) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)?.collect::<Result<Vec<_>, _>>()?;
            builder.with_client_auth_cert(chain, PrivateKeyDer::from_pem_file(key)?)?
        }
        _ => builder.with_no_client_auth(),
    };
    tls.alpn_protocols = vec![b"moq-lite-06".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut config = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_uni_streams(1024u32.into());
    config.transport_config(Arc::new(transport));
    Ok(config)
}

async fn connect(
    endpoint: &quinn::Endpoint,
    args: &Args,
    client: moq_net::Client,
) -> Result<moq_net::Session> {
    let conn = endpoint
        .connect_with(client_config(args)?, args.addr, &args.server_name)?
        .await?;
    let (session, driver) = client
        .connect(Instant::now(), web_transport_quinn::Session::raw(conn))
        .await?;
    tokio::spawn(moq_net::time::run(driver));
    Ok(session)
}

/// Publishes the track at 30 fps, 2.5 Mbit/s, a group (5 times a frame's size first) every 2 s.
async fn publish(endpoint: quinn::Endpoint, args: Arc<Args>, until: Instant) -> Result<()> {
    let (origin, driver) = origin::Producer::new(origin::Config::default());
    tokio::spawn(moq_net::time::run(driver));
    let broadcast = origin.create_broadcast(args.path.as_str())?;
    let video = broadcast.create_track(args.track.as_str(), track::Info::default())?;
    broadcast.announce(origin::Route::default())?;
    let _session = connect(
        &endpoint,
        &args,
        moq_net::Client::new().with_publisher(origin.consume()),
    )
    .await?;
    let frame_bytes = BITRATE / 8 / FPS as usize;
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / FPS));
    let mut group: Option<moq_net::group::Producer> = None;
    for n in 0u64.. {
        tick.tick().await;
        if Instant::now() > until {
            break;
        }
        let key = n % (2 * FPS) == 0;
        if key || group.is_none() {
            if let Some(done) = group.take() {
                let _ = done.finish();
            }
            group = Some(video.append_group()?);
        }
        let size = if key { frame_bytes * 5 } else { frame_bytes };
        let mut payload = BytesMut::with_capacity(size);
        payload.put_u64(n);
        payload.resize(size, 0);
        if let Some(g) = group.as_mut() {
            g.write_frame(Timestamp::from_millis(n * 1000 / FPS)?, payload.freeze())?;
        }
    }
    Ok(())
}

/// One subscriber: frames received in the window.
async fn subscribe(
    endpoint: quinn::Endpoint,
    args: Arc<Args>,
    from: Instant,
    until: Instant,
    received: Arc<AtomicU64>,
) -> Result<()> {
    let (origin, driver) = origin::Producer::new(origin::Config::default());
    tokio::spawn(moq_net::time::run(driver));
    let _session = connect(
        &endpoint,
        &args,
        moq_net::Client::new().with_subscriber(origin.clone()),
    )
    .await?;
    let broadcast = tokio::time::timeout(
        Duration::from_secs(10),
        origin.consume().routed_broadcast(args.path.as_str()),
    )
    .await??;
    let mut sub = broadcast
        .track(&args.track)?
        .subscribe(track::Subscription::default().with_max_age(Duration::from_millis(500)))
        .await?
        .ordered();
    loop {
        let next = tokio::time::timeout_at(until.into(), sub.next_group()).await;
        let Ok(Ok(Some(mut group))) = next else {
            break;
        };
        while let Ok(Ok(Some(_frame))) =
            tokio::time::timeout_at(until.into(), group.read_frame()).await
        {
            if Instant::now() >= from {
                received.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

fn cpu_secs(pid: &str) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').context("stat format")?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11).context("utime")?.parse()?;
    let stime: f64 = fields.get(12).context("stime")?.parse()?;
    Ok((utime + stime) / 100.0)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Arc::new(parse()?);
    let endpoint = quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0)))?;
    println!("| subscribers | frames each (min / expected) | relay CPU | subscribers per core |");
    println!("| --- | --- | --- | --- |");
    for &n in &args.subscribers {
        let settle = Duration::from_secs(3);
        let start = Instant::now();
        let from = start + settle;
        let until = from + Duration::from_secs(args.seconds);
        let publisher = args
            .publish
            .then(|| tokio::spawn(publish(endpoint.clone(), args.clone(), until)));
        let counters: Vec<_> = (0..n).map(|_| Arc::new(AtomicU64::new(0))).collect();
        let mut tasks = Vec::new();
        for counter in &counters {
            tasks.push(tokio::spawn(subscribe(
                endpoint.clone(),
                args.clone(),
                from,
                until,
                counter.clone(),
            )));
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep_until(from.into()).await;
        let cpu_before = cpu_secs(&args.relay_pid)?;
        tokio::time::sleep_until(until.into()).await;
        let cpu = (cpu_secs(&args.relay_pid)? - cpu_before) / args.seconds as f64;
        for task in tasks {
            if let Ok(Err(err)) = task.await {
                eprintln!("subscriber: {err:#}");
            }
        }
        if let Some(p) = publisher {
            if let Ok(Err(err)) = p.await {
                eprintln!("publisher: {err:#}");
            }
        }
        let min = counters
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0);
        let expected = FPS * args.seconds;
        println!(
            "| {n} | {min} / {expected} | {:.0}% of a core | {} |",
            cpu * 100.0,
            if cpu > 0.0 {
                format!("{:.0}", n as f64 / cpu)
            } else {
                "-".into()
            }
        );
        // Let sessions close before the next round.
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    Ok(())
}
