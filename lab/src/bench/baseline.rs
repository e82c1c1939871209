//! The baselines: a StatefulSet and a Deployment with an RWO claim, on Kubernetes' defaults.

use crate::controlplane::ControlPlane;
use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Client;
use kube::api::{Api, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use std::time::{Duration, Instant};

use super::*;

/// A StatefulSet (one replica, RWO claim from a template) and a Deployment (RWO claim),
/// both kept to `nodes` and preferring the first; returns once both are Ready there (the
/// others cordoned meanwhile by the caller).
pub(super) async fn start_baselines(client: &Client, nodes: &[String]) -> Result<()> {
    let node = nodes[0].as_str();
    let ns = "baseline";
    ControlPlane::create_namespace_with(client, ns).await?;
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), ns);
    pvs.create(
        &PostParams::default(),
        &pv("baseline-sts", ns, "data-sts-0")?,
    )
    .await?;
    pvs.create(
        &PostParams::default(),
        &pv("baseline-deploy", ns, "deploy-data")?,
    )
    .await?;
    claims
        .create(
            &PostParams::default(),
            &pvc("deploy-data", "baseline-deploy")?,
        )
        .await?;
    let affinity = serde_json::json!({"nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
            {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": nodes}]}
        ]},
        "preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "preference": {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}}
    ]}});
    let container = serde_json::json!({"name": "db", "image": "registry.example/db:1", "volumeMounts": [{"name": "data", "mountPath": "/data"}]});
    let sts: StatefulSet = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "sts"},
        "spec": {
            "replicas": 1, "serviceName": "sts",
            "selector": {"matchLabels": {"app": "sts"}},
            "template": {"metadata": {"labels": {"app": "sts"}}, "spec": {"affinity": affinity, "containers": [container]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {
                "accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": "baseline-sts",
                "resources": {"requests": {"storage": "1Gi"}}}}],
        }
    }))?;
    Api::<StatefulSet>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sts)
        .await?;
    let deploy: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "deploy"},
        "spec": {
            "replicas": 1, "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"app": "deploy"}},
            "template": {"metadata": {"labels": {"app": "deploy"}}, "spec": {
                "affinity": affinity, "containers": [container],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "deploy-data"}}]}},
        }
    }))?;
    Api::<Deployment>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &deploy)
        .await?;
    for app in ["sts", "deploy"] {
        ready_pod_elsewhere(client, app, None, Duration::from_secs(120))
            .await?
            .with_context(|| format!("baseline {app} not Ready in 120 s"))?;
        let on = Api::<Pod>::namespaced(client.clone(), ns)
            .list(&kube::api::ListParams::default().labels(&format!("app={app}")))
            .await?
            .items
            .into_iter()
            .filter_map(|p| p.spec?.node_name)
            .collect::<Vec<_>>();
        if on != [node] {
            bail!("baseline {app} runs on {on:?}, not on {node}: it would measure nothing");
        }
    }
    Ok(())
}

/// Seconds until a Ready pod of `app` runs on a node other than `not_on` with its volume
/// attached there, within `bound`. The simulated nodes have no kubelet that would wait for
/// the attachment, so the attachment is checked here.
pub(super) async fn ready_pod_elsewhere(
    client: &Client,
    app: &str,
    not_on: Option<&str>,
    bound: Duration,
) -> Result<Option<f64>> {
    let volume = if app == "sts" {
        "baseline-sts"
    } else {
        "baseline-deploy"
    };
    let started = Instant::now();
    let (pod_store, pod_writer) = kube::runtime::reflector::store::<Pod>();
    let (va_store, va_writer) = kube::runtime::reflector::store::<VolumeAttachment>();
    let pods = watcher(
        Api::<Pod>::namespaced(client.clone(), "baseline"),
        watcher::Config::default().labels(&format!("app={app}")),
    )
    .default_backoff()
    .reflect(pod_writer)
    .map(|_| ());
    let vas = watcher(
        Api::<VolumeAttachment>::all(client.clone()),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(va_writer)
    .map(|_| ());
    let mut events = futures::stream::select(pods, vas).boxed();
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let running = pod_store.state().iter().any(|p| {
            let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
            let ready = p
                .status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
            let attached = va_store.state().iter().any(|v| {
                v.spec.source.persistent_volume_name.as_deref() == Some(volume)
                    && Some(&v.spec.node_name) == node.as_ref()
                    && v.status.as_ref().is_some_and(|s| s.attached)
            });
            ready
                && attached
                && node.as_deref() != not_on
                && p.metadata.deletion_timestamp.is_none()
        });
        if running {
            return Ok(Some(started.elapsed().as_secs_f64()));
        }
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(())) => {}
            Ok(None) => bail!("watch ended"),
            Err(_) => return Ok(None),
        }
    }
}
