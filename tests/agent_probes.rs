//! The node agent's probes, in a network namespace against the real control plane: the
//! agent is ready once it renews its Lease; cut off from the API server it is no longer
//! ready but stays alive (the kubelet must not restart an agent that keeps its node
//! fenced); back on the network it is ready again. The test needs root, iproute2 and
//! python3.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use kube_failover_lab::controlplane::install_agent_identity;
use kube_failover_lab::harness::{TestNamespace, control_plane, nodes_and_cluster};
use kube_failover_lab::netlab::NetLab;

const T: Duration = Duration::from_secs(60);
/// The agent's self-fence time (its default).
const SELF_FENCE: Duration = Duration::from_secs(3);
/// Longer than the agent's stall limit (10 s by default): a liveness probe that depended on
/// the API server would have failed by then.
const CUT_OFF_FOR: Duration = Duration::from_secs(15);

/// GETs `path` from the agent's probe address inside network namespace `ns`: the status
/// and the body.
fn probe(ns: &str, path: &str) -> (u16, String) {
    const GET: &str = "import sys, urllib.request, urllib.error\n\
        try:\n    r = urllib.request.urlopen(sys.argv[1], timeout=2); print(r.status); \
        print(r.read().decode())\n\
        except urllib.error.HTTPError as e:\n    print(e.code); print(e.read().decode())\n\
        except OSError as e:\n    print(0); print(e)\n";
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", ns, "python3", "-c", GET])
        .arg(format!("http://127.0.0.1:9810{path}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (status, body) = text.split_once('\n').unwrap_or(("0", ""));
    (status.trim().parse().unwrap_or(0), body.trim().to_string())
}

/// Polls `path` until `want` holds of its answer, within `limit`.
async fn until(
    ns: &str,
    path: &str,
    limit: Duration,
    what: &str,
    want: impl Fn(u16, &str) -> bool,
) {
    let start = Instant::now();
    loop {
        let (status, body) = probe(ns, path);
        if want(status, &body) {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: {path} still answers {status} {body:?} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_agent_stays_alive_and_is_ready_again_once_back() {
    let ns = TestNamespace::new("agent-probes").await;
    let client = ns.client.clone();
    let cp = control_plane();
    let nodes = nodes_and_cluster(&client, "agent-probes", 1, serde_json::json!({})).await;
    let mut lab = NetLab::create(1, cp.api_addr().unwrap()).await.unwrap();
    install_agent_identity(&client, &cp.tools_bin().join("helm"))
        .await
        .unwrap();
    let dir = cp.logs_dir().join(&ns.name);
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig-0");
    lab.agent_kubeconfig(cp, &client, &nodes[0], &kubeconfig)
        .await
        .unwrap();
    lab.spawn(
        Some(0),
        Path::new("env"),
        &[
            &format!("KUBECONFIG={}", kubeconfig.display()),
            "RUST_LOG=info",
            env!("CARGO_BIN_EXE_kube-failover"),
            "agent",
            "--node",
            &nodes[0],
            "--interface",
            "eth0",
            "--state-dir",
            &dir.join("state").display().to_string(),
        ],
        &dir.join("agent.log"),
    )
    .unwrap();
    let netns = lab.node_ns(0);

    // Ready once it renews its Lease, its interface up.
    until(&netns, "/readyz", T, "ready", |s, body| {
        s == 200 && body.starts_with("ok: heartbeat Lease renewed")
    })
    .await;
    let (status, body) = probe(&netns, "/healthz");
    assert_eq!(status, 200, "{body}");

    // Cut off: not ready within the self-fence time (and its interface has no carrier),
    // but alive throughout, well past the stall limit.
    lab.partition(0, true).unwrap();
    let cut = Instant::now();
    until(
        &netns,
        "/readyz",
        SELF_FENCE + Duration::from_secs(3),
        "not ready when cut off",
        |s, body| s == 503 && body.contains("heartbeat Lease last renewed"),
    )
    .await;
    let (_, body) = probe(&netns, "/readyz");
    assert!(body.contains("interface eth0 has no carrier"), "{body}");
    assert!(!body.contains('\n'), "one line: {body:?}");
    while cut.elapsed() < CUT_OFF_FOR {
        let (status, body) = probe(&netns, "/healthz");
        assert_eq!(
            status,
            200,
            "alive while cut off ({:?} in): {body}",
            cut.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Back: ready again.
    lab.partition(0, false).unwrap();
    until(&netns, "/readyz", T, "ready again", |s, _| s == 200).await;
}
