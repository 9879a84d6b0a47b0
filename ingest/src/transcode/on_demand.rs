//! H.264 made on demand from an H.265 or AV1 channel, for viewers whose browser cannot decode
//! it: the channel offers the track [`tracks::VIDEO_H264`] from the start, and the transcoder
//! runs (on a re-encoder thread, within the node's budget) while the track has viewers, and
//! stops a while after the last one leaves.

use std::sync::Arc;
use std::time::{Duration, Instant};

use media::{tracks, BroadcastProducer, Frame, TrackProducer};
use tracing::{info, warn};

use super::video::Source;
use super::video_worker::{Budget, Stopping, VideoWorker};

/// A transcoder that could not start (or ended by itself) is tried again after this.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What the player pages say while a viewer needs H.264 that no re-encoder is free to make.
pub const BUSY_NOTICE: &str = "Browsers that cannot decode this stream's codec get no picture \
for now: the server is transcoding as many channels as it may.";

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
    /// The last run, told to stop: the next starts once it has ended (its last pictures
    /// cleared from the track, not the next run's first).
    stopping: Option<Stopping>,
    /// Since when the track has had consumers (not running), or none (running).
    wanted_since: Option<Instant>,
    idle_since: Option<Instant>,
    /// Told the log and the players that every re-encoder was busy (until one starts, or
    /// the viewers leave).
    refused: bool,
    /// After a transcoder that could not start, not before this.
    retry_at: Option<Instant>,
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
            stopping: None,
            wanted_since: None,
            idle_since: None,
            refused: false,
            retry_at: None,
        }
    }

    /// Whether the transcoder runs now.
    pub fn running(&self) -> bool {
        self.worker.is_some()
    }

    /// One frame of the source: starts the transcoder if the track has viewers, feeds it, and
    /// stops it once they have been gone for a while.
    pub fn push(&mut self, frame: &Frame, broadcast: &BroadcastProducer) {
        self.tick(frame.arrived, broadcast);
        if let Some(worker) = &mut self.worker {
            worker.push(frame);
        }
    }

    /// Starts or stops the transcoder as viewers come and go: at each video frame, and at the
    /// channel's audio too, so a channel whose video stops still gives its place back.
    pub fn tick(&mut self, now: Instant, broadcast: &BroadcastProducer) {
        if self.stopping.as_ref().is_some_and(Stopping::finished) {
            self.stopping = None;
        }
        let viewed = self.track.consumers() > 0;
        match &mut self.worker {
            None if !viewed => {
                self.wanted_since = None;
                self.unrefuse(broadcast);
            }
            None => {
                let since = *self.wanted_since.get_or_insert(now);
                let may = self.retry_at.is_none_or(|at| now >= at) && self.stopping.is_none();
                if may && now.duration_since(since) >= DEMAND_FOR {
                    self.start(broadcast, now);
                }
            }
            Some(_) if viewed => self.idle_since = None,
            Some(_) => {
                let since = *self.idle_since.get_or_insert(now);
                if now.duration_since(since) >= self.idle_after {
                    info!(from = ?self.source, "no viewer needs H.264 any more; transcoder stopped");
                    self.stopping = self.worker.take().map(VideoWorker::stop_clearing);
                    self.wanted_since = None;
                    return;
                }
            }
        }
        if let Some(worker) = &self.worker {
            if !worker.is_running() {
                warn!(from = ?self.source, "the H.264 transcoder ended; trying again in a while");
                self.worker = None;
                self.retry_at = Some(now + RETRY_AFTER);
            }
        }
    }

    fn start(&mut self, broadcast: &BroadcastProducer, now: Instant) {
        let Some(slot) = self.budget.try_take() else {
            if !std::mem::replace(&mut self.refused, true) {
                warn!(from = ?self.source, "a viewer needs H.264 but every video re-encoder is busy (transcode.max_channels)");
                // Said on the player page, unless it says something already.
                if broadcast.consume().notice().is_none() {
                    broadcast.set_notice(Some(BUSY_NOTICE.to_owned()));
                }
            }
            return;
        };
        match VideoWorker::start_h264(self.source, self.track.clone(), slot) {
            Ok(worker) => {
                info!(from = ?self.source, "a viewer needs H.264; transcoding");
                self.worker = Some(worker);
                self.idle_since = None;
                self.unrefuse(broadcast);
            }
            Err(err) => {
                warn!(%err, "cannot transcode this video to H.264; trying again in a while");
                self.retry_at = Some(now + RETRY_AFTER);
            }
        }
    }

    /// Takes back the busy notice, if it was said.
    fn unrefuse(&mut self, broadcast: &BroadcastProducer) {
        if std::mem::take(&mut self.refused)
            && broadcast.consume().notice().as_deref() == Some(BUSY_NOTICE)
        {
            broadcast.set_notice(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use media::{Bus, ChannelName, TrackLimits};

    use super::super::video::samples;
    use super::super::video_worker::TranscodeConfig;
    use super::*;

    #[test]
    fn made_while_viewed_said_when_busy_and_stopped_when_left() {
        let bus = Bus::new(TrackLimits::default());
        let broadcast = bus.publish(ChannelName::new("hevc").unwrap()).unwrap();
        let budget = Budget::new(TranscodeConfig {
            max_channels: 1,
            on_demand_idle_secs: 0,
            ..TranscodeConfig::default()
        });
        let mut on_demand = OnDemand::offer(Source::H265, &broadcast, budget.clone());
        let input = samples::other_codec("libx265", 160, 96, 30);
        let t0 = Instant::now();
        let mut next = 0usize;
        let mut push = |on_demand: &mut OnDemand, n: usize| {
            for _ in 0..n {
                let (au, pts) = &input[next % input.len()];
                let at = t0 + Duration::from_millis(33 * next as u64);
                let frame = Frame::new(*pts, next.is_multiple_of(30), Bytes::from(au.clone()), at);
                on_demand.push(&frame, &broadcast);
                next += 1;
            }
        };
        let notice = || broadcast.consume().notice();

        // Offered, but nobody reads it: nothing runs.
        assert!(broadcast.consume().track(tracks::VIDEO_H264).is_some());
        push(&mut on_demand, 10);
        assert!(!on_demand.running());

        // A viewer while every re-encoder is busy: the player pages say so.
        let busy = budget.try_take().unwrap();
        let viewer = broadcast.consume().track(tracks::VIDEO_H264).unwrap();
        push(&mut on_demand, 10);
        assert!(!on_demand.running());
        assert_eq!(notice().as_deref(), Some(BUSY_NOTICE));

        // A place comes free: it runs, and the notice goes.
        drop(busy);
        push(&mut on_demand, 10);
        assert!(on_demand.running());
        assert_eq!(notice(), None);
        assert_eq!(budget.running(), 1);
        // It made pictures (the decoder starts at the next keyframe, frame 30).
        push(&mut on_demand, 15);
        let deadline = Instant::now() + Duration::from_secs(5);
        while on_demand.track.cached_bytes() == 0 {
            assert!(Instant::now() < deadline, "no H.264 made");
            std::thread::sleep(Duration::from_millis(10));
        }

        // The viewer leaves (on_demand_idle_secs = 0): it stops and gives its place back.
        drop(viewer);
        push(&mut on_demand, 2);
        assert!(!on_demand.running());
        let deadline = Instant::now() + Duration::from_secs(5);
        while budget.running() > 0 {
            assert!(Instant::now() < deadline, "the place was not given back");
            std::thread::sleep(Duration::from_millis(10));
        }
        // Nothing of this run is left for the next one's viewers to join at.
        assert_eq!(on_demand.track.cached_bytes(), 0);

        // A viewer again: a new run.
        let viewer = broadcast.consume().track(tracks::VIDEO_H264).unwrap();
        push(&mut on_demand, 10);
        assert!(on_demand.running());
        assert_eq!(budget.running(), 1);
        // The video stops (the encoder lost its camera) and the viewer leaves: the audio's
        // ticks stop the transcoder all the same.
        drop(viewer);
        let audio_at = t0 + Duration::from_millis(33 * next as u64 + 1000);
        on_demand.tick(audio_at, &broadcast);
        assert!(!on_demand.running());
        let deadline = Instant::now() + Duration::from_secs(5);
        while budget.running() > 0 {
            assert!(Instant::now() < deadline, "the place was not given back");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
