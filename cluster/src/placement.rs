//! Placement: which node takes a new viewer or publisher. Pure.

use crate::model::{NodeId, NodeInfo, Role, Tier};

/// Viewers within this many of each other count as equally loaded when choosing a node for a
/// viewer, so one that already carries the channel wins among them (it pulls nothing new).
pub const VIEWER_LOAD_BAND: u32 = 100;

/// The node for a newcomer needing `role`, near `region` if given: never a draining node;
/// nodes in the region before others; then the least loaded (viewers for SFU nodes, ingest
/// streams for ingest nodes, then bitrate out); ties by id, so the choice is stable.
pub fn choose<'a>(nodes: &'a [NodeInfo], role: Role, region: Option<&str>) -> Option<&'a NodeInfo> {
    nodes
        .iter()
        .filter(|n| n.has(role) && !n.draining)
        .min_by(|a, b| {
            let key = |n: &NodeInfo| {
                let elsewhere = region.is_some_and(|r| n.region != r);
                let load = match role {
                    Role::Ingest => u64::from(n.load.ingest_streams),
                    _ => u64::from(n.load.viewers),
                };
                (elsewhere, load, n.load.bitrate_out)
            };
            key(a).cmp(&key(b)).then_with(|| a.id.cmp(&b.id))
        })
}

/// The node for a new viewer of a channel whose publisher is on `origin` (if live): a primary
/// SFU node (any SFU node if no primary has the role), never a draining one; in `region`
/// first; then the less loaded by bands of [`VIEWER_LOAD_BAND`] viewers; within a band, the one
/// that already carries the channel (its origin); then fewer viewers, less bitrate, and id.
/// With the relay any of them can serve any channel.
pub fn choose_viewer<'a>(
    nodes: &'a [NodeInfo],
    origin: Option<&NodeId>,
    region: Option<&str>,
) -> Option<&'a NodeInfo> {
    let serving = |n: &&NodeInfo| n.has(Role::Sfu) && !n.draining;
    let any_primary = nodes
        .iter()
        .filter(serving)
        .any(|n| n.tier == Tier::Primary);
    nodes
        .iter()
        .filter(serving)
        .filter(|n| !any_primary || n.tier == Tier::Primary)
        .min_by_key(|n| {
            (
                region.is_some_and(|r| n.region != r),
                n.load.viewers / VIEWER_LOAD_BAND,
                Some(&n.id) != origin,
                n.load.viewers,
                n.load.bitrate_out,
                n.id.clone(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Load, NodeId, Ports};

    fn node(id: &str, roles: &[Role], region: &str, viewers: u32, draining: bool) -> NodeInfo {
        NodeInfo {
            id: NodeId::new(id).expect("id"),
            roles: roles.to_vec(),
            region: region.into(),
            public_host: format!("{id}.example"),
            ports: Ports::default(),
            load: Load {
                viewers,
                ingest_streams: viewers / 100,
                bitrate_out: u64::from(viewers) * 2_500_000,
            },
            draining,
            tier: Default::default(),
            relay_fingerprint: String::new(),
        }
    }

    #[test]
    fn the_least_loaded_node_of_the_region_with_the_role_wins() {
        let nodes = [
            node("a", &[Role::Sfu], "eu", 300, false),
            node("b", &[Role::Sfu], "eu", 100, false),
            node("c", &[Role::Sfu], "us", 0, false),
            node("d", &[Role::Ingest], "eu", 0, false),
        ];
        let id = |n: Option<&NodeInfo>| n.map(|n| n.id.to_string());
        assert_eq!(id(choose(&nodes, Role::Sfu, Some("eu"))), Some("b".into()));
        assert_eq!(id(choose(&nodes, Role::Sfu, Some("us"))), Some("c".into()));
        assert_eq!(
            id(choose(&nodes, Role::Sfu, None)),
            Some("c".into()),
            "no region: least load"
        );
        assert_eq!(
            id(choose(&nodes, Role::Sfu, Some("asia"))),
            Some("c".into()),
            "none there: any"
        );
        assert_eq!(
            id(choose(&nodes, Role::Ingest, Some("us"))),
            Some("d".into())
        );
        assert_eq!(id(choose(&nodes, Role::Relay, None)), None);
    }

    #[test]
    fn draining_nodes_are_skipped_and_ties_go_by_id() {
        let nodes = [
            node("b", &[Role::Sfu], "eu", 10, false),
            node("a", &[Role::Sfu], "eu", 10, false),
            node("z", &[Role::Sfu], "eu", 0, true),
        ];
        assert_eq!(
            choose(&nodes, Role::Sfu, Some("eu")).map(|n| n.id.as_str()),
            Some("a")
        );
        let all_draining = [node("z", &[Role::Sfu], "eu", 0, true)];
        assert!(choose(&all_draining, Role::Sfu, None).is_none());
    }

    #[test]
    fn a_viewer_goes_to_a_primary_near_and_light_preferring_the_origin() {
        let origin = NodeId::new("o").unwrap();
        let mut nodes = vec![
            node("a", &[Role::Sfu], "eu", 10, false),
            node("o", &[Role::Sfu, Role::Ingest], "eu", 60, false),
            node("s", &[Role::Sfu], "eu", 0, false),
            node("u", &[Role::Sfu], "us", 0, false),
        ];
        nodes[2].tier = Tier::Secondary;
        let id = |n: Option<&NodeInfo>| n.map(|n| n.id.to_string());
        // Same band: the origin carries it already.
        assert_eq!(
            id(choose_viewer(&nodes, Some(&origin), Some("eu"))),
            Some("o".into())
        );
        // Not live anywhere: the lightest primary; the secondary is never chosen.
        assert_eq!(
            id(choose_viewer(&nodes, None, Some("eu"))),
            Some("a".into())
        );
        assert_eq!(
            id(choose_viewer(&nodes, None, Some("us"))),
            Some("u".into())
        );
        // The origin a band heavier: the lighter node, which pulls over the relay.
        nodes[1].load.viewers = 150;
        assert_eq!(
            id(choose_viewer(&nodes, Some(&origin), Some("eu"))),
            Some("a".into())
        );
        // Draining is never chosen; with no primary left, any SFU node.
        for n in &mut nodes {
            if n.tier == Tier::Primary {
                n.draining = true;
            }
        }
        assert_eq!(id(choose_viewer(&nodes, None, None)), Some("s".into()));
    }
}
