//! Three relays in one process, on loopback, sharing one routing table as a cluster's nodes
//! share the registry: a channel published on the origin's bus plays from a primary's bus,
//! pulled through a secondary; many readers make one upstream subscription per track; the
//! secondary's loss moves the pull to the origin; a stranger's certificate is refused.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use cluster::{Event, Load, NodeId, NodeInfo, Ports, Role, RoutingTable, Tier};
use media::{Bus, ChannelName, Codec, Frame, TrackLimits, VideoCodec};
use relay::{Me, Relay, RelayConfig};

struct Node {
    bus: Bus,
    relay: Relay,
}

fn start(id: &str, tier: Tier, routing: &Arc<RoutingTable>) -> Node {
    let bus = Bus::new(TrackLimits::default());
    let config = RelayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        tier,
        linger_secs: 1,
        ..RelayConfig::default()
    };
    let me = Me {
        id: NodeId::new(id).expect("id"),
        region: "eu".into(),
    };
    let relay = Relay::start(config, me, bus.clone(), routing.clone()).expect("relay starts");
    relay.serve_bus();
    routing.apply(&Event::NodeUp(NodeInfo {
        id: NodeId::new(id).expect("id"),
        roles: vec![Role::Relay, Role::Sfu, Role::Ingest],
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
    Node { bus, relay }
}

fn metric(relay: &Relay, name: &str) -> f64 {
    relay
        .metrics()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no {name} in\n{}", relay.metrics()))
}

/// Publishes `alice` on `bus`: H.264-described frames at 100 a second, a keyframe every 10.
fn publish(bus: &Bus) -> tokio::task::JoinHandle<()> {
    let broadcast = bus
        .publish(ChannelName::new("alice").expect("name"))
        .expect("publish");
    tokio::spawn(async move {
        let video = broadcast.create_track("video");
        video.set_codec(Codec::Video(VideoCodec::H264 {
            sps: vec![Bytes::from_static(&[0x67, 0x42, 0xc0, 0x1f])],
            pps: vec![Bytes::from_static(&[0x68, 0xce, 0x3c, 0x80])],
        }));
        for n in 0u64.. {
            let payload = Bytes::from(n.to_be_bytes().to_vec());
            video.write(Frame::new(n * 900, n % 10 == 0, payload, Instant::now()));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        drop(broadcast);
    })
}

/// A (origin, publishing `alice`), B (secondary) and C (primary), sharing a routing table.
struct Cluster {
    routing: Arc<RoutingTable>,
    a: Node,
    b: Node,
    c: Node,
    alice: ChannelName,
    _publisher: tokio::task::JoinHandle<()>,
}

fn cluster() -> Cluster {
    let routing = Arc::new(RoutingTable::new());
    let a = start("node-a", Tier::Primary, &routing);
    let b = start("node-b", Tier::Secondary, &routing);
    let c = start("node-c", Tier::Primary, &routing);
    let alice = ChannelName::new("alice").expect("name");
    let _publisher = publish(&a.bus);
    routing.apply(&Event::ChannelClaimed {
        channel: alice.clone(),
        node: NodeId::new("node-a").expect("id"),
    });
    Cluster {
        routing,
        a,
        b,
        c,
        alice,
        _publisher,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_channel_plays_on_a_primary_through_a_shield_and_moves_to_the_origin_when_it_dies() {
    let Cluster {
        routing: _,
        a,
        b,
        c,
        alice,
        _publisher,
    } = cluster();

    // Ten readers on C at once: one pull.
    let mut found = Vec::new();
    for _ in 0..10 {
        found.push(c.bus.find(&alice));
    }
    let found = futures::future::join_all(found).await;
    let broadcast = found[0].clone().expect("pulled onto C");
    assert!(found.iter().all(Option::is_some));
    let mut video = broadcast.track("video").expect("video track");
    assert!(matches!(
        video.codec(),
        Some(Codec::Video(VideoCodec::H264 { .. }))
    ));
    let first = tokio::time::timeout(Duration::from_secs(5), video.next_frame())
        .await
        .expect("a frame in time")
        .expect("a frame");
    assert!(first.keyframe, "a reader starts at a keyframe");
    let number = |f: &Frame| u64::from_be_bytes(f.payload[..8].try_into().expect("8 bytes"));
    assert_eq!(first.timestamp, number(&first) * 900, "timestamps cross");

    // Frames arrive as they are written (every 10 ms), not in bursts.
    let mut gaps = Vec::new();
    let mut at = Instant::now();
    for _ in 0..100 {
        let frame = video.next_frame().await.expect("frame");
        let _ = frame;
        gaps.push(at.elapsed());
        at = Instant::now();
    }
    gaps.sort();
    println!(
        "arrival gaps: p50 {:?}, p99 {:?}, max {:?}",
        gaps[50], gaps[98], gaps[99]
    );

    // One upstream subscription per track (catalog and video) on C, and on B for C.
    assert_eq!(
        metric(&c.relay, "starling_relay_upstream_subscriptions"),
        2.0
    );
    assert_eq!(
        metric(&b.relay, "starling_relay_upstream_subscriptions"),
        2.0
    );
    assert_eq!(
        metric(&b.relay, "starling_relay_downstream_subscribers"),
        2.0
    );
    assert_eq!(
        metric(&a.relay, "starling_relay_downstream_subscribers"),
        2.0
    );
    assert_eq!(
        metric(
            &c.relay,
            "starling_relay_cache_requests_total{result=\"miss\"}"
        ),
        1.0
    );

    // The shield goes: C's readers go on, through the origin, without a frame twice.
    let mut last = number(&first);
    b.relay.close();
    let lost_at = Instant::now();
    let mut resumed = None;
    while lost_at.elapsed() < Duration::from_secs(6) {
        let Ok(Some(frame)) =
            tokio::time::timeout(Duration::from_millis(500), video.next_frame()).await
        else {
            continue;
        };
        let n = number(&frame);
        assert!(
            n > last,
            "frame {n} after {last}: no frame twice, none backwards"
        );
        last = n;
        if metric(&c.relay, "starling_relay_failovers_total") >= 1.0 && resumed.is_none() {
            resumed = Some(lost_at.elapsed());
        }
        if resumed.is_some_and(|r| lost_at.elapsed() > r + Duration::from_millis(500)) {
            break;
        }
    }
    let resumed = resumed.expect("frames again after the shield died");
    println!("frames again {resumed:?} after the shield died");
    assert_eq!(
        metric(&a.relay, "starling_relay_downstream_subscribers"),
        2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_whose_certificate_the_registry_does_not_list_is_refused_in_the_handshake() {
    let routing = Arc::new(RoutingTable::new());
    let a = start("node-a", Tier::Primary, &routing);
    let addr = a.relay.local_addr().expect("bound");
    let stranger = relay::Identity::generate("stranger").expect("identity");
    let tls = relay::identity::client_config(
        &stranger,
        a.relay.fingerprint(),
        vec![b"moq-lite-06".to_vec()],
    )
    .expect("tls");
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls).expect("quic tls");
    let endpoint =
        quinn::Endpoint::client(SocketAddr::from(([127, 0, 0, 1], 0))).expect("endpoint");
    let conn = endpoint
        .connect_with(
            quinn::ClientConfig::new(Arc::new(crypto)),
            addr,
            "starling-relay",
        )
        .expect("connect")
        .await;
    // TLS 1.3 reports a refused client certificate once the server has read it: the
    // connection dies at once, before any stream carries anything.
    let refused = match conn {
        Err(err) => err.to_string(),
        Ok(conn) => match tokio::time::timeout(Duration::from_secs(3), conn.accept_uni()).await {
            Ok(Err(err)) => err.to_string(),
            other => panic!("a stranger got a connection: {other:?}"),
        },
    };
    assert!(
        refused.contains("certificate") || refused.contains("alert"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_shield_hands_its_pulls_to_the_next_path_without_a_gap() {
    let Cluster {
        routing,
        a,
        b,
        c,
        alice,
        _publisher,
    } = cluster();
    let broadcast = c.bus.find(&alice).await.expect("pulled onto C");
    let mut video = broadcast.track("video").expect("video");
    let number = |f: &Frame| u64::from_be_bytes(f.payload[..8].try_into().expect("8 bytes"));
    let mut last = number(&video.next_frame().await.expect("frame"));
    assert_eq!(metric(&b.relay, "starling_relay_downstream_sessions"), 1.0);

    // The operator drains B: C moves to the origin at once, and B is left alone.
    let mut drained = routing
        .nodes()
        .into_iter()
        .find(|n| n.id.as_str() == "node-b")
        .expect("B");
    drained.draining = true;
    routing.apply(&Event::NodeChanged(drained));
    let moved = Instant::now();
    while moved.elapsed() < Duration::from_secs(2) {
        let frame = tokio::time::timeout(Duration::from_secs(1), video.next_frame())
            .await
            .expect("frames go on")
            .expect("frame");
        let n = number(&frame);
        assert_eq!(n, last + 1, "no frame lost, none twice");
        last = n;
    }
    assert_eq!(metric(&c.relay, "starling_relay_failovers_total"), 1.0);
    assert_eq!(metric(&a.relay, "starling_relay_downstream_sessions"), 2.0);

    // The last reader leaves: after the linger time (1 s here) C lets its upstream go, and
    // the channel is no longer on its bus.
    drop(video);
    drop(broadcast);
    let left = Instant::now();
    while metric(&c.relay, "starling_relay_upstream_subscriptions") > 0.0 {
        assert!(
            left.elapsed() < Duration::from_secs(5),
            "C let go of its pull"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "upstream let go {:?} after the last reader left",
        left.elapsed()
    );
    assert!(
        left.elapsed() >= Duration::from_secs(1),
        "not before the linger time"
    );
    assert!(c.bus.live().is_empty());
}
