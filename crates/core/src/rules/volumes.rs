//! Where a volume can go.

use k8s_openapi::api::core::v1::PersistentVolume;

/// The node a volume is pinned to, if its node affinity names exactly one hostname: its
/// instance can only run there (the controller places by it, `validate` reports it).
pub fn pinned_node(pv: &PersistentVolume) -> Option<String> {
    let terms = &pv
        .spec
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required
        .as_ref()?
        .node_selector_terms;
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
