//! First light: ffmpeg pushes RTMP, headless Chromium watches over WHEP on the player page. The
//! server runs as a user runs it, on its default addresses (0.0.0.0), in a network namespace of
//! its own; ffmpeg and Chromium reach it over a veth pair, not loopback.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use interop_tests::{num, Browser, Ffmpeg, Server};

/// x264 settings OBS users get with "High" and B-frames off, and a 2 s GOP at 30 fps.
const HIGH_NO_BFRAMES_2S_GOP: &[&str] = &[
    "-profile:v",
    "high",
    "-bf",
    "0",
    "-g",
    "60",
    "-keyint_min",
    "60",
    "-sc_threshold",
    "0",
];

async fn wait_player(
    browser: &Browser,
    limit: Duration,
    what: &str,
    check: impl Fn(&serde_json::Value) -> bool,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + limit;
    loop {
        let p = browser.player().await?;
        if check(&p) {
            return Ok(p);
        }
        ensure!(
            Instant::now() < deadline,
            "{what} not reached in {limit:?}; player: {p}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rtmp_publish_plays_in_chromium_with_audio_and_ends_cleanly() -> Result<()> {
    // A short reconnect grace: this test is about the end of a stream.
    let server = Server::start_isolated(Some("[bus]\nreconnect_grace_secs = 1\n"), &[])?;
    let mut ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("alice"), HIGH_NO_BFRAMES_2S_GOP)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("alice")?.is_some())
    })?;

    let (_, index) = server.get("/")?;
    assert!(
        index.contains("/watch/alice"),
        "index lists the live channel"
    );

    let browser = Browser::start().await?;
    browser.client.goto(&server.url("/watch/alice")).await?;
    let first = wait_player(&browser, Duration::from_secs(30), "video decoded", |p| {
        num(p, "video.framesDecoded") > 0.0
    })
    .await?;
    let first_audio = wait_player(&browser, Duration::from_secs(10), "audio playing", |p| {
        num(p, "audio.totalSamplesReceived") > 0.0
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = browser.player().await?;
    assert!(
        num(&later, "video.framesDecoded") > num(&first, "video.framesDecoded") + 30.0,
        "video keeps decoding: {first} -> {later}"
    );
    // Opus at 20 ms a packet: ~150 in 3 s, nearly all sealed by the server's own sender (str0m
    // sends one every 500 ms), and decoded, not concealed.
    let audio = |stat: &str| num(&later, stat) - num(&first_audio, stat);
    assert!(
        audio("audio.packetsReceived") > 100.0,
        "audio packets arrive: {later}"
    );
    let (samples, concealed) = (
        audio("audio.totalSamplesReceived"),
        audio("audio.concealedSamples"),
    );
    assert!(
        concealed < 0.2 * samples,
        "audio decodes ({concealed} of {samples} samples concealed): {later}"
    );
    assert!(
        samples > 48_000.0,
        "audio keeps playing out: {first_audio} -> {later}"
    );
    assert_eq!(num(&later, "video.frameWidth"), 640.0);
    assert!(later["state"] == "live");
    // Well before the 16 s an unconfirmed session keeps it: the browser's SRTCP showed it
    // finished its handshake, and the session let OpenSSL's state go.
    let log = server.log();
    let at = |what: &str| log.lines().find(|l| l.contains(what)).and_then(logged_at);
    let (connected, let_go) = (at("viewer connected"), at("OpenSSL's state let go"));
    let after = connected
        .zip(let_go)
        .map(|(c, g)| (g - c).rem_euclid(86_400.0));
    assert!(
        after.is_some_and(|s| s < 8.0),
        "DTLS state let go {after:?} s after the viewer connected"
    );
    let (_, metrics) = server.get("/metrics")?;
    assert!(metrics.contains("starling_viewers 1\n"), "{metrics}");
    assert!(metrics.contains("starling_live_channels 1\n"), "{metrics}");

    // The publisher leaves: the channel ends for the viewer, cleanly.
    ffmpeg.kill();
    server.wait_for(Duration::from_secs(10), || {
        Ok(server.channel("alice")?.is_none())
    })?;
    wait_player(&browser, Duration::from_secs(10), "ended state", |p| {
        p["state"] == "ended"
    })
    .await?;
    assert!(
        server.log().contains("viewer left"),
        "the server closed the viewer's session"
    );
    for line in server.log().lines().filter(|l| l.contains("server-added")) {
        eprintln!("{line}");
    }

    // It comes back: the page reconnects by itself.
    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("alice"), HIGH_NO_BFRAMES_2S_GOP)?;
    wait_player(&browser, Duration::from_secs(30), "reconnect", |p| {
        num(p, "sessions") >= 2.0 && num(p, "video.framesDecoded") > 0.0
    })
    .await?;
    browser.close().await
}

/// The newcomer's path, as the README tells it: `scripts/serve` with no arguments, ffmpeg
/// pushing RTMP, the player page in Chromium.
#[tokio::test(flavor = "multi_thread")]
async fn the_readme_path_scripts_serve_push_and_watch() -> Result<()> {
    let server = Server::start_isolated_script(None, &[])?;
    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("newcomer"), HIGH_NO_BFRAMES_2S_GOP)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("newcomer")?.is_some())
    })?;
    let browser = Browser::start().await?;
    browser.client.goto(&server.url("/watch/newcomer")).await?;
    browser.wait_playing(Duration::from_secs(30)).await?;
    browser.close().await
}

/// WebRTC on a dual-stack wildcard (`[::]:8189`): an IPv4 viewer arrives IPv4-mapped, and is
/// answered from the address it used.
#[tokio::test(flavor = "multi_thread")]
async fn webrtc_on_a_dual_stack_wildcard_plays() -> Result<()> {
    let server = Server::start_isolated(Some("[webrtc]\nlisten = \"[::]:8189\"\n"), &[])?;
    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("dual"), HIGH_NO_BFRAMES_2S_GOP)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("dual")?.is_some())
    })?;
    let browser = Browser::start().await?;
    browser.client.goto(&server.url("/watch/dual")).await?;
    browser.wait_playing(Duration::from_secs(30)).await?;
    assert!(
        server.log().contains("webrtc=[::]:8189"),
        "listening dual stack"
    );
    browser.close().await
}

/// A viewer joining mid-GOP gets its first frame from the cached group, not at the next keyframe.
#[tokio::test(flavor = "multi_thread")]
async fn viewer_joining_mid_gop_decodes_before_the_next_keyframe() -> Result<()> {
    let server = Server::start_isolated(None, &[])?;
    // A 6 s GOP leaves a wide margin between joining and the next keyframe.
    let gop = [
        "-profile:v",
        "high",
        "-bf",
        "0",
        "-g",
        "180",
        "-keyint_min",
        "180",
        "-sc_threshold",
        "0",
    ];
    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("gop"), &gop)?;
    let group = |server: &Server| -> Result<Option<u64>> {
        let Some(c) = server.channel("gop")? else {
            return Ok(None);
        };
        let tracks = c["tracks"].as_array().cloned().unwrap_or_default();
        Ok(tracks
            .iter()
            .find(|t| t["name"] == "video")
            .and_then(|t| t["latest_group"].as_u64()))
    };
    server.wait_for(Duration::from_secs(20), || Ok(group(&server)?.is_some()))?;
    let browser = Browser::start().await?;
    browser.client.goto(&server.url("/watch/gop")).await?;
    wait_player(&browser, Duration::from_secs(30), "first viewer", |p| {
        num(p, "video.framesDecoded") > 0.0
    })
    .await?;

    // Join again just after a keyframe, so the next one is a whole GOP away.
    let start = group(&server)?;
    server.wait_for(Duration::from_secs(15), || Ok(group(&server)? != start))?;
    let joined_in = group(&server)?;
    browser.eval("connect(); return true;").await?;
    let p = wait_player(
        &browser,
        Duration::from_secs(20),
        "first frame after rejoin",
        |p| num(p, "sessions") >= 2.0 && num(p, "video.framesDecoded") > 0.0,
    )
    .await?;
    eprintln!(
        "time to first frame on rejoin (offer, WHEP POST, ICE, DTLS, first rendered frame): {} ms",
        p["ttffMs"]
    );
    assert_eq!(
        group(&server)?,
        joined_in,
        "first frame decoded only after the next keyframe: {p}"
    );
    browser.close().await
}

/// OBS's default x264 settings send B-frames: the channel tells viewers which setting to change.
#[test]
fn bframes_publisher_gets_a_clear_notice() -> Result<()> {
    let server = Server::start_isolated(None, &[])?;
    let _ffmpeg = Ffmpeg::push_rtmp(
        &server.rtmp_url("obs"),
        &["-profile:v", "high", "-bf", "3", "-g", "60"],
    )?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("obs")?.is_some_and(|c| {
            c["notice"]
                .as_str()
                .is_some_and(|n| n.contains("bframes=0"))
        }))
    })?;
    Ok(())
}

/// Seconds since midnight (UTC) of a server log line: `2026-11-25T01:02:03.456789Z  INFO ...`.
fn logged_at(line: &str) -> Option<f64> {
    let mut fields = line.get(11..26)?.split(':');
    let (h, m, s) = (fields.next()?, fields.next()?, fields.next()?);
    Some(h.parse::<f64>().ok()? * 3600.0 + m.parse::<f64>().ok()? * 60.0 + s.parse::<f64>().ok()?)
}
