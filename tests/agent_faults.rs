//! The node agent's own faults, and the kubelet's apart from the agent's, on the real
//! control plane with real agents (one per node, in a network namespace of its own):
//!
//! - an agent that stops renewing while its kubelet heartbeats (a crash, a restart, a
//!   rollout) is `AgentDown`: its node is never fenced, nothing moves;
//! - a kubelet that dies while its agent renews leaves the containers running: the
//!   controller asks the agent to stop the instance workloads, fences the node only on the
//!   agent's word, and only then starts the new copy (real containerd, as `tests/cri.rs`).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use kube_failover_core::api::{
    AgentState, FailoverCluster, FailoverClusterInstance, INSTANCE_LABEL, MemberState,
    STOP_WORKLOADS_ANNOTATION, WORKLOADS_STOPPED_ANNOTATION, agent_lease_name, reason,
};
use kube_failover_lab::containerd::{Containerd, Kubelet};
use kube_failover_lab::controlplane::install_agent_identity;
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, create_db_online, has_oos_taint, online_on, owner,
    pod_uids, wait_for,
};
use kube_failover_lab::netlab::NetLab;

const T: Duration = Duration::from_secs(90);

/// The network-namespace lab is one per machine (its bridge and namespaces have fixed
/// names): the tests of this file take turns.
static LAB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const RENEW_MS: u64 = 500;
const SELF_FENCE_SECONDS: f64 = 1.5;

/// Agents for nodes `0..n` of `lab`, each with a kubeconfig of its own node's identity.
struct Agents {
    kubeconfigs: Vec<PathBuf>,
    dir: PathBuf,
    nodes: Vec<String>,
    extra: Vec<String>,
}

impl Agents {
    async fn new(
        lab: &NetLab,
        client: &Client,
        ns: &str,
        nodes: &[String],
        extra: &[&str],
    ) -> Self {
        let cp = control_plane();
        install_agent_identity(client, &cp.tools_bin().join("helm"))
            .await
            .unwrap();
        let dir = cp.logs_dir().join(ns);
        std::fs::create_dir_all(&dir).unwrap();
        let mut kubeconfigs = Vec::new();
        for (i, node) in nodes.iter().enumerate() {
            let path = dir.join(format!("kubeconfig-{i}"));
            lab.agent_kubeconfig(cp, client, node, &path).await.unwrap();
            kubeconfigs.push(path);
        }
        Self {
            kubeconfigs,
            dir,
            nodes: nodes.to_vec(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// Starts the agent of node `i`; returns its PID.
    fn start(&self, lab: &mut NetLab, i: usize) -> u32 {
        let kubeconfig = format!("KUBECONFIG={}", self.kubeconfigs[i].display());
        let state = self.dir.join(format!("state-{i}")).display().to_string();
        let mut args: Vec<String> = vec![
            kubeconfig,
            "RUST_LOG=info".into(),
            env!("CARGO_BIN_EXE_kube-failover").into(),
            "agent".into(),
            "--node".into(),
            self.nodes[i].clone(),
            "--interface".into(),
            "eth0".into(),
            "--renew-ms".into(),
            RENEW_MS.to_string(),
            "--self-fence-seconds".into(),
            SELF_FENCE_SECONDS.to_string(),
            "--stop-timeout-seconds".into(),
            "1".into(),
            "--state-dir".into(),
            state,
        ];
        args.extend(self.extra.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.log(i);
        lab.spawn(Some(i), std::path::Path::new("env"), &args, &log)
            .unwrap()
    }

    fn log(&self, i: usize) -> PathBuf {
        self.dir.join(format!("agent-{i}.log"))
    }
}

fn renew_time(l: Option<&Lease>) -> Option<jiff::Timestamp> {
    Some(l?.spec.as_ref()?.renew_time.as_ref()?.0)
}

/// Awaits the agent Lease of `node` renewed after `since`.
async fn agent_renewed_after(client: &Client, node: &str, since: jiff::Timestamp) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    wait_for(
        leases,
        &agent_lease_name(node),
        T,
        "agent Lease renewed",
        |l: Option<&Lease>| renew_time(l).is_some_and(|t| t > since),
    )
    .await;
}

/// A replica of the controller, and the instance `db` preferring `nodes` in order, online on
/// the first.
async fn db_online_on_first(
    ns: &TestNamespace,
    cluster: &str,
    nodes: &[String],
) -> (Replica, Api<FailoverClusterInstance>) {
    let replica = Replica::start(&ns.name, "r", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    create_db_online(&fcis, cluster, nodes).await;
    (replica, fcis)
}

/// The member `node` of `cluster` as its status says.
fn member<'a>(
    c: &'a FailoverCluster,
    node: &str,
) -> Option<&'a kube_failover_core::api::MemberStatus> {
    c.status.as_ref()?.members.iter().find(|m| m.name == node)
}

/// An agent that stops renewing while its kubelet heartbeats (killed, then restarted 20 s
/// later: a crash loop, a rollout) makes its node `AgentDown`, never Down: no taint, no
/// move, the pod untouched. With `heartbeat.source: Agent` this fenced a healthy node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_stops_renewing_never_fences_its_heartbeating_node() {
    let _lab = LAB.lock().await;
    let ns = TestNamespace::new("agentdown").await;
    let client = ns.client.clone();
    let cp = control_plane();
    let (cluster, nodes) = ns
        .cluster(
            3,
            serde_json::json!({
                "heartbeat": {"source": "Agent", "leaseStaleSeconds": 2, "notReadySeconds": 60},
            }),
        )
        .await;
    let mut lab = NetLab::create(3, cp.api_addr().unwrap()).await.unwrap();
    let agents = Agents::new(&lab, &client, &ns.name, &nodes, &[]).await;
    let mut pids: Vec<u32> = (0..3).map(|i| agents.start(&mut lab, i)).collect();
    let started = jiff::Timestamp::now();
    for node in &nodes {
        agent_renewed_after(&client, node, started).await;
    }
    let (_replica, fcis) = db_online_on_first(&ns, &cluster, &nodes).await;
    let uid_before = pod_uids(&client, &ns.name).await;
    assert_eq!(uid_before.len(), 1);

    // The agent of node 0 dies; its kubelet goes on.
    lab.kill(pids[0]);
    let clusters: Api<FailoverCluster> = Api::all(client.clone());
    wait_for(
        clusters.clone(),
        &cluster,
        T,
        "node 0 Up with its agent down",
        |c: Option<&FailoverCluster>| {
            c.and_then(|c| member(c, &nodes[0])).is_some_and(|m| {
                m.state == MemberState::Up
                    && m.agent == Some(AgentState::Down)
                    && m.reason.as_deref() == Some(reason::AGENT_DOWN)
            })
        },
    )
    .await;
    // For 20 s (ten times the threshold): no taint on node 0, no move, the same pod.
    let node_api: Api<Node> = Api::all(client.clone());
    let harmed = tokio::time::timeout(
        Duration::from_secs(20),
        futures::future::select(
            Box::pin(kube::runtime::wait::await_condition(
                node_api.clone(),
                &nodes[0],
                |n: Option<&Node>| n.is_some_and(has_oos_taint),
            )),
            Box::pin(kube::runtime::wait::await_condition(
                fcis.clone(),
                "db",
                |f: Option<&FailoverClusterInstance>| {
                    f.is_some_and(|f| {
                        owner(f).as_deref() != Some(nodes[0].as_str())
                            || f.status.as_ref().is_some_and(|s| s.current_move.is_some())
                    })
                },
            )),
        ),
    )
    .await;
    assert!(
        harmed.is_err(),
        "node 0 was fenced or its instance moved while only its agent was down"
    );
    assert_eq!(
        uid_before,
        pod_uids(&client, &ns.name).await,
        "the instance's pod was replaced"
    );

    // The agent is back: Renewing again, the node's reason gone.
    pids[0] = agents.start(&mut lab, 0);
    wait_for(
        clusters,
        &cluster,
        T,
        "node 0's agent renewing again",
        |c: Option<&FailoverCluster>| {
            c.and_then(|c| member(c, &nodes[0])).is_some_and(|m| {
                m.state == MemberState::Up
                    && m.agent == Some(AgentState::Renewing)
                    && m.reason.is_none()
            })
        },
    )
    .await;
    drop(lab);
}

/// Polls the sandbox `id` every 20 ms until it is no longer ready.
async fn sandbox_stopped(kubelet: &mut Kubelet, id: &str) -> Instant {
    let deadline = Instant::now() + T;
    loop {
        if !kubelet.ready(id).await.unwrap() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "the old copy was never stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A kubelet that dies while its agent renews leaves its containers running, and nothing on
/// the node has fenced itself. The controller asks the agent (the Node's
/// `stop-workloads` annotation), the agent stops the instance's container through CRI and
/// says so on its Lease, and only then is the node tainted and the new copy started: never
/// two running copies. The same fault fenced the node and started the second copy at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_kubelet_with_a_live_agent_moves_only_after_the_agent_stopped_the_old_copy() {
    if let Some(why) = Containerd::missing() {
        panic!("this test needs a container runtime: {why}");
    }
    let _lab = LAB.lock().await;
    let ns = TestNamespace::new("kubeletdown").await;
    let client = ns.client.clone();
    let cp = control_plane();
    let (cluster, nodes) = ns
        .cluster(
            2,
            serde_json::json!({
                "heartbeat": {"leaseStaleSeconds": 3, "notReadySeconds": 60},
                "quorum": {"minHealthy": 1},
                "fencing": {"unfenceAfterSeconds": 1},
            }),
        )
        .await;
    let runtime_dir = tempfile::Builder::new()
        .prefix("kf-containerd-")
        .tempdir_in("/tmp")
        .unwrap();
    let runtime = Containerd::start(runtime_dir.path()).await.unwrap();
    let mut kubelet = Kubelet::connect(runtime.socket()).await.unwrap();
    let mut lab = NetLab::create(1, cp.api_addr().unwrap()).await.unwrap();
    let socket = runtime.socket().display().to_string();
    let agents = Agents::new(
        &lab,
        &client,
        &ns.name,
        &nodes[..1],
        &["--cri-socket", &socket],
    )
    .await;
    agents.start(&mut lab, 0);
    agent_renewed_after(&client, &nodes[0], jiff::Timestamp::now()).await;

    let (_replica, fcis) = db_online_on_first(&ns, &cluster, &nodes).await;
    // The old copy: the pod's container, run by the node's runtime.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let old = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(old.len(), 1);
    let old_name = old[0].name_any();
    let old_uid = old[0].uid().unwrap();
    let sandbox = kubelet
        .run_pod_with_uid(&ns.name, &old_name, &old_uid, 0, &[(INSTANCE_LABEL, "db")])
        .await
        .unwrap();

    // Note when the new copy's pod first appears, on this clock.
    let new_seen = {
        let pods = pods.clone();
        let old_uid = old_uid.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            use kube::runtime::{WatchStreamExt, watcher};
            let mut events = std::pin::pin!(
                watcher(pods, watcher::Config::default())
                    .default_backoff()
                    .applied_objects()
            );
            while let Some(p) = events.next().await {
                if p.is_ok_and(|p| p.uid().as_deref() != Some(old_uid.as_str())) {
                    return Instant::now();
                }
            }
            panic!("the pod watch ended");
        })
    };
    // The kubelet of node 0 dies; its agent and the container run on.
    let killed = Instant::now();
    cp.nodes.kill(&nodes[0]).await.unwrap();
    let stopped = sandbox_stopped(&mut kubelet, &sandbox).await;
    let node_api: Api<Node> = Api::all(client.clone());
    let n0 = node_api.get(&nodes[0]).await.unwrap();
    assert!(
        n0.annotations().contains_key(STOP_WORKLOADS_ANNOTATION),
        "the agent stopped the container without being asked: {:?}",
        n0.annotations()
    );
    wait_for(
        fcis.clone(),
        "db",
        T,
        "online on node 1",
        online_on(nodes[1].clone()),
    )
    .await;
    let created = new_seen.await.unwrap();
    println!(
        "old copy stopped {:.2} s after the kubelet died; the new pod appeared {:.2} s after that",
        stopped.duration_since(killed).as_secs_f64(),
        created.duration_since(stopped).as_secs_f64()
    );
    assert!(
        created > stopped,
        "the new copy's pod appeared before the old copy was stopped: two copies; see {}",
        agents.log(0).display()
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let agent_lease = leases.get(&agent_lease_name(&nodes[0])).await.unwrap();
    assert!(
        agent_lease
            .annotations()
            .contains_key(WORKLOADS_STOPPED_ANNOTATION),
        "fenced without the agent's word"
    );
    assert!(has_oos_taint(&node_api.get(&nodes[0]).await.unwrap()));

    // The kubelet comes back: the taint goes, the agent lets go and attests nothing more.
    cp.nodes.revive(&nodes[0]).await.unwrap();
    wait_for(
        node_api.clone(),
        &nodes[0],
        T,
        "node 0 unfenced",
        |n: Option<&Node>| n.is_some_and(|n| !has_oos_taint(n)),
    )
    .await;
    wait_for(
        leases,
        &agent_lease_name(&nodes[0]),
        T,
        "the agent's word withdrawn",
        |l: Option<&Lease>| {
            l.is_some_and(|l| !l.annotations().contains_key(WORKLOADS_STOPPED_ANNOTATION))
        },
    )
    .await;
    drop(lab);
    runtime.stop().await.unwrap();
    drop(runtime_dir);
}
