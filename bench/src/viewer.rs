//! One synthetic WHEP viewer: full ICE, DTLS and SRTP through str0m, frames reassembled but not
//! decoded. Counts what arrives while the run's measuring window is open.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use str0m::media::{Direction, MediaKind};
use str0m::{Event, Rtc};

use crate::h264;
use crate::peer::{Peer, Skim};

/// A frame later than this after the publisher sent it counts as late.
pub const LATE_US: u64 = 100_000;

#[derive(Default)]
pub struct Report {
    /// Whether this viewer reassembled frames (the others only count packets).
    pub full: bool,
    pub error: Option<String>,
    /// POST to the first complete keyframe.
    pub join_ms: Option<f64>,
    pub frames: u64,
    pub late_frames: u64,
    /// Publisher send -> reassembled here, one per frame measured.
    pub latency_us: Vec<u32>,
    /// RTP packets in complete frames, and the sequence-number span they came from.
    pub packets: u64,
    pub span: u64,
}

/// `full`: decrypt and reassemble every frame (join time, latency); otherwise only count RTP
/// packets from their clear headers, which costs the generator far less per viewer.
pub async fn run(
    endpoint: String,
    measuring: Arc<AtomicBool>,
    until: Instant,
    full: bool,
    gro: bool,
) -> Report {
    let mut report = Report {
        full,
        ..Report::default()
    };
    if let Err(err) = watch(&endpoint, &measuring, until, gro, &mut report).await {
        report.error = Some(format!("{err:#}"));
    }
    report
}

async fn watch(
    endpoint: &str,
    measuring: &Arc<AtomicBool>,
    until: Instant,
    gro: bool,
    report: &mut Report,
) -> Result<()> {
    let started = Instant::now();
    let rtc = Rtc::builder()
        .clear_codecs()
        .enable_h264(true)
        .build(started);
    let (mut rtc, socket, local) = Peer::bind(rtc).await?;
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Video, Direction::RecvOnly, None, None, None);
    let (offer, pending) = api.apply().context("offer")?;
    let mut peer =
        Peer::negotiate(rtc, socket, local, offer.to_sdp_string(), pending, endpoint).await?;
    if !report.full {
        peer.skim = Some(Skim::new(measuring.clone()));
    }
    if gro {
        peer.use_gro()?;
    }

    let mut seq_first: Option<u64> = None;
    let mut seq_last = 0;
    let result = peer
        .run_until(until, &mut |_, event| {
            let Event::MediaData(data) = event else {
                return;
            };
            if report.join_ms.is_none() && data.is_keyframe() {
                report.join_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
            }
            if !measuring.load(Ordering::Relaxed) || report.join_ms.is_none() {
                return;
            }
            let (first, last) = (**data.seq_range.start(), **data.seq_range.end());
            seq_first.get_or_insert(first);
            seq_last = seq_last.max(last);
            report.packets += last - first + 1;
            report.frames += 1;
            if let Some(sent) = h264::stamp_of(&data.data) {
                let latency = h264::now_micros().saturating_sub(sent);
                report
                    .latency_us
                    .push(u32::try_from(latency).unwrap_or(u32::MAX));
                if latency > LATE_US {
                    report.late_frames += 1;
                }
            }
        })
        .await;
    if let Some(first) = seq_first {
        report.span = seq_last - first + 1;
    }
    if let Some(skim) = &peer.skim {
        report.packets = skim.packets;
        report.span = skim.span();
    }
    peer.hang_up().await;
    result
}
