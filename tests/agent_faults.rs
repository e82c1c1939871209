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
    PEER_GROUPS_ANNOTATION, PeerGroup, STOP_WORKLOADS_ANNOTATION, WORKLOADS_STOPPED_ANNOTATION,
    agent_lease_name, reason,
};
use kube_failover_lab::containerd::{Containerd, Kubelet};
use kube_failover_lab::controlplane::install_agent_identity;
use kube_failover_lab::harness::{
    Replica, TestNamespace, apiserver_pid, control_plane, create_db_online, has_oos_taint,
    online_on, owner, pod_uids, wait_for,
};
use kube_failover_lab::netlab::{self, NetLab};

const T: Duration = Duration::from_secs(90);

/// The network-namespace lab is one per machine (its bridge and namespaces have fixed
/// names): the tests of this file take turns.
static LAB: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
const RENEW_MS: u64 = 500;
const SELF_FENCE_SECONDS: f64 = 1.5;
/// Where the agents answer their peers, on each node's address.
const PEER_PORT: u16 = 9811;
/// The Secret of the peer key, as the chart makes it (empty) for release `kube-failover`.
const PEER_KEY_SECRET: &str = "kube-system/kube-failover-agent-peers";
/// A self-fence time with which peers can hold an agent through an API server stall, with
/// renewals every 500 ms: past a peer's 1 s Lease and the 0.5 s allowance, plus a round of
/// asks and its answers (the agent warns below 2.25 s).
const PEER_SELF_FENCE_SECONDS: f64 = 3.0;

/// Agents for nodes `0..n` of `lab`, each with a kubeconfig of its own node's identity.
struct Agents {
    kubeconfigs: Vec<PathBuf>,
    dir: PathBuf,
    nodes: Vec<String>,
    extra: Vec<String>,
    self_fence: f64,
    /// The agents ask their peers before fencing themselves, with the key of the chart's
    /// Secret (which the first of them fills).
    peer_key: bool,
    /// The process of each node's agent, as last started.
    pids: std::sync::Mutex<std::collections::BTreeMap<usize, u32>>,
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
            self_fence: SELF_FENCE_SECONDS,
            peer_key: false,
            pids: Default::default(),
        }
    }

    /// Agents that ask their peers before fencing themselves, fence themselves after
    /// `self_fence` seconds (long enough for the peers to hold them through an API server
    /// stall), and run a stop command that leaves a mark (`stopped(i)`) when they do.
    async fn with_peers(
        lab: &NetLab,
        client: &Client,
        ns: &str,
        nodes: &[String],
        self_fence: f64,
    ) -> Self {
        let mut agents = Self::new(lab, client, ns, nodes, &[]).await;
        let command = format!("touch {}/stopped-$NODE_NAME", agents.dir.display());
        agents.extra = vec!["--stop-command".into(), command];
        agents.peer_key = true;
        agents.self_fence = self_fence;
        agents
    }

    /// Whether the agent of node `i` has fenced itself (run its stop command).
    fn stopped(&self, i: usize) -> bool {
        self.dir.join(format!("stopped-{}", self.nodes[i])).exists()
    }

    /// Starts the agent of node `i`; returns its PID.
    fn start(&self, lab: &mut NetLab, i: usize) -> u32 {
        let kubeconfig = format!("KUBECONFIG={}", self.kubeconfigs[i].display());
        let state = self.dir.join(format!("state-{i}")).display().to_string();
        let mut args: Vec<String> = vec![
            kubeconfig,
            "RUST_LOG=info,kube_failover_agent::peers=debug".into(),
            env!("CARGO_BIN_EXE_kube-failover").into(),
            "agent".into(),
            "--node".into(),
            self.nodes[i].clone(),
            "--interface".into(),
            "eth0".into(),
            "--renew-ms".into(),
            RENEW_MS.to_string(),
            "--self-fence-seconds".into(),
            self.self_fence.to_string(),
            "--stop-timeout-seconds".into(),
            "1".into(),
            "--state-dir".into(),
            state,
        ];
        args.extend(self.extra.iter().cloned());
        if self.peer_key {
            args.extend([
                "--peer-address".into(),
                format!("{}:{PEER_PORT}", netlab::node_ip(i)),
                "--peer-key-secret".into(),
                PEER_KEY_SECRET.into(),
            ]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let log = self.log(i);
        let pid = lab
            .spawn(Some(i), std::path::Path::new("env"), &args, &log)
            .unwrap();
        self.pids.lock().unwrap().insert(i, pid);
        pid
    }

    /// The process of node `i`'s agent, as last started.
    fn pid(&self, i: usize) -> u32 {
        self.pids.lock().unwrap()[&i]
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

/// Awaits the agent Lease of every node naming the peer group of `cluster` with all of
/// `nodes` in it: the agents know whom to ask.
async fn peers_known(client: &Client, cluster: &str, nodes: &[String]) {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    for node in nodes {
        wait_for(
            leases.clone(),
            &agent_lease_name(node),
            T,
            "the agent's peer group on its Lease",
            |l: Option<&Lease>| {
                l.and_then(|l| l.annotations().get(PEER_GROUPS_ANNOTATION))
                    .and_then(|v| serde_json::from_str::<Vec<PeerGroup>>(v).ok())
                    .is_some_and(|groups| {
                        groups.iter().any(|g| {
                            g.cluster == cluster
                                && nodes.iter().all(|n| g.members.contains(n))
                                && g.required == 2
                        })
                    })
            },
        )
        .await;
    }
}

/// Whether `pattern` is in the log of agent `i`.
fn logged(agents: &Agents, i: usize, pattern: &str) -> bool {
    std::fs::read_to_string(agents.log(i)).is_ok_and(|l| l.contains(pattern))
}

/// A three-node cluster (quorum 2, the default) whose agents ask their peers, `db` online on
/// node 0.
async fn three_with_peers(
    name: &str,
) -> (
    TestNamespace,
    String,
    Vec<String>,
    NetLab,
    Agents,
    Replica,
    Api<FailoverClusterInstance>,
) {
    let ns = TestNamespace::new(name).await;
    let client = ns.client.clone();
    let cp = control_plane();
    let (cluster, nodes) = ns
        .cluster(
            3,
            serde_json::json!({"heartbeat": {"leaseStaleSeconds": 3, "notReadySeconds": 60}}),
        )
        .await;
    let mut lab = NetLab::create(3, cp.api_addr().unwrap()).await.unwrap();
    let agents = Agents::with_peers(&lab, &client, &ns.name, &nodes, PEER_SELF_FENCE_SECONDS).await;
    let started = jiff::Timestamp::now();
    for i in 0..3 {
        agents.start(&mut lab, i);
    }
    for node in &nodes {
        agent_renewed_after(&client, node, started).await;
    }
    let (replica, fcis) = db_online_on_first(&ns, &cluster, &nodes).await;
    peers_known(&client, &cluster, &nodes).await;
    // The chart's Secret was empty; an agent wrote the key into it, through its own rights.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "kube-system");
    let secret = secrets.get("kube-failover-agent-peers").await.unwrap();
    let key = secret
        .data
        .as_ref()
        .and_then(|d| d.get("key"))
        .map(|k| k.0.len());
    assert!(key.is_some_and(|n| n >= 32), "peer key: {key:?} bytes");
    (ns, cluster, nodes, lab, agents, replica, fcis)
}

/// An API server stall of 10 s with every agent running cuts every agent off at once. Each
/// asks its peers, hears that they are cut off too (the cluster has no quorum: the API
/// server is down, not the node), and holds: no agent fences itself, nothing stops, nothing
/// moves. Each agent used to fence itself after its self-fence time, stopping every
/// instance of the cluster because of the API server alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_server_stall_with_every_agent_running_stops_nothing() {
    use nix::sys::signal::{Signal, kill};
    let _lab = LAB.lock().await;
    let (ns, cluster, nodes, mut lab, agents, _replica, fcis) = three_with_peers("stall").await;
    let client = ns.client.clone();
    let uids = pod_uids(&client, &ns.name).await;
    // The agent of node 0 restarts just before the stall (a rollout, a crash): it asks with
    // what its predecessor kept on the node (the key, the peers' addresses, its groups).
    let kept = agents
        .dir
        .join("state-0")
        .join(format!("peers-{}.json", nodes[0]));
    wait_until(T, "node 0's agent keeping its peers' addresses", || {
        std::fs::read(&kept)
            .ok()
            .and_then(|b| serde_json::from_slice::<kube_failover_agent::peers::Saved>(&b).ok())
            .is_some_and(|s| nodes[1..].iter().all(|n| s.addresses.contains_key(n)))
    })
    .await;
    lab.kill(agents.pid(0));
    agents.start(&mut lab, 0);

    let pid = apiserver_pid();
    kill(pid, Signal::SIGSTOP).unwrap();
    let stalled = Instant::now();
    // Every agent is past its self-fence time well before the end of the stall.
    while stalled.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if (0..3).any(|i| agents.stopped(i)) {
            break;
        }
    }
    kill(pid, Signal::SIGCONT).unwrap();
    let fenced: Vec<&String> = (0..3)
        .filter(|i| agents.stopped(*i))
        .map(|i| &nodes[i])
        .collect();
    assert!(
        fenced.is_empty(),
        "agents of {fenced:?} fenced themselves during an API server stall; logs in {}",
        agents.dir.display()
    );
    for i in 0..3 {
        assert!(
            logged(&agents, i, "holding, not fencing"),
            "agent {i} never held on its peers' word: {}",
            agents.log(i).display()
        );
    }
    // Once the API server is back: every member and agent up again, the same pod, no taint,
    // and nobody stopped anything meanwhile.
    let clusters: Api<FailoverCluster> = Api::all(client.clone());
    wait_for(
        clusters,
        &cluster,
        T,
        "every member up with its agent renewing",
        |c: Option<&FailoverCluster>| {
            nodes.iter().all(|n| {
                c.and_then(|c| member(c, n)).is_some_and(|m| {
                    m.state == MemberState::Up && m.agent == Some(AgentState::Renewing)
                })
            })
        },
    )
    .await;
    wait_for(
        fcis,
        "db",
        T,
        "db online on node 0",
        online_on(nodes[0].clone()),
    )
    .await;
    assert_eq!(
        uids,
        pod_uids(&client, &ns.name).await,
        "the pod was replaced"
    );
    let node_api: Api<Node> = Api::all(client.clone());
    for n in &nodes {
        assert!(
            !has_oos_taint(&node_api.get(n).await.unwrap()),
            "{n} tainted"
        );
    }
    assert!((0..3).all(|i| !agents.stopped(i)));
    drop(lab);
}

/// A node cut off from the API server while its peers are not (its kubelet and its agent
/// alike) is what self-fencing is for: its agent asks, hears that its peers reach the API
/// server, fences itself, and only then is its instance started elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_the_api_server_alone_fences_itself_before_its_instance_moves() {
    let _lab = LAB.lock().await;
    let (ns, _cluster, nodes, lab, agents, _replica, fcis) = three_with_peers("cutoff").await;
    let client = ns.client.clone();
    let cp = control_plane();
    let new_pod = watch_for_new_pod(&client, &ns.name).await;

    lab.cut_api(0, true);
    cp.nodes.kill(&nodes[0]).await.unwrap();
    let fenced = wait_until(T, "node 0's agent fenced itself", || agents.stopped(0)).await;
    online_off(&fcis, &nodes[0]).await;
    let created = new_pod.await.unwrap();
    assert!(
        created > fenced,
        "the new copy's pod appeared before the cut-off node had fenced itself"
    );
    assert!(
        logged(&agents, 0, "not holding"),
        "{}",
        agents.log(0).display()
    );
    assert!(
        !agents.stopped(1) && !agents.stopped(2),
        "a healthy peer fenced itself"
    );
    lab.cut_api(0, false);
    cp.nodes.revive(&nodes[0]).await.unwrap();
    drop(lab);
}

/// Two of three nodes cut off from the API server: both agents hold (with one member left
/// the cluster has no quorum, and no controller moves anything). When one of them is back,
/// the other hears so from its peers and fences itself; the controller, which regained its
/// quorum at that moment, must wait for that: it taints the still silent node only once the
/// returned agent has renewed steadily for the whole self-fence time, and the instance
/// starts elsewhere only after the cut-off node stopped it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_the_quorum_comes_back_the_node_still_cut_off_fences_itself_before_anything_moves() {
    let _lab = LAB.lock().await;
    let (ns, _cluster, nodes, lab, agents, _replica, fcis) = three_with_peers("regain").await;
    let client = ns.client.clone();
    let cp = control_plane();
    let uids = pod_uids(&client, &ns.name).await;
    let new_pod = watch_for_new_pod(&client, &ns.name).await;

    for i in [0, 1] {
        lab.cut_api(i, true);
        cp.nodes.kill(&nodes[i]).await.unwrap();
    }
    // Both hold: past their self-fence time three times over, nothing stopped, no move.
    let cut = Instant::now();
    wait_until(T, "both cut-off agents holding", || {
        logged(&agents, 0, "holding, not fencing") && logged(&agents, 1, "holding, not fencing")
    })
    .await;
    while cut.elapsed() < Duration::from_secs_f64(3.0 * PEER_SELF_FENCE_SECONDS) {
        assert!(
            !agents.stopped(0) && !agents.stopped(1),
            "a cut-off agent fenced itself while the cluster had no quorum; logs in {}",
            agents.dir.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        uids,
        pod_uids(&client, &ns.name).await,
        "moved without quorum"
    );

    // Node 1 is back: the quorum too. Node 0, still cut off, fences itself first.
    lab.cut_api(1, false);
    cp.nodes.revive(&nodes[1]).await.unwrap();
    let fenced = wait_until(T, "node 0's agent fenced itself", || agents.stopped(0)).await;
    online_off(&fcis, &nodes[0]).await;
    let created = new_pod.await.unwrap();
    println!(
        "the new pod appeared {:.2} s after the cut-off node fenced itself",
        created.duration_since(fenced).as_secs_f64()
    );
    assert!(
        created > fenced,
        "the new copy's pod appeared before the cut-off node had fenced itself: two copies"
    );
    assert!(
        !agents.stopped(1) && !agents.stopped(2),
        "a healthy node fenced itself"
    );
    lab.cut_api(0, false);
    cp.nodes.revive(&nodes[0]).await.unwrap();
    drop(lab);
}

/// Awaits `db` online on another node than `node`, its move done.
async fn online_off(fcis: &Api<FailoverClusterInstance>, node: &str) {
    wait_for(
        fcis.clone(),
        "db",
        T,
        "db online elsewhere",
        |f: Option<&FailoverClusterInstance>| {
            f.is_some_and(|f| {
                owner(f).is_some_and(|o| o != node)
                    && f.status.as_ref().is_some_and(|s| s.current_move.is_none())
            })
        },
    )
    .await;
}

/// Polls `done` every 50 ms; returns when it first held.
async fn wait_until(timeout: Duration, what: &str, done: impl Fn() -> bool) -> Instant {
    let deadline = Instant::now() + timeout;
    loop {
        if done() {
            return Instant::now();
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Notes when a pod other than those of `ns` now first appears, on this clock.
async fn watch_for_new_pod(client: &Client, ns: &str) -> tokio::task::JoinHandle<Instant> {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let existing: Vec<String> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter_map(|p| p.uid())
        .collect();
    tokio::spawn(async move {
        let mut events = std::pin::pin!(
            watcher(pods, watcher::Config::default())
                .default_backoff()
                .applied_objects()
        );
        while let Some(p) = events.next().await {
            if p.is_ok_and(|p| p.uid().is_some_and(|u| !existing.contains(&u))) {
                return Instant::now();
            }
        }
        panic!("the pod watch ended");
    })
}

/// An agent removed from its node for good (its DaemonSet no longer selects the node) takes
/// down the virtual IP it brought up and deletes its Lease on SIGTERM: no stale Lease keeps
/// the address held there for ever. An agent terminated in a rollout (its DaemonSet still
/// selects the node) leaves both, for the next agent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_removed_from_its_node_for_good_takes_its_vip_down_and_deletes_its_lease() {
    use k8s_openapi::api::apps::v1::DaemonSet;
    use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
    let _lab = LAB.lock().await;
    let ns = TestNamespace::new("retire").await;
    let client = ns.client.clone();
    let cp = control_plane();
    let (cluster, nodes) = ns
        .cluster(
            2,
            serde_json::json!({"heartbeat": {"leaseStaleSeconds": 3, "notReadySeconds": 60}}),
        )
        .await;
    let mut lab = NetLab::create(1, cp.api_addr().unwrap()).await.unwrap();
    let mut agents = Agents::new(&lab, &client, &ns.name, &nodes[..1], &[]).await;

    // The chart's DaemonSet (release kube-failover), running its agent on node 0 by a label.
    let label = format!("{}.test/agent", ns.name);
    let node_api: Api<Node> = Api::all(client.clone());
    let set_label = |on: bool| {
        let patch = serde_json::json!({"metadata": {"labels": {&label: if on { Some("yes") } else { None }}}});
        let node_api = node_api.clone();
        let node = nodes[0].clone();
        async move {
            node_api
                .patch(&node, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    set_label(true).await;
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), "kube-system");
    let selector = serde_json::json!({"app.kubernetes.io/name": "kube-failover-agent-test"});
    let ds: DaemonSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kube-failover-agent"},
        "spec": {
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {"labels": selector},
                "spec": {
                    "serviceAccountName": "kube-failover-agent",
                    "nodeSelector": {&label: "yes"},
                    "tolerations": [{"operator": "Exists"}],
                    "containers": [{"name": "agent", "image": "agent"}],
                },
            },
        },
    }))
    .unwrap();
    daemonsets
        .create(&PostParams::default(), &ds)
        .await
        .unwrap();
    // Its pod on node 0 (held by a finalizer, so that it stays while terminating, as a pod
    // does while its kubelet stops its container): the agent's token is bound to it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "kube-system");
    let on_node = |p: &Pod| {
        p.labels().get("app.kubernetes.io/name").map(String::as_str)
            == Some("kube-failover-agent-test")
            && p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(nodes[0].as_str())
    };
    let deadline = Instant::now() + T;
    let pod = loop {
        let list = pods.list(&ListParams::default()).await.unwrap().items;
        if let Some(p) = list.into_iter().find(|p| on_node(p)) {
            break p;
        }
        assert!(Instant::now() < deadline, "no DaemonSet pod on node 0");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let hold = serde_json::json!({"metadata": {"finalizers": ["kube-failover.io/test-hold"]}});
    pods.patch(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&hold),
    )
    .await
    .unwrap();
    lab.agent_kubeconfig_of(cp, &client, &pod, &agents.kubeconfigs[0])
        .await
        .unwrap();
    agents.extra = vec![
        "--pod-name".into(),
        pod.name_any(),
        "--pod-namespace".into(),
        "kube-system".into(),
    ];
    let mut pid = agents.start(&mut lab, 0);
    agent_renewed_after(&client, &nodes[0], jiff::Timestamp::now()).await;

    // db with the lab's VIP, served by the agent on node 0.
    let _replica = Replica::start(&ns.name, "r", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let mut fci = kube_failover_lab::demo::instance("db", &cluster, &nodes, None).unwrap();
    fci.spec.vip_mode = kube_failover_core::api::VipMode::Agent;
    fci.spec.virtual_ips = vec![netlab::VIP.to_string()];
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "online on node 0",
        online_on(nodes[0].clone()),
    )
    .await;
    wait_until(T, "the VIP up on node 0", || {
        lab.has_address(0, netlab::VIP).unwrap()
    })
    .await;
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = agent_lease_name(&nodes[0]);

    // A rollout: SIGTERM while the DaemonSet still selects node 0. Everything stays.
    assert!(
        lab.terminate(pid, Duration::from_secs(10)),
        "the agent did not exit on SIGTERM"
    );
    assert!(
        lab.has_address(0, netlab::VIP).unwrap(),
        "a rollout took the VIP down"
    );
    assert!(
        leases.get_opt(&lease).await.unwrap().is_some(),
        "a rollout deleted the Lease"
    );
    // The next agent takes the VIP over without taking it down first.
    pid = agents.start(&mut lab, 0);
    let restarted = Instant::now();
    while restarted.elapsed() < Duration::from_secs(3) {
        assert!(
            lab.has_address(0, netlab::VIP).unwrap(),
            "the restarted agent took the VIP down; see {}",
            agents.log(0).display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    agent_renewed_after(&client, &nodes[0], jiff::Timestamp::now()).await;

    // Removed for good: node 0 no longer carries the DaemonSet's label.
    set_label(false).await;
    assert!(
        lab.terminate(pid, Duration::from_secs(10)),
        "the agent did not exit on SIGTERM"
    );
    assert!(
        !lab.has_address(0, netlab::VIP).unwrap(),
        "the VIP is still up on the node the agent left; see {}",
        agents.log(0).display()
    );
    assert!(
        leases.get_opt(&lease).await.unwrap().is_none(),
        "the Lease of the agent that left is still there; see {}",
        agents.log(0).display()
    );
    // The controller sees no agent on node 0 any more.
    let clusters: Api<FailoverCluster> = Api::all(client.clone());
    wait_for(
        clusters,
        &cluster,
        T,
        "node 0 without an agent",
        |c: Option<&FailoverCluster>| {
            c.and_then(|c| member(c, &nodes[0]))
                .is_some_and(|m| m.agent.is_none())
        },
    )
    .await;

    let release = serde_json::json!({"metadata": {"finalizers": null}});
    let _ = pods
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&release),
        )
        .await;
    daemonsets
        .delete("kube-failover-agent", &DeleteParams::default())
        .await
        .unwrap();
    drop(lab);
}
