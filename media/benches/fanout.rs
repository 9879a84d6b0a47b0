//! Frames through the bus to N consumers: the cost of one write plus N reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::Instant;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Bencher, BenchmarkId, Criterion, Throughput};
use media::{BroadcastProducer, Bus, ChannelName, Frame, TrackLimits, TrackProducer};

/// A track with its first keyframe written, and the frames that follow: 10 kB each, 30 a
/// second, a keyframe every 2 s.
struct Source {
    _bus: Bus,
    _broadcast: BroadcastProducer,
    track: TrackProducer,
    payload: Bytes,
    ts: u64,
}

impl Source {
    fn new() -> Source {
        let bus = Bus::new(TrackLimits::default());
        let broadcast = bus.publish(ChannelName::new("bench").unwrap()).unwrap();
        let track = broadcast.create_track("video");
        let payload = Bytes::from(vec![0u8; 10_000]);
        track.write(Frame::new(0, true, payload.clone(), Instant::now()));
        Source {
            _bus: bus,
            _broadcast: broadcast,
            track,
            payload,
            ts: 0,
        }
    }

    fn write_next(&mut self) {
        self.ts += 3000;
        let keyframe = self.ts.is_multiple_of(180_000);
        let frame = Frame::new(self.ts, keyframe, self.payload.clone(), Instant::now());
        self.track.write(frame);
    }
}

fn fanout(c: &mut Criterion) {
    for_counts(c, "bus_fanout", &[1, 10, 100, 1000], |b, n| {
        let mut source = Source::new();
        let mut readers: Vec<_> = (0..n).map(|_| source.track.consume()).collect();
        for r in &mut readers {
            let _ = r.try_next_frame();
        }
        b.iter(|| {
            source.write_next();
            for r in &mut readers {
                std::hint::black_box(r.try_next_frame().ok().flatten());
            }
        });
    });
}

/// The same with the consumers read by two threads at once, as a viewer's frames are when its
/// track's viewers run on two cores: what a lock shared by all of them would cost.
fn fanout_two_threads(c: &mut Criterion) {
    for_counts(c, "bus_fanout_two_threads", &[100, 1000], |b, n| {
        let mut source = Source::new();
        b.iter_custom(|iters| {
            let go = Barrier::new(3);
            let done = Barrier::new(3);
            let mut halves: Vec<Vec<_>> = (0..2)
                .map(|_| (0..n / 2).map(|_| source.track.consume()).collect())
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
                let start = Instant::now();
                for _ in 0..iters {
                    source.write_next();
                    go.wait();
                    done.wait();
                }
                start.elapsed()
            })
        });
    });
}

/// Consumers as tasks waiting for each frame, as viewers do: one write wakes them all and each
/// reads its frame (a current-thread runtime, one core).
fn fanout_waiting_tasks(c: &mut Criterion) {
    for_counts(c, "bus_fanout_waiting_tasks", &[100, 1000], |b, n| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut source = Source::new();
                let read = Arc::new(AtomicU64::new(0));
                for _ in 0..n {
                    let mut consumer = source.track.consume();
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
                    source.write_next();
                    while read.load(Ordering::Relaxed) < (i + 1) * n as u64 {
                        tokio::task::yield_now().await;
                    }
                }
                let took = start.elapsed();
                drop(source);
                took
            })
        });
    });
}

/// One benchmark of `name` for each count of consumers.
fn for_counts(
    c: &mut Criterion,
    name: &str,
    counts: &[usize],
    mut f: impl FnMut(&mut Bencher, usize),
) {
    let mut group = c.benchmark_group(name);
    for &n in counts {
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| f(b, n));
    }
    group.finish();
}

criterion_group!(benches, fanout, fanout_two_threads, fanout_waiting_tasks);
criterion_main!(benches);
