//! Which anti-affinity classes count between two instances: within a namespace, every class
//! both name; across namespaces, only a class the cluster's administrator shares between
//! them (`FailoverCluster.spec.antiAffinityClasses`). A tenant who names another tenant's
//! class pushes nobody off a node and learns nothing of who uses it.

use std::collections::BTreeMap;

use kube::ResourceExt;

use crate::api::{FailoverCluster, FailoverClusterInstance, FailoverClusterSpec};

/// A namespace and its labels, as a grant judges it.
pub type NamespaceOf<'a> = (&'a str, &'a BTreeMap<String, String>);

/// The first of `mine` that `theirs` names too and that counts between namespaces `a`
/// (mine) and `b` (theirs) of `cluster`.
pub fn shared_class<'c>(
    mine: &'c [String],
    theirs: &[String],
    a: NamespaceOf<'_>,
    b: NamespaceOf<'_>,
    cluster: &FailoverClusterSpec,
) -> Option<&'c String> {
    mine.iter()
        .filter(|c| theirs.contains(c))
        .find(|c| a.0 == b.0 || shared_between(c, a, b, cluster))
}

fn shared_between(
    class: &str,
    a: NamespaceOf<'_>,
    b: NamespaceOf<'_>,
    cluster: &FailoverClusterSpec,
) -> bool {
    cluster
        .anti_affinity_classes
        .iter()
        .filter(|s| s.name == class)
        .any(|s| {
            s.namespaces
                .as_ref()
                .is_none_or(|g| g.allows(a.0, a.1) && g.allows(b.0, b.1))
        })
}

/// The nodes of the instances of the same cluster that share an anti-affinity class with
/// `fci` (in its namespace, or across namespaces where `cluster` shares the class): where
/// each is settled, or where it is moving. A moving instance is counted at its target only:
/// the node it leaves is being emptied. Another namespace's instance is counted, never
/// named. `labels` gives a namespace's labels.
pub fn neighbours<'a>(
    fci: &FailoverClusterInstance,
    instances: impl IntoIterator<Item = &'a FailoverClusterInstance>,
    cluster: Option<&FailoverCluster>,
    labels: impl Fn(&str) -> BTreeMap<String, String>,
) -> BTreeMap<String, Vec<crate::decide::Neighbour>> {
    let mut out: BTreeMap<String, Vec<crate::decide::Neighbour>> = BTreeMap::new();
    let classes = &fci.spec.anti_affinity_classes;
    let Some(cluster) = cluster.filter(|_| !classes.is_empty()) else {
        return out;
    };
    let mine = (fci.spec.priority, fci.key());
    let my_ns = fci.namespace().unwrap_or_default();
    let my_labels = labels(&my_ns);
    let strict_here = fci.spec.anti_affinity_mode == crate::api::AntiAffinityMode::Strict;
    for other in instances {
        let theirs = (other.spec.priority, other.key());
        if theirs.1 == mine.1 || other.spec.cluster_ref != fci.spec.cluster_ref {
            continue;
        }
        let their_ns = other.namespace().unwrap_or_default();
        let their_labels = if their_ns == my_ns {
            my_labels.clone()
        } else {
            labels(&their_ns)
        };
        let Some(class) = shared_class(
            classes,
            &other.spec.anti_affinity_classes,
            (&my_ns, &my_labels),
            (&their_ns, &their_labels),
            &cluster.spec,
        ) else {
            continue;
        };
        let status = other.status.as_ref();
        let moving = status.and_then(|s| s.current_move.as_ref());
        let node = match moving {
            Some(m) => m.to.clone(),
            None => status.and_then(|s| s.owner_node.clone()),
        };
        let Some(node) = node else { continue };
        out.entry(node).or_default().push(crate::decide::Neighbour {
            instance: if their_ns == my_ns {
                theirs.1.clone()
            } else {
                "an instance of another namespace".to_string()
            },
            class: class.clone(),
            strict: strict_here
                || other.spec.anti_affinity_mode == crate::api::AntiAffinityMode::Strict,
            outranks: theirs < mine,
            settled: moving.is_none()
                && status.is_some_and(|s| s.phase == crate::api::Phase::Online),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(shared: serde_json::Value) -> FailoverClusterSpec {
        serde_json::from_value(serde_json::json!({
            "nodeSelector": {},
            "allowedNamespaces": {"selector": {}},
            "antiAffinityClasses": shared,
        }))
        .unwrap()
    }

    fn classes(c: &[&str]) -> Vec<String> {
        c.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_class_counts_within_its_namespace_and_across_only_where_shared() {
        let none = BTreeMap::new();
        let team = BTreeMap::from([("team".to_string(), "data".to_string())]);
        let c = cluster(serde_json::json!([
            {"name": "sql", "namespaces": {"selector": {"matchLabels": {"team": "data"}}}},
            {"name": "web"},
        ]));
        let mine = classes(&["cache", "sql", "web"]);
        // Same namespace: any class both name, the first of mine.
        assert_eq!(
            shared_class(&mine, &classes(&["cache"]), ("a", &none), ("a", &none), &c),
            Some(&"cache".to_string())
        );
        // Another namespace: an unshared class never counts.
        assert_eq!(
            shared_class(&mine, &classes(&["cache"]), ("a", &none), ("b", &none), &c),
            None
        );
        // A class shared with every namespace counts.
        assert_eq!(
            shared_class(&mine, &classes(&["web"]), ("a", &none), ("b", &none), &c),
            Some(&"web".to_string())
        );
        // A class shared with some: only when both are granted.
        let sql = classes(&["sql"]);
        assert_eq!(
            shared_class(&mine, &sql, ("a", &team), ("b", &none), &c),
            None
        );
        assert_eq!(
            shared_class(&mine, &sql, ("a", &none), ("b", &team), &c),
            None
        );
        assert_eq!(
            shared_class(&mine, &sql, ("a", &team), ("b", &team), &c),
            Some(&"sql".to_string())
        );
        // No class in common: none.
        assert_eq!(
            shared_class(&mine, &classes(&["other"]), ("a", &none), ("a", &none), &c),
            None
        );
    }

    fn fci(
        ns: &str,
        name: &str,
        cluster: &str,
        spec: serde_json::Value,
        status: serde_json::Value,
    ) -> FailoverClusterInstance {
        let mut base = serde_json::json!({
            "clusterRef": cluster,
            "networkName": {"name": name, "ports": [{"name": "sql", "port": 1433}]},
            "template": {"spec": {"containers": [{"name": "db", "image": "db"}]}},
        });
        for (k, v) in spec.as_object().unwrap() {
            base[k] = v.clone();
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1",
            "kind": "FailoverClusterInstance",
            "metadata": {"name": name, "namespace": ns},
            "spec": base,
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn neighbours_are_the_same_clusters_instances_sharing_a_class_where_they_are_or_go() {
        // `sql` is shared across namespaces a, b and z only.
        let cluster: FailoverCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverCluster",
            "metadata": {"name": "c1"},
            "spec": {"nodeSelector": {}, "allowedNamespaces": {"selector": {}},
                     "antiAffinityClasses": [{"name": "sql", "namespaces": {"names": ["a", "b", "z"]}}]},
        }))
        .unwrap();
        let labels = |_: &str| BTreeMap::new();
        let sql = serde_json::json!({"antiAffinityClasses": ["sql"]});
        let online = |node: &str| serde_json::json!({"phase": "Online", "ownerNode": node});
        let me = fci("a", "db", "c1", sql.clone(), serde_json::json!({}));
        let others = [
            // Same class, same cluster, same namespace; ranks above (same priority,
            // earlier key).
            fci("a", "ant", "c1", sql.clone(), online("n1")),
            // The same class in a namespace it is not shared with: never.
            fci("y", "yak", "c1", sql.clone(), online("n6")),
            // Moving from n1 to n2: counted at n2 only, not settled; a lower priority.
            fci(
                "b",
                "mover",
                "c1",
                serde_json::json!({"antiAffinityClasses": ["web", "sql"], "priority": "Low", "antiAffinityMode": "Strict"}),
                serde_json::json!({"phase": "Moving", "ownerNode": "n1", "move": {
                    "from": "n1", "to": "n2", "reason": "x", "planned": true,
                    "started": "2026-01-01T00:00:00.000000Z"}}),
            ),
            // Another cluster, or no shared class: never.
            fci("a", "elsewhere", "c2", sql.clone(), online("n3")),
            fci(
                "a",
                "web",
                "c1",
                serde_json::json!({"antiAffinityClasses": ["web"]}),
                online("n3"),
            ),
            // Itself: never.
            fci("a", "db", "c1", sql.clone(), online("n4")),
            // A higher priority ranks above whatever its name.
            fci(
                "z",
                "zed",
                "c1",
                serde_json::json!({"antiAffinityClasses": ["sql"], "priority": "High"}),
                online("n5"),
            ),
        ];
        let got = neighbours(&me, others.iter(), Some(&cluster), labels);
        let summary: Vec<(&str, &str, bool, bool, bool)> = got
            .iter()
            .flat_map(|(node, xs)| {
                xs.iter().map(move |x| {
                    (
                        node.as_str(),
                        x.instance.as_str(),
                        x.strict,
                        x.outranks,
                        x.settled,
                    )
                })
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("n1", "a/ant", false, true, true),
                // Other namespaces' instances are counted, never named.
                ("n2", "an instance of another namespace", true, false, false),
                ("n5", "an instance of another namespace", false, true, true),
            ]
        );
        // No classes: no neighbours at all.
        let plain = fci(
            "a",
            "db",
            "c1",
            serde_json::json!({}),
            serde_json::json!({}),
        );
        assert!(neighbours(&plain, others.iter(), Some(&cluster), labels).is_empty());
        // Without the cluster's sharing, only the namespace's own.
        let unshared: FailoverCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverCluster",
            "metadata": {"name": "c1"},
            "spec": {"nodeSelector": {}, "allowedNamespaces": {"selector": {}}},
        }))
        .unwrap();
        let got = neighbours(&me, others.iter(), Some(&unshared), labels);
        assert_eq!(got.keys().collect::<Vec<_>>(), ["n1"]);
    }
}
