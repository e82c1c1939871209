//! Fencing: the `node.kubernetes.io/out-of-service` taint that lets Kubernetes force-delete
//! a failed node's pods and detach its volumes, and its removal once the node is back.
//!
//! The taint this controller adds goes with the annotation `kube-failover.io/fenced-at` in
//! the same write, so that it can tell its own taint from one a person or another fencer
//! added, and remove only its own.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;

use super::error::Result;
use super::heartbeats::renew_time;
use super::{Context, FIELD_MANAGER};
use kube_failover_core::decide::health::OUT_OF_SERVICE_TAINT;

use kube_failover_core::api::FENCED_AT_ANNOTATION;
use kube_failover_core::api::NODE_LEASE_NAMESPACE;

fn params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// Adds the out-of-service taint, conditioned on the Node's resourceVersion, unless the
/// API server shows a renewal of the node's Lease that the cache had not: a node that
/// heartbeats is never fenced.
pub async fn fence(node: &str, ctx: &Context) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), NODE_LEASE_NAMESPACE);
    if let Some(lease) = leases.get_opt(node).await? {
        let cached = ctx
            .stores
            .leases
            .get(&ObjectRef::new(node).within(NODE_LEASE_NAMESPACE))
            .and_then(|l| renew_time(&l));
        if renew_time(&lease) != cached {
            ctx.stores.heartbeats.observe_lease(&lease);
            tracing::info!(
                node,
                "not fencing: its Lease was renewed since the cache saw it"
            );
            return Ok(());
        }
    }
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut n = api.get(node).await?;
    let taints = n
        .spec
        .get_or_insert_with(Default::default)
        .taints
        .get_or_insert_with(Vec::new);
    if taints.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT) {
        return Ok(());
    }
    taints.push(Taint {
        key: OUT_OF_SERVICE_TAINT.into(),
        value: Some("nodeshutdown".into()),
        effect: "NoExecute".into(),
        time_added: None,
    });
    n.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(
            FENCED_AT_ANNOTATION.into(),
            ctx.stores.heartbeats.clock().now().to_string(),
        );
    api.replace(node, &params(), &n).await?;
    tracing::info!(node, "fenced: out-of-service taint added");
    Ok(())
}

/// Removes the out-of-service taint this controller added (and only that one), conditioned
/// on the Node's resourceVersion. Returns whether it removed it.
pub async fn unfence(node: &str, ctx: &Context) -> Result<bool> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut n = api.get(node).await?;
    let ours = n
        .metadata
        .annotations
        .as_mut()
        .and_then(|a| a.remove(FENCED_AT_ANNOTATION))
        .is_some();
    if !ours {
        return Ok(false);
    }
    if let Some(taints) = n.spec.as_mut().and_then(|s| s.taints.as_mut()) {
        taints.retain(|t| t.key != OUT_OF_SERVICE_TAINT);
    }
    api.replace(node, &params(), &n).await?;
    tracing::info!(node, "unfenced: out-of-service taint removed");
    Ok(true)
}
