//! The operator's verbs as a user runs them: `kubectl failover …`, kubectl finding the
//! `kubectl-failover` plugin on PATH, against the real control plane.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kube::api::{Api, PostParams};
use kube_failover::api::{FailoverCluster, FailoverClusterInstance, MemberState, Phase};
use kube_failover_lab::demo::instance;
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, nodes_and_cluster, wait_for,
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

fn kubectl_failover_command(args: &[&str]) -> Command {
    let cp = control_plane();
    let plugin_dir = Path::new(env!("CARGO_BIN_EXE_kubectl-failover"))
        .parent()
        .unwrap();
    let path = std::env::join_paths(
        [plugin_dir.to_path_buf(), cp.tools_bin().to_path_buf()]
            .into_iter()
            .chain(std::env::split_paths(
                &std::env::var_os("PATH").unwrap_or_default(),
            )),
    )
    .unwrap();
    let mut c = Command::new(cp.tools_bin().join("kubectl"));
    c.arg("failover")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", cp.kubeconfig());
    c
}

/// Waits until the controller's status of cluster `plugin` says `up` members are Up and
/// that `owner` owns the instance.
async fn cluster_status(client: &kube::Client, up: usize, owner: &str) {
    let clusters: Api<FailoverCluster> = Api::all(client.clone());
    wait_for(
        clusters,
        "plugin",
        T,
        "cluster status",
        |c: Option<&FailoverCluster>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.members
                    .iter()
                    .filter(|m| m.state == MemberState::Up)
                    .count()
                    == up
                    && s.members
                        .iter()
                        .any(|m| m.name == owner && !m.instances.is_empty())
            })
        },
    )
    .await;
}

fn online_on(i: Option<&FailoverClusterInstance>) -> Option<String> {
    let s = i?.status.as_ref()?;
    (s.phase == Phase::Online && s.current_move.is_none())
        .then(|| s.owner_node.clone())
        .flatten()
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
    wait_for(
        fcis.clone(),
        "db",
        T,
        "online",
        |i: Option<&FailoverClusterInstance>| online_on(i).as_deref() == Some(nodes[0].as_str()),
    )
    .await;
    cluster_status(&client, 3, &nodes[0]).await;

    let (ok, out) = kubectl_failover(&["status", "-n", &ns.name]);
    assert!(ok, "{out}");
    println!("{out}");
    assert!(
        out.contains("Cluster plugin   quorum: 3 of 3 members up, 2 required: 1 more may fail"),
        "{out}"
    );
    for node in &nodes {
        let row = out.lines().find(|l| l.starts_with(node.as_str())).unwrap();
        assert!(row.contains(" Up "), "{row}");
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
        |i: Option<&FailoverClusterInstance>| online_on(i).is_some_and(|n| n != nodes[0]),
    )
    .await;
    let to = online_on(Some(&moved)).unwrap();
    cluster_status(&client, 2, &to).await;
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
        .find(|l| l.starts_with(nodes[0].as_str()))
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
        .filter_map(|l| nodes.iter().find(|n| l.starts_with(n.as_str())))
        .map(String::as_str)
        .collect();
    assert_eq!(listed, nodes.iter().map(String::as_str).collect::<Vec<_>>());
    // A missing instance is an error that says so.
    let (ok, _) = kubectl_failover(&["history", "nope", "-n", &ns.name]);
    assert!(!ok);
}
