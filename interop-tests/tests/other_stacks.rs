//! Independent WebRTC stacks against Starling: webrtc-rs (`interop-tests/webrtc-rs`, built by
//! scripts/test) publishes over WHIP and views over WHEP, once with an RSA certificate and once
//! offering only ECDSA cipher suites; GStreamer's webrtcbin (OpenSSL, RSA-2048) publishes.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use interop_tests::{num, Browser, Server};
use serde_json::Value;

const KEY: &str = "other-stacks-key";

fn config(channel: &str) -> String {
    format!("[channels.{channel}]\nkey = \"{KEY}\"\n[bus]\nreconnect_grace_secs = 1\n")
}

fn webrtc_rs_bin() -> Result<PathBuf> {
    let bin = std::env::var_os("STARLING_WEBRTC_RS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("webrtc-rs/target/debug/starling-webrtc-rs"),
        PathBuf::from,
    );
    ensure!(
        bin.exists(),
        "{} is missing: build it with `cargo build --manifest-path interop-tests/webrtc-rs/Cargo.toml` (scripts/test does)",
        bin.display()
    );
    Ok(bin)
}

/// A scratch directory with a 2 s VP8 IVF, a 2 s Ogg Opus file (20 ms pages) and an RSA key.
struct Media {
    dir: PathBuf,
}

impl Media {
    fn make(name: &str) -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("starling-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let run = |program: &str, args: &[&str]| -> Result<()> {
            let out = Command::new(program)
                .args(args)
                .current_dir(&dir)
                .output()?;
            ensure!(
                out.status.success(),
                "{program} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            Ok(())
        };
        let ffmpeg = [
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ];
        run(
            "ffmpeg",
            &[
                &ffmpeg[..],
                &["testsrc=size=320x240:rate=30", "-t", "2", "-c:v", "libvpx"],
                &["-g", "30", "-deadline", "realtime", "-b:v", "400k", "v.ivf"],
            ]
            .concat(),
        )?;
        run(
            "ffmpeg",
            &[
                &ffmpeg[..],
                &[
                    "sine=frequency=440:sample_rate=48000",
                    "-t",
                    "2",
                    "-c:a",
                    "libopus",
                ],
                &["-page_duration", "20000", "a.ogg"],
            ]
            .concat(),
        )?;
        run(
            "openssl",
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
                "-out",
                "rsa.pem",
            ],
        )?;
        Ok(Self { dir })
    }

    fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }
}

impl Drop for Media {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A client process whose last stdout line is its JSON report.
struct Client {
    child: Child,
    what: String,
}

impl Client {
    fn spawn(what: &str, mut command: Command) -> Result<Self> {
        let child = command
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {what}"))?;
        Ok(Self {
            child,
            what: what.to_owned(),
        })
    }

    fn webrtc_rs(mode: &str, url: &str, args: &[&str]) -> Result<Self> {
        let mut command = Command::new(webrtc_rs_bin()?);
        command
            .arg(mode)
            .arg(url)
            .args(args)
            .env("STARLING_KEY", KEY);
        Self::spawn(&format!("webrtc-rs {mode} {}", args.join(" ")), command)
    }

    /// Waits for the exit (at most `limit`) and returns the report; a failure carries stderr.
    fn report(mut self, limit: Duration) -> Result<Value> {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait()? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                bail!("{} still running after {limit:?}", self.what);
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_string(&mut out)?;
        }
        if let Some(mut s) = self.child.stderr.take() {
            s.read_to_string(&mut err)?;
        }
        ensure!(status.success(), "{} failed ({status}): {err}", self.what);
        let line = out.lines().last().unwrap_or_default();
        serde_json::from_str(line).with_context(|| format!("{} printed {out:?}", self.what))
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn wait_live(server: &Server, channel: &str) -> Result<()> {
    server.wait_for(Duration::from_secs(15), || {
        Ok(server.channel(channel)?.is_some_and(|c| {
            c["tracks"].as_array().is_some_and(|tracks| {
                tracks
                    .iter()
                    .any(|t| t["bitrate"].as_u64().is_some_and(|b| b > 0))
            })
        }))
    })
}

fn codecs(report: &Value) -> Vec<String> {
    report["codecs"]
        .as_array()
        .map(|c| {
            c.iter()
                .filter_map(|c| c.as_str().map(str::to_ascii_lowercase))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread")]
async fn webrtc_rs_publishes_over_whip_and_views_over_whep() -> Result<()> {
    let media = Media::make("webrtc-rs")?;
    let server = Server::start_isolated(Some(&config("wrs")), &[])?;
    let publisher = Client::webrtc_rs(
        "publish",
        &server.url("/whip/wrs"),
        &[
            "--ivf",
            &media.path("v.ivf"),
            "--ogg",
            &media.path("a.ogg"),
            "--seconds",
            "14",
        ],
    )?;
    wait_live(&server, "wrs")?;

    // webrtc-rs watches.
    let view = Client::webrtc_rs("view", &server.url("/whep/wrs"), &["--seconds", "3"])?
        .report(Duration::from_secs(20))?;
    let got = codecs(&view);
    ensure!(
        got.contains(&"video/vp8".into()) && got.contains(&"audio/opus".into()),
        "codecs: {view}"
    );
    ensure!(num(&view, "frames") >= 45.0, "frames: {view}");
    ensure!(num(&view, "keyframes") >= 1.0, "keyframes: {view}");
    ensure!(num(&view, "audio_packets") >= 75.0, "audio: {view}");
    ensure!(num(&view, "delete_status") == 200.0, "DELETE: {view}");

    // Chromium decodes what webrtc-rs sends.
    let browser = Browser::start().await?;
    browser.client.goto(&server.url("/watch/wrs")).await?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let p = browser.player().await?;
        if num(&p, "video.framesDecoded") > 30.0 && num(&p, "audio.totalSamplesReceived") > 24_000.0
        {
            break;
        }
        ensure!(Instant::now() < deadline, "Chromium did not decode: {p}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    browser.close().await?;

    let published = publisher.report(Duration::from_secs(20))?;
    ensure!(num(&published, "video_frames") >= 150.0, "{published}");
    ensure!(num(&published, "delete_status") == 200.0, "{published}");
    ensure!(!server.log().contains(KEY), "the key reached the log");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dtls_takes_rsa_client_certificates_and_ecdsa_only_suites() -> Result<()> {
    let media = Media::make("dtls")?;
    let server = Server::start_isolated(Some(&config("dtls")), &[])?;
    let rsa = media.path("rsa.pem");
    let publisher = Client::webrtc_rs(
        "publish",
        &server.url("/whip/dtls"),
        &[
            "--ivf",
            &media.path("v.ivf"),
            "--rsa-key",
            &rsa,
            "--seconds",
            "12",
        ],
    )?;
    wait_live(&server, "dtls")?;
    for args in [&["--ecdsa-only"][..], &["--rsa-key", &rsa][..]] {
        let view = Client::webrtc_rs(
            "view",
            &server.url("/whep/dtls"),
            &[args, &["--seconds", "2"][..]].concat(),
        )?
        .report(Duration::from_secs(20))?;
        ensure!(num(&view, "frames") >= 30.0, "{args:?}: {view}");
        ensure!(num(&view, "keyframes") >= 1.0, "{args:?}: {view}");
    }
    let published = publisher.report(Duration::from_secs(20))?;
    ensure!(num(&published, "video_frames") >= 150.0, "{published}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn gstreamer_publishes_with_its_rsa_certificate() -> Result<()> {
    let server = Server::start(Some(&config("gst")))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("gst/whip_publish.py");
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(script)
        .arg(server.url("/whip/gst"))
        .args(["--seconds", "8"])
        .env("STARLING_KEY", KEY);
    let publisher = Client::spawn("gstreamer whip_publish.py", command)?;
    wait_live(&server, "gst")?;
    let view = Client::webrtc_rs("view", &server.url("/whep/gst"), &["--seconds", "2"])?
        .report(Duration::from_secs(20))?;
    ensure!(codecs(&view).contains(&"video/vp8".into()), "{view}");
    ensure!(num(&view, "frames") >= 30.0, "{view}");
    ensure!(num(&view, "keyframes") >= 1.0, "{view}");
    let published = publisher.report(Duration::from_secs(30))?;
    ensure!(published["connected"] == true, "{published}");
    ensure!(num(&published, "delete_status") == 200.0, "{published}");
    Ok(())
}

/// A viewer of an H.264 stream gets shared RTP payloads; if the publisher comes back within
/// the grace period in a codec that cannot be shared that way (VP8 from webrtc-rs), the
/// viewer's session ends with a reason instead of going silent.
#[tokio::test(flavor = "multi_thread")]
async fn a_viewer_is_let_go_when_the_publisher_returns_in_another_codec() -> Result<()> {
    let media = Media::make("swap")?;
    let server = Server::start(Some(&format!(
        "[channels.swap]\nkey = \"{KEY}\"\n[bus]\nreconnect_grace_secs = 8\n"
    )))?;
    let mut ffmpeg = interop_tests::Ffmpeg::push_rtmp(
        &server.rtmp_url(&format!("swap?key={KEY}")),
        interop_tests::FAST_X264,
    )?;
    wait_live(&server, "swap")?;
    let viewer = Client::webrtc_rs("view", &server.url("/whep/swap"), &["--seconds", "12"])?;
    server.wait_for(Duration::from_secs(10), || {
        Ok(server.log().contains("viewer connected"))
    })?;
    std::thread::sleep(Duration::from_secs(1));
    ffmpeg.kill();
    let publisher = Client::webrtc_rs(
        "publish",
        &server.url("/whip/swap"),
        &["--ivf", &media.path("v.ivf"), "--seconds", "6"],
    )?;
    server.wait_for(Duration::from_secs(15), || {
        Ok(server.log().contains("codec changed"))
    })?;
    let view = viewer.report(Duration::from_secs(20))?;
    ensure!(
        codecs(&view).contains(&"video/h264".into()) && num(&view, "keyframes") >= 1.0,
        "the viewer had H.264 before the swap: {view}"
    );
    publisher.report(Duration::from_secs(20))?;
    Ok(())
}
