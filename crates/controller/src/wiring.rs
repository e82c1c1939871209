//! Wiring: the reflectors that feed the stores, and which instances each watched change
//! wakes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolumeClaim, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{PredicateConfig, WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use kube_failover_core::api::{
    AGENT_LEASE_PREFIX, FailoverCluster, FailoverClusterInstance, INSTANCE_LABEL, MemberState,
    NODE_LEASE_NAMESPACE,
};
use kube_failover_core::kinds::{Attachment, CachedPod, Volume};
use tokio::sync::{Notify, watch};

use super::deadlines::NodeDeadlines;
use super::heartbeats::{self, Clock, Heartbeats};
use super::http_server::Health;
use super::leader::Leadership;
use super::metrics::Metrics;
use super::observe::{Indexes, Stores};
use super::vip_holders::agent_holds;
use super::watches::{
    QuickBackoff, Yields, by_label, kept_digest, key, reflect, reflect_indexed, slim_node,
    slim_pod, stream_from_watch, strip, wait_synced,
};
use super::{Context, FIELD_MANAGER, RunOptions};

/// A reflector's objects as they change.
type Objects<K> = BoxStream<'static, Result<K, watcher::Error>>;

/// Wires the reflectors and triggers; returns the controller and its context.
pub fn build_controller(
    client: Client,
    opts: &RunOptions,
    leader: Leadership,
    metrics: Arc<Metrics>,
) -> (Controller<FailoverClusterInstance>, Arc<Context>) {
    // Every reflector registers in `health.watches`: /healthz reports one that ended.
    let health = Health::default();
    let heartbeats = Heartbeats::new(Clock::default());
    // The cluster status loop's wake-up: Node, cluster and namespace changes, and an instance
    // under another owner, cluster or namespace once the cache shows it (its count is
    // read from the cache: told at the write, the loop could count the instance as it was).
    let cluster_changed = Arc::new(Notify::new());
    let indexes = Indexes::new(cluster_changed.clone());
    let (instances, instance_stream) = reflect_indexed(
        &health.watches,
        "instances",
        scoped::<FailoverClusterInstance>(&client, &opts.namespace),
        watcher::Config::default(),
        Some(indexes.instances.clone()),
        strip,
        Yields::Changes,
    );
    let (stores, owned, state) = reflectors(
        &client,
        &opts.namespace,
        &health,
        &heartbeats,
        (instances, indexes),
    );
    // Lease renewals need no reconcile: thresholds are timers (each reconcile requeues for
    // the moment its owner's Lease would go stale). Revived nodes arrive through Node events.
    // Each renewal is dated the moment it arrives, on this controller's clock.
    tokio::spawn(heartbeats::probe_api(client.clone(), heartbeats));
    let reconcile_all = reconcile_all(&leader, &stores, &health, &cluster_changed);
    let controller = Controller::for_stream(instance_stream, stores.instances.clone())
        .with_config(
            kube::runtime::controller::Config::default().concurrency(opts.concurrent_reconciles),
        )
        .trigger_backoff(QuickBackoff::default());
    let controller = on_owned_objects(controller, &stores, &cluster_changed, owned);
    // Settled instances look again at their owners' deadlines through one timer per node.
    let (deadlines, woken) = NodeDeadlines::start(stores.clone());
    let controller = on_cluster_state(controller, &stores, &cluster_changed, state)
        .reconcile_all_on(reconcile_all)
        .reconcile_on(woken);
    let events = super::events::Events::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(opts.identity.clone()),
        },
    );
    let ctx = Arc::new(Context {
        client,
        namespace: opts.namespace.clone(),
        cluster_changed,
        stores,
        events,
        leader,
        metrics,
        health,
        written: Default::default(),
        service_refused: Default::default(),
        fences: Default::default(),
        fresh_nodes: Default::default(),
        foreign_pods: Default::default(),
        deadlines,
    });
    (controller, ctx)
}

/// An API for `K` in the watched namespace, or in all.
fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// The change streams of what belongs to instances (labelled with theirs).
struct Owned {
    pods: Objects<CachedPod>,
    services: Objects<Service>,
    slices: Objects<EndpointSlice>,
    leases: Objects<Lease>,
}

/// The change streams of the cluster's state that instances depend on.
struct State {
    nodes: Objects<Node>,
    claims: Objects<PersistentVolumeClaim>,
    attachments: Objects<Attachment>,
    clusters: Objects<FailoverCluster>,
    namespaces: Objects<Namespace>,
    ip_addresses: Objects<IPAddress>,
}

/// Every reflector the controller reads, as stores, and their change streams.
fn reflectors(
    client: &Client,
    ns: &Option<String>,
    health: &Health,
    heartbeats: &Heartbeats,
    (instances, indexes): (Store<FailoverClusterInstance>, Indexes),
) -> (Stores, Owned, State) {
    let w = &health.watches;
    let labelled = watcher::Config::default().labels(INSTANCE_LABEL);
    let all = watcher::Config::default;
    let (nodes, node_stream) = reflect_indexed(
        w,
        "nodes",
        Api::<Node>::all(client.clone()),
        all(),
        None,
        slim_node,
        Yields::Changes,
    );
    let (leases, lease_stream) = reflect(
        w,
        "leases",
        Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        all(),
    );
    let (pods, pods_s) = reflect_indexed(
        w,
        "pods",
        scoped::<CachedPod>(client, ns),
        labelled.clone(),
        Some(indexes.pods.clone()),
        slim_pod,
        Yields::Changes,
    );
    let (claims, claims_s) = reflect(w, "claims", scoped(client, ns), all());
    let (volumes, volume_stream) = reflect(w, "volumes", Api::<Volume>::all(client.clone()), all());
    // Volumes are read from the store only; their stream just keeps it fed.
    tokio::spawn(volume_stream.for_each(|_| async {}));
    let (attachments, attachments_s) = reflect_indexed(
        w,
        "attachments",
        Api::<Attachment>::all(client.clone()),
        all(),
        Some(indexes.attachments.clone()),
        strip,
        Yields::Changes,
    );
    let (services, services_s) = reflect(w, "services", scoped(client, ns), labelled.clone());
    let (slices, slices_s) = reflect(w, "slices", scoped(client, ns), labelled);
    let (clusters, clusters_s) = reflect(
        w,
        "clusters",
        Api::<FailoverCluster>::all(client.clone()),
        all(),
    );
    // Namespaces, for their labels (a cluster's allowedNamespaces.selector): every one, or
    // only the watched one (what the chart's namespaced RBAC grants, by name).
    let namespace_config = match ns {
        Some(ns) => all().fields(&format!("metadata.name={ns}")),
        None => all(),
    };
    let (namespaces, namespaces_s) = reflect(
        w,
        "namespaces",
        Api::<Namespace>::all(client.clone()),
        namespace_config,
    );
    let (service_cidrs, service_cidrs_s) = reflect(
        w,
        "servicecidrs",
        Api::<ServiceCIDR>::all(client.clone()),
        all(),
    );
    // Service ranges are read from the store only.
    tokio::spawn(service_cidrs_s.for_each(|_| async {}));
    // A claim deleted wakes the instances that declare its address (see `on_cluster_state`).
    let (ip_addresses, ip_addresses_s) = reflect_indexed(
        w,
        "ipaddresses",
        Api::<IPAddress>::all(client.clone()),
        all(),
        Some(indexes.ip_addresses.clone()),
        strip,
        Yields::ChangesAndDeletions,
    );
    let stores = Stores {
        instances,
        clusters,
        nodes,
        leases,
        pods,
        claims,
        volumes,
        attachments,
        services,
        slices,
        namespaces,
        service_cidrs,
        ip_addresses,
        heartbeats: heartbeats.clone(),
        own: Default::default(),
        indexes,
    };
    let owned = Owned {
        pods: pods_s.boxed(),
        services: services_s.boxed(),
        slices: slices_s.boxed(),
        leases: dated_leases(lease_stream, heartbeats.clone()),
    };
    let state = State {
        nodes: dated_nodes(node_stream, heartbeats.clone()),
        claims: claims_s.boxed(),
        attachments: attachments_s.boxed(),
        clusters: clusters_s.boxed(),
        namespaces: namespaces_s.boxed(),
        ip_addresses: ip_addresses_s.boxed(),
    };
    (stores, owned, state)
}

/// Node changes, each dated on this controller's clock as it arrives.
fn dated_nodes(
    nodes: impl futures::Stream<Item = Result<Node, watcher::Error>> + Send + 'static,
    seen: Heartbeats,
) -> Objects<Node> {
    nodes
        .inspect(move |r| {
            if let Ok(n) = r {
                seen.observe_node(n);
            }
        })
        .boxed()
}

/// Lease renewals, each dated as it arrives; a failing Lease watch is said to the
/// heartbeats, so that no node counts as silent while the controller cannot hear.
fn dated_leases(
    leases: impl futures::Stream<Item = Result<Lease, watcher::Error>> + Send + 'static,
    seen: Heartbeats,
) -> Objects<Lease> {
    leases
        .inspect(move |l| match l {
            Ok(lease) => {
                seen.leases_seen();
                seen.observe_lease(lease);
            }
            Err(_) => seen.leases_unseen(),
        })
        .boxed()
}

/// Everything is reconciled again when the caches have synced (reconciles before that
/// decide nothing) and on becoming leader (standbys decide nothing). The cluster status too:
/// its loop decides nothing before either, and would otherwise wait for the next Node or
/// cluster event (up to 30 s) to write the first status.
fn reconcile_all(
    leader: &Leadership,
    stores: &Stores,
    health: &Health,
    cluster_changed: &Arc<Notify>,
) -> impl futures::Stream<Item = ()> + Send + 'static {
    let (reconcile_all_tx, reconcile_all_rx) = watch::channel(());
    let mut leadership = leader.subscribe();
    let on_leadership = reconcile_all_tx.clone();
    let (leader_status, synced_status) = (cluster_changed.clone(), cluster_changed.clone());
    tokio::spawn(async move {
        while leadership.changed().await.is_ok() {
            if *leadership.borrow() {
                let _ = on_leadership.send(());
                leader_status.notify_one();
            }
        }
    });
    let (all_stores, synced) = (stores.clone(), health.synced.clone());
    tokio::spawn(async move {
        wait_synced(&all_stores).await;
        synced.store(true, std::sync::atomic::Ordering::Release);
        tracing::info!("caches synced");
        let _ = reconcile_all_tx.send(());
        synced_status.notify_one();
    });
    stream_from_watch(reconcile_all_rx)
}

/// Instances, as reconcile requests.
fn refs(
    instances: impl IntoIterator<Item = Arc<FailoverClusterInstance>>,
) -> Vec<ObjectRef<FailoverClusterInstance>> {
    instances
        .into_iter()
        .map(|i| ObjectRef::from(i.as_ref()))
        .collect()
}

/// Objects made for an instance wake it, by its label. A node agent's Lease also says
/// which instances' virtual IPs are up on its node: a move waiting for the old owner to
/// release them goes on when it changes. A witness's Lease wakes the cluster status loop
/// (a witness heard again restores the quorum it shows).
fn on_owned_objects(
    controller: Controller<FailoverClusterInstance>,
    stores: &Stores,
    cluster_changed: &Arc<Notify>,
    s: Owned,
) -> Controller<FailoverClusterInstance> {
    let on_agent_lease = stores.clone();
    let holdings = Holdings::default();
    let (clusters, witness_renewed) = (stores.clusters.clone(), cluster_changed.clone());
    controller
        .watches_stream(s.pods, |p: CachedPod| by_label(p.namespace(), p.labels()))
        .watches_stream(s.services, |s: Service| by_label(s.namespace(), s.labels()))
        .watches_stream(s.slices, |s: EndpointSlice| {
            by_label(s.namespace(), s.labels())
        })
        .watches_stream(s.leases, move |l: Lease| {
            let name = l.name_any();
            if is_witness(&clusters, &name) {
                witness_renewed.notify_one();
            }
            if !name.starts_with(AGENT_LEASE_PREFIX) {
                return Vec::new();
            }
            // The instances whose virtual IPs the agent's holdings decide: those moving, and
            // those it took up or let go since its last renewal (a settled owner's are
            // withheld while another node's agent says it holds them).
            let mut woken = refs(on_agent_lease.instances_under(key::MOVING_AGENT_VIPS));
            woken.extend(
                holdings
                    .changed(&name, agent_holds(&l))
                    .iter()
                    .filter_map(|held| {
                        let (ns, name) = held.split_once('/')?;
                        Some(ObjectRef::<FailoverClusterInstance>::new(name).within(ns))
                    }),
            );
            woken
        })
}

/// What each agent's Lease last said it holds, to tell the instances it took up or let go.
#[derive(Default)]
struct Holdings(std::sync::Mutex<std::collections::HashMap<String, Vec<String>>>);

impl Holdings {
    /// The instances (`namespace/name`) in `now` or in what the Lease `lease` said before, but
    /// not in both.
    fn changed(&self, lease: &str, mut now: Vec<String>) -> Vec<String> {
        now.sort();
        now.dedup();
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let before = all.get(lease).cloned().unwrap_or_default();
        if before == now {
            return Vec::new();
        }
        let changed = before
            .iter()
            .filter(|k| !now.contains(k))
            .chain(now.iter().filter(|k| !before.contains(k)))
            .cloned()
            .collect();
        if now.is_empty() {
            all.remove(lease);
        } else {
            all.insert(lease.to_string(), now);
        }
        changed
    }
}

/// Whether the Lease `name` in `kube-node-lease` gives a cluster's witness vote.
fn is_witness(clusters: &Store<FailoverCluster>, name: &str) -> bool {
    clusters.state().iter().any(|c| {
        c.spec
            .quorum
            .witness
            .as_ref()
            .is_some_and(|w| w.lease.as_deref() == Some(name) || w.node.as_deref() == Some(name))
    })
}

/// Changes of the cluster's state wake the instances they concern, and Node, cluster and
/// namespace changes the cluster status loop too.
fn on_cluster_state(
    controller: Controller<FailoverClusterInstance>,
    stores: &Stores,
    cluster_changed: &Arc<Notify>,
    s: State,
) -> Controller<FailoverClusterInstance> {
    let on_address = stores.clone();
    let read_by_instances = ReadByInstances::default();
    let members_up = MembersUp::default();
    let (on_node, on_claim, on_attachment, on_cluster, on_namespace) = (
        stores.clone(),
        stores.clone(),
        stores.clone(),
        stores.clone(),
        stores.clone(),
    );
    let (node_changed, spec_changed, namespace_changed) = (
        cluster_changed.clone(),
        cluster_changed.clone(),
        cluster_changed.clone(),
    );
    // A Node whose kubelet only reported its status again (every few minutes on each node,
    // with nothing changed) wakes nothing: only a change of what the store keeps does.
    let nodes = s
        .nodes
        .predicate_filter(kept_digest::<Node>, PredicateConfig::default());
    controller
        .watches_stream(nodes, move |n: Node| {
            node_changed.notify_one();
            let name = n.name_any();
            let mut woken = refs(on_node.instances_under(&key::owner(&name)));
            woken.extend(refs(on_node.instances_under(key::UNSETTLED)));
            // A node back up (its taint lifted, Ready again) takes back what prefers it.
            woken.extend(refs(on_node.instances_under(&key::failback(&name))));
            woken
        })
        .watches_stream(s.claims, move |c: PersistentVolumeClaim| {
            let ns = c.namespace().unwrap_or_default();
            refs(on_claim.instances_under(&key::claim(&ns, &c.name_any())))
        })
        // An attachment wakes the moving instances that mount its volume's claim; one whose
        // volume or claim is not known, every moving instance.
        .watches_stream(s.attachments, move |a: Attachment| {
            let claim = a
                .spec
                .source
                .persistent_volume_name
                .as_ref()
                .and_then(|v| on_attachment.volumes.get(&ObjectRef::new(v)))
                .and_then(|pv| pv.spec.as_ref()?.claim_ref.clone())
                .and_then(|c| Some((c.namespace?, c.name?)));
            let concerned = match claim {
                Some((ns, name)) => on_attachment.instances_under(&key::claim(&ns, &name)),
                None => on_attachment.instances_under(key::MOVING),
            };
            refs(
                concerned
                    .into_iter()
                    .filter(|i| i.status.as_ref().is_some_and(|s| s.current_move.is_some())),
            )
        })
        .watches_stream(s.clusters, move |c: FailoverCluster| {
            // Its spec may have changed what its status says (members, tenancy).
            spec_changed.notify_one();
            // Its instances read its spec and its quarantines only: the rest of its status,
            // written by this controller at each change of a member or an instance, would
            // otherwise wake every instance of the cluster each time.
            let name = c.name_any();
            // A member that came up (back from silence, unfenced, uncordoned), as the
            // cluster's status judges it from the Leases: what would move to it, to fail back
            // or to leave a node it shares with an instance of its anti-affinity class. A
            // node back from silence alone changes no Node object.
            let came_up = members_up.came_up(&c);
            let mut woken = Vec::new();
            for node in &came_up {
                woken.extend(refs(on_cluster.instances_under(&key::failback(node))));
            }
            if !came_up.is_empty() {
                woken.extend(refs(on_cluster.instances_under(&key::classed(&name))));
            }
            if read_by_instances.changed(&c) {
                woken.extend(refs(on_cluster.instances_under(&key::cluster(&name))));
            }
            woken
        })
        // A namespace relabelled may gain or lose the right to use a cluster.
        .watches_stream(s.namespaces, move |n: Namespace| {
            namespace_changed.notify_one();
            refs(on_namespace.instances_under(&key::namespace(&n.name_any())))
        })
        // A claim made or let go (deleted: this stream yields deletions too): every instance
        // that declares its address (a loser gets it when the holder lets it go).
        .watches_stream(s.ip_addresses, move |a: IPAddress| {
            refs(on_address.instances_under(&key::address(&a.name_any())))
        })
}

/// The members each cluster's status shows Up, to tell which came up since it was last
/// seen.
#[derive(Default)]
struct MembersUp(std::sync::Mutex<HashMap<String, HashSet<String>>>);

impl MembersUp {
    /// The members of `cluster` Up now that were not when it was last seen (none the first
    /// time it is seen: at start every instance is decided anyway).
    fn came_up(&self, cluster: &FailoverCluster) -> Vec<String> {
        let up: HashSet<String> = cluster
            .status
            .iter()
            .flat_map(|s| &s.members)
            .filter(|m| m.state == MemberState::Up)
            .map(|m| m.name.clone())
            .collect();
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut came: Vec<String> = match seen.get(&cluster.name_any()) {
            None => Vec::new(),
            Some(before) => up.difference(before).cloned().collect(),
        };
        came.sort();
        seen.insert(cluster.name_any(), up);
        came
    }
}

/// What the instances of each cluster read of it (its identity, its spec's generation, its
/// quarantines), as a digest per cluster, to tell a change they must see from one of the
/// rest of the status.
#[derive(Default)]
struct ReadByInstances(std::sync::Mutex<HashMap<String, u64>>);

impl ReadByInstances {
    /// Whether what the instances read of `cluster` changed since it was last seen (a
    /// cluster seen for the first time has changed).
    fn changed(&self, cluster: &FailoverCluster) -> bool {
        use std::hash::{Hash, Hasher};
        let mut digest = std::hash::DefaultHasher::new();
        cluster.metadata.uid.hash(&mut digest);
        cluster.metadata.generation.hash(&mut digest);
        for m in cluster.status.iter().flat_map(|s| &s.members) {
            if let Some(q) = &m.quarantine {
                (&m.name, q.until.0).hash(&mut digest);
            }
        }
        let digest = digest.finish();
        let mut seen = self.0.lock().unwrap_or_else(|p| p.into_inner());
        seen.insert(cluster.name_any(), digest) != Some(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_that_turns_up_is_told_once() {
        let cluster = |states: &[(&str, &str)]| -> FailoverCluster {
            let members: Vec<_> = states
                .iter()
                .map(|(n, s)| serde_json::json!({"name": n, "state": s}))
                .collect();
            serde_json::from_value(serde_json::json!({
                "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverCluster",
                "metadata": {"name": "c"},
                "spec": {},
                "status": {"members": members},
            }))
            .unwrap()
        };
        let up = MembersUp::default();
        assert!(
            up.came_up(&cluster(&[("a", "Up"), ("b", "Down")]))
                .is_empty(),
            "first sight"
        );
        assert!(
            up.came_up(&cluster(&[("a", "Up"), ("b", "Down")]))
                .is_empty()
        );
        assert_eq!(
            up.came_up(&cluster(&[("a", "Fenced"), ("b", "Up")])),
            ["b"],
            "back from silence"
        );
        assert_eq!(
            up.came_up(&cluster(&[("a", "Up"), ("b", "Up")])),
            ["a"],
            "unfenced"
        );
        assert!(up.came_up(&cluster(&[("a", "Up"), ("b", "Up")])).is_empty());
        assert_eq!(
            up.came_up(&cluster(&[("a", "Paused"), ("b", "Up")])).len(),
            0
        );
        assert_eq!(
            up.came_up(&cluster(&[("a", "Up"), ("b", "Up")])),
            ["a"],
            "uncordoned"
        );
    }

    #[test]
    fn a_cluster_wakes_its_instances_for_its_spec_and_quarantines_not_the_rest_of_its_status() {
        let mut c: FailoverCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1",
            "kind": "FailoverCluster",
            "metadata": {"name": "c", "uid": "u1", "generation": 1},
            "spec": {},
            "status": {"members": [{"name": "n1", "state": "Up"}]},
        }))
        .unwrap();
        let read = ReadByInstances::default();
        assert!(read.changed(&c), "seen for the first time");
        assert!(!read.changed(&c));
        // A member's state or heartbeat, the quorum, a condition: written by the status
        // loop, read by no instance.
        let status = c.status.as_mut().unwrap();
        status.members[0].state = kube_failover_core::api::MemberState::Down;
        status.members[0].instance_count = 7;
        assert!(!read.changed(&c));
        c.status.as_mut().unwrap().members[0].quarantine = Some(serde_json::from_value(
            serde_json::json!({"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T01:00:00Z"}),
        ).unwrap());
        assert!(read.changed(&c), "a quarantine");
        c.metadata.generation = Some(2);
        assert!(read.changed(&c), "a new spec");
        c.metadata.uid = Some("u2".into());
        assert!(read.changed(&c), "deleted and made again");
    }

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn an_agents_holdings_wake_what_it_took_up_or_let_go_and_nothing_while_they_stay() {
        let h = Holdings::default();
        assert_eq!(h.changed("a", v(&["ns/db"])), v(&["ns/db"]));
        assert!(h.changed("a", v(&["ns/db"])).is_empty(), "a renewal alone");
        assert_eq!(h.changed("a", v(&["ns/web", "ns/db"])), v(&["ns/web"]));
        assert!(
            h.changed("b", v(&[])).is_empty(),
            "another agent holding nothing"
        );
        assert_eq!(h.changed("a", v(&["ns/web"])), v(&["ns/db"]), "let go");
        assert_eq!(h.changed("a", v(&[])), v(&["ns/web"]));
        assert!(h.0.lock().unwrap().is_empty());
    }
}
