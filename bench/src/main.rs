//! `starling-bench`: a WHEP load generator. It starts a Starling server (pinned to one core) or
//! uses a running one, publishes a synthetic H.264 stream over WHIP, joins N str0m viewers, and
//! prints one markdown table row per N: viewers connected, join time, loss, late frames,
//! end-to-end latency, and the server's CPU and memory from /proc. Loopback only; every run is
//! bounded in time. `--record BENCHMARKS.md` also writes the table into that file ([`record`]).
//! `starling-bench --help` lists the flags ([`USAGE`]).

mod h264;
mod http;
mod peer;
mod procfs;
mod publisher;
mod record;
mod report;
mod server;
mod viewer;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// The most viewers one run may ask for.
const MAX_VIEWERS: usize = 5000;
/// The longest measuring window.
const MAX_SECONDS: u64 = 300;
/// Viewers start this far apart.
const RAMP_STEP: Duration = Duration::from_millis(5);
/// Time after the last viewer started before measuring begins.
const SETTLE: Duration = Duration::from_secs(3);
const FPS: u32 = 30;

pub struct Args {
    viewers: Vec<usize>,
    bitrate_kbps: u32,
    gop_secs: u32,
    seconds: u64,
    server_bin: String,
    server_cpu: Option<u32>,
    threads: usize,
    full_every: usize,
    gro: bool,
    server: Option<String>,
    server_pid: Option<u32>,
    /// Publishing before viewers join, so the server's group cache is full before memory is
    /// first sampled (it holds 3 groups), and not charged to the viewers.
    warmup_secs: u64,
    /// A file to write the table into, between `record`'s markers.
    record: Option<std::path::PathBuf>,
    /// The flags as given, but `--record`, for the recorded command line.
    command: String,
}

const USAGE: &str = "starling-bench [--viewers 50,200] [--bitrate-kbps 2500] [--gop-secs 4] \
[--seconds 15] [--server-bin target/release/starling] [--server-cpu 0] [--threads 1] \
[--full-every 10] [--gro true] [--warmup-secs N (default 3 GOPs + 1)] \
[--server http://127.0.0.1:8080 --server-pid PID] [--record BENCHMARKS.md]";

fn parse() -> Result<Args> {
    let mut args = Args {
        viewers: vec![50],
        bitrate_kbps: 2500,
        gop_secs: 4,
        seconds: 15,
        server_bin: "target/release/starling".into(),
        server_cpu: Some(0),
        threads: 1,
        full_every: 10,
        gro: true,
        server: None,
        server_pid: None,
        warmup_secs: 0,
        record: None,
        command: String::new(),
    };
    let mut command = vec!["starling-bench".to_owned()];
    let mut warmup = None;
    let mut argv = std::env::args().skip(1);
    while let Some(flag) = argv.next() {
        if flag == "--help" || flag == "-h" {
            println!("{USAGE}");
            std::process::exit(0);
        }
        let value = argv
            .next()
            .with_context(|| format!("{flag} needs a value"))?;
        if flag != "--record" {
            command.extend([flag.clone(), value.clone()]);
        }
        match flag.as_str() {
            "--viewers" => {
                args.viewers = value.split(',').map(str::parse).collect::<Result<_, _>>()?
            }
            "--bitrate-kbps" => args.bitrate_kbps = value.parse()?,
            "--gop-secs" => args.gop_secs = value.parse()?,
            "--seconds" => args.seconds = value.parse()?,
            "--server-bin" => args.server_bin = value,
            "--server-cpu" => args.server_cpu = value.parse().ok(),
            "--threads" => args.threads = value.parse()?,
            "--full-every" => args.full_every = value.parse::<usize>()?.max(1),
            "--gro" => args.gro = value.parse()?,
            "--server" => args.server = Some(value),
            "--server-pid" => args.server_pid = Some(value.parse()?),
            "--warmup-secs" => warmup = Some(value.parse()?),
            "--record" => args.record = Some(value.into()),
            other => bail!("unknown flag {other}\nusage: {USAGE}"),
        }
    }
    args.command = command.join(" ");
    if let Some(path) = &args.record {
        record::check(path)?;
    }
    args.warmup_secs = warmup.unwrap_or(3 * u64::from(args.gop_secs) + 1);
    if args.viewers.iter().any(|&n| n == 0 || n > MAX_VIEWERS)
        || args.seconds > MAX_SECONDS
        || args.warmup_secs > MAX_SECONDS
    {
        bail!("viewers must be 1..={MAX_VIEWERS}, seconds and warm-up at most {MAX_SECONDS}");
    }
    Ok(args)
}

fn main() -> Result<()> {
    let args = parse()?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?
        .block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("starling-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let stream = server::make_h264(&dir, args.bitrate_kbps, args.gop_secs, FPS)?;
    let units = h264::access_units(&stream);
    anyhow::ensure!(!units.is_empty(), "ffmpeg made no access units");

    if args.server.is_some() != args.server_pid.is_some() {
        bail!("--server and --server-pid go together");
    }
    println!("{}", report::HEADER);
    let mut rows = Vec::with_capacity(args.viewers.len());
    for &n in &args.viewers {
        // A fresh server per run (unless one is given), so each run's memory and CPU are its
        // own and not what the allocator kept from the run before.
        let mut spawned = None;
        let (base, pid, log) = match (&args.server, args.server_pid) {
            (Some(url), Some(pid)) => (url.clone(), pid.to_string(), None),
            _ => {
                let server = server::Spawned::start(&args.server_bin, args.server_cpu, &dir)?;
                let found = (
                    server.url.clone(),
                    server.pid().to_string(),
                    Some(server.log.clone()),
                );
                spawned = Some(server);
                found
            }
        };
        let warmup = args.warmup_secs;
        let until = Instant::now() + Duration::from_secs(warmup + run_secs(n, args.seconds) + 5);
        let publisher = tokio::spawn(publisher::run(
            format!("{base}/whip/bench"),
            units.clone(),
            FPS,
            until,
        ));
        tokio::time::sleep(Duration::from_secs(warmup)).await;
        let row = one_run(&base, &pid, log.as_deref(), n, &args).await?;
        println!("{row}");
        rows.push(row);
        publisher.abort();
        let _ = publisher.await;
        drop(spawned);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    if std::env::var_os("STARLING_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let (cores, model) = procfs::cpus();
    let setup = format!(
        "{} Mbit/s H.264 720p30, GOP {} s; {}; generator threads: {}; machine: {cores} cores",
        f64::from(args.bitrate_kbps) / 1000.0,
        args.gop_secs,
        match (&args.server, args.server_cpu) {
            (Some(_), _) => "the running server given by --server".to_owned(),
            (None, Some(cpu)) => format!("a fresh server per row, pinned to CPU {cpu}"),
            (None, None) => "a fresh server per row, not pinned".to_owned(),
        },
        args.threads,
    );
    println!("\n{setup}");
    if let Some(path) = &args.record {
        let section = format!(
            "Measured {} with `{}` ({model}; {setup}; {} s windows):\n\n{}\n{}\n",
            record::today(),
            args.command,
            args.seconds,
            report::HEADER,
            rows.join("\n"),
        );
        record::write(path, &section)?;
        println!("recorded in {}", path.display());
    }
    Ok(())
}

fn run_secs(viewers: usize, seconds: u64) -> u64 {
    (RAMP_STEP * viewers as u32 + SETTLE).as_secs() + seconds + 1
}

async fn one_run(
    base: &str,
    pid: &str,
    log: Option<&std::path::Path>,
    n: usize,
    args: &Args,
) -> Result<String> {
    let rss_before = procfs::rss_kib(pid)?;
    let log_from = log
        .and_then(|l| std::fs::metadata(l).ok())
        .map_or(0, |m| m.len());
    let measuring = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let window_start = start + RAMP_STEP * n as u32 + SETTLE;
    let window_end = window_start + Duration::from_secs(args.seconds);
    let mut viewers = Vec::with_capacity(n);
    for i in 0..n {
        viewers.push(tokio::spawn(viewer::run(
            format!("{base}/whep/bench"),
            measuring.clone(),
            window_end,
            i % args.full_every == 0,
            args.gro,
        )));
        tokio::time::sleep(RAMP_STEP).await;
    }
    tokio::time::sleep_until(window_start.into()).await;
    let (server_cpu0, own_cpu0) = (procfs::cpu_secs(pid)?, procfs::cpu_secs("self")?);
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep_until(window_end.into()).await;
    measuring.store(false, Ordering::Relaxed);
    let window = window_end.duration_since(window_start).as_secs_f64();
    let server_cpu = (procfs::cpu_secs(pid)? - server_cpu0) / window;
    let own_cpu = (procfs::cpu_secs("self")? - own_cpu0) / window;
    let rss_after = procfs::rss_kib(pid)?;

    let mut reports = Vec::with_capacity(n);
    for v in viewers {
        reports.push(v.await?);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let server_added_us = log.and_then(|l| server::server_added_p50_us(l, log_from));
    Ok(report::row(&report::Run {
        viewers: n,
        reports,
        server_cpu,
        own_cpu,
        rss_delta_kib: rss_after.saturating_sub(rss_before),
        server_added_us,
    }))
}
