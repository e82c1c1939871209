//! The part of a kubelet that KWOK does not play: the pod status sync after a node comes
//! back. kube-controller-manager marks the pods of a node that stops reporting not ready; a
//! real kubelet, back, reports them ready again on its next status sync; KWOK's stages never
//! do (its pod-ready stage matches Pending pods only).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;

use super::NODE_ALIVE_LABEL;

/// The taint that marks a node fenced (the non-graceful node shutdown taint).
pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// A task that is aborted when this is dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn ready(conditions: Option<&Vec<k8s_openapi::api::core::v1::PodCondition>>) -> bool {
    conditions.is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The pod status sync of a kubelet whose node comes back. kube-controller-manager marks
/// the pods of a node that stops reporting not ready; a real kubelet, back, reports them
/// ready again, which KWOK does not. So: a Running pod that is not ready, on a node that
/// KWOK manages, Ready and not fenced, and has been so for 2 s (this task's clock), is
/// reported ready. Runs until aborted.
pub async fn resync_pod_readiness(client: Client, namespace: String) {
    resync(client, Some(namespace)).await
}

/// As [`resync_pod_readiness`], for the pods of every namespace (the playground's kubelets).
pub async fn resync_pod_readiness_everywhere(client: Client) {
    resync(client, None).await
}

async fn resync(client: Client, namespace: Option<String>) {
    const SETTLE: Duration = Duration::from_secs(2);
    let pods: Api<Pod> = match &namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let (node_store, node_writer) = reflector::store::<Node>();
    let pod_events = watcher(pods.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(pod_writer)
        .map(|_| ());
    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .reflect(node_writer)
        .map(|_| ());
    let mut events = futures::stream::select(pod_events, node_events).boxed();
    let mut up_since: BTreeMap<String, Instant> = BTreeMap::new();
    let mut reported: BTreeSet<(String, String)> = BTreeSet::new();
    let mut recheck: Option<tokio::time::Instant> = None;
    loop {
        let wake = async {
            match recheck {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            ev = events.next() => if ev.is_none() { return },
            () = wake => {}
        }
        let now = Instant::now();
        let mut up = BTreeSet::new();
        for n in node_store.state() {
            let alive = n.labels().get(NODE_ALIVE_LABEL).map(String::as_str) == Some("true");
            let node_ready = n
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let fenced = n
                .spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT));
            if alive && node_ready && !fenced {
                up.insert(n.name_any());
            }
        }
        up_since.retain(|n, _| up.contains(n));
        for n in up {
            up_since.entry(n).or_insert(now);
        }
        recheck = None;
        for p in pod_store.state() {
            let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                continue;
            };
            let status = p.status.as_ref();
            let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
            if !running
                || p.metadata.deletion_timestamp.is_some()
                || ready(status.and_then(|s| s.conditions.as_ref()))
            {
                continue;
            }
            let Some(since) = up_since.get(&node) else {
                continue;
            };
            if now.duration_since(*since) < SETTLE {
                let at = tokio::time::Instant::from_std(*since + SETTLE);
                recheck = Some(recheck.map_or(at, |r| r.min(at)));
                continue;
            }
            let version = (
                p.uid().unwrap_or_default(),
                p.resource_version().unwrap_or_default(),
            );
            if !reported.insert(version) {
                continue;
            }
            let at = Time(jiff::Timestamp::now());
            let patch = serde_json::json!({"status": {"conditions": [
                {"type": "Ready", "status": "True", "lastTransitionTime": at},
                {"type": "ContainersReady", "status": "True", "lastTransitionTime": at},
            ]}});
            let in_namespace: Api<Pod> =
                Api::namespaced(client.clone(), &p.namespace().unwrap_or_default());
            if let Err(e) = in_namespace
                .patch_status(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Strategic(&patch),
                )
                .await
            {
                tracing::debug!(error = %e, pod = %p.name_any(), "reporting a pod ready again");
            }
        }
    }
}
