//! Which anti-affinity classes count between two instances: within a namespace, every class
//! both name; across namespaces, only a class the cluster's administrator shares between
//! them (`FailoverCluster.spec.antiAffinityClasses`). A tenant who names another tenant's
//! class pushes nobody off a node and learns nothing of who uses it.

use std::collections::BTreeMap;

use crate::api::FailoverClusterSpec;

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
}
