//! Frames through the bus to N consumers: the cost of one write plus N reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use media::{Bus, ChannelName, Frame, TrackLimits};

fn fanout(c: &mut Criterion) {
    let mut group = c.benchmark_group("bus_fanout");
    for consumers in [1usize, 10, 100, 1000] {
        group.throughput(Throughput::Elements(consumers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(consumers),
            &consumers,
            |b, &n| {
                let bus = Bus::new(TrackLimits::default());
                let broadcast = bus.publish(ChannelName::new("bench").unwrap()).unwrap();
                let track = broadcast.create_track("video");
                let payload = Bytes::from(vec![0u8; 10_000]);
                let mut ts = 0u64;
                track.write(Frame::new(ts, true, payload.clone(), Instant::now()));
                let mut readers: Vec<_> = (0..n).map(|_| track.consume()).collect();
                for r in &mut readers {
                    let _ = r.try_next_frame();
                }
                b.iter(|| {
                    ts += 3000;
                    let frame = Frame::new(
                        ts,
                        ts.is_multiple_of(180_000),
                        payload.clone(),
                        Instant::now(),
                    );
                    track.write(frame);
                    for r in &mut readers {
                        std::hint::black_box(r.try_next_frame().ok().flatten());
                    }
                });
            },
        );
    }
    group.finish();
}

/// The same with the consumers read by two threads at once, as a viewer's frames are when its
/// track's viewers run on two cores: what a lock shared by all of them would cost.
fn fanout_two_threads(c: &mut Criterion) {
    let mut group = c.benchmark_group("bus_fanout_two_threads");
    for consumers in [100usize, 1000] {
        group.throughput(Throughput::Elements(consumers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(consumers),
            &consumers,
            |b, &n| {
                let bus = Bus::new(TrackLimits::default());
                let broadcast = bus.publish(ChannelName::new("bench").unwrap()).unwrap();
                let track = broadcast.create_track("video");
                let payload = Bytes::from(vec![0u8; 10_000]);
                track.write(Frame::new(0, true, payload.clone(), Instant::now()));
                b.iter_custom(|iters| {
                    let go = Barrier::new(3);
                    let done = Barrier::new(3);
                    let mut halves: Vec<Vec<_>> = (0..2)
                        .map(|_| (0..n / 2).map(|_| track.consume()).collect())
                        .collect();
                    for r in halves.iter_mut().flatten() {
                        while let Ok(Some(_)) = r.try_next_frame() {}
                    }
                    std::thread::scope(|s| {
                        for half in &mut halves {
                            let (go, done) = (&go, &done);
                            s.spawn(move || {
                                for _ in 0..iters {
                                    go.wait();
                                    for r in half.iter_mut() {
                                        while let Ok(Some(f)) = r.try_next_frame() {
                                            std::hint::black_box(f);
                                        }
                                    }
                                    done.wait();
                                }
                            });
                        }
                        let mut ts = 0u64;
                        let start = Instant::now();
                        for _ in 0..iters {
                            ts += 3000;
                            let keyframe = ts.is_multiple_of(180_000);
                            track.write(Frame::new(ts, keyframe, payload.clone(), Instant::now()));
                            go.wait();
                            done.wait();
                        }
                        start.elapsed()
                    })
                });
            },
        );
    }
    group.finish();
}

/// Consumers as tasks waiting for each frame, as viewers do: one write wakes them all and each
/// reads its frame (a current-thread runtime, one core).
fn fanout_waiting_tasks(c: &mut Criterion) {
    let mut group = c.benchmark_group("bus_fanout_waiting_tasks");
    for consumers in [100usize, 1000] {
        group.throughput(Throughput::Elements(consumers as u64));
        group.bench_with_input(
            BenchmarkId::from_parameter(consumers),
            &consumers,
            |b, &n| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .build()
                    .unwrap();
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let bus = Bus::new(TrackLimits::default());
                        let broadcast = bus.publish(ChannelName::new("bench").unwrap()).unwrap();
                        let track = broadcast.create_track("video");
                        let payload = Bytes::from(vec![0u8; 10_000]);
                        track.write(Frame::new(0, true, payload.clone(), Instant::now()));
                        let read = Arc::new(AtomicU64::new(0));
                        for _ in 0..n {
                            let mut consumer = track.consume();
                            let read = read.clone();
                            tokio::spawn(async move {
                                while let Some(f) = consumer.next_frame().await {
                                    std::hint::black_box(f);
                                    read.fetch_add(1, Ordering::Relaxed);
                                }
                            });
                        }
                        while read.load(Ordering::Relaxed) < n as u64 {
                            tokio::task::yield_now().await;
                        }
                        let start = Instant::now();
                        for i in 1..=iters {
                            let ts = i * 3000;
                            let keyframe = ts.is_multiple_of(180_000);
                            track.write(Frame::new(ts, keyframe, payload.clone(), Instant::now()));
                            while read.load(Ordering::Relaxed) < (i + 1) * n as u64 {
                                tokio::task::yield_now().await;
                            }
                        }
                        let took = start.elapsed();
                        drop(track);
                        took
                    })
                });
            },
        );
    }
    group.finish();
}

criterion_group!(benches, fanout, fanout_two_threads, fanout_waiting_tasks);
criterion_main!(benches);
