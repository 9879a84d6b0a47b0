//! Enhanced RTMP (the FourCC video tags of OBS 30+): an RTMP client written here with rml_rtmp
//! publishes HEVC that ffmpeg's libx265 made, and a str0m viewer that offers only H.265 gets
//! it over WHEP, Chromium H.264 made from it (and `video` as it is once the publisher comes
//! back in H.264); then AV1 from libaom, which headless Chromium decodes. (Debian's ffmpeg 5.1
//! cannot write enhanced FLV itself.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use bytes::Bytes;
use media::bitstream::{avc, hevc};
use media::tracks;
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use serde_json::Value;

use interop_tests::{num, watch_h265, Server};

/// Two or three seconds of the test pattern encoded by ffmpeg with `codec_args` into the raw
/// format `format`.
fn encode(seconds: u32, codec_args: &[&str], format: &str) -> Result<Vec<u8>> {
    let dir = std::env::temp_dir().join(format!("starling-ertmp-{}-{format}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let out = dir.join(format!("stream.{format}"));
    let ok = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi"])
        .args([
            "-i",
            "testsrc2=size=640x360:rate=30",
            "-t",
            &seconds.to_string(),
        ])
        .args(codec_args)
        .args(["-pix_fmt", "yuv420p", "-f", format])
        .arg(&out)
        .status()?
        .success();
    ensure!(ok, "ffmpeg {codec_args:?} failed");
    let data = std::fs::read(&out)?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(data)
}

/// HEVC access units from libx265 (an AUD before each, parameter sets before each keyframe).
fn hevc_access_units() -> Result<Vec<Bytes>> {
    let x265 = ["-c:v", "libx265", "-preset", "ultrafast", "-x265-params"];
    let params = "keyint=30:bframes=0:aud=1:repeat-headers=1:log-level=error";
    let stream = Bytes::from(encode(3, &[&x265[..], &[params]].concat(), "hevc")?);
    let mut units: Vec<Vec<Bytes>> = Vec::new();
    for nal in avc::annexb_nal_units(&stream) {
        if hevc::nal_type(&nal) == 35 || units.is_empty() {
            units.push(Vec::new());
        }
        if let Some(au) = units.last_mut() {
            au.push(nal);
        }
    }
    // Length-prefixed, as FLV carries them.
    Ok(units
        .into_iter()
        .map(|au| {
            let mut out = Vec::new();
            for nal in au.iter().filter(|n| hevc::nal_type(n) != 35) {
                out.extend((nal.len() as u32).to_be_bytes());
                out.extend_from_slice(nal);
            }
            Bytes::from(out)
        })
        .filter(|au| !au.is_empty())
        .collect())
}

/// An hvcC record holding the VPS, SPS and PPS found in `au` (length-prefixed).
fn hvcc(au: &Bytes) -> Result<Bytes> {
    let nals = avc::avcc_nal_units(au, 4)?;
    let mut r = vec![1];
    r.extend([0; 20]);
    r.push(0xfc | 3); // 4-byte lengths
    let sets: Vec<&Bytes> = nals
        .iter()
        .filter(|n| (32..=34).contains(&hevc::nal_type(n)))
        .collect();
    ensure!(
        sets.len() >= 3,
        "the first access unit has no parameter sets"
    );
    r.push(sets.len() as u8);
    for nal in sets {
        r.push(0x80 | hevc::nal_type(nal));
        r.extend(1u16.to_be_bytes());
        r.extend((nal.len() as u16).to_be_bytes());
        r.extend_from_slice(nal);
    }
    Ok(Bytes::from(r))
}

/// A publishing RTMP session over a blocking socket.
struct Publisher {
    stream: TcpStream,
    session: ClientSession,
}

impl Publisher {
    fn connect(addr: SocketAddr, stream_key: &str) -> Result<Self> {
        let mut stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let remaining = interop_tests::rtmp_handshake(&mut stream)?;
        let (session, results) = ClientSession::new(ClientSessionConfig::new())?;
        let mut publisher = Self { stream, session };
        publisher.handle(results)?;
        publisher.input(&remaining)?;
        let request = publisher.session.request_connection("live".into())?;
        publisher.handle(vec![request])?;
        publisher.wait_for(|e| matches!(e, ClientSessionEvent::ConnectionRequestAccepted))?;
        let request = publisher
            .session
            .request_publishing(stream_key.into(), PublishRequestType::Live)?;
        publisher.handle(vec![request])?;
        publisher.wait_for(|e| matches!(e, ClientSessionEvent::PublishRequestAccepted))?;
        Ok(publisher)
    }

    fn input(&mut self, bytes: &[u8]) -> Result<Vec<ClientSessionEvent>> {
        let results = self.session.handle_input(bytes)?;
        self.handle(results)
    }

    fn handle(&mut self, results: Vec<ClientSessionResult>) -> Result<Vec<ClientSessionEvent>> {
        let mut events = Vec::new();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => self.stream.write_all(&p.bytes)?,
                ClientSessionResult::RaisedEvent(e) => events.push(e),
                ClientSessionResult::UnhandleableMessageReceived(_) => {}
            }
        }
        Ok(events)
    }

    fn wait_for(&mut self, want: impl Fn(&ClientSessionEvent) -> bool) -> Result<()> {
        let mut buf = vec![0u8; 8192];
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let n = self.stream.read(&mut buf)?;
            ensure!(n > 0, "server closed the connection");
            let events = self.input(&buf[..n])?;
            if let Some(e) = events
                .iter()
                .find(|e| matches!(e, ClientSessionEvent::ConnectionRequestRejected { .. }))
            {
                bail!("rejected: {e:?}");
            }
            if events.iter().any(&want) {
                return Ok(());
            }
        }
        bail!("no answer from the server")
    }

    /// Sends one video tag body per frame at 30 fps, in real time, from a thread, until the
    /// tags run out or `stop` is set; then hangs up.
    fn send_paced(
        mut self,
        tags: Vec<Vec<u8>>,
        stop: Arc<AtomicBool>,
    ) -> std::thread::JoinHandle<Result<()>> {
        std::thread::spawn(move || {
            let began = Instant::now();
            for (i, tag) in tags.into_iter().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let ms = (i as u32) * 1000 / 30;
                self.video(tag, ms)?;
                let due = began + Duration::from_millis(u64::from(ms));
                std::thread::sleep(due.saturating_duration_since(Instant::now()));
            }
            Ok(())
        })
    }

    fn video(&mut self, body: Vec<u8>, ms: u32) -> Result<()> {
        let r =
            self.session
                .publish_video_data(Bytes::from(body), RtmpTimestamp::new(ms), false)?;
        self.handle(vec![r]).map(|_| ())
    }
}

/// Publishes `frames` of H.265 (30 fps, in real time) to `channel` over enhanced RTMP, from a
/// thread that hangs up when they are sent or `stop` is set.
fn publish_hevc(
    server: &Server,
    channel: &str,
    frames: usize,
    stop: Arc<AtomicBool>,
) -> Result<std::thread::JoinHandle<Result<()>>> {
    let units = hevc_access_units()?;
    ensure!(units.len() >= 60, "{} access units", units.len());
    let mut publisher = Publisher::connect(server.rtmp, channel)?;
    // SequenceStart (key frame, packet type 0) with the hvcC record.
    let mut start = vec![0x90];
    start.extend(b"hvc1");
    start.extend_from_slice(&hvcc(&units[0])?);
    publisher.video(start, 0)?;
    let tags = units
        .iter()
        .cycle()
        .take(frames)
        .map(|au| {
            let key = avc::avcc_nal_units(au, 4)?.iter().any(|u| hevc::is_irap(u));
            // CodedFrames: frame type key (1) or inter (2), composition time 0.
            let mut tag = vec![if key { 0x91 } else { 0xa1 }];
            tag.extend(b"hvc1");
            tag.extend([0, 0, 0]);
            tag.extend_from_slice(au);
            Ok(tag)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(publisher.send_paced(tags, stop))
}

/// Waits until Chromium's player has decoded more than `past` frames; its state then.
async fn decoded_past(browser: &interop_tests::Browser, past: f64, what: &str) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = browser.player().await?;
        if num(&p, "video.framesDecoded") > past {
            return Ok(p);
        }
        ensure!(Instant::now() < deadline, "{what}: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// H.265 over enhanced RTMP: a viewer that offers H.265 gets it as it is; Chromium, which
/// offers no H.265, gets H.264 transcoded for it on demand (and the player says so), and the
/// transcoder stops a while after Chromium leaves.
#[tokio::test(flavor = "multi_thread")]
async fn hevc_over_enhanced_rtmp_reaches_a_viewer_that_offers_h265_and_chromium() -> Result<()> {
    let server = Server::start_isolated(Some("[transcode]\non_demand_idle_secs = 2\n"), &[])?;
    let sender = publish_hevc(&server, "studio", 900, Arc::default())?;
    server.wait_for(Duration::from_secs(10), || {
        Ok(server
            .channel("studio")?
            .is_some_and(|c| c.to_string().contains("H.265")))
    })?;
    let (frames, keyframes) =
        watch_h265(&server, "studio", Instant::now() + Duration::from_secs(4))?;
    ensure!(
        frames >= 60 && keyframes >= 1,
        "{frames} frames, {keyframes} keyframes"
    );
    ensure!(
        !server.log().contains("a viewer needs H.264"),
        "no transcoder for a viewer that decodes H.265:\n{}",
        server.log()
    );

    let browser = interop_tests::Browser::start().await?;
    browser.client.goto(&server.url("/watch/studio")).await?;
    let first = decoded_past(&browser, 0.0, "Chromium decoded nothing").await?;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let later = browser.player().await?;
    let decoded = num(&later, "video.framesDecoded") - num(&first, "video.framesDecoded");
    let notice = browser
        .eval("return document.getElementById('transcoding').textContent;")
        .await?;
    eprintln!("Chromium: {decoded} frames in 4 s; notice {notice}; {later}");
    ensure!(
        decoded >= 100.0,
        "Chromium decodes the H.264 made for it: {first} -> {later}"
    );
    ensure!(
        later["video"]["codecId"]
            .as_str()
            .is_some_and(|c| c.contains("packetization-mode")),
        "H.264 (its fmtp): {later}"
    );
    ensure!(
        notice
            .as_str()
            .is_some_and(|n| n.contains("transcodes it to H.264")),
        "the player says why: {notice}"
    );
    // Leaving the page hangs up (DELETE); nobody needs H.264 any more, and the transcoder
    // stops (on_demand_idle_secs = 2).
    browser.client.goto("about:blank").await?;
    browser.close().await?;
    server.wait_for(Duration::from_secs(15), || {
        Ok(server.log().contains("transcoder stopped"))
    })?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    Ok(())
}

/// Chromium watches H.264 made from H.265; the publisher hangs up and comes back within the
/// grace period in H.264 (ffmpeg), of which nothing makes `h264.video`: the viewer plays on,
/// on the same session, from `video` as it is.
#[tokio::test(flavor = "multi_thread")]
async fn a_transcoded_viewer_plays_on_when_the_publisher_returns_in_h264() -> Result<()> {
    let server = Server::start_isolated(Some("[bus]\nreconnect_grace_secs = 10\n"), &[])?;
    let stop = Arc::new(AtomicBool::new(false));
    let sender = publish_hevc(&server, "swap", 1800, stop.clone())?;
    let browser = interop_tests::Browser::start().await?;
    browser.client.goto(&server.url("/watch/swap")).await?;
    decoded_past(&browser, 0.0, "Chromium decoded nothing").await?;
    let first = browser.player_with_layer().await?;
    ensure!(
        first["layer"]["current"] == tracks::VIDEO_H264,
        "Chromium gets H.264 made for it: {first}"
    );
    // A second of it, then the publisher hangs up.
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    let away = browser.player().await?;
    let _ffmpeg = interop_tests::Ffmpeg::push_rtmp(&server.rtmp_url("swap"), &["-bf", "0"])?;
    let back = num(&away, "video.framesDecoded") + 60.0;
    let later = decoded_past(&browser, back, "no picture after the publisher came back").await?;
    eprintln!(
        "frames decoded: {} at first, {} when the H.265 publisher left, {} back in H.264 ({})",
        num(&first, "video.framesDecoded"),
        num(&away, "video.framesDecoded"),
        num(&later, "video.framesDecoded"),
        later["layer"]["current"],
    );
    ensure!(
        later["layer"]["current"] == tracks::VIDEO && later["sessions"] == first["sessions"],
        "the same session took `video`: {first} -> {later}"
    );
    browser.close().await
}

/// The OBUs of a low-overhead AV1 stream, each with its type; temporal units split at the
/// temporal delimiters (which are dropped, as FLV carries them).
fn av1_temporal_units(stream: &[u8]) -> Result<Vec<(Vec<u8>, bool)>> {
    let mut units: Vec<(Vec<u8>, bool)> = Vec::new();
    let mut at = 0;
    while at < stream.len() {
        let header = stream[at];
        let obu_type = (header >> 3) & 0x0f;
        let ext = usize::from(header & 0x04 != 0);
        ensure!(header & 0x02 != 0, "OBUs without sizes");
        let (mut size, mut read, mut shift) = (0usize, at + 1 + ext, 0);
        loop {
            let b = *stream.get(read).context("truncated size")?;
            size |= usize::from(b & 0x7f) << shift;
            read += 1;
            shift += 7;
            if b & 0x80 == 0 {
                break;
            }
        }
        let end = read + size;
        ensure!(end <= stream.len(), "truncated OBU");
        match obu_type {
            2 => units.push((Vec::new(), false)), // temporal delimiter: a new unit
            _ => {
                let Some((unit, key)) = units.last_mut() else {
                    bail!("OBU before the first temporal delimiter");
                };
                // A frame (6) or frame header (3): show_existing_frame = 0, frame_type = KEY.
                if matches!(obu_type, 3 | 6) {
                    let first = stream.get(read).copied().unwrap_or(0xff);
                    *key |= first >> 7 == 0 && (first >> 5) & 0x03 == 0;
                }
                unit.extend_from_slice(&stream[at..end]);
            }
        }
        at = end;
    }
    Ok(units.into_iter().filter(|(u, _)| !u.is_empty()).collect())
}

#[tokio::test(flavor = "multi_thread")]
async fn av1_over_enhanced_rtmp_plays_in_chromium() -> Result<()> {
    let server = Server::start_isolated(None, &[])?;
    let aom = ["-c:v", "libaom-av1", "-usage", "realtime", "-cpu-used", "8"];
    let gop = ["-g", "30", "-keyint_min", "30"];
    let units = av1_temporal_units(&encode(2, &[&aom[..], &gop[..]].concat(), "obu")?)?;
    ensure!(units.len() >= 50 && units[0].1, "{} units", units.len());
    // av1C: marker and version, then the sequence header OBU as the config OBUs.
    let first = &units[0].0;
    let sequence_header_len = {
        ensure!(
            (first[0] >> 3) & 0x0f == 1,
            "the first OBU is the sequence header"
        );
        let mut size = 0usize;
        let mut i = 1;
        while first[i] & 0x80 != 0 {
            size |= usize::from(first[i] & 0x7f) << (7 * (i - 1));
            i += 1;
        }
        size |= usize::from(first[i]) << (7 * (i - 1));
        i + 1 + size
    };
    let mut start = vec![0x90];
    start.extend(b"av01");
    start.extend([0x81, 0x08, 0x0c, 0x00]);
    start.extend_from_slice(&first[..sequence_header_len]);
    let mut publisher = Publisher::connect(server.rtmp, "studio")?;
    publisher.video(start, 0)?;
    let tags = units
        .iter()
        .cycle()
        .take(300)
        .map(|(unit, key)| {
            // CodedFrames; AV1 carries no composition time.
            let mut tag = vec![if *key { 0x91 } else { 0xa1 }];
            tag.extend(b"av01");
            tag.extend_from_slice(unit);
            tag
        })
        .collect();
    let sender = publisher.send_paced(tags, Arc::default());
    server.wait_for(Duration::from_secs(10), || {
        Ok(server
            .channel("studio")?
            .is_some_and(|c| c.to_string().contains("AV1")))
    })?;
    let browser = interop_tests::Browser::start().await?;
    browser.client.goto(&server.url("/watch/studio")).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let p = browser.player().await?;
        if interop_tests::num(&p, "video.framesDecoded") >= 30.0 {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "Chromium decoded too little AV1: {p}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    browser.close().await?;
    sender
        .join()
        .map_err(|_| anyhow::anyhow!("sender panicked"))??;
    Ok(())
}
