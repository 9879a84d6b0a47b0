//! Frames through the bus to N consumers: the cost of one write plus N reads.

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

criterion_group!(benches, fanout);
criterion_main!(benches);
