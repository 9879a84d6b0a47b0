//! Which node a relay pulls a channel from. Pure.
//!
//! Every relay node has a rank for a channel: its origin (the node holding the publisher) 0, a
//! secondary in the origin's region 1, any other secondary 2, a primary 3. A node pulls only
//! from a node of lower rank. Ranks come from what each node registers (tier, region) and the
//! channel's origin, so every node computes the same rank for every other; each hop therefore
//! brings a subscription strictly nearer the origin: a path cannot come back to a node it left
//! (no loops), and none is longer than three hops.

use crate::model::{NodeId, NodeInfo, Role, Tier};

/// `node`'s rank for a channel whose origin is `origin` (0 is the origin itself).
pub fn rank(node: &NodeInfo, origin: &NodeInfo) -> u8 {
    if node.id == origin.id {
        0
    } else if node.tier == Tier::Secondary && node.region == origin.region {
        1
    } else if node.tier == Tier::Secondary {
        2
    } else {
        3
    }
}

/// Whether `node` takes relay subscriptions: the role, a port, and a certificate to pin.
pub fn serves_relay(node: &NodeInfo) -> bool {
    node.has(Role::Relay) && node.ports.relay != 0 && !node.relay_fingerprint.is_empty()
}

/// The nodes `me` may pull a channel from, best first, leaving out those in `avoid` (found
/// dead or refusing a moment ago): relay nodes of lower rank than `me` that are not draining,
/// secondaries before the origin, those in `me`'s region first, then the least busy; the origin
/// last, draining or not, since it holds the publisher. Empty when `me` is the origin.
pub fn upstreams<'a>(
    me: &NodeInfo,
    origin: &'a NodeInfo,
    nodes: &'a [NodeInfo],
    avoid: &[NodeId],
) -> Vec<&'a NodeInfo> {
    let mine = rank(me, origin);
    let mut shields: Vec<&NodeInfo> = nodes
        .iter()
        .filter(|n| {
            let r = rank(n, origin);
            r > 0 && r < mine && !n.draining && serves_relay(n) && !avoid.contains(&n.id)
        })
        .collect();
    shields.sort_by(|a, b| {
        let key = |n: &NodeInfo| (n.region != me.region, n.load.bitrate_out);
        key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
    });
    if mine > 0 && serves_relay(origin) && !avoid.contains(&origin.id) {
        shields.push(origin);
    }
    shields
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Load, Ports};

    fn node(id: &str, tier: Tier, region: &str) -> NodeInfo {
        NodeInfo {
            id: NodeId::new(id).expect("id"),
            roles: vec![Role::Relay, Role::Sfu, Role::Ingest],
            region: region.into(),
            public_host: format!("{id}.example"),
            ports: Ports {
                relay: 4443,
                ..Ports::default()
            },
            load: Load::default(),
            draining: false,
            tier,
            relay_fingerprint: format!("fp-{id}"),
        }
    }

    fn ids(nodes: Vec<&NodeInfo>) -> Vec<&str> {
        nodes.into_iter().map(|n| n.id.as_str()).collect()
    }

    #[test]
    fn a_primary_pulls_through_a_shield_of_its_region_then_others_then_the_origin() {
        let origin = node("o", Tier::Primary, "eu");
        let nodes = vec![
            origin.clone(),
            node("s-us", Tier::Secondary, "us"),
            node("s-eu", Tier::Secondary, "eu"),
            node("p-us", Tier::Primary, "us"),
        ];
        let me = node("p-us", Tier::Primary, "us");
        assert_eq!(
            ids(upstreams(&me, &origin, &nodes, &[])),
            ["s-us", "s-eu", "o"]
        );
        // The shield of its region died: the next path, then the origin directly.
        let avoid = [NodeId::new("s-us").expect("id")];
        assert_eq!(ids(upstreams(&me, &origin, &nodes, &avoid)), ["s-eu", "o"]);
    }

    #[test]
    fn a_far_shield_pulls_through_a_shield_near_the_origin_which_pulls_from_the_origin() {
        let origin = node("o", Tier::Primary, "eu");
        let nodes = vec![
            origin.clone(),
            node("s-us", Tier::Secondary, "us"),
            node("s-eu", Tier::Secondary, "eu"),
        ];
        let far = node("s-us", Tier::Secondary, "us");
        assert_eq!(ids(upstreams(&far, &origin, &nodes, &[])), ["s-eu", "o"]);
        let near = node("s-eu", Tier::Secondary, "eu");
        assert_eq!(ids(upstreams(&near, &origin, &nodes, &[])), ["o"]);
        assert!(upstreams(&origin, &origin, &nodes, &[]).is_empty());
    }

    #[test]
    fn draining_nodes_and_nodes_without_a_relay_are_left_out_but_a_draining_origin_is_not() {
        let mut origin = node("o", Tier::Primary, "eu");
        origin.draining = true;
        let mut drained = node("s1", Tier::Secondary, "eu");
        drained.draining = true;
        let mut no_relay = node("s2", Tier::Secondary, "eu");
        no_relay.roles = vec![Role::Sfu];
        let mut no_cert = node("s3", Tier::Secondary, "eu");
        no_cert.relay_fingerprint.clear();
        let nodes = vec![origin.clone(), drained, no_relay, no_cert];
        let me = node("p", Tier::Primary, "eu");
        assert_eq!(ids(upstreams(&me, &origin, &nodes, &[])), ["o"]);
    }

    proptest::proptest! {
        /// Following each node's first choice from any node always ends at the origin, in at
        /// most three hops, whatever the tiers and regions.
        #[test]
        fn every_path_ends_at_the_origin_without_a_loop(
            layout in proptest::collection::vec((proptest::bool::ANY, 0u8..3), 1..12),
            origin_at in 0usize..12,
            start_at in 0usize..12,
        ) {
            let nodes: Vec<NodeInfo> = layout
                .iter()
                .enumerate()
                .map(|(i, (secondary, region))| {
                    let tier = if *secondary { Tier::Secondary } else { Tier::Primary };
                    node(&format!("n{i}"), tier, &format!("r{region}"))
                })
                .collect();
            let origin = &nodes[origin_at % nodes.len()];
            let mut at = &nodes[start_at % nodes.len()];
            let mut hops = 0;
            while at.id != origin.id {
                let next = upstreams(at, origin, &nodes, &[]);
                proptest::prop_assert!(!next.is_empty(), "stuck at {}", at.id);
                proptest::prop_assert!(rank(next[0], origin) < rank(at, origin));
                at = next[0];
                hops += 1;
            }
            proptest::prop_assert!(hops <= 3);
        }
    }
}
