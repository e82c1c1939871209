//! The watcher's copy of the API objects of one kind, and what it reads from them.

use super::*;

/// The objects of one kind, as the watcher last saw them.
pub(super) struct Mirror<K> {
    pub(super) live: BTreeMap<String, K>,
    relisting: Option<BTreeMap<String, K>>,
}

impl<K: Resource + Clone> Mirror<K> {
    pub(super) fn new() -> Self {
        Self {
            live: BTreeMap::new(),
            relisting: None,
        }
    }

    pub(super) fn key(obj: &K) -> String {
        match obj.meta().namespace.as_deref() {
            Some(ns) => format!("{ns}/{}", obj.meta().name.as_deref().unwrap_or_default()),
            None => obj.meta().name.clone().unwrap_or_default(),
        }
    }

    /// Applies a change; returns the previous version of an applied or deleted object.
    pub(super) fn apply(&mut self, change: &Change<K>) -> Option<K> {
        match change {
            Change::Applied(o) => self.live.insert(Self::key(o), o.clone()),
            Change::Deleted(o) => self.live.remove(&Self::key(o)),
            Change::Relist => {
                self.relisting = Some(BTreeMap::new());
                None
            }
            Change::Relisted(o) => {
                self.relisting
                    .get_or_insert_with(BTreeMap::new)
                    .insert(Self::key(o), o.clone());
                None
            }
            Change::RelistDone => {
                if let Some(all) = self.relisting.take() {
                    self.live = all;
                }
                None
            }
            Change::Error(_) => None,
        }
    }
}

pub(super) fn pod_node(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone()
}

pub(super) fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub(super) fn node_fenced(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT))
}

pub(super) fn node_ready(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "-".into())
}

/// An instance online: phase Online, no move, endpoint published (as the tests define it).
pub fn instance_online(i: &FailoverClusterInstance) -> bool {
    i.status.as_ref().is_some_and(|s| {
        s.phase == Phase::Online
            && s.current_move.is_none()
            && s.served.as_ref().is_some_and(|v| v.endpoint.is_some())
    })
}
