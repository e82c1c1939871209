//! Fencing: the `node.kubernetes.io/out-of-service` taint that lets Kubernetes force-delete
//! a failed node's pods and detach its volumes, and its removal once the node is back.
//!
//! The taint this controller adds goes with the annotation `kube-failover.io/fenced-at` in
//! the same write, so that it can tell its own taint from one a person or another fencer
//! added, and remove only its own.

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Taint};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube::runtime::reflector::ObjectRef;

use super::error::Result;
use super::heartbeats::renew_time;
use super::{Context, FIELD_MANAGER};
use kube_failover_core::decide::HeartbeatBasis;
use kube_failover_core::decide::health::OUT_OF_SERVICE_TAINT;

use super::observe::workloads_stopped_since;
use super::own_writes::not_newer;
use super::per_node::PerNode;
use kube_failover_core::api::{
    FENCED_AT_ANNOTATION, NODE_LEASE_NAMESPACE, STOP_WORKLOADS_ANNOTATION, agent_lease_name,
};

fn params() -> PostParams {
    PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

/// The out-of-service taints this replica wrote, by node: one fence per failed node,
/// whatever the number of its instances. Their moves all ask for it at about the same
/// moment; the first writes the taint, the others wait on the node's lock and then find it
/// written for the same silence (`basis`) at a resourceVersion the cache has not gone past,
/// and write nothing: no read-modify-write of the same Node per instance, no
/// conflicts, no retries.
#[derive(Default)]
pub struct Fences(PerNode<Written>);

/// A taint in place: the silence it was decided on and the Node's resourceVersion that
/// carries it.
struct Written {
    basis: HeartbeatBasis,
    resource_version: String,
}

/// A fence begun before the status write that records the decision to fence: the node's
/// lock taken, and the three reads the checks need (see [`fence_checked`]) sent alongside
/// that write, one round trip instead of two. The taint still goes out only after the status
/// write is taken ([`fence`] runs in the round's actions), and the reads began after the
/// round observed, as they would after the write.
pub struct Begun {
    node: String,
    basis: HeartbeatBasis,
    guard: tokio::sync::OwnedMutexGuard<Option<Written>>,
    reads: Option<Result<Heartbeats>>,
}

/// The fresh reads of a fence: the kubelet's Lease, the agent's Lease, the Node.
type Heartbeats = (Option<Lease>, Option<Lease>, Node);

impl Begun {
    /// Begins the fence of `node` for `basis`, unless another round holds the node's lock
    /// (it fences, or has; this round then waits for it in [`fence`], as without a begun
    /// fence) or this replica has written the taint for the same silence already (nothing to
    /// read). Reads nothing yet: [`Begun::read`] does, alongside the status write.
    pub fn claim(node: &str, basis: &HeartbeatBasis, ctx: &Context) -> Option<Self> {
        let slot = ctx.fences.0.slot(node, |n| ctx.stores.node(n).is_some());
        let guard = slot.try_lock_owned().ok()?;
        if written_for(guard.as_ref(), basis, node, ctx) {
            return None;
        }
        Some(Self {
            node: node.into(),
            basis: basis.clone(),
            guard,
            reads: None,
        })
    }

    /// Sends the fence's reads.
    pub async fn read(&mut self, ctx: &Context) {
        self.reads = Some(read_heartbeats(&self.node, ctx).await);
    }

    /// Whether it is the fence `node`/`basis` asks for.
    fn is_for(&self, node: &str, basis: &HeartbeatBasis) -> bool {
        self.node == node && self.basis == *basis
    }
}

/// Whether this replica wrote the taint for the silence `basis` at a resourceVersion the
/// cache has not gone past.
fn written_for(
    written: Option<&Written>,
    basis: &HeartbeatBasis,
    node: &str,
    ctx: &Context,
) -> bool {
    let Some(w) = written.filter(|w| w.basis == *basis) else {
        return false;
    };
    ctx.stores
        .nodes
        .get(&ObjectRef::new(node))
        .is_some_and(|n| {
            not_newer(
                &n.resource_version().unwrap_or_default(),
                &w.resource_version,
            )
        })
}

/// Fences `node` for the silence `basis` once: see [`Fences`]. A taint this replica
/// wrote for the same silence, that the cache has not gone past, is not written again; a
/// cache past it that still asks for the taint (someone removed it since) gets the whole
/// check and write again. A write that loses to another writer of the Node is
/// tried again, from the checks, at once. `begun`: this round began the fence before its
/// status write (its first checks read what was read then).
pub async fn fence(
    node: &str,
    basis: &HeartbeatBasis,
    begun: Option<Begun>,
    ctx: &Context,
) -> Result<()> {
    const TRIES: usize = 3;
    let begun = begun.filter(|b| b.is_for(node, basis));
    let (mut written, mut first_reads) = match begun {
        Some(b) => (b.guard, b.reads),
        None => {
            let slot = ctx.fences.0.slot(node, |n| ctx.stores.node(n).is_some());
            let written = slot.lock_owned().await;
            if written_for(written.as_ref(), basis, node, ctx) {
                return Ok(());
            }
            (written, None)
        }
    };
    let mut tries = 0;
    loop {
        tries += 1;
        let reads = match first_reads.take() {
            Some(reads) => reads?,
            None => read_heartbeats(node, ctx).await?,
        };
        match fence_checked(node, basis, reads, ctx).await {
            Ok(in_place) => {
                *written = in_place.map(|resource_version| Written {
                    basis: basis.clone(),
                    resource_version,
                });
                return Ok(());
            }
            Err(e) if e.is_stale_write() && tries < TRIES => {
                tracing::debug!(node, error = %e, "the Node changed under the taint; checking again");
            }
            Err(e) => return Err(e),
        }
    }
}

/// The three reads of a fence, sent together (one round trip, not three).
async fn read_heartbeats(node: &str, ctx: &Context) -> Result<Heartbeats> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), NODE_LEASE_NAMESPACE);
    let api: Api<Node> = Api::all(ctx.client.clone());
    let agent_name = agent_lease_name(node);
    Ok(tokio::try_join!(
        leases.get_opt(node),
        leases.get_opt(&agent_name),
        api.get(node),
    )?)
}

/// Adds the out-of-service taint, conditioned on the Node's resourceVersion, unless the
/// API server shows the node's heartbeats other than the round that decided it saw them
/// (`basis`): a renewal of the kubelet's Lease since (a node that heartbeats is never
/// fenced), or an agent that renewed since without saying it stopped the node's instance
/// workloads since the kubelet's last renewal. The last check reads the same heartbeats
/// that detection used, from the API server, and compares them with what the decision was
/// made from, not with a cache that may have caught up since (a node cut off, back and cut
/// off again must not be fenced on a decision about its first silence).
///
/// Returns the Node's resourceVersion that carries the taint, or `None` when it is not to be
/// added. `reads`: the Leases and the Node, read after the round observed.
async fn fence_checked(
    node: &str,
    basis: &HeartbeatBasis,
    (kubelet, agent, mut n): Heartbeats,
    ctx: &Context,
) -> Result<Option<String>> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let agent_name = agent_lease_name(node);
    // The taint is written only after all three reads, conditioned on the Node's
    // resourceVersion as read.
    if !kubelet_as_seen(node, kubelet.as_ref(), basis, ctx) {
        return Ok(None);
    }
    let as_seen = match (&agent, basis.agent_seen) {
        (Some(a), Some(seen)) => ctx.stores.heartbeats.lease(&agent_name, renew_time(a)) == seen,
        (None, None) => true,
        _ => false,
    };
    let stopped = agent.as_ref().is_some_and(|a| {
        workloads_stopped_since(a).is_some_and(|t| Some(t) == kubelet.as_ref().and_then(renew_time))
    });
    if !as_seen && !stopped {
        tracing::info!(
            node,
            "not fencing: its agent renewed since the decision, and has not said it stopped \
             the instance workloads since the kubelet's last renewal"
        );
        return Ok(None);
    }
    let taints = n
        .spec
        .get_or_insert_with(Default::default)
        .taints
        .get_or_insert_with(Vec::new);
    if taints.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT) {
        let version = n.resource_version();
        ctx.stores.own.wrote_node(n);
        return Ok(version);
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
    let stored = api.replace(node, &params(), &n).await?;
    tracing::info!(node, "fenced: out-of-service taint added");
    let version = stored.resource_version();
    ctx.stores.own.wrote_node(stored);
    Ok(version)
}

/// Asks the agent of `node`, whose kubelet is silent while the agent renews, to stop the
/// instance workloads there: [`STOP_WORKLOADS_ANNOTATION`] on the Node names the kubelet
/// Lease's `renewTime` as the API server has it now, provided it is the renewal the round
/// saw (`basis`): a kubelet that renewed since is not silent, and its node's workloads are
/// not to be stopped. Written once per silence.
pub async fn request_workload_stop(
    node: &str,
    basis: &HeartbeatBasis,
    ctx: &Context,
) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), NODE_LEASE_NAMESPACE);
    let kubelet = leases.get_opt(node).await?;
    if !kubelet_as_seen(node, kubelet.as_ref(), basis, ctx) {
        return Ok(());
    }
    let Some(since) = kubelet.as_ref().and_then(renew_time) else {
        return Ok(());
    };
    let value = since.to_string();
    let asked = ctx
        .stores
        .nodes
        .get(&ObjectRef::new(node))
        .is_some_and(|n| n.annotations().get(STOP_WORKLOADS_ANNOTATION) == Some(&value));
    if asked {
        return Ok(());
    }
    // An update conditioned on the Node's resourceVersion, as for the taint (the admission
    // policy lets the controller change this annotation and the fencing marker only).
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut n = api.get(node).await?;
    n.metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(STOP_WORKLOADS_ANNOTATION.into(), value);
    let stored = api.replace(node, &params(), &n).await?;
    ctx.stores.own.wrote_node(stored);
    tracing::warn!(
        node,
        kubelet_last_renewed = %since,
        "the kubelet is silent but the node's agent renews: asked the agent to stop the \
         instance workloads there"
    );
    Ok(())
}

/// Whether the kubelet's Lease, read fresh, is as the round saw it (`basis`): its renewal
/// is the one the controller saw then. Logs why not.
fn kubelet_as_seen(
    node: &str,
    fresh: Option<&Lease>,
    basis: &HeartbeatBasis,
    ctx: &Context,
) -> bool {
    let seen = fresh.map(|l| ctx.stores.heartbeats.lease(node, renew_time(l)));
    if seen != basis.kubelet_seen {
        tracing::info!(
            node,
            "its kubelet's Lease is not as the decision saw it (renewed since): not acting on it"
        );
        return false;
    }
    true
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
        .and_then(|a| {
            a.remove(STOP_WORKLOADS_ANNOTATION);
            a.remove(FENCED_AT_ANNOTATION)
        })
        .is_some();
    if !ours {
        return Ok(false);
    }
    if let Some(taints) = n.spec.as_mut().and_then(|s| s.taints.as_mut()) {
        taints.retain(|t| t.key != OUT_OF_SERVICE_TAINT);
    }
    let stored = api.replace(node, &params(), &n).await?;
    ctx.stores.own.wrote_node(stored);
    tracing::info!(node, "unfenced: out-of-service taint removed");
    Ok(true)
}
