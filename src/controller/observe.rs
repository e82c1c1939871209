//! `observe`: reads the reflector stores (never the API) into what `decide` needs.

use std::collections::BTreeMap;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::api::{FailoverCluster, FailoverClusterInstance, INSTANCE_LABEL, InstanceClaim};
use crate::decide::health::OUT_OF_SERVICE_TAINT;
use crate::decide::{
    AttachmentFacts, NodeFacts, NodeHealth, Observed, PodFacts, node_health, required_healthy,
};

/// The controller's read side: one store per kind, fed by watches.
#[derive(Clone)]
pub struct Stores {
    pub instances: Store<FailoverClusterInstance>,
    pub clusters: Store<FailoverCluster>,
    pub nodes: Store<Node>,
    pub leases: Store<Lease>,
    pub pods: Store<Pod>,
    pub claims: Store<PersistentVolumeClaim>,
    pub volumes: Store<PersistentVolume>,
    pub attachments: Store<VolumeAttachment>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
}

pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

pub fn node_facts(node: &Node, lease: Option<&Lease>) -> NodeFacts {
    let spec = node.spec.as_ref();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .and_then(|c| {
            let since = c.last_transition_time.as_ref()?.0;
            Some((c.status == "True", since))
        });
    NodeFacts {
        name: node.name_any(),
        lease_renewed: lease
            .and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
            .map(|t| t.0),
        ready,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        out_of_service: spec
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT)),
    }
}

/// Every member node of `cluster`: what its Node and Lease say, and the verdict on it now.
/// The one place member health is judged, for instances and for the cluster's status alike.
pub fn member_health(
    cluster: &FailoverCluster,
    stores: &Stores,
    now: jiff::Timestamp,
) -> Vec<(NodeFacts, NodeHealth)> {
    let nodes = stores.nodes.state();
    members(cluster, &nodes)
        .into_iter()
        .map(|node| {
            let lease = stores
                .leases
                .get(&ObjectRef::new(&node.name_any()).within(NODE_LEASE_NAMESPACE));
            let facts = node_facts(node, lease.as_deref());
            let health = node_health(&facts, &cluster.spec.heartbeat, now);
            (facts, health)
        })
        .collect()
}

/// Nodes selected by the cluster's node selector.
pub fn members<'a>(cluster: &FailoverCluster, nodes: &'a [std::sync::Arc<Node>]) -> Vec<&'a Node> {
    let selector = &cluster.spec.node_selector;
    nodes
        .iter()
        .map(|n| n.as_ref())
        .filter(|n| {
            let labels = n.labels();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .collect()
}

fn pod_facts(pod: &Pod) -> PodFacts {
    let status = pod.status.as_ref();
    PodFacts {
        name: pod.name_any(),
        node: pod.spec.as_ref().and_then(|s| s.node_name.clone()),
        ready: status
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")),
        ip: status.and_then(|s| s.pod_ip.clone()),
        terminating: pod.metadata.deletion_timestamp.is_some(),
        failed: status.and_then(|s| s.phase.as_deref()) == Some("Failed"),
    }
}

/// The node a volume is pinned to, if its node affinity names exactly one hostname.
fn pinned_node(pv: &PersistentVolume) -> Option<String> {
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

pub fn observe(fci: &FailoverClusterInstance, stores: &Stores, now: jiff::Timestamp) -> Observed {
    let ns = fci.namespace().unwrap_or_default();
    let name = fci.name_any();
    let cluster = stores.clusters.get(&ObjectRef::new(&fci.spec.cluster_ref));
    let mut obs = Observed {
        now,
        cluster_found: cluster.is_some(),
        members: BTreeMap::new(),
        quorum_required: 0,
        fencing: Default::default(),
        pods: Vec::new(),
        attachments: Vec::new(),
        pinned_claims: BTreeMap::new(),
        missing_claims: Vec::new(),
        endpoints: Vec::new(),
        service_current: false,
        higher_priority_starting: false,
        dns_name: format!("{}.{ns}.svc", fci.spec.network_name.name),
    };
    if let Some(cluster) = &cluster {
        obs.members = member_health(cluster, stores, now)
            .into_iter()
            .map(|(facts, health)| (facts.name, health))
            .collect();
        obs.quorum_required =
            required_healthy(&cluster.spec.quorum.min_healthy, obs.members.len() as u32);
        obs.fencing = cluster.spec.fencing.clone();
    }
    obs.pods = stores
        .pods
        .state()
        .iter()
        .filter(|p| {
            p.namespace().as_deref() == Some(&ns) && p.labels().get(INSTANCE_LABEL) == Some(&name)
        })
        .map(|p| pod_facts(p))
        .collect();
    let mut volumes = Vec::new();
    for InstanceClaim {
        claim,
        from_template,
        ..
    } in fci.claims()
    {
        let Some(pvc) = stores.claims.get(&ObjectRef::new(&claim).within(&ns)) else {
            // Claims made from templates are created by the controller as it goes.
            if !from_template {
                obs.missing_claims.push(claim);
            }
            continue;
        };
        let Some(volume) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
            continue;
        };
        if let Some(pv) = stores.volumes.get(&ObjectRef::new(&volume))
            && let Some(node) = pinned_node(&pv)
        {
            obs.pinned_claims.insert(claim, node);
        }
        volumes.push(volume);
    }
    obs.attachments = stores
        .attachments
        .state()
        .iter()
        .filter(|a| {
            a.spec
                .source
                .persistent_volume_name
                .as_ref()
                .is_some_and(|v| volumes.contains(v))
        })
        .map(|a| AttachmentFacts {
            name: a.name_any(),
            node: a.spec.node_name.clone(),
        })
        .collect();
    let net = &fci.spec.network_name.name;
    if let Some(slice) = stores.slices.get(&ObjectRef::new(net).within(&ns)) {
        obs.endpoints = slice
            .endpoints
            .iter()
            .flatten()
            .flat_map(|e| e.addresses.iter().cloned())
            .collect();
    }
    obs.higher_priority_starting = higher_priority_starting(fci, stores, now);
    obs.service_current = stores
        .services
        .get(&ObjectRef::new(net).within(&ns))
        .is_some_and(|svc| {
            svc.annotations().get(super::build::SPEC_HASH_ANNOTATION)
                == Some(&super::build::service_hash(fci))
        });
    obs
}

/// How long an instance of lower priority lets a higher one go first, at most: priority
/// orders the start, it never blocks one instance on another that cannot move.
const PRIORITY_HOLD_SECONDS: i64 = 5;

fn higher_priority_starting(
    fci: &FailoverClusterInstance,
    stores: &Stores,
    now: jiff::Timestamp,
) -> bool {
    let mine = fci.spec.priority;
    let moving = fci.status.as_ref().and_then(|s| s.current_move.as_ref());
    let Some(m) = moving else { return false };
    if now.duration_since(m.started.0) > jiff::SignedDuration::from_secs(PRIORITY_HOLD_SECONDS) {
        return false;
    }
    stores.instances.state().iter().any(|other| {
        other.spec.cluster_ref == fci.spec.cluster_ref
            && other.spec.priority < mine
            && other
                .status
                .as_ref()
                .and_then(|s| s.current_move.as_ref())
                .is_some_and(|om| om.pod_created.is_none() && om.from.is_some())
    })
}
