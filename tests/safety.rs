//! The faults of `docs/safety.md`, injected on the real control plane: what the controller
//! must never do while they happen.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use kube_failover_core::api::{
    FailoverCluster, FailoverClusterInstance, MemberState, Phase, reason,
};
use kube_failover_lab::demo::instance;
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, create_db_online, create_spread_instances,
    event_reasons, event_reasons_among, free_addr, has_oos_taint, http_get, in_phase, is_online,
    nodes_and_cluster, online_on, online_reason, owner, patch_node, pod_uids, wait_each_instance,
    wait_for,
};

const T: Duration = Duration::from_secs(90);

/// Awaits, polling the replica's /metrics (nothing to watch there), until `metric` is at
/// least `n`.
async fn wait_metric_at_least(addr: std::net::SocketAddr, metric: &str, n: f64) {
    let deadline = Instant::now() + T;
    loop {
        if let Ok((200, text)) = http_get(addr, "/metrics").await {
            let value = text
                .lines()
                .find_map(|l| l.strip_prefix(metric)?.trim().parse::<f64>().ok());
            if value.is_some_and(|v| v >= n) {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{metric} >= {n} within {T:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Fault 1: a restart (a rolling upgrade, a crash loop of the controller) alone never moves,
/// deletes or fences anything.
#[tokio::test]
async fn restarting_the_controller_twenty_times_moves_nothing() {
    let ns = TestNamespace::new("restarts").await;
    let client = ns.client.clone();
    let (cluster, nodes) = ns
        .cluster(
            3,
            serde_json::json!({"heartbeat": {"leaseStaleSeconds": 10, "notReadySeconds": 10}}),
        )
        .await;
    const N: usize = 20;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    create_spread_instances(&client, &ns.name, &cluster, &nodes, N).await;
    let first = Replica::start(&ns.name, "first", false);
    wait_each_instance(&fcis, N, T, "instance Online", is_online).await;
    first.kill();
    let before = pod_uids(&client, &ns.name).await;
    assert_eq!(before.len(), N);

    for round in 0..20 {
        let http = free_addr();
        let replica = Replica::start_serving(&ns.name, &format!("r{round}"), false, Some(http));
        // Every instance has been reconciled by this replica at least once.
        wait_metric_at_least(
            http,
            "kube_failover_reconcile_duration_seconds_count",
            N as f64,
        )
        .await;
        replica.kill();
    }

    let after = pod_uids(&client, &ns.name).await;
    assert_eq!(after, before, "no pod was deleted or replaced");
    let bad = event_reasons_among(
        &client,
        &ns.name,
        &[
            reason::FENCED,
            reason::FAILOVER_STARTED,
            reason::PLANNED_MOVE,
            reason::CLUSTER_NOT_FOUND,
        ],
    )
    .await;
    assert!(bad.is_empty(), "Events of moves after restarts: {bad:?}");
    let node_api: Api<Node> = Api::all(client.clone());
    for n in &nodes {
        assert!(
            !has_oos_taint(&node_api.get(n).await.unwrap()),
            "{n} tainted"
        );
    }
    for f in fcis.list(&ListParams::default()).await.unwrap() {
        let s = f.status.clone().unwrap();
        assert!(is_online(Some(&f)), "{} online: {s:?}", f.name_any());
        assert_eq!(s.failover_count, 0);
        assert_eq!(s.history.len(), 1, "the placement only: {:?}", s.history);
    }
}

/// Fault 5: a node that comes back loses the taint the controller added once it has been
/// healthy for the stabilisation period, counts Up again, and is handed nothing back.
#[tokio::test]
async fn a_returned_node_loses_the_taint_and_counts_up() {
    let ns = TestNamespace::new("unfence").await;
    let client = ns.client.clone();
    let (cluster, nodes) = ns
        .cluster(
            3,
            serde_json::json!({"fencing": {"unfenceAfterSeconds": 2}}),
        )
        .await;
    let _replica = Replica::start(&ns.name, "r", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    fcis.create(
        &PostParams::default(),
        &instance("db", &cluster, &nodes, None).unwrap(),
    )
    .await
    .unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "online on node 0",
        online_on(nodes[0].clone()),
    )
    .await;

    let node_api: Api<Node> = Api::all(client.clone());
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "failed over to node 1",
        online_on(nodes[1].clone()),
    )
    .await;
    let fenced = node_api.get(&nodes[0]).await.unwrap();
    assert!(has_oos_taint(&fenced), "node 0 fenced");

    control_plane().nodes.revive(&nodes[0]).await.unwrap();
    wait_for(
        node_api.clone(),
        &nodes[0],
        T,
        "taint removed",
        |n: Option<&Node>| n.is_some_and(|n| !has_oos_taint(n)),
    )
    .await;
    let fc = wait_for(
        Api::<FailoverCluster>::all(client.clone()),
        &cluster,
        T,
        "node 0 counts Up",
        |c: Option<&FailoverCluster>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.members.iter().all(|m| m.state == MemberState::Up)
                    && s.quorum.as_ref().is_some_and(|q| q.healthy == 3)
            })
        },
    )
    .await;
    assert_eq!(fc.status.unwrap().members.len(), 3);
    let f = fcis.get("db").await.unwrap();
    assert_eq!(
        f.status.unwrap().owner_node.as_deref(),
        Some(nodes[1].as_str()),
        "no failback unless the policy says so"
    );
}

/// Asserts that for `window` the instance stays on `node` and starts no move (and, with
/// `serving`, stays online there): a bounded watch that must time out, since what is
/// awaited is that nothing happens.
async fn assert_stays_on(
    fcis: &Api<FailoverClusterInstance>,
    node: &str,
    window: Duration,
    serving: bool,
    why: &str,
) {
    let left = tokio::time::timeout(
        window,
        kube::runtime::wait::await_condition(
            fcis.clone(),
            "db",
            |f: Option<&FailoverClusterInstance>| {
                f.is_some_and(|f| {
                    let s = f.status.as_ref();
                    owner(f).as_deref() != Some(node)
                        || s.is_some_and(|s| s.current_move.is_some())
                        || (serving && !is_online(Some(f)))
                })
            },
        ),
    )
    .await;
    assert!(left.is_err(), "left {node} {why}: {left:?}");
}

/// Stands in for the kubelet of `node`: renews its Lease every 500 ms with timestamps
/// `skew` behind this machine's clock, until the task is aborted.
fn fake_kubelet(
    leases: Api<k8s_openapi::api::coordination::v1::Lease>,
    node: String,
    skew: jiff::SignedDuration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            let renew = k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                jiff::Timestamp::now() - skew,
            );
            let patch = serde_json::json!({"spec": {"renewTime": renew}});
            let _ = leases
                .patch(
                    &node,
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(patch),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    })
}

/// Awaits `db` online on node 1 after a planned move for `why`: not fenced, node 0 untainted.
async fn moved_gracefully(
    fcis: &Api<FailoverClusterInstance>,
    nodes: &[String],
    why: &str,
    client: &Client,
) {
    let moved = wait_for(
        fcis.clone(),
        "db",
        T,
        "moved to node 1",
        online_on(nodes[1].clone()),
    )
    .await;
    let m = moved.status.unwrap().history.last().cloned().unwrap();
    assert!(m.planned, "a planned move: {m:?}");
    assert_eq!(m.reason, why);
    assert!(m.fenced.is_none(), "{m:?}");
    let node_api: Api<Node> = Api::all(client.clone());
    assert!(
        !has_oos_taint(&node_api.get(&nodes[0]).await.unwrap()),
        "node 0 untainted"
    );
}

/// One instance `db` online on the first of three nodes of a fresh cluster.
async fn one_instance(
    ns: &TestNamespace,
    cluster_spec: serde_json::Value,
) -> (String, Vec<String>, Api<FailoverClusterInstance>, Replica) {
    let client = ns.client.clone();
    let (cluster, nodes) = ns.cluster(3, cluster_spec).await;
    let replica = Replica::start(&ns.name, "r", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    create_db_online(&fcis, &cluster, &nodes).await;
    (cluster, nodes, fcis, replica)
}

async fn pod_uid(client: &Client, ns: &str) -> String {
    let pods = Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 1, "one pod: {pods:?}");
    pods[0].uid().unwrap()
}

/// An owner that left (relabelled, cordoned, deleted) is moved off: no Event says it was
/// fenced or failed over.
async fn assert_neither_fenced_nor_failed_over(client: &Client, ns: &str) {
    let reasons = event_reasons(client, ns).await;
    assert!(
        !reasons
            .iter()
            .any(|r| r == reason::FENCED || r == reason::FAILOVER_STARTED),
        "{reasons:?}"
    );
}

/// Fault 2: a node relabelled out of the cluster has left, not failed: its instance moves
/// gracefully and the node is never fenced.
#[tokio::test]
async fn a_node_that_leaves_the_cluster_is_moved_off_never_fenced() {
    let ns = TestNamespace::new("leaves").await;
    let client = ns.client.clone();
    let (cluster, nodes, fcis, _replica) = one_instance(&ns, serde_json::json!({})).await;
    let label = format!("{cluster}.test/member");
    patch_node(
        &client,
        &nodes[0],
        serde_json::json!({"metadata": {"labels": {label: null}}}),
    )
    .await;
    moved_gracefully(&fcis, &nodes, reason::NOT_A_MEMBER, &client).await;
    assert_neither_fenced_nor_failed_over(&client, &ns.name).await;
}

/// Fault 6: the owner's heartbeats come back during the fencing delay: the failover is
/// called off, the same pod keeps serving, and the node is never tainted.
#[tokio::test]
async fn a_node_back_before_it_was_fenced_keeps_its_instance() {
    let ns = TestNamespace::new("comeback").await;
    let client = ns.client.clone();
    let (_cluster, nodes, fcis, _replica) =
        one_instance(&ns, serde_json::json!({"fencing": {"delaySeconds": 30}})).await;
    let uid = pod_uid(&client, &ns.name).await;
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "waiting to fence",
        |f: Option<&FailoverClusterInstance>| {
            online_reason(f).as_deref() == Some(reason::FENCE_DELAY)
        },
    )
    .await;
    control_plane().nodes.revive(&nodes[0]).await.unwrap();
    let back = wait_for(
        fcis.clone(),
        "db",
        T,
        "online on node 0 again",
        online_on(nodes[0].clone()),
    )
    .await;
    let s = back.status.unwrap();
    assert_eq!(s.failover_count, 0, "a false alarm is not counted");
    assert!(
        s.history.last().unwrap().reason.contains("abandoned"),
        "{:?}",
        s.history
    );
    assert_eq!(pod_uid(&client, &ns.name).await, uid, "the same pod serves");
    let node_api: Api<Node> = Api::all(client.clone());
    assert!(!has_oos_taint(&node_api.get(&nodes[0]).await.unwrap()));
    let reasons = event_reasons(&client, &ns.name).await;
    assert!(!reasons.iter().any(|r| r == reason::FENCED), "{reasons:?}");
}

/// Fault 3: a kubelet whose clock is ten minutes behind renews its Lease with timestamps
/// that look stale to anyone comparing them with their own clock. Its node stays Up and
/// its instance stays; when the renewals stop, it fails over as any other.
#[tokio::test]
async fn a_node_with_a_skewed_clock_is_not_taken_for_dead() {
    use k8s_openapi::api::coordination::v1::Lease;
    let ns = TestNamespace::new("skew").await;
    let client = ns.client.clone();
    // Renewal times that go back ten minutes look like no renewal at all to
    // kube-controller-manager, which then marks the node NotReady: a long `notReadySeconds`
    // keeps that out of what this test is about (the Lease).
    let (_cluster, nodes, fcis, _replica) = one_instance(
        &ns,
        serde_json::json!({"heartbeat": {"leaseStaleSeconds": 3, "notReadySeconds": 120}}),
    )
    .await;
    // KWOK stops heartbeating node 0; from now on this test is its kubelet, ten minutes late.
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let kubelet = fake_kubelet(
        leases,
        nodes[0].clone(),
        jiff::SignedDuration::from_mins(10),
    );
    // Three times the 3 s threshold: the instance must not leave node 0 meanwhile. (Its
    // endpoint may be withdrawn: kube-controller-manager sees renewal times that went back
    // ten minutes as no renewal at all, marks the node Unknown and its pod not ready. The
    // controller keeps the instance where it is: the Lease keeps changing.)
    assert_stays_on(
        &fcis,
        &nodes[0],
        Duration::from_secs(9),
        false,
        "although it heartbeats",
    )
    .await;
    // The renewals stop: now it is dead, skewed or not.
    kubelet.abort();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "failed over to node 1",
        online_on(nodes[1].clone()),
    )
    .await;
}

/// Fault 4: a kubelet that is alive (its Lease renewed) but reports NotReady is never
/// fenced: its instance moves gracefully, and the old pod is left for the kubelet to stop.
#[tokio::test]
async fn a_not_ready_node_with_a_fresh_lease_is_never_fenced() {
    use k8s_openapi::api::coordination::v1::Lease;
    let ns = TestNamespace::new("notready").await;
    let client = ns.client.clone();
    let (_cluster, nodes, fcis, _replica) = one_instance(&ns, serde_json::json!({})).await;
    // From now on this test is node 0's kubelet: alive, renewing its Lease, but NotReady.
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let kubelet = fake_kubelet(leases, nodes[0].clone(), jiff::SignedDuration::ZERO);
    let node_api: Api<Node> = Api::all(client.clone());
    let mut n = node_api.get_status(&nodes[0]).await.unwrap();
    for c in n.status.as_mut().unwrap().conditions.as_mut().unwrap() {
        if c.type_ == "Ready" {
            c.status = "False".into();
            c.reason = Some("KubeletNotReady".into());
        }
    }
    node_api
        .replace_status(&nodes[0], &PostParams::default(), &n)
        .await
        .unwrap();

    // The move starts and waits for the old pod, which only its kubelet may stop.
    let waiting = wait_for(
        fcis.clone(),
        "db",
        T,
        "moving, waiting for the old pod",
        |f: Option<&FailoverClusterInstance>| {
            online_reason(f).as_deref() == Some(reason::STOPPING_OLD_POD)
        },
    )
    .await;
    let m = waiting.status.unwrap().current_move.unwrap();
    assert!(m.planned, "a graceful move: {m:?}");
    assert!(m.fenced.is_none());
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name);
    // The intent is recorded before the delete is sent: await the delete itself.
    let marked = wait_for(
        pods.clone(),
        "db-1",
        T,
        "old pod marked for deletion",
        |p: Option<&Pod>| p.is_some_and(|p| p.metadata.deletion_timestamp.is_some()),
    )
    .await;
    assert!(
        marked.metadata.deletion_grace_period_seconds.unwrap_or(0) > 0,
        "deleted with its grace period, not forced: {:?}",
        marked.metadata.deletion_grace_period_seconds
    );
    let old = [marked];
    assert!(
        !has_oos_taint(&node_api.get(&nodes[0]).await.unwrap()),
        "never fenced"
    );

    // The kubelet stops the pod and confirms; the move completes.
    pods.delete(
        &old[0].name_any(),
        &kube::api::DeleteParams::default().grace_period(0),
    )
    .await
    .unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "online on node 1",
        online_on(nodes[1].clone()),
    )
    .await;
    kubelet.abort();
    assert!(
        !has_oos_taint(&node_api.get(&nodes[0]).await.unwrap()),
        "never fenced"
    );
    let reasons = event_reasons(&client, &ns.name).await;
    assert!(!reasons.iter().any(|r| r == reason::FENCED), "{reasons:?}");
}

/// A controller process of the binary that ships, leader-electing on the Lease
/// `kube-failover-leader` in `ns` (2 s), watching only `ns`.
fn spawn_controller(ns: &str, identity: &str, addr: std::net::SocketAddr) -> tokio::process::Child {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_kube-failover"))
        .args(["run", "--watch-namespace", ns, "--leader-namespace", ns])
        .args(["--lease-seconds", "2", "--identity", identity])
        .args(["--metrics-addr", &addr.to_string()])
        .env("KUBECONFIG", control_plane().kubeconfig())
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

fn signal(child: &tokio::process::Child, sig: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    nix::sys::signal::kill(pid, sig).unwrap();
}

/// Fault 7: a leader paused past its Lease (SIGSTOP) while another takes over and fails an
/// instance over; resumed (SIGCONT), none of its writes contradicts the new leader's.
#[tokio::test]
async fn a_leader_paused_past_its_lease_contradicts_nothing_when_it_wakes() {
    use k8s_openapi::api::coordination::v1::Lease;
    use nix::sys::signal::Signal;
    let ns = TestNamespace::new("paused").await;
    let client = ns.client.clone();
    let (cluster, nodes) = ns.cluster(3, serde_json::json!({})).await;
    let holder_is = |who: &'static str| {
        move |l: Option<&Lease>| {
            l.and_then(|l| l.spec.as_ref()?.holder_identity.as_deref()) == Some(who)
        }
    };
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    let (addr_a, addr_b) = (free_addr(), free_addr());
    let a = spawn_controller(&ns.name, "a", addr_a);
    wait_for(
        leases.clone(),
        "kube-failover-leader",
        T,
        "a leads",
        holder_is("a"),
    )
    .await;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    create_db_online(&fcis, &cluster, &nodes).await;
    let _b = spawn_controller(&ns.name, "b", addr_b);

    signal(&a, Signal::SIGSTOP);
    wait_for(
        leases.clone(),
        "kube-failover-leader",
        T,
        "b takes over",
        holder_is("b"),
    )
    .await;
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let moved = wait_for(
        fcis.clone(),
        "db",
        T,
        "b fails over to node 1",
        online_on(nodes[1].clone()),
    )
    .await;
    let uid = pod_uid(&client, &ns.name).await;

    signal(&a, Signal::SIGCONT);
    // a wakes believing nothing: it knows its Lease ran out on its own clock. Awaited
    // through its /readyz (no watch there), bounded.
    let deadline = Instant::now() + T;
    loop {
        if let Ok((200, body)) = http_get(addr_a, "/readyz").await
            && body.contains("standby")
        {
            break;
        }
        assert!(Instant::now() < deadline, "a reports standby after SIGCONT");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // For three Lease durations after it wakes, nothing moves.
    assert_stays_on(
        &fcis,
        &nodes[1],
        Duration::from_secs(6),
        true,
        "after a woke",
    )
    .await;
    let (now, then) = (
        fcis.get("db").await.unwrap().status.unwrap(),
        moved.status.unwrap(),
    );
    assert_eq!(
        (now.owner_node, now.move_seq, now.history, now.failovers),
        (then.owner_node, then.move_seq, then.history, then.failovers),
        "the moves as b left them"
    );
    assert_eq!(pod_uid(&client, &ns.name).await, uid, "the same pod serves");
    let started = event_reasons(&client, &ns.name)
        .await
        .into_iter()
        .filter(|r| r == reason::FAILOVER_STARTED)
        .count();
    assert_eq!(started, 1, "one failover");
    signal(&a, Signal::SIGKILL);
}

/// Fault 10: a workload that crash-loops on a healthy node (the kubelet restarts its
/// container, `restartPolicy: Always`): each restart is counted once, and past
/// `restart.threshold` the instance moves, gracefully.
#[tokio::test]
async fn a_crash_looping_workload_moves_after_the_restart_threshold() {
    let ns = TestNamespace::new("crashloop").await;
    let client = ns.client.clone();
    let (_cluster, nodes, fcis, _replica) = one_instance(&ns, serde_json::json!({})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    // As the kubelet reports it: the container restarted, then restarted again, and so on.
    let restart = |count: i32| {
        let pods = pods.clone();
        async move {
            let mut p = pods.get_status("db-1").await.unwrap();
            for c in p
                .status
                .as_mut()
                .unwrap()
                .container_statuses
                .as_mut()
                .unwrap()
            {
                c.restart_count = count;
            }
            pods.replace_status("db-1", &PostParams::default(), &p)
                .await
                .unwrap();
        }
    };
    for count in 1..=3 {
        restart(count).await;
        wait_for(
            fcis.clone(),
            "db",
            T,
            "restart counted",
            |f: Option<&FailoverClusterInstance>| {
                f.and_then(|f| f.status.as_ref())
                    .is_some_and(|s| s.restarts.len() == count as usize)
            },
        )
        .await;
    }
    // Seen again and again, the same restarts are not counted again.
    assert_stays_on(
        &fcis,
        &nodes[0],
        Duration::from_secs(3),
        true,
        "within the threshold",
    )
    .await;
    let f = fcis.get("db").await.unwrap();
    assert_eq!(f.status.unwrap().restarts.len(), 3);
    restart(4).await;
    moved_gracefully(&fcis, &nodes, reason::RESTART_THRESHOLD_EXCEEDED, &client).await;
}

/// Fault 13: a node cut off from the API server cannot be told from a dead one. A node whose
/// agent promises to stop its workloads after N seconds alone
/// (`kube-failover.io/self-fence-seconds`) is tainted out of service only once its Lease
/// has been stale for N seconds more (plus a margin): its workload has stopped by then.
#[tokio::test]
async fn a_self_fencing_node_is_tainted_only_after_its_self_fence_time() {
    const SELF_FENCE: u64 = 8;
    let ns = TestNamespace::new("selffence").await;
    let client = ns.client.clone();
    let (_cluster, nodes, fcis, _replica) = one_instance(&ns, serde_json::json!({})).await;
    let node_api: Api<Node> = Api::all(client.clone());
    let annotate = serde_json::json!({"metadata": {"annotations": {
        "kube-failover.io/self-fence-seconds": SELF_FENCE.to_string()
    }}});
    node_api
        .patch(
            &nodes[0],
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&annotate),
        )
        .await
        .unwrap();
    // The annotation is in the controller's cache before the node goes silent.
    wait_for(
        node_api.clone(),
        &nodes[0],
        T,
        "annotated",
        |n: Option<&Node>| {
            n.is_some_and(|n| {
                n.annotations()
                    .contains_key("kube-failover.io/self-fence-seconds")
            })
        },
    )
    .await;
    let killed = Instant::now();
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    wait_for(
        node_api.clone(),
        &nodes[0],
        T,
        "tainted out of service",
        |n: Option<&Node>| n.is_some_and(has_oos_taint),
    )
    .await;
    let after = killed.elapsed();
    // The last renewal was at most a renewal period (1 s) before the kill; the agent stops
    // its workloads the self-fence time after it, and the taint waits the margin more.
    let margin = kube_failover_core::decide::SELF_FENCE_MARGIN.unsigned_abs();
    assert!(
        after >= Duration::from_secs(SELF_FENCE - 1) + margin,
        "tainted {after:?} after the node went silent, before its self-fence time had passed"
    );
    wait_for(
        fcis.clone(),
        "db",
        T,
        "failed over to node 1",
        online_on(nodes[1].clone()),
    )
    .await;
}

/// Fault 12: a shared (ReadWriteMany) volume is legitimately attached to other nodes as
/// well. A failover waits only for the old owner's attachment, and leaves the others be.
#[tokio::test]
async fn a_shared_volume_attached_elsewhere_does_not_hold_a_failover() {
    use k8s_openapi::api::storage::v1::VolumeAttachment;
    use kube_failover_lab::controlplane::play_csi_attacher;
    use kube_failover_lab::demo::{SIM_CSI_DRIVER, csi_claim_with_mode};

    let ns = TestNamespace::new("rwx").await;
    let client = ns.client.clone();
    let (cluster, nodes) = ns.cluster(3, serde_json::json!({})).await;
    csi_claim_with_mode(&client, &ns.name, "shared", "ReadWriteMany")
        .await
        .unwrap();
    let pv = format!("{}-shared", ns.name);
    let attacher = tokio::spawn(play_csi_attacher(client.clone(), SIM_CSI_DRIVER.into()));
    // Another workload reads the same volume on node 2.
    let reader: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "reader"},
        "spec": {
            "nodeName": nodes[2],
            "containers": [{"name": "r", "image": "registry.example/reader:1",
                            "volumeMounts": [{"name": "shared", "mountPath": "/data"}]}],
            "volumes": [{"name": "shared", "persistentVolumeClaim": {"claimName": "shared"}}],
        }
    }))
    .unwrap();
    Api::<Pod>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &reader)
        .await
        .unwrap();
    let _replica = Replica::start(&ns.name, "r", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    fcis.create(
        &PostParams::default(),
        &instance("db", &cluster, &nodes, Some("shared")).unwrap(),
    )
    .await
    .unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "online on node 0",
        online_on(nodes[0].clone()),
    )
    .await;
    let vas: Api<VolumeAttachment> = Api::all(client.clone());
    let attached_to = |node: String| {
        let pv = pv.clone();
        move |list: &[VolumeAttachment]| {
            list.iter()
                .find(|va| {
                    va.spec.node_name == node
                        && va.spec.source.persistent_volume_name.as_deref() == Some(pv.as_str())
                        && va.status.as_ref().is_some_and(|s| s.attached)
                })
                .and_then(|va| va.uid())
        }
    };
    let deadline = Instant::now() + T;
    let elsewhere = loop {
        let list = vas.list(&ListParams::default()).await.unwrap().items;
        if let (Some(_), Some(uid)) = (
            attached_to(nodes[0].clone())(&list),
            attached_to(nodes[2].clone())(&list),
        ) {
            break uid;
        }
        assert!(
            Instant::now() < deadline,
            "the volume attached to nodes 0 and 2"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let moved = wait_for(
        fcis.clone(),
        "db",
        T,
        "failed over to node 1",
        online_on(nodes[1].clone()),
    )
    .await;
    assert_eq!(moved.status.unwrap().failover_count, 1);
    let list = vas.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(
        attached_to(nodes[2].clone())(&list),
        Some(elsewhere),
        "node 2's attachment of the shared volume untouched"
    );
    attacher.abort();
}

/// Fault 9: the new owner fails after its pod was created and before it was ready. The
/// move ends there (`NewOwnerFailed`) and a new failover, fenced, takes the instance on.
#[tokio::test]
async fn a_new_owner_that_fails_before_its_pod_is_ready_is_failed_over_in_turn() {
    let ns = TestNamespace::new("newowner").await;
    let client = ns.client.clone();
    // Two of three nodes fail: a quorum of one lets the second failover go ahead.
    let (_cluster, nodes, fcis, _replica) =
        one_instance(&ns, serde_json::json!({"quorum": {"minHealthy": 1}})).await;
    // Node 1 heartbeats (a stand-in renews its Lease) but starts no pod: KWOK no longer
    // manages it, so a pod placed there never becomes ready.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-node-lease");
    let kubelet = fake_kubelet(leases, nodes[1].clone(), jiff::SignedDuration::ZERO);
    control_plane().nodes.kill(&nodes[1]).await.unwrap();
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "the failover's pod created on node 1",
        |f: Option<&FailoverClusterInstance>| {
            f.and_then(|f| f.status.as_ref())
                .and_then(|s| s.current_move.as_ref())
                .is_some_and(|m| {
                    m.to.as_deref() == Some(nodes[1].as_str()) && m.pod_created.is_some()
                })
        },
    )
    .await;
    // Now node 1 fails too, its pod never ready.
    kubelet.abort();
    let moved = wait_for(
        fcis.clone(),
        "db",
        T,
        "online on node 2",
        online_on(nodes[2].clone()),
    )
    .await;
    let s = moved.status.unwrap();
    assert_eq!(s.failover_count, 2, "{:?}", s.history);
    let last = s.history.last().unwrap();
    assert_eq!(last.from.as_deref(), Some(nodes[1].as_str()), "{last:?}");
    assert!(
        last.fenced.is_some(),
        "node 1 fenced before its pod was removed: {last:?}"
    );
    let reasons = event_reasons(&client, &ns.name).await;
    assert!(
        reasons.iter().any(|r| r == reason::NEW_OWNER_FAILED),
        "{reasons:?}"
    );
    let pods = Api::<Pod>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert_eq!(pods.len(), 1, "only the pod on node 2 is left: {pods:?}");
}

/// Fault 11: failovers are counted apart from the bounded history (ten moves), so a
/// threshold above ten holds: eleven failovers go ahead, the twelfth is refused.
#[tokio::test]
async fn a_failover_threshold_above_the_history_limit_holds() {
    const THRESHOLD: usize = 11;
    let ns = TestNamespace::new("threshold").await;
    let client = ns.client.clone();
    let cluster = format!("{}-c", ns.name);
    // One node per failover and one to spare; every owner is killed in turn.
    let nodes = nodes_and_cluster(
        &client,
        &cluster,
        THRESHOLD + 2,
        serde_json::json!({"quorum": {"minHealthy": 1}}),
    )
    .await;
    let _replica = Replica::start(&ns.name, "r", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let mut fci = instance("db", &cluster, &nodes, None).unwrap();
    fci.spec.failover.threshold = Some(THRESHOLD as u32);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "online on node 0",
        online_on(nodes[0].clone()),
    )
    .await;
    for i in 0..THRESHOLD {
        control_plane().nodes.kill(&nodes[i]).await.unwrap();
        wait_for(
            fcis.clone(),
            "db",
            T,
            &format!("failover {} done", i + 1),
            online_on(nodes[i + 1].clone()),
        )
        .await;
    }
    control_plane().nodes.kill(&nodes[THRESHOLD]).await.unwrap();
    let failed = wait_for(
        fcis.clone(),
        "db",
        T,
        "the twelfth failover refused",
        in_phase(Phase::Failed),
    )
    .await;
    let s = failed.status.clone().unwrap();
    assert_eq!(s.failovers.len(), THRESHOLD, "{:?}", s.failovers);
    assert_eq!(s.history.len(), 10, "the history stays bounded");
    assert_eq!(
        online_reason(Some(&failed)).as_deref(),
        Some(reason::FAILOVER_THRESHOLD_EXCEEDED)
    );
    assert_eq!(
        s.owner_node.as_deref(),
        Some(nodes[THRESHOLD].as_str()),
        "not moved"
    );
}

/// Fault 2: a cordoned owner has left, not failed: its instance moves gracefully, and the
/// node is never fenced.
#[tokio::test]
async fn a_cordoned_owner_is_moved_off_never_fenced() {
    let ns = TestNamespace::new("cordon").await;
    let client = ns.client.clone();
    let (_cluster, nodes, fcis, _replica) = one_instance(&ns, serde_json::json!({})).await;
    patch_node(
        &client,
        &nodes[0],
        serde_json::json!({"spec": {"unschedulable": true}}),
    )
    .await;
    moved_gracefully(&fcis, &nodes, reason::UNSCHEDULABLE, &client).await;
    assert_neither_fenced_nor_failed_over(&client, &ns.name).await;
}

/// Fault 2: the owner's Node object is deleted (a node removed from the cluster) while its
/// kubelet still heartbeats: the instance moves off, and nothing is fenced.
#[tokio::test]
async fn an_owner_whose_node_is_deleted_is_moved_off_never_fenced() {
    let ns = TestNamespace::new("nodedel").await;
    let client = ns.client.clone();
    let (_cluster, nodes, fcis, _replica) = one_instance(&ns, serde_json::json!({})).await;
    Api::<Node>::all(client.clone())
        .delete(&nodes[0], &kube::api::DeleteParams::default())
        .await
        .unwrap();
    let moved = wait_for(
        fcis.clone(),
        "db",
        T,
        "moved to node 1",
        online_on(nodes[1].clone()),
    )
    .await;
    let m = moved.status.unwrap().history.last().cloned().unwrap();
    assert_eq!(m.reason, reason::NODE_DELETED, "{m:?}");
    assert!(m.fenced.is_none(), "{m:?}");
    assert_neither_fenced_nor_failed_over(&client, &ns.name).await;
}
