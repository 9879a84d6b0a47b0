//! One SRT publisher: MPEG-TS off the socket, through the demuxer, onto its broadcast.

use std::time::Instant;

use futures::StreamExt;
use srt_tokio::SrtSocket;
use tokio::time::timeout;
use tracing::{debug, info};

use super::SrtConfig;
use crate::mpegts::{Demuxer, StreamKind, Unit};
use crate::Publish;

/// Headroom below the first timestamp seen, so audio a little earlier than the first video
/// frame still maps to a positive time.
const HEADROOM_90K: u64 = 90_000;

/// Feeds the broadcast until the publisher leaves, goes quiet, or the socket fails.
pub(super) async fn run(mut socket: SrtSocket, mut publish: Publish, config: &SrtConfig) {
    let channel = publish.broadcast().name().clone();
    info!(%channel, "srt publisher live");
    let mut demux = Demuxer::new();
    let mut units = Vec::new();
    let mut clock = Clock::default();
    let reason = loop {
        let data = match timeout(config.idle_timeout(), socket.next()).await {
            Err(_) => break "no media within the idle timeout",
            Ok(None) => break "publisher closed the connection",
            Ok(Some(Err(err))) => {
                debug!(%err, "srt receive");
                break "receive error";
            }
            Ok(Some(Ok((_, data)))) => data,
        };
        let arrived = Instant::now();
        demux.push(&data, &mut units);
        for unit in units.drain(..) {
            deliver(&mut publish, &mut clock, unit, arrived);
        }
    };
    let stats = demux.stats();
    info!(
        %channel,
        reason,
        video_frames = publish.video_frames(),
        ts_packets = stats.packets,
        continuity_errors = stats.continuity_errors,
        dropped_units = stats.dropped_units,
        garbage_bytes = stats.garbage,
        "srt publisher left; channel ended"
    );
}

/// Maps the demuxer's unwrapped 90 kHz times to this publisher's timeline, starting near zero.
#[derive(Default)]
struct Clock {
    base: Option<u64>,
}

impl Clock {
    fn at(&mut self, time: u64) -> u64 {
        let base = *self
            .base
            .get_or_insert_with(|| time.saturating_sub(HEADROOM_90K));
        time.saturating_sub(base)
    }
}

fn deliver(publish: &mut Publish, clock: &mut Clock, unit: Unit, arrived: Instant) {
    let Some(pts) = unit.pts else {
        debug!(kind = ?unit.kind, "unit without a time; dropped");
        return;
    };
    let pts = clock.at(pts);
    let dts = unit.dts.map_or(pts, |d| clock.at(d));
    match unit.kind {
        StreamKind::H264 => publish.h264_annexb(&unit.data, pts, dts, arrived),
        StreamKind::H265 => publish.h265_annexb(&unit.data, pts, dts, arrived),
        StreamKind::Aac => publish.aac_adts(&unit.data, pts / 90, arrived),
        StreamKind::Opus => publish.opus_ts(&unit.data, pts * 8 / 15, arrived),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_starts_near_zero_and_keeps_earlier_audio_positive() {
        let mut clock = Clock::default();
        let first = (1 << 33) + 5_000_000;
        assert_eq!(clock.at(first), HEADROOM_90K);
        assert_eq!(clock.at(first - 3000), HEADROOM_90K - 3000);
        assert_eq!(clock.at(first + 3000), HEADROOM_90K + 3000);
    }
}
