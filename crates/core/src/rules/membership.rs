//! Which nodes belong to a cluster, and which of them may own an instance.

use std::collections::{BTreeMap, BTreeSet};

use crate::api::FailoverClusterInstanceSpec;

/// The labels of a control-plane node. Such a node is a member only when the cluster's
/// selector names the label: tenants' workloads never land on the control plane by default.
pub const CONTROL_PLANE_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
];

/// Whether a node with `labels` is a member of a cluster whose node selector is `selector`:
/// every selector label matches, and a control-plane node only when the selector names its
/// role label.
pub fn is_member(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        && CONTROL_PLANE_LABELS
            .iter()
            .all(|l| !labels.contains_key(*l) || selector.contains_key(*l))
}

/// The nodes that may ever own the instance, in the order the controller tries them: its
/// preferred owners, then its possible owners (every member when it lists none), each once
/// and only if it is a member. Health, pinned claims and anti-affinity then rule out some
/// of them for the moment (`decide::placement`).
pub fn owner_order<'a>(
    spec: &'a FailoverClusterInstanceSpec,
    members: impl IntoIterator<Item = &'a String>,
) -> Vec<&'a String> {
    let members: BTreeSet<&String> = members.into_iter().collect();
    let possible: Vec<&String> = if spec.owners.possible.is_empty() {
        members.iter().copied().collect()
    } else {
        spec.owners.possible.iter().collect()
    };
    let mut out: Vec<&String> = Vec::new();
    let mut taken: BTreeSet<&String> = BTreeSet::new();
    for n in spec.owners.preferred.iter().chain(possible) {
        if members.contains(n) && taken.insert(n) {
            out.push(n);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn control_plane_nodes_are_members_only_when_selected_by_name() {
        let worker = labels(&[("pool", "db")]);
        let control = labels(&[
            ("pool", "db"),
            ("node-role.kubernetes.io/control-plane", ""),
        ]);
        let legacy = labels(&[("pool", "db"), ("node-role.kubernetes.io/master", "")]);
        // An empty selector selects every node but the control plane's.
        assert!(is_member(&BTreeMap::new(), &worker));
        assert!(!is_member(&BTreeMap::new(), &control));
        assert!(!is_member(&BTreeMap::new(), &legacy));
        // Selecting by another label does not bring them in either.
        let pool = labels(&[("pool", "db")]);
        assert!(is_member(&pool, &worker));
        assert!(!is_member(&pool, &control));
        // Naming the label does.
        let explicit = labels(&[("node-role.kubernetes.io/control-plane", "")]);
        assert!(is_member(&explicit, &control));
        assert!(!is_member(&explicit, &worker));
    }

    #[test]
    fn owners_are_preferred_then_possible_members_each_once() {
        let mut spec: FailoverClusterInstanceSpec = serde_json::from_value(serde_json::json!({
            "clusterRef": "c", "networkName": {"name": "n", "ports": [{"name": "p", "port": 1}]},
            "template": {"spec": {"containers": [{"name": "c", "image": "i"}]}},
        }))
        .expect("a minimal spec");
        let members: Vec<String> = ["a", "b", "c"].iter().map(|n| n.to_string()).collect();
        assert_eq!(owner_order(&spec, &members), ["a", "b", "c"]);
        spec.owners.preferred = vec!["c".into(), "gone".into()];
        assert_eq!(owner_order(&spec, &members), ["c", "a", "b"]);
        spec.owners.possible = vec!["b".into(), "c".into(), "x".into()];
        assert_eq!(owner_order(&spec, &members), ["c", "b"]);
    }
}
