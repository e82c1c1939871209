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

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::{Api, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::controlplane::{
    AbortOnDrop, CONTROLLER_NS, CONTROLLER_SA, ControlPlane, ControlPlaneConfig, NODE_ALIVE_LABEL,
    SimulatedNodes, controller_token, create_if_absent, install_controller_identity,
    play_csi_attacher, resync_pod_readiness_everywhere,
};
use crate::demo::{SIM_CSI_DRIVER, ensure_tools};
use kube_failover_controller::{self as controller, RunOptions};
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

    let nodes = cp
        .nodes
        .create(
            "node",
            args.nodes,
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
        }
    }))?;
    Api::<FailoverCluster>::all(client.clone())
        .create(&PostParams::default(), &cluster)
        .await?;
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
    let node_api: Api<Node> = Api::all(client.clone());
    for node in &nodes {
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(node_api.clone(), node, |n: Option<&Node>| {
                n.is_some_and(node_ready)
            }),
        )
        .await
        .with_context(|| format!("node {node} not Ready in 60 s"))??;
    }

    let kubeconfig = dir.join(KUBECONFIG);
    write_kubeconfig(&cp.kubeconfig(), &kubeconfig)?;

    let controller_log = cp.logs_dir().join("kube-failover.log");
    let metrics_addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let mut controller = match &args.controller_bin {
        None => start_controller(
            cp.config().clone(),
            &token_file,
            &controller_log,
            metrics_addr,
        )?,
        Some(bin) => {
            let kubeconfig = dir.join(CONTROLLER_KUBECONFIG);
            write_kubeconfig_with_token_file(&cp.kubeconfig(), &token_file, &kubeconfig)?;
            spawn_controller(
                bin,
                &kubeconfig,
                cp.process_group_id(),
                &controller_log,
                metrics_addr,
            )?
        }
    };
    controller
        .ready(metrics_addr, &controller_log)
        .await
        .context("starting the controller")?;

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

/// The admin kubeconfig of the control plane, with the playground's namespace as the
/// context's default.
fn write_kubeconfig(from: &Path, to: &Path) -> Result<()> {
    let text = std::fs::read_to_string(from)?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    for context in config
        .get_mut("contexts")
        .and_then(|c| c.as_sequence_mut())
        .context("the control plane's kubeconfig has no contexts")?
    {
        if let Some(ctx) = context.get_mut("context").and_then(|c| c.as_mapping_mut()) {
            ctx.insert("namespace".into(), NAMESPACE.into());
        }
    }
    write_private(to, &serde_yaml::to_string(&config)?)?;
    Ok(())
}

/// As the admin kubeconfig, but authenticated with the token in `token_file` (which the
/// client re-reads every minute): the controller's, for `--controller-bin`.
fn write_kubeconfig_with_token_file(from: &Path, token_file: &Path, to: &Path) -> Result<()> {
    let text = std::fs::read_to_string(from)?;
    let mut config: serde_yaml::Value = serde_yaml::from_str(&text)?;
    for user in config
        .get_mut("users")
        .and_then(|u| u.as_sequence_mut())
        .context("the control plane's kubeconfig has no users")?
    {
        if let Some(user) = user.get_mut("user").and_then(|u| u.as_mapping_mut()) {
            user.clear();
            user.insert("tokenFile".into(), token_file.display().to_string().into());
        }
    }
    write_private(to, &serde_yaml::to_string(&config)?)?;
    Ok(())
}

/// Writes a file only its owner may read: it holds a credential.
fn write_private(path: &Path, contents: &str) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    file.write_all(contents.as_bytes())?;
    Ok(())
}

async fn write_token(client: &Client, path: &Path) -> Result<()> {
    let token = controller_token(client, TOKEN_SECONDS as i64).await?;
    // Written whole, then renamed: the client never reads half a token.
    let tmp = path.with_extension("new");
    write_private(&tmp, &token)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

async fn renew_token(client: Client, path: PathBuf) {
    loop {
        tokio::time::sleep(Duration::from_secs(TOKEN_SECONDS / 2)).await;
        if let Err(e) = write_token(&client, &path).await {
            eprintln!("renewing the controller's token failed: {e:#}");
        }
    }
}

/// The controller, in this process or as a process of its own.
struct Controller {
    /// In this process: a runtime of its own, whose shutdown ends every task of the
    /// controller at once.
    runtime: Option<tokio::runtime::Runtime>,
    /// A process: asks the task that waits for it to stop it, and that task.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    waiter: Option<tokio::task::JoinHandle<()>>,
    /// Receives why the controller stopped, should it stop by itself.
    exited: tokio::sync::oneshot::Receiver<Result<()>>,
}

fn stopped(
    exited: Result<Result<()>, tokio::sync::oneshot::error::RecvError>,
    log: &Path,
) -> anyhow::Error {
    let log = format!("the controller stopped (its log: {})", log.display());
    match exited {
        Ok(Err(e)) => e.context(log),
        _ => anyhow::anyhow!(log),
    }
}

impl Controller {
    /// Waits until the controller's caches have synced (its /readyz answers 200), or fails
    /// when it stops first or takes more than 120 s. Nothing tells before it listens: polled.
    async fn ready(&mut self, addr: std::net::SocketAddr, log: &Path) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            if let Ok((200, _)) = crate::controlplane::http_get(addr, "/readyz").await {
                return Ok(());
            }
            match self.exited.try_recv() {
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                Ok(result) => return Err(stopped(Ok(result), log)),
                Err(_) => {
                    return Err(anyhow::anyhow!(
                        "the controller stopped (its log: {})",
                        log.display()
                    ));
                }
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!(
                    "the controller was not ready within 120 s (its log: {})",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.await;
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // A runtime may not be dropped (which blocks) on an async thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `bin run` as a process in the control plane's process group (its watchdog kills it
/// with the rest however this process ends), logging to `log`. Stopped with SIGTERM, then
/// SIGKILL after 10 s.
fn spawn_controller(
    bin: &Path,
    kubeconfig: &Path,
    process_group: i32,
    log: &Path,
    metrics_addr: std::net::SocketAddr,
) -> Result<Controller> {
    let file = std::fs::File::create(log)?;
    let mut child = tokio::process::Command::new(bin)
        .args(["run", "--leader-elect", "false", "--identity", "playground"])
        .args(["--metrics-addr", &metrics_addr.to_string()])
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG")
                .unwrap_or_else(|_| "info,kube_client=warn,kube_runtime=warn".into()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(process_group)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let (tx, exited) = tokio::sync::oneshot::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let name = bin.display().to_string();
    let waiter = tokio::spawn(async move {
        tokio::select! {
            status = child.wait() => {
                let _ = tx.send(Err(match status {
                    Ok(status) => anyhow::anyhow!("{name} exited: {status}"),
                    Err(e) => anyhow::Error::from(e).context(format!("waiting for {name}")),
                }));
            }
            _ = stop_rx => {
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
        }
    });
    Ok(Controller {
        runtime: None,
        stop: Some(stop),
        waiter: Some(waiter),
        exited,
    })
}

/// The controller, as `kube-failover run` runs it (the same `controller::run_with_config`,
/// built from the same sources as this binary), watching every namespace, logging to
/// `log`.
fn start_controller(
    admin: kube::Config,
    token_file: &Path,
    log: &Path,
    metrics_addr: std::net::SocketAddr,
) -> Result<Controller> {
    let file = std::fs::File::create(log)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube_client=warn,kube_runtime=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    let mut config = admin;
    config.auth_info = kube::config::AuthInfo {
        token_file: Some(token_file.display().to_string()),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("controller")
        .enable_all()
        .build()?;
    let (tx, exited) = tokio::sync::oneshot::channel();
    runtime.spawn(async move {
        let result = controller::run_with_config(
            config,
            RunOptions {
                namespace: None,
                handle_signals: false,
                leader: None,
                metrics_addr: Some(metrics_addr),
                identity: "playground".into(),
            },
        )
        .await;
        let _ = tx.send(result);
    });
    Ok(Controller {
        runtime: Some(runtime),
        stop: None,
        waiter: None,
        exited,
    })
}

fn print_welcome(
    cp: &ControlPlane,
    dir: &Path,
    dir_given: bool,
    state: &State,
    controller_bin: Option<&Path>,
    metrics_addr: std::net::SocketAddr,
) {
    let here = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf));
    let lab = if dir_given {
        format!("kube-failover-lab node --dir {}", dir.display())
    } else {
        "kube-failover-lab node".to_string()
    };
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/playground.yaml");
    let example = example.canonicalize().unwrap_or(example);
    let first = &state.nodes[0];
    println!(
        "\nThe playground is running (control plane ready in {:.1} s). In another terminal:\n",
        cp.startup.as_secs_f64()
    );
    println!("  export KUBECONFIG={}", state.kubeconfig.display());
    match &here {
        Some(here) => println!(
            "  export PATH={}:{}:$PATH",
            cp.tools_bin().display(),
            here.display()
        ),
        None => println!("  export PATH={}:$PATH", cp.tools_bin().display()),
    }
    println!(
        "\nNodes: {} (members of the FailoverCluster {CLUSTER}: label {MEMBER_LABEL}=true; Down 3 s after their last heartbeat).",
        state.nodes.join(", ")
    );
    println!(
        "Namespace {NAMESPACE} (the kubeconfig's default); the cluster allows every namespace."
    );
    let controller = match controller_bin {
        Some(bin) => format!("{} run", bin.display()),
        None => "in this process".to_string(),
    };
    println!(
        "The controller runs ({controller}) as the ServiceAccount {CONTROLLER_NS}/{CONTROLLER_SA} of deploy/kube-failover.yaml;"
    );
    println!(
        "  its log: {}\n  its metrics: http://{metrics_addr}/metrics",
        state.logs.join("kube-failover.log").display()
    );
    if let Some(here) = here
        .as_ref()
        .filter(|h| !h.join("kubectl-failover").is_file())
    {
        let release = if here.ends_with("release") {
            " --release"
        } else {
            ""
        };
        println!(
            "The kubectl plugin is not built beside this binary: cargo build{release} -p kubectl-failover"
        );
    }
    println!("\nThings to try:");
    println!(
        "  kubectl apply -f {}  # db (a VIP, a CSI volume) and web",
        example.display()
    );
    println!("  kubectl get fci -w");
    println!("  kubectl failover status");
    println!("  {lab} kill {first}  # a power cut: its heartbeats and its kubelet stop");
    println!("  kubectl failover history db");
    println!("  {lab} revive {first}");
    println!("  {lab} list");
    println!(
        "\nState in {}; Ctrl-C stops the playground and every process it started.",
        dir.display()
    );
}

/// Answers `node` requests on the control socket: one line in (`kill NODE`, `revive NODE`,
/// `list`), then `ok` or `error` on a line and the text to show.
async fn serve(listener: UnixListener, sim: SimulatedNodes, client: Client, nodes: Vec<String>) {
    let nodes = std::sync::Arc::new(nodes);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (sim, client, nodes) = (sim.clone(), client.clone(), nodes.clone());
        // Each request on its own: a client that never sends its line holds up no other.
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read.take(4096));
            let read_line = reader.read_line(&mut line);
            if !matches!(
                tokio::time::timeout(Duration::from_secs(10), read_line).await,
                Ok(Ok(_))
            ) {
                return;
            }
            let reply = match handle(line.trim(), &sim, &client, &nodes).await {
                Ok(text) => format!("ok\n{text}"),
                Err(e) => format!("error\n{e:#}"),
            };
            let _ = write.write_all(reply.as_bytes()).await;
            let _ = write.shutdown().await;
        });
    }
}

async fn handle(
    request: &str,
    sim: &SimulatedNodes,
    client: &Client,
    nodes: &[String],
) -> Result<String> {
    let (verb, node) = request.split_once(' ').unwrap_or((request, ""));
    let api: Api<Node> = Api::all(client.clone());
    match verb {
        "kill" | "revive" => {
            if !nodes.iter().any(|n| n == node) {
                bail!(
                    "no node {node:?} in the playground; its nodes are {}",
                    nodes.join(", ")
                );
            }
            let alive = api
                .get(node)
                .await?
                .labels()
                .get(NODE_ALIVE_LABEL)
                .is_some_and(|v| v == "true");
            match (verb, alive) {
                ("kill", false) => Ok(format!("{node} is already killed")),
                ("revive", true) => Ok(format!("{node} is already running")),
                ("kill", true) => {
                    sim.kill(node).await?;
                    Ok(format!(
                        "{node} killed: its heartbeats and its kubelet have stopped"
                    ))
                }
                _ => {
                    sim.revive(node).await?;
                    Ok(format!(
                        "{node} revived: its heartbeats and its kubelet start again"
                    ))
                }
            }
        }
        "list" => {
            let cluster = Api::<FailoverCluster>::all(client.clone())
                .get_opt(CLUSTER)
                .await?;
            let members: BTreeMap<String, String> = cluster
                .and_then(|c| c.status)
                .map(|s| {
                    s.members
                        .into_iter()
                        .map(|m| (m.name, format!("{:?}", m.state)))
                        .collect()
                })
                .unwrap_or_default();
            let mut out = format!("{:<10} {:<8} {:<8} MEMBER\n", "NODE", "POWER", "READY");
            for name in nodes {
                let node = api.get_opt(name).await?;
                let power = match &node {
                    Some(n)
                        if n.labels()
                            .get(NODE_ALIVE_LABEL)
                            .is_some_and(|v| v == "true") =>
                    {
                        "on"
                    }
                    Some(_) => "killed",
                    None => "deleted",
                };
                let ready = node
                    .as_ref()
                    .and_then(|n| n.status.as_ref()?.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                    .map_or("-".to_string(), |c| c.status.clone());
                let member = members.get(name).map_or("-", String::as_str);
                out.push_str(&format!("{name:<10} {power:<8} {ready:<8} {member}\n"));
            }
            Ok(out.trim_end().to_string())
        }
        _ => bail!("unknown request {request:?}"),
    }
}

/// `kube-failover-lab node …`: asks the running playground; fails when none runs, the node
/// does not exist or the request failed.
pub async fn node(args: NodeArgs) -> Result<()> {
    let dir = state_dir(args.dir.as_deref())?;
    let socket = dir.join(SOCKET);
    let request = match &args.action {
        NodeAction::Kill { node } => format!("kill {node}\n"),
        NodeAction::Revive { node } => format!("revive {node}\n"),
        NodeAction::List => "list\n".to_string(),
    };
    let mut stream = UnixStream::connect(&socket).await.map_err(|e| {
        anyhow::anyhow!(
            "no playground is running with the state directory {} ({e}): start one with `kube-failover-lab playground`{}",
            dir.display(),
            if args.dir.is_some() {
                format!(" --dir {}", dir.display())
            } else {
                String::new()
            }
        )
    })?;
    stream.write_all(request.as_bytes()).await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_string(&mut reply))
        .await
        .context("the playground did not answer within 60 s")??;
    match reply.split_once('\n') {
        Some(("ok", text)) => {
            println!("{text}");
            Ok(())
        }
        Some(("error", text)) => bail!("{text}"),
        _ => bail!("the playground's answer makes no sense: {reply:?}"),
    }
}
