//! The container side of the simulated kubelets: what each node's kubelet runs in its
//! node's container runtime ([`crate::simruntime`]).
//!
//! KWOK, and during some faults the stand-ins of `super::kubelet`, play the kubelet towards
//! the API server: heartbeats, pod status, confirming deletions. This plays it towards the
//! runtime, from one watch of the instance pods, for every node whose kubelet is alive:
//!
//! - a pod bound to the node and running per the API (phase `Running`, not being deleted)
//!   gets its containers running. One that exited (the node agent stopped it) is started
//!   again after a back-off, as `restartPolicy: Always` does: 10 s, doubled at each restart
//!   up to 40 s; a kubelet that starts afresh (the node revived) has none;
//! - a pod being deleted, or gone from the API, gets its containers stopped.
//!
//! The watch's events are applied one at a time, in their order, to every node at once, and
//! stops before starts. A live kubelet stops a pod's containers before it confirms the pod's
//! deletion; KWOK confirms it here without waiting, but the new pod a move creates elsewhere
//! after the deletion comes later in the same watch: it never finds the old one running
//! because of the simulation.
//!
//! Per fault, the node's kubelet, runtime and agent (the injector sets them):
//!
//! | fault                                | kubelet                    | runtime      | agent     |
//! |--------------------------------------|----------------------------|--------------|-----------|
//! | `NodeKill` (a power cut)             | dead                       | emptied, off | dead      |
//! | `KubeletDead`                        | dead: containers run on    | runs         | renews    |
//! | `NodeCutOff`                         | cut off: does nothing      | runs         | cut off   |
//! | `NodeNotReady`, `NodeSkew` (stand-in)| alive                      | runs         | renews    |
//! | `NodeRelabel`, `NodeCordon`          | alive                      | runs         | renews    |
//! | `AgentKill`, `AgentRollout`          | alive                      | runs         | restarted |
//! | `ApiServerStall`, `ApiServerRestart` | alive, on what it last saw | runs         | cut off   |
//!
//! Healed, a node's kubelet and agent start afresh (a powered-off node boots with an empty
//! runtime), and a cut-off agent's relay is restored.
//!
//! A kubelet cut off from the API server is taken as hearing nothing and doing nothing. A
//! real one would also start again, with its back-off, the containers its agent stopped
//! (the agent stops them again every second); that is not simulated.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::Notify;

use super::watches::QuickBackoff;
use crate::controlplane::AbortOnDrop;
use crate::simruntime::{PodSpec, Runtimes};

/// The first restart of an exited container waits this long; each next one twice as long,
/// up to [`RESTART_BACKOFF_MAX`].
const RESTART_BACKOFF: Duration = Duration::from_secs(10);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(40);

/// How often a kubelet looks at its runtime again (the kubelet's relist): a container
/// stopped behind its back is noticed within this.
const RELIST_EVERY: Duration = Duration::from_secs(1);

/// Which nodes' kubelets are alive: they start and stop containers. Shared between the
/// injector, which kills and revives them, and the task that plays them.
#[derive(Clone)]
pub struct Kubelets {
    alive: Arc<Mutex<BTreeSet<String>>>,
    changed: Arc<Notify>,
}

impl Kubelets {
    /// The kubelets of `nodes`, all alive.
    pub fn new(nodes: &[String]) -> Self {
        Self {
            alive: Arc::new(Mutex::new(nodes.iter().cloned().collect())),
            changed: Arc::new(Notify::new()),
        }
    }

    /// Kills (`false`) or starts afresh (`true`) the kubelet of `node`.
    pub fn set_alive(&self, node: &str, alive: bool) {
        {
            let mut set = self.alive.lock().unwrap_or_else(|e| e.into_inner());
            if alive {
                set.insert(node.to_string());
            } else {
                set.remove(node);
            }
        }
        self.changed.notify_one();
    }

    fn alive(&self) -> BTreeSet<String> {
        self.alive.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Plays the live kubelets' part in the runtimes for the pods of `namespace`, until
    /// the returned task is dropped.
    pub fn start(&self, client: Client, namespace: &str, runtimes: Runtimes) -> AbortOnDrop {
        let kubelets = self.clone();
        let pods: Api<Pod> = Api::namespaced(client, namespace);
        AbortOnDrop(tokio::spawn(async move {
            let (store, writer) = reflector::store::<Pod>();
            let mut events = watcher(pods, watcher::Config::default())
                .backoff(QuickBackoff(Duration::from_millis(100)))
                .reflect(writer)
                .boxed();
            let mut relist = tokio::time::interval(RELIST_EVERY);
            let mut sync = Sync::new(runtimes);
            let mut listed = false;
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(watcher::Event::InitDone)) => listed = true,
                        Some(_) => {}
                        None => return,
                    },
                    () = kubelets.changed.notified() => {}
                    _ = relist.tick() => {}
                }
                // Before the first list, no pod is known: stopping every container would be
                // the simulation's doing, not a kubelet's.
                if listed {
                    sync.pass(&store.state(), &kubelets.alive(), Instant::now());
                }
            }
        }))
    }
}

/// A kubelet's memory of a pod whose containers it started.
struct Restarts {
    /// Restarts so far.
    count: u32,
    /// When it saw the pod's containers not running since it last started them.
    exited_seen: Option<Instant>,
}

/// The kubelets' state between passes.
struct Sync {
    runtimes: Runtimes,
    /// By node and pod UID.
    restarts: BTreeMap<(String, String), Restarts>,
    /// The live kubelets of the last pass: one alive now but not then started afresh.
    was_alive: BTreeSet<String>,
}

/// The back-off before restart number `count + 1`.
fn backoff(count: u32) -> Duration {
    RESTART_BACKOFF
        .saturating_mul(2u32.saturating_pow(count))
        .min(RESTART_BACKOFF_MAX)
}

/// What a kubelet hands its runtime for `pod`, if the API says it runs on a node.
fn running_on(pod: &Pod) -> Option<(String, PodSpec)> {
    let node = pod.spec.as_ref()?.node_name.clone()?;
    let running = pod.status.as_ref()?.phase.as_deref() == Some("Running");
    if !running || pod.metadata.deletion_timestamp.is_some() {
        return None;
    }
    let spec = PodSpec {
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        uid: pod.uid()?,
        labels: pod.labels().clone(),
        containers: pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter().map(|c| c.name.clone()))
            .collect(),
    };
    Some((node, spec))
}

impl Sync {
    fn new(runtimes: Runtimes) -> Self {
        Self {
            runtimes,
            restarts: BTreeMap::new(),
            was_alive: BTreeSet::new(),
        }
    }

    /// One pass of every live kubelet over its runtime: stops what should not run, then
    /// starts what should.
    fn pass(&mut self, pods: &[Arc<Pod>], alive: &BTreeSet<String>, now: Instant) {
        let mut wanted: BTreeMap<String, BTreeMap<String, PodSpec>> = BTreeMap::new();
        for (node, spec) in pods.iter().filter_map(|p| running_on(p)) {
            if alive.contains(&node) {
                wanted
                    .entry(node)
                    .or_default()
                    .insert(spec.uid.clone(), spec);
            }
        }
        // A kubelet started afresh remembers no restarts; none is kept for a pod no longer
        // wanted.
        let was_alive = std::mem::replace(&mut self.was_alive, alive.clone());
        self.restarts.retain(|(node, uid), _| {
            was_alive.contains(node) && wanted.get(node).is_some_and(|w| w.contains_key(uid))
        });
        for node in alive {
            let keep = wanted.get(node);
            for uid in self.runtimes.running_pods(node) {
                if keep.is_none_or(|k| !k.contains_key(&uid)) {
                    self.runtimes.stop_pod(node, &uid);
                }
            }
        }
        for (node, specs) in &wanted {
            let running = self.runtimes.running_pods(node);
            for (uid, spec) in specs {
                let key = (node.clone(), uid.clone());
                if running.contains(uid) {
                    if let Some(r) = self.restarts.get_mut(&key) {
                        r.exited_seen = None;
                    }
                    continue;
                }
                if self.due(&key, now) && self.runtimes.run_pod(node, spec) > 0 {
                    let r = self.restarts.entry(key).or_insert(Restarts {
                        count: 0,
                        exited_seen: None,
                    });
                    r.exited_seen = None;
                }
            }
        }
    }

    /// Whether the pod `key` may be started now: never started by this kubelet, or its
    /// back-off has passed since its containers were seen exited (noted here if not yet).
    fn due(&mut self, key: &(String, String), now: Instant) -> bool {
        let Some(r) = self.restarts.get_mut(key) else {
            return true;
        };
        let exited = *r.exited_seen.get_or_insert(now);
        if now < exited + backoff(r.count) {
            return false;
        }
        r.count += 1;
        true
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kube_failover_core::api::INSTANCE_LABEL;

    fn pod(name: &str, node: &str, phase: &str, deleting: bool) -> Arc<Pod> {
        let mut meta = serde_json::json!({
            "name": name, "namespace": "chaos", "uid": format!("uid-{name}"),
            "labels": {INSTANCE_LABEL: "db"}
        });
        if deleting {
            meta["deletionTimestamp"] = serde_json::json!("2026-01-01T00:00:00Z");
        }
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": meta,
                "spec": {"nodeName": node, "containers": [{"name": "db", "image": "x"}]},
                "status": {"phase": phase}
            }))
            .unwrap(),
        )
    }

    fn copies(rt: &Runtimes) -> Vec<String> {
        rt.running_copies()
            .values()
            .flatten()
            .map(|c| format!("{}@{}", c.pod, c.node))
            .collect()
    }

    #[test]
    fn live_kubelets_run_running_pods_and_stop_the_rest_dead_ones_touch_nothing() {
        let rt = Runtimes::new();
        for n in ["a", "b"] {
            rt.add_node(n);
        }
        let mut sync = Sync::new(rt.clone());
        let both = BTreeSet::from(["a".to_string(), "b".to_string()]);
        let t0 = Instant::now();
        // Pending pods run nowhere.
        sync.pass(&[pod("db-1", "a", "Pending", false)], &both, t0);
        assert!(copies(&rt).is_empty());
        sync.pass(&[pod("db-1", "a", "Running", false)], &both, t0);
        assert_eq!(copies(&rt), ["chaos/db-1@a"]);
        // a's kubelet dies: the pod deleted and a new one on b leave two running.
        let only_b = BTreeSet::from(["b".to_string()]);
        sync.pass(&[pod("db-2", "b", "Running", false)], &only_b, t0);
        assert_eq!(copies(&rt), ["chaos/db-1@a", "chaos/db-2@b"]);
        // Alive again: what is gone from the API is stopped.
        sync.pass(&[pod("db-2", "b", "Running", false)], &both, t0);
        assert_eq!(copies(&rt), ["chaos/db-2@b"]);
        // Being deleted: stopped at once.
        sync.pass(&[pod("db-2", "b", "Running", true)], &both, t0);
        assert!(copies(&rt).is_empty());
    }

    #[test]
    fn a_container_stopped_behind_the_kubelets_back_is_restarted_after_a_back_off() {
        let rt = Runtimes::new();
        rt.add_node("a");
        let mut sync = Sync::new(rt.clone());
        let a = BTreeSet::from(["a".to_string()]);
        let pods = [pod("db-1", "a", "Running", false)];
        let t0 = Instant::now();
        sync.pass(&pods, &a, t0);
        // The agent stops it (as over CRI).
        rt.stop_pod("a", "uid-db-1");
        sync.pass(&pods, &a, t0 + Duration::from_secs(1));
        sync.pass(&pods, &a, t0 + Duration::from_secs(10));
        assert!(copies(&rt).is_empty(), "within the first back-off");
        sync.pass(&pods, &a, t0 + Duration::from_secs(11));
        assert_eq!(copies(&rt), ["chaos/db-1@a"]);
        rt.stop_pod("a", "uid-db-1");
        sync.pass(&pods, &a, t0 + Duration::from_secs(12));
        sync.pass(&pods, &a, t0 + Duration::from_secs(31));
        assert!(
            copies(&rt).is_empty(),
            "the second back-off is twice as long"
        );
        sync.pass(&pods, &a, t0 + Duration::from_secs(32));
        assert_eq!(copies(&rt), ["chaos/db-1@a"]);
        // A kubelet started afresh (its node revived) starts at once.
        rt.stop_pod("a", "uid-db-1");
        sync.pass(&pods, &BTreeSet::new(), t0 + Duration::from_secs(33));
        sync.pass(&pods, &a, t0 + Duration::from_secs(34));
        assert_eq!(copies(&rt), ["chaos/db-1@a"]);
    }
}
