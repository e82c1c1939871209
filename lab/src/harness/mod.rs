//! The integration tests' harness, shared by the controller's tests and the lab's own: one
//! real control plane per test binary, one namespace per test, a dump of that namespace when
//! a test fails, controller replicas, and waits on watches.
//!
//! Test support: it panics with a message instead of returning errors.
#![allow(clippy::unwrap_used, clippy::missing_panics_doc)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

use kube::Client;
use kube::api::{Api, DynamicObject, ListParams};
use kube::discovery::{Discovery, Scope};

use crate::controlplane::{ControlPlane, ControlPlaneConfig};

mod instances;
pub use instances::{
    OUT_OF_SERVICE, create_db_online, create_instance, event_reasons, event_reasons_among, events,
    has_oos_taint, in_phase, is_online, moving, node_addresses, online_message, online_on,
    online_owner, online_reason, owner, patch_node, pod_uids, status, wait_each_instance,
};

static CONTROL_PLANE: OnceLock<Result<ControlPlane, String>> = OnceLock::new();
/// How the controller replicas of the tests authenticate: as the ServiceAccount of
/// `deploy/kube-failover.yaml`, with its RBAC and admission policies.
static CONTROLLER_CONFIG: OnceLock<kube::Config> = OnceLock::new();

/// Label of every test namespace; the clusters of `nodes_and_cluster` allow the namespaces
/// that carry it (`spec.allowedNamespaces.selector`).
pub const TENANT_LABEL: &str = "kube-failover.test/tenant";

/// The CRDs the tests install: the committed files under `crds/`, the same that ship.
pub fn crds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../crds")
}

/// Where a test binary keeps its control plane's logs: `target/tmp/controlplane` (the
/// directory Cargo names `CARGO_TARGET_TMPDIR`), found from the test binary's own path
/// (`target/<profile>/deps/<binary>`).
fn work_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.join("tmp")))
        .unwrap_or_else(std::env::temp_dir)
        .join("controlplane")
}

/// The control plane of this test binary, started on first use. It runs on a runtime of
/// its own thread because each `#[tokio::test]` has a runtime that ends with the test.
/// Its processes end with the test binary, whatever way that exits (see the watchdog in
/// `crate::controlplane`).
pub fn control_plane() -> &'static ControlPlane {
    let result = CONTROL_PLANE.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(async {
                let config = ControlPlaneConfig {
                    work_dir: work_dir(),
                    // Node writes and pod deletes: what tests count the controller's
                    // writes by (`ControlPlane::audit_log`).
                    audit_log: true,
                    ..Default::default()
                };
                let cp = ControlPlane::start(config).await?;
                let client = cp.client()?;
                cp.install_crds(&client, &crds_dir()).await?;
                crate::controlplane::install_controller_identity(&client).await?;
                let token = crate::controlplane::controller_token(&client, 6 * 3600).await?;
                let mut controller = cp.config().clone();
                controller.auth_info = kube::config::AuthInfo {
                    token: Some(token.into()),
                    ..Default::default()
                };
                let _ = CONTROLLER_CONFIG.set(controller);
                eprintln!(
                    "control plane ready in {:.1} s; logs in {}",
                    cp.startup.as_secs_f64(),
                    cp.logs_dir().display()
                );
                anyhow::Ok(cp)
            })
            .map_err(|e| format!("{e:#}"))
        })
        .join()
        .unwrap_or_else(|_| Err("the control plane thread panicked".into()))
    });
    match result {
        Ok(cp) => cp,
        Err(e) => panic!("control plane failed to start: {e}"),
    }
}

/// A namespace of one test. When the test panics, everything in it is written to the logs
/// directory of the control plane and the path is printed.
pub struct TestNamespace {
    pub name: String,
    pub client: Client,
    /// The kubelets' pod status sync for the pods of this namespace (see
    /// `crate::controlplane::kubelet`), ended with the test.
    _pod_status_sync: crate::controlplane::AbortOnDrop,
}

impl TestNamespace {
    pub async fn new(test: &str) -> Self {
        let cp = control_plane();
        let client = cp.client().expect("admin client");
        let name = format!("{test}-{:x}", std::process::id() & 0xffff);
        cp.create_namespace(&client, &name)
            .await
            .expect("create test namespace");
        allow_tenant(&client, &name).await;
        let _pod_status_sync = crate::controlplane::AbortOnDrop(tokio::spawn(
            crate::controlplane::resync_pod_readiness(client.clone(), name.clone()),
        ));
        Self {
            name,
            client,
            _pod_status_sync,
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        let cp = control_plane();
        let out = cp.logs_dir().join(format!("{}.dump.yaml", self.name));
        let name = self.name.clone();
        let config = cp.config().clone();
        // The test's runtime is unwinding; dump on a runtime of our own.
        let dumped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async { dump_namespace(Client::try_from(config)?, &name).await })
        })
        .join();
        match dumped {
            Ok(Ok(text)) => {
                let _ = std::fs::write(&out, text);
                eprintln!(
                    "namespace {} dumped to {}; server logs in {}",
                    self.name,
                    out.display(),
                    cp.logs_dir().display()
                );
            }
            _ => eprintln!("could not dump namespace {}", self.name),
        }
    }
}

async fn dump_namespace(client: Client, namespace: &str) -> anyhow::Result<String> {
    let discovery = Discovery::new(client.clone()).run().await?;
    let mut out = String::new();
    for group in discovery.groups() {
        for (ar, caps) in group.recommended_resources() {
            if !caps.supports_operation(kube::discovery::verbs::LIST) {
                continue;
            }
            let api: Api<DynamicObject> = match caps.scope {
                Scope::Namespaced => Api::namespaced_with(client.clone(), namespace, &ar),
                Scope::Cluster if ar.kind == "Node" || ar.group == "kube-failover.io" => {
                    Api::all_with(client.clone(), &ar)
                }
                Scope::Cluster => continue,
            };
            if let Ok(list) = api.list(&ListParams::default()).await {
                for mut obj in list.items {
                    obj.metadata.managed_fields = None;
                    out.push_str(&format!("--- # {}\n", ar.kind));
                    out.push_str(&serde_yaml::to_string(&obj).unwrap_or_default());
                }
            }
        }
    }
    Ok(out)
}

/// Awaits, through a watch, until the object `name` no longer exists.
pub async fn wait_gone<K>(api: Api<K>, name: &str, timeout: Duration, what: &str)
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    let gone = |o: Option<&K>| o.is_none();
    match tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api, name, gone),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("{what}: watch failed: {e}"),
        Err(_) => panic!("{what}: not within {timeout:?}"),
    }
}

/// Awaits `cond` on the object `name` through a watch, failing after `timeout` with `what`.
pub async fn wait_for<K, C>(api: Api<K>, name: &str, timeout: Duration, what: &str, cond: C) -> K
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    C: kube::runtime::wait::Condition<K>,
{
    match tokio::time::timeout(
        timeout,
        kube::runtime::wait::await_condition(api, name, cond),
    )
    .await
    {
        Ok(Ok(Some(obj))) => obj,
        Ok(Ok(None)) => panic!("{what}: {name} does not exist"),
        Ok(Err(e)) => panic!("{what}: watch failed: {e}"),
        Err(_) => panic!("{what}: not within {timeout:?}"),
    }
}

/// Labels the test namespace as a tenant of the tests' clusters, and lets the controller's
/// ServiceAccount elect a leader on the Lease `kube-failover-leader` there (what the chart
/// grants in the release namespace).
async fn allow_tenant(client: &Client, ns: &str) {
    use crate::controlplane::{CONTROLLER_NS, CONTROLLER_SA};
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
    use kube::api::{Patch, PatchParams, PostParams};
    Api::<Namespace>::all(client.clone())
        .patch(
            ns,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"labels": {TENANT_LABEL: "true"}}})),
        )
        .await
        .expect("labelling the test namespace");
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kube-failover-leader-election"},
        "rules": [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"],
             "resourceNames": ["kube-failover-leader"], "verbs": ["get", "update"]},
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]}
        ]
    }))
    .unwrap();
    Api::<Role>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("leader-election Role");
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "kube-failover-leader-election"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                    "name": "kube-failover-leader-election"},
        "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER_SA, "namespace": CONTROLLER_NS}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("leader-election RoleBinding");
}

/// How the tests' controller replicas authenticate (see `CONTROLLER_CONFIG`).
pub fn controller_config() -> kube::Config {
    control_plane();
    CONTROLLER_CONFIG
        .get()
        .cloned()
        .expect("the controller's identity is installed with the control plane")
}

/// One replica of the controller, on a runtime of its own: killing it ends every task it
/// has (watches, leader renewals) at once, as when its process dies.
pub struct Replica {
    rt: Option<tokio::runtime::Runtime>,
    pub identity: String,
}

impl Replica {
    /// Starts a replica that watches only `namespace`, as the controller's ServiceAccount
    /// (the RBAC and admission policies that ship apply). With `elect`, it takes part in
    /// leader election on a Lease in that namespace (3 s lease).
    pub fn start(namespace: &str, identity: &str, elect: bool) -> Self {
        Self::start_serving(namespace, identity, elect, None)
    }

    /// As `start`, serving /metrics, /healthz and /readyz on `metrics_addr`.
    pub fn start_serving(
        namespace: &str,
        identity: &str,
        elect: bool,
        metrics_addr: Option<std::net::SocketAddr>,
    ) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
        Self::start_with_client_config(
            controller_config(),
            Some(namespace),
            identity,
            elect.then_some(namespace),
            metrics_addr,
        )
    }

    pub fn kill(mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

/// Simulated nodes of one test: `{prefix}-0…`, labelled `{prefix}.test/member=true`, and a
/// FailoverCluster named `prefix` over them.
pub async fn nodes_and_cluster(
    client: &Client,
    prefix: &str,
    n: usize,
    cluster_spec: serde_json::Value,
) -> Vec<String> {
    use kube::api::PostParams;
    use kube_failover_core::api::FailoverCluster;
    let label = format!("{prefix}.test/member");
    let nodes = control_plane()
        .nodes
        .create(
            prefix,
            n,
            &std::collections::BTreeMap::from([(label.clone(), "true".to_string())]),
        )
        .await
        .expect("create nodes");
    let mut spec = serde_json::json!({
        "nodeSelector": {label: "true"},
        "allowedNamespaces": {"selector": {"matchLabels": {TENANT_LABEL: "true"}}},
        "heartbeat": {"leaseStaleSeconds": 3, "notReadySeconds": 3},
        // The documentation ranges, and the network-namespace lab's VIP range.
        "addressPools": [{"name": "test", "cidrs": [
            "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "10.213.0.192/27", "2001:db8::/64"
        ]}],
        "dnsZones": [{"zone": "example.com"}],
    });
    if let (Some(base), Some(extra)) = (spec.as_object_mut(), cluster_spec.as_object()) {
        for (k, v) in extra {
            base.insert(k.clone(), v.clone());
        }
    }
    let cluster: FailoverCluster = serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-failover.io/v1alpha1",
        "kind": "FailoverCluster",
        "metadata": {"name": prefix},
        "spec": spec,
    }))
    .expect("cluster");
    Api::<FailoverCluster>::all(client.clone())
        .create(&PostParams::default(), &cluster)
        .await
        .expect("create cluster");
    let node_api: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    for node in &nodes {
        wait_for(
            node_api.clone(),
            node,
            Duration::from_secs(60),
            "node Ready",
            |n: Option<&k8s_openapi::api::core::v1::Node>| {
                n.and_then(|n| n.status.as_ref()?.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            },
        )
        .await;
    }
    nodes
}

/// A free loopback address for a replica's HTTP endpoints.
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
}

pub use crate::controlplane::http_get;

/// The PID of the shared control plane's kube-apiserver (to stop and continue it).
pub fn apiserver_pid() -> nix::unistd::Pid {
    let pid = control_plane()
        .pids()
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "kube-apiserver")
        })
        .expect("a kube-apiserver process");
    nix::unistd::Pid::from_raw(i32::try_from(pid).expect("a PID"))
}

/// A token for the ServiceAccount `namespace/name` from the TokenRequest API (one hour).
pub async fn service_account_token(namespace: &str, name: &str) -> String {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let admin = control_plane().client().expect("admin client");
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": 3600}
    }))
    .unwrap();
    Api::<ServiceAccount>::namespaced(admin, namespace)
        .create_token_request(name, &Default::default(), &request)
        .await
        .unwrap_or_else(|e| panic!("TokenRequest for {namespace}/{name}: {e}"))
        .status
        .and_then(|s| s.token)
        .unwrap_or_else(|| panic!("TokenRequest for {namespace}/{name} returned no token"))
}

/// A client configuration that authenticates as the ServiceAccount `namespace/name`, so that
/// RBAC applies for real. A `Config`, not a `Client`: a client belongs to the runtime it is
/// first used on, and a replica runs on a runtime of its own.
pub async fn service_account_config(namespace: &str, name: &str) -> kube::Config {
    let token = service_account_token(namespace, name).await;
    let mut config = control_plane().config().clone();
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.into()),
        ..Default::default()
    };
    config
}

impl Replica {
    /// As `start`, but as whoever `config` authenticates (for example a ServiceAccount,
    /// see `service_account_config`), watching `watch_namespace` (all namespaces when
    /// `None`, as the deployed controller does) and, with `lease_namespace`, electing a
    /// leader on the Lease `kube-failover-leader` there (3 s lease).
    pub fn start_with_client_config(
        config: kube::Config,
        watch_namespace: Option<&str>,
        identity: &str,
        lease_namespace: Option<&str>,
        metrics_addr: Option<std::net::SocketAddr>,
    ) -> Self {
        use kube_failover_controller::{LeaderConfig, RunOptions};
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("replica runtime");
        let opts = RunOptions {
            namespace: watch_namespace.map(str::to_string),
            handle_signals: false,
            leader: lease_namespace.map(|ns| LeaderConfig {
                namespace: ns.to_string(),
                lease_name: "kube-failover-leader".into(),
                identity: identity.to_string(),
                lease_duration: Duration::from_secs(3),
                renew_every: Duration::from_secs(1),
            }),
            metrics_addr,
            identity: identity.to_string(),
            concurrent_reconciles: kube_failover_controller::DEFAULT_CONCURRENT_RECONCILES,
        };
        rt.spawn(async move {
            // As the binary runs it: the same client (HTTP/2), counting its requests.
            if let Err(e) = kube_failover_controller::run_with_config(config, opts).await {
                eprintln!("replica stopped: {e:#}");
            }
        });
        Self {
            rt: Some(rt),
            identity: identity.to_string(),
        }
    }
}

/// Creates instances `db-0` … `db-{n-1}` of `cluster` in `namespace`, spread over `nodes`
/// (each prefers the nodes in turn, starting one further along than the last).
pub async fn create_spread_instances(
    client: &Client,
    namespace: &str,
    cluster: &str,
    nodes: &[String],
    n: usize,
) {
    let fcis: Api<kube_failover_core::api::FailoverClusterInstance> =
        Api::namespaced(client.clone(), namespace);
    for i in 0..n {
        let mut preferred = nodes.to_vec();
        preferred.rotate_left(i % nodes.len());
        let mut fci = crate::demo::instance(&format!("db-{i}"), cluster, &preferred, None)
            .expect("an instance");
        fci.spec.virtual_ips = vec![instances::fresh_vip()];
        fcis.create(&kube::api::PostParams::default(), &fci)
            .await
            .expect("creating an instance");
    }
}
