//! `kube-failover-lab demo`: a failover on a local control plane, step by step.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::CSIDriver;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::await_condition;
use kube::{Client, ResourceExt};

use crate::controlplane::{ControlPlane, ControlPlaneConfig, default_tools_bin};
use kube_failover_controller::{self as controller, RunOptions};
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance, Move, Phase};

/// The CSI driver the samples use; nothing serves it, the test rig plays its attacher.
pub const SIM_CSI_DRIVER: &str = "sim.csi.kube-failover.io";

/// A FailoverCluster over the nodes labelled `label=true`, for instances in `namespace`,
/// detecting a dead node after `lease_stale_seconds` without a Lease renewal.
pub fn cluster(
    name: &str,
    label: &str,
    namespace: &str,
    lease_stale_seconds: u32,
) -> Result<FailoverCluster> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-failover.io/v1alpha1",
        "kind": "FailoverCluster",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {label: "true"},
            "allowedNamespaces": {"names": [namespace]},
            "heartbeat": {"leaseStaleSeconds": lease_stale_seconds, "notReadySeconds": lease_stale_seconds},
            // The ranges the demo's virtual IPs come from (documentation ranges; see
            // [`nth_vip`]).
            "addressPools": [{"name": "demo", "cidrs": ["192.0.2.0/24", "2001:db8::/64"]}],
        }
    }))?)
}

/// The `i`-th of distinct virtual IPs in the demo cluster's pool (an address is served by
/// one instance only): 192.0.2.10 first, then on through that range, then IPv6.
pub fn nth_vip(i: usize) -> String {
    if i < 240 {
        format!("192.0.2.{}", 10 + i)
    } else {
        format!("2001:db8::{:x}", 0x1000 + i)
    }
}

/// An instance like a database: one RWO claim, one VIP (192.0.2.10; give each instance of
/// a cluster its own, [`nth_vip`]), a readiness probe.
pub fn instance(
    name: &str,
    cluster: &str,
    preferred: &[String],
    claim: Option<&str>,
) -> Result<FailoverClusterInstance> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-failover.io/v1alpha1",
        "kind": "FailoverClusterInstance",
        "metadata": {"name": name},
        "spec": {
            "clusterRef": cluster,
            "networkName": {"name": name, "ports": [{"name": "sql", "port": 1433}]},
            "virtualIPs": ["192.0.2.10"],
            "storage": {"claims": claim.into_iter().collect::<Vec<_>>()},
            "owners": {"preferred": preferred},
            "template": {"spec": {"containers": [{
                "name": "db",
                "image": "registry.example/db:1",
                "ports": [{"containerPort": 1433}],
                "readinessProbe": {"tcpSocket": {"port": 1433}},
                "volumeMounts": claim.iter().map(|c| serde_json::json!({"name": c, "mountPath": "/data"})).collect::<Vec<_>>(),
            }]}},
        }
    }))?)
}

/// A CSI volume (attach required) and a claim bound to it, in `namespace`: ReadWriteOnce.
pub async fn csi_claim(client: &Client, namespace: &str, name: &str) -> Result<()> {
    csi_claim_with_mode(client, namespace, name, "ReadWriteOnce").await
}

/// The simulated CSI driver's CSIDriver object (attach required), applied.
pub async fn sim_csi_driver(client: &Client) -> Result<()> {
    let drivers: Api<CSIDriver> = Api::all(client.clone());
    let driver: CSIDriver = serde_json::from_value(serde_json::json!({
        "metadata": {"name": SIM_CSI_DRIVER},
        "spec": {"attachRequired": true, "podInfoOnMount": false}
    }))?;
    drivers
        .patch(
            SIM_CSI_DRIVER,
            &PatchParams::apply("kube-failover-samples").force(),
            &Patch::Apply(&driver),
        )
        .await?;
    Ok(())
}

/// As [`csi_claim`], with the given access mode (`ReadWriteMany` for a shared volume).
pub async fn csi_claim_with_mode(
    client: &Client,
    namespace: &str,
    name: &str,
    mode: &str,
) -> Result<()> {
    csi_claim_in_zone(client, namespace, name, mode, None).await
}

/// As [`csi_claim_with_mode`], the volume usable only in `zone` when one is given (its node
/// affinity: `topology.kubernetes.io/zone In [zone]`, as a zonal disk's).
pub async fn csi_claim_in_zone(
    client: &Client,
    namespace: &str,
    name: &str,
    mode: &str,
    zone: Option<&str>,
) -> Result<()> {
    sim_csi_driver(client).await?;
    let pv_name = format!("{namespace}-{name}");
    let mut pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": [mode],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": namespace, "name": name},
            "csi": {"driver": SIM_CSI_DRIVER, "volumeHandle": pv_name},
        }
    }))?;
    if let (Some(zone), Some(spec)) = (zone, pv.spec.as_mut()) {
        spec.node_affinity = Some(serde_json::from_value(serde_json::json!({
            "required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": kube_failover_core::api::ZONE_LABEL, "operator": "In", "values": [zone]}]}]},
        }))?);
    }
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await?;
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": [mode],
            "storageClassName": "",
            "volumeName": pv_name,
            "resources": {"requests": {"storage": "1Gi"}},
        }
    }))?;
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), namespace)
        .create(&PostParams::default(), &pvc)
        .await?;
    Ok(())
}

/// Builds the control-plane tools when they are missing (the first run takes a while).
pub fn ensure_tools() -> Result<()> {
    let bin = default_tools_bin()?;
    if bin.join("kube-apiserver").is_file() && bin.join("kwok-stages").is_dir() {
        return Ok(());
    }
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/install.sh");
    eprintln!("control-plane tools missing: running {}", script.display());
    let status = std::process::Command::new("bash")
        .arg(&script)
        .stdout(std::process::Stdio::null())
        .status()
        .context("running install.sh")?;
    anyhow::ensure!(status.success(), "{} failed", script.display());
    Ok(())
}

fn ts(
    t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime,
    origin: jiff::Timestamp,
) -> String {
    format!("{:>+8.3} s", t.0.duration_since(origin).as_secs_f64())
}

pub async fn run() -> Result<()> {
    ensure_tools()?;
    println!(
        "Starting a local control plane (etcd, kube-apiserver, kube-controller-manager, KWOK)…"
    );
    let cp = ControlPlane::start(ControlPlaneConfig {
        scheduler: false,
        ..Default::default()
    })
    .await?;
    println!(
        "  ready in {:.1} s; kubeconfig: {}",
        cp.startup.as_secs_f64(),
        cp.kubeconfig().display()
    );
    let client = cp.client()?;
    cp.install_kube_failover_crds(&client).await?;

    let label = "demo.kube-failover.io/member";
    let nodes = cp
        .nodes
        .create(
            "node",
            3,
            &BTreeMap::from([(label.to_string(), "true".to_string())]),
        )
        .await?;
    println!("  3 simulated nodes: {}", nodes.join(", "));

    let ns = "demo";
    cp.create_namespace(&client, ns).await?;
    Api::<FailoverCluster>::all(client.clone())
        .create(&PostParams::default(), &cluster("demo", label, ns, 3)?)
        .await?;
    csi_claim(&client, ns, "sql-data").await?;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), ns);
    fcis.create(
        &PostParams::default(),
        &instance("sql", "demo", &nodes, Some("sql-data"))?,
    )
    .await?;
    println!(
        "Created FailoverCluster demo (Lease stale after 3 s) and instance demo/sql (VIP 192.0.2.10, claim sql-data)."
    );

    let ctrl_client = cp.client()?;
    let controller = tokio::spawn(controller::run(
        ctrl_client,
        RunOptions {
            namespace: Some("demo".into()),
            handle_signals: false,
            leader: None,
            metrics_addr: None,
            identity: "demo".into(),
            concurrent_reconciles: controller::DEFAULT_CONCURRENT_RECONCILES,
        },
    ));
    let attacher = tokio::spawn(crate::controlplane::play_csi_attacher(
        cp.client()?,
        SIM_CSI_DRIVER.into(),
    ));

    let online = |i: Option<&FailoverClusterInstance>| {
        i.and_then(|i| i.status.as_ref()).is_some_and(|s| {
            s.phase == Phase::Online
                && s.current_move.is_none()
                && s.served.as_ref().is_some_and(|v| v.endpoint.is_some())
        })
    };
    let first = tokio::time::timeout(
        Duration::from_secs(60),
        await_condition(fcis.clone(), "sql", online),
    )
    .await
    .context("instance not online within 60 s")??
    .context("instance vanished")?;
    let owner = first
        .status
        .as_ref()
        .and_then(|s| s.owner_node.clone())
        .context("no owner")?;
    println!("\nOnline on {owner}:");
    print_instance(&first);

    println!("\nKilling {owner} (its heartbeats stop now)…");
    let killed = jiff::Timestamp::now();
    cp.nodes.kill(&owner).await?;
    let moved = tokio::time::timeout(
        Duration::from_secs(120),
        await_condition(
            fcis.clone(),
            "sql",
            move |i: Option<&FailoverClusterInstance>| {
                online(i)
                    && i.and_then(|i| i.status.as_ref())
                        .is_some_and(|s| s.history.iter().any(|m| m.from.is_some()))
            },
        ),
    )
    .await
    .context("no failover within 120 s")??
    .context("instance vanished")?;
    let status = moved.status.clone().unwrap_or_default();
    let m: &Move = status
        .history
        .iter()
        .rev()
        .find(|m| m.from.is_some())
        .context("no failover recorded")?;
    println!("\nFailover timeline (seconds after the heartbeats stopped):");
    println!("  {:>+8.3} s  heartbeats of {owner} stop", 0.0);
    println!(
        "  {}  controller declares {owner} down and starts the move ({})",
        ts(&m.started, killed),
        m.reason
    );
    for (label, t) in [
        (
            "endpoint withdrawn from the EndpointSlice",
            &m.endpoint_withdrawn,
        ),
        ("old owner fenced (out-of-service taint)", &m.fenced),
        ("old pod gone from the API", &m.old_pod_gone),
        (
            "volume attachments of the old owner gone",
            &m.volumes_detached,
        ),
        ("new pod created", &m.pod_created),
        ("new pod ready, endpoint published: online", &m.online),
    ] {
        if let Some(t) = t {
            println!("  {}  {label}", ts(t, killed));
        }
    }
    let detection = m.started.0.duration_since(killed).as_secs_f64();
    let total = m
        .online
        .as_ref()
        .map(|o| o.0.duration_since(killed).as_secs_f64())
        .unwrap_or(f64::NAN);
    println!(
        "\nDetection {detection:.3} s (threshold 3 s), controller's reaction {:.3} s, total {total:.3} s.",
        total - detection
    );
    println!("\nOnline again:");
    print_instance(&moved);
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    for p in pods.list(&Default::default()).await?.items {
        println!(
            "  pod {} on {}",
            p.name_any(),
            p.spec.and_then(|s| s.node_name).unwrap_or_default()
        );
    }
    controller.abort();
    attacher.abort();
    Ok(())
}

fn print_instance(i: &FailoverClusterInstance) {
    let s = i.status.clone().unwrap_or_default();
    let served = s.served.unwrap_or_default();
    println!("  NAME  OWNER       PHASE    VIP          ENDPOINT     FAILOVERS");
    println!(
        "  {:<5} {:<11} {:<8} {:<12} {:<12} {}",
        i.name_any(),
        s.owner_node.unwrap_or_default(),
        format!("{:?}", s.phase),
        served.virtual_ips.first().cloned().unwrap_or_default(),
        served.endpoint.unwrap_or_default(),
        s.failover_count
    );
}
