//! Carries out what `decide` asked for. Every action is idempotent: a round repeated after a
//! crash or by a new leader doubles nothing.

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IPAddress;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use super::error::{Error, Result, ignore_exists, ignore_gone, with_uid};
use super::events::Events;
use super::fence::{Begun, fence, request_workload_stop};
use super::own_writes::gone_for_good;
use super::per_node::PerNode;
use super::{Context, FIELD_MANAGER, build, network};
use kube_failover_core::api::{FailoverClusterInstance, INSTANCE_LABEL};
use kube_failover_core::decide::{self, Action};
use kube_failover_core::rules::controlled_by;

/// What a round read for its writes: when it began to observe (reads from then on are newer
/// than what it decided on); when it creates a pod, the instance's pods as listed from the
/// API server while its status write went out; when it fences, the fence begun then.
pub struct Reads {
    pub observed: std::time::Instant,
    pub pods: Option<Vec<Pod>>,
    pub fence: std::sync::Mutex<Option<Begun>>,
}

/// The pods labelled for the instance, from the API server.
pub async fn list_pods(fci: &FailoverClusterInstance, ctx: &Context) -> Result<Vec<Pod>> {
    let ns = fci.namespace().ok_or(Error::Missing("namespace"))?;
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{INSTANCE_LABEL}={}", fci.name_any());
    Ok(api
        .list(&ListParams::default().labels(&selector))
        .await?
        .items)
}

pub async fn execute(
    fci: &FailoverClusterInstance,
    action: &Action,
    ctx: &Context,
    reads: &Reads,
) -> Result<()> {
    let observed = reads.observed;
    let ns = fci.namespace().ok_or(Error::Missing("namespace"))?;
    let name = fci.name_any();
    let ssa = PatchParams::apply(FIELD_MANAGER).force();
    match action {
        Action::EnsureService => {
            let svc = build::service(fci);
            let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
            // The cache holds only Services labelled as ours: a Service of the same name
            // made by someone else is looked up before the (forced) apply, never taken over.
            let net = &fci.spec.network_name.name;
            if ctx
                .stores
                .services
                .get(&ObjectRef::new(net).within(&ns))
                .is_none()
                && let Some(existing) = api.get_opt(net).await?
                && !build::owned_by(&existing.metadata, fci)
            {
                return Err(Error::NetworkNameTaken(net.clone()));
            }
            api.patch(&fci.spec.network_name.name, &ssa, &Patch::Apply(&svc))
                .await?;
            let slice_ref = ObjectRef::new(&fci.spec.network_name.name).within(&ns);
            if ctx.stores.slices.get(&slice_ref).is_none() {
                set_endpoints(fci, &[], ctx).await?;
            }
        }
        Action::EnsureClaims => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
            for claim in build::claims(fci) {
                let claim_name = claim.name_any();
                if ctx
                    .stores
                    .claims
                    .get(&ObjectRef::new(&claim_name).within(&ns))
                    .is_none()
                {
                    ignore_exists(api.create(&PostParams::default(), &claim).await)?;
                }
            }
        }
        Action::SetEndpoints(addresses) => set_endpoints(fci, addresses, ctx).await?,
        Action::Fence { node, basis } => {
            let begun = reads
                .fence
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            fence(node, basis, begun, ctx).await?
        }
        Action::RequestWorkloadStop { node, basis } => {
            request_workload_stop(node, basis, ctx).await?
        }
        Action::DeletePod {
            name: pod,
            uid,
            force,
        } => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            // No grace period only on a node fenced now, read fresh: the round's view of
            // the node may be older than its unfencing. The pod's node is the cache's when
            // it has the pod of this UID bound: a binding never changes, and the delete is
            // conditioned on the UID.
            let fenced = if *force {
                let cached = ctx
                    .stores
                    .pods
                    .get(&ObjectRef::new(pod).within(&ns))
                    .filter(|p| p.uid().as_deref() == Some(uid.as_str()))
                    .and_then(|p| p.spec.as_ref()?.node_name.clone());
                let node = match cached {
                    Some(node) => Some(node),
                    None => api
                        .get_opt(pod)
                        .await?
                        .and_then(|p| p.spec.and_then(|s| s.node_name)),
                };
                match node {
                    Some(node) => ctx.fresh_nodes.fenced_now(&node, observed, ctx).await?,
                    None => false,
                }
            } else {
                false
            };
            if *force && !fenced {
                tracing::info!(
                    pod,
                    "its node is not fenced now: deleted with its grace period, not at once"
                );
            }
            let dp = if fenced {
                DeleteParams::default().grace_period(0)
            } else {
                DeleteParams::default()
            };
            let deleted = api.delete(pod, &with_uid(dp, uid)).await;
            if gone_for_good(&deleted, fenced) {
                ctx.stores.own.deleted(uid);
            }
            ignore_gone(deleted)?;
        }
        Action::DeleteAttachment { name: va, uid } => {
            let api: Api<VolumeAttachment> = Api::all(ctx.client.clone());
            // Only off a node fenced now, read fresh (see DeletePod). The attachment's node
            // is the cache's when it has the attachment of this UID: its spec never changes.
            let cached = ctx
                .stores
                .attachments
                .get(&ObjectRef::new(va))
                .filter(|a| a.uid().as_deref() == Some(uid.as_str()))
                .map(|a| a.spec.node_name.clone());
            let node = match cached {
                Some(node) => node,
                None => match api.get_opt(va).await? {
                    Some(attachment) => attachment.spec.node_name,
                    None => return Ok(()),
                },
            };
            if !ctx.fresh_nodes.fenced_now(&node, observed, ctx).await? {
                tracing::info!(
                    attachment = va.as_str(),
                    node = node.as_str(),
                    "its node is not fenced now: the attachment is left to the attach/detach \
                     controller"
                );
                return Ok(());
            }
            let dp = with_uid(DeleteParams::default(), uid);
            let deleted = api.delete(va, &dp).await;
            if gone_for_good(&deleted, true) {
                ctx.stores.own.deleted(uid);
            }
            ignore_gone(deleted)?;
        }
        Action::CreatePod { node, seq } => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            let pod = build::pod(fci, node, *seq);
            let pod_name = pod.name_any();
            // The API server's word, not the cache's: no other pod of the instance may exist.
            // Only the pods the instance controls count: one that merely carries its label
            // is anyone's, and must not hold a failover up.
            let listed_now;
            let existing = match &reads.pods {
                Some(listed) => listed,
                None => {
                    listed_now = list_pods(fci, ctx).await?;
                    &listed_now
                }
            };
            if let Some(other) = existing
                .iter()
                .find(|p| p.name_any() != pod_name && controlled_by(&p.metadata, fci))
            {
                tracing::info!(instance = %name, other = %other.name_any(), "not creating the pod: another pod of the instance still exists");
                return Ok(());
            }
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            };
            match api.create(&params, &pod).await {
                Ok(created) => ctx.stores.own.created_pod(&created),
                // The name is taken: by this pod (the round repeated), which is done, or by
                // a pod someone else made, which never counts as the instance's. The round
                // then fails and says so, rather than wait quietly for a pod that will never
                // be the instance's.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    if let Some(taken) = api.get_opt(&pod_name).await?
                        && !controlled_by(&taken.metadata, fci)
                    {
                        return Err(Error::PodNameTaken(pod_name));
                    }
                }
                other => ignore_exists(other)?,
            }
        }
        Action::ClaimAddresses(addresses) => {
            // The API server gives each address to one claimant: a second create fails with
            // AlreadyExists, and the next round names the holder.
            let api: Api<IPAddress> = Api::all(ctx.client.clone());
            for address in addresses {
                let claim = network::claim(fci, address);
                ignore_exists(api.create(&PostParams::default(), &claim).await)?;
            }
        }
        Action::ReleaseAddresses(addresses) => {
            let api: Api<IPAddress> = Api::all(ctx.client.clone());
            for c in network::claims_of(fci, &ctx.stores)
                .iter()
                .filter(|c| addresses.contains(&c.name_any()))
            {
                let uid = c.uid().unwrap_or_default();
                let dp = with_uid(DeleteParams::default(), &uid);
                ignore_gone(api.delete(&c.name_any(), &dp).await)?;
            }
        }
        Action::Event(ev) => publish_event(fci, ev, ctx.events.clone()),
    }
    Ok(())
}

/// Publishes an Event in the background: a slow events API must not slow a failover.
pub fn publish_event(fci: &FailoverClusterInstance, ev: &decide::Event, events: Events) {
    let reference: ObjectReference = fci.object_ref(&());
    let event = KubeEvent {
        type_: if ev.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: ev.reason.clone(),
        note: Some(ev.message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(e) = events.publish(&event, &reference).await {
            tracing::warn!(error = %e, "publishing an event failed");
        }
    });
}

pub async fn set_endpoints(
    fci: &FailoverClusterInstance,
    addresses: &[String],
    ctx: &Context,
) -> Result<()> {
    let ns = fci.namespace().ok_or(Error::Missing("namespace"))?;
    // The pod the addresses are the instance's own pod's: a pod that only carries its label
    // (on the host network, say, with its node's address) is never named as the endpoint.
    let pod = ctx
        .stores
        .pods_of(&ns, &fci.name_any())
        .into_iter()
        .find(|p| {
            controlled_by(&p.metadata, fci)
                && p.status
                    .as_ref()
                    .and_then(|s| s.pod_ip.as_ref())
                    .is_some_and(|ip| addresses.contains(ip))
        });
    let net = &fci.spec.network_name.name;
    let service = ctx.stores.services.get(&ObjectRef::new(net).within(&ns));
    let family = build::slice_family(fci, addresses, service.as_deref());
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    // The address type of a slice cannot change: one of the other family (made before the
    // first address was known) is replaced.
    if let Some(old) = ctx.stores.slices.get(&ObjectRef::new(net).within(&ns))
        && old.address_type != family
        && build::owned_by(&old.metadata, fci)
    {
        let dp = with_uid(DeleteParams::default(), &old.uid().unwrap_or_default());
        ignore_gone(api.delete(net, &dp).await)?;
    }
    // Never attached to a Service that is another's: the instance's pod would serve it.
    let attach = !ctx.service_taken(&fci.key());
    if let Some(slice) = ctx.stores.slices.get(&ObjectRef::new(net).within(&ns))
        && !build::owned_by(&slice.metadata, fci)
    {
        tracing::warn!(instance = %fci.key(), slice = %net, "an EndpointSlice of the network name's name is another's: not written");
        return Ok(());
    }
    let slice = build::endpoint_slice(fci, family, addresses, pod.as_deref(), attach);
    let applied = api
        .patch(
            &fci.spec.network_name.name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&slice),
        )
        .await?;
    ctx.stores.own.wrote_slice(applied);
    Ok(())
}

/// Whether nodes are fenced now, read from the API server before a pod or an attachment on
/// them is deleted without its grace period. A read serves every round that observed what it
/// decided on before the read began: it is as fresh to each of them as a read of its own
/// would be (the read is newer than the round's view, which is all the check asks), so the
/// moves of a failed node's instances, deleting at about the same moment, share one read
/// instead of reading the same Node once each. A round that observed after the last read
/// began reads again.
#[derive(Default)]
pub struct FreshNodes(PerNode<NodeRead>);

/// A read of a Node: when it began and whether it showed the node fenced.
#[derive(Clone, Copy)]
struct NodeRead {
    began: std::time::Instant,
    fenced: bool,
}

impl FreshNodes {
    /// Whether `node` is fenced now (tainted out of service, or gone), by a read from the
    /// API server that began after `observed` (when the asking round began to observe).
    async fn fenced_now(
        &self,
        node: &str,
        observed: std::time::Instant,
        ctx: &Context,
    ) -> Result<bool> {
        let slot = self.0.slot(node, |n| ctx.stores.node(n).is_some());
        // Rounds asking at once wait for one read, then each takes it if it is new enough.
        let mut last = slot.lock().await;
        if let Some(read) = *last
            && read.began >= observed
        {
            return Ok(read.fenced);
        }
        let began = std::time::Instant::now();
        let api: Api<k8s_openapi::api::core::v1::Node> = Api::all(ctx.client.clone());
        let fenced = api.get_opt(node).await?.is_none_or(|n| {
            n.spec.and_then(|s| s.taints).is_some_and(|ts| {
                ts.iter()
                    .any(|t| t.key == decide::health::OUT_OF_SERVICE_TAINT)
            })
        });
        *last = Some(NodeRead { began, fenced });
        Ok(fenced)
    }
}
