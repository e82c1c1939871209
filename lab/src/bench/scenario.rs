//! One bench scenario, phase by phase: set-up, the kill, the failovers, the measurements.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::Result;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use tokio::task::JoinHandle;

use super::{
    AtRest, Baseline, BenchArgs, MEMBER_LABEL, NS, ScenarioResult, Stats, create_all, floor,
    lease_settings, online, print_result, proc_stat, pv, pvc, ready_pod_elsewhere, reconciles,
    requests_by_resource, requests_by_verb, rss_now, scenario_name, spawn_controller,
    start_baselines, watch_changes, watch_instances, watch_until,
};
use crate::controlplane::{ControlPlane, ControlPlaneConfig, http_get, play_csi_attacher};
use crate::demo::{SIM_CSI_DRIVER, ensure_tools};
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance};

/// A baseline workload being watched for its recovery.
type BaselineTask = JoinHandle<(&'static str, Result<Option<f64>>)>;

/// Per-instance times of the failovers, from the kill.
#[derive(Default)]
struct Timings {
    detection: Vec<f64>,
    reaction: Vec<f64>,
    total: Vec<f64>,
    first_start: f64,
    last_online: f64,
}

pub async fn run(args: BenchArgs) -> Result<ScenarioResult> {
    let bin = super::controller_bin(args.controller_bin.as_deref())?;
    ensure_tools()?;
    let setup = Instant::now();
    let (lease, stale) = lease_settings(args.nodes, args.instances, args.node_lease_seconds);
    eprintln!(
        "[bench] {}: starting the control plane",
        scenario_name(&args)
    );
    let (cp, client, nodes) = start_cluster(&args, lease, stale).await?;
    let attacher = tokio::spawn(play_csi_attacher(cp.client()?, SIM_CSI_DRIVER.into()));

    eprintln!("[bench] starting the controller process");
    let (ctrl, synced) = spawn_controller(&cp, &bin).await?;
    eprintln!(
        "[bench] caches synced in {synced:.2} s; creating {} instances with one CSI volume each",
        args.instances
    );
    let m = args.instances;
    let all = create_instances(&client, &nodes, m).await?;
    eprintln!(
        "[bench] {m} instances Online after {:.1} s of set-up",
        setup.elapsed().as_secs_f64()
    );
    // Kubernetes' own controllers lag behind a set-up of thousands (the claims bound and the
    // volumes attached minutes after the instances are Online, none of which waits for
    // them): the cluster is at rest only once they have caught up, every claim Bound and
    // every volume attached.
    every_claim_bound_and_attached(&client, m).await?;
    eprintln!(
        "[bench] every claim bound and volume attached after {:.1} s of set-up",
        setup.elapsed().as_secs_f64()
    );
    // A quiet period: every node renews once more after the set-up's load, so that a node
    // whose renewals the set-up delayed is not killed half-stale.
    every_lease_renewed_since(&client, &nodes, jiff::Timestamp::now()).await?;
    // At rest: what the controller sends while nothing changes but the nodes' renewals and
    // one status report of each node (kubelets report every few minutes, KWOK every ten: a
    // window of 20 s would see one by chance, or none).
    let (_, idle_before) = http_get(ctrl.addr, "/metrics").await?;
    let (_, idle_cpu_before) = proc_stat(ctrl.child.id())?;
    cp.nodes.report_status(&nodes).await?;
    tokio::time::sleep(IDLE_WINDOW).await;
    let (_, idle_after) = http_get(ctrl.addr, "/metrics").await?;
    let (_, idle_cpu_after) = proc_stat(ctrl.child.id())?;
    let rest = AtRest {
        reconciles: reconciles(&idle_after) - reconciles(&idle_before),
        cpu_seconds: idle_cpu_after - idle_cpu_before,
        rss_mib: rss_now(ctrl.child.id())?,
    };
    let (idle, idle_reads): (BTreeMap<String, f64>, BTreeMap<String, f64>) =
        requests_per_failover(requests_by_resource, &idle_before, &idle_after, 1)
            .into_iter()
            .partition(|(k, _)| {
                !k.starts_with("watch ") && !k.starts_with("get ") && !k.starts_with("list ")
            });
    // Reads at rest too: a watch started again, or a relist, wakes the instances it
    // concerns, and tells reconciles at rest from a timer's.
    // And what its watches saw change meanwhile: what may have woken those reconciles.
    let changed = requests_per_failover(watch_changes, &idle_before, &idle_after, 1);
    eprintln!(
        "[bench] at rest for {} s, the controller wrote: {idle:?}; read: {idle_reads:?}; its watches saw changed: {changed:?}; {rest:?}",
        IDLE_WINDOW.as_secs()
    );

    let n = nodes.len();
    let (victims, affected) = pick_victims(&all, n, args.kill, args.storm);
    let baseline_node = start_baseline_node(&cp, &client, args.baseline).await?;

    let (_, metrics_before) = http_get(ctrl.addr, "/metrics").await?;
    let (_, cpu_before) = proc_stat(ctrl.child.id())?;
    eprintln!(
        "[bench] killing {} node(s) hosting {} instances",
        victims.len(),
        affected.len()
    );
    let kill_instant = Instant::now();
    if let Some(b) = &baseline_node {
        cp.nodes.kill(b).await?;
    }
    // All victims fall silent in one instant: their moves are due together, the heaviest
    // storm for the controller, and the span from the first move to the last is its work.
    let victim_names: Vec<String> = victims.iter().cloned().collect();
    let killed_at = cp.nodes.kill_together(&victim_names).await?;
    let baseline_tasks = watch_baselines(
        &client,
        baseline_node.as_deref(),
        args.baseline_bound_seconds,
    );

    let after = wait_failed_over(&client, &victims, &affected).await?;
    let done_wall = kill_instant.elapsed().as_secs_f64();
    let (_, metrics_after) = http_get(ctrl.addr, "/metrics").await?;
    let (rss, cpu_after) = proc_stat(ctrl.child.id())?;

    let times = failover_timings(&after, &victims, &affected, killed_at);
    let trace = super::trace::traces(&after, &victims, &affected, killed_at);
    let per_failover = requests_per_failover(
        requests_by_verb,
        &metrics_before,
        &metrics_after,
        affected.len(),
    );
    let per_resource = requests_per_failover(
        requests_by_resource,
        &metrics_before,
        &metrics_after,
        affected.len(),
    );

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

    let baselines = collect_baselines(baseline_tasks, args.baseline_bound_seconds).await?;
    let lone = if args.lone_failovers > 0 {
        // The scenario's victims come back (their taint lifted after the cluster's
        // unfenceAfterSeconds) and may be picked again.
        for v in &victims {
            cp.nodes.revive(v).await?;
        }
        eprintln!(
            "[bench] {} lone failovers, one after the other",
            args.lone_failovers
        );
        Some(super::lone::run(&cp, &client, &nodes, args.lone_failovers).await?)
    } else {
        None
    };
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
        detection: Stats::of(times.detection),
        reaction: Stats::of(times.reaction),
        total: Stats::of(times.total.clone()),
        controller_wall: times.last_online - times.first_start,
        floor_wall,
        api_requests_per_failover: per_failover,
        api_requests_by_resource: per_resource,
        idle_writes: idle,
        at_rest: rest,
        controller_peak_rss_mib: rss,
        controller_cpu_seconds: cpu_after - cpu_before,
        caches_synced_seconds: synced,
        setup_seconds: setup.elapsed().as_secs_f64(),
        raw_totals: times.total,
        baselines,
        trace,
        lone,
    };
    if let Some(path) = &args.json {
        save_json(path, &result)?;
    }
    if let Some(path) = &args.trace {
        let svg = super::trace::gantt_svg(
            &format!("{}: each move, step by step", result.name),
            f64::from(stale),
            &result.trace,
        );
        std::fs::write(path, svg)?;
        eprintln!("[bench] the moves' timeline: {}", path.display());
    }
    print_result(&result);
    Ok(result)
}

/// The control plane with the CRDs, the member nodes, the namespace, the FailoverCluster and
/// the simulated CSI driver.
async fn start_cluster(
    args: &BenchArgs,
    lease: u32,
    stale: u32,
) -> Result<(ControlPlane, Client, Vec<String>)> {
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
                 "heartbeat": {"leaseStaleSeconds": stale, "notReadySeconds": stale},
                 // Lone failovers (`--lone-failovers`) kill each node again and again: a
                 // revived node is usable again 5 s after it is back, and never quarantined.
                 "fencing": {"unfenceAfterSeconds": 5},
                 "quarantine": {"threshold": 0},
                 // Where the instances' virtual IPs come from (`demo::nth_vip`).
                 "addressPools": [{"name": "lab", "cidrs": ["192.0.2.0/24", "2001:db8::/64"]}]}
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
    Ok((cp, client, nodes))
}

/// How long the controller is watched at rest, every instance Online, before the kill.
const IDLE_WINDOW: Duration = Duration::from_secs(20);

/// Instances created at once, then waited for Online before the next batch: a 2-core API
/// server given 1,000 at once stays at 100% CPU long enough for the simulated nodes'
/// renewals to arrive late, and live nodes to look dead.
const CREATE_BATCH: usize = 100;

/// `m` instances with one CSI volume each, spread over `nodes`; returns them once all are
/// Online.
async fn create_instances(
    client: &Client,
    nodes: &[String],
    m: usize,
) -> Result<Vec<FailoverClusterInstance>> {
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), NS);
    let n = nodes.len();
    let batch = if m > 3 * CREATE_BATCH {
        CREATE_BATCH
    } else {
        m
    };
    let mut created = 0;
    let mut all = Vec::new();
    while created < m {
        let upto = (created + batch).min(m);
        let range = created..upto;
        create_all(
            &Api::<PersistentVolume>::all(client.clone()),
            range.len(),
            |k| {
                let i = created + k;
                pv(&format!("bench-{i}"), NS, &format!("d{i}"))
            },
        )
        .await?;
        create_all(
            &Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS),
            range.len(),
            |k| {
                let i = created + k;
                pvc(&format!("d{i}"), &format!("bench-{i}"))
            },
        )
        .await?;
        create_all(&fcis, range.len(), |k| {
            let i = created + k;
            let preferred: Vec<String> =
                (0..3.min(n)).map(|k| nodes[(i + k) % n].clone()).collect();
            let mut f = crate::demo::instance(
                &format!("i{i}"),
                "bench",
                &preferred,
                Some(&format!("d{i}")),
            )?;
            f.spec.network_name.name = format!("i{i}");
            f.spec.virtual_ips = vec![crate::demo::nth_vip(i)];
            Ok(f)
        })
        .await?;
        all = watch_instances(
            client,
            Duration::from_secs(1800),
            "all instances Online",
            |all| all.len() == upto && all.iter().all(|i| online(i)),
        )
        .await?;
        created = upto;
        if m > batch {
            eprintln!("[bench] {upto} of {m} instances Online");
        }
    }
    Ok(all)
}

/// Waits until the `m` claims of the bench's instances are Bound and `m` VolumeAttachments
/// attached.
async fn every_claim_bound_and_attached(client: &Client, m: usize) -> Result<()> {
    use k8s_openapi::api::storage::v1::VolumeAttachment;
    let timeout = Duration::from_secs(1800);
    watch_until(
        Api::<PersistentVolumeClaim>::namespaced(client.clone(), NS),
        timeout,
        "every claim Bound",
        |claims| {
            claims
                .state()
                .iter()
                .filter(|c| c.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound"))
                .count()
                >= m
        },
    )
    .await?;
    watch_until(
        Api::<VolumeAttachment>::all(client.clone()),
        timeout,
        "every volume attached",
        |attachments| {
            attachments
                .state()
                .iter()
                .filter(|a| a.status.as_ref().is_some_and(|s| s.attached))
                .count()
                >= m
        },
    )
    .await?;
    Ok(())
}

/// Waits until the Lease of every node in `nodes` was renewed after `since`.
async fn every_lease_renewed_since(
    client: &Client,
    nodes: &[String],
    since: jiff::Timestamp,
) -> Result<()> {
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::runtime::reflector::ObjectRef;
    use kube_failover_core::api::NODE_LEASE_NAMESPACE;
    let api: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let what = "every node's Lease renewed once more";
    watch_until(api, Duration::from_secs(300), what, |leases| {
        nodes.iter().all(|node| {
            leases
                .get(&ObjectRef::new(node).within(NODE_LEASE_NAMESPACE))
                .and_then(|l| l.spec.as_ref()?.renew_time.clone())
                .is_some_and(|t| t.0 > since)
        })
    })
    .await?;
    Ok(())
}

/// The victims: the node hosting the most instances, or a third of the nodes; and the
/// instances they host.
fn pick_victims(
    all: &[FailoverClusterInstance],
    n: usize,
    kill: Option<usize>,
    storm: bool,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut hosted: BTreeMap<String, usize> = BTreeMap::new();
    for i in all {
        if let Some(o) = i.status.as_ref().and_then(|s| s.owner_node.clone()) {
            *hosted.entry(o).or_default() += 1;
        }
    }
    let mut by_load: Vec<(String, usize)> = hosted.into_iter().collect();
    by_load.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let kill_count = kill.unwrap_or(if storm { (n / 3).max(1) } else { 1 });
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
    (victims, affected)
}

/// The baselines run on a node outside the failover cluster, killed at the same moment:
/// the controller must not fence it, or Kubernetes' non-graceful shutdown would rescue
/// them and the baseline would measure kube-failover instead of Kubernetes' defaults.
async fn start_baseline_node(
    cp: &ControlPlane,
    client: &Client,
    baseline: bool,
) -> Result<Option<String>> {
    if !baseline {
        return Ok(None);
    }
    // Two nodes outside the cluster: the baselines start on the first (killed with the
    // victims), the second is where they may be replaced. The second is cordoned until
    // they run on the first: a preference alone has been seen to lose to the scheduler's
    // other scores, and a baseline that never ran on the killed node measures nothing.
    let node = cp.nodes.create("baseline", 2, &BTreeMap::new()).await?;
    eprintln!(
        "[bench] baselines: StatefulSet and Deployment with an RWO claim on {}",
        node[0]
    );
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let cordon =
        |on: bool| kube::api::Patch::Merge(serde_json::json!({"spec": {"unschedulable": on}}));
    nodes
        .patch(&node[1], &kube::api::PatchParams::default(), &cordon(true))
        .await?;
    start_baselines(client, &node).await?;
    nodes
        .patch(&node[1], &kube::api::PatchParams::default(), &cordon(false))
        .await?;
    Ok(Some(node[0].clone()))
}

/// Watches, in the background, for each baseline to be Ready away from the killed `node`.
fn watch_baselines(client: &Client, node: Option<&str>, bound_seconds: u64) -> Vec<BaselineTask> {
    let Some(node) = node else {
        return Vec::new();
    };
    ["sts", "deploy"]
        .into_iter()
        .map(|app| {
            let client = client.clone();
            let node = node.to_string();
            let bound = Duration::from_secs(bound_seconds);
            tokio::spawn(async move {
                (
                    app,
                    ready_pod_elsewhere(&client, app, Some(&node), bound).await,
                )
            })
        })
        .collect()
}

/// Waits until every affected instance is Online again after a move from a victim.
async fn wait_failed_over(
    client: &Client,
    victims: &BTreeSet<String>,
    affected: &BTreeSet<String>,
) -> Result<Vec<FailoverClusterInstance>> {
    let victims_for_watch = victims.clone();
    let affected_for_watch = affected.clone();
    watch_instances(
        client,
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
    .await
}

/// Detection, reaction and total time of each affected instance's move, from the kill.
fn failover_timings(
    after: &[FailoverClusterInstance],
    victims: &BTreeSet<String>,
    affected: &BTreeSet<String>,
    killed_at: jiff::Timestamp,
) -> Timings {
    let mut t = Timings {
        first_start: f64::MAX,
        last_online: 0.0f64,
        ..Timings::default()
    };
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
        t.detection.push(started);
        t.reaction.push(created - started);
        t.total.push(online_at);
        t.first_start = t.first_start.min(started);
        t.last_online = t.last_online.max(online_at);
    }
    t
}

/// API requests (counted by `count`) between the two scrapes, per affected instance.
fn requests_per_failover(
    count: fn(&str) -> BTreeMap<String, f64>,
    before: &str,
    after: &str,
    affected: usize,
) -> BTreeMap<String, f64> {
    let before = count(before);
    count(after)
        .into_iter()
        .map(|(verb, v)| {
            let delta = v - before.get(&verb).copied().unwrap_or(0.0);
            (verb, delta / affected.max(1) as f64)
        })
        .filter(|(_, v)| *v > 0.0)
        .collect()
}

/// The outcome of each baseline.
async fn collect_baselines(tasks: Vec<BaselineTask>, bound_seconds: u64) -> Result<Vec<Baseline>> {
    let mut baselines = Vec::new();
    for task in tasks {
        let (app, result) = task.await?;
        let recovered = result?;
        baselines.push(Baseline {
            workload: match app {
                "sts" => "StatefulSet, 1 replica, RWO claim".into(),
                _ => "Deployment, 1 replica, RWO claim".into(),
            },
            recovered_after: recovered,
            bound_seconds,
            note: match (app, recovered) {
                (_, Some(_)) => "replacement Ready on another node".into(),
                ("sts", None) => {
                    "pod stays Terminating on the dead node: never replaced without a person".into()
                }
                _ => "waits for the 300 s not-ready toleration, then the 6 min force-detach".into(),
            },
        });
    }
    Ok(baselines)
}

/// Adds (or replaces) the scenario in the JSON file of results.
fn save_json(path: &std::path::Path, result: &ScenarioResult) -> Result<()> {
    let mut all: Vec<ScenarioResult> = std::fs::read_to_string(path)
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default();
    all.retain(|r| r.name != result.name);
    all.push(result.clone());
    std::fs::write(path, serde_json::to_string_pretty(&all)?)?;
    Ok(())
}
