//! FTL ingest, against a client written here from the protocol (ftl-sdk's control conversation,
//! then RTP from ffmpeg's RTP muxer, or packets made by hand), watched in headless Chromium.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use aws_lc_rs::hmac;
use interop_tests::{Browser, Server, FAST_X264};

const CHANNEL_ID: u32 = 1234;
const VIDEO_SSRC: u32 = CHANNEL_ID + 1;
const AUDIO_SSRC: u32 = CHANNEL_ID;
const CONFIG: &str = "[channels.studio]\nkey = \"s3cret\"\n\n[ftl]\nidle_timeout_secs = 2\n\n\
                      [ftl.channels]\n\"1234\" = \"studio\"\n\n[bus]\nreconnect_grace_secs = 1\n";

/// The control side of an FTL client, as ftl-sdk speaks it.
struct Control {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Control {
    fn connect(server: SocketAddr) -> Result<Self> {
        let stream = TcpStream::connect(server)?;
        stream.set_read_timeout(Some(Duration::from_secs(5)))?;
        let reader = BufReader::new(stream.try_clone()?);
        Ok(Self { stream, reader })
    }

    fn send(&mut self, command: &str) -> Result<()> {
        Ok(self
            .stream
            .write_all(format!("{command}\r\n\r\n").as_bytes())?)
    }

    /// One reply line; empty when the server closed the connection.
    fn reply(&mut self) -> Result<String> {
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        Ok(line)
    }

    /// HMAC, CONNECT, attributes, `.`: the reply to the step that ended it, and the media port
    /// when all went well.
    fn handshake(&mut self, channel_id: u32, key: &str) -> Result<(String, Option<u16>)> {
        self.send("HMAC")?;
        let challenge = self.reply()?;
        let hex = challenge
            .strip_prefix("200 ")
            .and_then(|h| h.strip_suffix('\n'))
            .context("challenge line")?;
        ensure!(
            hex.len() % 2 == 0,
            "ftl-sdk needs an even-length challenge: {challenge:?}"
        );
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16))
            .collect::<Result<_, _>>()?;
        let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA512, key.as_bytes()), &bytes);
        let tag: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        self.send(&format!("CONNECT {channel_id} ${tag}"))?;
        let connected = self.reply()?;
        if connected != "200\n" {
            return Ok((connected, None));
        }
        for attribute in [
            "ProtocolVersion: 0.9".to_owned(),
            "VendorName: starling-interop".to_owned(),
            "VendorVersion: 1".to_owned(),
            "Video: true".to_owned(),
            "VideoCodec: H264".to_owned(),
            "VideoHeight: 360".to_owned(),
            "VideoWidth: 640".to_owned(),
            "VideoPayloadType: 96".to_owned(),
            format!("VideoIngestSSRC: {VIDEO_SSRC}"),
            "Audio: true".to_owned(),
            "AudioCodec: OPUS".to_owned(),
            "AudioPayloadType: 97".to_owned(),
            format!("AudioIngestSSRC: {AUDIO_SSRC}"),
        ] {
            self.send(&attribute)?;
        }
        self.send(".")?;
        let ready = self.reply()?;
        // ftl-sdk: sscanf(reply, "%*[^.]. Use UDP port %d\n", &port)
        let port = ready
            .split_once(". Use UDP port ")
            .and_then(|(_, p)| p.trim_end().parse().ok());
        Ok((ready, port))
    }
}

/// ffmpeg sending H.264 and Opus as RTP with FTL's payload types and SSRCs.
fn ffmpeg_rtp(port: u16) -> Result<Child> {
    let to = format!("rtp://127.0.0.1:{port}");
    Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"])
        .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
        .args([
            "-t", "60", "-map", "0:v", "-c:v", "libx264", "-pix_fmt", "yuv420p",
        ])
        .args(FAST_X264)
        // OBS sends SPS and PPS before every keyframe.
        .args(["-bsf:v", "dump_extra=freq=keyframe"])
        .args([
            "-f",
            "rtp",
            "-payload_type",
            "96",
            "-ssrc",
            &VIDEO_SSRC.to_string(),
        ])
        .arg(format!("{to}?pkt_size=1200"))
        .args(["-map", "1:a", "-c:a", "libopus", "-b:a", "64k"])
        .args([
            "-f",
            "rtp",
            "-payload_type",
            "97",
            "-ssrc",
            &AUDIO_SSRC.to_string(),
        ])
        .arg(&to)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn ffmpeg (scripts/test installs it)")
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn an_ftl_client_streams_and_chromium_plays_it() -> Result<()> {
    let server = Server::start(Some(CONFIG))?;
    let mut control = Control::connect(server.ftl)?;
    let (reply, port) = control.handshake(CHANNEL_ID, "s3cret")?;
    let port = port.with_context(|| format!("no media port in {reply:?}"))?;
    let mut ffmpeg = Killed(ffmpeg_rtp(port)?);
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("studio")?.is_some())
    })?;

    let browser = Browser::start().await?;
    browser.client.goto(&server.url("/watch/studio")).await?;
    let first = browser.wait_playing(Duration::from_secs(30)).await?;
    // The client keeps its control connection alive as ftl-sdk does.
    control.send(&format!("PING {CHANNEL_ID}"))?;
    assert_eq!(control.reply()?, "201\n");
    browser.keeps_playing(&first, 3).await?;
    browser.close().await?;

    // The encoder stops: the server says 408 (no media) and the channel ends.
    let _ = ffmpeg.0.kill();
    assert_eq!(control.reply()?, "408\n");
    server.wait_for(Duration::from_secs(10), || {
        Ok(server.channel("studio")?.is_none())
    })?;
    server.wait_for(Duration::from_secs(10), || {
        Ok(server.log().contains("server-added"))
    })?;
    let log = server.log();
    for line in log.lines().filter(|l| l.contains("server-added")) {
        eprintln!("{line}"); // read by bench/run
    }
    ensure!(log.contains("ftl publisher left"), "{log}");
    ensure!(!log.contains("s3cret"), "the key is never logged");
    Ok(())
}

#[test]
fn bad_keys_a_second_publisher_long_lines_and_garbage_are_handled() -> Result<()> {
    let server = Server::start(Some(CONFIG))?;
    let refused = |id: u32, key: &str| -> Result<String> {
        let mut c = Control::connect(server.ftl)?;
        let (reply, port) = c.handshake(id, key)?;
        ensure!(port.is_none(), "{id} got in with {reply:?}");
        ensure!(c.reply()?.is_empty(), "the server closes after refusing");
        Ok(reply)
    };
    assert_eq!(refused(CHANNEL_ID, "wrong-guess")?, "405\n");
    assert_eq!(
        refused(999, "s3cret")?,
        "405\n",
        "an id mapped to no configured channel"
    );

    let mut bad = Control::connect(server.ftl)?;
    bad.send("CONNECT 1234 $nothex")?;
    assert_eq!(bad.reply()?, "400\n", "CONNECT before HMAC");

    let mut long = Control::connect(server.ftl)?;
    long.send("HMAC")?;
    long.reply()?;
    long.send(&"A".repeat(5000))?;
    assert_eq!(long.reply()?, "400\n", "a control line over 1 KiB");

    let mut first = Control::connect(server.ftl)?;
    let (_, port) = first.handshake(CHANNEL_ID, "s3cret")?;
    let port = port.context("media port")?;
    assert_eq!(refused(CHANNEL_ID, "s3cret")?, "406\n");

    // Garbage on the media port (bounded: 500 datagrams) does not end the stream, and the
    // control connection still answers.
    let media = UdpSocket::bind("127.0.0.1:0")?;
    for i in 0..500u32 {
        let mut junk = vec![(i % 256) as u8; 40 + (i as usize * 7) % 1300];
        if i % 3 == 0 {
            junk[0] = 0x80; // RTP-looking, with the video SSRC: broken payloads
            junk[1] = 96;
            junk[8..12].copy_from_slice(&VIDEO_SSRC.to_be_bytes());
        }
        media.send_to(&junk, ("127.0.0.1", port))?;
    }
    first.send(&format!("PING {CHANNEL_ID}"))?;
    assert_eq!(first.reply()?, "201\n");
    ensure!(
        server.channel("studio")?.is_some(),
        "the channel survived the garbage"
    );

    let log = server.log();
    ensure!(!log.contains("wrong-guess"), "keys stay out of the log");
    Ok(())
}

/// RTP with FU-A fragments, made by hand.
fn packet(seq: u16, ts: u32, marker: bool, payload: &[u8]) -> Vec<u8> {
    let mut p = vec![0x80, 96 | (u8::from(marker) << 7)];
    p.extend(seq.to_be_bytes());
    p.extend(ts.to_be_bytes());
    p.extend(VIDEO_SSRC.to_be_bytes());
    p.extend_from_slice(payload);
    p
}

/// A keyframe: SPS and PPS (of a real 640x360 baseline stream), then an IDR slice in FU-A.
fn keyframe(first_seq: u16, ts: u32) -> Vec<Vec<u8>> {
    let sps = [
        0x67, 0x42, 0xc0, 0x1e, 0xda, 0x02, 0x80, 0xbf, 0xe5, 0x84, 0, 0, 3, 0, 4, 0, 0, 3, 0,
        0xf0, 0x3c, 0x58, 0xba, 0x80,
    ];
    let pps = [0x68, 0xce, 0x0f, 0xc8];
    let mut packets = vec![
        packet(first_seq, ts, false, &sps),
        packet(first_seq + 1, ts, false, &pps),
    ];
    for i in 0..3u16 {
        let fu = 0x05 | if i == 0 { 0x80 } else { 0 } | if i == 2 { 0x40 } else { 0 };
        let mut payload = vec![0x7c, fu];
        payload.extend(std::iter::repeat_n(0x11, 1000));
        packets.push(packet(first_seq + 2 + i, ts, i == 2, &payload));
    }
    packets
}

#[test]
fn a_lost_video_packet_is_asked_for_with_a_nack_and_foreign_packets_are_ignored() -> Result<()> {
    let server = Server::start(Some(CONFIG))?;
    let mut control = Control::connect(server.ftl)?;
    let (reply, port) = control.handshake(CHANNEL_ID, "s3cret")?;
    let port = port.with_context(|| format!("no media port in {reply:?}"))?;
    let to = SocketAddr::from(([127, 0, 0, 1], port));

    // From another address: ignored, so no NACK comes back for its gap.
    let stranger = UdpSocket::bind("127.0.0.2:0")?;
    stranger.set_read_timeout(Some(Duration::from_millis(500)))?;
    for (i, p) in keyframe(500, 0).iter().enumerate() {
        if i != 3 {
            stranger.send_to(p, to)?;
        }
    }
    let mut buf = [0u8; 1500];
    ensure!(
        stranger.recv_from(&mut buf).is_err(),
        "a stranger got an answer"
    );

    let media = UdpSocket::bind("127.0.0.1:0")?;
    media.set_read_timeout(Some(Duration::from_secs(2)))?;
    let frame = keyframe(100, 0);
    for (i, p) in frame.iter().enumerate() {
        if i != 3 {
            media.send_to(p, to)?; // packet 103 is "lost"
        }
    }
    let (n, _) = media.recv_from(&mut buf).context("no NACK")?;
    let nack = &buf[..n];
    ensure!(
        nack[0] == 0x81 && nack[1] == 205,
        "a generic NACK: {nack:?}"
    );
    ensure!(
        nack[8..12] == VIDEO_SSRC.to_be_bytes(),
        "for the video SSRC"
    );
    ensure!(
        nack[12..14] == 103u16.to_be_bytes(),
        "asking for 103: {nack:?}"
    );

    // The resend completes the keyframe; two more keyframes follow.
    media.send_to(&frame[3], to)?;
    for (n, first_seq) in [(1u32, 105u16), (2, 110)] {
        for p in keyframe(first_seq, 3000 * n) {
            media.send_to(&p, to)?;
        }
    }
    server.wait_for(Duration::from_secs(5), || {
        let channel = server.channel("studio")?.unwrap_or_default();
        Ok(channel["tracks"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["name"] == "video" && !t["latest_group"].is_null())
        }))
    })?;
    control.send("DISCONNECT")?;
    server.wait_for(Duration::from_secs(10), || {
        Ok(server.channel("studio")?.is_none())
    })?;
    if server.log().contains("ftl publisher left; channel ended") {
        Ok(())
    } else {
        bail!("{}", server.log())
    }
}
