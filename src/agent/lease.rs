//! The agent's heartbeat: its Lease in `kube-node-lease`, renewed every `--renew-ms`.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use super::{AgentArgs, Shared};
use crate::api::{AGENT_HOLDS_ANNOTATION, SELF_FENCE_ANNOTATION, agent_lease_name};

const NAMESPACE: &str = "kube-node-lease";

/// The Lease as this agent writes it, over `current` (which carries the resourceVersion that
/// makes the write conditional).
pub fn desired(
    current: Option<&Lease>,
    args: &AgentArgs,
    holds: &std::collections::BTreeSet<String>,
    now: jiff::Timestamp,
) -> Lease {
    let mut lease = current.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(agent_lease_name(&args.node)),
            namespace: Some(NAMESPACE.into()),
            labels: Some(
                [(
                    "app.kubernetes.io/name".into(),
                    "kube-failover-agent".into(),
                )]
                .into(),
            ),
            ..Default::default()
        },
        spec: None,
    });
    let annotations = lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(
        AGENT_HOLDS_ANNOTATION.into(),
        serde_json::to_string(holds).unwrap_or_else(|_| "[]".into()),
    );
    annotations.insert(
        SELF_FENCE_ANNOTATION.into(),
        args.announced_self_fence().to_string(),
    );
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(args.node.clone());
    spec.lease_duration_seconds = Some(i32::try_from(args.self_fence_seconds).unwrap_or(i32::MAX));
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// Renews the Lease every `--renew-ms`, and at once when what it says changed. A renewal that
/// takes longer than the interval is abandoned (and counts as not made).
pub(super) async fn renew(client: kube::Client, args: AgentArgs, shared: Arc<Shared>) {
    let api: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let name = agent_lease_name(&args.node);
    let mut current: Option<Lease> = None;
    let every = args.renew_every();
    let mut failing = false;
    loop {
        let started = Instant::now();
        let holds = shared
            .holds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let attempt = async {
            if current.is_none() {
                current = api.get_opt(&name).await?;
            }
            let lease = desired(current.as_ref(), &args, &holds, jiff::Timestamp::now());
            let written = if lease.metadata.resource_version.is_some() {
                api.replace(&name, &PostParams::default(), &lease).await
            } else {
                api.create(&PostParams::default(), &lease).await
            };
            anyhow::Ok(written)
        };
        match tokio::time::timeout(every, attempt).await {
            Ok(Ok(Ok(lease))) => {
                current = Some(lease);
                *shared.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
                if failing {
                    tracing::info!("heartbeat Lease renewed again");
                    failing = false;
                }
            }
            outcome => {
                // A conflict or any doubt: read the Lease again before the next write.
                current = None;
                if !failing {
                    let error = match outcome {
                        Ok(Ok(Err(e))) => e.to_string(),
                        Ok(Err(e)) => format!("{e:#}"),
                        _ => format!("no answer within {every:?}"),
                    };
                    tracing::warn!(%error, "heartbeat Lease not renewed");
                    failing = true;
                }
            }
        }
        let next = started + every;
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            () = shared.poke.notified() => {}
        }
    }
}
