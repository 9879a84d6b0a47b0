//! Latency added per relay hop: a 2.5 Mbit/s, 30 fps stream published on an origin's bus is
//! read on the origin itself (the direct single-node path), on a secondary (one hop) and on a
//! primary pulling through that secondary (two hops). Three relays in one process on loopback,
//! so one clock measures every frame from its write at the origin to its read on each node.
//! Prints p50 and p99 per path. `cargo bench -p relay --bench hops`; `bench/run` runs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use cluster::{Event, Load, NodeId, NodeInfo, Ports, Role, RoutingTable, Tier};
use media::{Bus, ChannelName, Codec, Frame, TrackLimits, VideoCodec};
use relay::{Me, Relay, RelayConfig};

const FPS: u64 = 30;
const BITRATE: usize = 2_500_000;
const SECONDS: u64 = 20;

fn start(id: &str, tier: Tier, routing: &Arc<RoutingTable>) -> (Bus, Relay) {
    let bus = Bus::new(TrackLimits::default());
    let config = RelayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tier,
        ..RelayConfig::default()
    };
    let me = Me {
        id: NodeId::new(id).expect("id"),
        region: "eu".into(),
    };
    let relay = Relay::start(config, me, bus.clone(), routing.clone()).expect("relay");
    relay.serve_bus();
    routing.apply(&Event::NodeUp(NodeInfo {
        id: NodeId::new(id).expect("id"),
        roles: vec![Role::Relay],
        region: "eu".into(),
        public_host: "127.0.0.1".into(),
        ports: Ports {
            relay: relay.local_addr().expect("bound").port(),
            ..Ports::default()
        },
        load: Load::default(),
        draining: false,
        tier,
        relay_fingerprint: relay.fingerprint().to_owned(),
    }));
    (bus, relay)
}

/// Reads `alice` video on `bus` for the run: each frame's delay since its write at the origin.
async fn measure(bus: Bus, base: Instant, until: Instant) -> Vec<Duration> {
    let alice = ChannelName::new("alice").expect("name");
    let broadcast = bus.find(&alice).await.expect("channel found");
    let mut video = broadcast.live_track("video").await.expect("video");
    let mut delays = Vec::new();
    // The first second holds the cached group's replay, not live delay.
    let settle = Instant::now() + Duration::from_secs(1);
    while Instant::now() < until {
        let Ok(Some(frame)) =
            tokio::time::timeout(Duration::from_secs(1), video.next_frame()).await
        else {
            continue;
        };
        let sent = u64::from_be_bytes(frame.payload[..8].try_into().expect("stamp"));
        let delay = (Instant::now() - base).saturating_sub(Duration::from_nanos(sent));
        if Instant::now() > settle {
            delays.push(delay);
        }
    }
    delays.sort();
    delays
}

fn quantile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let routing = Arc::new(RoutingTable::new());
        let (bus_a, _a) = start("node-a", Tier::Primary, &routing);
        let (bus_b, _b) = start("node-b", Tier::Secondary, &routing);
        let (bus_c, _c) = start("node-c", Tier::Primary, &routing);
        let alice = ChannelName::new("alice").expect("name");
        let base = Instant::now();
        let producer = bus_a.publish(alice.clone()).expect("publish");
        let video = producer.create_track("video");
        video.set_codec(Codec::Video(VideoCodec::H264 {
            sps: vec![Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1f])],
            pps: vec![Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80])],
        }));
        routing.apply(&Event::ChannelClaimed {
            channel: alice,
            node: NodeId::new("node-a").expect("id"),
        });
        let until = Instant::now() + Duration::from_secs(SECONDS);
        let frame_bytes = BITRATE / 8 / FPS as usize;
        let publisher = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / FPS));
            for n in 0u64.. {
                tick.tick().await;
                if Instant::now() > until {
                    break;
                }
                // A keyframe every 2 s, five times a delta frame's size.
                let key = n % (2 * FPS) == 0;
                let size = if key { frame_bytes * 5 } else { frame_bytes };
                let mut payload = BytesMut::with_capacity(size);
                payload.put_u64((Instant::now() - base).as_nanos() as u64);
                payload.resize(size, 0);
                video.write(Frame::new(n * 3000, key, payload.freeze(), Instant::now()));
            }
            drop(producer);
        });
        let direct = tokio::spawn(measure(bus_a, base, until));
        let one = tokio::spawn(measure(bus_b, base, until));
        let two = tokio::spawn(measure(bus_c, base, until));
        let (direct, one, two) = (
            direct.await.expect("direct"),
            one.await.expect("one hop"),
            two.await.expect("two hops"),
        );
        let _ = publisher.await;
        println!(
            "| path ({SECONDS} s, {FPS} fps, {} kbit/s) | frames | p50 | p99 |",
            BITRATE / 1000
        );
        println!("| --- | --- | --- | --- |");
        for (name, delays) in [
            ("origin's own bus (direct)", direct),
            ("secondary (origin -> secondary)", one),
            ("primary (origin -> secondary -> primary)", two),
        ] {
            println!(
                "| {name} | {} | {:.2} ms | {:.2} ms |",
                delays.len(),
                quantile(&delays, 0.5).as_secs_f64() * 1e3,
                quantile(&delays, 0.99).as_secs_f64() * 1e3
            );
        }
    });
}
