//! The read side's plumbing: reflectors that strip what is never read, the wait for every
//! cache to sync, and which instances a change of another kind concerns.

use std::collections::BTreeMap;
use std::time::Duration;

use futures::Stream;
use kube::Resource;
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use super::observe::Stores;
use crate::api::{FailoverClusterInstance, INSTANCE_LABEL, Phase};

pub fn strip<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    obj.meta_mut()
        .annotations
        .as_mut()
        .map(|a| a.remove("kubectl.kubernetes.io/last-applied-configuration"));
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

/// A reflector: returns the store and the stream of changed objects (which must be polled).
pub fn reflect<K>(
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
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .backoff(QuickBackoff::default())
        .modify(strip)
        .reflect(writer)
        .applied_objects();
    (reader, stream)
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
    );
}

pub fn stream_from_watch(rx: watch::Receiver<()>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

/// A node event matters to instances it hosts, and to instances waiting for a node.
pub fn affected_by_node(fci: &FailoverClusterInstance, node: &str) -> bool {
    let Some(status) = fci.status.as_ref() else {
        return true;
    };
    status.owner_node.as_deref() == Some(node)
        || status.current_move.is_some()
        || matches!(
            status.phase,
            Phase::Pending | Phase::Offline | Phase::Unknown
        )
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
