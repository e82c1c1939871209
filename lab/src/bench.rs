//! `kube-failover-lab bench`: failover latency, scale and cost on a local control plane,
//! beside the floor (the same minimum writes from a plain client) and the baselines (a
//! StatefulSet and a Deployment with an RWO claim, on Kubernetes' defaults).
//!
//! The controller runs as a separate process, the very binary that ships (`kube-failover
//! run`), so that its memory and CPU time are its own; figures are read from /proc and from
//! its /metrics.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde::Serialize;

use crate::controlplane::{ControlPlane, ControlPlaneConfig, http_get, play_csi_attacher};
use crate::demo::{SIM_CSI_DRIVER, ensure_tools};
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance, Phase};

const NS: &str = "bench";
const MEMBER_LABEL: &str = "bench.kube-failover.io/member";

#[derive(Clone, Debug, clap::Args)]
pub struct BenchArgs {
    /// Simulated nodes.
    #[arg(long, default_value_t = 10)]
    pub nodes: usize,
    /// Failover cluster instances, spread over the nodes.
    #[arg(long, default_value_t = 10)]
    pub instances: usize,
    /// Kill a third of the nodes at once instead of the one hosting the most instances.
    #[arg(long)]
    pub storm: bool,
    /// Also measure a StatefulSet and a Deployment with an RWO claim on the killed node.
    #[arg(long)]
    pub baseline: bool,
    /// How long to wait for the baselines to run elsewhere before calling it "not within".
    #[arg(long, default_value_t = 120)]
    pub baseline_bound_seconds: u64,
    /// Lease duration of the simulated nodes (they renew every quarter of it); by default
    /// 4 s for small runs and 20 s from 100 nodes or 100 instances on.
    #[arg(long)]
    pub node_lease_seconds: Option<u32>,
    /// Append the scenario's result to this JSON file (an array).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// The controller binary to measure; by default `kube-failover` beside this binary
    /// (`cargo build --release --workspace` builds both).
    #[arg(long)]
    pub controller_bin: Option<PathBuf>,
}

/// The controller binary: given, or `kube-failover` in the directory of this binary.
pub fn controller_bin(given: Option<&Path>) -> Result<PathBuf> {
    let bin = match given {
        Some(bin) => bin.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("kube-failover"),
    };
    if !bin.is_file() {
        bail!(
            "controller binary {} not found: build it with `cargo build --release -p kube-failover` or pass --controller-bin",
            bin.display()
        );
    }
    Ok(bin)
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Stats {
    pub n: usize,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl Stats {
    pub fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(|a, b| a.total_cmp(b));
        let q = |p: f64| -> f64 {
            if v.is_empty() {
                return f64::NAN;
            }
            let idx = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
            v[idx]
        };
        Self {
            n: v.len(),
            p50: q(0.50),
            p95: q(0.95),
            p99: q(0.99),
            max: v.last().copied().unwrap_or(f64::NAN),
        }
    }
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct ScenarioResult {
    pub name: String,
    pub nodes: usize,
    pub instances: usize,
    pub killed_nodes: usize,
    pub affected: usize,
    pub node_lease_seconds: u32,
    pub lease_stale_seconds: u32,
    pub detection: Stats,
    pub reaction: Stats,
    pub total: Stats,
    /// Seconds from the first move started to the last instance online.
    pub controller_wall: f64,
    /// Seconds for a plain client to make the same minimum writes for as many instances.
    pub floor_wall: f64,
    pub api_requests_per_failover: BTreeMap<String, f64>,
    pub controller_peak_rss_mib: f64,
    pub controller_cpu_seconds: f64,
    pub caches_synced_seconds: f64,
    pub setup_seconds: f64,
    pub raw_totals: Vec<f64>,
    pub baselines: Vec<Baseline>,
}

#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct Baseline {
    pub workload: String,
    /// Seconds until a replacement pod was Ready on another node, if within the bound.
    pub recovered_after: Option<f64>,
    pub bound_seconds: u64,
    pub note: String,
}

fn scenario_name(a: &BenchArgs) -> String {
    format!(
        "N={}/M={}{}",
        a.nodes,
        a.instances,
        if a.storm { " storm (⅓ of nodes)" } else { "" }
    )
}

/// Node heartbeat settings by scale: a kubelet's defaults (40 s lease renewed every 10 s)
/// would make small runs slow; with 100 nodes or more, a 4 s lease makes the renewals alone
/// load the API server of a 2-core machine enough that renewals arrive late and healthy
/// nodes look dead (seen: 12 of 100 nodes "up" while instances were being created).
fn lease_settings(nodes: usize, instances: usize, lease: Option<u32>) -> (u32, u32) {
    let lease: u32 = lease.unwrap_or(if nodes < 100 && instances < 100 {
        4
    } else {
        20
    });
    let renew = lease / 4;
    (lease, renew * 2 + 1)
}

fn proc_stat(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat; after the ')' they are at 11 and 12.
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    Ok((hwm_kib / 1024.0, ticks / 100.0))
}

fn requests_by_verb(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("kube_failover_api_requests_total{verb=\""))
        .filter_map(|rest| {
            let (verb, value) = rest.split_once("\"} ")?;
            Some((verb.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

struct ControllerProcess {
    child: Child,
    addr: std::net::SocketAddr,
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn spawn_controller(cp: &ControlPlane, bin: &Path) -> Result<(ControllerProcess, f64)> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let started = Instant::now();
    let child = Command::new(bin)
        .args(["run", "--watch-namespace", NS, "--leader-elect", "false"])
        .args(["--metrics-addr", &addr.to_string()])
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            cp.logs_dir().join("kube-failover.log"),
        )?)
        .spawn()?;
    let proc = ControllerProcess { child, addr };
    loop {
        if let Ok((200, _)) = http_get(addr, "/readyz").await {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("controller not ready after 300 s");
        }
        // Nothing to watch before the process listens.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((proc, started.elapsed().as_secs_f64()))
}

async fn create_all<K, F>(api: &Api<K>, n: usize, make: F) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + Serialize + std::fmt::Debug,
    F: Fn(usize) -> Result<K>,
{
    let objs: Vec<K> = (0..n).map(make).collect::<Result<_>>()?;
    futures::stream::iter(objs)
        .map(|o| async move { api.create(&PostParams::default(), &o).await.map(|_| ()) })
        .buffer_unordered(32)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

fn pv(name: &str, ns: &str, claim: &str) -> Result<PersistentVolume> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
            "claimRef": {"namespace": ns, "name": claim},
            "csi": {"driver": SIM_CSI_DRIVER, "volumeHandle": name},
        }
    }))?)
}

fn pvc(name: &str, volume: &str) -> Result<PersistentVolumeClaim> {
    Ok(serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": volume,
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))?)
}

/// Waits until `done` holds for the instances seen by a watch, or the timeout.
async fn watch_instances<F>(
    client: &Client,
    timeout: Duration,
    what: &str,
    mut done: F,
) -> Result<Vec<FailoverClusterInstance>>
where
    F: FnMut(&[FailoverClusterInstance]) -> bool,
{
    let api: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), NS);
    let (reader, writer) = kube::runtime::reflector::store();
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .applied_objects()
        .boxed();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let all: Vec<FailoverClusterInstance> =
            reader.state().iter().map(|i| (**i).clone()).collect();
        if !all.is_empty() && done(&all) {
            return Ok(all);
        }
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(_)) => {}
            Ok(None) => bail!("watch ended while waiting for {what}"),
            Err(_) => bail!("{what}: not within {timeout:?}"),
        }
    }
}

fn online(i: &FailoverClusterInstance) -> bool {
    i.status.as_ref().is_some_and(|s| {
        s.phase == Phase::Online
            && s.current_move.is_none()
            && s.served.as_ref().is_some_and(|v| v.endpoint.is_some())
    })
}

/// The floor: for `k` instances, the minimum writes of a failover, as fast as the API server
/// takes them: withdraw the endpoint, record status, delete the pod, delete the volume
/// attachment, create the new pod, publish the endpoint.
async fn floor(client: &Client, k: usize, live_node: &str, dead_node: &str) -> Result<f64> {
    let ns = "floor";
    crate::controlplane::ControlPlane::create_namespace_with(client, ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let vas: Api<VolumeAttachment> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), ns);
    let pod = |name: String, node: &str| -> Result<Pod> {
        Ok(serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]}
        }))?)
    };
    create_all(&pods, k, |i| pod(format!("f{i}-1"), dead_node)).await?;
    create_all(&vas, k, |i| {
        Ok(serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("floor-{i}")},
            "spec": {"attacher": "floor.invalid", "nodeName": dead_node,
                     "source": {"persistentVolumeName": format!("floor-pv-{i}")}}
        }))?)
    })
    .await?;
    create_all(&fcis, k, |i| {
        let mut f = crate::demo::instance(&format!("f{i}"), "floor-none", &[], None)?;
        f.metadata.namespace = Some(ns.into());
        Ok(f)
    })
    .await?;
    let ssa = PatchParams::apply("floor").force();
    let slice = |name: &str, ip: Option<&str>| {
        serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": ip.map(|ip| vec![serde_json::json!({"addresses": [ip]})]).unwrap_or_default(),
        })
    };
    for i in 0..k {
        let name = format!("f{i}");
        slices
            .patch(&name, &ssa, &Patch::Apply(slice(&name, Some("10.1.0.1"))))
            .await?;
    }
    let started = Instant::now();
    futures::stream::iter(0..k)
        .map(|i| {
            let (pods, vas, slices, fcis, ssa) = (
                pods.clone(),
                vas.clone(),
                slices.clone(),
                fcis.clone(),
                ssa.clone(),
            );
            let name = format!("f{i}");
            let slice_empty = slice(&name, None);
            let slice_new = slice(&name, Some("10.1.0.2"));
            let new_pod = pod(format!("f{i}-2"), live_node);
            async move {
                slices
                    .patch(&name, &ssa, &Patch::Apply(slice_empty))
                    .await?;
                let status = serde_json::json!({"status": {"phase": "Moving"}});
                fcis.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                pods.delete(
                    &format!("{name}-1"),
                    &DeleteParams::default().grace_period(0),
                )
                .await?;
                vas.delete(&format!("floor-{i}"), &DeleteParams::default())
                    .await?;
                pods.create(&PostParams::default(), &new_pod?).await?;
                slices.patch(&name, &ssa, &Patch::Apply(slice_new)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

/// A StatefulSet (one replica, RWO claim from a template) and a Deployment (RWO claim),
/// both preferring `node`; returns once both are Ready there.
async fn start_baselines(client: &Client, node: &str) -> Result<()> {
    let ns = "baseline";
    ControlPlane::create_namespace_with(client, ns).await?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    pvs.create(
        &PostParams::default(),
        &pv("baseline-sts", ns, "data-sts-0")?,
    )
    .await?;
    pvs.create(
        &PostParams::default(),
        &pv("baseline-deploy", ns, "deploy-data")?,
    )
    .await?;
    claims
        .create(
            &PostParams::default(),
            &pvc("deploy-data", "baseline-deploy")?,
        )
        .await?;
    let affinity = serde_json::json!({"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}}
    ]}});
    let container = serde_json::json!({"name": "db", "image": "registry.example/db:1", "volumeMounts": [{"name": "data", "mountPath": "/data"}]});
    let sts: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sts"},
        "spec": {
            "replicas": 1, "serviceName": "sts",
            "selector": {"matchLabels": {"app": "sts"}},
            "template": {"metadata": {"labels": {"app": "sts"}}, "spec": {"affinity": affinity, "containers": [container]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": "baseline-sts",
                "resources": {"requests": {"storage": "1Gi"}}}}],
        }
    }))?;
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sts)
        .await?;
    let deploy: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "deploy"},
        "spec": {
            "replicas": 1, "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": "deploy"}},
            "template": {"metadata": {"labels": {"app": "deploy"}}, "spec": {
                "affinity": affinity, "containers": [container],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "deploy-data"}}]}},
        }
    }))?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deploy)
        .await?;
    for app in ["sts", "deploy"] {
        ready_pod_elsewhere(client, app, None, Duration::from_secs(120))
            .await?
            .with_context(|| format!("baseline {app} not Ready in 120 s"))?;
    }
    Ok(())
}

/// Seconds until a Ready pod of `app` runs on a node other than `not_on` with its volume
/// attached there, within `bound`. The simulated nodes have no kubelet that would wait for
/// the attachment, so the attachment is checked here.
async fn ready_pod_elsewhere(
    client: &Client,
    app: &str,
    not_on: Option<&str>,
    bound: Duration,
) -> Result<Option<f64>> {
    let volume = if app == "sts" {
        "baseline-sts"
    } else {
        "baseline-deploy"
    };
    let started = Instant::now();
    let (pod_store, pod_writer) = kube::runtime::reflector::store::<Pod>();
    let (va_store, va_writer) = kube::runtime::reflector::store::<VolumeAttachment>();
    let pods = watcher(
        Api::<Pod>::namespaced(client.clone(), "baseline"),
        watcher::Config::default().labels(&format!("app={app}")),
    )
    .default_backoff()
    .reflect(pod_writer)
    .map(|_| ());
    let vas = watcher(
        Api::<VolumeAttachment>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(va_writer)
    .map(|_| ());
    let mut events = futures::stream::select(pods, vas).boxed();
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let running = pod_store.state().iter().any(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let attached = va_store.state().iter().any(|v| {
                v.spec.source.persistent_volume_name.as_deref() == Some(volume)
                    && Some(&v.spec.node_name) == node.as_ref()
                    && v.status.as_ref().is_some_and(|s| s.attached)
            });
            ready
                && attached
                && node.as_deref() != not_on
                && p.metadata.deletion_timestamp.is_none()
        });
        if running {
            return Ok(Some(started.elapsed().as_secs_f64()));
        }
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(())) => {}
            Ok(None) => bail!("watch ended"),
            Err(_) => return Ok(None),
        }
    }
}

pub async fn run(args: BenchArgs) -> Result<ScenarioResult> {
    let bin = controller_bin(args.controller_bin.as_deref())?;
    ensure_tools()?;
    let setup = Instant::now();
    let (lease, stale) = lease_settings(args.nodes, args.instances, args.node_lease_seconds);
    eprintln!(
        "[bench] {}: starting the control plane",
        scenario_name(&args)
    );
    let cp = ControlPlane::start(ControlPlaneConfig {
        node_lease_duration_seconds: lease,
        node_monitor_grace_period: Duration::from_secs(u64::from(lease) * 2),
        scheduler: args.baseline,
        ..Default::default()
    })
    .await?;
    let client = cp.client()?;
    cp.install_crd_objects(
        &client,
        kube_failover_core::crd::all()
            .into_iter()
            .map(|(_, c)| c)
            .collect(),
    )
    .await?;
    let nodes = cp
        .nodes
        .create(
            "bench",
            args.nodes,
            &BTreeMap::from([(MEMBER_LABEL.to_string(), "true".to_string())]),
        )
        .await?;
    cp.create_namespace(&client, NS).await?;
    let cluster: FailoverCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverCluster",
        "metadata": {"name": "bench"},
        "spec": {"nodeSelector": {MEMBER_LABEL: "true"}, "allowedNamespaces": {"names": [NS]},
                 "heartbeat": {"leaseStaleSeconds": stale, "notReadySeconds": stale}}
    }))?;
    Api::<FailoverCluster>::all(client.clone())
        .create(&PostParams::default(), &cluster)
        .await?;
    let drivers: Api<k8s_openapi::api::storage::v1::CSIDriver> = Api::all(client.clone());
    drivers
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": SIM_CSI_DRIVER}, "spec": {"attachRequired": true}
            }))?,
        )
        .await?;
    let attacher = tokio::spawn(play_csi_attacher(cp.client()?, SIM_CSI_DRIVER.into()));

    eprintln!("[bench] starting the controller process");
    let (ctrl, synced) = spawn_controller(&cp, &bin).await?;
    eprintln!(
        "[bench] caches synced in {synced:.2} s; creating {} instances with one CSI volume each",
        args.instances
    );
    let m = args.instances;
    create_all(&Api::<PersistentVolume>::all(client.clone()), m, |i| {
        pv(&format!("bench-{i}"), NS, &format!("d{i}"))
    })
    .await?;
    create_all(
        &Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS),
        m,
        |i| pvc(&format!("d{i}"), &format!("bench-{i}")),
    )
    .await?;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), NS);
    let n = nodes.len();
    create_all(&fcis, m, |i| {
        let preferred: Vec<String> = (0..3.min(n)).map(|k| nodes[(i + k) % n].clone()).collect();
        let mut f = crate::demo::instance(
            &format!("i{i}"),
            "bench",
            &preferred,
            Some(&format!("d{i}")),
        )?;
        f.spec.network_name.name = format!("i{i}");
        Ok(f)
    })
    .await?;
    let all = watch_instances(
        &client,
        Duration::from_secs(1800),
        "all instances Online",
        |all| all.len() == m && all.iter().all(online),
    )
    .await?;
    eprintln!(
        "[bench] {m} instances Online after {:.1} s of set-up",
        setup.elapsed().as_secs_f64()
    );

    // The victims: the node hosting the most instances, or a third of the nodes.
    let mut hosted: BTreeMap<String, usize> = BTreeMap::new();
    for i in &all {
        if let Some(o) = i.status.as_ref().and_then(|s| s.owner_node.clone()) {
            *hosted.entry(o).or_default() += 1;
        }
    }
    let mut by_load: Vec<(String, usize)> = hosted.into_iter().collect();
    by_load.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let kill_count = if args.storm { (n / 3).max(1) } else { 1 };
    let victims: BTreeSet<String> = by_load
        .iter()
        .take(kill_count)
        .map(|(n, _)| n.clone())
        .collect();
    let affected: BTreeSet<String> = all
        .iter()
        .filter(|i| {
            i.status
                .as_ref()
                .and_then(|s| s.owner_node.as_ref())
                .is_some_and(|o| victims.contains(o))
        })
        .map(|i| i.name_any())
        .collect();
    // The baselines run on a node outside the failover cluster, killed at the same moment:
    // the controller must not fence it, or Kubernetes' non-graceful shutdown would rescue
    // them and the baseline would measure kube-failover instead of Kubernetes' defaults.
    let baseline_node = if args.baseline {
        let node = cp.nodes.create("baseline", 2, &BTreeMap::new()).await?;
        eprintln!(
            "[bench] baselines: StatefulSet and Deployment with an RWO claim on {}",
            node[0]
        );
        start_baselines(&client, &node[0]).await?;
        Some(node[0].clone())
    } else {
        None
    };

    let (_, metrics_before) = http_get(ctrl.addr, "/metrics").await?;
    let (_, cpu_before) = proc_stat(ctrl.child.id())?;
    eprintln!(
        "[bench] killing {} node(s) hosting {} instances",
        victims.len(),
        affected.len()
    );
    let killed_at = jiff::Timestamp::now();
    let kill_instant = Instant::now();
    for v in victims.iter().chain(baseline_node.iter()) {
        cp.nodes.kill(v).await?;
    }
    let baseline_tasks: Vec<_> = if let Some(node) = baseline_node.clone() {
        ["sts", "deploy"]
            .into_iter()
            .map(|app| {
                let client = client.clone();
                let node = node.clone();
                let bound = Duration::from_secs(args.baseline_bound_seconds);
                tokio::spawn(async move {
                    (
                        app,
                        ready_pod_elsewhere(&client, app, Some(&node), bound).await,
                    )
                })
            })
            .collect()
    } else {
        Vec::new()
    };

    let victims_for_watch = victims.clone();
    let affected_for_watch = affected.clone();
    let after = watch_instances(
        &client,
        Duration::from_secs(1800),
        "all affected instances failed over",
        move |all| {
            all.iter()
                .filter(|i| affected_for_watch.contains(&i.name_any()))
                .all(|i| {
                    online(i)
                        && i.status.as_ref().is_some_and(|s| {
                            s.history.iter().any(|m| {
                                m.from
                                    .as_ref()
                                    .is_some_and(|f| victims_for_watch.contains(f))
                            })
                        })
                })
        },
    )
    .await?;
    let done_wall = kill_instant.elapsed().as_secs_f64();
    let (_, metrics_after) = http_get(ctrl.addr, "/metrics").await?;
    let (rss, cpu_after) = proc_stat(ctrl.child.id())?;

    let (mut detection, mut reaction, mut total) = (Vec::new(), Vec::new(), Vec::new());
    let (mut first_start, mut last_online) = (f64::MAX, 0.0f64);
    for i in after.iter().filter(|i| affected.contains(&i.name_any())) {
        let Some(m) = i.status.as_ref().and_then(|s| {
            s.history
                .iter()
                .rev()
                .find(|m| m.from.as_ref().is_some_and(|f| victims.contains(f)))
                .cloned()
        }) else {
            continue;
        };
        let secs = |t: &jiff::Timestamp| t.duration_since(killed_at).as_secs_f64();
        let started = secs(&m.started.0);
        let created = m
            .pod_created
            .as_ref()
            .map(|t| secs(&t.0))
            .unwrap_or(f64::NAN);
        let online_at = m.online.as_ref().map(|t| secs(&t.0)).unwrap_or(f64::NAN);
        detection.push(started);
        reaction.push(created - started);
        total.push(online_at);
        first_start = first_start.min(started);
        last_online = last_online.max(online_at);
    }
    let before = requests_by_verb(&metrics_before);
    let per_failover = requests_by_verb(&metrics_after)
        .into_iter()
        .map(|(verb, v)| {
            let delta = v - before.get(&verb).copied().unwrap_or(0.0);
            (verb, delta / affected.len().max(1) as f64)
        })
        .filter(|(_, v)| *v > 0.0)
        .collect();

    eprintln!(
        "[bench] failovers done in {done_wall:.1} s; measuring the floor for {} instances",
        affected.len()
    );
    let live = nodes
        .iter()
        .find(|n| !victims.contains(*n))
        .cloned()
        .unwrap_or_default();
    let dead = victims.iter().next().cloned().unwrap_or_default();
    let floor_wall = floor(&client, affected.len(), &live, &dead).await?;

    let mut baselines = Vec::new();
    for task in baseline_tasks {
        let (app, result) = task.await?;
        let recovered = result?;
        baselines.push(Baseline {
            workload: match app {
                "sts" => "StatefulSet, 1 replica, RWO claim".into(),
                _ => "Deployment, 1 replica, RWO claim".into(),
            },
            recovered_after: recovered,
            bound_seconds: args.baseline_bound_seconds,
            note: match (app, recovered) {
                (_, Some(_)) => "replacement Ready on another node".into(),
                ("sts", None) => {
                    "pod stays Terminating on the dead node: never replaced without a person".into()
                }
                _ => "waits for the 300 s not-ready toleration, then the 6 min force-detach".into(),
            },
        });
    }
    attacher.abort();
    drop(ctrl);
    let result = ScenarioResult {
        name: scenario_name(&args),
        nodes: n,
        instances: m,
        killed_nodes: victims.len(),
        affected: affected.len(),
        node_lease_seconds: lease,
        lease_stale_seconds: stale,
        detection: Stats::of(detection),
        reaction: Stats::of(reaction),
        total: Stats::of(total.clone()),
        controller_wall: last_online - first_start,
        floor_wall,
        api_requests_per_failover: per_failover,
        controller_peak_rss_mib: rss,
        controller_cpu_seconds: cpu_after - cpu_before,
        caches_synced_seconds: synced,
        setup_seconds: setup.elapsed().as_secs_f64(),
        raw_totals: total,
        baselines,
    };
    if let Some(path) = &args.json {
        let mut all: Vec<ScenarioResult> = std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        all.retain(|r| r.name != result.name);
        all.push(result.clone());
        std::fs::write(path, serde_json::to_string_pretty(&all)?)?;
    }
    print_result(&result);
    Ok(result)
}

pub fn print_result(r: &ScenarioResult) {
    println!("\n## {}", r.name);
    println!(
        "killed {} node(s) hosting {} instances; node Lease {} s, declared down after {} s without renewal",
        r.killed_nodes, r.affected, r.node_lease_seconds, r.lease_stale_seconds
    );
    println!("| seconds | p50 | p95 | p99 | max |\n|---|---|---|---|---|");
    for (name, s) in [
        ("detection (heartbeat stop → move started)", &r.detection),
        ("reaction (move started → new pod created)", &r.reaction),
        (
            "total (heartbeat stop → online, endpoint published)",
            &r.total,
        ),
    ] {
        println!(
            "| {name} | {:.3} | {:.3} | {:.3} | {:.3} |",
            s.p50, s.p95, s.p99, s.max
        );
    }
    println!(
        "controller: all {} moves done {:.3} s after the first started; floor (same writes, plain client): {:.3} s; ratio {:.2}",
        r.affected,
        r.controller_wall,
        r.floor_wall,
        r.controller_wall / r.floor_wall
    );
    println!(
        "API requests per failover: {:?}",
        r.api_requests_per_failover
    );
    println!(
        "controller peak RSS {:.1} MiB, CPU {:.2} s during the failover, caches synced {:.2} s after start",
        r.controller_peak_rss_mib, r.controller_cpu_seconds, r.caches_synced_seconds
    );
    for b in &r.baselines {
        match b.recovered_after {
            Some(s) => println!("baseline {}: Ready elsewhere after {s:.1} s", b.workload),
            None => println!(
                "baseline {}: not Ready elsewhere within {} s ({})",
                b.workload, b.bound_seconds, b.note
            ),
        }
    }
}
