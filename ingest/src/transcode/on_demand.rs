//! H.264 made on demand from an H.265 or AV1 channel, for viewers whose browser cannot decode
//! it: the channel offers the track [`tracks::VIDEO_H264`] from the start, and the transcoder
//! runs (on a re-encoder thread, within the node's budget) while the track has viewers, and
//! stops a while after the last one leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use media::{tracks, BroadcastProducer, Frame, TrackProducer};
use tracing::{info, warn};

use super::video::Source;
use super::video_worker::{Budget, VideoWorker};

/// A viewer's consumer must be there this long before a transcoder starts: looking a track
/// up (the channel API reads its bitrate) makes a consumer for an instant, which is no viewer.
const DEMAND_FOR: Duration = Duration::from_millis(100);

/// One channel's on-demand H.264.
pub struct OnDemand {
    source: Source,
    track: Arc<TrackProducer>,
    budget: Arc<Budget>,
    idle_after: Duration,
    worker: Option<VideoWorker>,
    /// Since when the track has had consumers (not running), or none (running).
    wanted_since: Option<Instant>,
    idle_since: Option<Instant>,
    /// Told the log that every re-encoder was busy (once until one starts).
    refused: bool,
}

impl OnDemand {
    /// Offers H.264 from `source` video on `broadcast`, made while viewed within `budget`.
    pub fn offer(source: Source, broadcast: &BroadcastProducer, budget: Arc<Budget>) -> Self {
        let track = Arc::new(broadcast.create_track(tracks::VIDEO_H264));
        let idle_after = budget.on_demand_idle();
        Self {
            source,
            track,
            budget,
            idle_after,
            worker: None,
            wanted_since: None,
            idle_since: None,
            refused: false,
        }
    }

    /// Whether the transcoder runs now.
    pub fn running(&self) -> bool {
        self.worker.is_some()
    }

    /// One frame of the source: starts the transcoder if the track has viewers, feeds it, and
    /// stops it once they have been gone for a while.
    pub fn push(&mut self, frame: &Frame) {
        let now = frame.arrived;
        let viewed = self.track.consumers() > 0;
        match &mut self.worker {
            None if !viewed => self.wanted_since = None,
            None => {
                let since = *self.wanted_since.get_or_insert(now);
                if now.duration_since(since) >= DEMAND_FOR {
                    self.start();
                }
            }
            Some(_) if viewed => self.idle_since = None,
            Some(_) => {
                let since = *self.idle_since.get_or_insert(now);
                if now.duration_since(since) >= self.idle_after {
                    info!(from = ?self.source, "no viewer needs H.264 any more; transcoder stopped");
                    self.worker = None;
                    self.wanted_since = None;
                    return;
                }
            }
        }
        if let Some(worker) = &mut self.worker {
            worker.push(
                frame.payload.clone(),
                frame.timestamp,
                frame.keyframe,
                frame.arrived,
            );
        }
    }

    fn start(&mut self) {
        let Some(slot) = self.budget.try_take() else {
            if !std::mem::replace(&mut self.refused, true) {
                warn!(from = ?self.source, "a viewer needs H.264 but every video re-encoder is busy (transcode.max_channels)");
            }
            return;
        };
        match VideoWorker::start_h264(self.source, self.track.clone(), slot) {
            Ok(worker) => {
                info!(from = ?self.source, "a viewer needs H.264; transcoding");
                self.worker = Some(worker);
                self.idle_since = None;
                self.refused = false;
            }
            Err(err) => {
                warn!(%err, "cannot transcode this video to H.264");
                self.wanted_since = None;
            }
        }
    }
}
