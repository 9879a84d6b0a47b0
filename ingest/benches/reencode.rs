//! What re-encoding a channel without B-frames costs (issue 19): an OBS-like 720p30 stream
//! (x264 High, 3 B-frames, b-pyramid) through `Reencode` on one thread, as fast as it goes.
//! Prints the work per access unit (p50, p99), the share of one core a 30 fps channel takes,
//! and how many frames behind its input the output comes out (the decoder's reorder delay plus
//! the encoder's, which zero-latency tuning keeps at none): at 30 fps each frame behind is
//! 33.3 ms of added latency, on top of the work.

use std::time::Instant;

use ingest::transcode::video::{samples, Reencode, VideoSettings};

fn main() {
    let (width, height, frames) = (1280, 720, 300);
    eprintln!("encoding the {width}x{height} input ({frames} frames)...");
    let input = samples::obs_like(width, height, frames);
    let mut reencode = Reencode::new(VideoSettings::default()).expect("re-encoder");
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
    println!("| {width}x{height} | per access unit p50 {:.2} ms, p99 {:.2} ms | {:.0}% of a core at 30 fps | output {}..{} frames behind its input (p50 {}) |",
        at(&work, 0.5),
        at(&work, 0.99),
        mean * 30.0 / 10.0,
        behind.first().copied().unwrap_or(0),
        behind.last().copied().unwrap_or(0),
        behind[behind.len() / 2],
    );
}
