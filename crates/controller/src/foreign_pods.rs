//! Pods that carry an instance's label but are not controlled by it. `observe` leaves them
//! out of every decision (`observe::labelled_pods`); this module tells the instance's
//! owner about each of them once, with a Warning Event on the instance, so that a pod
//! someone labelled by mistake or on purpose does not go unnoticed.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use kube_failover_core::kinds::CachedPod;

use super::Context;
use super::observe::labelled_pods;
use kube_failover_core::api::{FailoverClusterInstance, INSTANCE_LABEL, reason};

/// The UIDs of the foreign pods this replica has reported, by instance (`namespace/name`).
/// Kept in memory: reporting is for people, and a new leader reporting a pod once more is
/// harmless, while an Event per reconcile would bury every other Event of the instance and
/// write one on every round.
#[derive(Clone, Default)]
pub struct Reported(Arc<Mutex<HashMap<String, BTreeSet<String>>>>);

impl Reported {
    /// Marks the UIDs in `foreign` reported for `instance` and returns those that were not
    /// yet. The instance's UIDs not in `present` (the UIDs of every pod labelled for it) are
    /// forgotten first: a UID is never reused, so what is kept stays as small as the
    /// labelled pods that exist.
    fn newly(&self, instance: &str, foreign: &[String], present: &BTreeSet<String>) -> Vec<String> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let reported = all.entry(instance.to_string()).or_default();
        reported.retain(|uid| present.contains(uid));
        let new = foreign
            .iter()
            .filter(|uid| reported.insert((*uid).clone()))
            .cloned()
            .collect();
        if reported.is_empty() {
            all.remove(instance);
        }
        new
    }

    /// Whether no pod of `instance` is remembered: a round that sees no foreign pod then has
    /// nothing to forget either.
    fn is_empty(&self, instance: &str) -> bool {
        !self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(instance)
    }

    /// Forgets `uid` of `instance`, whose report could not be published: a later round
    /// tries again.
    fn forget(&self, instance: &str, uid: &str) {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(reported) = all.get_mut(instance) {
            reported.remove(uid);
            if reported.is_empty() {
                all.remove(instance);
            }
        }
    }

    /// Forgets every report on `instance` (deleted).
    pub fn forget_instance(&self, instance: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(instance);
    }
}

/// Publishes a Warning Event on `fci` for each pod labelled for it that it does not control
/// and that was not reported yet. In the background: the Events API must not hold up a round.
pub fn report(fci: &FailoverClusterInstance, ctx: &Context) {
    let (ns, name) = (fci.namespace().unwrap_or_default(), fci.name_any());
    let instance = format!("{ns}/{name}");
    let pods = ctx.stores.pods_of(&ns, &name);
    let foreign = labelled_pods(fci, &pods).foreign;
    if foreign.is_empty() && ctx.foreign_pods.is_empty(&instance) {
        return;
    }
    let present: BTreeSet<String> = pods.iter().filter_map(|p| p.uid()).collect();
    let uids: Vec<String> = foreign.iter().filter_map(|p| p.uid()).collect();
    let new = ctx.foreign_pods.newly(&instance, &uids, &present);
    let reference: ObjectReference = fci.object_ref(&());
    for pod in foreign
        .into_iter()
        .filter(|p| p.uid().is_some_and(|u| new.contains(&u)))
    {
        let uid = pod.uid().unwrap_or_default();
        let event = foreign_pod_event(fci, pod);
        tracing::warn!(instance = %fci.name_any(), pod = %pod.name_any(), "ignoring a pod labelled for the instance that it does not control");
        let events = ctx.events.clone();
        let reported = ctx.foreign_pods.clone();
        let reference = reference.clone();
        let instance = instance.clone();
        tokio::spawn(async move {
            if let Err(e) = events.publish(&event, &reference).await {
                tracing::warn!(error = %e, "publishing an event failed");
                reported.forget(&instance, &uid);
            }
        });
    }
}

/// The Event that reports `pod`: what it is, and that the controller ignores it.
fn foreign_pod_event(fci: &FailoverClusterInstance, pod: &CachedPod) -> Event {
    let note = format!(
        "pod {} carries the label {INSTANCE_LABEL}={} but is not controlled by this instance \
         (no owner reference to it with controller: true); the controller ignores it: it is \
         never counted as the instance's pod, deleted, adopted or waited for",
        pod.name_any(),
        fci.name_any(),
    );
    Event {
        type_: EventType::Warning,
        reason: reason::FOREIGN_POD_IGNORED.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: Some(pod.object_ref(&())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uids(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn each_foreign_pod_is_reported_once_while_it_exists() {
        let reported = Reported::default();
        let present: BTreeSet<String> = uids(&["a", "b", "own"]).into_iter().collect();
        assert!(reported.is_empty("ns/db"));
        assert_eq!(reported.newly("ns/db", &uids(&["a"]), &present), ["a"]);
        // Every later round sees it again; only the new one is reported.
        assert_eq!(reported.newly("ns/db", &uids(&["a", "b"]), &present), ["b"]);
        assert!(
            reported
                .newly("ns/db", &uids(&["a", "b"]), &present)
                .is_empty()
        );
        // Another instance's reports are its own.
        let other: BTreeSet<String> = uids(&["c"]).into_iter().collect();
        assert_eq!(reported.newly("ns/web", &uids(&["c"]), &other), ["c"]);
        // A report that could not be published is made again.
        reported.forget("ns/db", "b");
        assert_eq!(reported.newly("ns/db", &uids(&["a", "b"]), &present), ["b"]);
        // A pod gone from the cache is forgotten, and the other instance's are kept.
        let only_b: BTreeSet<String> = uids(&["b"]).into_iter().collect();
        assert!(reported.newly("ns/db", &uids(&["b"]), &only_b).is_empty());
        assert_eq!(reported.0.lock().unwrap()["ns/db"], only_b);
        assert!(!reported.is_empty("ns/web"));
        // None left: nothing kept for the instance.
        assert!(reported.newly("ns/db", &[], &BTreeSet::new()).is_empty());
        assert!(reported.is_empty("ns/db"));
        reported.forget_instance("ns/web");
        assert!(reported.0.lock().unwrap().is_empty());
    }
}
