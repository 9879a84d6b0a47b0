//! SRT ingest: ffmpeg pushes MPEG-TS over SRT (AAC, then Opus audio), headless Chromium
//! watches over WHEP; bad keys, bad stream ids and a second publisher are refused with SRT
//! rejection codes; a publisher that goes quiet ends its channel.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use interop_tests::{num, Browser, Ffmpeg, Server, FAST_X264};

/// One channel with a key; a quick idle timeout and reconnect grace, as these tests are about
/// ends.
const CONFIG: &str = "[channels.studio]\nkey = \"s3cret\"\n\n[srt]\nidle_timeout_secs = 3\n\n\
                      [bus]\nreconnect_grace_secs = 1\n";

async fn watch_decodes_video_and_audio(server: &Server, channel: &str) -> Result<()> {
    let browser = Browser::start().await?;
    browser
        .client
        .goto(&server.url(&format!("/watch/{channel}")))
        .await?;
    let first = browser.wait_playing(Duration::from_secs(30)).await?;
    let later = browser.keeps_playing(&first, 3).await?;
    ensure!(num(&later, "video.frameWidth") == 640.0, "{later}");
    browser.close().await
}

/// ffmpeg pushing to `stream_id` with `audio_args`, once the channel is live.
fn push_live(server: &Server, stream_id: &str, audio_args: &[&str]) -> Result<Ffmpeg> {
    let ffmpeg = Ffmpeg::push_srt(&server.srt_url(stream_id), FAST_X264, audio_args)?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server.channel("studio")?.is_some())
    })?;
    Ok(ffmpeg)
}

/// Once the stream has ended: prints the server-added latency each viewer's session logged as
/// it left (read by `bench/run`).
fn print_server_added(server: &Server) -> Result<()> {
    server.wait_for(Duration::from_secs(10), || {
        Ok(server.log().contains("server-added"))
    })?;
    for line in server.log().lines().filter(|l| l.contains("server-added")) {
        eprintln!("{line}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn srt_with_aac_plays_in_chromium() -> Result<()> {
    let server = Server::start_isolated(Some(CONFIG), &[])?;
    let ffmpeg = push_live(
        &server,
        "publish:studio?key=s3cret",
        &["-c:a", "aac", "-b:a", "96k"],
    )?;
    watch_decodes_video_and_audio(&server, "studio").await?;
    drop(ffmpeg);
    print_server_added(&server)?;
    let log = server.log();
    ensure!(log.contains("srt publisher live"), "{log}");
    ensure!(!log.contains("s3cret"), "the key is never logged");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn srt_with_opus_in_the_access_control_form_plays_in_chromium() -> Result<()> {
    let server = Server::start_isolated(Some(CONFIG), &[])?;
    let _ffmpeg = push_live(
        &server,
        "#!::r=studio,m=publish,s=s3cret",
        &["-c:a", "libopus", "-ar", "48000", "-b:a", "96k"],
    )?;
    watch_decodes_video_and_audio(&server, "studio").await?;
    ensure!(
        !server.log().contains("transcoding"),
        "Opus passes through untouched"
    );
    Ok(())
}

#[test]
fn srt_with_hevc_reaches_a_viewer_that_offers_h265() -> Result<()> {
    let server = Server::start(Some(CONFIG))?;
    let _ffmpeg = Ffmpeg::push_srt(
        &server.srt_url("publish:studio?key=s3cret"),
        &[
            "-c:v",
            "libx265",
            "-x265-params",
            "bframes=0:keyint=30:log-level=error",
        ],
        &["-c:a", "aac"],
    )?;
    server.wait_for(Duration::from_secs(20), || {
        Ok(server
            .channel("studio")?
            .is_some_and(|c| c.to_string().contains("H.265")))
    })?;
    let until = Instant::now() + Duration::from_secs(4);
    let (frames, keyframes) = interop_tests::watch_h265(&server, "studio", until)?;
    ensure!(
        frames >= 60 && keyframes >= 1,
        "{frames} frames, {keyframes} keyframes"
    );
    Ok(())
}

mod refusals {
    use std::io;
    use std::net::SocketAddr;
    use std::time::Duration;

    use anyhow::{bail, ensure, Result};
    use bytes::Bytes;
    use futures::SinkExt;
    use interop_tests::{Ffmpeg, Server, FAST_X264};
    use srt_protocol::protocol::pending_connection::ConnectionReject;
    use srt_tokio::SrtSocket;

    use super::CONFIG;

    /// SRT rejection codes as sent on the wire (libsrt's 14xx codes plus 1000).
    const BAD_REQUEST: i32 = 2400;
    const UNAUTHORIZED: i32 = 2401;
    const FORBIDDEN: i32 = 2403;
    const CONFLICT: i32 = 2409;

    async fn call(addr: SocketAddr, stream_id: &str) -> io::Result<SrtSocket> {
        SrtSocket::builder()
            .latency(Duration::from_millis(120))
            .call(addr, Some(stream_id))
            .await
    }

    /// The code a call is rejected with.
    async fn rejection(addr: SocketAddr, stream_id: &str) -> Result<i32> {
        match call(addr, stream_id).await {
            Ok(_) => bail!("{stream_id:?} was accepted"),
            Err(err) => match err
                .get_ref()
                .and_then(|e| e.downcast_ref::<ConnectionReject>())
            {
                Some(ConnectionReject::Rejected(reason)) => Ok(i32::from(*reason)),
                other => bail!("not a rejection: {err} ({other:?})"),
            },
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn bad_keys_ids_and_modes_are_refused_with_their_codes() -> Result<()> {
        let server = Server::start_isolated(Some(CONFIG), &[])?;
        let srt = server.srt;
        assert_eq!(
            rejection(srt, "publish:studio?key=typo-k3y-77").await?,
            UNAUTHORIZED
        );
        assert_eq!(rejection(srt, "publish:studio").await?, UNAUTHORIZED);
        assert_eq!(
            rejection(srt, "#!::r=studio,m=publish,s=n0pe-99").await?,
            UNAUTHORIZED
        );
        assert_eq!(rejection(srt, "publish:?key=s3cret").await?, BAD_REQUEST);
        assert_eq!(rejection(srt, "#!::r=studio,m=request").await?, FORBIDDEN);

        // ffmpeg with a wrong key gives up with an error instead of streaming into the void.
        let ffmpeg = Ffmpeg::push_srt(
            &server.srt_url("publish:studio?key=typo-k3y-77"),
            FAST_X264,
            &["-c:a", "aac"],
        )?;
        let (ok, _) = ffmpeg.wait_exit(Duration::from_secs(20))?;
        ensure!(!ok, "ffmpeg should fail against a wrong key");

        let log = server.log();
        ensure!(log.contains("srt publish refused"), "{log}");
        let leaks: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("typo-k3y-77") || l.contains("n0pe-99"))
            .collect();
        ensure!(leaks.is_empty(), "keys stay out of the log: {leaks:#?}");
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_second_publisher_is_refused_and_a_quiet_one_ends_its_channel() -> Result<()> {
        let server = Server::start_isolated(Some(CONFIG), &[])?;
        let ffmpeg = Ffmpeg::push_srt(
            &server.srt_url("publish:studio?key=s3cret"),
            FAST_X264,
            &["-c:a", "aac"],
        )?;
        server.wait_for(Duration::from_secs(20), || {
            Ok(server.channel("studio")?.is_some())
        })?;
        assert_eq!(
            rejection(server.srt, "publish:studio?key=s3cret").await?,
            CONFLICT
        );

        // Frozen: the connection stays but nothing arrives; the idle timeout (3 s) ends it.
        ffmpeg.freeze()?;
        server.wait_for(Duration::from_secs(10), || {
            Ok(server.channel("studio")?.is_none())
        })?;
        let log = server.log();
        ensure!(
            log.contains("srt publisher left") && log.contains("idle timeout")
                || log.contains("closed"),
            "{log}"
        );
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn garbage_instead_of_mpeg_ts_is_survived() -> Result<()> {
        let server = Server::start_isolated(Some(CONFIG), &[])?;
        let mut socket = call(server.srt, "publish:studio?key=s3cret").await?;
        server.wait_for(Duration::from_secs(10), || {
            Ok(server.channel("studio")?.is_some())
        })?;
        // Bounded: 300 datagrams of noise, some with a sync byte every 188 bytes.
        for i in 0..300u32 {
            let mut data = vec![(i % 251) as u8; 1316];
            if i % 2 == 0 {
                for p in data.chunks_mut(188) {
                    p[0] = 0x47;
                }
            }
            socket
                .send((std::time::Instant::now(), Bytes::from(data)))
                .await?;
            // Paced like a 5 Mbit/s stream: SRT drops what waits longer than its latency.
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        // Let SRT deliver what it buffered before closing.
        tokio::time::sleep(Duration::from_secs(1)).await;
        socket.close().await?;
        server.wait_for(Duration::from_secs(10), || {
            Ok(server.channel("studio")?.is_none())
        })?;
        let log = server.log();
        let left = log
            .lines()
            .find(|l| l.contains("srt publisher left"))
            .unwrap_or_default();
        let read: u64 = Server::log_field(left, "ts_packets").unwrap_or(0);
        ensure!(read >= 700, "the noise was read ({read} packets): {left}");
        // The node still serves: a real publisher goes live afterwards.
        let _ffmpeg = Ffmpeg::push_srt(
            &server.srt_url("publish:studio?key=s3cret"),
            FAST_X264,
            &["-c:a", "aac"],
        )?;
        server.wait_for(Duration::from_secs(20), || {
            Ok(server
                .channel("studio")?
                .is_some_and(|c| c.to_string().contains("video")))
        })?;
        Ok(())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_passphrase_is_required_and_a_stray_one_does_not_break_the_listener() -> Result<()> {
        let passphrase = "correct-horse-battery";
        let server = Server::start(Some(
            &format!("{CONFIG}\n[srt]\npassphrase = \"{passphrase}\"\n")
                .replace("[srt]\nidle_timeout_secs = 3\n", ""),
        ))?;
        // Wrong passphrase, and none at all: the handshake fails, nothing goes live.
        let wrong = SrtSocket::builder()
            .encryption(16, "not the right one")
            .call(server.srt, Some("publish:studio?key=s3cret"))
            .await;
        ensure!(wrong.is_err(), "a wrong passphrase connected");
        ensure!(
            call(server.srt, "publish:studio?key=s3cret").await.is_err(),
            "no passphrase connected"
        );
        ensure!(server.channel("studio")?.is_none());
        // ffmpeg with the passphrase publishes (at its default key length, "unspecified").
        let _ffmpeg = Ffmpeg::push_srt(
            &format!(
                "{}&passphrase={passphrase}",
                server.srt_url("publish:studio?key=s3cret")
            ),
            FAST_X264,
            &["-c:a", "aac"],
        )?;
        server.wait_for(Duration::from_secs(20), || {
            Ok(server.channel("studio")?.is_some())
        })?;
        let right = SrtSocket::builder()
            .encryption(32, passphrase)
            .call(server.srt, Some("publish:other?key=x"))
            .await;
        ensure!(
            matches!(&right, Err(e) if e.kind() == io::ErrorKind::ConnectionRefused),
            "the right passphrase reaches the key check (no channel 'other'): {right:?}"
        );

        // A listener without a passphrase, a live SRT publisher, and callers that send a
        // passphrase: srt-tokio's listener task would panic on them and close every SRT
        // connection; the front refuses them, and the live publisher's media keeps flowing.
        let plain = Server::start_isolated(Some(CONFIG), &[])?;
        let mut live = super::push_live(&plain, "publish:studio?key=s3cret", &[])?;
        let stray = SrtSocket::builder()
            .encryption(16, "a stray passphrase")
            .call(plain.srt, Some("publish:studio?key=s3cret"))
            .await;
        ensure!(stray.is_err(), "a stray passphrase connected");
        // ffmpeg with a passphrase and no key length (what crashed srt-tokio's listener).
        let stray_ffmpeg = Ffmpeg::push_srt(
            &format!(
                "{}&passphrase=0123456789abc",
                plain.srt_url("publish:other?key=s3cret")
            ),
            FAST_X264,
            &[],
        )?;
        let (connected, _) = stray_ffmpeg.wait_exit(Duration::from_secs(15))?;
        ensure!(!connected, "ffmpeg with a stray passphrase published");
        let flowing = |server: &Server| -> Result<bool> {
            Ok(server.channel("studio")?.is_some_and(|c| {
                c["tracks"].as_array().is_some_and(|tracks| {
                    tracks
                        .iter()
                        .any(|t| t["name"] == "video" && t["bitrate"].as_u64().unwrap_or(0) > 0)
                })
            }))
        };
        tokio::time::sleep(Duration::from_secs(3)).await;
        ensure!(
            live.exited()?.is_none() && flowing(&plain)?,
            "the live SRT publisher was cut: {}",
            plain.log()
        );
        ensure!(
            plain.log().contains("EncryptsWithoutPassphrase"),
            "{}",
            plain.log()
        );
        live.kill();
        let mut later = None;
        for _ in 0..20 {
            if let Ok(s) = call(plain.srt, "publish:studio?key=s3cret").await {
                later = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        ensure!(
            later.is_some(),
            "nobody could publish after the stray passphrase: {}",
            plain.log()
        );
        Ok(())
    }
}
