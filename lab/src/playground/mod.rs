//! `kube-failover-lab playground`: a local control plane with simulated member nodes and
//! the controller, kept running until Ctrl-C, to try kube-failover by hand with kubectl.
//!
//! The playground keeps its state in a directory (by default
//! `$XDG_RUNTIME_DIR/kube-failover-playground`, else `~/.cache/kube-failover/playground`):
//! the admin kubeconfig, `playground.json` (its process, its process group, its nodes) and a
//! Unix socket, `control.sock`, on which `kube-failover-lab node kill|revive|list` asks it to
//! cut or restore a node's power. The socket answers only while the playground runs, which
//! is how `node` knows whether one does. Everything in the directory but the control
//! plane's logs is removed when the playground stops.
//!
//! A killed node is a node that lost power: KWOK stops renewing its Lease and updating its
//! status and its pods (see `controlplane::nodes`), and the playground's stand-in kubelet no
//! longer reports its pods ready. Revived, all of it starts again.

mod control;
mod files;
mod launch;
mod welcome;

pub use control::node;
use control::serve;
use files::{renew_token, write_kubeconfig, write_kubeconfig_with_token_file, write_token};
use launch::{Controller, spawn_controller, start_controller, stopped};
use welcome::print_welcome;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use serde::{Deserialize, Serialize};
use tokio::net::{UnixListener, UnixStream};

use crate::controlplane::{
    AbortOnDrop, ControlPlane, ControlPlaneConfig, create_if_absent, install_controller_identity,
    play_csi_attacher, resync_pod_readiness_everywhere,
};
use crate::demo::{SIM_CSI_DRIVER, ensure_tools};
use kube_failover_core::api::FailoverCluster;

/// The FailoverCluster of the playground, and the namespace its kubeconfig defaults to.
pub const CLUSTER: &str = "playground";

pub const NAMESPACE: &str = "playground";

/// The label that makes a node a member of [`CLUSTER`].
pub const MEMBER_LABEL: &str = "playground.kube-failover.io/member";

/// Names of the files in the state directory.
const SOCKET: &str = "control.sock";

const KUBECONFIG: &str = "kubeconfig";

const STATE: &str = "playground.json";

const TOKEN: &str = "controller.token";

const CONTROLLER_KUBECONFIG: &str = "kubeconfig-controller";

/// How long the controller's ServiceAccount tokens last; a new one is written every half.
const TOKEN_SECONDS: u64 = 2 * 3600;

#[derive(Clone, Debug, clap::Args)]
pub struct PlaygroundArgs {
    /// Simulated member nodes.
    #[arg(long, default_value_t = 3)]
    pub nodes: usize,
    /// The state directory (kubeconfig, control socket, logs); `node` must be given the
    /// same one.
    #[arg(long, env = "KUBE_FAILOVER_PLAYGROUND_DIR")]
    pub dir: Option<PathBuf>,
    /// Run this controller binary (`kube-failover run`) as a process of its own, instead of
    /// the controller built into this one (the same sources, never stale).
    #[arg(long)]
    pub controller_bin: Option<PathBuf>,
}

#[derive(Clone, Debug, clap::Args)]
pub struct NodeArgs {
    #[command(subcommand)]
    pub action: NodeAction,
    /// The state directory of the playground (as given to `playground --dir`).
    #[arg(long, global = true, env = "KUBE_FAILOVER_PLAYGROUND_DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Clone, Debug, clap::Subcommand)]
pub enum NodeAction {
    /// Cut the node's power: its heartbeats (Lease renewals, Node status) and its kubelet
    /// (pod status) stop.
    Kill { node: String },
    /// Restore the node's power: heartbeats and kubelet start again.
    Revive { node: String },
    /// Each node of the playground: powered or killed, its Ready condition and its state
    /// in the FailoverCluster.
    List,
}

/// What `playground.json` records of a running playground.
#[derive(Debug, Serialize, Deserialize)]
pub struct State {
    /// The playground's process.
    pub pid: u32,
    /// The process group of the control plane and everything it started.
    pub process_group: i32,
    pub kubeconfig: PathBuf,
    /// The API server's URL.
    pub server: String,
    pub nodes: Vec<String>,
    pub logs: PathBuf,
}

/// The state directory: the one given, else `$XDG_RUNTIME_DIR/kube-failover-playground`,
/// else `~/.cache/kube-failover/playground`.
pub fn state_dir(given: Option<&Path>) -> Result<PathBuf> {
    if let Some(dir) = given {
        return Ok(dir.to_path_buf());
    }
    if let Some(run) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| Path::new(d).is_dir()) {
        return Ok(PathBuf::from(run).join("kube-failover-playground"));
    }
    let home = std::env::var_os("HOME").context("neither XDG_RUNTIME_DIR nor HOME is set")?;
    Ok(PathBuf::from(home).join(".cache/kube-failover/playground"))
}

/// Runs the playground until SIGINT or SIGTERM, then stops every process it started.
pub async fn run(args: PlaygroundArgs) -> Result<()> {
    if args.nodes == 0 {
        bail!("a playground needs at least one node");
    }
    if let Some(bin) = &args.controller_bin
        && !bin.is_file()
    {
        bail!("the controller binary {} does not exist", bin.display());
    }
    let (dir, socket) = prepare_dir(&args).await?;

    ensure_tools()?;
    println!(
        "Starting the playground: a local control plane (etcd, kube-apiserver, kube-controller-manager, KWOK) with {} simulated nodes…",
        args.nodes
    );
    let cp = ControlPlane::start(ControlPlaneConfig {
        scheduler: false,
        work_dir: dir.join("controlplane"),
        ..Default::default()
    })
    .await?;
    let client = cp.client()?;
    cp.install_kube_failover_crds(&client).await?;
    cp.create_namespace(&client, NAMESPACE).await?;

    // The controller runs as the ServiceAccount of deploy/kube-failover.yaml, with its RBAC
    // and admission policies: what ships is what is tried. Its token is read from a file
    // (re-read every minute by the client) that a task renews.
    install_controller_identity(&client).await?;
    let token_file = dir.join(TOKEN);
    write_token(&client, &token_file).await?;
    let _token_renewal = AbortOnDrop(tokio::spawn(renew_token(cp.client()?, token_file.clone())));

    let nodes = create_members(&cp, &client, args.nodes).await?;
    let driver: CSIDriver = serde_json::from_value(serde_json::json!({
        "metadata": {"name": SIM_CSI_DRIVER},
        "spec": {"attachRequired": true, "podInfoOnMount": false}
    }))?;
    create_if_absent(&Api::all(client.clone()), &driver).await?;
    let _attacher = AbortOnDrop(tokio::spawn(play_csi_attacher(
        cp.client()?,
        SIM_CSI_DRIVER.into(),
    )));
    let _kubelets = AbortOnDrop(tokio::spawn(resync_pod_readiness_everywhere(cp.client()?)));
    await_nodes_ready(&client, &nodes).await?;

    let kubeconfig = dir.join(KUBECONFIG);
    write_kubeconfig(&cp.kubeconfig(), &kubeconfig)?;

    let controller_log = cp.logs_dir().join("kube-failover.log");
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut controller =
        launch_controller(&cp, &args, &dir, &token_file, &controller_log, metrics_addr).await?;

    let listener = UnixListener::bind(&socket)
        .with_context(|| format!("listening on {}", socket.display()))?;
    let state = State {
        pid: std::process::id(),
        process_group: cp.process_group_id(),
        kubeconfig: kubeconfig.clone(),
        server: cp.config().cluster_url.to_string(),
        nodes: nodes.clone(),
        logs: cp.logs_dir(),
    };
    std::fs::write(dir.join(STATE), serde_json::to_string_pretty(&state)?)?;
    let _control = AbortOnDrop(tokio::spawn(serve(
        listener,
        cp.nodes.clone(),
        cp.client()?,
        nodes.clone(),
    )));

    print_welcome(
        &cp,
        &dir,
        args.dir.is_some(),
        &state,
        args.controller_bin.as_deref(),
        metrics_addr,
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        _ = tokio::signal::ctrl_c() => Ok(()),
        _ = term.recv() => Ok(()),
        exited = &mut controller.exited => Err(stopped(exited, &controller_log)),
    };
    println!("\nStopping the playground…");
    // The socket first: from now on `node` says that no playground runs.
    for file in [SOCKET, STATE, KUBECONFIG, TOKEN, CONTROLLER_KUBECONFIG] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    controller.stop().await;
    let logs = cp.logs_dir();
    let mut cp = cp;
    cp.stop();
    println!("Stopped; the logs stay in {}.", logs.display());
    outcome
}

fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The state directory, made and cleared of what a killed playground left behind, and the
/// path of its control socket; fails when a playground runs with it already.
async fn prepare_dir(args: &PlaygroundArgs) -> Result<(PathBuf, PathBuf)> {
    let dir = state_dir(args.dir.as_deref())?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let dir = dir.canonicalize()?;
    let socket = dir.join(SOCKET);
    // A Unix socket's path is limited to 107 bytes.
    if socket.as_os_str().len() > 100 {
        bail!(
            "the state directory's path is too long for a Unix socket in it: {}",
            dir.display()
        );
    }
    if UnixStream::connect(&socket).await.is_ok() {
        bail!(
            "a playground is already running with the state directory {} (stop it, or give another --dir)",
            dir.display()
        );
    }
    // What a playground that was killed left behind.
    for stale in [SOCKET, KUBECONFIG, STATE, TOKEN, CONTROLLER_KUBECONFIG] {
        let _ = std::fs::remove_file(dir.join(stale));
    }
    Ok((dir, socket))
}

/// The member nodes and their FailoverCluster.
async fn create_members(cp: &ControlPlane, client: &Client, count: usize) -> Result<Vec<String>> {
    let nodes = cp
        .nodes
        .create(
            "node",
            count,
            &BTreeMap::from([(MEMBER_LABEL.to_string(), "true".to_string())]),
        )
        .await?;
    let cluster: FailoverCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-failover.io/v1alpha1",
        "kind": "FailoverCluster",
        "metadata": {"name": CLUSTER},
        "spec": {
            "nodeSelector": {MEMBER_LABEL: "true"},
            "allowedNamespaces": {"selector": {}},
            // Simulated nodes renew their Lease every second.
            "heartbeat": {"leaseStaleSeconds": 3, "notReadySeconds": 3},
            "fencing": {"unfenceAfterSeconds": 10},
            // The examples' virtual IPs (documentation ranges).
            "addressPools": [{"name": "examples", "cidrs": ["192.0.2.0/24", "198.51.100.0/24"]}],
        }
    }))?;
    Api::<FailoverCluster>::all(client.clone())
        .create(&PostParams::default(), &cluster)
        .await?;
    Ok(nodes)
}

/// Waits until every node is Ready (60 s each).
async fn await_nodes_ready(client: &Client, nodes: &[String]) -> Result<()> {
    let node_api: Api<Node> = Api::all(client.clone());
    for node in nodes {
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(node_api.clone(), node, |n: Option<&Node>| {
                n.is_some_and(node_ready)
            }),
        )
        .await
        .with_context(|| format!("node {node} not Ready in 60 s"))??;
    }
    Ok(())
}

/// The controller (in this process, or the given binary), once its caches have synced.
async fn launch_controller(
    cp: &ControlPlane,
    args: &PlaygroundArgs,
    dir: &Path,
    token_file: &Path,
    controller_log: &Path,
    metrics_addr: std::net::SocketAddr,
) -> Result<Controller> {
    let mut controller = match &args.controller_bin {
        None => start_controller(
            cp.config().clone(),
            token_file,
            controller_log,
            metrics_addr,
        )?,
        Some(bin) => {
            let kubeconfig = dir.join(CONTROLLER_KUBECONFIG);
            write_kubeconfig_with_token_file(&cp.kubeconfig(), token_file, &kubeconfig)?;
            spawn_controller(
                bin,
                &kubeconfig,
                cp.process_group_id(),
                controller_log,
                metrics_addr,
            )?
        }
    };
    controller
        .ready(metrics_addr, controller_log)
        .await
        .context("starting the controller")?;
    Ok(controller)
}
