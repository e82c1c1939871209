//! `kube-failover-lab bench`: failover latency, scale and cost on a local control plane,
//! beside the floor (the same minimum writes from a plain client) and the baselines (a
//! StatefulSet and a Deployment with an RWO claim, on Kubernetes' defaults).
//!
//! The controller runs as a separate process, the very binary that ships (`kube-failover
//! run`), so that its memory and CPU time are its own; figures are read from /proc and from
//! its /metrics.

mod baseline;
mod floor;
mod lone;
mod process;
mod report;
mod scenario;
mod trace;

use baseline::{ready_pod_elsewhere, start_baselines};
use floor::floor;
pub use process::controller_bin;
use process::{
    proc_stat, reconciles, requests_by_resource, requests_by_verb, rss_now, spawn_controller,
    watch_changes,
};
pub use report::print_result;
pub use scenario::run;

use crate::demo::SIM_CSI_DRIVER;
use anyhow::{Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::Store;
use kube::runtime::{WatchStreamExt, watcher};
use kube_failover_core::api::{FailoverClusterInstance, Phase};
use serde::Serialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

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
    /// Kill this many nodes at once, those hosting the most instances first (instead of one,
    /// or a third with `--storm`).
    #[arg(long, conflicts_with = "storm")]
    pub kill: Option<usize>,
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
    /// Write the moves' timeline, one row per move and a bar per step, as an SVG Gantt
    /// chart to this file.
    #[arg(long)]
    pub trace: Option<PathBuf>,
    /// After the scenario, this many lone failovers one after the other (a node hosting one
    /// instance killed, then revived): one instance's reaction, often enough for a p99.
    #[arg(long, default_value_t = 0)]
    pub lone_failovers: usize,
    /// The controller binary to measure; by default `kube-failover` beside this binary
    /// (`cargo build --release --workspace` builds both).
    #[arg(long)]
    pub controller_bin: Option<PathBuf>,
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
    /// The same, by `verb resource` (`get pods`).
    #[serde(default)]
    pub api_requests_by_resource: BTreeMap<String, f64>,
    /// Writes the controller sent in 20 s at rest (all Online, before the kill), by
    /// `verb resource`.
    #[serde(default)]
    pub idle_writes: BTreeMap<String, f64>,
    /// The controller over the same 20 s at rest.
    #[serde(default)]
    pub at_rest: AtRest,
    pub controller_peak_rss_mib: f64,
    pub controller_cpu_seconds: f64,
    pub caches_synced_seconds: f64,
    pub setup_seconds: f64,
    pub raw_totals: Vec<f64>,
    pub baselines: Vec<Baseline>,
    /// Each move's steps, in seconds from the kill.
    #[serde(default)]
    pub trace: Vec<trace::MoveTrace>,
    /// One instance's reaction over lone failovers (`--lone-failovers`).
    #[serde(default)]
    pub lone: Option<lone::LoneFailovers>,
}

/// The controller at rest: every instance Online, nothing changing but the nodes' renewals.
#[derive(Clone, Debug, Default, Serialize, serde::Deserialize)]
pub struct AtRest {
    /// Reconciles finished in the window.
    pub reconciles: f64,
    pub cpu_seconds: f64,
    /// Resident memory at the end of the window.
    pub rss_mib: f64,
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
        match (a.kill, a.storm) {
            (Some(k), _) => format!(" storm ({k} nodes)"),
            (None, true) => " storm (⅓ of nodes)".to_string(),
            (None, false) => String::new(),
        }
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
    F: FnMut(&[std::sync::Arc<FailoverClusterInstance>]) -> bool,
{
    let api: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), NS);
    // Judged on the store's own copies at each event; copied out once, at the end (a copy
    // of every instance at each event made the bench, not the controller, the bottleneck
    // of a set-up of thousands).
    let store = watch_until(api, timeout, what, |store| {
        let all = store.state();
        !all.is_empty() && done(&all)
    })
    .await?;
    Ok(store.state().iter().map(|i| (**i).clone()).collect())
}

/// Waits until `done` holds for the objects of `api` seen by a watch, or the timeout; returns
/// the watch's store as it was then.
async fn watch_until<K, F>(
    api: Api<K>,
    timeout: Duration,
    what: &str,
    mut done: F,
) -> Result<Store<K>>
where
    K: kube::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
    F: FnMut(&Store<K>) -> bool,
{
    let (reader, writer) = kube::runtime::reflector::store();
    // Judged at every event, the end of the initial list included: a store filled by the
    // list of a world already at rest gets no event after it.
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer)
        .boxed();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if done(&reader) {
            return Ok(reader);
        }
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(e))) => tracing::debug!(error = %e, "bench watch error; it retries"),
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
