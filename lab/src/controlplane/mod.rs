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

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config};

pub use attacher::play_csi_attacher;
pub use identity::{
    AGENT_NS, AGENT_SA, CONTROLLER_NS, CONTROLLER_SA, CONTROLLER_USER, agent_token,
    controller_token, create_if_absent, install_agent_identity, install_controller_identity,
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
            "set-{}-{}-{}-{}",
            version("KUBERNETES_VERSION")?,
            version("ETCD_VERSION")?,
            version("KWOK_VERSION")?,
            version("HELM_VERSION")?
        ))
        .join("bin"))
}

/// Keeps the logs of the `keep` most recent runs (data directories are removed by the
/// watchdog; logs are kept so that a failed run can be read).
fn prune_old_runs(work_dir: &Path, keep: usize) {
    let Ok(entries) = std::fs::read_dir(work_dir) else {
        return;
    };
    let mut runs: Vec<(std::time::SystemTime, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("run-"))
        .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
        .collect();
    runs.sort();
    let excess = runs.len().saturating_sub(keep);
    for (_, path) in runs.into_iter().take(excess) {
        let _ = std::fs::remove_dir_all(path);
    }
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl ControlPlane {
    /// Starts etcd, kube-apiserver, kube-controller-manager, optionally kube-scheduler, and
    /// the KWOK node simulator; returns once the API server is ready and the controller
    /// manager has created the `default` ServiceAccount (its controllers are running).
    pub async fn start(cfg: ControlPlaneConfig) -> Result<Self> {
        // Ports are picked free and released before the servers bind them; another
        // process can take one in between (tests start control planes in parallel).
        // Such a start fails fast with "address already in use": try again.
        let mut attempt = 1;
        loop {
            match Self::start_once(cfg.clone()).await {
                Err(e) if attempt < 4 && format!("{e:#}").contains("address already in use") => {
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    async fn start_once(cfg: ControlPlaneConfig) -> Result<Self> {
        let started = Instant::now();
        let tools_bin = match cfg.tools_bin.clone() {
            Some(b) => b,
            None => default_tools_bin()?,
        };
        for tool in [
            "etcd",
            "kube-apiserver",
            "kube-controller-manager",
            "kwok",
            "kubectl",
        ] {
            if !tools_bin.join(tool).is_file() {
                bail!(
                    "{} not found in {}: run lab/tools/install.sh first",
                    tool,
                    tools_bin.display()
                );
            }
        }
        std::fs::create_dir_all(&cfg.work_dir)?;
        prune_old_runs(&cfg.work_dir, 5);
        let dir = tempfile::Builder::new()
            .prefix("run-")
            .tempdir_in(&cfg.work_dir)?
            .keep();
        let data = dir.join("data");
        let logs = dir.join("logs");
        let pki = data.join("pki");
        std::fs::create_dir_all(&logs)?;
        std::fs::create_dir_all(&pki)?;
        let mut group = ProcessGroup::new(&data, &logs)?;

        // Service-account token signing key (ECDSA P-256, PKCS#8).
        let sa_key = pki.join("service-account.key");
        let sa_pub = pki.join("service-account.pub");
        let key_pair = rcgen::KeyPair::generate()?;
        std::fs::write(&sa_key, key_pair.serialize_pem())?;
        std::fs::write(&sa_pub, key_pair.public_key_pem())?;
        let admin_token = format!("{:032x}", rand_u128());
        let tokens = pki.join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{admin_token},kube-failover-admin,admin,\"system:masters\"\n"),
        )?;

        let etcd_port = free_port()?;
        let etcd_peer = free_port()?;
        let etcd_url = format!("http://127.0.0.1:{etcd_port}");
        let tool = |name: &str| tools_bin.join(name);
        group.spawn(
            "etcd",
            &tool("etcd"),
            &[
                "--name=controlplane".into(),
                format!("--data-dir={}", data.join("etcd").display()),
                format!("--listen-client-urls={etcd_url}"),
                format!("--advertise-client-urls={etcd_url}"),
                format!("--listen-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}"),
                format!("--initial-cluster=controlplane=http://127.0.0.1:{etcd_peer}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;

        let api_port = free_port()?;
        let cert_dir = pki.join("serving");
        let mut audit_args = Vec::new();
        if cfg.audit_log {
            let policy = data.join("audit-policy.yaml");
            std::fs::write(&policy, AUDIT_POLICY)?;
            audit_args = vec![
                format!("--audit-policy-file={}", policy.display()),
                format!("--audit-log-path={}", logs.join(AUDIT_LOG).display()),
                // Written before the response is sent, in the order requests complete.
                "--audit-log-mode=blocking".into(),
                "--audit-log-format=json".into(),
                "--audit-log-maxsize=0".into(),
            ];
        }
        group.spawn(
            "kube-apiserver",
            &tool("kube-apiserver"),
            &[
                format!("--etcd-servers={etcd_url}"),
                "--bind-address=127.0.0.1".into(),
                "--advertise-address=127.0.0.1".into(),
                format!("--secure-port={api_port}"),
                format!("--cert-dir={}", cert_dir.display()),
                format!("--token-auth-file={}", tokens.display()),
                "--authorization-mode=RBAC".into(),
                format!("--service-account-key-file={}", sa_pub.display()),
                format!("--service-account-signing-key-file={}", sa_key.display()),
                "--service-account-issuer=https://kubernetes.default.svc".into(),
                "--service-cluster-ip-range=10.96.0.0/16".into(),
                "--allow-privileged=true".into(),
                "--enable-priority-and-fairness=false".into(),
                // On SIGTERM, end the watches (clients re-watch elsewhere) instead of
                // waiting for them up to the 60 s request timeout.
                "--shutdown-watch-termination-grace-period=3s".into(),
                "--v=1".into(),
            ]
            .into_iter()
            .chain(audit_args)
            .collect::<Vec<_>>(),
        )?;

        let ca = cert_dir.join("apiserver.crt");
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        wait_for_file(&ca, Duration::from_secs(60), &group).await?;
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(&server, &std::fs::read(&ca)?, &admin_token),
        )?;
        let config = config_from_kubeconfig(&kubeconfig).await?;
        let client = Client::try_from(config.clone())?;
        wait_ready(
            &client,
            || group.check_alive(),
            |what| group.failure(what),
            Duration::from_secs(90),
        )
        .await?;

        let grace = cfg.node_monitor_grace_period.as_secs().max(1);
        group.spawn(
            "kube-controller-manager",
            &tool("kube-controller-manager"),
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                format!("--authentication-kubeconfig={}", kubeconfig.display()),
                format!("--authorization-kubeconfig={}", kubeconfig.display()),
                format!("--service-account-private-key-file={}", sa_key.display()),
                format!("--root-ca-file={}", ca.display()),
                "--leader-elect=false".into(),
                "--use-service-account-credentials=false".into(),
                "--controllers=*".into(),
                format!("--node-monitor-grace-period={grace}s"),
                "--node-monitor-period=1s".into(),
                // Client-side rate limits off, as kwokctl does: with thousands of objects
                // the default 20 QPS would make the attach/detach controller the bottleneck.
                "--kube-api-qps=5000".into(),
                "--kube-api-burst=10000".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={}", free_port()?),
                "--v=1".into(),
            ],
        )?;
        if cfg.scheduler {
            group.spawn(
                "kube-scheduler",
                &tool("kube-scheduler"),
                &[
                    format!("--kubeconfig={}", kubeconfig.display()),
                    format!("--authentication-kubeconfig={}", kubeconfig.display()),
                    format!("--authorization-kubeconfig={}", kubeconfig.display()),
                    "--leader-elect=false".into(),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={}", free_port()?),
                    "--kube-api-qps=5000".into(),
                    "--kube-api-burst=10000".into(),
                ],
            )?;
        }
        let kwok_config = data.join("kwok.yaml");
        std::fs::write(&kwok_config, kwok_stages(&tools_bin)?)?;
        group.spawn(
            "kwok",
            &tool("kwok"),
            &[
                format!("--kubeconfig={}", kubeconfig.display()),
                "--manage-all-nodes=false".into(),
                format!("--manage-nodes-with-label-selector={NODE_ALIVE_LABEL}=true"),
                format!(
                    "--node-lease-duration-seconds={}",
                    cfg.node_lease_duration_seconds
                ),
                format!("--server-address=127.0.0.1:{}", free_port()?),
                "--node-ip=127.0.0.1".into(),
                format!("--config={}", kwok_config.display()),
            ],
        )?;

        // The ServiceAccount controller creating `default` proves the controller manager
        // is running and talking to the API server.
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
        tokio::time::timeout(
            Duration::from_secs(60),
            await_condition(sa, "default", |sa: Option<&ServiceAccount>| sa.is_some()),
        )
        .await
        .map_err(|_| {
            group.failure(
                "kube-controller-manager did not create the default ServiceAccount in 60 s",
            )
        })??;

        let nodes = SimulatedNodes::new(config.clone());
        Ok(Self {
            pgid: group.pgid(),
            group: Mutex::new(group),
            restarting: tokio::sync::Mutex::new(()),
            config,
            admin_token,
            server,
            ca,
            dir,
            tools_bin,
            startup: started.elapsed(),
            nodes,
        })
    }

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

    /// Creates a namespace and waits until its `default` ServiceAccount exists, so that
    /// pods can be created in it at once.
    pub async fn create_namespace(&self, client: &Client, name: &str) -> Result<()> {
        Self::create_namespace_with(client, name).await
    }

    /// As `create_namespace`, for callers without the control plane at hand.
    pub async fn create_namespace_with(client: &Client, name: &str) -> Result<()> {
        let ns: Api<Namespace> = Api::all(client.clone());
        ns.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?,
        )
        .await?;
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(sa, "default", |sa: Option<&ServiceAccount>| sa.is_some()),
        )
        .await
        .context("the default ServiceAccount did not appear in 30 s")??;
        Ok(())
    }

    /// Applies every CRD in `dir` (YAML files) and waits until each is Established.
    pub async fn install_crds(&self, client: &Client, dir: &Path) -> Result<Vec<String>> {
        let mut files: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        let mut crds = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_yaml::Value::deserialize(doc)?;
                if value.is_null() {
                    continue;
                }
                crds.push(
                    serde_yaml::from_value::<CustomResourceDefinition>(value)
                        .with_context(|| format!("parsing {}", file.display()))?,
                );
            }
        }
        self.install_crd_objects(client, crds).await
    }

    /// Applies the controller's CRDs (as the binary renders them) and waits until each is
    /// Established.
    pub async fn install_kube_failover_crds(&self, client: &Client) -> Result<Vec<String>> {
        let crds = kube_failover_core::crd::all()
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        self.install_crd_objects(client, crds).await
    }

    /// Applies the CRDs and waits until each is Established.
    pub async fn install_crd_objects(
        &self,
        client: &Client,
        crds: Vec<CustomResourceDefinition>,
    ) -> Result<Vec<String>> {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut names = Vec::new();
        for crd in crds {
            let name = crd.metadata.name.clone().context("CRD without a name")?;
            api.patch(
                &name,
                &PatchParams::apply("kube-failover-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("applying CRD {name}"))?;
            names.push(name);
        }
        for name in &names {
            tokio::time::timeout(
                Duration::from_secs(30),
                await_condition(api.clone(), name, conditions::is_crd_established()),
            )
            .await
            .with_context(|| format!("CRD {name} not Established in 30 s"))??;
        }
        Ok(names)
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

/// The KWOK stages installed beside the binaries, as one multi-document config.
fn kwok_stages(tools_bin: &Path) -> Result<String> {
    let dir = tools_bin.join("kwok-stages");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("{}: run lab/tools/install.sh", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = String::new();
    for f in files {
        out.push_str("---\n");
        out.push_str(&std::fs::read_to_string(f)?);
    }
    Ok(out)
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(std::process::id()) as u128;
    let b = RandomState::new().hash_one(Instant::now()) as u128;
    (a << 64) | b
}

fn kubeconfig_yaml(server: &str, ca_pem: &[u8], token: &str) -> String {
    use std::fmt::Write;
    let ca_b64 = base64_encode(ca_pem);
    let mut s = String::new();
    let _ = write!(
        s,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_b64}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: admin\n    namespace: default\ncurrent-context: local\n"
    );
    s
}

fn base64_encode(data: &[u8]) -> String {
    k8s_openapi::ByteString(data.to_vec())
        .serialize(serde_json::value::Serializer)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

use serde::Serialize;

async fn config_from_kubeconfig(path: &Path) -> Result<Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)
}

async fn wait_for_file(path: &Path, timeout: Duration, group: &ProcessGroup) -> Result<()> {
    let deadline = Instant::now() + timeout;
    while !path.exists() {
        group.check_alive()?;
        if Instant::now() > deadline {
            return Err(group.failure(&format!("{} did not appear", path.display())));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Polls `/readyz`: before the server answers there is nothing to watch. `alive` fails when
/// a process of the group has exited; `failure` explains a timeout.
async fn wait_ready(
    client: &Client,
    alive: impl Fn() -> Result<()>,
    failure: impl Fn(&str) -> anyhow::Error,
    timeout: Duration,
) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let req = http::Request::get("/readyz").body(Vec::new())?;
        match client.request_text(req).await {
            Ok(body) if body.trim() == "ok" => return Ok(()),
            _ if Instant::now() > deadline => {
                return Err(failure("kube-apiserver not ready"));
            }
            _ => {
                alive()?;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

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
