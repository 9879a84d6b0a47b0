//! A track: a bounded cache of groups with one producer and any number of consumers.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::sync::Notify;

use crate::group::{self, Group};
use crate::wakers::{Waiter, Wakers};
use crate::{Codec, Frame};

/// How much of a track is kept. The cache is bounded by these, whatever the number or speed of
/// consumers. A consumer also holds the group it is in until its next read finds the cache has
/// let it go: one that stops being read keeps that one group (viewers are read at every frame).
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

/// A cached group and what the producer keeps about it.
struct Cached {
    group: Arc<Group>,
    /// Frames written to its slots.
    len: usize,
    /// Their payload bytes.
    bytes: usize,
}

impl Cached {
    /// Its frames, oldest first (every slot below `len` is written).
    fn frames(&self) -> impl DoubleEndedIterator<Item = &Frame> {
        (0..self.len).filter_map(|i| self.group.frame(i))
    }
}

/// The producer's side of the track, and what consumers look up when they join, fall behind
/// or find their group gone. Reading on within a group, or into the next, takes no lock.
struct State {
    groups: VecDeque<Cached>,
    bytes: usize,
    /// The group evicted last and how many frames it had: a consumer that had read all of it
    /// goes on to the next group without counting a skip.
    evicted: Option<(u64, usize)>,
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
    /// Groups started so far: the next group's sequence number. Written under the lock.
    groups_started: AtomicU64,
    /// Set, under the lock, when the producer has gone.
    closed: AtomicBool,
    /// Consumers waiting for a frame: woken without a lock they would all share.
    wakers: Wakers,
    /// Shared by every track of a broadcast: wakes the publisher when a keyframe is wanted.
    keyframe_notify: Arc<Notify>,
    /// Consumers reading it now: a producer that makes the track only on demand asks.
    consumers: AtomicUsize,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing under the lock panics short of a bug; should one, readers would at worst see
        // a wrong byte count, so a poisoned lock is still used.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// What a read that found no frame returns: the end once the producer has gone.
    fn waiting(&self) -> Next {
        if self.closed.load(Ordering::Acquire) {
            Next::Closed
        } else {
            Next::Pending
        }
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
            evicted: None,
            codec: None,
            keyframe_wanted: false,
            accepts_requests: false,
        };
        let shared = Shared {
            name: name.to_owned(),
            limits,
            state: Mutex::new(state),
            groups_started: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            wakers: Wakers::default(),
            keyframe_notify,
            consumers: AtomicUsize::new(0),
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
            let seq = self.shared.groups_started.load(Ordering::Relaxed);
            state.keyframe_wanted = false;
            let group = Group::new(seq, frame.arrived, 0);
            if let Some(previous) = state.groups.back() {
                previous.group.set_next(&group);
            }
            state.groups.push_back(Cached {
                group,
                len: 0,
                bytes: 0,
            });
            self.shared.groups_started.store(seq + 1, Ordering::Release);
        }
        if state
            .groups
            .back()
            .is_some_and(|c| c.len == group::CAPACITY)
        {
            trim_newest(&mut state, usize::MAX, group::CAPACITY * 3 / 4);
        }
        let Some(cached) = state.groups.back_mut() else {
            return;
        };
        let len = frame.payload.len();
        if cached.group.push(cached.len, frame).is_err() {
            // Cannot happen: a full group was trimmed above.
            return;
        }
        cached.len += 1;
        cached.bytes += len;
        state.bytes += len;
        evict(&mut state, self.shared.limits);
        drop(state);
        self.shared.wakers.wake_all();
    }

    /// A consumer that starts at the latest group.
    pub fn consume(&self) -> TrackConsumer {
        TrackConsumer::new(self.shared.clone(), true)
    }

    /// A consumer left out of [`TrackProducer::consumers`]: the broadcast's own, which others
    /// are cloned from.
    pub(crate) fn consume_uncounted(&self) -> TrackConsumer {
        TrackConsumer::new(self.shared.clone(), false)
    }

    /// Sequence number of the latest group, if any.
    pub fn latest_group(&self) -> Option<u64> {
        self.shared.lock().groups.back().map(|c| c.group.seq)
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

    /// Drops every cached group: a producer that stopped making the track has no one join
    /// it later at a picture from before. Consumers wait for the next group.
    pub fn clear(&self) {
        let mut state = self.shared.lock();
        while let Some(old) = state.groups.pop_front() {
            old.group.set_gone();
            state.bytes -= old.bytes;
            state.evicted = Some((old.group.seq, old.group.dropped + old.len));
        }
        drop(state);
        self.shared.wakers.wake_all();
    }

    /// Consumers of the track now (a look at the track's name or codec makes one, briefly).
    pub fn consumers(&self) -> usize {
        self.shared.consumers.load(Ordering::Relaxed)
    }
}

impl Drop for TrackConsumer {
    fn drop(&mut self) {
        if self.counted {
            self.shared.consumers.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl Drop for TrackProducer {
    fn drop(&mut self) {
        let state = self.shared.lock();
        self.shared.closed.store(true, Ordering::Release);
        drop(state);
        self.shared.wakers.wake_all();
    }
}

fn evict(state: &mut State, limits: TrackLimits) {
    while state.groups.len() > limits.max_groups
        || (state.bytes > limits.max_bytes && state.groups.len() > 1)
    {
        if let Some(old) = state.groups.pop_front() {
            old.group.set_gone();
            state.bytes -= old.bytes;
            state.evicted = Some((old.group.seq, old.group.dropped + old.len));
        }
    }
    // One group alone over budget (a publisher that never sends keyframes): drop its oldest
    // frames, keeping at least the newest. It goes down to three quarters of the budget, so a
    // group that stays over budget is copied once per quarter of it, not once per frame.
    if state.bytes > limits.max_bytes {
        trim_newest(state, limits.max_bytes / 4 * 3, usize::MAX);
    }
}

/// Replaces the newest group with a copy without its oldest frames, keeping at most
/// `max_bytes` and `max_frames` of them and always the newest frame. Slots are written once,
/// so dropping frames takes a new group; consumers in the old one find it gone and look again.
fn trim_newest(state: &mut State, max_bytes: usize, max_frames: usize) {
    let Some(old) = state.groups.back() else {
        return;
    };
    let (mut drop_frames, mut bytes) = (0, old.bytes);
    for frame in old.frames() {
        if (bytes <= max_bytes && old.len - drop_frames <= max_frames) || old.len - drop_frames == 1
        {
            break;
        }
        bytes -= frame.payload.len();
        drop_frames += 1;
    }
    if drop_frames == 0 {
        return;
    }
    let group = Group::new(
        old.group.seq,
        old.group.started,
        old.group.dropped + drop_frames,
    );
    let mut len = 0;
    for frame in old.frames().skip(drop_frames) {
        if group.push(len, frame.clone()).is_ok() {
            len += 1;
        }
    }
    old.group.set_gone();
    state.bytes -= old.bytes - bytes;
    if let Some(back) = state.groups.back_mut() {
        *back = Cached { group, len, bytes };
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
    /// The group `pos` is in, once found: read on without the track's lock, and held so that a
    /// read takes no reference count on it (only the frame's own, as every read must). The
    /// cache evicting it makes the next read look again and let it go.
    group: Option<Arc<Group>>,
    waiter: Waiter,
    stats: TrackStats,
    /// Counted in [`TrackProducer::consumers`].
    counted: bool,
}

impl TrackConsumer {
    /// A consumer of the same track for a look at it (codec, bitrate, state), left out of
    /// [`TrackProducer::consumers`]: looking is not reading.
    pub fn peek(&self) -> TrackConsumer {
        TrackConsumer::new(self.shared.clone(), false)
    }
}

impl Clone for TrackConsumer {
    /// A fresh consumer of the same track, starting at the latest group.
    fn clone(&self) -> Self {
        Self::new(self.shared.clone(), true)
    }
}

enum Next {
    Frame(Frame),
    Pending,
    Closed,
}

impl TrackConsumer {
    fn new(shared: Arc<Shared>, counted: bool) -> Self {
        // Fix the starting point now, so frames written after subscribing are not skipped.
        let pos = shared
            .lock()
            .groups
            .back()
            .map(|c| start_of_newest(&c.group));
        let waiter = shared.wakers.waiter();
        if counted {
            shared.consumers.fetch_add(1, Ordering::Relaxed);
        }
        Self {
            shared,
            pos,
            group: None,
            waiter,
            stats: TrackStats::default(),
            counted,
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
        self.shared.lock().groups.back().map(|c| c.group.seq)
    }

    /// True once the producer has gone.
    pub fn is_closed(&self) -> bool {
        self.shared.closed.load(Ordering::Acquire)
    }

    /// How long ago the latest group's keyframe arrived.
    pub fn latest_group_age(&self, now: Instant) -> Option<Duration> {
        let state = self.shared.lock();
        state
            .groups
            .back()
            .map(|c| now.saturating_duration_since(c.group.started))
    }

    /// Asks the producer for a fresh keyframe. Returns false if the producer cannot honour
    /// keyframe requests (then only the cache can help).
    pub fn request_keyframe(&self) -> bool {
        let mut state = self.shared.lock();
        if !state.accepts_requests || self.shared.closed.load(Ordering::Acquire) {
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
        let next_seq = self.shared.groups_started.load(Ordering::Acquire);
        self.pos = Some(Position {
            seq: next_seq,
            index: 0,
        });
        self.group = None;
    }

    /// Payload bitrate (bits per second) over the frames that arrived in the last `window`
    /// before `now`; `None` until there are frames spanning at least a quarter of it.
    pub fn bitrate(&self, now: Instant, window: Duration) -> Option<u64> {
        let state = self.shared.lock();
        let since = now.checked_sub(window)?;
        let mut bytes = 0u64;
        let mut first: Option<Instant> = None;
        'groups: for cached in state.groups.iter().rev() {
            for frame in cached.frames().rev() {
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
        self.group = None;
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

    /// Reads on in the consumer's group, and into the next, without the track's lock; looks
    /// in the cache (under the lock) to start, after falling behind, or when its group is gone.
    fn try_next(&mut self) -> Next {
        loop {
            let Some(pos) = self.pos else {
                return self.try_next_in_cache();
            };
            // Read before the slot: the producer closes only after its last write.
            let closed = self.shared.closed.load(Ordering::Acquire);
            let Some(group) = self.group.as_ref().filter(|g| !g.is_gone()) else {
                if pos.seq >= self.shared.groups_started.load(Ordering::Acquire) {
                    // Waiting for a group that has not started yet.
                    return if closed { Next::Closed } else { Next::Pending };
                }
                return self.try_next_in_cache();
            };
            match step(group, pos, &self.shared) {
                Step::Frame(frame) => {
                    let frame = frame.clone();
                    self.pos = Some(Position {
                        index: pos.index + 1,
                        ..pos
                    });
                    return Next::Frame(frame);
                }
                Step::Wait => return if closed { Next::Closed } else { Next::Pending },
                Step::Cache => return self.try_next_in_cache(),
                Step::Next(next) => {
                    self.pos = Some(Position {
                        seq: pos.seq + 1,
                        index: 0,
                    });
                    self.group = Some(next);
                }
            }
        }
    }

    fn try_next_in_cache(&mut self) -> Next {
        let state = self.shared.lock();
        let Some(newest) = state.groups.back().map(|c| &c.group) else {
            self.group = None;
            return self.shared.waiting();
        };
        let newest_seq = newest.seq;
        let mut pos = self.pos.unwrap_or_else(|| start_of_newest(newest));
        loop {
            let front_seq = state.groups.front().map_or(newest_seq, |c| c.group.seq);
            if pos.seq > newest_seq {
                // Waiting for a group that has not started yet.
                self.pos = Some(pos);
                self.group = None;
                return self.shared.waiting();
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
            let cached = &state.groups[(pos.seq - front_seq) as usize];
            let group = &cached.group;
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
            self.group = Some(group.clone());
            if let Some(frame) = group.frame(pos.index - group.dropped) {
                pos.index += 1;
                self.pos = Some(pos);
                return Next::Frame(frame.clone());
            }
            if pos.seq == newest_seq {
                self.pos = Some(pos);
                return self.shared.waiting();
            }
            pos = after_group(pos, newest, &mut self.stats);
        }
    }
}

enum Step<'a> {
    Frame(&'a Frame),
    /// Read all the newest group has.
    Wait,
    /// Look in the cache: the consumer's position is not in this group or the next.
    Cache,
    /// Read all of a finished group; go on in the next.
    Next(Arc<Group>),
}

/// One step of a read within `group`, where the consumer is at `pos`.
fn step<'a>(group: &'a Group, pos: Position, shared: &Shared) -> Step<'a> {
    // Read before the slot: the producer links the next group only after its last write here.
    let next = group.next();
    let Some(slot) = pos.index.checked_sub(group.dropped) else {
        // Not reached: the cache moves a position past a group's dropped frames.
        return Step::Cache;
    };
    if let Some(frame) = group.frame(slot) {
        return Step::Frame(frame);
    }
    let Some(next) = next else {
        return Step::Wait;
    };
    // More than one group behind: the cache skips ahead.
    if shared.groups_started.load(Ordering::Acquire) > pos.seq + 2 {
        return Step::Cache;
    }
    next.upgrade()
        .filter(|g| !g.is_gone())
        .map_or(Step::Cache, Step::Next)
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

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use bytes::Bytes;

    use super::*;

    fn track(limits: TrackLimits) -> TrackProducer {
        TrackProducer::new("video", limits, Arc::new(Notify::new()))
    }

    fn frame(ts: u64, keyframe: bool) -> Frame {
        Frame::new(ts, keyframe, Bytes::from_static(b"frame"), Instant::now())
    }

    #[test]
    fn a_cleared_track_starts_afresh_for_every_consumer() {
        let t = track(TrackLimits::default());
        t.write(frame(0, true));
        t.write(frame(1, false));
        let mut reading = t.consume();
        assert_eq!(reading.try_next_frame().unwrap().unwrap().timestamp, 0);
        t.clear();
        assert_eq!(t.cached_bytes(), 0);
        let mut joining = t.consume();
        assert!(reading.try_next_frame().unwrap().is_none());
        assert!(joining.try_next_frame().unwrap().is_none());
        t.write(frame(9, true));
        assert_eq!(reading.try_next_frame().unwrap().unwrap().timestamp, 9);
        assert_eq!(joining.try_next_frame().unwrap().unwrap().timestamp, 9);
    }

    #[test]
    fn the_producer_sees_how_many_consume() {
        let t = track(TrackLimits::default());
        assert_eq!(t.consumers(), 0);
        let own = t.consume_uncounted();
        let look = own.peek();
        assert_eq!(t.consumers(), 0);
        drop(look);
        let a = own.clone();
        let b = a.clone();
        assert_eq!(t.consumers(), 2);
        drop(a);
        assert_eq!(t.consumers(), 1);
        drop(b);
        assert_eq!(t.consumers(), 0);
    }

    #[test]
    fn reading_on_and_into_the_next_group_takes_no_lock() {
        let t = track(TrackLimits::default());
        t.write(frame(0, true));
        let mut c = t.consume();
        assert_eq!(c.try_next_frame().unwrap().unwrap().timestamp, 0);
        t.write(frame(1, false));
        t.write(frame(2, true));
        let held = t.shared.lock();
        let (done, read) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            let timestamps: Vec<u64> = std::iter::from_fn(|| c.try_next_frame().unwrap())
                .map(|f| f.timestamp)
                .collect();
            let _ = done.send(timestamps);
        });
        let timestamps = read.recv_timeout(Duration::from_secs(10));
        drop(held);
        assert_eq!(timestamps, Ok(vec![1, 2]), "the reads waited for the lock");
        reader.join().unwrap();
    }

    #[test]
    fn a_consumer_lets_go_of_an_evicted_group_at_its_next_read() {
        let t = track(TrackLimits {
            max_bytes: 1 << 20,
            max_groups: 1,
        });
        t.write(frame(0, true));
        let mut c = t.consume();
        c.try_next_frame().unwrap();
        let first = Arc::downgrade(c.group.as_ref().unwrap());
        t.write(frame(1, true));
        assert!(first.upgrade().is_some(), "held until the consumer reads");
        assert_eq!(c.try_next_frame().unwrap().unwrap().timestamp, 1);
        assert!(first.upgrade().is_none(), "the evicted group is still held");
    }

    #[test]
    fn a_full_group_is_trimmed_and_readers_count_what_they_lost() {
        let t = track(TrackLimits::default());
        let mut c = t.consume();
        t.write(frame(0, true));
        assert!(c.try_next_frame().unwrap().unwrap().keyframe);
        let frames = group::CAPACITY as u64 + 10;
        for ts in 1..frames {
            t.write(frame(ts, false));
        }
        let kept = group::CAPACITY * 3 / 4 + 10;
        assert_eq!(t.cached_bytes(), kept * 5);
        let next = c.try_next_frame().unwrap().unwrap();
        assert_eq!(next.timestamp, frames - kept as u64);
        assert_eq!(c.stats().frames_lost, frames - kept as u64 - 1);
        assert!(
            t.consume().try_next_frame().unwrap().is_none(),
            "joined mid-group"
        );
    }
}
