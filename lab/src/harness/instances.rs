//! What the tests read of an instance, its Events, its pods and its nodes, and the waits on
//! them they all share.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_failover_core::api::{
    FailoverClusterInstance, FailoverClusterInstanceStatus, Phase, condition,
};

use super::{TestNamespace, nodes_and_cluster, wait_for};

impl TestNamespace {
    /// A cluster of `n` fresh nodes named after this namespace (`{name}-c`), so that tests
    /// sharing the control plane never share a cluster; returns its name and its nodes.
    pub async fn cluster(
        &self,
        n: usize,
        cluster_spec: serde_json::Value,
    ) -> (String, Vec<String>) {
        let cluster = format!("{}-c", self.name);
        let nodes = nodes_and_cluster(&self.client, &cluster, n, cluster_spec).await;
        (cluster, nodes)
    }
}

/// The taint the controller puts on a node it fences.
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";

/// The instance's status, or the default while the controller has written none.
pub fn status(i: &FailoverClusterInstance) -> FailoverClusterInstanceStatus {
    i.status.clone().unwrap_or_default()
}

/// Online and settled: no move under way and an endpoint published. Takes what `wait_for`
/// hands its condition.
pub fn is_online(i: Option<&FailoverClusterInstance>) -> bool {
    i.and_then(|i| i.status.as_ref()).is_some_and(|s| {
        s.phase == Phase::Online
            && s.current_move.is_none()
            && s.served.as_ref().is_some_and(|v| v.endpoint.is_some())
    })
}

pub fn owner(i: &FailoverClusterInstance) -> Option<String> {
    i.status.as_ref()?.owner_node.clone()
}

/// The owner of an instance that is Online with no move under way, whether or not its
/// endpoint is published yet.
pub fn online_owner(i: Option<&FailoverClusterInstance>) -> Option<String> {
    let s = i?.status.as_ref()?;
    (s.phase == Phase::Online && s.current_move.is_none())
        .then(|| s.owner_node.clone())
        .flatten()
}

/// A condition for `wait_for`: online (see `is_online`) on `node`.
pub fn online_on(node: String) -> impl Fn(Option<&FailoverClusterInstance>) -> bool {
    move |f| is_online(f) && f.and_then(owner).as_deref() == Some(node.as_str())
}

/// A condition for `wait_for`: a move is under way.
pub fn moving(f: Option<&FailoverClusterInstance>) -> bool {
    f.and_then(|f| f.status.as_ref())
        .is_some_and(|s| s.current_move.is_some())
}

/// A condition for `wait_for`: the instance is in `phase`.
pub fn in_phase(phase: Phase) -> impl Fn(Option<&FailoverClusterInstance>) -> bool {
    move |f| {
        f.and_then(|f| f.status.as_ref())
            .is_some_and(|s| s.phase == phase)
    }
}

/// The reason of the `Online` condition: what the instance waits for when it is not.
pub fn online_reason(i: Option<&FailoverClusterInstance>) -> Option<String> {
    i?.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::ONLINE)
        .map(|c| c.reason.clone())
}

/// The message of the `Online` condition.
pub fn online_message(i: &FailoverClusterInstance) -> Option<String> {
    i.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::ONLINE)
        .map(|c| c.message.clone())
}

pub fn has_oos_taint(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE))
}

/// The addresses the Node `node` reports (`status.addresses`), as the API server has them.
pub async fn node_addresses(client: &Client, node: &str) -> Vec<String> {
    Api::<Node>::all(client.clone())
        .get(node)
        .await
        .expect("read the node")
        .status
        .and_then(|s| s.addresses)
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.address)
        .collect()
}

/// Merge-patches the Node `node`.
pub async fn patch_node(client: &Client, node: &str, patch: serde_json::Value) {
    Api::<Node>::all(client.clone())
        .patch(node, &PatchParams::default(), &Patch::Merge(patch))
        .await
        .unwrap();
}

/// The Events of namespace `ns` (core/v1, where the controller's reasons are readable).
pub async fn events(client: &Client, ns: &str) -> Vec<Event> {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

pub async fn event_reasons(client: &Client, ns: &str) -> Vec<String> {
    events(client, ns)
        .await
        .into_iter()
        .filter_map(|e| e.reason)
        .collect()
}

/// The reasons of the Events of `ns` that are among `wanted`, in the order they were listed.
pub async fn event_reasons_among(client: &Client, ns: &str, wanted: &[&str]) -> Vec<String> {
    event_reasons(client, ns)
        .await
        .into_iter()
        .filter(|r| wanted.contains(&r.as_str()))
        .collect()
}

/// Every pod of `ns` by name, with its UID: a pod replaced under the same name shows.
pub async fn pod_uids(client: &Client, ns: &str) -> BTreeMap<String, String> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.name_any(), p.uid().unwrap()))
        .collect()
}

/// Awaits `cond` on each of the instances `db-0` … `db-{n-1}` in turn (see
/// `super::create_spread_instances`).
pub async fn wait_each_instance<C>(
    fcis: &Api<FailoverClusterInstance>,
    n: usize,
    timeout: Duration,
    what: &str,
    cond: C,
) where
    C: Fn(Option<&FailoverClusterInstance>) -> bool + Clone + Send + 'static,
{
    for i in 0..n {
        wait_for(
            fcis.clone(),
            &format!("db-{i}"),
            timeout,
            what,
            cond.clone(),
        )
        .await;
    }
}

/// Creates the instance `name` of `cluster` in `ns` from the demo's manifest, preferring
/// `preferred` in order and, with `claim`, on that PersistentVolumeClaim.
/// A virtual IP no other instance of this test process was given: an address is served by
/// one instance in the whole (shared) control plane. From 203.0.113.0/24, then
/// 2001:db8::1:0/112, both in the test clusters' pool; tests that name their own addresses
/// use the other ranges.
pub fn fresh_vip() -> String {
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if n < 250 {
        format!("203.0.113.{}", n + 1)
    } else {
        format!("2001:db8::1:{:x}", n)
    }
}

/// An instance as [`crate::demo::instance`] makes it, with a virtual IP of its own
/// ([`fresh_vip`]), created in `ns`.
pub async fn create_instance(
    client: &Client,
    ns: &str,
    name: &str,
    cluster: &str,
    preferred: &[String],
    claim: Option<&str>,
) -> FailoverClusterInstance {
    let mut fci = crate::demo::instance(name, cluster, preferred, claim).unwrap();
    fci.spec.virtual_ips = vec![fresh_vip()];
    Api::<FailoverClusterInstance>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &fci)
        .await
        .unwrap()
}

/// Creates the instance `db` (as [`crate::demo::instance`] makes it) preferring `nodes` in
/// order, and awaits it online on the first.
pub async fn create_db_online(
    fcis: &Api<FailoverClusterInstance>,
    cluster: &str,
    nodes: &[String],
) {
    fcis.create(
        &PostParams::default(),
        &crate::demo::instance("db", cluster, nodes, None).expect("instance db"),
    )
    .await
    .expect("create instance db");
    wait_for(
        fcis.clone(),
        "db",
        Duration::from_secs(90),
        "online on node 0",
        online_on(nodes[0].clone()),
    )
    .await;
}
