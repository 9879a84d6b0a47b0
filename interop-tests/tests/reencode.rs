//! OBS on its defaults plays smoothly: a stream with B-frames (x264 High profile, 3 B-frames,
//! b-pyramid, preset veryfast, a keyframe every 2 s) is re-encoded without them on the ingest
//! node, and headless Chromium decodes every frame, over RTMP and over SRT.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use interop_tests::{num, Browser, Ffmpeg, Server};

/// OBS's default x264 settings, as ffmpeg arguments (ffmpeg's push already says veryfast).
const OBS_DEFAULTS: &[&str] = &[
    "-profile:v",
    "high",
    "-bf",
    "3",
    "-x264-params",
    "b-pyramid=normal",
    "-g",
    "60",
];

/// Waits for the channel's notice to say it is re-encoded, then watches 10 s in Chromium:
/// at least 28 frames decoded a second (the stream has 30), and no freeze.
async fn plays_smoothly(server: &Server, channel: &str) -> Result<()> {
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel(channel)?.is_some_and(|c| {
            c["notice"]
                .as_str()
                .is_some_and(|n| n.contains("re-encodes"))
        }))
    })?;
    let browser = Browser::start().await?;
    browser
        .client
        .goto(&server.url(&format!("/watch/{channel}")))
        .await?;
    let first = browser.wait_playing(Duration::from_secs(30)).await?;
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(10)).await;
    let later = browser.player().await?;
    let secs = from.elapsed().as_secs_f64();
    let fps = (num(&later, "video.framesDecoded") - num(&first, "video.framesDecoded")) / secs;
    eprintln!(
        "{channel}: {fps:.1} frames decoded a second over {secs:.1} s, freezeCount {}",
        num(&later, "video.freezeCount")
    );
    ensure!(fps >= 28.0, "{fps:.1} fps: {first} -> {later}");
    ensure!(
        num(&later, "video.freezeCount") == 0.0,
        "no freeze: {later}"
    );
    browser.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn obs_defaults_over_rtmp_play_smoothly() -> Result<()> {
    let server = Server::start_isolated(None, &[])?;
    let _ffmpeg = Ffmpeg::push_rtmp(&server.rtmp_url("obs"), OBS_DEFAULTS)?;
    plays_smoothly(&server, "obs").await
}

#[tokio::test(flavor = "multi_thread")]
async fn obs_defaults_over_srt_play_smoothly() -> Result<()> {
    let server = Server::start_isolated(None, &[])?;
    let _ffmpeg = Ffmpeg::push_srt(
        &server.srt_url("publish:obs"),
        OBS_DEFAULTS,
        &["-c:a", "aac", "-b:a", "96k"],
    )?;
    plays_smoothly(&server, "obs").await
}
