//! The floor: the minimum writes of a failover, made by a plain client.

use anyhow::Result;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube_failover_core::api::FailoverClusterInstance;
use std::time::Instant;

use super::*;

/// The floor: for `k` instances, the minimum writes of a failover, as fast as the API server
/// takes them: withdraw the endpoint, record status, delete the pod, delete the volume
/// attachment, create the new pod, publish the endpoint.
pub(super) async fn floor(
    client: &Client,
    k: usize,
    live_node: &str,
    dead_node: &str,
) -> Result<f64> {
    let ns = "floor";
    crate::controlplane::ControlPlane::create_namespace_with(client, ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let vas: Api<VolumeAttachment> = Api::all(client.clone());
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), ns);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), ns);
    // Tolerating every taint: the dead node's (unreachable, and the out-of-service taint
    // of the controller's fence) would have its pods evicted and collected before the floor
    // deletes them.
    let pod = |name: String, node: &str| -> Result<Pod> {
        Ok(serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}],
                     "tolerations": [{"operator": "Exists"}]}
        }))?)
    };
    create_all(&pods, k, |i| pod(format!("f{i}-1"), dead_node)).await?;
    create_all(&vas, k, |i| {
        Ok(serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("floor-{i}")},
            "spec": {"attacher": "floor.invalid", "nodeName": dead_node,
                     "source": {"persistentVolumeName": format!("floor-pv-{i}")}}
        }))?)
    })
    .await?;
    create_all(&fcis, k, |i| {
        let mut f = crate::demo::instance(&format!("f{i}"), "floor-none", &[], None)?;
        f.metadata.namespace = Some(ns.into());
        f.spec.virtual_ips = vec![crate::demo::nth_vip(i)];
        Ok(f)
    })
    .await?;
    let ssa = PatchParams::apply("floor").force();
    let slice = |name: &str, ip: Option<&str>| {
        serde_json::json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": name, "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4",
            "endpoints": ip.map(|ip| vec![serde_json::json!({"addresses": [ip]})]).unwrap_or_default(),
        })
    };
    for i in 0..k {
        let name = format!("f{i}");
        slices
            .patch(&name, &ssa, &Patch::Apply(slice(&name, Some("10.1.0.1"))))
            .await?;
    }
    let started = Instant::now();
    futures::stream::iter(0..k)
        .map(|i| {
            let (pods, vas, slices, fcis, ssa) = (
                pods.clone(),
                vas.clone(),
                slices.clone(),
                fcis.clone(),
                ssa.clone(),
            );
            let name = format!("f{i}");
            let slice_empty = slice(&name, None);
            let slice_new = slice(&name, Some("10.1.0.2"));
            let new_pod = pod(format!("f{i}-2"), live_node);
            async move {
                slices
                    .patch(&name, &ssa, &Patch::Apply(slice_empty))
                    .await?;
                let status = serde_json::json!({"status": {"phase": "Moving"}});
                fcis.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await?;
                pods.delete(
                    &format!("{name}-1"),
                    &DeleteParams::default().grace_period(0),
                )
                .await?;
                vas.delete(&format!("floor-{i}"), &DeleteParams::default())
                    .await?;
                pods.create(&PostParams::default(), &new_pod?).await?;
                slices.patch(&name, &ssa, &Patch::Apply(slice_new)).await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(64)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}
