//! Consumers read on without the track's lock. These check that they read exactly what the
//! cache, read under its lock as every read once was, gives; and that readers on other threads
//! see frames in order while the producer writes.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use media::{Bus, ChannelName, Frame, TrackConsumer, TrackLimits, TrackProducer, TrackStats};
use proptest::prelude::*;

fn frame(ts: u64, keyframe: bool, len: usize) -> Frame {
    Frame::new(ts, keyframe, Bytes::from(vec![0u8; len]), Instant::now())
}

fn track(limits: TrackLimits) -> (Bus, media::BroadcastProducer, TrackProducer) {
    let bus = Bus::new(limits);
    let b = bus.publish(ChannelName::new("t").unwrap()).unwrap();
    let t = b.create_track("video");
    (bus, b, t)
}

/// The cache as a plain model: groups of (timestamp, length), read under one lock.
struct Model {
    limits: TrackLimits,
    groups: VecDeque<ModelGroup>,
    bytes: usize,
    next_seq: u64,
    evicted: Option<(u64, usize)>,
    closed: bool,
}

struct ModelGroup {
    seq: u64,
    dropped: usize,
    frames: VecDeque<(u64, usize)>,
}

#[derive(Default)]
struct ModelConsumer {
    pos: Option<(u64, usize)>,
    stats: TrackStats,
}

enum Read {
    Frame(u64),
    Pending,
    Closed,
}

impl Model {
    fn new(limits: TrackLimits) -> Self {
        Self {
            limits,
            groups: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            evicted: None,
            closed: false,
        }
    }

    fn write(&mut self, ts: u64, keyframe: bool, len: usize) {
        if keyframe {
            self.groups.push_back(ModelGroup {
                seq: self.next_seq,
                dropped: 0,
                frames: VecDeque::new(),
            });
            self.next_seq += 1;
        }
        let Some(group) = self.groups.back_mut() else {
            return;
        };
        group.frames.push_back((ts, len));
        self.bytes += len;
        let (max_bytes, max_groups) = (self.limits.max_bytes, self.limits.max_groups);
        while self.groups.len() > max_groups || (self.bytes > max_bytes && self.groups.len() > 1) {
            let old = self.groups.pop_front().unwrap();
            self.bytes -= old.frames.iter().map(|f| f.1).sum::<usize>();
            self.evicted = Some((old.seq, old.dropped + old.frames.len()));
        }
        if self.bytes > max_bytes {
            // Trimmed to three quarters of the budget, keeping the newest frame.
            let group = self.groups.back_mut().unwrap();
            while self.bytes > max_bytes / 4 * 3 && group.frames.len() > 1 {
                self.bytes -= group.frames.pop_front().unwrap().1;
                group.dropped += 1;
            }
        }
    }

    fn start(&self) -> Option<(u64, usize)> {
        self.groups.back().map(start_of)
    }

    fn read(&self, c: &mut ModelConsumer) -> Read {
        let waiting = if self.closed {
            Read::Closed
        } else {
            Read::Pending
        };
        let Some(newest) = self.groups.back() else {
            return waiting;
        };
        let mut pos = c.pos.unwrap_or_else(|| start_of(newest));
        loop {
            let front = self.groups[0].seq;
            if pos.0 > newest.seq {
                c.pos = Some(pos);
                return waiting;
            }
            if pos.0 < front {
                if pos.0 + 1 == front && self.evicted == Some(pos) {
                    pos = after(pos, newest, &mut c.stats);
                } else {
                    c.stats.groups_skipped += newest.seq - pos.0;
                    pos = start_of(newest);
                }
                continue;
            }
            let group = &self.groups[(pos.0 - front) as usize];
            if pos.1 < group.dropped {
                c.stats.frames_lost += (group.dropped - pos.1) as u64;
                if pos.1 == 0 {
                    pos = (pos.0 + 1, 0);
                    continue;
                }
                pos.1 = group.dropped;
            }
            if let Some(&(ts, _)) = group.frames.get(pos.1 - group.dropped) {
                c.pos = Some((pos.0, pos.1 + 1));
                return Read::Frame(ts);
            }
            if pos.0 == newest.seq {
                c.pos = Some(pos);
                return waiting;
            }
            pos = after(pos, newest, &mut c.stats);
        }
    }
}

fn start_of(newest: &ModelGroup) -> (u64, usize) {
    (newest.seq + u64::from(newest.dropped > 0), 0)
}

fn after(pos: (u64, usize), newest: &ModelGroup, stats: &mut TrackStats) -> (u64, usize) {
    if newest.seq > pos.0 + 1 {
        stats.groups_skipped += newest.seq - pos.0 - 1;
        start_of(newest)
    } else {
        (pos.0 + 1, 0)
    }
}

fn read(c: &mut TrackConsumer) -> Read {
    match c.try_next_frame() {
        Ok(Some(f)) => Read::Frame(f.timestamp),
        Ok(None) => Read::Pending,
        Err(()) => Read::Closed,
    }
}

fn same(a: &Read, b: &Read) -> bool {
    match (a, b) {
        (Read::Frame(x), Read::Frame(y)) => x == y,
        (Read::Pending, Read::Pending) | (Read::Closed, Read::Closed) => true,
        _ => false,
    }
}

#[derive(Debug, Clone)]
enum Op {
    Write { keyframe: bool, len: usize },
    Read { consumer: usize, n: usize },
    Join(usize),
    Restart(usize),
    SkipToNextGroup(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (prop::bool::weighted(0.2), 0usize..3000)
            .prop_map(|(keyframe, len)| Op::Write { keyframe, len }),
        4 => (0usize..4, 0usize..12).prop_map(|(consumer, n)| Op::Read { consumer, n }),
        1 => (0usize..4).prop_map(Op::Join),
        1 => (0usize..4).prop_map(Op::Restart),
        1 => (0usize..4).prop_map(Op::SkipToNextGroup),
    ]
}

proptest! {
    /// Every read, and every consumer's counters, match the model's, through writes, eviction,
    /// trimming, joins, restarts, skips and the end of the track.
    #[test]
    fn reads_without_the_lock_match_reads_of_the_cache(
        ops in proptest::collection::vec(op(), 1..400),
        max_bytes in 1000usize..20_000,
        max_groups in 1usize..5,
    ) {
        let limits = TrackLimits { max_bytes, max_groups };
        let (_bus, _b, t) = track(limits);
        let mut model = Model::new(limits);
        let mut consumers: Vec<(TrackConsumer, ModelConsumer)> = Vec::new();
        for _ in 0..4 {
            consumers.push((t.consume(), ModelConsumer { pos: model.start(), ..Default::default() }));
        }
        let mut ts = 0;
        let mut t = Some(t);
        for (step, op) in ops.into_iter().enumerate() {
            match op {
                Op::Write { keyframe, len } => {
                    if let Some(t) = &t {
                        t.write(frame(ts, keyframe, len));
                        model.write(ts, keyframe, len);
                        prop_assert_eq!(t.cached_bytes(), model.bytes);
                        ts += 1;
                    }
                }
                Op::Read { consumer, n } => {
                    let (c, m) = &mut consumers[consumer];
                    for _ in 0..n {
                        let (got, want) = (read(c), model.read(m));
                        prop_assert!(same(&got, &want), "step {}: read differs", step);
                        prop_assert_eq!(c.stats(), m.stats);
                    }
                }
                Op::Join(consumer) => {
                    if let Some(p) = &t {
                        consumers[consumer] =
                            (p.consume(), ModelConsumer { pos: model.start(), ..Default::default() });
                    }
                }
                Op::Restart(consumer) => {
                    consumers[consumer].0.restart_at_latest_group();
                    consumers[consumer].1.pos = None;
                }
                Op::SkipToNextGroup(consumer) => {
                    consumers[consumer].0.skip_to_next_group();
                    consumers[consumer].1.pos = Some((model.next_seq, 0));
                }
            }
            if step == 300 {
                t = None;
                model.closed = true;
            }
        }
        drop(t);
        model.closed = true;
        for (c, m) in &mut consumers {
            loop {
                let (got, want) = (read(c), model.read(m));
                prop_assert!(same(&got, &want), "draining: read differs");
                prop_assert_eq!(c.stats(), m.stats);
                if !matches!(want, Read::Frame(_)) {
                    break;
                }
            }
        }
    }
}

/// Writes frames (a keyframe every 30, 1 ms pause per group) until every counter in `read`
/// reaches `wanted` or `deadline` passes, then ends the track. Returns the last timestamp.
fn write_until_read(t: TrackProducer, read: &[AtomicU64], wanted: u64, deadline: Instant) -> u64 {
    let mut ts = 0u64;
    while read.iter().any(|r| r.load(Ordering::Relaxed) < wanted) && Instant::now() < deadline {
        t.write(frame(
            ts,
            ts.is_multiple_of(30),
            1000 + (ts as usize % 7) * 300,
        ));
        ts += 1;
        if ts.is_multiple_of(30) {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    ts - 1
}

/// Checks one frame against the one read before it.
fn check_order(last: Option<u64>, f: &Frame) {
    match last {
        None => assert!(f.keyframe, "first frame not a keyframe"),
        Some(prev) => assert!(f.timestamp > prev, "out of order"),
    }
}

/// Nothing is trimmed or lost within a group with these limits, so every reader ends on the
/// last frame written.
const LIMITS: TrackLimits = TrackLimits {
    max_bytes: 1 << 20,
    max_groups: 2,
};

/// A producer on one thread and consumers polling on two others: each sees frames in order,
/// starting at a keyframe, and the last frame before the end. Bounded at 20 s.
#[test]
fn readers_on_other_threads_see_ordered_frames_and_the_end() {
    let (_bus, _b, t) = track(LIMITS);
    let deadline = Instant::now() + Duration::from_secs(20);
    let read: Arc<[AtomicU64; 2]> = Arc::default();
    let readers: Vec<_> = (0..2)
        .map(|i| {
            let mut c = t.consume();
            let read = read.clone();
            std::thread::spawn(move || {
                let mut last = None::<u64>;
                loop {
                    assert!(Instant::now() < deadline, "reader did not see the end");
                    match c.try_next_frame() {
                        Ok(Some(f)) => {
                            check_order(last, &f);
                            last = Some(f.timestamp);
                            read[i].fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(None) => std::thread::yield_now(),
                        Err(()) => return last,
                    }
                }
            })
        })
        .collect();
    let written = write_until_read(t, &*read, 300, deadline);
    for reader in readers {
        assert_eq!(reader.join().unwrap(), Some(written), "{read:?}");
    }
}

/// Consumers as tasks waiting for frames on a two-thread runtime, as viewers do. The producer
/// writes each frame only once every reader has read the one before, so a wake that is missed
/// stalls the test (and fails it after 5 s) instead of being made up by the next write.
#[test]
fn every_write_wakes_readers_waiting_on_a_runtime() {
    const READERS: usize = 4;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let (_bus, _b, t) = track(LIMITS);
    // Per reader: frames read.
    let read: Arc<[AtomicU64; READERS]> = Arc::default();
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let mut c = t.consume();
            let read = read.clone();
            runtime.spawn(async move {
                let mut last = None::<u64>;
                while let Some(f) = c.next_frame().await {
                    check_order(last, &f);
                    last = Some(f.timestamp);
                    read[i].fetch_add(1, Ordering::Release);
                }
                last
            })
        })
        .collect();
    for ts in 0..300u64 {
        t.write(frame(ts, ts.is_multiple_of(30), 1000));
        let deadline = Instant::now() + Duration::from_secs(5);
        while read.iter().any(|r| r.load(Ordering::Acquire) <= ts) {
            assert!(
                Instant::now() < deadline,
                "frame {ts} woke no read: {read:?}"
            );
            std::thread::yield_now();
        }
    }
    drop(t);
    for reader in readers {
        assert_eq!(runtime.block_on(reader).unwrap(), Some(299));
    }
}
