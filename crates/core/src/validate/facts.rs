//! What `validate` reads of a cluster, and the one function that judges all of it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::version::Info;
use kube::ResourceExt;

use super::{
    Access, Check, ClaimFacts, VipFacts, judge_claim, judge_crd, judge_leader, judge_member_lease,
    judge_owners, judge_quorum, judge_rbac, judge_version, judge_vips,
};
use crate::api::{FailoverCluster, FailoverClusterInstance};

/// What a read gave, or why it could not be made: the API server's message, often the
/// caller's RBAC. A failed read leaves its check unmade, as a warning that says why.
pub type Read<T> = Result<T, String>;

/// Everything the checks judge, as read from the API server.
#[derive(Clone, Debug)]
pub struct Facts {
    /// The API server's time (the `Date` of its answer): every age is measured on its clock.
    pub now: Timestamp,
    /// Each CRD this release generates, with the one the API server stores (`None`: absent).
    pub crds: Vec<(
        CustomResourceDefinition,
        Read<Option<CustomResourceDefinition>>,
    )>,
    /// The controller's leader Lease: where it was looked for, and what was found.
    pub controller_namespace: String,
    pub lease_name: String,
    pub leader: Read<Option<Lease>>,
    /// The controller's ServiceAccount as `namespace/name` (`Err`: why it was not found).
    pub service_account: Result<String, String>,
    /// Each access the controller needs and whether the API server allows it (`Err`: the
    /// first review the caller could not make).
    pub reviews: Read<Vec<(Access, bool)>>,
    pub version: Read<Info>,
    /// Every Node; without them no member or instance is judged.
    pub nodes: Read<Vec<Node>>,
    pub clusters: Vec<ClusterFacts>,
    pub instances: Vec<InstanceFacts>,
}

/// A FailoverCluster in scope and the kubelet Lease of each of its members.
#[derive(Clone, Debug)]
pub struct ClusterFacts {
    pub cluster: FailoverCluster,
    pub member_leases: Vec<(String, Read<Option<Lease>>)>,
}

/// An instance in scope and what its checks need.
#[derive(Clone, Debug)]
pub struct InstanceFacts {
    pub instance: FailoverClusterInstance,
    /// The labels of its namespace (`None`: not read).
    pub namespace_labels: Option<BTreeMap<String, String>>,
    pub claims: Read<Vec<ClaimFacts>>,
    pub vips: Read<VipFacts>,
}

/// Every check, in the order people read them: CRDs, leader, RBAC, version, each cluster's
/// members and quorum, then each instance's owners, claims and virtual IPs.
pub fn judge(f: &Facts) -> Vec<Check> {
    let mut checks = Vec::new();
    for (generated, stored) in &f.crds {
        checks.push(match stored {
            Ok(stored) => judge_crd(generated, stored.as_ref()),
            Err(e) => unchecked("crds", format!("CRD {}", generated.name_any()), e),
        });
    }
    let (ns, lease) = (&f.controller_namespace, &f.lease_name);
    checks.push(match &f.leader {
        Ok(leader) => judge_leader(ns, lease, leader.as_ref(), f.now),
        Err(e) => unchecked("leader", format!("controller leader Lease {ns}/{lease}"), e),
    });
    checks.push(judge_rbac(
        f.service_account.as_deref().map_err(String::as_str),
        f.reviews.as_deref().map_err(String::as_str),
    ));
    checks.push(match &f.version {
        Ok(info) => judge_version(info),
        Err(e) => unchecked("version", "Kubernetes version", e),
    });
    if let Err(e) = &f.nodes {
        checks.push(unchecked("heartbeats", "members and owners", e));
    }
    for c in &f.clusters {
        checks.extend(judge_cluster(c, f.now));
    }
    // Without the Nodes, owners cannot be told from strangers: no instance is judged.
    let Ok(nodes) = &f.nodes else {
        return checks;
    };
    for i in &f.instances {
        let cluster = f
            .clusters
            .iter()
            .map(|c| &c.cluster)
            .find(|c| c.name_any() == i.instance.spec.cluster_ref);
        checks.extend(judge_instance(i, cluster, nodes));
    }
    checks
}

fn judge_cluster(c: &ClusterFacts, now: Timestamp) -> Vec<Check> {
    let mut checks = Vec::new();
    for (node, lease) in &c.member_leases {
        match lease {
            Ok(lease) => checks.extend(judge_member_lease(node, &c.cluster, lease.as_ref(), now)),
            Err(e) => checks.push(unchecked(
                "heartbeats",
                format!("member {node} (cluster {})", c.cluster.name_any()),
                e,
            )),
        }
    }
    checks.push(judge_quorum(&c.cluster));
    checks
}

fn judge_instance(
    i: &InstanceFacts,
    cluster: Option<&FailoverCluster>,
    nodes: &[Node],
) -> Vec<Check> {
    let fci = &i.instance;
    let key = fci.key();
    let mut checks = judge_owners(fci, cluster, nodes, i.namespace_labels.as_ref());
    let owners = cluster.map_or(0, |c| super::eligible_owners(fci, c, nodes).len());
    match &i.claims {
        Ok(claims) => {
            for claim in claims {
                checks.extend(judge_claim(fci, claim, owners));
            }
        }
        Err(e) => checks.push(unchecked("storage", format!("instance {key} claims"), e)),
    }
    match &i.vips {
        Ok(facts) => checks.extend(judge_vips(fci, facts)),
        Err(e) => checks.push(unchecked(
            "virtualIPs",
            format!("instance {key} virtual IPs"),
            e,
        )),
    }
    checks
}

/// A check that could not be made: reading what it needs failed (often the caller's RBAC).
fn unchecked(check: &'static str, subject: impl Into<String>, error: &str) -> Check {
    Check::warn(
        check,
        subject,
        format!("not checked: {error}"),
        "run validate as someone who may read it (see docs/operations.md)",
    )
}
