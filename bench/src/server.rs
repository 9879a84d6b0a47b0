//! What a run stands on: the H.264 file ffmpeg makes, and (unless one is given) a Starling
//! server started on free loopback ports, pinned to one core with taskset.

use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

/// An Annex B H.264 stream of two GOPs at the given bitrate, with an access unit delimiter on
/// every frame and the parameter sets repeated before every keyframe.
pub fn make_h264(dir: &Path, kbps: u32, gop_secs: u32, fps: u32) -> Result<Vec<u8>> {
    let out = dir.join("bench.h264");
    let gop = (gop_secs * fps).to_string();
    let rate = format!("{kbps}k");
    let status = Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
        ])
        .arg(format!("testsrc2=size=1280x720:rate={fps}"))
        .args([
            "-t",
            &(2 * gop_secs).to_string(),
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
        ])
        .args([
            "-tune",
            "zerolatency",
            "-profile:v",
            "baseline",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-b:v", &rate, "-maxrate", &rate, "-bufsize", &rate])
        .args(["-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0"])
        .args(["-x264-params", "aud=1:repeat-headers=1", "-f", "h264"])
        .arg(&out)
        .status()
        .context("ffmpeg (scripts/deps --test installs it)")?;
    ensure!(status.success(), "ffmpeg failed to make the stream");
    Ok(std::fs::read(out)?)
}

fn free_port(udp: bool) -> Result<u16> {
    Ok(if udp {
        UdpSocket::bind("127.0.0.1:0")?.local_addr()?.port()
    } else {
        TcpListener::bind("127.0.0.1:0")?.local_addr()?.port()
    })
}

pub struct Spawned {
    child: Child,
    pub url: String,
    pub log: PathBuf,
}

impl Spawned {
    pub fn start(bin: &str, cpu: Option<u32>, dir: &Path) -> Result<Self> {
        ensure!(
            Path::new(bin).exists(),
            "{bin} is missing: cargo build --release --bin starling"
        );
        let (http, rtmp, webrtc) = (free_port(false)?, free_port(false)?, free_port(true)?);
        let (srt, ftl) = (free_port(true)?, free_port(false)?);
        let config = dir.join("bench.toml");
        // Every viewer comes from loopback: no per-address caps.
        std::fs::write(
            &config,
            "[webrtc]\nmax_viewers = 5000\nmax_pending_per_ip = 0\n[http]\nmax_connections_per_ip = 0\n",
        )?;
        let log = dir.join("server.log");
        let mut command = match cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string(), bin]);
                c
            }
            None => Command::new(bin),
        };
        let child = command
            .arg("serve")
            .arg("--config")
            .arg(&config)
            .args(["--http", &format!("127.0.0.1:{http}")])
            .args(["--rtmp", &format!("127.0.0.1:{rtmp}")])
            .args(["--srt", &format!("127.0.0.1:{srt}")])
            .args(["--ftl", &format!("127.0.0.1:{ftl}")])
            .args(["--webrtc", &format!("127.0.0.1:{webrtc}")])
            .env("NO_COLOR", "1")
            .stdout(std::fs::File::create(&log)?)
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("start {bin}"))?;
        let spawned = Self {
            child,
            url: format!("http://127.0.0.1:{http}"),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", http)).is_err() {
            if Instant::now() > deadline {
                bail!("the server did not listen within 20 s");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(spawned)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The median of the per-viewer server-added latency p50s the server logged in `log` past
/// byte `from` (it logs one line per viewer as it leaves).
pub fn server_added_p50_us(log: &Path, from: u64) -> Option<f64> {
    let text = std::fs::read(log).ok()?;
    let text = strip_ansi(&String::from_utf8_lossy(text.get(from as usize..)?));
    let mut values: Vec<f64> = text
        .lines()
        .filter_map(|line| {
            let at = line.find("p50_us=")? + "p50_us=".len();
            let digits: String = line[at..]
                .chars()
                .take_while(char::is_ascii_digit)
                .collect();
            digits.parse().ok()
        })
        .collect();
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied()
}

/// The log without terminal colour codes (`ESC [ ... m`).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
