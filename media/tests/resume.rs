//! Keyframe requests, layer-switch positioning, bitrate, and the publisher reconnect grace.

use std::time::{Duration, Instant};

use bytes::Bytes;
use media::{
    BroadcastConsumer, BroadcastProducer, Bus, BusConfig, BusError, ChannelName, Frame, TrackLimits,
};

fn frame(ts: u64, keyframe: bool, len: usize, arrived: Instant) -> Frame {
    Frame::new(ts, keyframe, Bytes::from(vec![0u8; len]), arrived)
}

fn name() -> ChannelName {
    ChannelName::new("alice").unwrap()
}

#[tokio::test]
async fn keyframe_requests_are_coalesced_and_cleared_by_a_keyframe() {
    let bus = Bus::new(TrackLimits::default());
    let b = bus.publish(name()).unwrap();
    let t = b.create_track("video.h");
    let viewers: Vec<_> = (0..20).map(|_| t.consume()).collect();
    assert!(
        !viewers[0].request_keyframe(),
        "a producer that has not opted in (RTMP) refuses requests"
    );
    t.accept_keyframe_requests();
    for v in &viewers {
        assert!(v.request_keyframe());
    }
    // Twenty requests wake the publisher once and make one request.
    tokio::time::timeout(Duration::from_secs(1), b.keyframe_requested())
        .await
        .expect("publisher woken");
    assert!(t.take_keyframe_request());
    assert!(!t.take_keyframe_request());
    viewers[0].request_keyframe();
    assert!(t.keyframe_wanted());
    t.write(frame(0, true, 10, Instant::now()));
    assert!(!t.keyframe_wanted(), "a keyframe answers the request");
}

#[test]
fn skip_to_next_group_waits_for_the_next_keyframe() {
    let bus = Bus::new(TrackLimits::default());
    let b = bus.publish(name()).unwrap();
    let t = b.create_track("video.l");
    let now = Instant::now();
    t.write(frame(0, true, 10, now));
    t.write(frame(1, false, 10, now));
    let mut c = t.consume();
    c.skip_to_next_group();
    assert!(c.try_next_frame().unwrap().is_none());
    t.write(frame(2, false, 10, now));
    assert!(c.try_next_frame().unwrap().is_none());
    t.write(frame(3, true, 10, now));
    let f = c.try_next_frame().unwrap().unwrap();
    assert!(f.keyframe && f.timestamp == 3);
}

#[test]
fn bitrate_over_a_window() {
    let bus = Bus::new(TrackLimits::default());
    let b = bus.publish(name()).unwrap();
    let t = b.create_track("video");
    let now = Instant::now() + Duration::from_secs(10);
    // 1,000 bytes every 100 ms for 2 s: 80 kbit/s.
    for i in 0..20u64 {
        let at = now - Duration::from_millis(2000 - 100 * i);
        t.write(frame(i, i == 0, 1000, at));
    }
    let bps = t.consume().bitrate(now, Duration::from_secs(2)).unwrap();
    assert!((75_000..=85_000).contains(&bps), "{bps}");
    assert_eq!(
        t.consume()
            .bitrate(now + Duration::from_secs(5), Duration::from_secs(2)),
        None
    );
}

#[tokio::test]
async fn publisher_back_within_grace_resumes_the_broadcast() {
    let bus = Bus::with_config(BusConfig {
        reconnect_grace_secs: 2,
        ..BusConfig::default()
    });
    let first = bus.publish(name()).unwrap();
    let old = first.create_track("video");
    old.write(frame(0, true, 10, Instant::now()));
    let viewer = bus.subscribe(&name()).unwrap();
    let mut track = viewer.track("video").unwrap();
    assert!(track.try_next_frame().unwrap().is_some());
    assert!(matches!(bus.publish(name()), Err(BusError::AlreadyLive(_))));

    drop(old);
    drop(first);
    assert!(track.try_next_frame().is_err(), "the old track ended");
    assert!(!viewer.is_closed(), "viewers wait during the grace period");
    assert!(!viewer.is_publishing());
    assert!(!bus.live()[0].publishing);

    let second = bus.publish(name()).unwrap();
    assert_eq!(second.generation(), 2);
    let new = second.create_track("video");
    new.write(frame(90_000, true, 10, Instant::now()));
    let mut resumed = tokio::time::timeout(Duration::from_secs(1), viewer.live_track("video"))
        .await
        .unwrap()
        .expect("the new track");
    assert_eq!(resumed.try_next_frame().unwrap().unwrap().timestamp, 90_000);
    assert!(bus.live()[0].publishing);
}

/// A bus with a reconnect grace, a publisher on it, and a viewer of it.
fn live(grace_secs: u64) -> (Bus, BroadcastProducer, BroadcastConsumer) {
    let bus = Bus::with_config(BusConfig {
        reconnect_grace_secs: grace_secs,
        ..BusConfig::default()
    });
    let publisher = bus.publish(name()).unwrap();
    let viewer = bus.subscribe(&name()).unwrap();
    (bus, publisher, viewer)
}

#[tokio::test]
async fn broadcast_ends_when_the_grace_period_runs_out() {
    let (_bus, first, viewer) = live(1);
    drop(first);
    let waited = tokio::time::timeout(Duration::from_secs(5), viewer.live_track("video")).await;
    assert!(
        matches!(waited, Ok(None)),
        "live_track gives up after the grace"
    );
}

#[test]
fn without_grace_the_name_is_freed_at_once() {
    let (bus, first, viewer) = live(0);
    drop(first);
    assert!(viewer.is_closed());
    assert!(bus.live().is_empty());
    assert_eq!(bus.publish(name()).unwrap().generation(), 1);
}

/// A viewer makes its wait for the end once and polls it at every wake: it must stay pending
/// while the publisher is live or comes back within the grace, and end when the grace runs out.
#[tokio::test]
async fn a_wait_for_the_end_made_while_live_sees_a_resume_and_then_the_end() {
    let (bus, first, viewer) = live(1);
    let ended = viewer.closed();
    tokio::pin!(ended);
    let ms = Duration::from_millis;
    let waited = tokio::time::timeout(ms(100), &mut ended).await;
    assert!(waited.is_err(), "ended while live");
    drop(first);
    let waited = tokio::time::timeout(ms(300), &mut ended).await;
    assert!(waited.is_err(), "ended within the grace");
    let second = bus.publish(name()).unwrap();
    let waited = tokio::time::timeout(ms(1500), &mut ended).await;
    assert!(waited.is_err(), "ended after the publisher came back");
    drop(second);
    tokio::time::timeout(Duration::from_secs(5), &mut ended)
        .await
        .expect("ends when the grace runs out");
    assert!(viewer.is_closed());
}
