//! A track: a bounded cache of groups with one producer and any number of consumers.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Notify;

use crate::wakers::{Waiter, Wakers};
use crate::{Codec, Frame};

/// How much of a track is kept. Memory per track is bounded by these, whatever the number or
/// speed of consumers: consumers hold positions, not frames.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TrackLimits {
    /// Payload bytes kept across all cached groups.
    pub max_bytes: usize,
    /// Groups kept (the latest is the one new consumers start at).
    pub max_groups: usize,
}

impl Default for TrackLimits {
    fn default() -> Self {
        // 16 MiB holds a 4 s GOP at 30 Mbit/s.
        Self {
            max_bytes: 16 << 20,
            max_groups: 3,
        }
    }
}

/// Counters a consumer keeps about itself.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TrackStats {
    /// Groups skipped because the consumer fell behind.
    pub groups_skipped: u64,
    /// Frames lost because the cache dropped them before the consumer read them.
    pub frames_lost: u64,
}

struct Group {
    seq: u64,
    /// When its keyframe arrived.
    started: Instant,
    /// Frames dropped from the front of this group to honour the byte budget.
    dropped: usize,
    frames: VecDeque<Frame>,
}

struct State {
    groups: VecDeque<Group>,
    bytes: usize,
    next_seq: u64,
    /// The group evicted last and how many frames it had: a consumer that had read all of it
    /// goes on to the next group without counting a skip.
    evicted: Option<(u64, usize)>,
    closed: bool,
    codec: Option<Codec>,
    /// A consumer asked for a fresh keyframe; the producer has not taken the request yet.
    keyframe_wanted: bool,
    /// The producer can honour keyframe requests (a WebRTC publisher; RTMP cannot).
    accepts_requests: bool,
}

struct Shared {
    name: String,
    limits: TrackLimits,
    state: Mutex<State>,
    /// Consumers waiting for a frame: woken without a lock they would all share.
    wakers: Wakers,
    /// Shared by every track of a broadcast: wakes the publisher when a keyframe is wanted.
    keyframe_notify: Arc<Notify>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the cache consistent (every mutation is a
        // single push/pop), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Writes a track. Dropping it ends the track for every consumer.
pub struct TrackProducer {
    shared: Arc<Shared>,
}

impl TrackProducer {
    pub(crate) fn new(name: &str, limits: TrackLimits, keyframe_notify: Arc<Notify>) -> Self {
        let limits = TrackLimits {
            max_bytes: limits.max_bytes.max(1),
            max_groups: limits.max_groups.max(1),
        };
        let state = State {
            groups: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            evicted: None,
            closed: false,
            codec: None,
            keyframe_wanted: false,
            accepts_requests: false,
        };
        let shared = Shared {
            name: name.to_owned(),
            limits,
            state: Mutex::new(state),
            wakers: Wakers::default(),
            keyframe_notify,
        };
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The track's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Sets or replaces the codec description (e.g. new SPS/PPS).
    pub fn set_codec(&self, codec: Codec) {
        self.shared.lock().codec = Some(codec);
        self.shared.wakers.wake_all();
    }

    /// Appends a frame. A keyframe starts a new group; frames before the first keyframe are
    /// dropped, since no consumer could decode them.
    pub fn write(&self, frame: Frame) {
        let mut state = self.shared.lock();
        if frame.keyframe {
            let seq = state.next_seq;
            state.next_seq += 1;
            state.keyframe_wanted = false;
            state.groups.push_back(Group {
                seq,
                started: frame.arrived,
                dropped: 0,
                frames: VecDeque::new(),
            });
        }
        let Some(group) = state.groups.back_mut() else {
            return;
        };
        let len = frame.payload.len();
        group.frames.push_back(frame);
        state.bytes += len;
        evict(&mut state, self.shared.limits);
        drop(state);
        self.shared.wakers.wake_all();
    }

    /// A consumer that starts at the latest group.
    pub fn consume(&self) -> TrackConsumer {
        TrackConsumer::new(self.shared.clone())
    }

    /// Sequence number of the latest group, if any.
    pub fn latest_group(&self) -> Option<u64> {
        self.shared.lock().groups.back().map(|g| g.seq)
    }

    /// Bytes of payload currently cached.
    pub fn cached_bytes(&self) -> usize {
        self.shared.lock().bytes
    }

    /// Declares that this producer honours keyframe requests (see
    /// [`TrackConsumer::request_keyframe`]); consumers then wait for a fresh keyframe instead
    /// of replaying an old group.
    pub fn accept_keyframe_requests(&self) {
        self.shared.lock().accepts_requests = true;
    }

    /// Takes a pending keyframe request, if any. Many consumers asking at once make one
    /// request; writing a keyframe clears it.
    pub fn take_keyframe_request(&self) -> bool {
        std::mem::take(&mut self.shared.lock().keyframe_wanted)
    }

    /// True while a keyframe request is pending.
    pub fn keyframe_wanted(&self) -> bool {
        self.shared.lock().keyframe_wanted
    }
}

impl Drop for TrackProducer {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wakers.wake_all();
    }
}

fn evict(state: &mut State, limits: TrackLimits) {
    while state.groups.len() > limits.max_groups
        || (state.bytes > limits.max_bytes && state.groups.len() > 1)
    {
        if let Some(old) = state.groups.pop_front() {
            state.bytes -= old.frames.iter().map(|f| f.payload.len()).sum::<usize>();
            state.evicted = Some((old.seq, old.dropped + old.frames.len()));
        }
    }
    // One group alone over budget (a publisher that never sends keyframes): drop its oldest
    // frames, keeping at least the newest.
    if let Some(group) = state.groups.back_mut() {
        while state.bytes > limits.max_bytes && group.frames.len() > 1 {
            if let Some(f) = group.frames.pop_front() {
                state.bytes -= f.payload.len();
                group.dropped += 1;
            }
        }
    }
}

/// Where a consumer is: group sequence and frame index within the group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Position {
    seq: u64,
    index: usize,
}

/// Reads a track from the start of the latest group, skipping ahead when it falls behind.
pub struct TrackConsumer {
    shared: Arc<Shared>,
    /// `None`: start at the latest group on the next read.
    pos: Option<Position>,
    waiter: Waiter,
    stats: TrackStats,
}

impl Clone for TrackConsumer {
    /// A fresh consumer of the same track, starting at the latest group.
    fn clone(&self) -> Self {
        Self::new(self.shared.clone())
    }
}

enum Next {
    Frame(Frame),
    Pending,
    Closed,
}

impl TrackConsumer {
    fn new(shared: Arc<Shared>) -> Self {
        // Fix the starting point now, so frames written after subscribing are not skipped.
        let pos = shared.lock().groups.back().map(start_of_newest);
        let waiter = shared.wakers.waiter();
        Self {
            shared,
            pos,
            waiter,
            stats: TrackStats::default(),
        }
    }

    /// The track's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The codec description, once the producer has set it.
    pub fn codec(&self) -> Option<Codec> {
        self.shared.lock().codec.clone()
    }

    /// Sequence number of the track's latest group, if any.
    pub fn latest_group(&self) -> Option<u64> {
        self.shared.lock().groups.back().map(|g| g.seq)
    }

    /// True once the producer has gone.
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed
    }

    /// How long ago the latest group's keyframe arrived.
    pub fn latest_group_age(&self, now: Instant) -> Option<Duration> {
        let state = self.shared.lock();
        state
            .groups
            .back()
            .map(|g| now.saturating_duration_since(g.started))
    }

    /// Asks the producer for a fresh keyframe. Returns false if the producer cannot honour
    /// keyframe requests (then only the cache can help).
    pub fn request_keyframe(&self) -> bool {
        let mut state = self.shared.lock();
        if !state.accepts_requests || state.closed {
            return false;
        }
        if !state.keyframe_wanted {
            state.keyframe_wanted = true;
            drop(state);
            self.shared.keyframe_notify.notify_one();
        }
        true
    }

    /// True if the producer honours keyframe requests.
    pub fn accepts_keyframe_requests(&self) -> bool {
        self.shared.lock().accepts_requests
    }

    /// Moves this consumer to the start of the next group to begin (the next keyframe): for
    /// switching layers or joining without replaying an old group.
    pub fn skip_to_next_group(&mut self) {
        let next_seq = self.shared.lock().next_seq;
        self.pos = Some(Position {
            seq: next_seq,
            index: 0,
        });
    }

    /// Payload bitrate (bits per second) over the frames that arrived in the last `window`
    /// before `now`; `None` until there are frames spanning at least a quarter of it.
    pub fn bitrate(&self, now: Instant, window: Duration) -> Option<u64> {
        let state = self.shared.lock();
        let since = now.checked_sub(window)?;
        let mut bytes = 0u64;
        let mut first: Option<Instant> = None;
        'groups: for group in state.groups.iter().rev() {
            for frame in group.frames.iter().rev() {
                if frame.arrived < since {
                    break 'groups;
                }
                bytes += frame.payload.len() as u64;
                first = Some(frame.arrived);
            }
        }
        let span = now.saturating_duration_since(first?);
        (span >= window / 4).then(|| bytes * 8 * 1000 / span.as_millis().max(1) as u64)
    }

    /// This consumer's counters.
    pub fn stats(&self) -> TrackStats {
        self.stats
    }

    /// Goes back to the start of the latest group (answers a keyframe request from the cache).
    pub fn restart_at_latest_group(&mut self) {
        self.pos = None;
    }

    /// The next frame, or `None` once the track has ended. Cancel-safe.
    pub async fn next_frame(&mut self) -> Option<Frame> {
        poll_fn(|cx| {
            self.waiter.register(cx.waker());
            match self.try_next() {
                Next::Frame(f) => Poll::Ready(Some(f)),
                Next::Closed => Poll::Ready(None),
                Next::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// The next frame if one is ready now; `Ok(None)` if not yet, `Err(())` once ended.
    #[allow(clippy::result_unit_err)]
    pub fn try_next_frame(&mut self) -> Result<Option<Frame>, ()> {
        match self.try_next() {
            Next::Frame(f) => Ok(Some(f)),
            Next::Pending => Ok(None),
            Next::Closed => Err(()),
        }
    }

    fn try_next(&mut self) -> Next {
        let state = self.shared.lock();
        let Some(newest) = state.groups.back() else {
            return if state.closed {
                Next::Closed
            } else {
                Next::Pending
            };
        };
        let newest_seq = newest.seq;
        let mut pos = self.pos.unwrap_or_else(|| start_of_newest(newest));
        loop {
            let front_seq = state.groups.front().map_or(newest_seq, |g| g.seq);
            if pos.seq > newest_seq {
                // Waiting for a group that has not started yet.
                self.pos = Some(pos);
                return if state.closed {
                    Next::Closed
                } else {
                    Next::Pending
                };
            }
            if pos.seq < front_seq {
                if pos.seq + 1 == front_seq && state.evicted == Some((pos.seq, pos.index)) {
                    // Evicted after we read all of it: on as from a finished group.
                    pos = after_group(pos, newest, &mut self.stats);
                } else {
                    // Evicted before we read it all: we fell behind. Skip to the newest.
                    self.stats.groups_skipped += newest_seq - pos.seq;
                    pos = start_of_newest(newest);
                }
                continue;
            }
            let group = &state.groups[(pos.seq - front_seq) as usize];
            if pos.index < group.dropped {
                self.stats.frames_lost += (group.dropped - pos.index) as u64;
                if pos.index == 0 {
                    // Its keyframe is gone: nothing in this group is decodable for us.
                    pos = Position {
                        seq: pos.seq + 1,
                        index: 0,
                    };
                    continue;
                }
                pos.index = group.dropped;
            }
            if let Some(frame) = group.frames.get(pos.index - group.dropped) {
                pos.index += 1;
                self.pos = Some(pos);
                return Next::Frame(frame.clone());
            }
            if pos.seq == newest_seq {
                self.pos = Some(pos);
                return if state.closed {
                    Next::Closed
                } else {
                    Next::Pending
                };
            }
            pos = after_group(pos, newest, &mut self.stats);
        }
    }
}

/// Where a consumer goes when it has read all of its group: to the next one, or straight to
/// the newest if more than one group behind, so a slow consumer catches up with live.
fn after_group(pos: Position, newest: &Group, stats: &mut TrackStats) -> Position {
    if newest.seq > pos.seq + 1 {
        stats.groups_skipped += newest.seq - pos.seq - 1;
        start_of_newest(newest)
    } else {
        Position {
            seq: pos.seq + 1,
            index: 0,
        }
    }
}

/// Where a new consumer starts: the newest group, unless its start was dropped for the byte
/// budget, in which case the next group (so the first frame is always a keyframe).
fn start_of_newest(newest: &Group) -> Position {
    if newest.dropped == 0 {
        Position {
            seq: newest.seq,
            index: 0,
        }
    } else {
        Position {
            seq: newest.seq + 1,
            index: 0,
        }
    }
}
