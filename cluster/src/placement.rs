//! Placement: which node takes a new viewer or publisher. Pure.

use crate::model::{NodeInfo, Role};

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
}
