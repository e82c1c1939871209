//! `kube-failover-lab chaos`: faults at random on a real control plane, judged by an
//! independent watcher of the invariants of `docs/safety.md`.
//!
//! A control plane with an audit log, simulated nodes that are members of one
//! FailoverCluster, instances with a ReadWriteOnce CSI volume each, and two replicas of the
//! controller binary that ships (processes, leader election on a 2 s Lease, authenticated
//! as the ServiceAccount and RBAC of `deploy/kube-failover.yaml`). Once every instance is
//! online, faults are injected from a seeded generator for the given minutes: node kill
//! and revive, a NotReady kubelet with a fresh Lease, a kubelet with a clock minutes
//! behind, a node relabelled out of the cluster, a cordon, SIGKILL and SIGSTOP of the
//! leader, a restart of kube-apiserver. At most as many nodes are faulty at once as leave
//! quorum, and now and then one more (the controller must then wait). Then every fault is
//! healed and every instance must be online again within a bound.
//!
//! The watcher ([`checker`]) has its own client and watches, and reads the audit log; it
//! never looks into the controller. What it checks is listed on [`checker::Checker`].

mod audit;
pub mod checker;
mod faults;
mod kubelet;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::{CSIDriver, VolumeAttachment};
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender, unbounded_channel};
use tokio::sync::{oneshot, watch};

use crate::bench::controller_bin;
use crate::controlplane::{AbortOnDrop, resync_pod_readiness};
use crate::controlplane::{
    CONTROLLER_NS, CONTROLLER_USER, ControlPlane, ControlPlaneConfig, controller_token,
    create_if_absent, install_controller_identity, play_csi_attacher,
};
use crate::demo::{SIM_CSI_DRIVER, ensure_tools};
use checker::{Change, Checker, CheckerConfig, Observation, Observed, Tally, Violation};
pub use checker::{FaultKind, instance_online};
use faults::{Controllers, Injector};
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance};

/// The namespace of the instances.
const NS: &str = "chaos";
/// The cluster and its member label.
const CLUSTER: &str = "chaos";
const MEMBER_LABEL: &str = "chaos.kube-failover.io/member";

#[derive(Clone, Debug, clap::Args)]
pub struct ChaosArgs {
    /// Seed of the fault schedule; a fresh one (printed) when not given.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Minutes of fault injection (after set-up, before the final healing).
    #[arg(long, default_value_t = 10.0)]
    pub minutes: f64,
    /// Failover cluster instances, each with one ReadWriteOnce CSI volume.
    #[arg(long, default_value_t = 24)]
    pub instances: usize,
    /// Simulated member nodes.
    #[arg(long, default_value_t = 6)]
    pub nodes: usize,
    /// The controller binary; by default `kube-failover` beside this binary
    /// (`cargo build --release --workspace` builds both).
    #[arg(long)]
    pub controller_bin: Option<PathBuf>,
    /// Seconds every instance has to be online again once every fault is healed.
    #[arg(long, default_value_t = 90)]
    pub liveness_seconds: u64,
    /// Keep injecting after a violation (by default the run stops at the first).
    #[arg(long)]
    pub keep_going: bool,
    /// Where the control plane keeps its logs (and the controller replicas theirs).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// Print every change the watcher sees, as it sees it (not only with a violation).
    #[arg(long)]
    pub verbose: bool,
    /// RUST_LOG of the controller replicas (their logs are in the logs directory).
    #[arg(long, default_value = "info,kube_client=warn,kube_runtime=warn")]
    pub controller_log: String,
}

impl Default for ChaosArgs {
    fn default() -> Self {
        Self {
            seed: None,
            minutes: 10.0,
            instances: 24,
            nodes: 6,
            controller_bin: None,
            liveness_seconds: 90,
            keep_going: false,
            work_dir: None,
            verbose: false,
            controller_log: "info,kube_client=warn,kube_runtime=warn".into(),
        }
    }
}

/// What a run did and found.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub seed: u64,
    pub minutes: f64,
    pub instances: usize,
    pub nodes: usize,
    pub faults: BTreeMap<FaultKind, usize>,
    /// Node faults at once that leave quorum; injections beyond it; the most at once.
    pub max_faulty_nodes: usize,
    pub beyond_bound: usize,
    pub most_faulty_at_once: usize,
    pub apiserver_restart_seconds: Vec<f64>,
    pub tally: Tally,
    pub violations: Vec<Violation>,
    /// Seconds from the last fault healed to every instance online.
    pub liveness_seconds: Option<f64>,
    pub setup_seconds: f64,
    pub duration_seconds: f64,
    pub logs: PathBuf,
}

/// A watch backoff that retries within a second: the watcher must see the API server
/// again soon after a restart.
struct QuickBackoff(Duration);

impl Iterator for QuickBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(1));
        Some(d)
    }
}

impl kube::runtime::utils::Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }
}

/// Forwards every event of a watch to the watcher, stamped when it arrived. An event is
/// fresh unless the watch failed or relisted in the last 2 s (then it may be old news).
fn forward<K>(
    api: Api<K>,
    tx: UnboundedSender<Observation>,
    wrap: fn(Change<K>) -> Observed,
) -> AbortOnDrop
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    AbortOnDrop(tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .backoff(QuickBackoff(Duration::from_millis(100)))
            .boxed();
        let mut disturbed: Option<Instant> = None;
        while let Some(event) = events.next().await {
            let at = Instant::now();
            let quiet = disturbed.is_none_or(|d| at.duration_since(d) > Duration::from_secs(2));
            let (change, fresh) = match event {
                Ok(watcher::Event::Apply(o)) => (Change::Applied(o), quiet),
                Ok(watcher::Event::Delete(o)) => (Change::Deleted(o), quiet),
                Ok(watcher::Event::Init) => {
                    disturbed = Some(at);
                    (Change::Relist, false)
                }
                Ok(watcher::Event::InitApply(o)) => (Change::Relisted(o), false),
                Ok(watcher::Event::InitDone) => {
                    disturbed = Some(at);
                    (Change::RelistDone, false)
                }
                Err(e) => {
                    disturbed = Some(at);
                    (Change::Error(e.to_string()), false)
                }
            };
            let obs = Observation {
                at,
                wall: jiff::Timestamp::now(),
                fresh,
                what: wrap(change),
            };
            if tx.send(obs).is_err() {
                return;
            }
        }
    }))
}

/// Runs the watcher's judgement until `done`; prints faults as they come and each
/// violation with the recent history. Asks the injector to stop at the first violation
/// unless `keep_going`.
async fn judge(
    mut checker: Checker,
    mut rx: UnboundedReceiver<Observation>,
    mut done: oneshot::Receiver<()>,
    stop: watch::Sender<bool>,
    keep_going: bool,
    start: Instant,
) -> Checker {
    let report = |c: &Checker, found: Vec<Violation>| {
        for v in found {
            let n = c.violations.len();
            println!(
                "\n!!! VIOLATION at {:+.3} s: {}: {}",
                v.at_seconds, v.invariant, v.message
            );
            if n <= 10 {
                println!(
                    "recent history (watcher's events and faults):\n{}",
                    c.history()
                );
            }
            if !keep_going {
                stop.send_replace(true);
            }
        }
    };
    let show = |o: &Observation| {
        let t = o.at.saturating_duration_since(start).as_secs_f64();
        match &o.what {
            Observed::FaultStarted(f) => println!("[{t:>7.1} s] fault {f}"),
            Observed::FaultEnded { id, detail } => {
                println!("[{t:>7.1} s] healed #{id} {detail}")
            }
            Observed::Note(n) => println!("[{t:>7.1} s] {n}"),
            _ => {}
        }
    };
    loop {
        tokio::select! {
            biased;
            obs = rx.recv() => match obs {
                Some(o) => {
                    show(&o);
                    let found = checker.observe(o);
                    report(&checker, found);
                }
                None => break,
            },
            _ = &mut done => {
                while let Ok(o) = rx.try_recv() {
                    show(&o);
                    let found = checker.observe(o);
                    report(&checker, found);
                }
                break;
            }
        }
    }
    let found = checker.finish();
    report(&checker, found);
    checker
}

/// Awaits every instance online; `Err` lists those that are not, at the timeout.
async fn await_all_online(
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
async fn controller_identity(cp: &ControlPlane, client: &Client, seconds: i64) -> Result<PathBuf> {
    install_controller_identity(client).await?;
    let token = controller_token(client, seconds).await?;
    cp.kubeconfig_with_token("kube-failover", &token)
}

fn instance(i: usize, nodes: &[String]) -> Result<FailoverClusterInstance> {
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
    Ok(f)
}

async fn create_volume(client: &Client, i: usize) -> Result<()> {
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

/// Runs the chaos: set-up, faults for `minutes`, healing, the liveness bound; prints the
/// faults as they are injected, every violation with the recent history, and a summary.
pub async fn run(args: ChaosArgs) -> Result<Summary> {
    let seed = args.seed.unwrap_or_else(faults::fresh_seed);
    println!(
        "[chaos] seed {seed}, {} min of faults, {} instances on {} nodes (reproduce: cargo lab chaos --seed {seed} --minutes {} --instances {} --nodes {})",
        args.minutes, args.instances, args.nodes, args.minutes, args.instances, args.nodes
    );
    if args.nodes < 3 || args.instances == 0 {
        bail!("a chaos run needs at least 3 nodes and 1 instance");
    }
    let bin = controller_bin(args.controller_bin.as_deref())?;
    ensure_tools()?;
    let start = Instant::now();
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
    let client = cp.client()?;
    cp.install_kube_failover_crds(&client).await?;
    cp.create_namespace(&client, NS).await?;
    let token_seconds = 3600 + (args.minutes * 60.0) as i64 + args.liveness_seconds as i64;
    let kubeconfig = controller_identity(&cp, &client, token_seconds).await?;
    let controller_user = CONTROLLER_USER.to_string();

    // The watcher starts before anything it judges exists.
    let (tx, rx) = unbounded_channel::<Observation>();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let (done_tx, done_rx) = oneshot::channel();
    let watcher_client = cp.client()?;
    let mut checker = Checker::new(CheckerConfig::new(&controller_user), start);
    checker.echo = args.verbose;
    let judge_task = tokio::spawn(judge(checker, rx, done_rx, stop_tx, args.keep_going, start));
    let c = &watcher_client;
    let _watches = [
        forward(
            Api::<Pod>::namespaced(c.clone(), NS),
            tx.clone(),
            Observed::Pod,
        ),
        forward(
            Api::<EndpointSlice>::namespaced(c.clone(), NS),
            tx.clone(),
            Observed::Slice,
        ),
        forward(
            Api::<VolumeAttachment>::all(c.clone()),
            tx.clone(),
            Observed::Attachment,
        ),
        forward(Api::<Node>::all(c.clone()), tx.clone(), Observed::Node),
        forward(
            Api::<Lease>::namespaced(c.clone(), "kube-node-lease"),
            tx.clone(),
            Observed::Lease,
        ),
        forward(
            Api::<FailoverClusterInstance>::namespaced(c.clone(), NS),
            tx.clone(),
            Observed::Instance,
        ),
        forward(
            Api::<Event>::namespaced(c.clone(), NS),
            tx.clone(),
            Observed::Event,
        ),
        AbortOnDrop(tokio::spawn({
            let (path, tx) = (cp.audit_log(), tx.clone());
            async move {
                if let Err(e) = audit::follow(path, tx).await {
                    eprintln!("[chaos] reading the audit log failed: {e:#}");
                }
            }
        })),
    ];

    let nodes = cp
        .nodes
        .create(
            "chaos",
            args.nodes,
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
            "heartbeat": {"leaseStaleSeconds": 6, "notReadySeconds": 10},
            "fencing": {"unfenceAfterSeconds": 10},
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
    let driver: CSIDriver = serde_json::from_value(serde_json::json!({
        "metadata": {"name": SIM_CSI_DRIVER}, "spec": {"attachRequired": true}
    }))?;
    create_if_absent(&Api::all(client.clone()), &driver).await?;
    let _attacher = AbortOnDrop(tokio::spawn(play_csi_attacher(
        cp.client()?,
        SIM_CSI_DRIVER.into(),
    )));
    let _pod_status_sync = AbortOnDrop(tokio::spawn(resync_pod_readiness(cp.client()?, NS.into())));
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), NS);
    for i in 0..args.instances {
        create_volume(&client, i).await?;
        create_if_absent(&fcis, &instance(i, &nodes)?).await?;
    }

    let mut controllers = Controllers::new(
        bin,
        kubeconfig,
        cp.process_group_id(),
        cp.logs_dir(),
        NS,
        CONTROLLER_NS,
    );
    controllers.log_filter = args.controller_log.clone();
    let mut injector = Injector::new(
        &cp,
        cp.client()?,
        NS,
        nodes.clone(),
        MEMBER_LABEL,
        tx.clone(),
        controllers,
        seed,
    );
    for _ in 0..2 {
        injector.controllers.spawn()?;
    }
    if let Err(not) = await_all_online(&client, args.instances, Duration::from_secs(300)).await? {
        bail!("set-up: {not}");
    }
    let setup_seconds = start.elapsed().as_secs_f64();
    let note = |text: String| {
        let _ = tx.send(Observation {
            at: Instant::now(),
            wall: jiff::Timestamp::now(),
            fresh: true,
            what: Observed::Note(text),
        });
    };
    note(format!(
        "all {} instances online after {setup_seconds:.1} s of set-up; faults for {} min (at most {} faulty nodes at once, now and then one more)",
        args.instances,
        args.minutes,
        injector.max_faulty()
    ));

    let until = Instant::now() + Duration::from_secs_f64(args.minutes.max(0.0) * 60.0);
    injector.run(until, &mut stop_rx).await?;
    let stopped_early = *stop_rx.borrow();
    note("every fault healed".into());
    let mut liveness_seconds = None;
    if !stopped_early {
        match await_all_online(
            &client,
            args.instances,
            Duration::from_secs(args.liveness_seconds),
        )
        .await?
        {
            Ok(secs) => {
                liveness_seconds = Some(secs);
                note(format!(
                    "every instance online {secs:.1} s after the healing"
                ));
            }
            Err(not) => {
                let _ = tx.send(Observation {
                    at: Instant::now(),
                    wall: jiff::Timestamp::now(),
                    fresh: true,
                    what: Observed::External {
                        invariant: "liveness",
                        message: not,
                    },
                });
            }
        }
    }
    for gone in injector.controllers.exited() {
        let _ = tx.send(Observation {
            at: Instant::now(),
            wall: jiff::Timestamp::now(),
            fresh: true,
            what: Observed::External {
                invariant: "a controller replica exited",
                message: gone,
            },
        });
    }
    let _ = done_tx.send(());
    let checker = judge_task.await?;
    injector.controllers.stop_all().await;
    let summary = Summary {
        seed,
        minutes: args.minutes,
        instances: args.instances,
        nodes: args.nodes,
        faults: injector.counts.clone(),
        max_faulty_nodes: injector.max_faulty(),
        beyond_bound: injector.beyond_bound,
        most_faulty_at_once: injector.most_faulty_at_once,
        apiserver_restart_seconds: injector.apiserver_restart_seconds.clone(),
        tally: checker.tally.clone(),
        violations: checker.violations.clone(),
        liveness_seconds,
        setup_seconds,
        duration_seconds: start.elapsed().as_secs_f64(),
        logs: cp.logs_dir(),
    };
    drop(injector);
    print_summary(&summary);
    Ok(summary)
}

pub fn print_summary(s: &Summary) {
    println!(
        "\n## Chaos run: seed {}, {} min of faults, {} instances on {} nodes",
        s.seed, s.minutes, s.instances, s.nodes
    );
    let total: usize = s.faults.values().sum();
    println!("faults injected: {total}");
    for kind in FaultKind::ALL {
        println!(
            "  {:<32} {}",
            kind.name(),
            s.faults.get(&kind).copied().unwrap_or(0)
        );
    }
    println!(
        "  node faults at once: at most {} (quorum), {} injected beyond it, {} at most seen",
        s.max_faulty_nodes, s.beyond_bound, s.most_faulty_at_once
    );
    if !s.apiserver_restart_seconds.is_empty() {
        let max = s
            .apiserver_restart_seconds
            .iter()
            .copied()
            .fold(0.0f64, f64::max);
        println!("  kube-apiserver back within {max:.1} s of each restart");
    }
    let t = &s.tally;
    println!(
        "moves completed: {} failovers, {} planned moves, {} called off (node back before fencing); {} move starts judged",
        t.failovers, t.planned_moves, t.abandoned, t.move_starts_checked
    );
    println!("Events: {:?}", t.events);
    println!(
        "audit log: {} lines; {} force deletes of pods and {} VolumeAttachment deletes by the controller judged ({} whose node was unknown); {} out-of-service taints seen added",
        t.audit_lines,
        t.audited_force_pod_deletes,
        t.audited_attachment_deletes,
        t.unverified_deletes,
        t.taints_seen
    );
    match s.liveness_seconds {
        Some(l) => {
            println!("liveness: every instance online {l:.1} s after every fault was healed")
        }
        None => println!("liveness: not reached (see violations)"),
    }
    println!("violations: {}", s.violations.len());
    for v in &s.violations {
        println!("  {:+.1} s {}: {}", v.at_seconds, v.invariant, v.message);
    }
    println!(
        "duration: {:.0} s ({:.0} s of set-up); logs in {}",
        s.duration_seconds,
        s.setup_seconds,
        s.logs.display()
    );
}
