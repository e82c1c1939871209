//! The operator's verbs as a user runs them: `kubectl failover …`, kubectl finding the
//! `kubectl-failover` plugin on PATH, against the real control plane.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::kubectl_failover_command;
use kube::api::{Api, PostParams};
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance, MemberState, Phase};
use kube_failover_lab::demo::instance;
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, in_phase, nodes_and_cluster, online_owner, wait_for,
};

const T: Duration = Duration::from_secs(60);

/// `kubectl failover ARGS` with the plugin and kubectl on PATH and the admin kubeconfig;
/// returns (exit status, stdout), with stderr shown on failure.
fn kubectl_failover(args: &[&str]) -> (bool, String) {
    let out = kubectl_failover_command(args).output().unwrap();
    let stdout = String::from_utf8(out.stdout).unwrap();
    if !out.status.success() {
        eprintln!(
            "kubectl failover {args:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    (out.status.success(), stdout)
}

/// Waits until the controller's status of cluster `name` says `up` members are Up and, if
/// given, that `owner` owns an instance.
async fn cluster_status_of(client: &kube::Client, name: &str, up: usize, owner: Option<&str>) {
    let clusters: Api<FailoverCluster> = Api::all(client.clone());
    wait_for(
        clusters,
        name,
        T,
        "cluster status",
        |c: Option<&FailoverCluster>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                let ups = s
                    .members
                    .iter()
                    .filter(|m| m.state == MemberState::Up)
                    .count();
                ups == up
                    && owner.is_none_or(|o| {
                        s.members
                            .iter()
                            .any(|m| m.name == o && m.instance_count > 0)
                    })
            })
        },
    )
    .await;
}

/// Waits until instance `db` is online on `node`.
async fn online_there(fcis: &Api<FailoverClusterInstance>, node: &str) {
    wait_for(
        fcis.clone(),
        "db",
        T,
        &format!("online on {node}"),
        |i: Option<&FailoverClusterInstance>| online_owner(i).as_deref() == Some(node),
    )
    .await;
}

/// `status` shows the members, the quorum and its margin, and the instances; `history` the
/// timeline of each move; both before and after a failover.
#[tokio::test]
async fn status_and_history_as_a_user_runs_them() {
    let ns = TestNamespace::new("plugin").await;
    let client = ns.client.clone();
    let nodes = nodes_and_cluster(&client, "plugin", 3, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "plugin", false);
    let mut fci = instance("db", "plugin", &nodes[..1], None).unwrap();
    fci.spec.virtual_ips = vec!["192.0.2.44".into()];
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    online_there(&fcis, &nodes[0]).await;
    cluster_status_of(&client, "plugin", 3, Some(&nodes[0])).await;

    let (ok, out) = kubectl_failover(&["status", "-n", &ns.name]);
    assert!(ok, "{out}");
    println!("{out}");
    assert!(
        out.contains("Cluster plugin   quorum: 3 of 3 members up, 2 required: 1 more may fail"),
        "{out}"
    );
    for node in &nodes {
        let row = out
            .lines()
            .find(|l| l.starts_with(&format!("{node} ")))
            .unwrap();
        assert!(row.contains(" Up "), "{row}");
        // Each member's instances, from the instances' owners (the cluster's status counts
        // them only).
        let owns = row.contains(&format!("{}/db", ns.name));
        assert_eq!(owns, node == &nodes[0], "{row}");
    }
    let row = out.lines().find(|l| l.starts_with(&ns.name)).unwrap();
    for cell in ["db", nodes[0].as_str(), "Online", "192.0.2.44"] {
        assert!(row.contains(cell), "{cell} missing from {row}");
    }
    let (ok, json) = kubectl_failover(&["status", "-n", &ns.name, "-o", "json"]);
    assert!(ok);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let cluster = report["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "plugin")
        .unwrap();
    assert_eq!(cluster["quorumMargin"], 1, "{cluster}");
    let owner = cluster["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == nodes[0].as_str())
        .unwrap();
    assert_eq!(owner["instances"][0], format!("{}/db", ns.name), "{owner}");
    assert_eq!(report["instances"][0]["phase"], "Online");
    assert_eq!(report["instances"][0]["owner"], nodes[0].as_str());

    // `--watch` prints the report again as things change.
    let mut watch = kubectl_failover_command(&["status", "-n", &ns.name, "--watch"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let watched = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        use std::io::BufRead;
        let (stdout, watched) = (watch.stdout.take().unwrap(), watched.clone());
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                let mut w = watched.lock().unwrap();
                w.push_str(&line);
                w.push('\n');
            }
        });
    }

    // The owner dies: the instance fails over, and both verbs say so.
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let moved = wait_for(
        fcis.clone(),
        "db",
        T,
        "online elsewhere",
        |i: Option<&FailoverClusterInstance>| online_owner(i).is_some_and(|n| n != nodes[0]),
    )
    .await;
    let to = online_owner(Some(&moved)).unwrap();
    cluster_status_of(&client, "plugin", 2, Some(&to)).await;
    let deadline = std::time::Instant::now() + T;
    let reported = |owner: &str| {
        watched.lock().unwrap().lines().any(|l| {
            l.starts_with(&ns.name) && l.contains(&format!(" {owner} ")) && l.contains(" Online ")
        })
    };
    while !reported(&to) {
        assert!(
            std::time::Instant::now() < deadline,
            "--watch never reported the new owner:\n{}",
            watched.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reported(&nodes[0]), "the first report is there too");
    let _ = watch.kill();
    let _ = watch.wait();

    let (ok, out) = kubectl_failover(&["history", "db", "-n", &ns.name]);
    assert!(ok, "{out}");
    println!("{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].starts_with(&format!("placement on {} (Placement)", nodes[0])),
        "{out}"
    );
    let failover = lines
        .iter()
        .position(|l| l.starts_with(&format!("failover from {} to {to} (NodeDown", nodes[0])))
        .unwrap_or_else(|| panic!("no failover heading in\n{out}"));
    let steps: Vec<&str> = lines[failover + 1..]
        .iter()
        .take_while(|l| !l.is_empty())
        .map(|l| l.split("  ").last().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "started",
            "endpoint withdrawn",
            "old owner fenced",
            "old pod gone",
            "volumes detached",
            "new pod created",
            "online, endpoint published"
        ],
        "{out}"
    );

    let (ok, out) = kubectl_failover(&["status", "-n", &ns.name, "-o", "wide"]);
    assert!(ok, "{out}");
    println!("{out}");
    let dead = out
        .lines()
        .find(|l| l.starts_with(&format!("{} ", nodes[0])))
        .unwrap();
    assert!(
        (dead.contains(" Down ") || dead.contains(" Fenced ")) && dead.contains("LeaseStale"),
        "{dead}"
    );
    assert!(
        out.contains("2 of 3 members up, 2 required: 0 more may fail"),
        "{out}"
    );
    let row = out.lines().find(|l| l.starts_with(&ns.name)).unwrap();
    assert!(row.contains(&to) && row.contains(" 1 "), "{row}");

    // Members are listed by name.
    let listed: Vec<&str> = out
        .lines()
        .filter_map(|l| nodes.iter().find(|n| l.starts_with(&format!("{n} "))))
        .map(String::as_str)
        .collect();
    assert_eq!(listed, nodes.iter().map(String::as_str).collect::<Vec<_>>());
    // A missing instance is an error that says so.
    let (ok, _) = kubectl_failover(&["history", "nope", "-n", &ns.name]);
    assert!(!ok);
}

/// Runs `kubectl ARGS` with the admin kubeconfig; returns (exit code, stdout + stderr).
fn kubectl(args: &[&str]) -> (i32, String) {
    let cp = control_plane();
    let out = Command::new(cp.tools_bin().join("kubectl"))
        .args(args)
        .env("KUBECONFIG", cp.kubeconfig())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

/// `stop` and `start` as a user runs them on an instance a GitOps tool applied: a
/// `NoAutoStart` instance started, stopped (pod gone gracefully, claims-free Service and
/// name kept, nothing fenced), started again; after each verb the GitOps tool's server-side
/// diff of its manifest is empty.
#[tokio::test]
async fn start_and_stop_as_a_user_runs_them_without_drift() {
    let ns = TestNamespace::new("plugin-ss").await;
    let client = ns.client.clone();
    let nodes = nodes_and_cluster(&client, "plugin-ss", 3, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "plugin-ss", false);
    let mut fci = instance("db", "plugin-ss", &nodes[..1], None).unwrap();
    fci.spec.priority = kube_failover_core::api::Priority::NoAutoStart;
    fci.metadata.namespace = Some(ns.name.clone());
    let manifest = std::env::temp_dir().join(format!("{}-db.yaml", ns.name));
    let mut doc = serde_json::to_value(&fci).unwrap();
    doc["apiVersion"] = "kube-failover.io/v1alpha1".into();
    doc["kind"] = "FailoverClusterInstance".into();
    doc.as_object_mut().unwrap().remove("status");
    std::fs::write(&manifest, serde_yaml::to_string(&doc).unwrap()).unwrap();
    let manifest = manifest.display().to_string();
    let gitops = [
        "--server-side",
        "--field-manager=gitops",
        "-f",
        manifest.as_str(),
    ];
    let (code, out) = kubectl(&[&["apply"][..], &gitops].concat());
    assert_eq!(code, 0, "{out}");
    let no_drift = |when: &str| {
        let (code, out) = kubectl(&[&["diff"][..], &gitops].concat());
        assert_eq!(code, 0, "drift after {when}:\n{out}");
    };
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    wait_for(
        fcis.clone(),
        "db",
        T,
        "offline (NoAutoStart)",
        in_phase(Phase::Offline),
    )
    .await;

    let (ok, out) = kubectl_failover(&["start", "db", "-n", &ns.name, "--wait", "--timeout", "60"]);
    assert!(ok, "{out}");
    assert!(out.contains("online"), "{out}");
    assert_eq!(
        online_owner(Some(&fcis.get("db").await.unwrap())).as_deref(),
        Some(nodes[0].as_str())
    );
    no_drift("start");

    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod = pods
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .next()
        .unwrap();
    let (ok, out) = kubectl_failover(&["stop", "db", "-n", &ns.name, "--wait", "--timeout", "60"]);
    assert!(ok, "{out}");
    let stopped = fcis.get("db").await.unwrap();
    let st = stopped.status.unwrap();
    assert_eq!((st.phase, st.owner_node), (Phase::Offline, None));
    assert!(
        pods.get_opt(&pod.metadata.name.clone().unwrap())
            .await
            .unwrap()
            .is_none(),
        "the pod is gone"
    );
    let services: Api<k8s_openapi::api::core::v1::Service> =
        Api::namespaced(client.clone(), &ns.name);
    assert!(
        services.get_opt("db").await.unwrap().is_some(),
        "the network name stays"
    );
    let slices: Api<k8s_openapi::api::discovery::v1::EndpointSlice> =
        Api::namespaced(client.clone(), &ns.name);
    let slice = slices.get("db").await.unwrap();
    assert!(
        slice.endpoints.unwrap_or_default().is_empty(),
        "no endpoint"
    );
    let nodes_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let owner = nodes_api.get(&nodes[0]).await.unwrap();
    assert!(
        !owner
            .spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == "node.kubernetes.io/out-of-service"),
        "a stop fences nothing"
    );
    no_drift("stop");

    let (ok, out) = kubectl_failover(&["start", "db", "-n", &ns.name, "--wait", "--timeout", "60"]);
    assert!(ok, "{out}");
    no_drift("start again");
    let (ok, out) = kubectl_failover(&["status", "-n", &ns.name]);
    assert!(
        ok && out
            .lines()
            .any(|l| l.starts_with(&ns.name) && l.contains(" Online ")),
        "{out}"
    );
}

/// `start` of an instance left Failed (failover threshold reached): its count is reset and
/// it comes online on the next node.
#[tokio::test]
async fn start_brings_a_failed_instance_back() {
    let ns = TestNamespace::new("plugin-failed").await;
    let client = ns.client.clone();
    let nodes = nodes_and_cluster(&client, "plugin-failed", 5, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "plugin-failed", false);
    let mut fci = instance("db", "plugin-failed", &nodes[..3], None).unwrap();
    fci.spec.failover.threshold = Some(1);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    online_there(&fcis, &nodes[0]).await;
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    online_there(&fcis, &nodes[1]).await;
    control_plane().nodes.kill(&nodes[1]).await.unwrap();
    wait_for(fcis.clone(), "db", T, "Failed", in_phase(Phase::Failed)).await;
    let (ok, out) = kubectl_failover(&["status", "-n", &ns.name]);
    assert!(
        ok && out.contains(" Failed ") && out.contains("left Failed until a person acts"),
        "{out}"
    );

    let (ok, out) = kubectl_failover(&["start", "db", "-n", &ns.name, "--wait", "--timeout", "60"]);
    assert!(ok, "{out}");
    let st = fcis.get("db").await.unwrap().status.unwrap();
    println!("{}", kubectl_failover(&["history", "db", "-n", &ns.name]).1);
    assert_eq!(st.owner_node.as_deref(), Some(nodes[2].as_str()));
    assert_eq!(
        st.failover_count, 1,
        "counted afresh: the failover the start made"
    );
}

/// `move` as a user runs it: refused with a clear message for a node that is not a member
/// and for one that is down; a planned move to a healthy node with no fencing and never two
/// Ready pods (every pod event watched), which failback then leaves alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn move_as_a_user_runs_it() {
    use futures::StreamExt;
    use kube::runtime::{WatchStreamExt, watcher};
    let ns = TestNamespace::new("plugin-mv").await;
    let client = ns.client.clone();
    let nodes = nodes_and_cluster(&client, "plugin-mv", 4, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "plugin-mv", false);
    let mut fci = instance("db", "plugin-mv", &nodes[..3], None).unwrap();
    fci.spec.failback.mode = kube_failover_core::api::FailbackMode::Immediate;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    online_there(&fcis, &nodes[0]).await;

    let (ok, _) = kubectl_failover(&["move", "db", "-n", &ns.name, "--to", "nope"]);
    assert!(!ok, "a move to a node that is not a member");
    control_plane().nodes.kill(&nodes[1]).await.unwrap();
    cluster_status_of(&client, "plugin-mv", 3, None).await;
    let out = kubectl_failover_command(&["move", "db", "-n", &ns.name, "--to", &nodes[1]])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a move to a down node");
    assert!(
        stderr.contains(&format!(
            "cannot move {}/db to {}: {} is Down",
            ns.name, nodes[1], nodes[1]
        )),
        "{stderr}"
    );

    // Every pod event: never two Ready pods of the instance at once.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns.name);
    let max_ready = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = {
        let max_ready = max_ready.clone();
        tokio::spawn(async move {
            let mut ready = std::collections::BTreeMap::<String, bool>::new();
            let mut events = std::pin::pin!(watcher(pods, Default::default()).default_backoff());
            while let Some(Ok(e)) = events.next().await {
                let (pod, gone) = match e {
                    watcher::Event::Apply(p) | watcher::Event::InitApply(p) => (p, false),
                    watcher::Event::Delete(p) => (p, true),
                    _ => continue,
                };
                let is_ready = !gone
                    && pod
                        .status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        });
                ready.insert(pod.metadata.name.clone().unwrap_or_default(), is_ready);
                let n = ready.values().filter(|r| **r).count();
                max_ready.fetch_max(n, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    let (ok, out) = kubectl_failover(&[
        "move",
        "db",
        "-n",
        &ns.name,
        "--to",
        &nodes[2],
        "--wait",
        "--timeout",
        "60",
    ]);
    assert!(ok, "{out}");
    assert!(out.contains(&format!("online on {}", nodes[2])), "{out}");
    watch.abort();
    assert_eq!(
        max_ready.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "two Ready pods at once"
    );
    let (_, history) = kubectl_failover(&["history", "db", "-n", &ns.name]);
    let heading = format!(
        "planned move from {} to {} (MoveRequested)",
        nodes[0], nodes[2]
    );
    let at = history
        .lines()
        .position(|l| l.starts_with(&heading))
        .unwrap_or_else(|| panic!("{heading} missing:\n{history}"));
    let steps: Vec<&str> = history
        .lines()
        .skip(at + 1)
        .take_while(|l| !l.is_empty())
        .collect();
    assert!(
        !steps.iter().any(|l| l.contains("fenced")),
        "a planned move fences nothing:\n{history}"
    );
    let nodes_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let old = nodes_api.get(&nodes[0]).await.unwrap();
    assert!(
        !old.spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == "node.kubernetes.io/out-of-service")
    );
    // Failback (Immediate; nodes[0] is preferred and up) leaves the operator's choice
    // alone (unit test `a_requested_move_is_planned_sticks_and_is_refused_to_a_down_node`);
    // the status says so.
    let st = fcis.get("db").await.unwrap().status.unwrap();
    assert!(st.moved_by_operator);
    assert_eq!(st.owner_node.as_deref(), Some(nodes[2].as_str()));
}

/// `drain` as a user runs it: refused when an instance would have nowhere to go; a drain of
/// a node hosting three instances moves them off with planned moves, higher priority
/// first, places nothing new on it while it is paused, and keeps it in the quorum;
/// `resume --failback` brings back what the drain moved off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_and_resume_as_a_user_runs_them() {
    use kube_failover_core::api::Priority;
    let ns = TestNamespace::new("plugin-dr").await;
    let client = ns.client.clone();
    let nodes = nodes_and_cluster(&client, "plugin-dr", 4, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "plugin-dr", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let on =
        |i: Option<&FailoverClusterInstance>, node: &str| online_owner(i).as_deref() == Some(node);
    // Created lowest priority first, so that the order of the moves is priority's, not age's.
    let instances = [
        ("low", Priority::Low),
        ("mid", Priority::Medium),
        ("high", Priority::High),
    ];
    for (k, (name, priority)) in instances.iter().enumerate() {
        let mut fci = instance(name, "plugin-dr", &nodes[..2], None).unwrap();
        fci.spec.priority = *priority;
        fci.spec.virtual_ips = vec![format!("192.0.2.{}", 20 + k)];
        fcis.create(&PostParams::default(), &fci).await.unwrap();
    }
    let mut pinned = instance("pinned", "plugin-dr", &nodes[3..], None).unwrap();
    pinned.spec.owners.possible = vec![nodes[3].clone()];
    pinned.spec.virtual_ips = vec!["192.0.2.30".into()];
    fcis.create(&PostParams::default(), &pinned).await.unwrap();
    for (name, _) in &instances {
        wait_for(
            fcis.clone(),
            name,
            T,
            "online on the first node",
            |i: Option<&FailoverClusterInstance>| on(i, &nodes[0]),
        )
        .await;
    }
    wait_for(
        fcis.clone(),
        "pinned",
        T,
        "online",
        |i: Option<&FailoverClusterInstance>| on(i, &nodes[3]),
    )
    .await;
    cluster_status_of(&client, "plugin-dr", 4, Some(&nodes[0])).await;

    // Nowhere to go: refused, and the node is left as it was.
    let out = kubectl_failover_command(&["drain", &nodes[3]])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a drain that strands an instance");
    assert!(
        stderr.contains(&format!(
            "{}/pinned: no other member is Up among its possible owners",
            ns.name
        )),
        "{stderr}"
    );
    let nodes_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let unschedulable = |n: &k8s_openapi::api::core::v1::Node| {
        n.spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false)
    };
    assert!(!unschedulable(&nodes_api.get(&nodes[3]).await.unwrap()));

    let (ok, out) = kubectl_failover(&["drain", &nodes[0], "--timeout", "120"]);
    assert!(ok, "{out}");
    let order = format!(
        "higher priority first: {0}/high (High), {0}/mid (Medium), {0}/low (Low)",
        ns.name
    );
    assert!(out.contains(&order), "{out}");
    assert!(out.contains(&format!("node/{} drained", nodes[0])), "{out}");
    let mut created = Vec::new();
    for (name, _) in &instances {
        let st = fcis.get(name).await.unwrap().status.unwrap();
        assert_eq!(st.phase, Phase::Online, "{name}");
        assert_ne!(st.owner_node.as_deref(), Some(nodes[0].as_str()), "{name}");
        let last = st.history.last().unwrap();
        assert!(last.planned && last.fenced.is_none(), "{name}: {last:?}");
        assert!(last.reason.starts_with("Unschedulable"), "{name}: {last:?}");
        created.push((last.pod_created.clone().unwrap().0, *name));
    }
    created.sort();
    let by_time: Vec<&str> = created.iter().map(|(_, n)| *n).collect();
    assert_eq!(
        by_time,
        ["high", "mid", "low"],
        "pods started in priority order"
    );
    // Paused: in the quorum, hosting nothing, and taking nothing new.
    let clusters: Api<FailoverCluster> = Api::all(client.clone());
    wait_for(
        clusters,
        "plugin-dr",
        T,
        "drained member paused",
        |c: Option<&FailoverCluster>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.quorum.as_ref().is_some_and(|q| q.healthy == 4)
                    && s.members.iter().any(|m| {
                        m.name == nodes[0]
                            && m.state == MemberState::Paused
                            && m.instance_count == 0
                    })
            })
        },
    )
    .await;
    let mut late = instance("late", "plugin-dr", &nodes[..1], None).unwrap();
    late.spec.virtual_ips = vec!["192.0.2.31".into()];
    fcis.create(&PostParams::default(), &late).await.unwrap();
    let placed = wait_for(
        fcis.clone(),
        "late",
        T,
        "late placed",
        |i: Option<&FailoverClusterInstance>| online_owner(i).is_some(),
    )
    .await;
    assert_ne!(
        online_owner(Some(&placed)).as_deref(),
        Some(nodes[0].as_str()),
        "placed on a paused node"
    );

    let (ok, out) = kubectl_failover(&["resume", &nodes[0], "--failback", "--timeout", "120"]);
    assert!(ok, "{out}");
    assert!(!unschedulable(&nodes_api.get(&nodes[0]).await.unwrap()));
    for (name, _) in &instances {
        assert!(
            out.contains(&format!(
                "{}/{name}: failback to {} requested",
                ns.name, nodes[0]
            )),
            "{out}"
        );
        let i = fcis.get(name).await.unwrap();
        assert!(on(Some(&i), &nodes[0]), "{name} back on {}", nodes[0]);
    }
    assert!(
        !out.contains("late"),
        "resume moves back only what the drain moved off: {out}"
    );
}

/// Records the most members drained (marked or cordoned) at any one time, from every Node
/// event, until the test reads it.
fn most_drained_at_once(
    client: &kube::Client,
    label: &str,
) -> std::sync::Arc<std::sync::Mutex<Vec<String>>> {
    use futures::StreamExt;
    use k8s_openapi::api::core::v1::Node;
    use kube::ResourceExt;
    use kube::runtime::{WatchStreamExt, reflector, watcher};
    let worst = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let record = worst.clone();
    let (store, writer) = reflector::store::<Node>();
    let stream = reflector(
        writer,
        watcher(
            Api::<Node>::all(client.clone()),
            watcher::Config::default().labels(label),
        ),
    )
    .default_backoff();
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while stream.next().await.is_some() {
            let drained: Vec<String> = store
                .state()
                .iter()
                .filter(|n| {
                    n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
                        || n.annotations()
                            .contains_key(kube_failover_core::api::DRAINED_ANNOTATION)
                })
                .map(|n| n.name_any())
                .collect();
            let mut worst = record.lock().unwrap();
            if drained.len() > worst.len() {
                *worst = drained;
            }
        }
    });
    worst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_run_goes_one_node_at_a_time_and_on_where_it_stopped() {
    let ns = TestNamespace::new("plugin-ur").await;
    let client = ns.client.clone();
    let nodes = nodes_and_cluster(&client, "plugin-ur", 3, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "plugin-ur", false);
    let worst = most_drained_at_once(&client, "plugin-ur.test/member=true");
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let names = ["a", "b", "c"];
    for (k, name) in names.iter().enumerate() {
        let mut preferred = nodes.clone();
        preferred.rotate_left(k);
        let mut fci = instance(name, "plugin-ur", &preferred, None).unwrap();
        fci.spec.virtual_ips = vec![format!("192.0.2.{}", 40 + k)];
        fcis.create(&PostParams::default(), &fci).await.unwrap();
        wait_for(
            fcis.clone(),
            name,
            T,
            "online on its node",
            |i: Option<&FailoverClusterInstance>| online_owner(i).as_ref() == Some(&preferred[0]),
        )
        .await;
    }
    cluster_status_of(&client, "plugin-ur", 3, Some(&nodes[2])).await;

    // The hook stands for an update with a restart: the node's heartbeats stop for 4 s
    // (past leaseStaleSeconds: it is seen down) and resume. It fails on the second node
    // until a file exists.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hook.log");
    let allow = dir.path().join("allow");
    let alive = kube_failover_lab::controlplane::NODE_ALIVE_LABEL;
    let hook = format!(
        "echo {{node}} >> {log}; [ {{node}} != {second} ] || [ -e {allow} ] || exit 3; \
         kubectl label node {{node}} {alive}=false --overwrite >/dev/null && sleep 4 && \
         kubectl label node {{node}} {alive}=true --overwrite >/dev/null",
        log = log.display(),
        allow = allow.display(),
        second = nodes[1],
    );
    let args = [
        "update-run",
        "--exec",
        &hook,
        "--cluster",
        "plugin-ur",
        "--timeout",
        "120",
    ];
    let out = kubectl_failover_command(&args).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "stops at the failing hook:\n{stdout}\n{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "the hook failed on {}, which stays drained",
            nodes[1]
        )),
        "{stderr}"
    );
    assert!(
        stdout.contains(&format!("node/{}: updated (1 of 3)", nodes[0])),
        "{stdout}"
    );
    let cluster = Api::<FailoverCluster>::all(client.clone())
        .get("plugin-ur")
        .await
        .unwrap();
    let recorded = &cluster.metadata.annotations.as_ref().unwrap()["kube-failover.io/update-run"];
    assert!(
        recorded.contains(&format!("\"done\":[\"{}\"]", nodes[0])),
        "{recorded}"
    );

    // Run again: it goes on with the second node (its hook again), then the third.
    std::fs::write(&allow, "").unwrap();
    let (ok, stdout) = kubectl_failover(&args);
    println!("$ kubectl failover update-run …\n{stdout}");
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("going on with the interrupted update run"),
        "{stdout}"
    );
    assert!(
        stdout.contains("update run of plugin-ur complete: 3 node(s) updated"),
        "{stdout}"
    );
    let hooks = std::fs::read_to_string(&log).unwrap();
    assert_eq!(
        hooks.lines().collect::<Vec<_>>(),
        [&nodes[0], &nodes[1], &nodes[1], &nodes[2]],
        "each node once, the failed one again"
    );
    // Never two drained at once; each did drain.
    let worst = worst.lock().unwrap().clone();
    assert_eq!(
        worst.len(),
        1,
        "at most one member drained at a time: {worst:?}"
    );
    for name in names {
        let i = wait_for(
            fcis.clone(),
            name,
            T,
            "online at the end",
            |i: Option<&FailoverClusterInstance>| online_owner(i).is_some(),
        )
        .await;
        let moved_by_run = i
            .status
            .unwrap()
            .history
            .iter()
            .any(|m| m.planned && m.reason.starts_with("Unschedulable"));
        assert!(moved_by_run, "{name} was drained off its node");
    }
    let nodes_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for n in &nodes {
        let node = nodes_api.get(n).await.unwrap();
        assert_ne!(
            node.spec.as_ref().and_then(|s| s.unschedulable),
            Some(true),
            "{n} resumed"
        );
    }
    let cluster = Api::<FailoverCluster>::all(client.clone())
        .get("plugin-ur")
        .await
        .unwrap();
    assert!(
        !cluster
            .metadata
            .annotations
            .unwrap_or_default()
            .contains_key("kube-failover.io/update-run"),
        "the finished run's record is removed"
    );
}

/// `kubectl failover validate ARGS`: (exit code, stdout).
fn validate(args: &[&str]) -> (i32, String) {
    validate_with(args, &control_plane().kubeconfig())
}

/// `kubectl failover validate ARGS` as whoever `kubeconfig` authenticates.
fn validate_with(args: &[&str], kubeconfig: &Path) -> (i32, String) {
    let out = kubectl_failover_command(&[&["validate"][..], args].concat())
        .env("KUBECONFIG", kubeconfig)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "validate wrote to stderr: {stderr}");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
    )
}

/// The line of `out` that starts with `verdict` and contains every one of `parts`.
fn line_with<'a>(out: &'a str, verdict: &str, parts: &[&str]) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(verdict) && parts.iter().all(|p| l.contains(p)))
        .unwrap_or_else(|| panic!("no {verdict} line with {parts:?} in\n{out}"))
}

/// Seven things that would stop a failover or keep clients from an instance, in one
/// namespace and one cluster: no controller leader, a member whose heartbeats stopped, a
/// preferred owner that is no member, a claim whose StorageClass provisions on one node only
/// (binding on first consumer), a claim whose CSI driver does not attach, a virtual IP in no
/// pool of the cluster and an external hostname in none of its DNS zones. `validate` names
/// each and exits non-zero.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_names_each_thing_that_would_stop_a_failover() {
    use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
    use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
    let ns = TestNamespace::new("validate-bad").await;
    let client = ns.client.clone();
    let nodes = nodes_and_cluster(&client, "vbad", 3, serde_json::json!({})).await;
    // A node outside the cluster (no member label).
    let outsider = control_plane()
        .nodes
        .create("vbad-outside", 1, &Default::default())
        .await
        .unwrap()
        .remove(0);

    // A StorageClass that provisions on one node only, binding on first consumer.
    let pinned_class = format!("{}-pinned", ns.name);
    let class: StorageClass = serde_json::from_value(serde_json::json!({
        "metadata": {"name": pinned_class},
        "provisioner": "sim.csi.kube-failover.io",
        "volumeBindingMode": "WaitForFirstConsumer",
        "allowedTopologies": [{"matchLabelExpressions": [
            {"key": "kubernetes.io/hostname", "values": [nodes[0]]}]}],
    }))
    .unwrap();
    Api::<StorageClass>::all(client.clone())
        .create(&PostParams::default(), &class)
        .await
        .unwrap();
    // A CSI driver that does not attach, and a RWO volume of it bound to a claim.
    let driver = format!("{}.noattach.test", ns.name);
    let csi: CSIDriver = serde_json::from_value(serde_json::json!({
        "metadata": {"name": driver},
        "spec": {"attachRequired": false},
    }))
    .unwrap();
    Api::<CSIDriver>::all(client.clone())
        .create(&PostParams::default(), &csi)
        .await
        .unwrap();
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("{}-noattach", ns.name)},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": ns.name, "name": "noattach"},
            "csi": {"driver": driver, "volumeHandle": "noattach"},
        }
    }))
    .unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    for (name, class, volume) in [
        ("pinned", pinned_class.as_str(), None),
        ("noattach", "", Some(format!("{}-noattach", ns.name))),
    ] {
        let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": class,
                "volumeName": volume,
                "resources": {"requests": {"storage": "1Gi"}},
            }
        }))
        .unwrap();
        pvcs.create(&PostParams::default(), &pvc).await.unwrap();
    }
    // An instance preferring the outsider, with both claims (and a virtual IP of its own:
    // the control plane is shared, and an address is served by one instance).
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let mut fci = instance("db", "vbad", &[nodes[0].clone(), outsider.clone()], None).unwrap();
    fci.spec.storage.claims = vec!["pinned".into(), "noattach".into()];
    fci.spec.virtual_ips = vec!["198.51.100.71".into()];
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    // An instance whose virtual IP lies in none of the cluster's pools (a shared address
    // range, 100.64.0.0/10), and one whose external hostname lies in none of its zones.
    let mut outside = instance("outside", "vbad", &nodes[..2], None).unwrap();
    outside.spec.virtual_ips = vec!["100.64.0.10".into()];
    fcis.create(&PostParams::default(), &outside).await.unwrap();
    let mut elsewhere = instance("elsewhere", "vbad", &nodes[..2], None).unwrap();
    elsewhere.spec.virtual_ips = vec![];
    elsewhere.spec.network_name.external_hostname = Some("elsewhere.example.org".into());
    fcis.create(&PostParams::default(), &elsewhere)
        .await
        .unwrap();
    // A member whose heartbeats stop: once the node lifecycle controller has seen it silent
    // for its grace period (8 s), its Lease is past the cluster's 3 s.
    control_plane().nodes.kill(&nodes[2]).await.unwrap();
    wait_for(
        Api::<Node>::all(client.clone()),
        &nodes[2],
        T,
        "node not Ready",
        |n: Option<&Node>| {
            n.and_then(|n| n.status.as_ref()?.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status != "True"))
        },
    )
    .await;

    // No controller replica runs: no leader Lease in the namespace.
    let started = std::time::Instant::now();
    let (code, out) = validate(&["-n", &ns.name, "--controller-namespace", &ns.name]);
    println!(
        "$ kubectl failover validate -n {0} --controller-namespace {0}   ({1:.1} s)\n{out}",
        ns.name,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, 1, "{out}");
    line_with(&out, "FAIL  controller leader Lease", &[&ns.name, "absent"]);
    line_with(
        &out,
        "FAIL  member",
        &[&format!("{} (cluster vbad)", nodes[2]), "stale"],
    );
    line_with(
        &out,
        "FAIL  instance",
        &[&format!(
            "{}/db: preferred owner {outsider} is not a member of cluster vbad",
            ns.name
        )],
    );
    line_with(
        &out,
        "FAIL  instance",
        &[
            "claim pinned",
            &format!(
                "StorageClass {pinned_class} provisions volumes on node {} only",
                nodes[0]
            ),
            "WaitForFirstConsumer",
        ],
    );
    line_with(
        &out,
        "FAIL  instance",
        &[
            "claim noattach",
            &format!("CSIDriver {driver} has attachRequired=false"),
        ],
    );
    line_with(
        &out,
        "FAIL  instance",
        &[&format!(
            "{}/outside network name: virtual IP 100.64.0.10 lies in no address pool of \
             cluster vbad that namespace {0} may use (it may use pool test)",
            ns.name
        )],
    );
    line_with(
        &out,
        "FAIL  instance",
        &[&format!(
            "{}/elsewhere network name: external hostname elsewhere.example.org lies in no \
             DNS zone of cluster vbad that namespace {0} may use (it may use zone example.com)",
            ns.name
        )],
    );
    // The healthy members and the rest pass.
    line_with(
        &out,
        "PASS  instance",
        &[
            &format!("{}/db network name", ns.name),
            "198.51.100.71 (pool test",
        ],
    );
    line_with(
        &out,
        "PASS  cluster vbad address pools",
        &["none of its 1 pools overlaps"],
    );
    for node in &nodes[..2] {
        line_with(&out, "PASS  member", &[&format!("{node} (cluster vbad)")]);
    }
    line_with(
        &out,
        "PASS  CRD failoverclusters.kube-failover.io",
        &["current"],
    );
    line_with(&out, "PASS  Kubernetes version", &[]);
    // The controller's ServiceAccount is not found without a pod or Deployment: the check
    // says which flag names it.
    line_with(
        &out,
        "WARN  controller RBAC",
        &["--controller-service-account"],
    );

    let (code, json) = validate(&[
        "-n",
        &ns.name,
        "--controller-namespace",
        &ns.name,
        "-o",
        "json",
    ]);
    assert_eq!(code, 1);
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(report["failures"], 7, "{json}");
}

/// A healthy set-up: a leader, three members heartbeating, an instance online with an
/// attaching CSI claim, an external IP from the cluster's pool and an external hostname in
/// its zone. `validate` passes it with exit status 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_passes_a_healthy_setup() {
    use kube_failover_lab::controlplane::{CONTROLLER_NS, CONTROLLER_SA, play_csi_attacher};
    use kube_failover_lab::demo::{SIM_CSI_DRIVER, csi_claim};
    let ns = TestNamespace::new("validate-ok").await;
    let client = ns.client.clone();
    let nodes = nodes_and_cluster(&client, "vok", 3, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "vok", true);
    csi_claim(&client, &ns.name, "data").await.unwrap();
    let attacher = tokio::spawn(play_csi_attacher(client.clone(), SIM_CSI_DRIVER.into()));
    let mut fci = instance("db", "vok", &nodes, Some("data")).unwrap();
    // An address no other test's instance is given: one instance holds it.
    fci.spec.virtual_ips = vec!["198.51.100.70".into()];
    fci.spec.network_name.external_hostname = Some("db.example.com".into());
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    online_there(&fcis, &nodes[0]).await;
    cluster_status_of(&client, "vok", 3, Some(&nodes[0])).await;
    // Each member runs the node agent: its Lease, just renewed.
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-node-lease");
    for node in &nodes {
        let lease = serde_json::from_value(serde_json::json!({
            "metadata": {"name": kube_failover_core::api::agent_lease_name(node)},
            "spec": {"holderIdentity": node, "leaseDurationSeconds": 3,
                     "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                         jiff::Timestamp::now())},
        }))
        .unwrap();
        leases.create(&PostParams::default(), &lease).await.unwrap();
    }
    // The controller judges resilience at most every 2 s while things change: wait for its
    // verdict on the settled cluster (any one member may fail, db has another place).
    wait_for(
        Api::<FailoverCluster>::all(client.clone()),
        "vok",
        T,
        "Resilient True",
        |c: Option<&FailoverCluster>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Resilient" && c.status == "True")
            })
        },
    )
    .await;

    let sa_name = format!("{CONTROLLER_NS}/{CONTROLLER_SA}");
    let sa = sa_name.as_str();
    let started = std::time::Instant::now();
    let (code, out) = validate(&[
        "-n",
        &ns.name,
        "--controller-namespace",
        &ns.name,
        "--controller-service-account",
        sa,
    ]);
    println!(
        "$ kubectl failover validate -n {0} --controller-namespace {0} \
         --controller-service-account {sa}   ({1:.1} s)\n{out}",
        ns.name,
        started.elapsed().as_secs_f64()
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        !out.lines()
            .any(|l| l.starts_with("FAIL") || l.starts_with("WARN")),
        "{out}"
    );
    line_with(
        &out,
        "PASS  CRD failoverclusters.kube-failover.io",
        &["current"],
    );
    line_with(&out, "PASS  controller leader Lease", &["held by vok"]);
    line_with(&out, "PASS  controller RBAC", &[sa]);
    line_with(&out, "PASS  cluster vok", &["3 of 3 members up"]);
    line_with(
        &out,
        "PASS  instance",
        &["db: its owners are members of cluster vok"],
    );
    line_with(
        &out,
        "PASS  instance",
        &[
            "claim data",
            &format!("CSI driver {SIM_CSI_DRIVER} attaches"),
        ],
    );
    line_with(&out, "PASS  instance", &["virtual IPs", "ExternalIPs"]);
    line_with(
        &out,
        "PASS  instance",
        &[
            "db network name",
            "198.51.100.70 (pool test, claimed for it)",
            "external hostname db.example.com (zone example.com)",
        ],
    );
    line_with(
        &out,
        "PASS  cluster vok address pools",
        &["none of its 1 pools overlaps"],
    );
    for node in &nodes {
        line_with(&out, "PASS  member", &[&format!("{node} (cluster vok)")]);
    }
    line_with(
        &out,
        "PASS  cluster vok node agents",
        &["every member runs"],
    );
    line_with(
        &out,
        "PASS  cluster vok",
        &["every instance would have a place", "3 members checked"],
    );
    // 2 CRDs, leader, RBAC, version, 3 members, quorum, resilience, agents, address pools,
    // owners, storage, virtual IPs, network name.
    assert!(
        out.ends_with("\n16 passed, 0 warnings, 0 failed\n"),
        "{out}"
    );

    // Someone who may only list the instances and the clusters: what they cannot read is
    // not checked, and said so, rather than judged.
    let viewer = format!("{}-viewer", ns.name);
    let sa: k8s_openapi::api::core::v1::ServiceAccount =
        serde_json::from_value(serde_json::json!({"metadata": {"name": "viewer"}})).unwrap();
    Api::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &sa)
        .await
        .unwrap();
    let role: k8s_openapi::api::rbac::v1::ClusterRole = serde_json::from_value(serde_json::json!({
        "metadata": {"name": viewer},
        "rules": [{"apiGroups": ["kube-failover.io"],
                   "resources": ["failoverclusters", "failoverclusterinstances"],
                   "verbs": ["get", "list"]}],
    }))
    .unwrap();
    Api::all(client.clone())
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding =
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": viewer},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": viewer},
            "subjects": [{"kind": "ServiceAccount", "name": "viewer", "namespace": ns.name}],
        }))
        .unwrap();
    Api::all(client.clone())
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    let token = kube_failover_lab::harness::service_account_token(&ns.name, "viewer").await;
    let kubeconfig = control_plane()
        .kubeconfig_with_token(&viewer, &token)
        .unwrap();
    let (code, out) = validate_with(
        &[
            "-n",
            &ns.name,
            "--controller-namespace",
            &ns.name,
            "--controller-service-account",
            &sa_name,
        ],
        &kubeconfig,
    );
    println!("$ kubectl failover validate … (as {viewer})\n{out}");
    assert_eq!(code, 0, "{out}");
    line_with(
        &out,
        "WARN  CRD failoverclusters.kube-failover.io",
        &["not checked"],
    );
    line_with(&out, "WARN  controller leader Lease", &["not checked"]);
    line_with(
        &out,
        "WARN  controller RBAC",
        &["you may not create SubjectAccessReviews"],
    );
    line_with(&out, "WARN  members and owners", &["not checked", "Nodes"]);
    line_with(&out, "PASS  cluster vok", &["3 of 3 members up"]);
    line_with(
        &out,
        "WARN  cluster vok address pools",
        &["not checked", "Nodes"],
    );
    attacher.abort();
}

/// `simulate --fail` answers before the failure what the controller then does: each
/// instance the failure touches goes where the answer said, or is held for the reason it
/// gave; the others stay. The cluster's `Resilient` condition names the one held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulate_answers_what_the_controller_then_does() {
    let ns = TestNamespace::new("simulate").await;
    let client = ns.client.clone();
    let nodes = nodes_and_cluster(&client, "simulate", 4, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "simulate", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let make = |name: &str, preferred: &[&String], possible: &[&String]| {
        let preferred: Vec<String> = preferred.iter().map(|s| s.to_string()).collect();
        let mut fci = instance(name, "simulate", &preferred, None).unwrap();
        fci.spec.virtual_ips = Vec::new();
        fci.spec.owners.possible = possible.iter().map(|s| s.to_string()).collect();
        fci
    };
    // On node 0: two that fail over to different nodes, one that may run nowhere else;
    // on node 1: one the failure leaves alone.
    let set = [
        make("alpha", &[&nodes[0], &nodes[2]], &[]),
        make("bravo", &[&nodes[0], &nodes[3]], &[]),
        make("pinned", &[&nodes[0]], &[&nodes[0]]),
        make("steady", &[&nodes[1]], &[]),
    ];
    for fci in &set {
        fcis.create(&PostParams::default(), fci).await.unwrap();
    }
    for name in ["alpha", "bravo", "pinned"] {
        wait_for(
            fcis.clone(),
            name,
            T,
            "online on node 0",
            |i: Option<&FailoverClusterInstance>| {
                online_owner(i).as_deref() == Some(nodes[0].as_str())
            },
        )
        .await;
    }
    wait_for(
        fcis.clone(),
        "steady",
        T,
        "online on node 1",
        |i: Option<&FailoverClusterInstance>| online_owner(i).as_deref() == Some(nodes[1].as_str()),
    )
    .await;

    // The controller's own what-if, for each member: node 0's failure strands `pinned`.
    let clusters: Api<FailoverCluster> = Api::all(client.clone());
    let pinned_key = format!("{}/pinned", ns.name);
    let cluster = wait_for(
        clusters,
        "simulate",
        T,
        "Resilient False",
        |c: Option<&FailoverCluster>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == "Resilient" && c.status == "False" && c.message.contains(&pinned_key)
                })
            })
        },
    )
    .await;
    let message = &cluster
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Resilient")
        .unwrap()
        .message;
    assert!(
        message.contains(&format!("if {} fails, {pinned_key} is held", nodes[0])),
        "{message}"
    );
    let (code, out) = validate(&["-n", &ns.name]);
    assert!(
        line_with(&out, "WARN  cluster simulate", &["would be held"]).contains(&pinned_key),
        "exit {code}\n{out}"
    );

    let (ok, table_out) = kubectl_failover(&["simulate", "--fail", &nodes[0], "-n", &ns.name]);
    assert!(ok, "{table_out}");
    println!("{table_out}");
    assert!(
        table_out.contains(&format!("if {} fails: 2 move(s), 1 held", nodes[0])),
        "{table_out}"
    );
    let (ok, json) = kubectl_failover(&[
        "simulate", "--fail", &nodes[0], "-n", &ns.name, "-o", "json",
    ]);
    assert!(ok, "{json}");
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    let answers = report["clusters"][0]["answers"].as_array().unwrap().clone();
    assert_eq!(answers.len(), 4, "{report}");
    let answer = |name: &str| {
        answers
            .iter()
            .find(|a| a["instance"] == format!("{}/{name}", ns.name))
            .unwrap_or_else(|| panic!("no answer for {name}: {report}"))
            .clone()
    };
    assert_eq!(
        answer("alpha")["outcome"]["to"],
        nodes[2].as_str(),
        "{report}"
    );
    assert_eq!(
        answer("bravo")["outcome"]["to"],
        nodes[3].as_str(),
        "{report}"
    );
    assert_eq!(answer("pinned")["outcome"]["kind"], "held", "{report}");
    assert_eq!(answer("steady")["outcome"]["kind"], "stays", "{report}");

    // Now node 0 fails for real: the controller does what the answer said.
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    for name in ["alpha", "bravo"] {
        let a = answer(name);
        assert_eq!(a["outcome"]["failover"], true, "{a}");
        let to = a["outcome"]["to"].as_str().unwrap().to_string();
        wait_for(
            fcis.clone(),
            name,
            T,
            "online where simulate said",
            |i: Option<&FailoverClusterInstance>| online_owner(i).as_deref() == Some(to.as_str()),
        )
        .await;
    }
    let said = answer("pinned")["outcome"]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    let held = wait_for(
        fcis.clone(),
        "pinned",
        T,
        "held as simulate said",
        |i: Option<&FailoverClusterInstance>| {
            i.and_then(|i| i.status.as_ref()).is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Online" && c.status == "False" && c.reason == said)
            })
        },
    )
    .await;
    assert_ne!(held.status.unwrap().phase, Phase::Online);
    let steady = fcis.get("steady").await.unwrap();
    assert_eq!(
        online_owner(Some(&steady)).as_deref(),
        Some(nodes[1].as_str())
    );
    assert_eq!(steady.status.unwrap().history.len(), 1, "it never moved");
}
