//! Secondary indexes over the reflectors' stores: the objects of a kind by a key computed
//! from each (the pods of an instance, the attachments of a volume, the instances of a node
//! or a cluster), so that a reconcile or a watched change reads the few objects it concerns
//! instead of scanning every object of the kind.
//!
//! An index holds references only; the objects are read from the store they index. It is
//! fed by the same watch events as its store, right after the store applied them, and
//! mirrors the store's relists: a relist builds a new index, swapped in when the relist
//! completes. A reference whose object the store no longer holds is skipped on reading.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, RwLock};

use kube::Resource;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use tokio::sync::Notify;

/// What an index maps: key → references, and reference → its keys (to move or drop it).
struct Entries<K: Resource<DynamicType = ()>> {
    by_key: HashMap<String, HashSet<ObjectRef<K>>>,
    keys: HashMap<ObjectRef<K>, Vec<String>>,
}

impl<K: Resource<DynamicType = ()>> Default for Entries<K> {
    fn default() -> Self {
        Self {
            by_key: HashMap::new(),
            keys: HashMap::new(),
        }
    }
}

impl<K: Resource<DynamicType = ()>> Entries<K> {
    /// Drops `object`; whether it was under any key.
    fn remove(&mut self, object: &ObjectRef<K>) -> bool {
        let keys = self.keys.remove(object).unwrap_or_default();
        for key in &keys {
            if let Some(set) = self.by_key.get_mut(key) {
                set.remove(object);
                if set.is_empty() {
                    self.by_key.remove(key);
                }
            }
        }
        !keys.is_empty()
    }

    /// Files `object` under `keys`; whether they are not the ones it was under.
    fn insert(&mut self, object: ObjectRef<K>, keys: Vec<String>) -> bool {
        if self
            .keys
            .get(&object)
            .map_or(keys.is_empty(), |k| *k == keys)
        {
            return false;
        }
        self.remove(&object);
        for key in &keys {
            self.by_key
                .entry(key.clone())
                .or_default()
                .insert(object.clone());
        }
        if !keys.is_empty() {
            self.keys.insert(object, keys);
        }
        true
    }
}

struct State<K: Resource<DynamicType = ()>> {
    live: Entries<K>,
    /// The index a relist under way builds.
    relisting: Option<Entries<K>>,
}

type KeysOf<K> = Arc<dyn Fn(&K) -> Vec<String> + Send + Sync>;

/// The objects of a store by the keys `keys_of` gives each.
pub struct Index<K: Resource<DynamicType = ()>> {
    state: Arc<RwLock<State<K>>>,
    keys_of: KeysOf<K>,
    /// Told each time an object comes under other keys (or none), after the store and the
    /// index both show it so.
    rekeyed: Option<Arc<Notify>>,
}

impl<K: Resource<DynamicType = ()>> Clone for Index<K> {
    fn clone(&self) -> Self {
        Self {
            state: self.state.clone(),
            keys_of: self.keys_of.clone(),
            rekeyed: self.rekeyed.clone(),
        }
    }
}

impl<K> Index<K>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    pub fn new(keys_of: impl Fn(&K) -> Vec<String> + Send + Sync + 'static) -> Self {
        Self {
            state: Arc::new(RwLock::new(State {
                live: Entries::default(),
                relisting: None,
            })),
            keys_of: Arc::new(keys_of),
            rekeyed: None,
        }
    }

    /// Tells `notify` each time an object comes under other keys: a new object, one deleted,
    /// one whose keys changed, and every relist (which may have changed any).
    pub fn notifying(mut self, notify: Arc<Notify>) -> Self {
        self.rekeyed = Some(notify);
        self
    }

    /// Follows one watch event, as the store did.
    pub fn apply(&self, event: &watcher::Event<K>) {
        let mut state = self.state.write().unwrap_or_else(|e| e.into_inner());
        let rekeyed = match event {
            watcher::Event::Apply(object) => {
                let keys = (self.keys_of)(object);
                state.live.insert(bare(object), keys)
            }
            watcher::Event::Delete(object) => state.live.remove(&bare(object)),
            watcher::Event::Init => {
                state.relisting = Some(Entries::default());
                false
            }
            watcher::Event::InitApply(object) => {
                let keys = (self.keys_of)(object);
                state
                    .relisting
                    .get_or_insert_with(Entries::default)
                    .insert(bare(object), keys);
                false
            }
            watcher::Event::InitDone => {
                if let Some(built) = state.relisting.take() {
                    state.live = built;
                }
                true
            }
        };
        drop(state);
        if let (true, Some(notify)) = (rekeyed, &self.rekeyed) {
            notify.notify_one();
        }
    }

    /// The references under `key`.
    pub fn refs(&self, key: &str) -> Vec<ObjectRef<K>> {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state
            .live
            .by_key
            .get(key)
            .map(|set| set.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The objects under `key`, as `store` holds them now.
    pub fn get(&self, key: &str, store: &Store<K>) -> Vec<Arc<K>> {
        self.refs(key).iter().filter_map(|r| store.get(r)).collect()
    }

    /// How many references `key` has.
    pub fn count(&self, key: &str) -> usize {
        let state = self.state.read().unwrap_or_else(|e| e.into_inner());
        state.live.by_key.get(key).map_or(0, HashSet::len)
    }
}

/// A reference to `object` by kind, namespace and name only: its version and UID (which
/// references are not compared by) would be two more strings in each of its keys' entries.
fn bare<K: Resource<DynamicType = ()>>(object: &K) -> ObjectRef<K> {
    let mut r = ObjectRef::from(object);
    r.extra = Default::default();
    r
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector;
    use kube::runtime::watcher::Event;

    use super::*;

    fn cm(name: &str, group: Option<&str>) -> ConfigMap {
        let mut c = ConfigMap::default();
        c.metadata.name = Some(name.into());
        c.metadata.namespace = Some("ns".into());
        c.metadata.labels = group.map(|g| [("group".to_string(), g.to_string())].into());
        c
    }

    fn by_group() -> Index<ConfigMap> {
        Index::new(|c: &ConfigMap| {
            c.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("group"))
                .map(|g| vec![format!("group:{g}"), "any".to_string()])
                .unwrap_or_default()
        })
    }

    fn names(index: &Index<ConfigMap>, key: &str) -> Vec<String> {
        let mut n: Vec<String> = index.refs(key).into_iter().map(|r| r.name).collect();
        n.sort();
        n
    }

    #[test]
    fn an_object_is_found_under_its_keys_moves_with_them_and_goes_with_its_delete() {
        let index = by_group();
        index.apply(&Event::Apply(cm("a", Some("x"))));
        index.apply(&Event::Apply(cm("b", Some("x"))));
        index.apply(&Event::Apply(cm("c", None)));
        assert_eq!(names(&index, "group:x"), ["a", "b"]);
        assert_eq!(names(&index, "any"), ["a", "b"]);
        assert_eq!(index.count("group:y"), 0);
        // Relabelled: found under its new key only.
        index.apply(&Event::Apply(cm("a", Some("y"))));
        assert_eq!(names(&index, "group:x"), ["b"]);
        assert_eq!(names(&index, "group:y"), ["a"]);
        assert_eq!(names(&index, "any"), ["a", "b"]);
        // Label removed, then deleted: under no key.
        index.apply(&Event::Apply(cm("b", None)));
        index.apply(&Event::Delete(cm("a", Some("y"))));
        assert!(names(&index, "group:x").is_empty());
        assert!(names(&index, "any").is_empty());
        let state = index.state.read().unwrap();
        assert!(state.live.by_key.is_empty() && state.live.keys.is_empty());
    }

    #[tokio::test]
    async fn a_new_object_a_change_of_keys_a_delete_and_a_relist_are_told_and_nothing_else() {
        let notify = Arc::new(Notify::new());
        let index = by_group().notifying(notify.clone());
        // A permit stored by `notify_one` makes the first poll ready.
        let check = |what: &str, expected: bool| {
            let told = notify.notified();
            futures::pin_mut!(told);
            let was = futures::FutureExt::now_or_never(told).is_some();
            assert_eq!(was, expected, "{what}: told {was}");
        };
        let told = |what: &str| check(what, true);
        let untold = |what: &str| check(what, false);
        index.apply(&Event::Apply(cm("a", Some("x"))));
        told("a new object");
        index.apply(&Event::Apply(cm("a", Some("x"))));
        untold("the same keys again");
        index.apply(&Event::Apply(cm("a", Some("y"))));
        told("new keys");
        index.apply(&Event::Apply(cm("c", None)));
        untold("an object under no key");
        index.apply(&Event::Delete(cm("a", Some("y"))));
        told("a delete");
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(cm("b", Some("x"))));
        untold("a relist under way");
        index.apply(&Event::InitDone);
        told("a relist done");
    }

    #[test]
    fn a_relist_replaces_the_index_when_it_completes_and_not_before() {
        let index = by_group();
        index.apply(&Event::Apply(cm("old", Some("x"))));
        index.apply(&Event::Init);
        index.apply(&Event::InitApply(cm("new", Some("x"))));
        assert_eq!(names(&index, "group:x"), ["old"], "the relist is not done");
        index.apply(&Event::InitDone);
        assert_eq!(
            names(&index, "group:x"),
            ["new"],
            "deleted while unwatched: gone"
        );
    }

    #[test]
    fn objects_are_read_from_the_store_and_those_it_no_longer_holds_are_skipped() {
        let index = by_group();
        let (reader, mut writer) = reflector::store::<ConfigMap>();
        for e in [
            Event::Apply(cm("a", Some("x"))),
            Event::Apply(cm("b", Some("x"))),
        ] {
            writer.apply_watcher_event(&e);
            index.apply(&e);
        }
        // The store has dropped `b`; the index has not heard yet.
        writer.apply_watcher_event(&Event::Delete(cm("b", Some("x"))));
        let got: Vec<String> = index
            .get("group:x", &reader)
            .iter()
            .map(|c| c.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(got, ["a"]);
    }
}
