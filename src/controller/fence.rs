//! Fencing: the `node.kubernetes.io/out-of-service` taint that lets Kubernetes force-delete
//! a failed node's pods and detach its volumes.

use k8s_openapi::api::core::v1::{Node, Taint};
use kube::api::{Api, PostParams};

use super::error::Result;
use super::{Context, FIELD_MANAGER};
use crate::decide::health::OUT_OF_SERVICE_TAINT;

/// Adds the out-of-service taint, conditioned on the Node's resourceVersion.
pub async fn fence(node: &str, ctx: &Context) -> Result<()> {
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
    api.replace(
        node,
        &PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &n,
    )
    .await?;
    tracing::info!(node, "fenced: out-of-service taint added");
    Ok(())
}
