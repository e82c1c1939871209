//! Owners: the nodes an instance may run on.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

use super::Check;
use crate::api::{FailoverCluster, FailoverClusterInstance};
use crate::rules::{is_member, owner_order};

/// The members of `cluster` that may own the instance, by the order the controller places
/// it in ([`owner_order`]); health aside.
pub fn eligible_owners(
    fci: &FailoverClusterInstance,
    cluster: &FailoverCluster,
    nodes: &[Node],
) -> BTreeSet<String> {
    let members = members_of(cluster, nodes);
    owner_order(&fci.spec, &members)
        .into_iter()
        .cloned()
        .collect()
}

/// Members of `cluster` among `nodes`.
pub fn members_of(cluster: &FailoverCluster, nodes: &[Node]) -> BTreeSet<String> {
    nodes
        .iter()
        .filter(|n| is_member(&cluster.spec.node_selector, n.labels()))
        .map(|n| n.name_any())
        .collect()
}

/// Each preferred and possible owner exists and is a member of the instance's cluster; the
/// cluster exists and allows the instance's namespace; more than one node may own it.
pub fn judge_owners(
    fci: &FailoverClusterInstance,
    cluster: Option<&FailoverCluster>,
    nodes: &[Node],
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Vec<Check> {
    let subject = format!("instance {}", fci.key());
    let cref = &fci.spec.cluster_ref;
    let Some(cluster) = cluster else {
        return vec![Check::fail(
            "owners",
            subject,
            format!("its cluster {cref} does not exist"),
            "create the FailoverCluster or fix spec.clusterRef",
        )];
    };
    let mut out = Vec::new();
    let ns = fci.namespace().unwrap_or_default();
    if let Some(labels) = namespace_labels
        && !cluster.spec.allowed_namespaces.allows(&ns, labels)
    {
        out.push(Check::fail(
            "owners",
            subject.clone(),
            format!("cluster {cref} does not allow namespace {ns}"),
            format!("add {ns} to the cluster's spec.allowedNamespaces"),
        ));
    }
    out.extend(listed_owners_are_members(fci, cluster, nodes, &subject));
    let eligible = eligible_owners(fci, cluster, nodes);
    match eligible.len() {
        0 => out.push(Check::fail(
            "owners",
            subject,
            format!("no member of cluster {cref} may own it: it can never run"),
            "fix spec.owners.possible or the cluster's nodes",
        )),
        1 => out.push(Check::warn(
            "owners",
            subject,
            format!(
                "only {} may own it: it has nowhere to fail over to",
                eligible.iter().next().map(String::as_str).unwrap_or("")
            ),
            "add possible owners (spec.owners.possible) or members to the cluster",
        )),
        n if out.is_empty() => out.push(Check::pass(
            "owners",
            subject,
            format!("its owners are members of cluster {cref}; {n} nodes may own it"),
        )),
        _ => {}
    }
    out
}

/// Each preferred and possible owner is a Node, and a member of the cluster.
fn listed_owners_are_members(
    fci: &FailoverClusterInstance,
    cluster: &FailoverCluster,
    nodes: &[Node],
    subject: &str,
) -> Vec<Check> {
    let cref = &fci.spec.cluster_ref;
    let mut out = Vec::new();
    let members = members_of(cluster, nodes);
    let exists: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    let owners = &fci.spec.owners;
    let lists = [
        ("preferred", &owners.preferred, "spec.owners.preferred"),
        ("possible", &owners.possible, "spec.owners.possible"),
    ];
    for (what, list, field) in lists {
        for node in list {
            if !exists.contains(node) {
                out.push(Check::fail(
                    "owners",
                    subject,
                    format!("{what} owner {node} does not exist (no such Node)"),
                    format!("join the node or fix {field}"),
                ));
            } else if !members.contains(node) {
                out.push(Check::fail(
                    "owners",
                    subject,
                    format!("{what} owner {node} is not a member of cluster {cref}"),
                    format!(
                        "add it to the cluster's nodes (labels matching its spec.nodeSelector) \
                         or fix {field}"
                    ),
                ));
            }
        }
    }
    out
}
