//! What `validate` reads of a cluster, and the one function that judges all of it.

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::version::Info;
use kube::ResourceExt;

use super::{
    Access, Check, ClaimFacts, VipFacts, judge_claim, judge_crd, judge_leader, judge_member_lease,
    judge_network_name, judge_owners, judge_pools, judge_quorum, judge_rbac, judge_version,
    judge_vips,
};
use crate::api::{FailoverCluster, FailoverClusterInstance};
use crate::rules::Reserved;

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
    /// Every ServiceCIDR: with the Nodes, the cluster's own addresses that no pool grants.
    pub service_cidrs: Read<Vec<ServiceCIDR>>,
    /// Every IPAddress: who holds each virtual IP (read when an instance in scope has one).
    pub ip_addresses: Read<Vec<IPAddress>>,
    pub clusters: Vec<ClusterFacts>,
    pub instances: Vec<InstanceFacts>,
}

/// A FailoverCluster in scope and the kubelet Lease of each of its members.
#[derive(Clone, Debug)]
pub struct ClusterFacts {
    pub cluster: FailoverCluster,
    pub member_leases: Vec<(String, Read<Option<Lease>>)>,
    /// The node agent's Lease of each member (`kube-failover-agent-<node>`).
    pub agent_leases: Vec<(String, Read<Option<Lease>>)>,
}

/// An instance in scope and what its checks need.
#[derive(Clone, Debug)]
pub struct InstanceFacts {
    pub instance: FailoverClusterInstance,
    /// The labels of its namespace.
    pub namespace_labels: Read<BTreeMap<String, String>>,
    pub claims: Read<Vec<ClaimFacts>>,
    pub vips: Read<VipFacts>,
}

/// Every check, in the order people read them: CRDs, leader, RBAC, version, each cluster's
/// members, quorum and address pools, then each instance's owners, claims, virtual IPs and
/// the grant of its network name.
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
    let reserved = match (&f.nodes, &f.service_cidrs) {
        (Ok(nodes), Ok(cidrs)) => Ok(crate::rules::reserved_from(nodes, cidrs)),
        (Err(e), _) | (_, Err(e)) => Err(e.as_str()),
    };
    let reserved = reserved.as_ref().map_err(|e| *e);
    for c in &f.clusters {
        checks.extend(judge_cluster(c, f.now, reserved));
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
        if let Some(cluster) = cluster {
            checks.extend(judge_grant(i, cluster, reserved, f));
        }
    }
    checks
}

fn judge_cluster(
    c: &ClusterFacts,
    now: Timestamp,
    reserved: Result<&Reserved, &str>,
) -> Vec<Check> {
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
    checks.push(super::members::judge_resilience(&c.cluster));
    checks.push(super::members::judge_agents(
        &c.cluster,
        &c.agent_leases,
        now,
    ));
    checks.push(match reserved {
        Ok(reserved) => judge_pools(&c.cluster, reserved),
        // No pool overlaps anything: nothing to read.
        Err(_) if c.cluster.spec.address_pools.is_empty() => {
            judge_pools(&c.cluster, &Reserved::default())
        }
        Err(e) => unchecked(
            "addressPools",
            format!("cluster {} address pools", c.cluster.name_any()),
            e,
        ),
    });
    checks
}

/// The instance's virtual IPs and external hostname against what its cluster grants its
/// namespace; nothing when it declares neither.
fn judge_grant(
    i: &InstanceFacts,
    cluster: &FailoverCluster,
    reserved: Result<&Reserved, &str>,
    f: &Facts,
) -> Vec<Check> {
    let fci = &i.instance;
    let vips = !fci.spec.virtual_ips.is_empty();
    if !vips && fci.spec.network_name.external_hostname.is_none() {
        return vec![];
    }
    let subject = format!("instance {} network name", fci.key());
    let labels = match &i.namespace_labels {
        Ok(labels) => labels,
        Err(e) => return vec![unchecked("networkName", subject, e)],
    };
    let reserved = match reserved {
        Ok(r) => r,
        Err(e) if vips => return vec![unchecked("networkName", subject, e)],
        // A hostname alone needs none of the cluster's addresses.
        Err(_) => &Reserved::default(),
    };
    let claims = f.ip_addresses.as_deref().map_err(String::as_str);
    judge_network_name(fci, cluster, labels, reserved, claims)
}

fn judge_instance(
    i: &InstanceFacts,
    cluster: Option<&FailoverCluster>,
    nodes: &[Node],
) -> Vec<Check> {
    let fci = &i.instance;
    let key = fci.key();
    let mut checks = judge_owners(fci, cluster, nodes, i.namespace_labels.as_ref().ok());
    let owner_names = cluster.map(|c| super::eligible_owners(fci, c, nodes));
    let owners = owner_names.as_ref().map_or(0, |o| o.len());
    let owner_nodes: Vec<&Node> = nodes
        .iter()
        .filter(|n| {
            owner_names
                .as_ref()
                .is_some_and(|o| o.contains(&n.name_any()))
        })
        .collect();
    match &i.claims {
        Ok(claims) => {
            for claim in claims {
                checks.extend(judge_claim(fci, claim, owners));
                checks.extend(super::claims::judge_claim_reach(fci, claim, &owner_nodes));
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
pub(super) fn unchecked(check: &'static str, subject: impl Into<String>, error: &str) -> Check {
    Check::warn(
        check,
        subject,
        format!("not checked: {error}"),
        "run validate as someone who may read it (see docs/operations.md)",
    )
}
