//! Properties of the bus: order, keyframe starts, bounded memory, skipping, ending.

use std::time::Instant;

use bytes::Bytes;
use media::{Bus, BusError, ChannelName, Frame, TrackLimits, TrackProducer};
use proptest::prelude::*;

fn frame(ts: u64, keyframe: bool, len: usize) -> Frame {
    Frame::new(ts, keyframe, Bytes::from(vec![0u8; len]), Instant::now())
}

fn track(limits: TrackLimits) -> (media::BroadcastProducer, TrackProducer) {
    let bus = Bus::new(limits);
    let b = bus.publish(ChannelName::new("t").unwrap()).unwrap();
    let t = b.create_track("video");
    (b, t)
}

#[test]
fn new_consumer_starts_at_latest_keyframe() {
    let (_b, t) = track(TrackLimits::default());
    for ts in 0..10 {
        t.write(frame(ts, ts % 4 == 0, 10));
    }
    let mut c = t.consume();
    let first = c.try_next_frame().unwrap().unwrap();
    assert!(first.keyframe);
    assert_eq!(first.timestamp, 8);
    assert_eq!(c.try_next_frame().unwrap().unwrap().timestamp, 9);
    assert!(c.try_next_frame().unwrap().is_none());
}

#[test]
fn frames_before_first_keyframe_are_not_cached() {
    let (_b, t) = track(TrackLimits::default());
    t.write(frame(0, false, 10));
    assert_eq!(t.cached_bytes(), 0);
    assert!(t.consume().try_next_frame().unwrap().is_none());
}

#[test]
fn slow_consumer_skips_to_newest_group() {
    let (_b, t) = track(TrackLimits {
        max_bytes: 1 << 20,
        max_groups: 3,
    });
    t.write(frame(0, true, 10));
    let mut c = t.consume();
    assert_eq!(c.try_next_frame().unwrap().unwrap().timestamp, 0);
    for ts in 1..50 {
        t.write(frame(ts, ts % 5 == 0, 10));
    }
    let next = c.try_next_frame().unwrap().unwrap();
    assert!(next.keyframe, "skipped into the middle of a group");
    assert_eq!(next.timestamp, 45);
    assert!(c.stats().groups_skipped > 0);
}

#[test]
fn one_group_behind_reads_on_without_skipping() {
    let (_b, t) = track(TrackLimits::default());
    t.write(frame(0, true, 1));
    let mut c = t.consume();
    t.write(frame(1, false, 1));
    t.write(frame(2, true, 1));
    let got: Vec<u64> = std::iter::from_fn(|| c.try_next_frame().unwrap())
        .map(|f| f.timestamp)
        .collect();
    assert_eq!(got, vec![0, 1, 2]);
    assert_eq!(c.stats().groups_skipped, 0);
}

#[test]
fn a_group_read_to_its_end_and_then_evicted_is_not_counted_as_skipped() {
    // One group kept: a keyframe evicts the group the consumer has just read to its end.
    let (_b, t) = track(TrackLimits {
        max_groups: 1,
        ..TrackLimits::default()
    });
    t.write(frame(0, true, 1));
    let mut c = t.consume();
    t.write(frame(1, false, 1));
    assert_eq!(c.try_next_frame().unwrap().map(|f| f.timestamp), Some(0));
    assert_eq!(c.try_next_frame().unwrap().map(|f| f.timestamp), Some(1));
    t.write(frame(2, true, 1));
    assert_eq!(c.try_next_frame().unwrap().map(|f| f.timestamp), Some(2));
    assert_eq!(c.stats().groups_skipped, 0);
    // Read only part of a group before it goes: that is a skip.
    t.write(frame(3, false, 1));
    t.write(frame(4, true, 1));
    assert_eq!(c.try_next_frame().unwrap().map(|f| f.timestamp), Some(4));
    assert_eq!(c.stats().groups_skipped, 1);
}

#[test]
fn restart_goes_back_to_latest_keyframe() {
    let (_b, t) = track(TrackLimits::default());
    for ts in 0..6 {
        t.write(frame(ts, ts == 3, 1));
    }
    let mut c = t.consume();
    while c.try_next_frame().unwrap().is_some() {}
    c.restart_at_latest_group();
    assert_eq!(c.try_next_frame().unwrap().unwrap().timestamp, 3);
}

#[test]
fn huge_group_is_trimmed_and_joiners_wait_for_a_keyframe() {
    let (_b, t) = track(TrackLimits {
        max_bytes: 1000,
        max_groups: 3,
    });
    t.write(frame(0, true, 100));
    for ts in 1..100 {
        t.write(frame(ts, false, 100));
    }
    assert!(t.cached_bytes() <= 1000);
    let mut c = t.consume();
    assert!(
        c.try_next_frame().unwrap().is_none(),
        "joined without a keyframe"
    );
    t.write(frame(100, true, 100));
    assert!(c.try_next_frame().unwrap().unwrap().keyframe);
}

#[test]
fn second_publisher_is_refused_and_name_is_freed_on_drop() {
    let bus = Bus::new(TrackLimits::default());
    let name = ChannelName::new("alice").unwrap();
    let first = bus.publish(name.clone()).unwrap();
    assert_eq!(
        bus.publish(name.clone()).err(),
        Some(BusError::AlreadyLive(name.clone()))
    );
    assert_eq!(bus.live().len(), 1);
    drop(first);
    assert!(bus.subscribe(&name).is_none());
    assert!(bus.publish(name).is_ok());
}

#[tokio::test]
async fn ending_the_track_wakes_consumers() {
    let (b, t) = track(TrackLimits::default());
    let broadcast = b.consume();
    let mut c = t.consume();
    let reader = tokio::spawn(async move {
        let mut n = 0;
        while c.next_frame().await.is_some() {
            n += 1;
        }
        n
    });
    tokio::task::yield_now().await;
    t.write(frame(0, true, 1));
    t.write(frame(1, false, 1));
    drop(t);
    drop(b);
    broadcast.closed().await;
    assert_eq!(reader.await.unwrap(), 2);
}

#[derive(Debug, Clone)]
enum Op {
    Write { keyframe: bool, len: usize },
    Read(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (any::<bool>(), 0usize..2000).prop_map(|(keyframe, len)| Op::Write { keyframe, len }),
        1 => (0usize..20).prop_map(Op::Read),
    ]
}

proptest! {
    /// Every consumer sees frames in order, starts on a keyframe, and the cache stays within
    /// its budget however consumers read (some never do).
    #[test]
    fn consumers_see_ordered_frames_and_memory_is_bounded(
        ops in proptest::collection::vec(op(), 1..300),
        max_bytes in 1000usize..20_000,
        max_groups in 1usize..5,
        consumers in 1usize..6,
    ) {
        let (_b, t) = track(TrackLimits { max_bytes, max_groups });
        let mut readers: Vec<_> = (0..consumers).map(|_| (t.consume(), None::<u64>)).collect();
        let mut ts = 0;
        for op in ops {
            match op {
                Op::Write { keyframe, len } => {
                    t.write(frame(ts, keyframe, len));
                    ts += 1;
                    // The newest frame is always kept even if alone over budget.
                    prop_assert!(t.cached_bytes() <= max_bytes.max(len));
                }
                Op::Read(n) => {
                    // Only the first half of the consumers ever read; the rest never do.
                    for (c, last) in readers.iter_mut().take(consumers.div_ceil(2)) {
                        for _ in 0..n {
                            let Some(f) = c.try_next_frame().unwrap() else { break };
                            match last {
                                None => prop_assert!(f.keyframe, "first frame not a keyframe"),
                                Some(prev) => prop_assert!(f.timestamp > *prev, "out of order"),
                            }
                            *last = Some(f.timestamp);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_local_publisher_takes_over_from_a_relayed_copy_whose_consumers_see_the_end() {
    let bus = Bus::new(TrackLimits::default());
    let name = ChannelName::new("moved").expect("name");
    let relayed = bus.publish_relayed(name.clone()).expect("relayed");
    let viewer = bus.subscribe(&name).expect("live");
    assert!(viewer.is_relayed());
    let local = bus
        .publish(name.clone())
        .expect("a local publisher takes the name");
    assert!(viewer.is_closed(), "the relayed copy ended");
    let now = bus.subscribe(&name).expect("live");
    assert!(!now.is_relayed());
    // The relay letting its copy go later does not touch the local broadcast.
    drop(relayed);
    assert!(bus.subscribe(&name).is_some_and(|b| !b.is_relayed()));
    drop(local);
}
