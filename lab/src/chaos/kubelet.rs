//! Stand-ins for the kubelet where KWOK does not play it: a node's kubelet during a fault
//! (alive with a skewed clock, or alive and NotReady). The pod status sync after a node
//! comes back is in `crate::controlplane::kubelet`, which every test uses; what a kubelet
//! runs in its node's container runtime, whoever plays it towards the API server, is in
//! `super::containers`.

use std::collections::BTreeSet;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::task::JoinSet;

use crate::controlplane::AbortOnDrop;

/// A stand-in kubelet: stopped between two of its writes, so that none of them lands after
/// KWOK has taken the node back.
pub struct StandIn {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: AbortOnDrop,
}

impl StandIn {
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut self.task.0).await;
    }
}

fn now_minus(skew: jiff::SignedDuration) -> jiff::Timestamp {
    jiff::Timestamp::now() - skew
}

/// What a live kubelet does with its node's pods: a pod marked for deletion is stopped and
/// its deletion confirmed (a delete with grace 0, as the kubelet sends) after a while; with
/// `run_new`, a new pod bound to the node is started and reported ready.
async fn tend_pods(client: Client, namespace: String, node: String, run_new: bool, seed: u64) {
    let pods: Api<Pod> = Api::namespaced(client, &namespace);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut stopping: JoinSet<()> = JoinSet::new();
    let mut handled: BTreeSet<String> = BTreeSet::new();
    let mut events = watcher(
        pods.clone(),
        watcher::Config::default().fields(&format!("spec.nodeName={node}")),
    )
    .default_backoff()
    .applied_objects()
    .boxed();
    while let Some(event) = events.next().await {
        let Ok(p) = event else { continue };
        let uid = p.uid().unwrap_or_default();
        if p.metadata.deletion_timestamp.is_some() {
            if handled.insert(format!("stop {uid}")) {
                let delay = Duration::from_millis(rng.random_range(300..3000));
                let (pods, name) = (pods.clone(), p.name_any());
                stopping.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let dp = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: Some(uid),
                            resource_version: None,
                        }),
                        ..Default::default()
                    };
                    let _ = pods.delete(&name, &dp).await;
                });
            }
            continue;
        }
        let pending = p
            .status
            .as_ref()
            .and_then(|s| s.phase.as_deref())
            .is_none_or(|ph| ph == "Pending");
        if run_new && pending && handled.insert(format!("run {uid}")) {
            let ip = format!(
                "10.250.{}.{}",
                rng.random_range(0..=255u8),
                rng.random_range(1..=254u8)
            );
            let now = Time(jiff::Timestamp::now());
            let containers: Vec<serde_json::Value> = p
                .spec
                .as_ref()
                .map(|s| s.containers.iter())
                .into_iter()
                .flatten()
                .map(|c| {
                    serde_json::json!({"name": c.name, "image": c.image, "ready": true, "restartCount": 0,
                                       "started": true, "state": {"running": {"startedAt": now}}})
                })
                .collect();
            let conditions: Vec<serde_json::Value> = [
                "Initialized",
                "Ready",
                "ContainersReady",
                "PodScheduled",
            ]
            .iter()
            .map(|t| serde_json::json!({"type": t, "status": "True", "lastTransitionTime": now}))
            .collect();
            let status = serde_json::json!({"status": {
                "phase": "Running",
                "conditions": conditions,
                "containerStatuses": containers,
                "podIP": ip, "podIPs": [{"ip": ip}],
                "hostIP": "127.0.0.1", "hostIPs": [{"ip": "127.0.0.1"}],
                "startTime": now,
            }});
            if let Err(e) = pods
                .patch_status(
                    &p.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&status),
                )
                .await
            {
                tracing::debug!(error = %e, "starting a pod as the node's kubelet");
                handled.remove(&format!("run {uid}"));
            }
        }
    }
}

/// The kubelet of `node` with a clock `skew` behind: it renews the node's Lease every
/// 500 ms and posts the node's Ready heartbeat every 2 s, both dated on its clock, and runs
/// the node's pods. (The status heartbeat keeps kube-controller-manager from taking the
/// node for dead: it counts a Lease renewal only when renewTime moves forward, and a node
/// whose kubelet was switched mid-flight to a clock minutes behind would otherwise not
/// renew for minutes in its eyes. A kubelet skewed from the start has no such jump.)
pub fn skewed_kubelet(
    client: Client,
    namespace: &str,
    node: &str,
    skew: jiff::SignedDuration,
    seed: u64,
) -> StandIn {
    let (namespace, node) = (namespace.to_string(), node.to_string());
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = AbortOnDrop(tokio::spawn(async move {
        let _pods = AbortOnDrop(tokio::spawn(tend_pods(
            client.clone(),
            namespace,
            node.clone(),
            true,
            seed,
        )));
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let nodes: Api<Node> = Api::all(client);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        for n in 0u64.. {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => return,
            }
            let renew = serde_json::json!({"spec": {"renewTime": MicroTime(now_minus(skew))}});
            let _ = leases
                .patch(&node, &PatchParams::default(), &Patch::Merge(&renew))
                .await;
            if n % 4 == 0 {
                let heartbeat = serde_json::json!({"status": {"conditions": [{
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": Time(now_minus(skew)),
                }]}});
                let _ = nodes
                    .patch_status(
                        &node,
                        &PatchParams::default(),
                        &Patch::Strategic(&heartbeat),
                    )
                    .await;
            }
        }
    }));
    StandIn {
        stop: Some(stop),
        task,
    }
}

/// The kubelet of `node`, alive but reporting NotReady: it renews the Lease every 500 ms
/// (on this machine's clock), keeps the node's Ready condition False, and stops the pods
/// deleted on it.
pub fn not_ready_kubelet(client: Client, namespace: &str, node: &str, seed: u64) -> StandIn {
    let (namespace, node) = (namespace.to_string(), node.to_string());
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = AbortOnDrop(tokio::spawn(async move {
        let _pods = AbortOnDrop(tokio::spawn(tend_pods(
            client.clone(),
            namespace,
            node.clone(),
            false,
            seed,
        )));
        let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
        let nodes: Api<Node> = Api::all(client);
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        for n in 0u64.. {
            tokio::select! {
                _ = tick.tick() => {}
                _ = &mut stopped => return,
            }
            let renew =
                serde_json::json!({"spec": {"renewTime": MicroTime(jiff::Timestamp::now())}});
            let _ = leases
                .patch(&node, &PatchParams::default(), &Patch::Merge(&renew))
                .await;
            if n % 4 == 0 {
                let _ = report_not_ready(&nodes, &node).await;
            }
        }
    }));
    StandIn {
        stop: Some(stop),
        task,
    }
}

async fn report_not_ready(nodes: &Api<Node>, node: &str) -> kube::Result<()> {
    let mut n = nodes.get_status(node).await?;
    let Some(conditions) = n.status.as_mut().and_then(|s| s.conditions.as_mut()) else {
        return Ok(());
    };
    let mut changed = false;
    for c in conditions.iter_mut().filter(|c| c.type_ == "Ready") {
        if c.status != "False" {
            c.status = "False".into();
            c.reason = Some("KubeletNotReady".into());
            c.message = Some("container runtime is down (chaos)".into());
            c.last_transition_time = Some(Time(jiff::Timestamp::now()));
            changed = true;
        }
    }
    if changed {
        nodes
            .replace_status(node, &PostParams::default(), &n)
            .await?;
    }
    Ok(())
}
