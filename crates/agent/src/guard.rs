//! What the agent does for its node while it can reach the API server: the kubelet's
//! silence and the pods that are gone.
//!
//! - **A silent kubelet.** When the kubelet stops renewing its Lease while this agent renews
//!   its own, the node is Down for the controller but nothing on it has fenced itself: the
//!   containers run on. The controller then asks this agent, through the Node
//!   ([`STOP_WORKLOADS_ANNOTATION`], naming the kubelet Lease's `renewTime` as it read it),
//!   to stop the instance workloads. The agent does so only while the kubelet Lease's
//!   `renewTime` is still the one named (the kubelet has not been heard from since), keeps
//!   them stopped, and says so on its own Lease ([`WORKLOADS_STOPPED_ANNOTATION`], the same
//!   `renewTime`); the controller fences the node only on that word. Once the kubelet renews
//!   again, the agent lets go.
//! - **A fenced node runs no instance.** While its Node carries the out-of-service taint,
//!   the agent keeps the instance containers stopped through CRI (a kubelet back before the
//!   taint is lifted would start them again while its pods are being deleted). Not the stop
//!   command: one that reboots the node must not run again each time the node comes back
//!   still tainted.
//! - **A pod that is gone is stopped.** An instance container whose pod no longer exists in
//!   the API (force-deleted from a node whose kubelet is silent) is stopped through CRI: a
//!   kubelet that comes back would not start it again, but until it syncs it runs on.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};

use super::cri::Runtime;
use super::workloads::{WorkloadArgs, Workloads};
use super::{AgentArgs, Shared};
use kube_failover_core::api::{NODE_LEASE_NAMESPACE, STOP_WORKLOADS_ANNOTATION};
use kube_failover_core::decide::health::OUT_OF_SERVICE_TAINT;

/// How long after a stop that failed the agent tries again.
const STOP_RETRY_AFTER: Duration = Duration::from_secs(5);

/// How often the agent looks for instance containers whose pod is gone.
const GONE_PODS_EVERY: Duration = Duration::from_secs(5);

/// What the guard must do now, from what it sees of its Node and its kubelet's Lease.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing: nobody asked, or the kubelet has renewed since.
    Free,
    /// Keep the instance workloads stopped, and attest it: the controller asked about the
    /// kubelet's renewal `since`, and the kubelet has not renewed since.
    Hold { since: String },
}

/// The verdict from the Node's annotations and the kubelet's Lease, at `now` on this node's
/// clock (the clock the kubelet writes its `renewTime` with). Beyond the controller's word,
/// the agent sees for itself that the kubelet is overdue: its last renewal is older than its
/// renewal interval (a quarter of its Lease's duration) plus a second. A request made on a
/// stale view of a kubelet that heartbeats stops nothing. Pure, for tests.
pub fn verdict(node: Option<&Node>, kubelet: Option<&Lease>, now: jiff::Timestamp) -> Verdict {
    let Some(spec) = kubelet.and_then(|l| l.spec.as_ref()) else {
        return Verdict::Free;
    };
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return Verdict::Free;
    };
    let every = spec
        .lease_duration_seconds
        .map_or(jiff::SignedDuration::from_secs(10), |d| {
            jiff::SignedDuration::from_millis(i64::from(d) * 250)
        });
    let overdue = now.duration_since(renewed) > every + jiff::SignedDuration::from_secs(1);
    // Compared as instants: the controller and the API server may print a time differently.
    node.and_then(|n| n.annotations().get(STOP_WORKLOADS_ANNOTATION))
        .filter(|asked| overdue && asked.parse::<jiff::Timestamp>().ok() == Some(renewed))
        .map_or(Verdict::Free, |asked| Verdict::Hold {
            since: asked.clone(),
        })
}

/// Whether the Node carries the out-of-service taint.
fn out_of_service(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT))
}

/// Runs the guard until the process stops.
pub(super) async fn run(client: Client, args: AgentArgs, shared: Arc<Shared>) {
    let node_field = format!("metadata.name={}", args.node);
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let (node_store, node_writer) = reflector::store::<Node>();
    let (lease_store, lease_writer) = reflector::store::<Lease>();
    let changed = Arc::new(tokio::sync::Notify::new());
    let node_events = watcher(nodes, watcher::Config::default().fields(&node_field))
        .default_backoff()
        .reflect(node_writer)
        .applied_objects()
        .map(|_| ());
    let lease_events = watcher(leases, watcher::Config::default().fields(&node_field))
        .default_backoff()
        .reflect(lease_writer)
        .applied_objects()
        .map(|_| ());
    {
        let changed = changed.clone();
        tokio::spawn(
            futures::stream::select(node_events, lease_events).for_each(move |_| {
                changed.notify_one();
                futures::future::ready(())
            }),
        );
    }
    let mut workloads = Workloads::new(&args.workloads, &args.node);
    // The kubelet renewal the instance workloads are held stopped since, if they are.
    let mut holding: Option<String> = None;
    // After a stop that failed, the next try waits a little (the runtime may be restarting).
    let mut retry_at = Instant::now();
    let mut last_gone_sweep = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = changed.notified() => {}
        }
        let node = node_store.state().into_iter().next();
        let kubelet = lease_store.state().into_iter().next();
        let now = verdict(node.as_deref(), kubelet.as_deref(), jiff::Timestamp::now());
        match (now, &holding) {
            (Verdict::Hold { since }, None) if Instant::now() >= retry_at => {
                tracing::warn!(
                    kubelet_last_renewed = %since,
                    "its kubelet is silent and the controller asked: stopping the instance \
                     workloads on this node"
                );
                if workloads.stop_all().await {
                    set_stopped(&shared, Some(since.clone()));
                    holding = Some(since);
                } else {
                    tracing::error!(
                        "the instance workloads could not be stopped (no --cri-socket or \
                         --stop-command, or they failed): the controller is not told they \
                         stopped, and does not fence this node"
                    );
                    retry_at = Instant::now() + STOP_RETRY_AFTER;
                }
            }
            (Verdict::Hold { since }, Some(held)) => {
                workloads.keep_stopped().await;
                if since != *held {
                    set_stopped(&shared, Some(since.clone()));
                    holding = Some(since);
                }
            }
            (Verdict::Free, Some(_)) => {
                tracing::info!(
                    "the kubelet heartbeats again: the instance workloads are no longer held \
                     stopped"
                );
                set_stopped(&shared, None);
                holding = None;
            }
            _ => {}
        }
        if node.as_deref().is_some_and(out_of_service) {
            // At most once a second, through CRI only (see the module's notes).
            workloads.keep_stopped().await;
        }
        if last_gone_sweep.elapsed() >= GONE_PODS_EVERY {
            last_gone_sweep = Instant::now();
            if let Some(socket) = &args.workloads.cri_socket {
                stop_gone_pods(&client, socket, &args.workloads).await;
            }
        }
    }
}

/// What the agent's Lease says of the stopped workloads; a change is written at once.
fn set_stopped(shared: &Shared, since: Option<String>) {
    let mut current = shared
        .workloads_stopped
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if *current != since {
        *current = since;
        shared.poke.notify_one();
    }
}

/// Stops every ready instance sandbox whose pod no longer exists in the API (or exists with
/// another UID: a new pod of the same name). Only a definite "not found" counts: a read that
/// fails stops nothing.
async fn stop_gone_pods(client: &Client, socket: &std::path::Path, args: &WorkloadArgs) {
    let result = async {
        let mut rt = Runtime::connect(socket).await?;
        let sandboxes = rt.instance_sandboxes().await?;
        let mut gone = Vec::new();
        for s in sandboxes {
            let Some((ns, name)) = s.pod.split_once('/') else {
                continue;
            };
            let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
            match pods.get_opt(name).await {
                Ok(None) => gone.push(s),
                Ok(Some(p)) if !s.uid.is_empty() && p.uid().as_deref() != Some(s.uid.as_str()) => {
                    gone.push(s);
                }
                Ok(Some(_)) | Err(_) => {}
            }
        }
        let mut stopped = BTreeSet::new();
        for s in gone {
            match rt.stop(&s, args.grace()).await {
                Ok(()) => {
                    stopped.insert(s.pod.clone());
                }
                Err(e) => tracing::error!(
                    pod = %s.pod,
                    error = %format!("{e:#}"),
                    "an instance container whose pod is gone was not stopped"
                ),
            }
        }
        anyhow::Ok(stopped)
    };
    match result.await {
        Ok(stopped) if !stopped.is_empty() => tracing::warn!(
            pods = ?stopped,
            "instance containers whose pod no longer exists in the API stopped"
        ),
        Ok(_) => {}
        Err(e) => tracing::debug!(error = %format!("{e:#}"), "gone pods not checked"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(annotation: Option<&str>) -> Node {
        let mut n: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "spec": {},
        }))
        .unwrap();
        if let Some(a) = annotation {
            n.annotations_mut()
                .insert(STOP_WORKLOADS_ANNOTATION.into(), a.into());
        }
        n
    }

    fn kubelet(renew: &str) -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1", "namespace": "kube-node-lease"},
            "spec": {"renewTime": renew, "leaseDurationSeconds": 40},
        }))
        .unwrap()
    }

    #[test]
    fn the_agent_stops_only_while_the_kubelet_is_silent_since_the_time_asked_about() {
        let asked = "2026-12-05T10:00:00.123456Z";
        let at = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let late = at("2026-12-05T10:00:30Z");
        let silent = kubelet("2026-12-05T10:00:00.123456Z");
        // Asked about the kubelet's current renewal (printed another way), and overdue here
        // (40 s Lease: renewed every 10 s): hold.
        assert_eq!(
            verdict(
                Some(&node(Some("2026-12-05T10:00:00.123456+00:00"))),
                Some(&silent),
                late
            ),
            Verdict::Hold {
                since: "2026-12-05T10:00:00.123456+00:00".into()
            }
        );
        // Not overdue on this node's clock (5 s after its renewal): a stale request.
        assert_eq!(
            verdict(
                Some(&node(Some(asked))),
                Some(&silent),
                at("2026-12-05T10:00:05Z")
            ),
            Verdict::Free
        );
        // The kubelet renewed since: nothing.
        assert_eq!(
            verdict(
                Some(&node(Some(asked))),
                Some(&kubelet("2026-12-05T10:00:10.000001Z")),
                late
            ),
            Verdict::Free
        );
        // Nobody asked, or no Node, or no kubelet Lease: nothing.
        assert_eq!(
            verdict(Some(&node(None)), Some(&silent), late),
            Verdict::Free
        );
        assert_eq!(verdict(None, Some(&silent), late), Verdict::Free);
        assert_eq!(verdict(Some(&node(Some(asked))), None, late), Verdict::Free);
    }
}
