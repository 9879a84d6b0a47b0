//! The behaviour every registry backend shares, as test functions any backend's tests call
//! (the memory backend's now; the Redis backend's against a real `redis-server`).

use std::time::Duration;

use futures::future::join_all;
use media::ChannelName;

use crate::model::{Load, NodeId, NodeInfo, Ports, Role};
use crate::registry::{Certificate, Claim, Event, Registry};

const TTL: Duration = Duration::from_secs(5);

pub(crate) fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: NodeId::new(id).expect("node id"),
        roles: vec![Role::Ingest, Role::Sfu],
        region: "eu".into(),
        public_host: format!("{id}.live.example"),
        ports: Ports {
            http: 8080,
            webrtc: 8189,
            ..Ports::default()
        },
        load: Load::default(),
        draining: false,
        tier: Default::default(),
        relay_fingerprint: String::new(),
    }
}

pub(crate) async fn registration_and_draining(registry: &impl Registry) {
    let (a, b) = (node("node-a"), node("node-b"));
    assert!(
        registry.register(b.clone(), TTL).await.expect("register b"),
        "new"
    );
    registry.register(a.clone(), TTL).await.expect("register a");
    assert!(
        !registry.register(b.clone(), TTL).await.expect("renew b"),
        "renewed"
    );
    let ids: Vec<String> = registry
        .nodes()
        .await
        .expect("nodes")
        .iter()
        .map(|n| n.id.to_string())
        .collect();
    assert_eq!(ids, ["node-a", "node-b"], "sorted by id");

    // Renewing with new load updates it.
    let mut busy = a.clone();
    busy.load.viewers = 42;
    registry.register(busy, TTL).await.expect("renew");
    let nodes = registry.nodes().await.expect("nodes");
    assert_eq!(nodes[0].load.viewers, 42);

    assert!(registry.set_draining(&a.id, true).await.expect("drain"));
    assert!(registry.nodes().await.expect("nodes")[0].draining);
    // Draining is the operator's: the node's own renewals do not undo it.
    registry.register(a.clone(), TTL).await.expect("renew");
    assert!(registry.nodes().await.expect("nodes")[0].draining);
    assert!(registry.set_draining(&a.id, false).await.expect("undrain"));
    let nobody = NodeId::new("nobody").expect("id");
    assert!(!registry
        .set_draining(&nobody, true)
        .await
        .expect("drain unknown"));

    registry.deregister(&a.id).await.expect("deregister");
    let nodes = registry.nodes().await.expect("nodes");
    assert_eq!(nodes.len(), 1);
    assert_eq!(nodes[0].id, b.id);
    assert!(
        registry.register(a.clone(), TTL).await.expect("again"),
        "new again once gone"
    );
}

pub(crate) async fn channels_are_claimed_atomically(registry: &impl Registry) {
    let ids: Vec<NodeId> = (0..8).map(|i| node(&format!("n{i}")).id).collect();
    for i in 0..8 {
        registry
            .register(node(&format!("n{i}")), TTL)
            .await
            .expect("register");
    }
    let channel = ChannelName::new("race").expect("name");
    // Eight nodes claim at once: exactly one owns it.
    let claims = join_all(ids.iter().map(|id| registry.claim_channel(&channel, id))).await;
    let owners: Vec<&NodeId> = ids
        .iter()
        .zip(&claims)
        .filter(|(_, c)| matches!(c, Ok(Claim::Owned)))
        .map(|(id, _)| id)
        .collect();
    assert_eq!(owners.len(), 1, "{claims:?}");
    let owner = owners[0].clone();
    for (id, claim) in ids.iter().zip(&claims) {
        if *id != owner {
            assert_eq!(claim.as_ref().ok(), Some(&Claim::OwnedBy(owner.clone())));
        }
    }
    // Claiming again is idempotent for the owner; others cannot release it.
    assert_eq!(
        registry.claim_channel(&channel, &owner).await.ok(),
        Some(Claim::Owned)
    );
    let other = ids.iter().find(|id| **id != owner).expect("another node");
    assert!(!registry
        .release_channel(&channel, other)
        .await
        .expect("release"));
    assert_eq!(
        registry.channels().await.expect("channels"),
        vec![(channel.clone(), owner.clone())]
    );
    // The owner lets go: another may claim it.
    assert!(registry
        .release_channel(&channel, &owner)
        .await
        .expect("release"));
    assert_eq!(
        registry.claim_channel(&channel, other).await.ok(),
        Some(Claim::Owned)
    );
    // An unregistered node cannot own anything.
    let ghost = NodeId::new("ghost").expect("id");
    assert!(registry
        .claim_channel(&ChannelName::new("x").expect("name"), &ghost)
        .await
        .is_err());
    // A node that leaves takes its channels with it.
    registry.deregister(other).await.expect("deregister");
    assert!(registry.channels().await.expect("channels").is_empty());
}

pub(crate) async fn events_follow_changes(registry: &impl Registry) {
    let mut events = registry.events();
    let a = node("a");
    registry.register(a.clone(), TTL).await.expect("register");
    let mut renewed = a.clone();
    renewed.load.viewers = 7; // the load moved: announced
    registry
        .register(renewed.clone(), TTL)
        .await
        .expect("renew");
    renewed.load.bitrate_out = 100; // from nothing: announced
    registry
        .register(renewed.clone(), TTL)
        .await
        .expect("renew");
    renewed.load.bitrate_out = 110; // by a tenth: not news

    registry
        .register(renewed.clone(), TTL)
        .await
        .expect("renew");
    registry.set_draining(&a.id, true).await.expect("drain");
    let channel = ChannelName::new("studio").expect("name");
    registry
        .claim_channel(&channel, &a.id)
        .await
        .expect("claim");
    registry.deregister(&a.id).await.expect("deregister");

    let mut busier = a.clone();
    busier.load.viewers = 7;
    let mut sending = busier.clone();
    sending.load.bitrate_out = 100;
    let mut draining = sending.clone();
    draining.load.bitrate_out = 110;
    draining.draining = true;
    let expected = vec![
        Event::NodeUp(a.clone()),
        Event::NodeChanged(busier),
        Event::NodeChanged(sending),
        Event::NodeChanged(draining),
        Event::ChannelClaimed {
            channel: channel.clone(),
            node: a.id.clone(),
        },
        Event::ChannelReleased {
            channel,
            node: a.id.clone(),
        },
        Event::NodeGone(a.id.clone()),
    ];
    let mut seen = Vec::new();
    while seen.len() < expected.len() {
        let next = tokio::time::timeout(Duration::from_secs(5), events.recv()).await;
        seen.push(next.expect("an event in time").expect("event"));
    }
    assert_eq!(seen, expected);
}

pub(crate) async fn certificates_are_stored_by_name(registry: &impl Registry) {
    let cert = Certificate {
        chain_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n".into(),
        key_pem: "-----BEGIN PRIVATE KEY-----\nsecret\n-----END PRIVATE KEY-----\n".into(),
    };
    assert_eq!(
        registry.certificate("live.example.com").await.expect("get"),
        None
    );
    registry
        .put_certificate("Live.Example.com", cert.clone())
        .await
        .expect("put");
    assert_eq!(
        registry.certificate("live.example.com").await.expect("get"),
        Some(cert.clone()),
        "names are case-insensitive"
    );
    assert!(
        !format!("{cert:?}").contains("secret"),
        "the key never prints"
    );
    assert!(registry
        .put_certificate("not a name", cert.clone())
        .await
        .is_err());
    let huge = Certificate {
        chain_pem: "x".repeat(70_000),
        key_pem: String::new(),
    };
    assert!(registry
        .put_certificate("big.example.com", huge)
        .await
        .is_err());
}
