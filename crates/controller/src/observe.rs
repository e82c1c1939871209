//! `observe`: reads the reflector stores (never the API) into what `decide` needs.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolumeClaim, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};
use kube_failover_core::kinds::CachedPod;
use kube_failover_core::kinds::{Attachment, Volume};

use super::heartbeats::{Heartbeats, has_ready_condition, ready_fact, ready_status, renew_time};
use super::index::Index;
use super::own_writes::OwnWrites;
use super::vip_holders::vip_holders;
use super::watches::key;
use kube_failover_core::api::{
    FENCED_AT_ANNOTATION, FailoverCluster, FailoverClusterInstance, INSTANCE_LABEL,
    PEER_GROUPS_ANNOTATION, WORKLOADS_STOPPED_ANNOTATION, agent_lease_name,
};
use kube_failover_core::decide::health::OUT_OF_SERVICE_TAINT;
use kube_failover_core::decide::quorum::{WitnessFacts, WitnessVote, judge_witness, non_voting};
use kube_failover_core::decide::{
    AgentFacts, NodeFacts, NodeHealth, Observed, Shared, node_health, required_healthy,
};
use kube_failover_core::rules::{controlled_by, is_member, kubelet_lease_stale_seconds};

/// The controller's read side: one store per kind, fed by watches.
#[derive(Clone)]
pub struct Stores {
    pub instances: Store<FailoverClusterInstance>,
    pub clusters: Store<FailoverCluster>,
    pub nodes: Store<Node>,
    pub leases: Store<Lease>,
    pub pods: Store<CachedPod>,
    pub claims: Store<PersistentVolumeClaim>,
    pub volumes: Store<Volume>,
    pub attachments: Store<Attachment>,
    pub services: Store<Service>,
    pub slices: Store<EndpointSlice>,
    /// Namespaces (metadata only): their labels decide which clusters they may use.
    pub namespaces: Store<Namespace>,
    /// The cluster's Service ranges: never a virtual IP.
    pub service_cidrs: Store<k8s_openapi::api::networking::v1::ServiceCIDR>,
    /// Every `IPAddress`: the claims on virtual IPs, and the Service allocator's.
    pub ip_addresses: Store<k8s_openapi::api::networking::v1::IPAddress>,
    /// When each node's heartbeats were seen, on this controller's clock.
    pub heartbeats: Heartbeats,
    /// What this replica's writes returned that the caches may not show yet.
    pub own: OwnWrites,
    pub indexes: Indexes,
}

impl Stores {
    /// The Node `name`: the cache's, or this replica's last write of it if the cache is
    /// behind.
    pub fn node(&self, name: &str) -> Option<std::sync::Arc<Node>> {
        self.own.node(self.nodes.get(&ObjectRef::new(name)))
    }

    /// Every Node, each as [`Stores::node`] gives it.
    pub fn nodes_now(&self) -> Vec<std::sync::Arc<Node>> {
        self.own.nodes(self.nodes.state())
    }

    /// The EndpointSlice `namespace/name`: the cache's, or this replica's last write of it
    /// if the cache is behind.
    pub fn slice(&self, namespace: &str, name: &str) -> Option<std::sync::Arc<EndpointSlice>> {
        self.own.slice(
            &format!("{namespace}/{name}"),
            self.slices.get(&ObjectRef::new(name).within(namespace)),
        )
    }

    /// The pods labelled for the instance `namespace/name` as they are now (see
    /// `OwnWrites::pods`).
    pub fn pods_of(&self, namespace: &str, name: &str) -> Vec<std::sync::Arc<CachedPod>> {
        let cached = self
            .indexes
            .pods
            .get(&key::instance(namespace, name), &self.pods);
        self.own.pods(cached, |p| {
            p.namespace().as_deref() == Some(namespace)
                && p.labels().get(INSTANCE_LABEL).map(String::as_str) == Some(name)
        })
    }

    /// The instances the index files under `key` (see `watches::key`).
    pub fn instances_under(&self, key: &str) -> Vec<std::sync::Arc<FailoverClusterInstance>> {
        self.indexes.instances.get(key, &self.instances)
    }

    /// The attachments of the PersistentVolume `volume`, but those this replica deleted for
    /// good.
    pub fn attachments_of(&self, volume: &str) -> Vec<std::sync::Arc<Attachment>> {
        self.indexes
            .attachments
            .get(volume, &self.attachments)
            .into_iter()
            .filter(|a| !self.own.is_gone(a.metadata.uid.as_deref()))
            .collect()
    }
}

/// The indexes over the stores (see `index`, and `watches::key` for their keys).
#[derive(Clone)]
pub struct Indexes {
    pub instances: Index<FailoverClusterInstance>,
    pub pods: Index<CachedPod>,
    pub attachments: Index<Attachment>,
    /// Address claims, by the instance that made them.
    pub ip_addresses: Index<k8s_openapi::api::networking::v1::IPAddress>,
}

impl Indexes {
    /// The indexes; `rekeyed` is told each time an instance comes under other keys (made or
    /// deleted, or another owner, cluster, namespace or phase key): among them every change
    /// the clusters' status counts.
    pub fn new(rekeyed: std::sync::Arc<tokio::sync::Notify>) -> Self {
        Self {
            instances: Index::new(super::watches::instance_keys).notifying(rekeyed),
            pods: Index::new(super::watches::pod_keys),
            attachments: Index::new(super::watches::attachment_keys),
            ip_addresses: Index::new(super::watches::claim_keys),
        }
    }
}

use kube_failover_core::api::NODE_LEASE_NAMESPACE;

pub use kube_failover_core::api::SELF_FENCE_ANNOTATION;

/// The Leases that carry a node's heartbeats: its kubelet's and, where kube-failover's node
/// agent runs, the agent's.
pub struct NodeLeases {
    pub kubelet: Option<std::sync::Arc<Lease>>,
    pub agent: Option<std::sync::Arc<Lease>>,
}

impl NodeLeases {
    pub fn of(node: &str, stores: &Stores) -> Self {
        let get = |name: &str| {
            stores
                .leases
                .get(&ObjectRef::new(name).within(NODE_LEASE_NAMESPACE))
        };
        Self {
            kubelet: get(node),
            agent: get(&agent_lease_name(node)),
        }
    }
}

/// `kube-failover.io/self-fence-seconds`, a decimal number of seconds, to the millisecond
/// (rounded up: the wait must not be shorter than announced).
pub(crate) fn self_fence_of(
    annotations: &BTreeMap<String, String>,
) -> Option<jiff::SignedDuration> {
    let seconds: f64 = annotations
        .get(SELF_FENCE_ANNOTATION)?
        .trim()
        .parse()
        .ok()?;
    (seconds.is_finite() && (0.0..=86_400.0).contains(&seconds))
        .then(|| jiff::SignedDuration::from_millis((seconds * 1000.0).ceil() as i64))
}

/// What the controller knows of a node, every time on its own clock (see `heartbeats`):
/// its kubelet's Lease and, where kube-failover's agent runs, the agent's.
pub fn node_facts(node: &Node, leases: &NodeLeases, heartbeats: &Heartbeats) -> NodeFacts {
    let name = node.name_any();
    let spec = node.spec.as_ref();
    let status = ready_status(node);
    let since = heartbeats.ready(&name, status);
    let kubelet_renew = leases.kubelet.as_ref().and_then(|l| renew_time(l));
    let lease_renewed = leases
        .kubelet
        .as_ref()
        .map(|l| heartbeats.lease(&name, renew_time(l)));
    let agent = leases.agent.as_ref().map(|l| AgentFacts {
        renewed: heartbeats.lease(&l.name_any(), renew_time(l)),
        self_fence: self_fence_of(l.annotations()),
        stopped_workloads: workloads_stopped_since(l).is_some_and(|t| Some(t) == kubelet_renew),
        steady_since: heartbeats.steady_since(l),
        peer_groups: peer_groups_of(l.annotations()),
    });
    let ready = ready_fact(
        status,
        has_ready_condition(node),
        lease_renewed.is_some() || agent.is_some(),
    )
    .map(|r| (r, since));
    NodeFacts {
        lease_renewed,
        agent,
        ready,
        unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
        out_of_service: spec
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT)),
        fenced_by_controller: node.annotations().contains_key(FENCED_AT_ANNOTATION),
        fenced_at: node
            .annotations()
            .get(FENCED_AT_ANNOTATION)
            .and_then(|v| v.parse().ok()),
        self_fence: self_fence_of(node.annotations()),
        name,
    }
}

/// The peer groups an agent names on its Lease ([`PEER_GROUPS_ANNOTATION`]); none if it names
/// none, or what it says cannot be read.
pub(crate) fn peer_groups_of(
    annotations: &BTreeMap<String, String>,
) -> Vec<kube_failover_core::api::PeerGroup> {
    annotations
        .get(PEER_GROUPS_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// The kubelet Lease renewal since which an agent says it has stopped the instance
/// workloads of its node ([`WORKLOADS_STOPPED_ANNOTATION`] on its Lease).
pub(crate) fn workloads_stopped_since(agent_lease: &Lease) -> Option<jiff::Timestamp> {
    agent_lease
        .annotations()
        .get(WORKLOADS_STOPPED_ANNOTATION)?
        .parse()
        .ok()
}

/// The health of the node `name` now, member or not; `None` when there is no such Node.
pub fn node_health_of(
    name: &str,
    cluster: &FailoverCluster,
    stores: &Stores,
    now: jiff::Timestamp,
) -> Option<NodeHealth> {
    let node = stores.node(name)?;
    let leases = NodeLeases::of(name, stores);
    let facts = node_facts(&node, &leases, &stores.heartbeats);
    Some(node_health(&facts, &heartbeat_of(cluster, &node), now))
}

/// The site of `node` in `cluster`, if the cluster has sites and the node the site label.
pub fn site_of(cluster: &FailoverCluster, node: &Node) -> Option<String> {
    let sites = cluster.spec.sites.as_ref()?;
    node.labels().get(&sites.label).cloned()
}

/// The heartbeat settings that judge `node` in `cluster`: the cross-site threshold for a
/// member outside the control plane's site.
fn heartbeat_of(cluster: &FailoverCluster, node: &Node) -> kube_failover_core::api::Heartbeat {
    match &cluster.spec.sites {
        Some(sites) => {
            sites.heartbeat_for(&cluster.spec.heartbeat, site_of(cluster, node).as_deref())
        }
        None => cluster.spec.heartbeat.clone(),
    }
}

/// Every member node of `cluster`: what its Node and Leases say, and the verdict on it now.
/// The one place member health is judged, for instances and for the cluster's status alike.
pub fn member_health(
    cluster: &FailoverCluster,
    stores: &Stores,
    now: jiff::Timestamp,
) -> Vec<(NodeFacts, NodeHealth)> {
    let nodes = stores.nodes_now();
    members(cluster, &nodes)
        .into_iter()
        .map(|node| {
            let leases = NodeLeases::of(&node.name_any(), stores);
            let facts = node_facts(node, &leases, &stores.heartbeats);
            let health = node_health(&facts, &heartbeat_of(cluster, node), now);
            (facts, health)
        })
        .collect()
}

/// The cluster's witness vote now, if it names a witness (see `decide::quorum`).
pub fn witness_vote(
    cluster: &FailoverCluster,
    members: &[(NodeFacts, NodeHealth)],
    stores: &Stores,
    now: jiff::Timestamp,
) -> Option<WitnessVote> {
    let witness = cluster.spec.quorum.witness.as_ref()?;
    let hb = &cluster.spec.heartbeat;
    let non_voting = &cluster.spec.quorum.non_voting_nodes;
    let mut facts = WitnessFacts::default();
    let lease_facts = |name: &str, facts: &mut WitnessFacts| {
        if let Some(lease) = stores
            .leases
            .get(&ObjectRef::new(name).within(NODE_LEASE_NAMESPACE))
        {
            facts.renewed = Some(stores.heartbeats.lease(name, renew_time(&lease)));
            facts.steady_since = stores.heartbeats.steady_since(&lease);
        }
    };
    let stale_seconds = if let Some(node) = &witness.node {
        facts.is_member = members.iter().any(|(f, _)| &f.name == node);
        lease_facts(node, &mut facts);
        kubelet_lease_stale_seconds(hb)
    } else if let Some(lease) = &witness.lease {
        lease_facts(lease, &mut facts);
        hb.lease_stale_seconds
    } else {
        facts.renewed = stores.heartbeats.in_sight_since();
        facts.steady_since = facts.renewed;
        facts.members_without_self_fence = members
            .iter()
            .filter(|(f, _)| !non_voting.contains(&f.name))
            .filter(|(f, _)| f.agent.as_ref().and_then(|a| a.self_fence).is_none())
            .map(|(f, _)| f.name.clone())
            .collect();
        hb.lease_stale_seconds
    };
    let stale = jiff::SignedDuration::from_secs(i64::from(stale_seconds));
    Some(judge_witness(witness, &facts, stale, now))
}

/// Nodes selected by the cluster's node selector, control-plane nodes only when it selects
/// them explicitly.
pub fn members<'a>(cluster: &FailoverCluster, nodes: &'a [std::sync::Arc<Node>]) -> Vec<&'a Node> {
    nodes
        .iter()
        .map(|n| n.as_ref())
        .filter(|n| is_member(&cluster.spec.node_selector, n.labels()))
        .collect()
}

use kube_failover_core::decide::facts::pod_facts;

/// The pods in the instance's namespace that carry its label (`kube-failover.io/instance`),
/// told apart by who controls them.
pub struct LabelledPods<'a> {
    /// Those the instance controls (`rules::controlled_by`): the only pods any decision
    /// counts, deletes or waits for.
    pub own: Vec<&'a CachedPod>,
    /// The others. Anyone who may create a pod in the namespace can set the label; such a
    /// pod is ignored, and reported once (`foreign_pods`).
    pub foreign: Vec<&'a CachedPod>,
}

/// The pods among `pods` labelled for `fci`, its own apart from the foreign ones.
pub fn labelled_pods<'a>(
    fci: &FailoverClusterInstance,
    pods: &'a [std::sync::Arc<CachedPod>],
) -> LabelledPods<'a> {
    let ns = fci.namespace();
    let name = fci.name_any();
    let (own, foreign) = pods
        .iter()
        .map(|p| p.as_ref())
        .filter(|p| p.namespace() == ns && p.labels().get(INSTANCE_LABEL) == Some(&name))
        .partition(|p| controlled_by(&p.metadata, fci));
    LabelledPods { own, foreign }
}

pub use kube_failover_core::decide::facts::requests;

/// Everything `decide` needs of one instance, from the caches.
pub fn observe(fci: &FailoverClusterInstance, stores: &Stores, now: jiff::Timestamp) -> Observed {
    let cluster = stores.clusters.get(&ObjectRef::new(&fci.spec.cluster_ref));
    let view = cluster.as_deref().map(|c| ClusterView::of(c, stores, now));
    observe_in(fci, stores, now, view.as_ref())
}

/// What every instance of a cluster observes of the cluster itself at one moment: its
/// members' health, the witness, the quorum, quarantines and sites. Made once and shared
/// by all the instances observed at that moment (see [`Shared`]): at 1,000 members, a copy
/// per instance is what would grow with instances × members.
#[derive(Clone)]
pub struct ClusterView {
    now: jiff::Timestamp,
    members: Shared<BTreeMap<String, NodeHealth>>,
    witness: Option<WitnessVote>,
    non_voting: BTreeSet<String>,
    quarantined: Shared<BTreeMap<String, jiff::Timestamp>>,
    sites: Shared<BTreeMap<String, String>>,
    quorum_required: u32,
}

impl ClusterView {
    pub fn of(cluster: &FailoverCluster, stores: &Stores, now: jiff::Timestamp) -> Self {
        let members = member_health(cluster, stores, now);
        let witness = witness_vote(cluster, &members, stores, now);
        let sites = match cluster.spec.sites {
            Some(_) => members
                .iter()
                .filter_map(|(facts, _)| {
                    let node = stores.node(&facts.name)?;
                    Some((facts.name.clone(), site_of(cluster, &node)?))
                })
                .collect(),
            None => Shared::default(),
        };
        let members: Shared<BTreeMap<String, NodeHealth>> = members
            .into_iter()
            .map(|(facts, health)| (facts.name, health))
            .collect();
        let non_voting = non_voting(&cluster.spec.quorum);
        let total = kube_failover_core::decide::quorum::count_votes(
            members.iter().map(|(n, h)| (n.as_str(), h.state)),
            &non_voting,
            witness.as_ref(),
            &cluster.spec.quorum.min_healthy,
        )
        .total;
        Self {
            now,
            quorum_required: required_healthy(&cluster.spec.quorum.min_healthy, total),
            quarantined: cluster
                .status
                .as_ref()
                .map(|s| kube_failover_core::decide::quarantine::quarantined(&s.members, now))
                .unwrap_or_default()
                .into(),
            members,
            witness,
            non_voting,
            sites,
        }
    }
}

/// [`observe`], with the cluster's side already made (`view`, made at `now`; `None` when
/// the instance's cluster does not exist).
pub fn observe_in(
    fci: &FailoverClusterInstance,
    stores: &Stores,
    now: jiff::Timestamp,
    view: Option<&ClusterView>,
) -> Observed {
    let ns = fci.namespace().unwrap_or_default();
    let name = fci.name_any();
    let cluster = stores.clusters.get(&ObjectRef::new(&fci.spec.cluster_ref));
    debug_assert!(view.is_none_or(|v| v.now == now));
    let mut obs = Observed {
        now,
        cluster_found: cluster.is_some(),
        namespace_allowed: false,
        members: Shared::default(),
        quorum_required: 0,
        non_voting: BTreeSet::new(),
        witness: None,
        fencing: Default::default(),
        pods: Vec::new(),
        attachments: Vec::new(),
        pinned_claims: BTreeMap::new(),
        missing_claims: Vec::new(),
        unreachable: BTreeMap::new(),
        sites: Shared::default(),
        dependencies_pending: None,
        quarantined: Shared::default(),
        outside: BTreeMap::new(),
        endpoints: Vec::new(),
        endpoint_slice_taken: false,
        service_current: false,
        service_taken: false,
        network_withheld: Vec::new(),
        addresses_to_claim: Vec::new(),
        addresses_to_release: Vec::new(),
        service_refused: None,
        higher_priority_starting: false,
        neighbours: Default::default(),
        dns_name: format!("{}.{ns}.svc", fci.spec.network_name.name),
        vip_holders: BTreeSet::new(),
        requests: requests(fci.annotations()),
        needs_agent: fci.spec.vip_mode == kube_failover_core::api::VipMode::Agent
            && !fci.spec.virtual_ips.is_empty(),
    };
    if fci.spec.vip_mode == kube_failover_core::api::VipMode::Agent
        && !fci.spec.virtual_ips.is_empty()
    {
        obs.vip_holders = vip_holders(&format!("{ns}/{name}"), stores, cluster.as_deref(), now);
    }
    if let (Some(cluster), Some(view)) = (&cluster, view) {
        observe_cluster(&mut obs, fci, cluster, view, stores);
    }
    let pods = stores.pods_of(&ns, &name);
    obs.pods = labelled_pods(fci, &pods)
        .own
        .into_iter()
        .map(pod_facts)
        .collect();
    observe_storage(&mut obs, fci, stores);
    observe_network_name(&mut obs, fci, stores);
    obs.higher_priority_starting = higher_priority_starting(fci, stores, now);
    obs.dependencies_pending = dependencies_pending(fci, stores);
    // `neighbours` is left to the reconcile, which reads them under the anti-affinity lock
    // from the statuses as last written (`Written`), not only as cached.
    obs
}

/// What keeps `fci` from starting among the instances it depends on (see
/// `decide::facts::dependencies_pending`), from the cache.
pub fn dependencies_pending(
    fci: &FailoverClusterInstance,
    stores: &Stores,
) -> Option<kube_failover_core::decide::Dependencies> {
    let ns = fci.namespace().unwrap_or_default();
    kube_failover_core::decide::facts::dependencies_pending(fci, |name| {
        stores.instances.get(&ObjectRef::new(name).within(&ns))
    })
}

/// The cluster's side: whether it allows the namespace, its members' health and quorum,
/// its fencing, and the health of nodes the instance involves that are no longer members.
fn observe_cluster(
    obs: &mut Observed,
    fci: &FailoverClusterInstance,
    cluster: &FailoverCluster,
    view: &ClusterView,
    stores: &Stores,
) {
    let ns = fci.namespace().unwrap_or_default();
    let labels = namespace_labels(stores, &ns);
    obs.namespace_allowed = cluster.spec.allowed_namespaces.allows(&ns, &labels);
    obs.members = view.members.clone();
    obs.witness = view.witness.clone();
    obs.non_voting = view.non_voting.clone();
    obs.quarantined = view.quarantined.clone();
    obs.sites = view.sites.clone();
    obs.quorum_required = view.quorum_required;
    obs.fencing = cluster.spec.fencing.clone();
    let status = fci.status.as_ref();
    let involved = status.and_then(|s| s.owner_node.clone()).into_iter().chain(
        status
            .and_then(|s| s.current_move.as_ref())
            .into_iter()
            .flat_map(|m| {
                m.from
                    .iter()
                    .chain(m.to.iter())
                    .cloned()
                    .collect::<Vec<_>>()
            }),
    );
    for node in involved {
        if !obs.members.contains_key(&node)
            && let Some(health) = node_health_of(&node, cluster, stores, obs.now)
        {
            obs.outside.insert(node, health);
        }
    }
}

/// The instance's claims (missing ones, ones pinned to a node) and the attachments of their
/// volumes.
fn observe_storage(obs: &mut Observed, fci: &FailoverClusterInstance, stores: &Stores) {
    let ns = fci.namespace().unwrap_or_default();
    kube_failover_core::decide::facts::observe_storage(
        obs,
        fci,
        |claim| stores.claims.get(&ObjectRef::new(claim).within(&ns)),
        |volume| stores.volumes.get(&ObjectRef::new(volume)),
        |node| stores.node(node),
        |volume| stores.attachments_of(volume),
    );
}

/// The network name: the addresses its EndpointSlice publishes, and whether its Service is
/// this instance's and current.
fn observe_network_name(obs: &mut Observed, fci: &FailoverClusterInstance, stores: &Stores) {
    let ns = fci.namespace().unwrap_or_default();
    let net = &fci.spec.network_name.name;
    let service = stores.services.get(&ObjectRef::new(net).within(&ns));
    obs.service_taken = service
        .as_deref()
        .is_some_and(|svc| !super::build::owned_by(&svc.metadata, fci));
    if let Some(slice) = stores.slice(&ns, net) {
        // (The cache holds only slices labelled as the controller's: one that is not the
        // instance's carries a forged label.)
        obs.endpoint_slice_taken = !super::build::owned_by(&slice.metadata, fci);
        if !obs.endpoint_slice_taken {
            obs.endpoints = slice
                .endpoints
                .iter()
                .flatten()
                .flat_map(|e| e.addresses.iter().cloned())
                .collect();
        }
    }
    obs.service_current = service.is_some_and(|svc| {
        svc.annotations().get(super::build::SPEC_HASH_ANNOTATION)
            == Some(&super::build::service_hash(fci))
    });
}

pub use kube_failover_core::rules::neighbours;

/// A namespace's labels, from the cache (none when it is not there).
pub fn namespace_labels(stores: &Stores, namespace: &str) -> BTreeMap<String, String> {
    stores
        .namespaces
        .get(&ObjectRef::new(namespace))
        .map(|n| n.labels().clone())
        .unwrap_or_default()
}

/// How long an instance of lower priority lets a higher one go first, at most: priority
/// orders the start, it never blocks one instance on another that cannot move. A failover
/// waits little (its service is down); a planned move (a drain) may wait for a higher
/// one's graceful stop, which takes up to its pod's grace period.
const PRIORITY_HOLD_SECONDS: i64 = 5;
const PLANNED_PRIORITY_HOLD_SECONDS: i64 = 60;

fn higher_priority_starting(
    fci: &FailoverClusterInstance,
    stores: &Stores,
    now: jiff::Timestamp,
) -> bool {
    let mine = fci.spec.priority;
    let moving = fci.status.as_ref().and_then(|s| s.current_move.as_ref());
    let Some(m) = moving else { return false };
    // Counted from when this instance could start its pod (its old one gone, volumes
    // detached), not from the start of the move: a graceful stop may take longer than the
    // hold, and all the instances of a drained node then become ready to start together.
    let ready = m.volumes_detached.as_ref().unwrap_or(&m.started);
    let hold = if m.planned {
        PLANNED_PRIORITY_HOLD_SECONDS
    } else {
        PRIORITY_HOLD_SECONDS
    };
    if now.duration_since(ready.0) > jiff::SignedDuration::from_secs(hold) {
        return false;
    }
    let starting = stores.instances_under(&key::starting(&fci.spec.cluster_ref));
    starting.iter().any(|other| {
        other.spec.cluster_ref == fci.spec.cluster_ref
            && other.spec.priority < mine
            && other
                .status
                .as_ref()
                .and_then(|s| s.current_move.as_ref())
                .is_some_and(|om| om.pod_created.is_none() && om.from.is_some())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn only_the_pods_the_instance_controls_are_its_own_the_rest_of_its_label_are_foreign() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
        let mut me = fci(
            "a",
            "db",
            "c1",
            serde_json::json!({}),
            serde_json::json!({}),
        );
        me.metadata.uid = Some("u-db".into());
        let made = kube::Resource::controller_owner_ref(&me, &()).unwrap();
        let pod = |ns: &str, name: &str, label: Option<&str>, owner_uid: Option<&str>| {
            let mut p = CachedPod::default();
            p.metadata.namespace = Some(ns.into());
            p.metadata.name = Some(name.into());
            p.metadata.labels = label.map(|l| BTreeMap::from([(INSTANCE_LABEL.into(), l.into())]));
            p.metadata.owner_references = owner_uid.map(|uid| {
                vec![OwnerReference {
                    uid: uid.into(),
                    ..made.clone()
                }]
            });
            std::sync::Arc::new(p)
        };
        let pods = [
            // Made by the controller for this instance.
            pod("a", "db-1", Some("db"), Some("u-db")),
            // The label and nothing more: anyone's.
            pod("a", "db-impostor", Some("db"), None),
            // Made for an earlier instance of the same name.
            pod("a", "db-old", Some("db"), Some("u-old")),
            // Not labelled for this instance, whatever their owner: neither.
            pod("b", "db-1", Some("db"), Some("u-db")),
            pod("a", "web-1", Some("web"), Some("u-db")),
            pod("a", "plain", None, Some("u-db")),
        ];
        let got = labelled_pods(&me, &pods);
        let names = |ps: &[&CachedPod]| ps.iter().map(|p| p.name_any()).collect::<Vec<_>>();
        assert_eq!(names(&got.own), ["db-1"]);
        assert_eq!(names(&got.foreign), ["db-impostor", "db-old"]);
        assert_eq!(got.own[0].namespace().as_deref(), Some("a"));
    }
}
