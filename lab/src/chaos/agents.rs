//! The node agents of a run: one `kube-failover agent` process of the binary that ships per
//! simulated node, as the chart's DaemonSet runs them.
//!
//! Each authenticates as the chart's agent ServiceAccount with a token bound to a pod of its
//! own on its node (as the kubelet gives a DaemonSet's pod), reaches the API server through
//! a [`Relay`] of its own (so that one node can be cut off while its peers are not), stops
//! instance containers through its node's simulated runtime (`crate::simruntime`), and
//! answers its probes on a port of its own. It renews every second and fences itself after
//! [`SELF_FENCE_SECONDS`] without a renewal. When the binary's agent asks its peers before
//! it fences itself (`--peer-address`, `--peer-key-file`), every agent is given a UDP port
//! on loopback and one shared key: peers reach each other whatever relay is cut.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};
use kube::{Client, ResourceExt};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use rand::{RngExt, SeedableRng};

use super::relay::Relay;
use crate::controlplane::{AGENT_NS, AGENT_SA, ControlPlane, agent_token, install_agent_identity};
use kube_failover_core::api::{NODE_LEASE_NAMESPACE, agent_lease_name};

/// Milliseconds between renewals of an agent's Lease.
pub const RENEW_MS: u64 = 1000;
/// Seconds without a renewal after which an agent fences itself: long enough for its peers
/// to hold it through an API server stall (the agent's `self_fence_for_peers`, 4 s at a
/// one-second renewal).
pub const SELF_FENCE_SECONDS: f64 = 5.0;
/// Seconds an agent gives the instance containers to stop.
const STOP_TIMEOUT_SECONDS: f64 = 1.0;

/// How long a started agent has to renew its Lease.
pub const RENEW_WITHIN: Duration = Duration::from_secs(30);

/// One node's agent: what it is started with, and its process while it runs.
struct NodeAgent {
    kubeconfig: PathBuf,
    relay: Relay,
    cri_socket: PathBuf,
    state_dir: PathBuf,
    probe_addr: SocketAddr,
    peer_addr: Option<SocketAddr>,
    child: Option<tokio::process::Child>,
}

/// The agents of every member node.
pub struct Agents {
    bin: PathBuf,
    process_group: i32,
    logs: PathBuf,
    log_filter: String,
    peer_key: Option<PathBuf>,
    leases: Api<Lease>,
    nodes: BTreeMap<String, NodeAgent>,
    /// Agent processes started after the first of each node.
    pub restarts: usize,
}

impl Agents {
    /// The agents' identity (ServiceAccount, RBAC and admission policy of the chart), and
    /// for each node its kubeconfig through a relay of its own, its state directory under
    /// `dir` and its ports. Starts none.
    pub async fn prepare(
        cp: &ControlPlane,
        client: &Client,
        bin: &Path,
        cri_sockets: &BTreeMap<String, PathBuf>,
        dir: &Path,
        log_filter: &str,
        seed: u64,
    ) -> Result<Self> {
        install_agent_identity(client, &cp.tools_bin().join("helm")).await?;
        let peer_key = if asks_peers(bin)? {
            let path = dir.join("peer.key");
            std::fs::write(&path, peer_key(seed))?;
            Some(path)
        } else {
            None
        };
        let mut nodes = BTreeMap::new();
        for (node, socket) in cri_sockets {
            let relay = Relay::start(cp.api_addr()?).await?;
            let kubeconfig = agent_kubeconfig(cp, client, node, relay.addr(), dir).await?;
            let state_dir = dir.join(format!("state-{node}"));
            std::fs::create_dir_all(&state_dir)?;
            let peer_addr = match peer_key {
                Some(_) => Some(free_udp_port()?),
                None => None,
            };
            nodes.insert(
                node.clone(),
                NodeAgent {
                    kubeconfig,
                    relay,
                    cri_socket: socket.clone(),
                    state_dir,
                    probe_addr: free_tcp_port()?,
                    peer_addr,
                    child: None,
                },
            );
        }
        Ok(Self {
            bin: bin.to_path_buf(),
            process_group: cp.process_group_id(),
            logs: cp.logs_dir(),
            log_filter: log_filter.into(),
            peer_key,
            leases: Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
            nodes,
            restarts: 0,
        })
    }

    /// Whether the agents ask their peers before they fence themselves.
    pub fn ask_peers(&self) -> bool {
        self.peer_key.is_some()
    }

    fn agent(&mut self, node: &str) -> Result<&mut NodeAgent> {
        self.nodes
            .get_mut(node)
            .with_context(|| format!("no agent for node {node}"))
    }

    /// Starts the agent of `node` (it must not run), logging to `agent-<node>.log` in the
    /// control plane's logs, in its process group (so that it dies with it however this
    /// process ends). Returns when it started, on the clock its renewals are dated with.
    pub fn start(&mut self, node: &str) -> Result<jiff::Timestamp> {
        let (bin, group, filter) = (
            self.bin.clone(),
            self.process_group,
            self.log_filter.clone(),
        );
        let log_path = self.logs.join(format!("agent-{node}.log"));
        let peer_key = self.peer_key.clone();
        let agent = self.agent(node)?;
        if agent.child.is_some() {
            bail!("the agent of {node} already runs");
        }
        let mut log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&log_path)?;
        std::io::Write::write_all(&mut log, b"--- started by the chaos run ---\n")?;
        let mut command = tokio::process::Command::new(&bin);
        command
            .args(["agent", "--node", node, "--interface", "lo"])
            .args(["--renew-ms", &RENEW_MS.to_string()])
            .args(["--self-fence-seconds", &SELF_FENCE_SECONDS.to_string()])
            .args(["--stop-timeout-seconds", &STOP_TIMEOUT_SECONDS.to_string()])
            .arg("--cri-socket")
            .arg(&agent.cri_socket)
            .arg("--state-dir")
            .arg(&agent.state_dir)
            .args(["--probe-addr", &agent.probe_addr.to_string()]);
        if let (Some(addr), Some(key)) = (agent.peer_addr, &peer_key) {
            command
                .args(["--peer-address", &addr.to_string()])
                .arg("--peer-key-file")
                .arg(key);
        }
        let started = jiff::Timestamp::now();
        let child = command
            .env("KUBECONFIG", &agent.kubeconfig)
            .env("RUST_LOG", &filter)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(group)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting the agent of {node}"))?;
        agent.child = Some(child);
        Ok(started)
    }

    /// Starts the agent of `node` again, counted as a restart.
    pub fn restart(&mut self, node: &str) -> Result<jiff::Timestamp> {
        let started = self.start(node)?;
        self.restarts += 1;
        Ok(started)
    }

    /// Kills the agent of `node` at once (SIGKILL), as a crash or a power cut does.
    pub async fn kill(&mut self, node: &str) -> Result<()> {
        self.stop(node, Signal::SIGKILL).await
    }

    /// Stops the agent of `node` as the kubelet stops a pod: SIGTERM, then SIGKILL if it is
    /// still running 10 s later.
    pub async fn terminate(&mut self, node: &str) -> Result<()> {
        self.stop(node, Signal::SIGTERM).await
    }

    async fn stop(&mut self, node: &str, signal: Signal) -> Result<()> {
        let Some(mut child) = self.agent(node)?.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = nix::sys::signal::kill(Pid::from_raw(i32::try_from(pid)?), signal);
        }
        if tokio::time::timeout(Duration::from_secs(10), child.wait())
            .await
            .is_err()
        {
            child.kill().await?;
        }
        Ok(())
    }

    /// Whether the agent of `node` runs (as far as this run knows: started, not stopped).
    pub fn running(&self, node: &str) -> bool {
        self.nodes.get(node).is_some_and(|a| a.child.is_some())
    }

    /// Awaits the Lease of `node`'s agent renewed after `since` (this machine's clock, which
    /// the agent dates its renewals with), within `within`.
    pub async fn await_renewed(
        &self,
        node: &str,
        since: jiff::Timestamp,
        within: Duration,
    ) -> Result<()> {
        let renewed = move |l: Option<&Lease>| {
            l.and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
                .is_some_and(|t| t.0 > since)
        };
        let name = agent_lease_name(node);
        tokio::time::timeout(
            within,
            kube::runtime::wait::await_condition(self.leases.clone(), &name, renewed),
        )
        .await
        .with_context(|| format!("the agent of {node} did not renew within {within:?}"))??;
        Ok(())
    }

    /// Starts every agent; returns once each has renewed its Lease.
    pub async fn start_all(&mut self) -> Result<()> {
        let nodes: Vec<String> = self.nodes.keys().cloned().collect();
        let mut started = Vec::new();
        for node in &nodes {
            started.push((node, self.start(node)?));
        }
        for (node, since) in started {
            self.await_renewed(node, since, RENEW_WITHIN).await?;
        }
        Ok(())
    }

    /// Cuts the agent of `node` off the API server: its relay drops its connections and
    /// refuses new ones.
    pub fn cut_off(&self, node: &str) {
        if let Some(a) = self.nodes.get(node) {
            a.relay.cut();
        }
    }

    pub fn reconnect(&self, node: &str) {
        if let Some(a) = self.nodes.get(node) {
            a.relay.restore();
        }
    }

    /// Empties the state directory of `node`'s agent, as a reboot empties a tmpfs.
    pub fn wipe_state(&self, node: &str) -> Result<()> {
        if let Some(a) = self.nodes.get(node) {
            std::fs::remove_dir_all(&a.state_dir)?;
            std::fs::create_dir_all(&a.state_dir)?;
        }
        Ok(())
    }

    /// Agents that exited without being stopped, with how (each told once).
    pub fn exited(&mut self) -> Vec<String> {
        let mut gone = Vec::new();
        for (node, agent) in &mut self.nodes {
            if let Some(child) = &mut agent.child
                && let Ok(Some(status)) = child.try_wait()
            {
                gone.push(format!(
                    "the agent of {node} exited by itself: {status} (see agent-{node}.log)"
                ));
                agent.child = None;
            }
        }
        gone
    }

    pub async fn stop_all(&mut self) {
        for agent in self.nodes.values_mut() {
            if let Some(mut child) = agent.child.take() {
                let _ = child.kill().await;
            }
        }
    }
}

/// Whether `bin`'s agent asks its peers before it fences itself (it has the flags).
fn asks_peers(bin: &Path) -> Result<bool> {
    let help = std::process::Command::new(bin)
        .args(["agent", "--help"])
        .output()
        .with_context(|| format!("{} agent --help", bin.display()))?;
    let text = String::from_utf8_lossy(&help.stdout);
    Ok(text.contains("--peer-address") && text.contains("--peer-key-file"))
}

/// The key the agents share, from the run's seed (a lab secret, not a secret).
fn peer_key(seed: u64) -> String {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x7065_6572);
    (0..32)
        .map(|_| format!("{:02x}", rng.random_range(0..=255u8)))
        .collect()
}

fn free_tcp_port() -> Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

fn free_udp_port() -> Result<SocketAddr> {
    Ok(std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?)
}

/// Writes, under `dir`, a kubeconfig for the agent of `node` that reaches the API server
/// through `relay`: a token of the agent's ServiceAccount bound to a pod of its own on
/// that node, as the kubelet gives a DaemonSet's pod. The pod tolerates every taint, as
/// the chart's DaemonSet does: evicted, it would take the token's validity with it.
async fn agent_kubeconfig(
    cp: &ControlPlane,
    client: &Client,
    node: &str,
    relay: SocketAddr,
    dir: &Path,
) -> Result<PathBuf> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), AGENT_NS);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": format!("kube-failover-agent-{node}")},
        "spec": {"nodeName": node, "serviceAccountName": AGENT_SA,
                 "containers": [{"name": "agent", "image": "kube-failover"}],
                 "tolerations": [{"operator": "Exists"}]},
    }))?;
    let pod = pods
        .create(&PostParams::default(), &pod)
        .await
        .with_context(|| format!("the agent pod of {node}"))?;
    let token = agent_token(client, &pod).await?;
    let direct = cp.kubeconfig_with_token(&pod.name_any(), &token)?;
    let api = cp.api_addr()?;
    let text = std::fs::read_to_string(&direct)?;
    let direct_server = format!("server: https://{api}");
    if !text.contains(&direct_server) {
        bail!("{} does not name the API server at {api}", direct.display());
    }
    let text = text.replace(&direct_server, &format!("server: https://{relay}"));
    let path = dir.join(format!("kubeconfig-agent-{node}"));
    std::fs::write(&path, text)?;
    Ok(path)
}
