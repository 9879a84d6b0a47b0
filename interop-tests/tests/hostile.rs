//! What any stranger can send, against the release binary on its defaults (in a network
//! namespace of its own, reached over a veth pair), while ffmpeg publishes a channel and
//! Chromium watches it. Each input is sent from a second address (the stranger's); after each,
//! the node is up, the watched channel still decodes, and what the input held comes back.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use interop_tests::{
    num, release_bin, request_on, rtmp_handshake, sdp_offer, Browser, Ffmpeg, Server, FAST_X264,
};
use rml_rtmp::chunk_io::ChunkSerializer;
use rml_rtmp::messages::MessagePayload;
use rml_rtmp::time::RtmpTimestamp;
use socket2::{Domain, Socket, Type};

/// A TCP connection from `from` (the stranger's address).
fn connect_from(from: IpAddr, to: SocketAddr) -> Result<TcpStream> {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(from, 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(2))?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    Ok(stream)
}

/// Whether the server closed `stream` within `limit` (a read finds the end or a reset).
fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
    let _ = stream.set_read_timeout(Some(limit));
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return false
            }
            Err(_) => return true,
        }
    }
}

/// One HTTP request from `from`: status, headers (lower-case names) and body.
fn http_from(
    from: IpAddr,
    to: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String, String)> {
    let headers = [("Content-Type", "application/sdp")];
    let reply = request_on(connect_from(from, to)?, to, method, path, &headers, body)?;
    Ok((reply.status, reply.headers, reply.body))
}

/// An RTMP publisher on `key`: connect, createStream and publish sent in one go (as ffmpeg
/// pipelines them), then media on stream 1 through `send`.
struct RtmpPublisher {
    stream: TcpStream,
    chunks: ChunkSerializer,
}

impl RtmpPublisher {
    fn start(mut stream: TcpStream, key: &str) -> Result<Self> {
        use rml_rtmp::rml_amf0::{serialize, Amf0Value};
        rtmp_handshake(&mut stream)?;
        let mut app = std::collections::HashMap::new();
        app.insert("app".to_owned(), Amf0Value::Utf8String("live".into()));
        let commands = [
            (
                0,
                vec![
                    Amf0Value::Utf8String("connect".into()),
                    Amf0Value::Number(1.0),
                    Amf0Value::Object(app),
                ],
            ),
            (
                0,
                vec![
                    Amf0Value::Utf8String("createStream".into()),
                    Amf0Value::Number(2.0),
                    Amf0Value::Null,
                ],
            ),
            (
                1,
                vec![
                    Amf0Value::Utf8String("publish".into()),
                    Amf0Value::Number(3.0),
                    Amf0Value::Null,
                    Amf0Value::Utf8String(key.into()),
                    Amf0Value::Utf8String("live".into()),
                ],
            ),
        ];
        let mut publisher = Self {
            stream,
            chunks: ChunkSerializer::new(),
        };
        for (stream_id, values) in commands {
            publisher.send(20, stream_id, serialize(&values)?, 0)?;
        }
        Ok(publisher)
    }

    fn send(&mut self, type_id: u8, message_stream_id: u32, data: Vec<u8>, ms: u32) -> Result<()> {
        let payload = MessagePayload {
            timestamp: RtmpTimestamp::new(ms),
            type_id,
            message_stream_id,
            data: data.into(),
        };
        let packet = self.chunks.serialize(&payload, false, false)?;
        self.stream.write_all(&packet.bytes)?;
        Ok(())
    }
}

/// A command message of `depth` nested strict arrays, chunked as RTMP sends it.
fn nested_command(depth: usize) -> Result<Vec<u8>> {
    let mut data = vec![0x02, 0, 7];
    data.extend_from_slice(b"connect");
    data.extend_from_slice(&[0x00, 0x3f, 0xf0, 0, 0, 0, 0, 0, 0]);
    for _ in 0..depth {
        data.extend_from_slice(&[0x0a, 0, 0, 0, 1]);
    }
    data.push(0x05);
    let payload = MessagePayload {
        timestamp: RtmpTimestamp::new(0),
        type_id: 20,
        message_stream_id: 0,
        data: data.into(),
    };
    Ok(ChunkSerializer::new()
        .serialize(&payload, false, false)?
        .bytes)
}

fn wait(what: &str, limit: Duration, mut check: impl FnMut() -> Result<bool>) -> Result<()> {
    let deadline = Instant::now() + limit;
    loop {
        if check().unwrap_or(false) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The watched channel still decodes: more frames than `before`.
async fn still_decoding(browser: &Browser, before: f64) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let frames = num(&browser.player().await?, "video.framesDecoded");
        if frames > before + 10.0 {
            return Ok(frames);
        }
        ensure!(
            Instant::now() < deadline,
            "the watched channel stopped decoding at {frames}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stranger_cannot_take_the_node_down_or_hold_its_resources() -> Result<()> {
    let server = Server::start_isolated_bin(&release_bin(), None, &[])?;
    let stranger = server
        .stranger()
        .context("a namespaced server has a stranger address")?;
    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("live"), FAST_X264)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("live")?.is_some())
    })?;
    let browser = Browser::start().await?;
    browser.client.goto(&server.url("/watch/live")).await?;
    let mut frames = num(
        &browser.wait_playing(Duration::from_secs(30)).await?,
        "video.framesDecoded",
    );
    let rss_start = server.rss_kib()?;
    eprintln!("RSS with one channel watched: {rss_start} KiB");

    // 1. Deeply nested AMF0 before any authentication: refused, the node stays up.
    let mut deep = connect_from(stranger, server.rtmp)?;
    rtmp_handshake(&mut deep).context("handshake before the nested command")?;
    deep.write_all(&nested_command(5_000)?)?;
    assert!(
        closed_within(&mut deep, Duration::from_secs(5)),
        "nested AMF0: connection closed"
    );
    let mut big = connect_from(stranger, server.rtmp)?;
    rtmp_handshake(&mut big).context("handshake before the 2 MB command")?;
    let _ = big.write_all(&nested_command(400_000)?); // ~2 MB; the server stops reading early
    assert!(
        closed_within(&mut big, Duration::from_secs(5)),
        "2 MB command: connection closed"
    );
    server.wait_for(Duration::from_secs(5), || {
        let log = server.log();
        Ok(log.contains("AMF0 nested deeper than 16 levels") && log.contains("before publishing"))
    })?;
    frames = still_decoding(&browser, frames).await?;

    // 2. An AAC configuration at 1 Hz, then 50 frames of 6 bytes.
    // One retry: in one full run of 219 tests the pipelined connect/createStream/publish of
    // this hand-made client was never answered (the connection timed out after 10 s); not
    // understood yet, and not seen with ffmpeg or OBS.
    let published = || server.log().contains("publishing channel=aac1");
    let mut publisher = RtmpPublisher::start(connect_from(stranger, server.rtmp)?, "aac1")?;
    if wait(
        "aac1 publishing",
        Duration::from_secs(5),
        || Ok(published()),
    )
    .is_err()
    {
        eprintln!("aac1: publish not answered; trying again");
        publisher = RtmpPublisher::start(connect_from(stranger, server.rtmp)?, "aac1")?;
        server.wait_for(Duration::from_secs(10), || Ok(published()))?;
    }
    publisher.send(8, 1, vec![0xaf, 0x00, 0x17, 0x80, 0x00, 0x00, 0x90], 0)?;
    for i in 0..50 {
        publisher.send(
            8,
            1,
            vec![0xaf, 0x01, 0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c],
            i * 23,
        )?;
    }
    server.wait_for(Duration::from_secs(5), || {
        Ok(server.log().contains("AAC sample rate"))
    })?;
    assert_eq!(server.get("/healthz")?.0, 200);
    drop(publisher);
    frames = still_decoding(&browser, frames).await?;

    // 3. 300 half-open HTTP requests: 64 are served (the cap per address), and closed after
    // the header timeout (10 s); the rest are closed at once.
    let mut half_open = Vec::new();
    for _ in 0..300 {
        if let Ok(mut s) = connect_from(stranger, server.http) {
            let _ = s.write_all(b"GET / HT");
            half_open.push(s);
        }
    }
    assert_eq!(server.get("/healthz")?.0, 200, "others are still served");
    let held_start = Instant::now();
    let mut still_open = 0;
    for s in &mut half_open {
        if !closed_within(s, Duration::from_millis(50)) {
            still_open += 1;
        }
    }
    assert!(still_open <= 64, "{still_open} half-open connections held");
    for s in &mut half_open {
        assert!(
            closed_within(s, Duration::from_secs(15)),
            "a half-open request still held"
        );
    }
    eprintln!(
        "300 half-open requests: {still_open} held, all closed {:?} after",
        held_start.elapsed()
    );
    assert!(server.metric("starling_refused_per_ip_total{listener=\"http\"}")? >= 200.0);
    drop(half_open);

    // 4. WHEP offers that never connect: 16 (the cap per address) get sessions, the rest 429;
    // STUN checks naming a live session from 500 addresses bind none of them; every slot comes
    // back within the connect deadline (10 s).
    let offer = sdp_offer(false, true, true, false);
    let mut statuses = Vec::new();
    let mut locations = Vec::new();
    let mut ufrag = None;
    for _ in 0..20 {
        let (status, head, body) = http_from(stranger, server.http, "POST", "/whep/live", &offer)?;
        statuses.push(status);
        if let Some(l) = head.lines().find_map(|l| l.strip_prefix("location:")) {
            locations.push(l.trim().rsplit('/').next().unwrap_or_default().to_owned());
        }
        ufrag = ufrag.or_else(|| {
            body.lines()
                .find_map(|l| l.strip_prefix("a=ice-ufrag:"))
                .map(str::to_owned)
        });
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        16,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        4,
        "{statuses:?}"
    );
    let ufrag = ufrag.context("an answer with a ufrag")?;
    let username = format!("{}:evil", ufrag.trim());
    for _ in 0..500 {
        let socket = UdpSocket::bind(SocketAddr::new(stranger, 0))?;
        socket.send_to(&stun_binding(&username), server.webrtc)?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let bound = server.metric("starling_webrtc_bound_addresses")?;
    assert!(
        bound <= 8.0,
        "{bound} addresses bound by unauthenticated STUN"
    );
    wait(
        "unconnected viewers dropped",
        Duration::from_secs(20),
        || Ok(server.metric("starling_viewers")? == 1.0),
    )?;
    let log = server.log();
    for id in &locations {
        assert!(
            !log.contains(id.as_str()),
            "a session id (a capability) was logged"
        );
    }
    frames = still_decoding(&browser, frames).await?;

    // 5. RTMP connections that handshake and idle: four per address, the rest closed at once.
    let mut idle = Vec::new();
    let mut handshaken = 0;
    for _ in 0..8 {
        let mut s = connect_from(stranger, server.rtmp)?;
        if rtmp_handshake(&mut s).is_ok() {
            handshaken += 1;
        }
        idle.push(s);
    }
    assert_eq!(handshaken, 4, "RTMP connections per address");
    assert!(server.metric("starling_refused_per_ip_total{listener=\"rtmp\"}")? >= 4.0);
    let _second = Ffmpeg::push_rtmp(&server.rtmp_url("second"), FAST_X264)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("second")?.is_some())
    })?;
    drop(idle);
    still_decoding(&browser, frames).await?;

    let rss_end = server.rss_kib()?;
    eprintln!("RSS after the hostile inputs: {rss_end} KiB (from {rss_start})");
    assert!(
        rss_end < rss_start + 64 * 1024,
        "RSS grew from {rss_start} to {rss_end} KiB"
    );
    browser.close().await?;
    Ok(())
}

/// A STUN Binding request with USERNAME `username` and no valid integrity.
fn stun_binding(username: &str) -> Vec<u8> {
    let padded = username.len().next_multiple_of(4);
    let mut p = vec![0x00, 0x01];
    p.extend_from_slice(&((4 + padded) as u16).to_be_bytes());
    p.extend_from_slice(&[0x21, 0x12, 0xa4, 0x42]);
    p.extend_from_slice(&rand_bytes());
    p.extend_from_slice(&0x0006u16.to_be_bytes());
    p.extend_from_slice(&(username.len() as u16).to_be_bytes());
    p.extend_from_slice(username.as_bytes());
    p.resize(20 + 4 + padded, 0);
    p
}

fn rand_bytes() -> [u8; 12] {
    let t = Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id());
    let b = t.to_le_bytes();
    let mut out = [0u8; 12];
    out.copy_from_slice(&b[..12]);
    out
}

/// SIGTERM: the node stops accepting, hangs up its sessions and exits within seconds.
#[tokio::test(flavor = "multi_thread")]
async fn sigterm_ends_sessions_and_exits_cleanly() -> Result<()> {
    let mut server = Server::start_isolated(None, &[])?;
    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("bye"), FAST_X264)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("bye")?.is_some())
    })?;
    let (status, _) = server.post(
        "/whep/bye",
        "application/sdp",
        &sdp_offer(false, true, true, false),
    )?;
    assert_eq!(status, 201);
    assert_eq!(
        server.terminate(Duration::from_secs(8))?,
        Some(true),
        "exited, with success"
    );
    let log = server.log();
    assert!(log.contains("SIGTERM") && log.contains("stopped"), "{log}");
    assert!(
        log.contains("viewer left reason=\"hung up\""),
        "the viewer was hung up: {log}"
    );
    Ok(())
}

/// Logs for machines: no colour codes when stdout is a pipe; `--log-format json` writes one
/// JSON object per line.
#[test]
fn logs_are_plain_when_piped_and_json_on_request() -> Result<()> {
    let plain = Server::start(None)?;
    let (status, _) = plain.get("/healthz")?;
    assert_eq!(status, 200);
    assert!(!plain.log().contains('\u{1b}'), "ANSI codes in a piped log");
    drop(plain);
    let json = Server::start_with_env(None, &[("STARLING_LOG_FORMAT", "json")])?;
    let _ = json.post("/whep/none", "application/sdp", "v=0\r\n")?;
    let log = json.log();
    let lines: Vec<&str> = log.lines().collect();
    ensure!(lines.len() >= 3, "{log}");
    for line in lines {
        let value: serde_json::Value =
            serde_json::from_str(line).with_context(|| format!("not JSON: {line}"))?;
        ensure!(
            value["level"].is_string() && value["timestamp"].is_string(),
            "{line}"
        );
    }
    Ok(())
}
