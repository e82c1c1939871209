//! A simulated container runtime: the CRI `RuntimeService` of each simulated node, on a unix
//! socket, holding pod sandboxes and containers that run nothing.
//!
//! The lab plays the kubelet's part: it runs a pod on a node ([`Runtimes::run_pod`]: a ready
//! sandbox carrying the pod's labels, namespace, name and UID as the kubelet sets them, and
//! one running container per container of the pod) and stops it ([`Runtimes::stop_pod`])
//! directly, not over gRPC. The node agent reaches its node's runtime as it reaches
//! containerd, over the socket, where what it calls (`crates/agent/src/cri.rs`) is served
//! as containerd serves it: `Version`, `ListPodSandbox`, `ListContainers`, `StopContainer`
//! (the container exits) and `StopPodSandbox` (its containers exit, the sandbox is no longer
//! ready; idempotent). Every other call answers `Unimplemented`.
//!
//! Every node's runtime is in one registry behind one lock, so that the running copies of an
//! instance on all nodes are counted in one consistent snapshot ([`Runtimes::running_copies`]),
//! and every change of them is reported, in order, to an observer (the chaos run's watcher
//! of the invariants): two copies running at once cannot slip between two looks.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{Context, Result};
use k8s_cri::v1 as cri;
use k8s_cri::v1::runtime_service_server::{RuntimeService, RuntimeServiceServer};
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::controlplane::AbortOnDrop;
use kube_failover_core::api::INSTANCE_LABEL;

/// How the runtime names itself (`Version`).
pub const RUNTIME_NAME: &str = "kube-failover-simruntime";

/// The labels the kubelet adds to a sandbox (beside the pod's own) and to a container.
const POD_NAME_LABEL: &str = "io.kubernetes.pod.name";
const POD_NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
const POD_UID_LABEL: &str = "io.kubernetes.pod.uid";
const CONTAINER_NAME_LABEL: &str = "io.kubernetes.container.name";

/// A pod as the kubelet hands it to the runtime.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodSpec {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub labels: BTreeMap<String, String>,
    /// The names of its containers.
    pub containers: Vec<String>,
}

/// One running copy of an instance's workload: a pod sandbox with a running container.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct RunningCopy {
    pub node: String,
    /// `namespace/name` of the pod.
    pub pod: String,
    pub uid: String,
    pub sandbox: String,
}

impl std::fmt::Display for RunningCopy {
    /// `pod (uid) on node`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}) on {}", self.pod, self.uid, self.node)
    }
}

/// The running copies of each instance (`namespace/instance`) on every node; an instance
/// with none is absent.
pub type Copies = BTreeMap<String, Vec<RunningCopy>>;

/// What happened to containers, for a run's summary.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct RuntimeCounts {
    /// Containers started (by the kubelets).
    pub started: usize,
    /// Running containers stopped by their node's kubelet (their pod deleted or gone).
    pub stopped_by_kubelet: usize,
    /// Running containers stopped through the CRI socket (by the node agent).
    pub stopped_through_cri: usize,
    /// Running containers gone with their node's power.
    pub lost_to_power_off: usize,
}

/// Told the running copies at every change of them, and at [`Runtimes::announce`]; called
/// with the registry's lock held, so in the order of the changes. It must not block.
type Observer = Box<dyn Fn(&Copies) + Send + Sync>;

/// The runtimes of every simulated node (cheap to clone: one shared registry).
#[derive(Clone, Default)]
pub struct Runtimes {
    inner: Arc<Mutex<Registry>>,
}

#[derive(Default)]
struct Registry {
    nodes: BTreeMap<String, NodeRuntime>,
    next_id: u64,
    counts: RuntimeCounts,
    /// The running copies as last reported.
    copies: Copies,
    observer: Option<Observer>,
}

#[derive(Default)]
struct NodeRuntime {
    /// Powered off: nothing runs, and the socket answers `Unavailable`.
    off: bool,
    sandboxes: BTreeMap<String, Sandbox>,
    containers: BTreeMap<String, Container>,
}

struct Sandbox {
    pod: PodSpec,
    ready: bool,
    attempt: u32,
    created_at: i64,
}

struct Container {
    sandbox: String,
    name: String,
    attempt: u32,
    running: bool,
    created_at: i64,
}

/// Now, in nanoseconds since the epoch, as CRI dates things.
fn now_ns() -> i64 {
    i64::try_from(jiff::Timestamp::now().as_nanosecond()).unwrap_or(i64::MAX)
}

impl Registry {
    fn new_id(&mut self, kind: &str) -> String {
        self.next_id += 1;
        format!("{kind}{:012x}", self.next_id)
    }

    /// The running copies of every instance now.
    fn count_copies(&self) -> Copies {
        let mut copies = Copies::new();
        for (node, rt) in self.nodes.iter().filter(|(_, rt)| !rt.off) {
            for (id, s) in &rt.sandboxes {
                let running = rt
                    .containers
                    .values()
                    .any(|c| c.running && c.sandbox == *id);
                let Some(instance) = s.pod.labels.get(INSTANCE_LABEL) else {
                    continue;
                };
                if running {
                    copies
                        .entry(format!("{}/{instance}", s.pod.namespace))
                        .or_default()
                        .push(RunningCopy {
                            node: node.clone(),
                            pod: format!("{}/{}", s.pod.namespace, s.pod.name),
                            uid: s.pod.uid.clone(),
                            sandbox: id.clone(),
                        });
                }
            }
        }
        copies
    }

    /// Tells the observer if the running copies changed.
    fn report_if_changed(&mut self) {
        let now = self.count_copies();
        if now != self.copies {
            self.copies = now;
            if let Some(observer) = &self.observer {
                observer(&self.copies);
            }
        }
    }

    /// Starts the containers of `pod` on `node` that do not run, in its ready sandbox or,
    /// without one, in a new one (its stopped sandboxes removed, as the kubelet does when it
    /// creates the pod's sandbox again). Returns how many it started.
    fn run_pod(&mut self, node: &str, pod: &PodSpec) -> usize {
        if self.nodes.get(node).is_none_or(|rt| rt.off) {
            return 0;
        }
        let ready = self.nodes[node]
            .sandboxes
            .iter()
            .find(|(_, s)| s.ready && s.pod.uid == pod.uid)
            .map(|(id, _)| id.clone());
        let sandbox = match ready {
            Some(id) => id,
            None => self.new_sandbox(node, pod),
        };
        let mut started = 0;
        for name in &pod.containers {
            let id = self.new_id("c");
            let rt = self.nodes.entry(node.to_string()).or_default();
            let mine = |c: &&Container| c.sandbox == sandbox && c.name == *name;
            if rt.containers.values().filter(mine).any(|c| c.running) {
                continue;
            }
            let attempt = rt.containers.values().filter(mine).count() as u32;
            rt.containers.insert(
                id,
                Container {
                    sandbox: sandbox.clone(),
                    name: name.clone(),
                    attempt,
                    running: true,
                    created_at: now_ns(),
                },
            );
            started += 1;
        }
        self.counts.started += started;
        started
    }

    /// A new ready sandbox for `pod` on `node`, in place of its stopped ones.
    fn new_sandbox(&mut self, node: &str, pod: &PodSpec) -> String {
        let id = self.new_id("s");
        let rt = self.nodes.entry(node.to_string()).or_default();
        let old: Vec<String> = rt
            .sandboxes
            .iter()
            .filter(|(_, s)| s.pod.uid == pod.uid)
            .map(|(id, _)| id.clone())
            .collect();
        let attempt = old.len() as u32;
        for o in &old {
            rt.sandboxes.remove(o);
            rt.containers.retain(|_, c| c.sandbox != *o);
        }
        rt.sandboxes.insert(
            id.clone(),
            Sandbox {
                pod: pod.clone(),
                ready: true,
                attempt,
                created_at: now_ns(),
            },
        );
        id
    }

    /// Stops the containers of sandbox `id` and makes it not ready; how many were running.
    fn stop_sandbox(rt: &mut NodeRuntime, id: &str) -> usize {
        let mut stopped = 0;
        for c in rt.containers.values_mut() {
            if c.sandbox == id && c.running {
                c.running = false;
                stopped += 1;
            }
        }
        if let Some(s) = rt.sandboxes.get_mut(id) {
            s.ready = false;
        }
        stopped
    }

    /// The runtime of `node`, if it is powered on (what its socket answers).
    fn serving(&mut self, node: &str) -> Result<&mut NodeRuntime, Status> {
        match self.nodes.get_mut(node) {
            Some(rt) if !rt.off => Ok(rt),
            _ => Err(Status::unavailable(format!(
                "the container runtime of {node} is not running"
            ))),
        }
    }
}

impl Runtimes {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the registry, then reports the running copies if they changed: under
    /// one lock, so that the observer hears of every change in order.
    fn change<R>(&self, f: impl FnOnce(&mut Registry) -> R) -> R {
        let mut registry = self.lock();
        let out = f(&mut registry);
        registry.report_if_changed();
        out
    }

    /// Tells `observer` the running copies at every change of them (and at
    /// [`Self::announce`]), in order. It is called with the registry's lock held: it must
    /// not block nor call back.
    pub fn set_observer(&self, observer: impl Fn(&Copies) + Send + Sync + 'static) {
        self.lock().observer = Some(Box::new(observer));
    }

    /// Tells the observer the running copies now, whether or not they changed.
    pub fn announce(&self) {
        let mut registry = self.lock();
        registry.copies = registry.count_copies();
        if let Some(observer) = &registry.observer {
            observer(&registry.copies);
        }
    }

    /// Adds an empty, powered runtime for `node`.
    pub fn add_node(&self, node: &str) {
        self.lock().nodes.entry(node.to_string()).or_default();
    }

    /// As the kubelet: starts the containers of `pod` on `node` that do not run. Returns
    /// how many it started (none on a node powered off).
    pub fn run_pod(&self, node: &str, pod: &PodSpec) -> usize {
        self.change(|r| r.run_pod(node, pod))
    }

    /// As the kubelet: stops every container of the pod `uid` on `node`. Returns how many
    /// were running.
    pub fn stop_pod(&self, node: &str, uid: &str) -> usize {
        self.change(|r| {
            let Some(rt) = r.nodes.get_mut(node) else {
                return 0;
            };
            let ids: Vec<String> = rt
                .sandboxes
                .iter()
                .filter(|(_, s)| s.pod.uid == uid)
                .map(|(id, _)| id.clone())
                .collect();
            let stopped = ids.iter().map(|id| Registry::stop_sandbox(rt, id)).sum();
            r.counts.stopped_by_kubelet += stopped;
            stopped
        })
    }

    /// The UIDs of the pods with a running container on `node`.
    pub fn running_pods(&self, node: &str) -> BTreeSet<String> {
        let registry = self.lock();
        let Some(rt) = registry.nodes.get(node).filter(|rt| !rt.off) else {
            return BTreeSet::new();
        };
        rt.containers
            .values()
            .filter(|c| c.running)
            .filter_map(|c| rt.sandboxes.get(&c.sandbox))
            .map(|s| s.pod.uid.clone())
            .collect()
    }

    /// Cuts `node`'s power: every sandbox and container is gone, and its socket answers
    /// `Unavailable` until [`Self::power_on`].
    pub fn power_off(&self, node: &str) {
        self.change(|r| {
            let rt = r.nodes.entry(node.to_string()).or_default();
            let lost = rt.containers.values().filter(|c| c.running).count();
            *rt = NodeRuntime {
                off: true,
                ..Default::default()
            };
            r.counts.lost_to_power_off += lost;
        });
    }

    /// Boots `node`: its runtime runs again, empty.
    pub fn power_on(&self, node: &str) {
        self.change(|r| r.nodes.entry(node.to_string()).or_default().off = false);
    }

    /// The running copies of every instance, on every node, now.
    pub fn running_copies(&self) -> Copies {
        self.lock().count_copies()
    }

    pub fn counts(&self) -> RuntimeCounts {
        self.lock().counts
    }

    /// Serves `node`'s runtime on the unix socket `socket` (replacing a stale one) until
    /// the returned task is dropped.
    pub fn serve(&self, node: &str, socket: &Path) -> Result<AbortOnDrop> {
        let _ = std::fs::remove_file(socket);
        let listener = tokio::net::UnixListener::bind(socket)
            .with_context(|| format!("binding the CRI socket {}", socket.display()))?;
        let incoming = futures::stream::unfold(listener, |listener| async move {
            let next = listener.accept().await.map(|(stream, _)| stream);
            Some((next, listener))
        });
        let service = RuntimeServiceServer::new(NodeService {
            node: node.to_string(),
            runtimes: self.clone(),
        });
        let node = node.to_string();
        Ok(AbortOnDrop(tokio::spawn(async move {
            if let Err(e) = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(incoming)
                .await
            {
                tracing::warn!(%node, error = %e, "the simulated container runtime stopped");
            }
        })))
    }
}

/// Whether `labels` carry every pair of `selector`.
fn selected(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn cri_sandbox(id: &str, s: &Sandbox) -> cri::PodSandbox {
    let mut labels: HashMap<String, String> = s.pod.labels.clone().into_iter().collect();
    labels.insert(POD_NAME_LABEL.into(), s.pod.name.clone());
    labels.insert(POD_NAMESPACE_LABEL.into(), s.pod.namespace.clone());
    labels.insert(POD_UID_LABEL.into(), s.pod.uid.clone());
    let state = if s.ready {
        cri::PodSandboxState::SandboxReady
    } else {
        cri::PodSandboxState::SandboxNotready
    };
    cri::PodSandbox {
        id: id.to_string(),
        metadata: Some(cri::PodSandboxMetadata {
            name: s.pod.name.clone(),
            uid: s.pod.uid.clone(),
            namespace: s.pod.namespace.clone(),
            attempt: s.attempt,
        }),
        state: state.into(),
        created_at: s.created_at,
        labels,
        ..Default::default()
    }
}

fn cri_container(id: &str, c: &Container, pod: Option<&PodSpec>) -> cri::Container {
    let mut labels = HashMap::from([(CONTAINER_NAME_LABEL.to_string(), c.name.clone())]);
    if let Some(pod) = pod {
        labels.insert(POD_NAME_LABEL.into(), pod.name.clone());
        labels.insert(POD_NAMESPACE_LABEL.into(), pod.namespace.clone());
        labels.insert(POD_UID_LABEL.into(), pod.uid.clone());
    }
    let state = if c.running {
        cri::ContainerState::ContainerRunning
    } else {
        cri::ContainerState::ContainerExited
    };
    cri::Container {
        id: id.to_string(),
        pod_sandbox_id: c.sandbox.clone(),
        metadata: Some(cri::ContainerMetadata {
            name: c.name.clone(),
            attempt: c.attempt,
        }),
        state: state.into(),
        created_at: c.created_at,
        labels,
        ..Default::default()
    }
}

/// The CRI service of one node's runtime.
struct NodeService {
    node: String,
    runtimes: Runtimes,
}

impl NodeService {
    fn list_sandboxes(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>, Status> {
        let mut registry = self.runtimes.lock();
        let rt = registry.serving(&self.node)?;
        let filter = filter.unwrap_or_default();
        Ok(rt
            .sandboxes
            .iter()
            .map(|(id, s)| cri_sandbox(id, s))
            .filter(|s| filter.id.is_empty() || s.id == filter.id)
            .filter(|s| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|want| want.state == s.state)
            })
            .filter(|s| selected(&s.labels, &filter.label_selector))
            .collect())
    }

    fn list_containers(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>, Status> {
        let mut registry = self.runtimes.lock();
        let rt = registry.serving(&self.node)?;
        let filter = filter.unwrap_or_default();
        Ok(rt
            .containers
            .iter()
            .map(|(id, c)| cri_container(id, c, rt.sandboxes.get(&c.sandbox).map(|s| &s.pod)))
            .filter(|c| filter.id.is_empty() || c.id == filter.id)
            .filter(|c| {
                filter.pod_sandbox_id.is_empty() || c.pod_sandbox_id == filter.pod_sandbox_id
            })
            .filter(|c| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|want| want.state == c.state)
            })
            .filter(|c| selected(&c.labels, &filter.label_selector))
            .collect())
    }

    /// `StopContainer`: the container exits (at once: nothing runs in it to be given a
    /// grace); an unknown one is `NotFound`, as containerd says.
    fn stop_container(&self, id: &str) -> Result<(), Status> {
        self.runtimes.change(|r| {
            let rt = r.serving(&self.node)?;
            let c = rt
                .containers
                .get_mut(id)
                .ok_or_else(|| Status::not_found(format!("container {id} not found")))?;
            if c.running {
                c.running = false;
                r.counts.stopped_through_cri += 1;
            }
            Ok(())
        })
    }

    /// `StopPodSandbox`: its containers exit, it is no longer ready. Idempotent: an unknown
    /// sandbox is not an error (CRI's contract).
    fn stop_sandbox(&self, id: &str) -> Result<(), Status> {
        self.runtimes.change(|r| {
            let rt = r.serving(&self.node)?;
            let stopped = Registry::stop_sandbox(rt, id);
            r.counts.stopped_through_cri += stopped;
            Ok(())
        })
    }
}

/// Writes the `RuntimeService` impl: the calls given, and `Unimplemented` for the others.
/// (A macro writes the whole impl, attribute included, so that `async_trait` sees every
/// method.)
macro_rules! runtime_service {
    (
        impl for $ty:ty { $($served:tt)* }
        unimplemented { $($name:ident($req:ident) -> $resp:ident;)* }
    ) => {
        #[tonic::async_trait]
        impl RuntimeService for $ty {
            $($served)*
            $(
                async fn $name(
                    &self,
                    _: Request<cri::$req>,
                ) -> Result<Response<cri::$resp>, Status> {
                    Err(Status::unimplemented(concat!(
                        stringify!($name),
                        " is not simulated"
                    )))
                }
            )*
        }
    };
}

runtime_service! {
    impl for NodeService {
        async fn version(
            &self,
            _: Request<cri::VersionRequest>,
        ) -> Result<Response<cri::VersionResponse>, Status> {
            Ok(Response::new(cri::VersionResponse {
                version: "0.1.0".into(),
                runtime_name: RUNTIME_NAME.into(),
                runtime_version: env!("CARGO_PKG_VERSION").into(),
                runtime_api_version: "v1".into(),
            }))
        }

        async fn list_pod_sandbox(
            &self,
            request: Request<cri::ListPodSandboxRequest>,
        ) -> Result<Response<cri::ListPodSandboxResponse>, Status> {
            let items = self.list_sandboxes(request.into_inner().filter)?;
            Ok(Response::new(cri::ListPodSandboxResponse { items }))
        }

        async fn list_containers(
            &self,
            request: Request<cri::ListContainersRequest>,
        ) -> Result<Response<cri::ListContainersResponse>, Status> {
            let containers = self.list_containers(request.into_inner().filter)?;
            Ok(Response::new(cri::ListContainersResponse { containers }))
        }

        async fn stop_container(
            &self,
            request: Request<cri::StopContainerRequest>,
        ) -> Result<Response<cri::StopContainerResponse>, Status> {
            self.stop_container(&request.into_inner().container_id)?;
            Ok(Response::new(cri::StopContainerResponse {}))
        }

        async fn stop_pod_sandbox(
            &self,
            request: Request<cri::StopPodSandboxRequest>,
        ) -> Result<Response<cri::StopPodSandboxResponse>, Status> {
            self.stop_sandbox(&request.into_inner().pod_sandbox_id)?;
            Ok(Response::new(cri::StopPodSandboxResponse {}))
        }

        type GetContainerEventsStream =
            futures::stream::Empty<Result<cri::ContainerEventResponse, Status>>;

        async fn get_container_events(
            &self,
            _: Request<cri::GetEventsRequest>,
        ) -> Result<Response<Self::GetContainerEventsStream>, Status> {
            Err(Status::unimplemented("get_container_events is not simulated"))
        }
    }
    unimplemented {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        status(StatusRequest) -> StatusResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse;
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pod(name: &str, instance: &str) -> PodSpec {
        PodSpec {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            labels: BTreeMap::from([(INSTANCE_LABEL.to_string(), instance.to_string())]),
            containers: vec!["db".into()],
        }
    }

    #[test]
    fn copies_are_counted_across_nodes_and_every_change_is_reported_in_order() {
        let rt = Runtimes::new();
        let seen = Arc::new(Mutex::new(Vec::<usize>::new()));
        let log = seen.clone();
        rt.set_observer(move |c| log.lock().unwrap().push(c.get("ns/db").map_or(0, Vec::len)));
        rt.add_node("a");
        rt.add_node("b");
        assert_eq!(rt.run_pod("a", &pod("db-1", "db")), 1);
        assert_eq!(rt.run_pod("a", &pod("db-1", "db")), 0, "already running");
        assert_eq!(rt.run_pod("b", &pod("db-2", "db")), 1);
        assert_eq!(rt.running_copies()["ns/db"].len(), 2);
        assert_eq!(rt.stop_pod("a", "uid-db-1"), 1);
        assert_eq!(rt.running_pods("a"), BTreeSet::new());
        // Started again after a stop: a new sandbox in place of the stopped one.
        assert_eq!(rt.run_pod("a", &pod("db-1", "db")), 1);
        rt.power_off("a");
        assert_eq!(rt.run_pod("a", &pod("db-1", "db")), 0, "no power");
        rt.power_on("a");
        assert_eq!(*seen.lock().unwrap(), vec![1, 2, 1, 2, 1]);
        let counts = rt.counts();
        assert_eq!(
            (
                counts.started,
                counts.stopped_by_kubelet,
                counts.lost_to_power_off
            ),
            (3, 1, 1)
        );
    }

    #[tokio::test]
    async fn the_agent_lists_and_stops_instance_pods_over_the_socket() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("cri.sock");
        let rt = Runtimes::new();
        rt.add_node("a");
        rt.run_pod("a", &pod("db-1", "db"));
        let mut other = pod("web-1", "x");
        other.labels.clear();
        rt.run_pod("a", &other);
        let _server = rt.serve("a", &socket).unwrap();
        let mut client = kube_failover_agent::cri::Runtime::connect(&socket)
            .await
            .unwrap();
        let found = client.instance_sandboxes().await.unwrap();
        assert_eq!(found.len(), 1, "only the instance pod: {found:?}");
        assert_eq!(found[0].pod, "ns/db-1");
        assert_eq!(found[0].uid, "uid-db-1");
        assert_eq!(found[0].instance, "db");
        client
            .stop(&found[0], std::time::Duration::from_secs(1))
            .await
            .unwrap();
        assert!(rt.running_copies().is_empty());
        assert_eq!(
            rt.running_pods("a"),
            BTreeSet::from(["uid-web-1".to_string()])
        );
        assert_eq!(rt.counts().stopped_through_cri, 1);
        assert!(client.instance_sandboxes().await.unwrap().is_empty());
        rt.power_off("a");
        assert!(
            client.instance_sandboxes().await.is_err(),
            "no runtime without power"
        );
    }
}
