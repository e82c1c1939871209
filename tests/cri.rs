//! Self-fencing stops real containers: the node agent, cut off from the API server, stops
//! the instance pods of its node through the CRI socket of a real containerd (runc, real
//! processes), keeps them stopped while the kubelet starts them again, and leaves every
//! other pod alone. Needs root, and containerd, runc and busybox-static (`tests/run.sh`
//! installs them).

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use kube_failover_core::api::{INSTANCE_LABEL, agent_lease_name};
use kube_failover_lab::containerd::{Containerd, Kubelet};
use kube_failover_lab::controlplane::install_agent_identity;
use kube_failover_lab::harness::{TestNamespace, control_plane, nodes_and_cluster, wait_for};
use kube_failover_lab::netlab::NetLab;

const T: Duration = Duration::from_secs(60);
const RENEW_MS: u64 = 500;
const SELF_FENCE_SECONDS: f64 = 1.5;
const STOP_TIMEOUT_SECONDS: f64 = 2.0;

fn renewed(l: Option<&Lease>) -> Option<jiff::Timestamp> {
    Some(l?.spec.as_ref()?.renew_time.as_ref()?.0)
}

/// Waits until the agent's Lease `name` has been renewed twice from now.
async fn two_renewals(leases: &Api<Lease>, name: &str) {
    let since = jiff::Timestamp::now();
    let interval = RENEW_MS as f64 / 1000.0;
    wait_for(
        leases.clone(),
        name,
        T,
        "two renewals",
        |l: Option<&Lease>| {
            renewed(l).is_some_and(|t| t.duration_since(since).as_secs_f64() > 2.0 * interval)
        },
    )
    .await;
}

/// Polls `sandbox` every 20 ms until it is no longer ready; returns when that was seen.
async fn stopped(kubelet: &mut Kubelet, sandbox: &str, what: &str) -> jiff::Timestamp {
    let deadline = Instant::now() + T;
    loop {
        if !kubelet.ready(sandbox).await.unwrap() {
            return jiff::Timestamp::now();
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not stopped within {T:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Creates the pod `name` bound to `node` with `labels`; returns its UID.
pub async fn api_pod(
    client: &kube::Client,
    ns: &str,
    name: &str,
    node: &str,
    labels: &[(&str, &str)],
) -> String {
    let labels: std::collections::BTreeMap<&str, &str> = labels.iter().copied().collect();
    let pod: k8s_openapi::api::core::v1::Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "labels": labels},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "busybox"}]},
    }))
    .unwrap();
    Api::<k8s_openapi::api::core::v1::Pod>::namespaced(client.clone(), ns)
        .create(&kube::api::PostParams::default(), &pod)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_agent_stops_instance_pods_through_cri_and_keeps_them_stopped() {
    if let Some(why) = Containerd::missing() {
        panic!("this test needs a container runtime: {why}");
    }
    let ns = TestNamespace::new("cri").await;
    let client = ns.client.clone();
    let cp = control_plane();
    let nodes = nodes_and_cluster(&client, "cri", 1, serde_json::json!({})).await;
    let node = &nodes[0];
    let dir = cp.logs_dir().join(&ns.name);
    std::fs::create_dir_all(&dir).unwrap();
    // A short path: a unix socket's may not exceed 108 bytes.
    let runtime_dir = tempfile::Builder::new()
        .prefix("kf-containerd-")
        .tempdir_in("/tmp")
        .unwrap();
    let runtime = Containerd::start(runtime_dir.path()).await.unwrap();
    let mut kubelet = Kubelet::connect(runtime.socket()).await.unwrap();

    let mut lab = NetLab::create(1, cp.api_addr().unwrap()).await.unwrap();
    install_agent_identity(&client, &cp.tools_bin().join("helm"))
        .await
        .unwrap();
    let kubeconfig = dir.join("kubeconfig-agent");
    lab.agent_kubeconfig(cp, &client, node, &kubeconfig)
        .await
        .unwrap();
    let agent_log = dir.join("agent.log");
    lab.spawn(
        Some(0),
        std::path::Path::new("env"),
        &[
            &format!("KUBECONFIG={}", kubeconfig.display()),
            "RUST_LOG=info",
            env!("CARGO_BIN_EXE_kube-failover"),
            "agent",
            "--node",
            node,
            "--interface",
            "eth0",
            "--renew-ms",
            &RENEW_MS.to_string(),
            "--self-fence-seconds",
            &SELF_FENCE_SECONDS.to_string(),
            "--stop-timeout-seconds",
            &STOP_TIMEOUT_SECONDS.to_string(),
            "--state-dir",
            &dir.join("state").display().to_string(),
            "--cri-socket",
            &runtime.socket().display().to_string(),
        ],
        &agent_log,
    )
    .unwrap();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease_name = agent_lease_name(node);
    wait_for(
        leases.clone(),
        &lease_name,
        T,
        "agent Lease",
        |l: Option<&Lease>| renewed(l).is_some(),
    )
    .await;

    // The kubelet's pods on this node: an instance's, and another; each a pod in the API
    // too (the agent stops an instance container whose pod is gone).
    let instance = [(INSTANCE_LABEL, "db")];
    let db_uid = api_pod(&client, &ns.name, "db-1", node, &instance).await;
    let web_uid = api_pod(&client, &ns.name, "web", node, &[("app", "web")]).await;
    let db = kubelet
        .run_pod_with_uid(&ns.name, "db-1", &db_uid, 0, &instance)
        .await
        .unwrap();
    let other = kubelet
        .run_pod_with_uid(&ns.name, "web", &web_uid, 0, &[("app", "web")])
        .await
        .unwrap();
    // While the agent renews, nothing is stopped: two renewals later both still run.
    two_renewals(&leases, &lease_name).await;
    assert!(
        kubelet.ready(&db).await.unwrap(),
        "an instance pod stopped by a renewing agent"
    );
    assert!(kubelet.ready(&other).await.unwrap());

    // Cut off: the agent stops the instance pod within what it announced.
    let cut = jiff::Timestamp::now();
    lab.partition(0, true).unwrap();
    let stopped_at = stopped(&mut kubelet, &db, "the instance pod of a cut-off agent").await;
    let last = renewed(Some(&leases.get(&lease_name).await.unwrap())).unwrap();
    let after_renewal = stopped_at.duration_since(last).as_secs_f64();
    let announced = SELF_FENCE_SECONDS + STOP_TIMEOUT_SECONDS;
    println!(
        "instance pod stopped {:.2} s after the cut, {after_renewal:.2} s after the last renewal \
         (announced: within {announced} s; the controller waits that plus {} s)",
        stopped_at.duration_since(cut).as_secs_f64(),
        kube_failover_core::decide::SELF_FENCE_MARGIN.as_secs_f64(),
    );
    assert!(
        after_renewal <= announced + kube_failover_core::decide::SELF_FENCE_MARGIN.as_secs_f64(),
        "stopped {after_renewal:.2} s after the last renewal: later than the controller waits; \
         see {}",
        agent_log.display()
    );
    assert!(
        kubelet.ready(&other).await.unwrap(),
        "a pod of no instance was stopped"
    );

    // The kubelet, cut off too but running, starts the pod again: stopped again.
    let again = kubelet
        .run_pod_with_uid(&ns.name, "db-1", &db_uid, 1, &instance)
        .await
        .unwrap();
    let restarted = jiff::Timestamp::now();
    let stopped_again = stopped(&mut kubelet, &again, "a pod restarted while fenced").await;
    println!(
        "a pod the kubelet started again while fenced stopped {:.2} s later",
        stopped_again.duration_since(restarted).as_secs_f64()
    );
    assert!(kubelet.ready(&other).await.unwrap());

    // Joined again: renewals resume, and the agent stops nothing more.
    let healed = jiff::Timestamp::now();
    lab.partition(0, false).unwrap();
    wait_for(
        leases.clone(),
        &lease_name,
        T,
        "renewals again",
        |l: Option<&Lease>| renewed(l).is_some_and(|t| t > healed),
    )
    .await;
    let back = kubelet
        .run_pod_with_uid(&ns.name, "db-1", &db_uid, 2, &instance)
        .await
        .unwrap();
    two_renewals(&leases, &lease_name).await;
    assert!(
        kubelet.ready(&back).await.unwrap(),
        "an instance pod stopped after the agent renewed again; see {}",
        agent_log.display()
    );
    assert!(kubelet.ready(&other).await.unwrap());
    let log = std::fs::read_to_string(&agent_log).unwrap();
    assert!(
        log.contains("instance pods stopped through the container runtime"),
        "{log}"
    );

    // The instance's pod is force-deleted from the API (as on a fenced node) while its
    // container runs and the agent renews: the agent stops it; the other pod runs on.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.delete("db-1", &kube::api::DeleteParams::default().grace_period(0))
        .await
        .unwrap();
    let deleted = jiff::Timestamp::now();
    let gone_stopped = stopped(&mut kubelet, &back, "an instance pod whose pod is gone").await;
    println!(
        "an instance container whose pod was deleted from the API stopped {:.2} s later",
        gone_stopped.duration_since(deleted).as_secs_f64()
    );
    assert!(
        kubelet.ready(&other).await.unwrap(),
        "a pod that still exists was stopped"
    );

    drop(lab);
    runtime.stop().await.unwrap();
    drop(runtime_dir);
}
