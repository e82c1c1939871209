//! Set-up of a run: the controller's identity, the member nodes and cluster, the
//! instances and their volumes, and the wait until all are online.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use tokio::sync::mpsc::UnboundedSender;

use crate::controlplane::{
    AbortOnDrop, CONTROLLER_NS, ControlPlane, ControlPlaneConfig, controller_token,
    create_if_absent, install_controller_identity,
};
use crate::demo::SIM_CSI_DRIVER;
use crate::simruntime::Runtimes;
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance};

use super::agents::Agents;
use super::containers::Kubelets;
use super::faults::Machines;
use super::watches::QuickBackoff;
use super::*;

/// Awaits every instance online; `Err` lists those that are not, at the timeout.
pub(super) async fn await_all_online(
    client: &Client,
    expected: usize,
    timeout: Duration,
) -> Result<std::result::Result<f64, String>> {
    let started = Instant::now();
    let api: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), NS);
    let (store, writer) = kube::runtime::reflector::store();
    let mut events = watcher(api, watcher::Config::default())
        .backoff(QuickBackoff(Duration::from_millis(100)))
        .reflect(writer)
        .boxed();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let all = store.state();
        if all.len() == expected && all.iter().all(|i| instance_online(i)) {
            return Ok(Ok(started.elapsed().as_secs_f64()));
        }
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => bail!("the instance watch ended"),
            Err(_) => {
                let mut not: Vec<String> = all
                    .iter()
                    .filter(|i| !instance_online(i))
                    .map(|i| {
                        let s = i.status.clone().unwrap_or_default();
                        let why = s
                            .conditions
                            .iter()
                            .find(|c| c.type_ == "Online")
                            .map(|c| format!("{}: {}", c.reason, c.message))
                            .unwrap_or_default();
                        format!(
                            "{} ({:?} on {}, {why})",
                            i.name_any(),
                            s.phase,
                            s.owner_node.unwrap_or_default()
                        )
                    })
                    .collect();
                not.sort();
                return Ok(Err(format!(
                    "{} of {expected} instances not online within {timeout:?}: {}",
                    not.len(),
                    not.join("; ")
                )));
            }
        }
    }
}

/// The controller's namespace, ServiceAccount, RBAC and admission policies, from the manifest
/// users apply, and a kubeconfig with a token of that ServiceAccount: the controller runs
/// with exactly the permissions that ship, and the audit log knows it by name.
pub(super) async fn controller_identity(
    cp: &ControlPlane,
    client: &Client,
    seconds: i64,
) -> Result<PathBuf> {
    install_controller_identity(client).await?;
    let token = controller_token(client, seconds).await?;
    cp.kubeconfig_with_token("kube-failover", &token)
}

pub(super) fn instance(i: usize, nodes: &[String]) -> Result<FailoverClusterInstance> {
    let n = nodes.len();
    let preferred: Vec<String> = (0..3.min(n)).map(|k| nodes[(i + k) % n].clone()).collect();
    let mut f = crate::demo::instance(
        &format!("db-{i}"),
        CLUSTER,
        &preferred,
        Some(&format!("data-{i}")),
    )?;
    // Faults come every few seconds for minutes: the default threshold (members − 1
    // failovers in 6 h) would rightly leave instances Failed, which is not what is tested.
    f.spec.failover.threshold = Some(1000);
    f.spec.virtual_ips = vec![crate::demo::nth_vip(i)];
    Ok(f)
}

pub(super) async fn create_volume(client: &Client, i: usize) -> Result<()> {
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("chaos-{i}")},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
            "claimRef": {"namespace": NS, "name": format!("data-{i}")},
            "csi": {"driver": SIM_CSI_DRIVER, "volumeHandle": format!("chaos-{i}")},
        }
    }))?;
    create_if_absent(&Api::all(client.clone()), &pv).await?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("data-{i}")},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                 "volumeName": format!("chaos-{i}"), "resources": {"requests": {"storage": "1Gi"}}}
    }))?;
    create_if_absent(&Api::namespaced(client.clone(), NS), &pvc).await
}

/// The control plane of a run: no scheduler, an audit log, logs in `work_dir` if given.
pub(super) async fn start_control_plane(args: &ChaosArgs) -> Result<ControlPlane> {
    let mut config = ControlPlaneConfig {
        scheduler: false,
        audit_log: true,
        ..Default::default()
    };
    if let Some(dir) = &args.work_dir {
        config.work_dir = dir.clone();
    }
    let cp = ControlPlane::start(config).await?;
    println!(
        "[chaos] control plane ready in {:.1} s; logs (controller replicas' too, and the audit log) in {}",
        cp.startup.as_secs_f64(),
        cp.logs_dir().display()
    );
    Ok(cp)
}

/// The member nodes and their FailoverCluster; returns once every node is Ready.
pub(super) async fn create_members(
    cp: &ControlPlane,
    client: &Client,
    count: usize,
) -> Result<Vec<String>> {
    let nodes = cp
        .nodes
        .create(
            "chaos",
            count,
            &BTreeMap::from([(MEMBER_LABEL.to_string(), "true".to_string())]),
        )
        .await?;
    let cluster: FailoverCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverCluster",
        "metadata": {"name": CLUSTER},
        "spec": {
            "nodeSelector": {MEMBER_LABEL: "true"},
            "allowedNamespaces": {"names": [NS]},
            // The node Lease lasts 4 s (renewed every second): a node is down after 6 s
            // without a renewal, or 10 s NotReady; a returned node is unfenced after 10 s.
            "heartbeat": {"leaseStaleSeconds": LEASE_STALE_SECONDS, "notReadySeconds": 10},
            "fencing": {"unfenceAfterSeconds": 10},
            // Where the instances' virtual IPs come from (`demo::nth_vip`).
            "addressPools": [{"name": "lab", "cidrs": ["192.0.2.0/24", "2001:db8::/64"]}],
        }
    }))?;
    create_if_absent(&Api::<FailoverCluster>::all(client.clone()), &cluster).await?;
    let node_api: Api<Node> = Api::all(client.clone());
    for node in &nodes {
        let ready = |n: Option<&Node>| {
            n.and_then(|n| n.status.as_ref()?.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        };
        tokio::time::timeout(
            Duration::from_secs(60),
            kube::runtime::wait::await_condition(node_api.clone(), node, ready),
        )
        .await
        .with_context(|| format!("node {node} not Ready in 60 s"))??;
    }
    Ok(nodes)
}

/// The simulated CSI driver, which requires attachment.
pub(super) async fn create_csi_driver(client: &Client) -> Result<()> {
    let driver: CSIDriver = serde_json::from_value(serde_json::json!({
        "metadata": {"name": SIM_CSI_DRIVER}, "spec": {"attachRequired": true}
    }))?;
    create_if_absent(&Api::all(client.clone()), &driver).await
}

/// The instances, each with its volume.
pub(super) async fn create_instances(
    client: &Client,
    count: usize,
    nodes: &[String],
) -> Result<()> {
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), NS);
    for i in 0..count {
        create_volume(client, i).await?;
        create_if_absent(&fcis, &instance(i, nodes)?).await?;
    }
    Ok(())
}

/// What a run's machines need kept until its end: the runtimes' servers, the kubelets'
/// task, the periodic count of running copies, and the directory of the sockets and the
/// agents' state.
pub(super) struct MachineTasks {
    _tasks: Vec<AbortOnDrop>,
    _dir: tempfile::TempDir,
}

/// Each node's container runtime (its socket served, every change of the running copies
/// told the watcher, and all of them every second), its kubelet's container side, and its
/// node agent; returns once every agent renews.
pub(super) async fn start_machines(
    cp: &ControlPlane,
    client: &Client,
    args: &ChaosArgs,
    bin: &Path,
    nodes: &[String],
    tx: &UnboundedSender<Observation>,
    seed: u64,
) -> Result<(Machines, MachineTasks)> {
    let dir = tempfile::Builder::new()
        .prefix("kube-failover-chaos-")
        .tempdir()?;
    let runtimes = Runtimes::new();
    runtimes.set_observer({
        let tx = tx.clone();
        move |copies| {
            let _ = tx.send(Observation {
                at: Instant::now(),
                wall: jiff::Timestamp::now(),
                fresh: true,
                what: Observed::Copies(copies.clone()),
            });
        }
    });
    let mut tasks = Vec::new();
    let mut sockets = BTreeMap::new();
    for node in nodes {
        runtimes.add_node(node);
        let socket = dir.path().join(format!("{node}.sock"));
        tasks.push(runtimes.serve(node, &socket)?);
        sockets.insert(node.clone(), socket);
    }
    let kubelets = Kubelets::new(nodes);
    tasks.push(kubelets.start(cp.client()?, NS, runtimes.clone()));
    tasks.push(AbortOnDrop(tokio::spawn({
        let runtimes = runtimes.clone();
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                runtimes.announce();
            }
        }
    })));
    let mut agents =
        Agents::prepare(cp, client, bin, &sockets, dir.path(), &args.agent_log, seed).await?;
    agents.start_all().await?;
    let machines = Machines {
        agents,
        runtimes,
        kubelets,
    };
    Ok((
        machines,
        MachineTasks {
            _tasks: tasks,
            _dir: dir,
        },
    ))
}

/// The fault injector, with the controller replicas it may kill and restart and the
/// machines whose kubelets, runtimes and agents it fails.
#[allow(clippy::too_many_arguments)]
pub(super) fn new_injector<'a>(
    cp: &'a ControlPlane,
    args: &ChaosArgs,
    bin: PathBuf,
    kubeconfig: PathBuf,
    nodes: Vec<String>,
    machines: Machines,
    tx: UnboundedSender<Observation>,
    seed: u64,
) -> Result<Injector<'a>> {
    let mut controllers = Controllers::new(
        bin,
        kubeconfig,
        cp.process_group_id(),
        cp.logs_dir(),
        NS,
        CONTROLLER_NS,
    );
    controllers.log_filter = args.controller_log.clone();
    Ok(Injector::new(
        cp,
        cp.client()?,
        NS,
        nodes,
        MEMBER_LABEL,
        tx,
        controllers,
        machines,
        seed,
    ))
}
