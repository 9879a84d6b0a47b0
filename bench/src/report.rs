//! One markdown table row per run.

use crate::viewer::Report;

pub const HEADER: &str = "| viewers | connected | join p50 / p95 | loss | late frames | e2e latency p50 / p95 | server-added p50 | server CPU | server memory per viewer | generator CPU |\n\
| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |";

pub struct Run {
    pub viewers: usize,
    pub reports: Vec<Report>,
    pub server_cpu: f64,
    pub own_cpu: f64,
    pub rss_delta_kib: u64,
    pub server_added_us: Option<f64>,
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let at = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[at]
}

pub fn row(run: &Run) -> String {
    // Connected: a full viewer that reassembled a keyframe, a light one that counted packets.
    let ok: Vec<&Report> = run
        .reports
        .iter()
        .filter(|r| r.error.is_none() && (r.join_ms.is_some() || r.packets > 0))
        .collect();
    let mut joins: Vec<f64> = ok.iter().filter_map(|r| r.join_ms).collect();
    joins.sort_by(f64::total_cmp);
    let mut latency: Vec<f64> = ok
        .iter()
        .flat_map(|r| r.latency_us.iter().map(|&us| f64::from(us) / 1000.0))
        .collect();
    latency.sort_by(f64::total_cmp);
    let packets: u64 = ok.iter().map(|r| r.packets).sum();
    let span: u64 = ok.iter().map(|r| r.span).sum();
    let loss = 1.0 - packets as f64 / span.max(1) as f64;
    let worst = ok
        .iter()
        .map(|r| 1.0 - r.packets as f64 / r.span.max(1) as f64)
        .fold(0.0, f64::max);
    let frames: u64 = ok.iter().map(|r| r.frames).sum();
    let late: u64 = ok.iter().map(|r| r.late_frames).sum();
    let errors: Vec<&str> = run
        .reports
        .iter()
        .filter_map(|r| r.error.as_deref())
        .take(3)
        .collect();
    let mut row = format!(
        "| {} | {} | {:.0} / {:.0} ms | {:.3} % (worst viewer {:.2} %) | {:.2} % | {:.1} / {:.1} ms | {} | {:.0} % of a core | {:.0} KiB | {:.0} % |",
        run.viewers,
        ok.len(),
        percentile(&joins, 0.5),
        percentile(&joins, 0.95),
        loss * 100.0,
        worst * 100.0,
        late as f64 * 100.0 / frames.max(1) as f64,
        percentile(&latency, 0.5),
        percentile(&latency, 0.95),
        run.server_added_us
            .map_or("–".into(), |us| format!("{:.2} ms", us / 1000.0)),
        run.server_cpu * 100.0,
        run.rss_delta_kib as f64 / run.viewers as f64,
        run.own_cpu * 100.0,
    );
    if !errors.is_empty() {
        row.push_str(&format!("\n<!-- first errors: {errors:?} -->"));
    }
    row
}
