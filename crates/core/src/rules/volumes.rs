//! Where a volume can go.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::NodeSelectorRequirement;

use crate::kinds::VolumeView;

/// The node a volume is pinned to, if its node affinity names exactly one hostname: its
/// instance can only run there (the controller places by it, `validate` reports it).
pub fn pinned_node(pv: &(impl VolumeView + ?Sized)) -> Option<String> {
    let terms = &pv.node_affinity()?.required.as_ref()?.node_selector_terms;
    let mut hosts = terms
        .iter()
        .flat_map(|t| t.match_expressions.iter().flatten())
        .filter(|e| e.key == "kubernetes.io/hostname" && e.operator == "In");
    let expr = hosts.next()?;
    match expr.values.as_deref() {
        Some([one]) if hosts.next().is_none() => Some(one.clone()),
        _ => None,
    }
}

/// Whether a volume can be used on the node `name` with `labels`: its required node
/// affinity (any of its terms, each term all of its expressions) matches the node. No
/// affinity: anywhere. How the scheduler and the attach/detach controller judge it, so the
/// controller never chooses an owner its volumes cannot reach (a claim pinned to a zone
/// stays in that zone), and `validate` says which members a claim cannot follow to.
pub fn volume_reaches(
    pv: &(impl VolumeView + ?Sized),
    name: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let Some(required) = required_affinity(pv) else {
        return true;
    };
    required.node_selector_terms.iter().any(|term| {
        let exprs = term.match_expressions.iter().flatten();
        let fields = term.match_fields.iter().flatten();
        // An empty term matches nothing, as the scheduler has it.
        (term
            .match_expressions
            .as_ref()
            .is_some_and(|e| !e.is_empty())
            || term.match_fields.as_ref().is_some_and(|f| !f.is_empty()))
            && exprs
                .into_iter()
                .all(|e| matches(e, labels.get(&e.key).map(String::as_str)))
            && fields
                .into_iter()
                .all(|f| f.key == "metadata.name" && matches(f, Some(name)))
    })
}

/// The volume's required node affinity, if it has one.
fn required_affinity(
    pv: &(impl VolumeView + ?Sized),
) -> Option<&k8s_openapi::api::core::v1::NodeSelector> {
    pv.node_affinity()?.required.as_ref()
}

fn matches(e: &NodeSelectorRequirement, value: Option<&str>) -> bool {
    let values = e.values.as_deref().unwrap_or_default();
    let number = |s: &str| s.parse::<i64>().ok();
    match e.operator.as_str() {
        "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
        "NotIn" => value.is_none_or(|v| values.iter().all(|x| x != v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" => {
            matches!((value.and_then(number), values.first().and_then(|x| number(x))), (Some(v), Some(x)) if v > x)
        }
        "Lt" => {
            matches!((value.and_then(number), values.first().and_then(|x| number(x))), (Some(v), Some(x)) if v < x)
        }
        _ => false,
    }
}

/// A volume's required node affinity, as messages tell it:
/// `topology.kubernetes.io/zone In [zone-b]`, terms joined by `or`.
pub fn describe_affinity(pv: &(impl VolumeView + ?Sized)) -> String {
    let Some(required) = required_affinity(pv) else {
        return "none".into();
    };
    required
        .node_selector_terms
        .iter()
        .map(|t| {
            t.match_expressions
                .iter()
                .flatten()
                .chain(t.match_fields.iter().flatten())
                .map(|e| match e.values.as_deref() {
                    Some(v) if !v.is_empty() => {
                        format!("{} {} [{}]", e.key, e.operator, v.join(", "))
                    }
                    _ => format!("{} {}", e.key, e.operator),
                })
                .collect::<Vec<_>>()
                .join(" and ")
        })
        .collect::<Vec<_>>()
        .join(" or ")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::PersistentVolume;

    use super::*;

    fn pv(affinity: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pv"},
            "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": affinity}}},
        }))
        .unwrap()
    }

    fn labels(zone: &str) -> BTreeMap<String, String> {
        BTreeMap::from([("topology.kubernetes.io/zone".to_string(), zone.to_string())])
    }

    #[test]
    fn a_volume_pinned_to_a_zone_reaches_only_that_zones_nodes() {
        let zoned = pv(serde_json::json!([{"matchExpressions": [
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["b"]}]}]));
        assert!(volume_reaches(&zoned, "n1", &labels("b")));
        assert!(!volume_reaches(&zoned, "n1", &labels("a")));
        assert!(!volume_reaches(&zoned, "n1", &BTreeMap::new()));
        assert_eq!(
            describe_affinity(&zoned),
            "topology.kubernetes.io/zone In [b]"
        );
        // Either of two terms.
        let two = pv(serde_json::json!([
            {"matchExpressions": [{"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["a"]}]},
            {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["n9"]}]},
        ]));
        assert!(volume_reaches(&two, "n1", &labels("a")));
        assert!(volume_reaches(&two, "n9", &labels("c")));
        assert!(!volume_reaches(&two, "n1", &labels("c")));
        // NotIn, Exists, DoesNotExist, Gt.
        let not_c = pv(serde_json::json!([{"matchExpressions": [
            {"key": "topology.kubernetes.io/zone", "operator": "NotIn", "values": ["c"]},
            {"key": "disk", "operator": "DoesNotExist"}]}]));
        assert!(volume_reaches(&not_c, "n", &labels("a")));
        assert!(!volume_reaches(&not_c, "n", &labels("c")));
        let mut with_disk = labels("a");
        with_disk.insert("disk".into(), "ssd".into());
        assert!(!volume_reaches(&not_c, "n", &with_disk));
        let newer = pv(serde_json::json!([{"matchExpressions": [
            {"key": "gen", "operator": "Gt", "values": ["3"]}]}]));
        let mut g4 = BTreeMap::new();
        g4.insert("gen".to_string(), "4".to_string());
        assert!(volume_reaches(&newer, "n", &g4));
        assert!(!volume_reaches(&newer, "n", &labels("a")));
        // No affinity: anywhere. An empty term: nowhere.
        let free: PersistentVolume =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "pv"}, "spec": {}}))
                .unwrap();
        assert!(volume_reaches(&free, "n", &BTreeMap::new()));
        assert!(!volume_reaches(
            &pv(serde_json::json!([{}])),
            "n",
            &labels("a")
        ));
    }
}
