//! Read your own writes: what the API server answered to this replica's writes, kept until
//! the caches show it. A round that has just fenced a node, withdrawn an endpoint or
//! deleted a pod goes on from the API server's answer, not from a watch event that arrives
//! a round trip later, and it does not ask again for what its last write already did.
//!
//! What is kept can only stand in for the cache's copy of the same object when the cache's
//! is older (resourceVersions compared as growing integers, KEP-5504) or, for an object
//! this replica created, missing; and never for longer than [`KEPT_FOR`], after which the
//! cache alone is read again. An object deleted for good is known by its UID, which the API
//! server never gives to another object: a cache that still holds it is behind.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::{Resource, ResourceExt};
use kube_failover_core::kinds::CachedPod;

/// How long an answer stands in for the cache: the watch delivers the same change long
/// before (as for `written::Written`).
pub const KEPT_FOR: Duration = Duration::from_secs(10);

/// This replica's writes the caches may not show yet.
#[derive(Clone, Default)]
pub struct OwnWrites(Arc<Mutex<Kept>>);

#[derive(Default)]
struct Kept {
    nodes: HashMap<String, Answer<Node>>,
    /// By `namespace/name`.
    slices: HashMap<String, Answer<EndpointSlice>>,
    /// Pods this replica created, by `namespace/name`.
    created_pods: HashMap<String, Answer<CachedPod>>,
    /// UIDs of objects this replica deleted for good, and when.
    gone: HashMap<String, Instant>,
    /// The resourceVersion of each instance's last status write, by `namespace/name`: when,
    /// and in which leadership term.
    instances: HashMap<String, (String, Instant, u64)>,
    pruned: Option<Instant>,
}

struct Answer<K> {
    object: Arc<K>,
    at: Instant,
}

impl<K> Answer<K> {
    fn new(object: K) -> Self {
        Self {
            object: Arc::new(object),
            at: Instant::now(),
        }
    }

    fn current(&self) -> bool {
        self.at.elapsed() < KEPT_FOR
    }
}

/// Whether resourceVersion `a` is no newer than `b`, both of one object. Kubernetes 1.35
/// and later promise that a resource's versions are integers that only grow (KEP-5504);
/// any other form is not judged (`false`).
pub fn not_newer(a: &str, b: &str) -> bool {
    let comparable =
        |v: &str| !v.is_empty() && !v.starts_with('0') && v.bytes().all(|c| c.is_ascii_digit());
    comparable(a) && comparable(b) && (a.len(), a) <= (b.len(), b)
}

/// Whether resourceVersion `a` is strictly older than `b` (see [`not_newer`]).
pub fn older(a: &str, b: &str) -> bool {
    a != b && not_newer(a, b)
}

/// The fresher of the cache's copy and the answer kept: the answer when the cache's is
/// older, or missing and `absent_is_behind` (an object this replica created).
fn fresher<K: Resource>(
    cached: Option<Arc<K>>,
    kept: Option<&Answer<K>>,
    absent_is_behind: bool,
) -> Option<Arc<K>> {
    let Some(kept) = kept.filter(|k| k.current()) else {
        return cached;
    };
    match &cached {
        Some(c)
            if c.meta().uid == kept.object.meta().uid
                && older(
                    c.meta().resource_version.as_deref().unwrap_or_default(),
                    kept.object
                        .meta()
                        .resource_version
                        .as_deref()
                        .unwrap_or_default(),
                ) =>
        {
            Some(kept.object.clone())
        }
        None if absent_is_behind => Some(kept.object.clone()),
        _ => cached,
    }
}

fn key<K: Resource>(object: &K) -> String {
    let meta = object.meta();
    format!(
        "{}/{}",
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

impl OwnWrites {
    fn kept(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A Node as the API server returned it after this replica wrote it.
    pub fn wrote_node(&self, node: Node) {
        let mut kept = self.kept();
        kept.prune();
        kept.nodes.insert(node.name_any(), Answer::new(node));
    }

    /// An EndpointSlice as the API server returned it after this replica applied it.
    pub fn wrote_slice(&self, slice: EndpointSlice) {
        let mut kept = self.kept();
        kept.prune();
        kept.slices.insert(key(&slice), Answer::new(slice));
    }

    /// A pod this replica created, as the API server returned it (kept as the cache keeps
    /// pods).
    pub fn created_pod(&self, pod: &Pod) {
        let mut pod = CachedPod::from(pod);
        super::watches::slim_pod(&mut pod);
        let mut kept = self.kept();
        kept.prune();
        kept.created_pods.insert(key(&pod), Answer::new(pod));
    }

    /// The object of this UID is no longer in the API (deleted at once, or found gone).
    pub fn deleted(&self, uid: &str) {
        if uid.is_empty() {
            return;
        }
        let mut kept = self.kept();
        kept.prune();
        kept.gone.insert(uid.to_string(), Instant::now());
    }

    /// The status of `instance` (`namespace/name`) was written at this resourceVersion, in
    /// leadership term `term`.
    pub fn wrote_instance(&self, instance: &str, resource_version: String, term: u64) {
        let mut kept = self.kept();
        kept.prune();
        kept.instances.insert(
            instance.to_string(),
            (resource_version, Instant::now(), term),
        );
    }

    /// Whether this replica has written the instance's status at a version newer than
    /// `cached_version`: the cache is behind, and the watch event that brings the write is
    /// on its way.
    pub fn instance_behind(&self, instance: &str, cached_version: &str) -> bool {
        self.kept()
            .instances
            .get(instance)
            .is_some_and(|(written, at, _)| {
                at.elapsed() < KEPT_FOR && older(cached_version, written)
            })
    }

    /// Whether `version` is the one this replica's last status write of the instance
    /// returned, within [`KEPT_FOR`] and in leadership term `term`.
    pub fn wrote_last(&self, instance: &str, version: &str, term: u64) -> bool {
        !version.is_empty()
            && self
                .kept()
                .instances
                .get(instance)
                .is_some_and(|(written, at, t)| {
                    at.elapsed() < KEPT_FOR && written == version && *t == term
                })
    }

    /// The fresher of the cached Node and the one this replica wrote.
    pub fn node(&self, cached: Option<Arc<Node>>) -> Option<Arc<Node>> {
        let Some(name) = cached.as_ref().map(|n| n.name_any()) else {
            return cached;
        };
        fresher(cached, self.kept().nodes.get(&name), false)
    }

    /// Every cached Node, each the fresher of the cache's and the one this replica wrote.
    pub fn nodes(&self, cached: Vec<Arc<Node>>) -> Vec<Arc<Node>> {
        let kept = self.kept();
        if kept.nodes.is_empty() {
            return cached;
        }
        cached
            .into_iter()
            .map(|n| {
                let written = kept
                    .nodes
                    .get(n.metadata.name.as_deref().unwrap_or_default());
                fresher(Some(n.clone()), written, false).unwrap_or(n)
            })
            .collect()
    }

    /// The fresher of the cached EndpointSlice `namespace/name` and the one this replica
    /// wrote.
    pub fn slice(
        &self,
        name: &str,
        cached: Option<Arc<EndpointSlice>>,
    ) -> Option<Arc<EndpointSlice>> {
        fresher(cached, self.kept().slices.get(name), true)
    }

    /// The pods as they are now: the cache's (`cached`), without those deleted for good,
    /// with those this replica created for which `belongs` holds that the cache does not
    /// show yet.
    pub fn pods(
        &self,
        cached: Vec<Arc<CachedPod>>,
        belongs: impl Fn(&CachedPod) -> bool,
    ) -> Vec<Arc<CachedPod>> {
        let kept = self.kept();
        let mut seen = std::collections::HashSet::new();
        let mut pods: Vec<Arc<CachedPod>> = cached
            .into_iter()
            .filter(|p| !kept.is_gone(p.meta().uid.as_deref()))
            .map(|p| {
                let k = key(p.as_ref());
                let p = fresher(Some(p), kept.created_pods.get(&k), false).unwrap_or_default();
                seen.insert(k);
                p
            })
            .collect();
        pods.extend(
            kept.created_pods
                .iter()
                .filter(|(k, a)| a.current() && !seen.contains(*k) && belongs(&a.object))
                .filter(|(_, a)| !kept.is_gone(a.object.meta().uid.as_deref()))
                .map(|(_, a)| a.object.clone()),
        );
        pods
    }

    /// Whether the object of `uid` was deleted for good by this replica.
    pub fn is_gone(&self, uid: Option<&str>) -> bool {
        self.kept().is_gone(uid)
    }
}

impl Kept {
    fn is_gone(&self, uid: Option<&str>) -> bool {
        uid.and_then(|u| self.gone.get(u))
            .is_some_and(|at| at.elapsed() < KEPT_FOR)
    }

    /// Forgets what is past [`KEPT_FOR`], at most once a second.
    fn prune(&mut self) {
        if self
            .pruned
            .is_some_and(|p| p.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.pruned = Some(Instant::now());
        self.nodes.retain(|_, a| a.current());
        self.slices.retain(|_, a| a.current());
        self.created_pods.retain(|_, a| a.current());
        self.gone.retain(|_, at| at.elapsed() < KEPT_FOR);
        self.instances
            .retain(|_, (_, at, _)| at.elapsed() < KEPT_FOR);
    }
}

/// Whether a delete left its object gone from the API (rather than marked for deletion):
/// the API server answered with a Status, or with the object and no finalizer left when no
/// grace period applied (`immediate`: a pod deleted with none, or a kind without graceful
/// deletion). A delete that found the object gone (404) says the same.
pub fn gone_for_good<K: Resource>(
    deleted: &kube::Result<either::Either<K, kube::core::Status>>,
    immediate: bool,
) -> bool {
    match deleted {
        Ok(either::Either::Right(_)) => true,
        Ok(either::Either::Left(object)) => {
            immediate
                && object
                    .meta()
                    .finalizers
                    .as_ref()
                    .is_none_or(|f| f.is_empty())
        }
        Err(kube::Error::Api(e)) => e.code == 404,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(uid: &str, rv: &str, tainted: bool) -> Node {
        let mut n = Node::default();
        n.metadata.name = Some("n1".into());
        n.metadata.uid = Some(uid.into());
        n.metadata.resource_version = Some(rv.into());
        if tainted {
            n.spec = Some(k8s_openapi::api::core::v1::NodeSpec {
                taints: Some(vec![Default::default()]),
                ..Default::default()
            });
        }
        n
    }

    fn api_pod(name: &str, uid: &str, rv: &str) -> Pod {
        Pod {
            metadata: pod(name, uid, rv).metadata,
            ..Default::default()
        }
    }

    fn pod(name: &str, uid: &str, rv: &str) -> CachedPod {
        let mut p = CachedPod::default();
        p.metadata.namespace = Some("a".into());
        p.metadata.name = Some(name.into());
        p.metadata.uid = Some(uid.into());
        p.metadata.resource_version = Some(rv.into());
        p
    }

    #[test]
    fn resource_versions_compare_as_growing_integers_or_not_at_all() {
        assert!(not_newer("99", "100"));
        assert!(not_newer("100", "100"));
        assert!(!not_newer("101", "100"));
        assert!(!not_newer("1000", "999"));
        // Not the integers KEP-5504 promises: never judged no newer.
        assert!(!not_newer("", "100"));
        assert!(!not_newer("099", "100"));
        assert!(!not_newer("abc", "abd"));
        assert!(!not_newer("99", "1e3"));
        assert!(older("99", "100"));
        assert!(!older("100", "100"));
    }

    #[test]
    fn a_written_node_stands_in_only_for_an_older_cached_copy_of_the_same_node() {
        let own = OwnWrites::default();
        own.wrote_node(node("u1", "20", true));
        let got = |cached: Node| own.node(Some(Arc::new(cached))).unwrap();
        // The cache is behind: the write's answer is read.
        assert!(got(node("u1", "19", false)).spec.is_some());
        // The cache has caught up or gone past it (someone untainted it since): the cache.
        assert!(got(node("u1", "20", false)).spec.is_none());
        assert!(got(node("u1", "21", false)).spec.is_none());
        // Another node of the same name (deleted and made again): the cache.
        assert!(got(node("u2", "5", false)).spec.is_none());
        // Versions that cannot be compared: the cache.
        assert!(got(node("u1", "abc", false)).spec.is_none());
        // A node missing from the cache is not brought back by an old write.
        assert!(own.node(None).is_none());
        // Every node at once: the same judgement.
        let all = own.nodes(vec![
            Arc::new(node("u1", "19", false)),
            Arc::new(node("u2", "5", false)),
        ]);
        assert!(all[0].spec.is_some());
        assert!(all[1].spec.is_none());
    }

    #[test]
    fn pods_deleted_for_good_go_and_pods_created_come_before_the_cache_shows_them() {
        let own = OwnWrites::default();
        let cached = vec![
            Arc::new(pod("db-1", "old", "10")),
            Arc::new(pod("x", "x", "3")),
        ];
        own.deleted("old");
        own.created_pod(&api_pod("db-2", "new", "12"));
        let names = |ps: Vec<Arc<CachedPod>>| {
            let mut n: Vec<String> = ps.iter().map(|p| p.name_any()).collect();
            n.sort();
            n
        };
        assert_eq!(names(own.pods(cached.clone(), |_| true)), ["db-2", "x"]);
        // A created pod that is not of those asked for is left out.
        assert_eq!(
            names(own.pods(cached.clone(), |p| p.name_any() != "db-2")),
            ["x"]
        );
        // Once the cache shows the new pod, its copy is the cache's.
        let mut newer = pod("db-2", "new", "14");
        newer.metadata.labels = Some([("ready".to_string(), "yes".to_string())].into());
        let with_new = vec![Arc::new(newer)];
        let got = own.pods(with_new, |_| true);
        assert_eq!(got.len(), 1);
        assert!(got[0].metadata.labels.is_some());
        assert!(own.is_gone(Some("old")));
        assert!(!own.is_gone(Some("x")));
        assert!(!own.is_gone(None));
    }

    #[test]
    fn an_instance_is_behind_while_its_cached_version_is_older_than_the_last_write() {
        let own = OwnWrites::default();
        own.wrote_instance("a/db", "50".into(), 3);
        assert!(own.instance_behind("a/db", "49"));
        assert!(!own.instance_behind("a/db", "50"));
        assert!(!own.instance_behind("a/db", "51"));
        assert!(!own.instance_behind("a/other", "1"));
        // Only the very version written, in the same leadership term, is this replica's
        // last write.
        assert!(own.wrote_last("a/db", "50", 3));
        assert!(!own.wrote_last("a/db", "50", 4));
        assert!(!own.wrote_last("a/db", "51", 3));
        assert!(!own.wrote_last("a/db", "49", 3));
        assert!(!own.wrote_last("a/other", "50", 3));
        assert!(!own.wrote_last("a/other", "", 3));
    }
}
