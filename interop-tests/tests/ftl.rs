//! FTL ingest, against a client written here from the protocol (ftl-sdk's control conversation,
//! then RTP from ffmpeg's RTP muxer, or packets made by hand), watched in headless Chromium.

use std::net::{SocketAddr, UdpSocket};
use std::process::Child;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use interop_tests::ftl::{ffmpeg_rtp, Control};
use interop_tests::{Browser, Server};

const CHANNEL_ID: u32 = 1234;
const VIDEO_SSRC: u32 = CHANNEL_ID + 1;
const CONFIG: &str = "[channels.studio]\nkey = \"s3cret\"\n\n[ftl]\nidle_timeout_secs = 2\n\n\
                      [ftl.channels]\n\"1234\" = \"studio\"\n\n[bus]\nreconnect_grace_secs = 1\n";

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
    let mut ffmpeg = Killed(ffmpeg_rtp(&format!("127.0.0.1:{port}"), CHANNEL_ID)?);
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
