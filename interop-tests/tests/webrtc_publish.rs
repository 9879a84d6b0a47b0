//! WebRTC publishing end to end: Chromium publishes over WHIP (simulcast, trickle ICE) from a
//! fake camera, a second Chromium watches over WHEP and switches layers; a viewer keeps its
//! session while an RTMP publisher drops and comes back within the grace period.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use interop_tests::{num, Browser, Ffmpeg, Server};
use serde_json::Value;

const PLAYER: &str = "const s = window.starling || {}; return JSON.parse(JSON.stringify({state: s.state, sessions: s.sessions, video: s.video || null, audio: s.audio || null, layer: s.layer || null}));";
const PUBLISHER: &str = "return JSON.parse(JSON.stringify(window.starlingPublish || {}));";

fn video_tracks(server: &Server, channel: &str) -> Result<Vec<String>> {
    let Some(c) = server.channel(channel)? else {
        return Ok(vec![]);
    };
    Ok(c["tracks"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter(|t| t["bitrate"].as_u64().is_some_and(|b| b > 0))
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .filter(|n| n.starts_with("video"))
        .collect())
}

/// Tests here run two at a time, each with two browsers. Those that measure timing in the
/// browser (bandwidth estimation, freezes across layer switches) run alone: with two more
/// browsers on the same 2 cores, probes slowed past their deadline and a switch froze twice in
/// full runs, where alone it froze in none of three runs.
static CPU: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

#[tokio::test(flavor = "multi_thread")]
async fn chromium_publishes_simulcast_over_whip_and_a_viewer_switches_layers() -> Result<()> {
    let _alone = CPU.write().await;
    simulcast_and_switch("vp8").await
}

/// The same in H.264, which viewers get as shared RTP payloads (str0m's RTP mode): layer
/// switches keep sequence numbers and timestamps continuous across the layers' streams.
#[tokio::test(flavor = "multi_thread")]
async fn chromium_publishes_h264_simulcast_and_a_viewer_switches_layers() -> Result<()> {
    let _alone = CPU.write().await;
    simulcast_and_switch("h264").await
}

async fn simulcast_and_switch(codec: &str) -> Result<()> {
    let server = Server::start(Some(
        "[channels.cam]\nkey = \"k3y\"\n[bus]\nreconnect_grace_secs = 1\n",
    ))?;
    let publisher = Browser::start().await?;
    publisher
        .client
        .goto(&server.url(&format!(
            "/publish/cam?autostart=1&simulcast=1&key=k3y&codec={codec}"
        )))
        .await?;
    let p = publisher
        .wait_until(PUBLISHER, Duration::from_secs(30), "publisher live", |p| {
            p["state"] == "live" || p["state"] == "error"
        })
        .await?;
    ensure!(p["state"] == "live", "publisher: {p}");
    ensure!(
        num(&p, "patches") >= 1.0,
        "candidates were trickled by PATCH: {p}"
    );
    server.wait_for(Duration::from_secs(20), || {
        Ok(video_tracks(&server, "cam")?.len() == 3)
    })?;
    eprintln!("simulcast tracks: {:?}", server.channel("cam")?);

    let viewer = Browser::start().await?;
    viewer.client.goto(&server.url("/watch/cam")).await?;
    let first = viewer
        .wait_until(PLAYER, Duration::from_secs(30), "video decoded", |p| {
            num(p, "video.framesDecoded") > 10.0
                && p["layer"]["available"]
                    .as_array()
                    .is_some_and(|a| a.len() == 3)
        })
        .await?;
    eprintln!(
        "viewer on {} at {}px",
        first["layer"]["current"],
        num(&first, "video.frameWidth")
    );

    // The picker overrides the automatic choice: down to the lowest layer, then back up.
    let freezes_before = num(&first, "video.freezeCount");
    for (layer, width) in [("video.l", 240.0), ("video.h", 960.0)] {
        viewer
            .eval(&format!(
                "const el = document.getElementById('layer'); el.value = '{layer}'; el.onchange(); return true;"
            ))
            .await?;
        let before = num(&viewer.eval(PLAYER).await?, "video.framesDecoded");
        let p = viewer
            .wait_until(PLAYER, Duration::from_secs(20), layer, |p| {
                p["layer"]["current"] == layer && num(p, "video.frameWidth") == width
            })
            .await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
        let later = viewer.eval(PLAYER).await?;
        ensure!(
            num(&later, "video.framesDecoded") > num(&p, "video.framesDecoded") + 20.0
                && num(&p, "video.framesDecoded") > before,
            "video keeps decoding on {layer}: {p} -> {later}"
        );
        ensure!(num(&later, "sessions") == 1.0, "same session: {later}");
    }
    // Switches happen at the new layer's keyframe while the old layer plays on, so Chromium
    // should see no gap it counts as a freeze (one is allowed for a busy 2-core machine).
    let freezes = num(&viewer.eval(PLAYER).await?, "video.freezeCount") - freezes_before;
    eprintln!("freezes across two layer switches: {freezes}");
    ensure!(
        freezes <= 1.0,
        "{freezes} freezes across two layer switches"
    );
    let (_, metrics) = server.get("/metrics")?;
    eprintln!(
        "{}",
        metrics
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect::<Vec<_>>()
            .join("; ")
    );
    ensure!(
        metrics.contains("starling_webrtc_publishers 1\n"),
        "{metrics}"
    );
    assert!(
        !server.log().contains("k3y"),
        "the key never reaches the log"
    );

    // The publisher hangs up (DELETE): after the grace period the viewer is told it ended.
    publisher
        .eval("document.getElementById('stop').click(); return true;")
        .await?;
    viewer
        .wait_until(PLAYER, Duration::from_secs(20), "ended", |p| {
            p["state"] == "ended"
        })
        .await?;
    viewer.close().await?;
    publisher.close().await
}

#[tokio::test(flavor = "multi_thread")]
async fn chromium_publishes_h264_without_simulcast() -> Result<()> {
    let _shared = CPU.read().await;
    let server = Server::start(None)?;
    let publisher = Browser::start().await?;
    publisher
        .client
        .goto(&server.url("/publish/h264?autostart=1&simulcast=0&codec=h264"))
        .await?;
    server.wait_for(Duration::from_secs(30), || {
        Ok(server.channel("h264")?.is_some_and(|c| {
            c["tracks"].as_array().is_some_and(|t| {
                t.iter().any(|t| {
                    t["name"] == "video"
                        && t["codec"].as_str().is_some_and(|c| c.starts_with("H.264 "))
                })
            })
        }))
    })?;
    let viewer = Browser::start().await?;
    viewer.client.goto(&server.url("/watch/h264")).await?;
    let p = viewer
        .wait_until(
            PLAYER,
            Duration::from_secs(30),
            "H.264 decoded with audio",
            |p| {
                num(p, "video.framesDecoded") > 30.0
                    && num(p, "audio.totalSamplesReceived") > 48_000.0
            },
        )
        .await?;
    eprintln!(
        "H.264 from Chromium: {} {}",
        server.channel("h264")?.unwrap_or_default()["tracks"],
        p["video"]["decoderImplementation"]
    );
    viewer.close().await?;
    publisher.close().await
}

/// A publisher that drops and comes back within the grace period: the viewer's
/// `RTCPeerConnection` stays and keeps decoding the new stream.
#[tokio::test(flavor = "multi_thread")]
async fn viewer_keeps_its_session_across_a_publisher_reconnect() -> Result<()> {
    let _shared = CPU.read().await;
    let server = Server::start(Some("[bus]\nreconnect_grace_secs = 10\n"))?;
    let args = ["-bf", "0", "-g", "60", "-keyint_min", "60"];
    let mut ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("back"), &args)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("back")?.is_some())
    })?;
    let viewer = Browser::start().await?;
    viewer.client.goto(&server.url("/watch/back")).await?;
    viewer
        .wait_until(PLAYER, Duration::from_secs(30), "decoding", |p| {
            num(p, "video.framesDecoded") > 30.0
        })
        .await?;

    ffmpeg.kill();
    server.wait_for(Duration::from_secs(10), || {
        Ok(server
            .channel("back")?
            .is_some_and(|c| c["state"] == "reconnecting"))
    })?;
    let during = viewer
        .wait_until(PLAYER, Duration::from_secs(10), "reconnecting state", |p| {
            p["state"] == "reconnecting"
        })
        .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("back"), &args)?;
    let after = viewer
        .wait_until(
            PLAYER,
            Duration::from_secs(30),
            "decoding the new stream",
            |p| {
                num(p, "video.framesDecoded") > num(&during, "video.framesDecoded") + 60.0
                    && p["state"] == "live"
            },
        )
        .await?;
    ensure!(
        num(&after, "sessions") == 1.0,
        "same RTCPeerConnection: {after}"
    );
    assert!(
        server.log().contains("publisher back; resuming"),
        "{}",
        server.log()
    );
    viewer.close().await
}

/// A viewer behind a slow link: the bandwidth estimate moves it to the lowest layer, and back
/// up when the link recovers, with video decoding throughout on the same connection.
#[tokio::test(flavor = "multi_thread")]
async fn a_throttled_viewer_moves_to_a_lower_layer_and_back() -> Result<()> {
    // The estimate climbs back only as fast as probes get through: measured alone, since two
    // more browsers on the same 2 cores slow it past its deadline.
    let _alone = CPU.write().await;
    let server = Server::start(None)?;
    let shim = interop_tests::Shim::start(server.webrtc)?;
    let publisher = Browser::start().await?;
    publisher
        .client
        .goto(&server.url("/publish/slow?autostart=1&simulcast=1"))
        .await?;
    server.wait_for(Duration::from_secs(30), || {
        Ok(video_tracks(&server, "slow")?.len() == 3)
    })?;

    let (viewer, joined) = Browser::watch_through(&server, "slow", &shim).await?;
    let location = joined["loc"].as_str().unwrap_or_default().to_owned();
    let layer = |server: &Server| -> Result<Value> {
        let (status, body) = server.get(&format!("{location}/layer"))?;
        ensure!(status == 200, "layer status {status}: {body}");
        Ok(serde_json::from_str(&body)?)
    };

    let mut seen = Vec::new();
    // 300 kbit/s holds the lower layers (plus Opus), not the top one.
    for (rate, lower, limit) in [(300_000, true, 30), (0, false, 60)] {
        shim.set_rate(rate);
        let deadline = Instant::now() + Duration::from_secs(limit);
        let mut status = layer(&server)?;
        let reached = |s: &Value| (s["current"] != "video.h") == lower && s["pending"].is_null();
        let want = if lower { "a lower layer" } else { "video.h" };
        while !reached(&status) {
            ensure!(
                Instant::now() < deadline,
                "not on {want} {limit} s after limiting to {rate} bit/s (0: none): {status}, dropped {}",
                shim.dropped()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
            status = layer(&server)?;
        }
        let at = viewer.eval(interop_tests::SHIM_STATE).await?;
        tokio::time::sleep(Duration::from_secs(3)).await;
        let later = viewer.eval(interop_tests::SHIM_STATE).await?;
        ensure!(
            num(&later, "video.framesDecoded") > num(&at, "video.framesDecoded") + 15.0,
            "video keeps decoding on {want}: {at} -> {later}"
        );
        seen.push(format!(
            "{} at {} kbit/s estimate",
            status["current"],
            num(&status, "estimate") / 1000.0
        ));
    }
    eprintln!(
        "layers under throttling: {seen:?}; shim dropped {} packets",
        shim.dropped()
    );
    viewer.close().await?;
    publisher.close().await
}

/// A viewer on a lossy link (every 25th packet towards it lost): it asks for what is missing by
/// NACK, the server resends it over RTX, and video keeps decoding without keyframe requests.
#[tokio::test(flavor = "multi_thread")]
async fn a_lossy_viewer_gets_lost_packets_back_by_nack_and_rtx() -> Result<()> {
    let _shared = CPU.read().await;
    let server = Server::start(None)?;
    let _ffmpeg = Ffmpeg::push_rtmp(
        &server.rtmp_url("lossy"),
        &[
            "-bf",
            "0",
            "-g",
            "60",
            "-b:v",
            "1500k",
            "-tune",
            "zerolatency",
        ],
    )?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("lossy")?.is_some())
    })?;
    let shim = interop_tests::Shim::start(server.webrtc)?;
    let (viewer, before) = Browser::watch_through(&server, "lossy", &shim).await?;

    shim.lose_every(25);
    tokio::time::sleep(Duration::from_secs(8)).await;
    let after = viewer.eval(interop_tests::SHIM_STATE).await?;
    let (lost, nacks) = (shim.lost(), num(&after, "video.nackCount"));
    let resent = num(&after, "video.retransmittedPacketsReceived");
    let decoded = num(&after, "video.framesDecoded") - num(&before, "video.framesDecoded");
    let (plis, freezes) = (
        num(&after, "video.pliCount"),
        num(&after, "video.freezeCount"),
    );
    eprintln!(
        "lossy link: shim lost {lost} packets (audio and RTCP among them); viewer sent {nacks} NACKs, \
         received {resent} retransmissions, decoded {decoded} frames in 8 s, {plis} PLIs, {freezes} freezes"
    );
    ensure!(lost >= 50, "the shim lost too little to tell: {lost}");
    ensure!(nacks >= 10.0, "the viewer asked for lost packets: {after}");
    // (Chromium's packetsLost counts a packet repaired over RTX as lost on the media SSRC, so
    // the repairs show as retransmissions received, and as no keyframe requests and no freezes.)
    ensure!(resent >= 0.8 * nacks, "the NACKs were answered: {after}");
    ensure!(
        plis <= 1.0 && freezes <= 1.0,
        "repaired without keyframes or freezes: {after}"
    );
    ensure!(
        decoded > 150.0,
        "video kept decoding: {decoded} frames in 8 s"
    );
    // The server sealed this H.264 video itself (media_out) and answered the NACKs there.
    let resent_by_server: f64 = server
        .log()
        .lines()
        .filter(|l| l.contains("NACK answered"))
        .filter_map(|l| Server::log_field::<f64>(l, "packets"))
        .sum();
    ensure!(
        resent_by_server >= resent,
        "the server's own sender resent {resent_by_server} packets, the browser got {resent}"
    );
    viewer.close().await
}
