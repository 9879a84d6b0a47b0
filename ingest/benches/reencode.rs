//! What re-encoding a channel costs (issue 19), on an OBS-like 720p30 stream through
//! `Reencode` on one thread, as fast as it goes:
//! - the B-frame re-encode alone (x264 High, 3 B-frames, b-pyramid in; the source's size out);
//! - a three-layer ladder from that stream (the source's size re-encoded, 360p, 180p);
//! - a ladder from a stream without B-frames (the source passes as it is: 360p and 180p only).
//!
//! Prints the work per access unit (p50, p99), the share of one core a 30 fps channel takes,
//! and how many frames behind its input the output comes out (the decoder's reorder delay plus
//! the encoder's, which zero-latency tuning keeps at none): at 30 fps each frame behind is
//! 33.3 ms of added latency, on top of the work.

use std::time::Instant;

use ingest::transcode::video::{samples, LayerSpec, Reencode, Source, VideoSettings};

fn layer(track: &str, height: u32, bitrate: usize) -> LayerSpec {
    LayerSpec {
        track: track.into(),
        height,
        bitrate,
    }
}

fn measure(what: &str, input: &[(Vec<u8>, u64)], mut reencode: Reencode) {
    let mut work = Vec::with_capacity(input.len());
    let mut pushed_at = std::collections::HashMap::new();
    let mut behind = Vec::new();
    for (n, (au, pts)) in input.iter().enumerate() {
        pushed_at.insert(*pts, n);
        let started = Instant::now();
        let out = reencode.push(au, *pts).expect("re-encode");
        work.push(started.elapsed().as_secs_f64() * 1000.0);
        for (_, frame) in out {
            if let Some(at) = pushed_at.get(&frame.pts) {
                behind.push(n - at);
            }
        }
    }
    work.sort_by(f64::total_cmp);
    behind.sort_unstable();
    let at = |v: &[f64], q: f64| v[((v.len() - 1) as f64 * q) as usize];
    let mean = work.iter().sum::<f64>() / work.len() as f64;
    println!("| {what} | per access unit p50 {:.2} ms, p99 {:.2} ms | {:.0}% of a core at 30 fps | output {}..{} frames behind its input (p50 {}) |",
        at(&work, 0.5),
        at(&work, 0.99),
        mean * 30.0 / 10.0,
        behind.first().copied().unwrap_or(0),
        behind.last().copied().unwrap_or(0),
        behind[behind.len() / 2],
    );
}

fn main() {
    let (width, height, frames) = (1280, 720, 300);
    eprintln!("encoding the {width}x{height} inputs ({frames} frames each)...");
    let obs = samples::obs_like(width, height, frames);
    let plain = samples::without_bframes(width, height, frames);
    let preset = VideoSettings::default().preset;

    measure(
        "720p30 with B-frames: re-encoded",
        &obs,
        Reencode::new(VideoSettings::default()).expect("re-encoder"),
    );

    let mut ladder = Reencode::new(VideoSettings::default()).expect("re-encoder");
    ladder.add_layer(&layer("video.m", 360, 600_000), &preset);
    ladder.add_layer(&layer("video.l", 180, 200_000), &preset);
    measure(
        "720p30 with B-frames: ladder of 720p, 360p, 180p",
        &obs,
        ladder,
    );

    let mut ladder = Reencode::decoder_only(Source::H264).expect("decoder");
    ladder.add_layer(&layer("video.m", 360, 600_000), &preset);
    ladder.add_layer(&layer("video.l", 180, 200_000), &preset);
    measure(
        "720p30 without B-frames: ladder of 360p, 180p (720p passed)",
        &plain,
        ladder,
    );
}
