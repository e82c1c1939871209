//! What happens when an instance is deleted (the finalizer's cleanup).

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IPAddress;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams};
use kube::runtime::controller::Action as Requeue;

use super::actions::list_pods;
use super::error::{Error, Result, ignore_gone, ignore_missing, with_uid};
use super::{Context, build, network};
use kube_failover_core::api::{CLAIM_TEMPLATE_LABEL, FailoverClusterInstance};
use kube_failover_core::rules::controlled_by;

/// Deleting an instance removes what the controller created for it, and nothing else: the
/// pod, the Service and EndpointSlice of its network name, its address claims, and claims
/// made from its templates (those labelled as such: a claim made before the label existed is
/// left to the garbage collector, which deletes it through its owner reference). Claims the
/// user brought stay.
pub async fn cleanup(fci: &FailoverClusterInstance, ctx: &Context) -> Result<Requeue> {
    ctx.ensure_leader()?;
    let ns = fci.namespace().ok_or(Error::Missing("namespace"))?;
    let name = fci.name_any();
    ctx.foreign_pods.forget_instance(&format!("{ns}/{name}"));
    let owned = |meta: &kube::api::ObjectMeta| build::owned_by(meta, fci);
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    // Only the pods the instance controls: the label is anyone's to set.
    for p in list_pods(fci, ctx)
        .await?
        .iter()
        .filter(|p| controlled_by(&p.metadata, fci))
    {
        ignore_missing(pods.delete(&p.name_any(), &DeleteParams::default()).await)?;
    }
    let net = &fci.spec.network_name.name;
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(s) = slices.get_opt(net).await?
        && owned(&s.metadata)
    {
        ignore_missing(slices.delete(net, &DeleteParams::default()).await)?;
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(s) = services.get_opt(net).await?
        && owned(&s.metadata)
    {
        ignore_missing(services.delete(net, &DeleteParams::default()).await)?;
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for claim in fci.claims().into_iter().filter(|c| c.from_template) {
        let claim = claim.claim;
        if let Some(c) = claims.get_opt(&claim).await?
            && owned(&c.metadata)
            && c.labels().contains_key(CLAIM_TEMPLATE_LABEL)
        {
            ignore_missing(claims.delete(&claim, &DeleteParams::default()).await)?;
        }
    }
    // Its address claims, read from the API (one made a moment ago may not be cached yet).
    let addresses: Api<IPAddress> = Api::all(ctx.client.clone());
    let ours = ListParams::default().labels(&format!(
        "{}={}",
        network::MANAGED_BY_LABEL,
        network::MANAGED_BY
    ));
    for c in addresses
        .list(&ours)
        .await?
        .items
        .iter()
        .filter(|c| network::claimed_by(c, fci))
    {
        let dp = with_uid(DeleteParams::default(), &c.uid().unwrap_or_default());
        ignore_gone(addresses.delete(&c.name_any(), &dp).await)?;
    }
    Ok(Requeue::await_change())
}
