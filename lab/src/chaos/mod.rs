//! `kube-failover-lab chaos`: faults at random on a real control plane, judged by an
//! independent watcher of the invariants of `docs/safety.md`.
//!
//! A control plane with an audit log, simulated nodes that are members of one
//! FailoverCluster, instances with a ReadWriteOnce CSI volume each, and two replicas of the
//! controller binary that ships (processes, leader election on a 2 s Lease, authenticated
//! as the ServiceAccount and RBAC of `deploy/kube-failover.yaml`). Each node also has a
//! simulated container runtime (`crate::simruntime`), in which its kubelet runs the
//! containers of the instance pods bound to it ([`containers`]), and a node agent of the
//! binary that ships ([`agents`]), which stops them through that runtime's CRI socket and
//! reaches the API server through a relay of its own that can be cut.
//!
//! Once every agent renews and every instance is online, faults are injected from a seeded
//! generator for the given minutes: node kill (a power cut) and revive, a NotReady kubelet
//! with a fresh Lease, a kubelet with a clock minutes behind, a node relabelled out of the
//! cluster, a cordon, SIGKILL and SIGSTOP of the leader, a restart of kube-apiserver, an
//! agent killed, a rollout of every agent, a kubelet dead with its agent alive, a node cut
//! off from the API server with its containers running, and kube-apiserver stopped for
//! 10 s. At most as many nodes are faulty at once as leave quorum, and now and then one
//! more (the controller must then wait). Then every fault is healed and every instance
//! must be online again within a bound.
//!
//! The watcher ([`checker`]) has its own client and watches, reads the audit log, and is
//! told every change of the containers running at the runtimes; it never looks into the
//! controller or the agents. What it checks is listed on [`checker::Checker`].

mod agents;
mod audit;
pub mod checker;
mod containers;
mod faults;
mod kubelet;
mod relay;
mod replicas;
mod report;
mod setup;
mod watches;

pub use report::print_summary;
use setup::{
    await_all_online, controller_identity, create_csi_driver, create_instances, create_members,
    new_injector, start_control_plane, start_machines,
};
use watches::{judge, start_watches};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use kube::Client;
use serde::Serialize;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::sync::{oneshot, watch};

use crate::bench::controller_bin;
use crate::controlplane::{AbortOnDrop, resync_pod_readiness};
use crate::controlplane::{CONTROLLER_USER, play_csi_attacher};
use crate::demo::{SIM_CSI_DRIVER, ensure_tools};
use crate::simruntime::RuntimeCounts;
use checker::{Change, Checker, CheckerConfig, Observation, Observed, Tally, Violation};
pub use checker::{FaultKind, instance_online};
use faults::{Controllers, Injector};

/// The namespace of the instances.
const NS: &str = "chaos";

/// The cluster and its member label.
const CLUSTER: &str = "chaos";

const MEMBER_LABEL: &str = "chaos.kube-failover.io/member";

/// The cluster's `heartbeat.leaseStaleSeconds`: a node whose kubelet has not renewed for
/// this long is down.
const LEASE_STALE_SECONDS: u64 = 6;

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
    /// RUST_LOG of the node agents (their logs too: `agent-<node>.log`).
    #[arg(long, default_value = "info,kube_client=warn,kube_runtime=warn")]
    pub agent_log: String,
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
            agent_log: "info,kube_client=warn,kube_runtime=warn".into(),
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
    /// What the kubelets, the agents and the power cuts did to containers.
    pub runtime: RuntimeCounts,
    /// Agent processes started after the first of each node (faults, rollouts, boots).
    pub agent_restarts: usize,
    /// Whether the agents asked their peers before fencing themselves.
    pub agents_ask_peers: bool,
    pub tally: Tally,
    pub violations: Vec<Violation>,
    /// Seconds from the last fault healed to every instance online.
    pub liveness_seconds: Option<f64>,
    pub setup_seconds: f64,
    pub duration_seconds: f64,
    pub logs: PathBuf,
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
    let cp = start_control_plane(&args).await?;
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
    let mut config = CheckerConfig::new(&controller_user);
    config.heartbeat_threshold = Duration::from_secs(LEASE_STALE_SECONDS);
    let mut checker = Checker::new(config, start);
    checker.echo = args.verbose;
    let judge_task = tokio::spawn(judge(checker, rx, done_rx, stop_tx, args.keep_going, start));
    let _watches = start_watches(&watcher_client, cp.audit_log(), &tx);

    let nodes = create_members(&cp, &client, args.nodes).await?;
    // Each node's runtime, kubelet and agent, the agents renewing, before any instance.
    let (machines, _machine_tasks) =
        start_machines(&cp, &client, &args, &bin, &nodes, &tx, seed).await?;
    note(
        &tx,
        format!(
            "{} node agents renewing (asking their peers before fencing themselves: {})",
            nodes.len(),
            machines.agents.ask_peers()
        ),
    );
    create_csi_driver(&client).await?;
    let _attacher = AbortOnDrop(tokio::spawn(play_csi_attacher(
        cp.client()?,
        SIM_CSI_DRIVER.into(),
    )));
    let _pod_status_sync = AbortOnDrop(tokio::spawn(resync_pod_readiness(cp.client()?, NS.into())));
    create_instances(&client, args.instances, &nodes).await?;

    let mut injector = new_injector(
        &cp,
        &args,
        bin,
        kubeconfig,
        nodes,
        machines,
        tx.clone(),
        seed,
    )?;
    for _ in 0..2 {
        injector.controllers.spawn()?;
    }
    if let Err(not) = await_all_online(&client, args.instances, Duration::from_secs(300)).await? {
        bail!("set-up: {not}");
    }
    let setup_seconds = start.elapsed().as_secs_f64();
    note(
        &tx,
        format!(
            "all {} instances online after {setup_seconds:.1} s of set-up; faults for {} min (at most {} faulty nodes at once, now and then one more)",
            args.instances,
            args.minutes,
            injector.max_faulty()
        ),
    );

    let until = Instant::now() + Duration::from_secs_f64(args.minutes.max(0.0) * 60.0);
    injector.run(until, &mut stop_rx).await?;
    let stopped_early = *stop_rx.borrow();
    note(&tx, "every fault healed".into());
    let mut liveness_seconds = None;
    if !stopped_early {
        liveness_seconds = await_liveness(&client, &args, &tx).await?;
    }
    for gone in injector.controllers.exited() {
        external(&tx, "a controller replica exited", gone);
    }
    for gone in injector.machines.agents.exited() {
        external(&tx, "a node agent exited", gone);
    }
    let _ = done_tx.send(());
    let checker = judge_task.await?;
    injector.controllers.stop_all().await;
    injector.machines.agents.stop_all().await;
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
        runtime: injector.machines.runtimes.counts(),
        agent_restarts: injector.machines.agents.restarts,
        agents_ask_peers: injector.machines.agents.ask_peers(),
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

/// Sends the watcher a note for its history.
fn note(tx: &UnboundedSender<Observation>, text: String) {
    let _ = tx.send(Observation {
        at: Instant::now(),
        wall: jiff::Timestamp::now(),
        fresh: true,
        what: Observed::Note(text),
    });
}

/// Sends the watcher a violation found outside its watches.
fn external(tx: &UnboundedSender<Observation>, invariant: &'static str, message: String) {
    let _ = tx.send(Observation {
        at: Instant::now(),
        wall: jiff::Timestamp::now(),
        fresh: true,
        what: Observed::External { invariant, message },
    });
}

/// Awaits every instance online within the liveness bound, once every fault is healed;
/// tells the watcher either way.
async fn await_liveness(
    client: &Client,
    args: &ChaosArgs,
    tx: &UnboundedSender<Observation>,
) -> Result<Option<f64>> {
    match await_all_online(
        client,
        args.instances,
        Duration::from_secs(args.liveness_seconds),
    )
    .await?
    {
        Ok(secs) => {
            note(
                tx,
                format!("every instance online {secs:.1} s after the healing"),
            );
            Ok(Some(secs))
        }
        Err(not) => {
            external(tx, "liveness", not);
            Ok(None)
        }
    }
}
