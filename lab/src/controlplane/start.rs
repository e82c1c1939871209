//! Starting the control plane: its processes, its files, and the waits until it serves.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::Api;
use kube::runtime::wait::await_condition;
use kube::{Client, Config};

use super::*;

/// Keeps the logs of the `keep` most recent runs (data directories are removed by the
/// watchdog; logs are kept so that a failed run can be read).
pub(super) fn prune_old_runs(work_dir: &Path, keep: usize) {
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

pub(super) fn free_port() -> Result<u16> {
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
        check_tools(&tools_bin)?;
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
        let keys = Keys::write(&pki)?;

        let etcd_url = spawn_etcd(&mut group, &tools_bin, &data)?;
        let api_port = free_port()?;
        let cert_dir = pki.join("serving");
        let audit_args = audit_args(&cfg, &data, &logs)?;
        spawn_apiserver(
            &mut group, &tools_bin, &etcd_url, api_port, &cert_dir, &keys, audit_args,
        )?;

        let ca = cert_dir.join("apiserver.crt");
        let server = format!("https://127.0.0.1:{api_port}");
        let kubeconfig = dir.join("kubeconfig");
        wait_for_file(&ca, Duration::from_secs(60), &group).await?;
        std::fs::write(
            &kubeconfig,
            kubeconfig_yaml(&server, &std::fs::read(&ca)?, &keys.admin_token),
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

        spawn_controller_manager(&mut group, &tools_bin, &cfg, &kubeconfig, &keys, &ca)?;
        if cfg.scheduler {
            spawn_scheduler(&mut group, &tools_bin, &kubeconfig)?;
        }
        spawn_kwok(&mut group, &tools_bin, &cfg, &data, &kubeconfig)?;
        await_default_service_account(&client, &group).await?;

        let nodes = SimulatedNodes::new(config.clone());
        Ok(Self {
            pgid: group.pgid(),
            group: Mutex::new(group),
            restarting: tokio::sync::Mutex::new(()),
            config,
            admin_token: keys.admin_token,
            server,
            ca,
            dir,
            tools_bin,
            startup: started.elapsed(),
            nodes,
        })
    }
}

fn check_tools(tools_bin: &Path) -> Result<()> {
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
    Ok(())
}

/// The service-account signing key pair and the admin's static token.
struct Keys {
    sa_key: PathBuf,
    sa_pub: PathBuf,
    tokens: PathBuf,
    admin_token: String,
}

impl Keys {
    fn write(pki: &Path) -> Result<Self> {
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
        Ok(Self {
            sa_key,
            sa_pub,
            tokens,
            admin_token,
        })
    }
}

/// etcd on two free ports; returns its client URL.
fn spawn_etcd(group: &mut ProcessGroup, tools_bin: &Path, data: &Path) -> Result<String> {
    let etcd_port = free_port()?;
    let etcd_peer = free_port()?;
    let etcd_url = format!("http://127.0.0.1:{etcd_port}");
    group.spawn(
        "etcd",
        &tools_bin.join("etcd"),
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
    Ok(etcd_url)
}

/// The API server's audit flags, with its policy written, when an audit log is asked for.
fn audit_args(cfg: &ControlPlaneConfig, data: &Path, logs: &Path) -> Result<Vec<String>> {
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
    Ok(audit_args)
}

fn spawn_apiserver(
    group: &mut ProcessGroup,
    tools_bin: &Path,
    etcd_url: &str,
    api_port: u16,
    cert_dir: &Path,
    keys: &Keys,
    audit_args: Vec<String>,
) -> Result<()> {
    group.spawn(
        "kube-apiserver",
        &tools_bin.join("kube-apiserver"),
        &[
            format!("--etcd-servers={etcd_url}"),
            "--bind-address=127.0.0.1".into(),
            "--advertise-address=127.0.0.1".into(),
            format!("--secure-port={api_port}"),
            format!("--cert-dir={}", cert_dir.display()),
            format!("--token-auth-file={}", keys.tokens.display()),
            "--authorization-mode=RBAC".into(),
            format!("--service-account-key-file={}", keys.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                keys.sa_key.display()
            ),
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
    Ok(())
}

fn spawn_controller_manager(
    group: &mut ProcessGroup,
    tools_bin: &Path,
    cfg: &ControlPlaneConfig,
    kubeconfig: &Path,
    keys: &Keys,
    ca: &Path,
) -> Result<()> {
    let grace = cfg.node_monitor_grace_period.as_secs().max(1);
    group.spawn(
        "kube-controller-manager",
        &tools_bin.join("kube-controller-manager"),
        &[
            format!("--kubeconfig={}", kubeconfig.display()),
            format!("--authentication-kubeconfig={}", kubeconfig.display()),
            format!("--authorization-kubeconfig={}", kubeconfig.display()),
            format!(
                "--service-account-private-key-file={}",
                keys.sa_key.display()
            ),
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
    Ok(())
}

fn spawn_scheduler(group: &mut ProcessGroup, tools_bin: &Path, kubeconfig: &Path) -> Result<()> {
    group.spawn(
        "kube-scheduler",
        &tools_bin.join("kube-scheduler"),
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
    Ok(())
}

fn spawn_kwok(
    group: &mut ProcessGroup,
    tools_bin: &Path,
    cfg: &ControlPlaneConfig,
    data: &Path,
    kubeconfig: &Path,
) -> Result<()> {
    let kwok_config = data.join("kwok.yaml");
    std::fs::write(&kwok_config, kwok_stages(tools_bin)?)?;
    group.spawn(
        "kwok",
        &tools_bin.join("kwok"),
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
    Ok(())
}

/// The ServiceAccount controller creating `default` proves the controller manager
/// is running and talking to the API server.
async fn await_default_service_account(client: &Client, group: &ProcessGroup) -> Result<()> {
    let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(sa, "default", |sa: Option<&ServiceAccount>| sa.is_some()),
    )
    .await
    .map_err(|_| {
        group.failure("kube-controller-manager did not create the default ServiceAccount in 60 s")
    })??;
    Ok(())
}

/// The KWOK stages installed beside the binaries, as one multi-document config.
pub(super) fn kwok_stages(tools_bin: &Path) -> Result<String> {
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

pub(super) fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(std::process::id()) as u128;
    let b = RandomState::new().hash_one(Instant::now()) as u128;
    (a << 64) | b
}

pub(super) fn kubeconfig_yaml(server: &str, ca_pem: &[u8], token: &str) -> String {
    use std::fmt::Write;
    let ca_b64 = base64_encode(ca_pem);
    let mut s = String::new();
    let _ = write!(
        s,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: local\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca_b64}\nusers:\n- name: admin\n  user:\n    token: {token}\ncontexts:\n- name: local\n  context:\n    cluster: local\n    user: admin\n    namespace: default\ncurrent-context: local\n"
    );
    s
}

pub(super) fn base64_encode(data: &[u8]) -> String {
    k8s_openapi::ByteString(data.to_vec())
        .serialize(serde_json::value::Serializer)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

pub(super) async fn config_from_kubeconfig(path: &Path) -> Result<Config> {
    let kubeconfig = kube::config::Kubeconfig::read_from(path)?;
    Ok(Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?)
}

pub(super) async fn wait_for_file(
    path: &Path,
    timeout: Duration,
    group: &ProcessGroup,
) -> Result<()> {
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
pub(super) async fn wait_ready(
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
