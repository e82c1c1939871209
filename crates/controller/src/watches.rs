//! The read side's plumbing: reflectors that strip what is never read and report whether
//! they are alive, the wait for every cache to sync, and which instances a change of
//! another kind concerns.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use k8s_openapi::api::core::v1::Node;
use kube_failover_core::kinds::CachedPod;

use super::index::Index;
use super::observe::Stores;
use kube_failover_core::api::{
    FailbackMode, FailoverClusterInstance, INSTANCE_LABEL, Phase, VipMode,
};

pub fn strip<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    obj.meta_mut()
        .annotations
        .as_mut()
        .map(|a| a.remove("kubectl.kubernetes.io/last-applied-configuration"));
}

/// A pod as the controller reads it (`kinds::CachedPod`: its owner, labels and deletion,
/// its node, and its phase, readiness, address and restarts; the rest of its spec and
/// status is never read and never decoded), with only its Ready condition, and that without
/// its words.
pub fn slim_pod(pod: &mut CachedPod) {
    strip(pod);
    if let Some(conditions) = pod.status.as_mut().and_then(|s| s.conditions.as_mut()) {
        conditions.retain(|c| c.type_ == "Ready");
        for c in conditions {
            c.message = None;
            c.reason = None;
        }
    }
}

/// A Node without what is never read and changes on its own: its images (the bulk of a
/// Node), the volumes its kubelet mounts and the attach/detach controller attaches (the
/// controller reads VolumeAttachments), and the times of its conditions (a kubelet moves
/// `lastHeartbeatTime` on at each status report, every few minutes with nothing changed);
/// nor what the kubelet tells of itself and its resources (versions, capacity, endpoints,
/// runtime handlers).
pub fn slim_node(node: &mut Node) {
    strip(node);
    if let Some(status) = node.status.as_mut() {
        status.images = None;
        status.volumes_in_use = None;
        status.volumes_attached = None;
        status.node_info = None;
        status.capacity = None;
        status.allocatable = None;
        status.daemon_endpoints = None;
        status.runtime_handlers = None;
        status.features = None;
        status.config = None;
        for c in status.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
            c.last_transition_time = None;
        }
    }
}

/// A digest of what the store keeps of `obj`, its version aside: an event whose object has
/// the digest of the one before it brings a reader of the store nothing new (for
/// `predicate_filter`: a slimmed Node whose kubelet only reported its status again).
pub fn kept_digest<K: Resource + serde::Serialize + Clone>(obj: &K) -> Option<u64> {
    use std::hash::{Hash, Hasher};
    let mut kept = obj.clone();
    kept.meta_mut().resource_version = None;
    let json = serde_json::to_vec(&kept).ok()?;
    let mut digest = std::hash::DefaultHasher::new();
    json.hash(&mut digest);
    Some(digest.finish())
}

/// How long a watch waits before trying again after an error: from 250 ms, doubling, at
/// most 4 s, and from the start again after a success. The usual policy (up to 30 s, reset
/// after two quiet minutes) kept caches stale for over half a minute after an API server
/// restart, and the controller decides on its caches: a failover would wait that long.
#[derive(Clone, Debug)]
pub struct QuickBackoff {
    next: std::time::Duration,
}

impl QuickBackoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(250);
    const MAX: std::time::Duration = std::time::Duration::from_secs(4);
}

impl Default for QuickBackoff {
    fn default() -> Self {
        Self { next: Self::FIRST }
    }
}

impl Iterator for QuickBackoff {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        let now = self.next;
        self.next = (now * 2).min(Self::MAX);
        Some(now)
    }
}

impl kube::runtime::utils::Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

/// How long a watch may go without completing a list (its first, or a relist after its
/// resourceVersion expired) and without a page of it arriving before /healthz reports it.
/// Generous: a liveness failure restarts the pod, and a restart brings no API server back.
pub const WATCH_STALL_LIMIT: Duration = Duration::from_secs(300);

/// Every watch of this replica and how it is doing, for /healthz.
///
/// A watch is alive while its stream has not ended (nor been dropped: the task polling it
/// ended or panicked) and it is not stuck listing. Errors alone do not make it dead: the
/// watcher retries with backoff, and it reports no successful re-watch, so a watch that
/// failed and then resumed on a quiet resource looks the same as one still failing. An
/// outage long enough for its resourceVersion to expire ends in a relist, which counts.
#[derive(Clone, Default)]
pub struct Watches {
    all: Arc<Mutex<Vec<Arc<WatchState>>>>,
}

struct WatchState {
    name: &'static str,
    epoch: Instant,
    /// Nanoseconds since `epoch` of the start of the list under way or of its last page;
    /// `NOT_LISTING` once the list completed. A watch starts by listing (at `epoch`).
    listing_since: AtomicU64,
    ended: AtomicBool,
    /// Objects changed or deleted since the watch started, its lists aside.
    changes: AtomicU64,
}

const NOT_LISTING: u64 = u64::MAX;

/// One watch at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchView {
    pub name: &'static str,
    /// Its stream ended or was dropped: nothing will update its cache again.
    pub ended: bool,
    /// Listing, with no page since then; `None` when its cache is complete.
    pub listing_since: Option<Instant>,
    /// Objects changed or deleted since it started (what a list brings aside).
    pub changes: u64,
}

impl Watches {
    pub fn views(&self) -> Vec<WatchView> {
        let all = self.all.lock().unwrap_or_else(PoisonError::into_inner);
        all.iter()
            .map(|w| {
                let since = w.listing_since.load(Ordering::Acquire);
                WatchView {
                    name: w.name,
                    ended: w.ended.load(Ordering::Acquire),
                    listing_since: (since != NOT_LISTING)
                        .then(|| w.epoch + Duration::from_nanos(since)),
                    changes: w.changes.load(Ordering::Relaxed),
                }
            })
            .collect()
    }

    /// Passes a watcher's events through, noting under `name` whether it lists and whether
    /// it ended.
    pub fn track<K, S>(
        &self,
        name: &'static str,
        events: S,
    ) -> impl Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static
    where
        S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    {
        let state = Arc::new(WatchState {
            name,
            epoch: Instant::now(),
            listing_since: AtomicU64::new(0),
            ended: AtomicBool::new(false),
            changes: AtomicU64::new(0),
        });
        self.all
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(state.clone());
        Tracked {
            events: Box::pin(events),
            state,
        }
    }
}

struct Tracked<S> {
    events: Pin<Box<S>>,
    state: Arc<WatchState>,
}

impl<K, S> Stream for Tracked<S>
where
    S: Stream<Item = watcher::Result<watcher::Event<K>>>,
{
    type Item = S::Item;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let next = this.events.as_mut().poll_next(cx);
        if let Poll::Ready(item) = &next {
            let w = &this.state;
            let now = || w.epoch.elapsed().as_nanos() as u64;
            match item {
                None => w.ended.store(true, Ordering::Release),
                Some(Ok(watcher::Event::Init)) => {
                    // A relist starts (a retry of a failed one keeps the first start).
                    let _ = w.listing_since.compare_exchange(
                        NOT_LISTING,
                        now(),
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    );
                }
                Some(Ok(watcher::Event::InitApply(_))) => {
                    w.listing_since.store(now(), Ordering::Release);
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    w.listing_since.store(NOT_LISTING, Ordering::Release);
                }
                Some(Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))) => {
                    w.changes.fetch_add(1, Ordering::Relaxed);
                }
                Some(Err(_)) => {}
            }
        }
        next
    }
}

impl<S> Drop for Tracked<S> {
    fn drop(&mut self) {
        self.state.ended.store(true, Ordering::Release);
    }
}

/// A reflector, registered as `name` in `watches`: returns the store and the stream of
/// changed objects (which must be polled).
pub fn reflect<K>(
    watches: &Watches,
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    reflect_indexed(watches, name, api, config, None, strip, Yields::Changes)
}

/// What a reflector's stream yields.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Yields {
    /// Each object created or changed.
    Changes,
    /// Those and each object deleted (its last state), for kinds whose deletion is the
    /// news: an address claim let go frees the address for another instance, and no update
    /// comes before its deletion.
    ChangesAndDeletions,
}

/// [`reflect`], with `index` fed each event right after the store, `slim` leaving out of
/// each object what is never read (at least [`strip`]), and a stream of what `yields` says.
pub fn reflect_indexed<K>(
    watches: &Watches,
    name: &'static str,
    api: Api<K>,
    config: watcher::Config,
    index: Option<Index<K>>,
    slim: fn(&mut K),
    yields: Yields,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let events = watcher(api, config)
        .backoff(QuickBackoff::default())
        .modify(slim)
        .reflect(writer)
        .inspect(move |event| {
            if let (Some(index), Ok(event)) = (&index, event) {
                index.apply(event);
            }
        });
    let tracked = watches.track(name, events);
    let objects = match yields {
        Yields::Changes => tracked.applied_objects(),
        Yields::ChangesAndDeletions => tracked.touched_objects(),
    };
    (reader, objects)
}

pub async fn wait_synced(stores: &Stores) {
    /// `Store::wait_until_ready` wakes only the last of several concurrent waiters (its
    /// readiness is a oneshot channel shared by every clone of the store), and the
    /// Controller itself waits on the store of instances. Waiting again in short slices
    /// re-polls the channel, so this returns even when the wake-up went to the other waiter.
    async fn ready<K>(store: &Store<K>)
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: std::hash::Hash + Eq + Clone,
    {
        while tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready())
            .await
            .is_err()
        {}
    }
    tokio::join!(
        ready(&stores.instances),
        ready(&stores.clusters),
        ready(&stores.nodes),
        ready(&stores.leases),
        ready(&stores.pods),
        ready(&stores.claims),
        ready(&stores.volumes),
        ready(&stores.attachments),
        ready(&stores.services),
        ready(&stores.slices),
        ready(&stores.namespaces),
        ready(&stores.service_cidrs),
        ready(&stores.ip_addresses),
    );
}

pub fn stream_from_watch(rx: watch::Receiver<()>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

/// The keys the indexes file objects under: instances by what wakes them, pods by their
/// instance, attachments by their volume.
pub mod key {
    /// Every instance of the cluster.
    pub fn cluster(name: &str) -> String {
        format!("cluster:{name}")
    }
    /// Instances whose owner is the node.
    pub fn owner(node: &str) -> String {
        format!("owner:{node}")
    }
    /// Instances that would fail back to the node once it is up: their failback allowed
    /// (`failback.mode` not `Never`), not put where they are by an operator, and the node
    /// preferred to their owner. A node back from a failure wakes these too.
    pub fn failback(node: &str) -> String {
        format!("failback:{node}")
    }
    /// Instances of the cluster with an owner that belong to an anti-affinity class: two of
    /// a class may share a node while no free one is up, and a member of the cluster turning
    /// Up (as its status judges it) wakes these, wherever they prefer it in their order.
    pub fn classed(cluster: &str) -> String {
        format!("classed:{cluster}")
    }
    /// Instances any node may concern: without a status, moving, or waiting for a node
    /// (Pending, Offline, Unknown). A node's change wakes these and those it hosts.
    pub const UNSETTLED: &str = "unsettled";
    /// Instances moving.
    pub const MOVING: &str = "moving";
    /// Instances moving that hand their virtual IPs over through the node agents.
    pub const MOVING_AGENT_VIPS: &str = "moving-agent-vips";
    /// Instances of the cluster moving whose new pod is not created yet (they start in order
    /// of priority).
    pub fn starting(cluster: &str) -> String {
        format!("starting:{cluster}")
    }
    /// Instances that mount the claim `namespace/name`: one of their `storage.claims`, or one
    /// they create from their `storage.claimTemplates` (`<instance>-<template>`). A claim
    /// created or bound after the instance then wakes it at once.
    pub fn claim(namespace: &str, name: &str) -> String {
        format!("claim:{namespace}/{name}")
    }
    /// Instances of the namespace.
    pub fn namespace(name: &str) -> String {
        format!("namespace:{name}")
    }
    /// Instances that declare the virtual IP (in canonical form).
    pub fn address(address: &str) -> String {
        format!("address:{address}")
    }
    /// Pods labelled for the instance `namespace/name`.
    pub fn instance(namespace: &str, name: &str) -> String {
        format!("{namespace}/{name}")
    }
}

/// Where an instance is filed in the instances' index (see [`key`]).
pub fn instance_keys(fci: &FailoverClusterInstance) -> Vec<String> {
    let ns = fci.namespace().unwrap_or_default();
    let status = fci.status.as_ref();
    let moving = status.and_then(|s| s.current_move.as_ref());
    let mut keys = vec![key::cluster(&fci.spec.cluster_ref), key::namespace(&ns)];
    if let Some(s) = status
        && let Some(owner) = s.owner_node.as_deref()
    {
        keys.push(key::owner(owner));
        if !fci.spec.anti_affinity_classes.is_empty() {
            keys.push(key::classed(&fci.spec.cluster_ref));
        }
        if fci.spec.failback.mode != FailbackMode::Never && !s.moved_by_operator {
            keys.extend(
                fci.spec
                    .owners
                    .preferred
                    .iter()
                    .take_while(|n| *n != owner)
                    .map(|n| key::failback(n)),
            );
        }
    }
    if status.is_none()
        || moving.is_some()
        || status
            .is_some_and(|s| matches!(s.phase, Phase::Pending | Phase::Offline | Phase::Unknown))
    {
        keys.push(key::UNSETTLED.into());
    }
    if let Some(m) = moving {
        keys.push(key::MOVING.into());
        if fci.spec.vip_mode == VipMode::Agent {
            keys.push(key::MOVING_AGENT_VIPS.into());
        }
        if m.pod_created.is_none() && m.from.is_some() {
            keys.push(key::starting(&fci.spec.cluster_ref));
        }
    }
    keys.extend(fci.claims().into_iter().map(|c| key::claim(&ns, &c.claim)));
    keys.extend(
        fci.spec
            .virtual_ips
            .iter()
            .filter_map(|v| super::network::canonical(v))
            .map(|a| key::address(&a)),
    );
    keys.sort();
    keys.dedup();
    keys
}

/// Where a pod is filed: under the instance its label names.
pub fn pod_keys(pod: &CachedPod) -> Vec<String> {
    pod.labels()
        .get(INSTANCE_LABEL)
        .map(|name| key::instance(&pod.namespace().unwrap_or_default(), name))
        .into_iter()
        .collect()
}

/// Where an attachment is filed: under its PersistentVolume's name.
pub fn attachment_keys(a: &kube_failover_core::kinds::Attachment) -> Vec<String> {
    a.spec
        .source
        .persistent_volume_name
        .clone()
        .into_iter()
        .collect()
}

/// Where an address claim is filed: under the instance that claims it, if one does (the
/// Service allocator's are filed nowhere).
pub fn claim_keys(a: &k8s_openapi::api::networking::v1::IPAddress) -> Vec<String> {
    let p = &a.spec.parent_ref;
    (p.group.as_deref() == Some(kube_failover_core::rules::CLAIM_PARENT_GROUP)
        && p.resource == kube_failover_core::rules::CLAIM_PARENT_RESOURCE)
        .then(|| key::instance(p.namespace.as_deref().unwrap_or_default(), &p.name))
        .into_iter()
        .collect()
}

/// The instance named by an object's instance label, in the object's namespace.
pub fn by_label(
    obj_ns: Option<String>,
    labels: &BTreeMap<String, String>,
) -> Option<ObjectRef<FailoverClusterInstance>> {
    labels
        .get(INSTANCE_LABEL)
        .map(|n| ObjectRef::<FailoverClusterInstance>::new(n).within(&obj_ns.unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::watcher::{Error, Event};

    use super::*;

    fn node(ready: &str, heartbeat: i64, rv: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "uid": "u1", "resourceVersion": rv,
                         "labels": {"zone": "a"}},
            "spec": {},
            "status": {
                "conditions": [{
                    "type": "Ready", "status": ready, "reason": "KubeletReady",
                    "lastHeartbeatTime": jiff::Timestamp::from_second(heartbeat).unwrap(),
                    "lastTransitionTime": "2026-01-01T00:00:00Z",
                }],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                "volumesInUse": ["kubernetes.io/csi/d^v1"],
            }
        }))
        .unwrap()
    }

    fn kept(mut n: Node) -> Option<u64> {
        slim_node(&mut n);
        kept_digest(&n)
    }

    #[test]
    fn a_status_report_with_nothing_changed_is_no_news_and_a_change_of_what_is_read_is() {
        let before = kept(node("True", 1_800_000_000, "1"));
        assert!(before.is_some());
        // A kubelet's periodic report: new heartbeat time and version, volumes mounted.
        let mut report = node("True", 1_800_000_300, "2");
        report.status.as_mut().unwrap().volumes_in_use = None;
        assert_eq!(kept(report), before);
        // What instances and the cluster status read: readiness, labels, taints, addresses.
        assert_ne!(kept(node("Unknown", 1_800_000_300, "3")), before);
        let mut relabelled = node("True", 1_800_000_300, "4");
        relabelled
            .metadata
            .labels
            .as_mut()
            .unwrap()
            .insert("zone".into(), "b".into());
        assert_ne!(kept(relabelled), before);
        let mut tainted = node("True", 1_800_000_300, "5");
        tainted.spec.as_mut().unwrap().taints = Some(vec![k8s_openapi::api::core::v1::Taint {
            key: "node.kubernetes.io/out-of-service".into(),
            effect: "NoExecute".into(),
            ..Default::default()
        }]);
        assert_ne!(kept(tainted), before);
        let mut readdressed = node("True", 1_800_000_300, "6");
        readdressed
            .status
            .as_mut()
            .unwrap()
            .addresses
            .as_mut()
            .unwrap()[0]
            .address = "10.0.0.2".into();
        assert_ne!(kept(readdressed), before);
    }

    #[tokio::test]
    async fn a_tracked_watch_lists_then_is_complete_and_ends_with_its_stream() {
        let watches = Watches::default();
        let (tx, rx) = futures::channel::mpsc::unbounded::<watcher::Result<Event<ConfigMap>>>();
        let mut events = Box::pin(watches.track("configmaps", rx));
        let view = || watches.views().remove(0);
        // Listing from the start, until its list completes.
        let started = view().listing_since.unwrap();
        assert!(!view().ended);
        for e in [
            Ok(Event::Init),
            Err(Error::NoResourceVersion),
            Ok(Event::Init),
        ] {
            tx.unbounded_send(e).unwrap();
            events.next().await.unwrap().ok();
        }
        assert_eq!(
            view().listing_since,
            Some(started),
            "a retry keeps the start"
        );
        tx.unbounded_send(Ok(Event::InitApply(ConfigMap::default())))
            .unwrap();
        events.next().await.unwrap().unwrap();
        assert!(
            view().listing_since.unwrap() >= started,
            "a page is progress"
        );
        tx.unbounded_send(Ok(Event::InitDone)).unwrap();
        events.next().await.unwrap().unwrap();
        assert_eq!(view().listing_since, None);
        assert_eq!(view().changes, 0, "what a list brings is not a change");
        for e in [
            Event::Apply(ConfigMap::default()),
            Event::Delete(ConfigMap::default()),
        ] {
            tx.unbounded_send(Ok(e)).unwrap();
            events.next().await.unwrap().unwrap();
        }
        // Errors while watching leave it alive: the watcher retries.
        tx.unbounded_send(Err(Error::NoResourceVersion)).unwrap();
        events.next().await.unwrap().unwrap_err();
        assert_eq!(
            view(),
            WatchView {
                name: "configmaps",
                ended: false,
                listing_since: None,
                changes: 2,
            }
        );
        drop(tx);
        assert!(events.next().await.is_none());
        assert!(view().ended);
    }

    #[test]
    fn a_dropped_watch_has_ended() {
        let watches = Watches::default();
        let events = watches.track(
            "pods",
            futures::stream::pending::<watcher::Result<watcher::Event<ConfigMap>>>(),
        );
        assert!(!watches.views()[0].ended);
        drop(events);
        assert!(watches.views()[0].ended);
    }
}

#[cfg(test)]
mod slim_tests {
    use super::*;
    use kube_failover_core::decide::facts::pod_facts;

    #[test]
    fn a_slim_pod_says_all_the_controller_reads_of_it() {
        let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "db-3", "namespace": "apps", "uid": "u1", "resourceVersion": "7",
                "labels": {"kube-failover.io/instance": "db"},
                "deletionTimestamp": "2026-01-01T00:00:00Z",
                "ownerReferences": [{"apiVersion": "kube-failover.io/v1alpha1",
                    "kind": "FailoverClusterInstance", "name": "db", "uid": "i1", "controller": true}],
                "managedFields": [{"manager": "kubelet"}],
            },
            "spec": {
                "nodeName": "n1",
                "containers": [{"name": "db", "image": "db:1", "args": ["--big"]}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data"}}],
                "tolerations": [{"key": "a", "operator": "Exists"}],
            },
            "status": {
                "phase": "Failed",
                "podIP": "10.0.0.3",
                "hostIP": "192.168.0.1",
                "conditions": [
                    {"type": "Ready", "status": "True", "message": "m"},
                    {"type": "PodScheduled", "status": "True"},
                ],
                "containerStatuses": [{"name": "db", "image": "db:1", "imageID": "x",
                    "ready": true, "restartCount": 4, "state": {"running": {}}}],
            },
        }))
        .unwrap();
        // As the watch decodes it, then slimmed.
        let mut slim: CachedPod =
            serde_json::from_value(serde_json::to_value(&pod).unwrap()).unwrap();
        slim_pod(&mut slim);
        assert_eq!(pod_facts(&slim), pod_facts(&pod));
        assert_eq!(pod_facts(&slim).restarts, 4);
        assert_eq!(
            slim.metadata.owner_references,
            pod.metadata.owner_references
        );
        assert_eq!(slim.metadata.labels, pod.metadata.labels);
        assert!(slim.metadata.managed_fields.is_none());
        let conditions = slim.status.unwrap().conditions.unwrap();
        assert_eq!(conditions.len(), 1, "Ready only");
        assert!(conditions[0].message.is_none());
    }
}

#[cfg(test)]
mod key_tests {
    use super::*;

    fn fci(status: serde_json::Value) -> FailoverClusterInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1",
            "kind": "FailoverClusterInstance",
            "metadata": {"name": "db", "namespace": "apps"},
            "spec": {
                "clusterRef": "c",
                "networkName": {"name": "db", "ports": [{"name": "sql", "port": 5432}]},
                "storage": {"claims": ["data"], "claimTemplates": [{"name": "logs", "spec": {}}]},
                "virtualIPs": ["2001:db8:0::1"],
                "vipMode": "Agent",
                "template": {"spec": {"containers": [{"name": "db", "image": "db"}]}},
            },
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn an_address_claim_is_filed_under_its_instance_and_the_service_allocators_nowhere() {
        let fci = fci(serde_json::Value::Null);
        let ours = crate::network::claim(&fci, "192.0.2.7");
        assert_eq!(claim_keys(&ours), [key::instance("apps", "db")]);
        let mut service = ours.clone();
        service.spec.parent_ref.group = None;
        service.spec.parent_ref.resource = "services".into();
        assert!(claim_keys(&service).is_empty());
    }

    #[test]
    fn a_claim_wakes_the_instances_that_mount_it_in_its_namespace() {
        let keys = instance_keys(&fci(serde_json::Value::Null));
        assert!(keys.contains(&key::claim("apps", "data")));
        assert!(keys.contains(&key::claim("apps", "db-logs")));
        assert!(
            !keys.contains(&key::claim("other", "data")),
            "another namespace"
        );
        assert!(
            !keys.contains(&key::claim("apps", "logs")),
            "a template's bare name"
        );
        assert!(!keys.contains(&key::claim("apps", "db-data")));
        // Its virtual IP in the form an IPAddress is named.
        assert!(keys.contains(&key::address("2001:db8::1")));
        assert!(keys.contains(&key::cluster("c")) && keys.contains(&key::namespace("apps")));
    }

    #[test]
    fn a_node_wakes_what_it_hosts_and_what_is_unsettled_and_a_move_is_filed_as_such() {
        let has = |status: serde_json::Value, k: &str| {
            instance_keys(&fci(status)).contains(&k.to_string())
        };
        // No status yet, or waiting for a node: any node concerns it.
        assert!(has(serde_json::Value::Null, key::UNSETTLED));
        for phase in ["Pending", "Offline", "Unknown"] {
            assert!(
                has(serde_json::json!({"phase": phase}), key::UNSETTLED),
                "{phase}"
            );
        }
        // Online on n1: only n1 concerns it.
        let online = serde_json::json!({"phase": "Online", "ownerNode": "n1"});
        assert!(has(online.clone(), &key::owner("n1")));
        assert!(!has(online.clone(), key::UNSETTLED));
        assert!(!has(online.clone(), key::MOVING));
        assert!(!has(online, &key::owner("n2")));
        // Moving off n1, its new pod not created: unsettled, moving, starting.
        let moving = serde_json::json!({
            "phase": "Online",
            "ownerNode": "n1",
            "move": {
                "from": "n1", "started": "2026-01-01T00:00:00.000000Z", "reason": "NodeDown", "planned": false
            },
        });
        for k in [
            key::UNSETTLED,
            key::MOVING,
            key::MOVING_AGENT_VIPS,
            &key::starting("c"),
        ] {
            assert!(has(moving.clone(), k), "{k}");
        }
        let mut created = moving.clone();
        created["move"]["podCreated"] = serde_json::json!("2026-01-01T00:00:01Z");
        assert!(!has(created.clone(), &key::starting("c")));
        assert!(has(created, key::MOVING));
    }

    #[test]
    fn an_instance_that_may_fail_back_is_filed_under_the_nodes_it_prefers_to_its_owner() {
        let with = |mode: &str, status: serde_json::Value| {
            let mut f = fci(status);
            f.spec.owners.preferred = ["n1", "n2", "n3"].map(String::from).to_vec();
            f.spec.failback.mode = serde_json::from_value(serde_json::json!(mode)).unwrap();
            instance_keys(&f)
        };
        let on = |owner: &str| serde_json::json!({"phase": "Online", "ownerNode": owner});
        let keys = with("Immediate", on("n3"));
        assert!(keys.contains(&key::failback("n1")) && keys.contains(&key::failback("n2")));
        assert!(!keys.contains(&key::failback("n3")), "its own node");
        let keys = with("Immediate", on("n2"));
        assert!(keys.contains(&key::failback("n1")) && !keys.contains(&key::failback("n3")));
        assert!(
            !with("Immediate", on("n1"))
                .iter()
                .any(|k| k.starts_with("failback:"))
        );
        // Not on a preferred node: any preferred node would take it back.
        assert!(with("Window", on("x")).contains(&key::failback("n3")));
        // Never failing back, or put there by an operator: no node's return concerns it.
        assert!(
            !with("Never", on("n3"))
                .iter()
                .any(|k| k.starts_with("failback:"))
        );
        let mut moved = on("n3");
        moved["movedByOperator"] = serde_json::json!(true);
        assert!(
            !with("Immediate", moved)
                .iter()
                .any(|k| k.starts_with("failback:"))
        );
    }

    #[test]
    fn an_instance_of_an_anti_affinity_class_with_an_owner_is_filed_as_classed() {
        let on = serde_json::json!({"phase": "Online", "ownerNode": "n1"});
        let mut f = fci(on.clone());
        assert!(!instance_keys(&f).contains(&key::classed("c")), "no class");
        f.spec.anti_affinity_classes = vec!["sql".into()];
        assert!(instance_keys(&f).contains(&key::classed("c")));
        let mut placed_nowhere = fci(serde_json::json!({"phase": "Pending"}));
        placed_nowhere.spec.anti_affinity_classes = vec!["sql".into()];
        assert!(
            !instance_keys(&placed_nowhere).contains(&key::classed("c")),
            "no owner: unsettled, woken by any node already"
        );
    }
}
