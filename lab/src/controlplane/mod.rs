//! A real Kubernetes control plane on loopback: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and a KWOK controller that simulates nodes with real heartbeats.
//!
//! Used by the integration tests, the demo and the benchmarks. The binaries are built from
//! pinned Go modules by `lab/tools/install.sh`; nothing here downloads anything.
//!
//! Every process runs in one process group led by a small watchdog shell whose standard input
//! is a pipe from this process. When this process exits for any reason (a panic, `exit`, a
//! signal, even SIGKILL), the pipe closes, the watchdog reads end-of-file and kills the whole
//! group, then removes the data directory. Logs are kept.
//!
//! The API server can be restarted in place ([`ControlPlane::restart_apiserver`],
//! [`ControlPlane::kill_apiserver`]), and can keep an audit log of the writes that fencing
//! is about ([`ControlPlaneConfig::audit_log`], [`AUDIT_POLICY`]).

mod attacher;
pub mod identity;
pub mod kubelet;
mod nodes;
mod process;
mod setup;
mod start;

use start::{kubeconfig_yaml, wait_ready};

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use kube::{Client, Config};

pub use attacher::play_csi_attacher;
pub use identity::{
    AGENT_NS, AGENT_SA, CONTROLLER_NS, CONTROLLER_SA, CONTROLLER_USER, WITNESS_SA, agent_token,
    controller_token, create_if_absent, install_agent_identity, install_controller_identity,
    install_witness_identity,
};
pub use kubelet::{
    AbortOnDrop, OUT_OF_SERVICE_TAINT, resync_pod_readiness, resync_pod_readiness_everywhere,
};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
pub use nodes::{NODE_ALIVE_LABEL, SimulatedNodes};
use process::ProcessGroup;

/// The audit log's file name in the logs directory.
const AUDIT_LOG: &str = "audit.log";

/// The pinned tool versions, the same file that `install.sh` reads.
const VERSIONS_ENV: &str = include_str!("../../tools/versions.env");

/// Timing of the simulated cluster. Short enough for tests to run in seconds, long enough
/// that a loaded two-core machine does not flap nodes.
#[derive(Clone, Debug)]
pub struct ControlPlaneConfig {
    /// Lease duration that KWOK writes on node Leases; it renews every quarter of it.
    pub node_lease_duration_seconds: u32,
    /// kube-controller-manager's `--node-monitor-grace-period`: how long a node may go
    /// without a heartbeat before it is marked Ready=Unknown.
    pub node_monitor_grace_period: Duration,
    /// Start kube-scheduler (needed only for workloads that are not pinned to a node).
    pub scheduler: bool,
    /// Directory with the binaries; defaults to the cache that `install.sh` fills.
    pub tools_bin: Option<PathBuf>,
    /// Where logs are kept; a temporary directory under it holds the data.
    pub work_dir: PathBuf,
    /// Have the API server write an audit log ([`ControlPlane::audit_log`]) with the
    /// policy [`AUDIT_POLICY`].
    pub audit_log: bool,
}

impl Default for ControlPlaneConfig {
    fn default() -> Self {
        Self {
            node_lease_duration_seconds: 4,
            node_monitor_grace_period: Duration::from_secs(8),
            scheduler: true,
            tools_bin: None,
            work_dir: std::env::temp_dir().join("kube-failover-controlplane"),
            audit_log: false,
        }
    }
}

/// The audit policy of [`ControlPlaneConfig::audit_log`]: what an independent observer needs
/// to judge fencing, and nothing else. Deletes of pods and VolumeAttachments are logged with
/// their request (the DeleteOptions: `gracePeriodSeconds: 0` is a force delete) and who sent
/// them; writes to Nodes (not their status) with the request and the Node as stored after
/// it, so that whether a node carried a taint at any moment can be read from the log alone.
/// Writes of an instance's status are logged with who sent them and the answer only, to
/// count them.
pub const AUDIT_POLICY: &str = r#"apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Request
    verbs: ["delete", "deletecollection"]
    resources:
      - group: ""
        resources: ["pods"]
      - group: "storage.k8s.io"
        resources: ["volumeattachments"]
  - level: RequestResponse
    verbs: ["create", "update", "patch", "delete"]
    resources:
      - group: ""
        resources: ["nodes"]
  - level: Metadata
    verbs: ["update", "patch"]
    resources:
      - group: "kube-failover.io"
        resources: ["failoverclusterinstances/status"]
  - level: None
"#;

/// A running control plane. Dropping it stops every process it started.
pub struct ControlPlane {
    /// Behind a lock so that a shared control plane (`&'static`, see `harness`) can restart
    /// its API server.
    group: Mutex<ProcessGroup>,
    pgid: i32,
    /// Serialises API server restarts.
    restarting: tokio::sync::Mutex<()>,
    config: Config,
    admin_token: String,
    server: String,
    ca: PathBuf,
    dir: PathBuf,
    tools_bin: PathBuf,
    /// Time from the first process started to the API server ready and the controller
    /// manager running.
    pub startup: Duration,
    pub nodes: SimulatedNodes,
}

/// The directory of the pinned tool set built by `lab/tools/install.sh`.
pub fn default_tools_bin() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KUBE_FAILOVER_TOOLS_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let version = |key: &str| -> Result<&str> {
        VERSIONS_ENV
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
            .with_context(|| format!("{key} missing from lab/tools/versions.env"))
    };
    let cache = match std::env::var_os("KUBE_FAILOVER_TOOLS_CACHE") {
        Some(c) => PathBuf::from(c),
        None => PathBuf::from(std::env::var_os("HOME").context("HOME is not set")?)
            .join(".cache/kube-failover/tools"),
    };
    Ok(cache
        .join(format!(
            "set-{}-{}-{}-{}-{}",
            version("KUBERNETES_VERSION")?,
            version("ETCD_VERSION")?,
            version("KWOK_VERSION")?,
            version("HELM_VERSION")?,
            version("PROMETHEUS_VERSION")?
        ))
        .join("bin"))
}

impl ControlPlane {
    /// A new admin client (system:masters). Build one per async runtime: a client's
    /// connections belong to the runtime it was first used on.
    pub fn client(&self) -> Result<Client> {
        Ok(Client::try_from(self.config.clone())?)
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The API server's address on loopback.
    pub fn api_addr(&self) -> Result<std::net::SocketAddr> {
        let port = self
            .config
            .cluster_url
            .port_u16()
            .context("the API server's URL has no port")?;
        Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)))
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.join("kubeconfig")
    }

    pub fn logs_dir(&self) -> PathBuf {
        self.dir.join("logs")
    }

    pub fn tools_bin(&self) -> &Path {
        &self.tools_bin
    }

    /// Process IDs of the control-plane processes (for tests of the teardown).
    pub fn pids(&self) -> Vec<u32> {
        self.group().map(|g| g.pids()).unwrap_or_default()
    }

    /// The process group of the control plane. A process started in it (say a controller
    /// replica, `Command::process_group`) is killed by the watchdog with the rest, however
    /// this process ends.
    pub fn process_group_id(&self) -> i32 {
        self.pgid
    }

    fn group(&self) -> Result<MutexGuard<'_, ProcessGroup>> {
        self.group
            .lock()
            .map_err(|_| anyhow!("the control plane's process table is poisoned"))
    }

    /// The API server's audit log (JSON lines), written when the control plane was started
    /// with [`ControlPlaneConfig::audit_log`]; see [`AUDIT_POLICY`] for what it holds.
    pub fn audit_log(&self) -> PathBuf {
        self.logs_dir().join(AUDIT_LOG)
    }

    /// Stops kube-apiserver with SIGTERM (a graceful shutdown), starts it again with the
    /// same arguments on the same port, and returns once its `/readyz` answers `ok`. Its
    /// data (etcd), certificates and tokens are the same, so existing clients and
    /// kubeconfigs work again once it is back.
    pub async fn restart_apiserver(&self) -> Result<()> {
        self.restart_apiserver_with(Signal::SIGTERM).await
    }

    /// As [`Self::restart_apiserver`], but the API server is killed (SIGKILL): in-flight
    /// requests and watches are cut without an answer, as when its machine loses power.
    pub async fn kill_apiserver(&self) -> Result<()> {
        self.restart_apiserver_with(Signal::SIGKILL).await
    }

    async fn restart_apiserver_with(&self, signal: Signal) -> Result<()> {
        const NAME: &str = "kube-apiserver";
        let _one_at_a_time = self.restarting.lock().await;
        let child = self.group()?.take(NAME)?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        nix::sys::signal::kill(pid, signal).with_context(|| format!("{signal} to {NAME}"))?;
        // std's wait blocks: on a blocking thread, bounded; a graceful shutdown that hangs
        // is cut short.
        let mut exited = tokio::task::spawn_blocking(move || {
            let mut child = child;
            child.wait()
        });
        match tokio::time::timeout(Duration::from_secs(60), &mut exited).await {
            Ok(status) => {
                status??;
            }
            Err(_) => {
                let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
                exited.await??;
            }
        }
        self.group()?.respawn(NAME)?;
        let client = self.client()?;
        wait_ready(
            &client,
            || self.group()?.check_alive(),
            |what| match self.group() {
                Ok(g) => g.failure(what),
                Err(e) => e,
            },
            Duration::from_secs(120),
        )
        .await
        .context("kube-apiserver after a restart")
    }

    /// Writes a kubeconfig for this control plane that authenticates with `token` (say a
    /// ServiceAccount's, from the TokenRequest API) and returns its path.
    pub fn kubeconfig_with_token(&self, name: &str, token: &str) -> Result<PathBuf> {
        let path = self.dir.join(format!("kubeconfig-{name}"));
        std::fs::write(
            &path,
            kubeconfig_yaml(&self.server, &std::fs::read(&self.ca)?, token),
        )?;
        Ok(path)
    }

    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// A client authenticated as the ServiceAccount `namespace/name`, with a short-lived
    /// token issued by the API server's TokenRequest API, so that RBAC applies for real.
    pub async fn client_as_service_account(&self, namespace: &str, name: &str) -> Result<Client> {
        let admin = self.client()?;
        let sas: Api<ServiceAccount> = Api::namespaced(admin, namespace);
        let request: TokenRequest = serde_json::from_value(serde_json::json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {"expirationSeconds": 3600}
        }))?;
        let token = sas
            .create_token_request(name, &PostParams::default(), &request)
            .await
            .with_context(|| format!("TokenRequest for {namespace}/{name}"))?
            .status
            .context("TokenRequest has no status")?
            .token
            .context("TokenRequest returned no token")?;
        let mut config = self.config.clone();
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        Ok(Client::try_from(config)?)
    }

    /// Stops every process now (also done on drop and, failing that, by the watchdog).
    pub fn stop(&mut self) {
        self.group
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .stop();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

use serde::Deserialize;

use serde::Serialize;

/// A plain HTTP/1.1 GET on loopback (the controller's /metrics and probes): status code and
/// body.
pub async fn http_get(addr: std::net::SocketAddr, path: &str) -> Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await?;
    let code = buf
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = buf
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}
