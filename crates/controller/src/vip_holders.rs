//! Which nodes' agents may still have an instance's virtual IPs up: a move hands them to
//! the new owner only once none may.

use std::collections::BTreeSet;

use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube_failover_core::api::{AGENT_HOLDS_ANNOTATION, AGENT_LEASE_PREFIX, NODE_LEASE_NAMESPACE};
use kube_failover_core::decide::SELF_FENCE_MARGIN;
use kube_failover_core::decide::health::OUT_OF_SERVICE_TAINT;

use super::heartbeats::renew_time;
use super::observe::{Stores, node_health_of, self_fence_of};
use kube_failover_core::api::FailoverCluster;

/// The instances (`namespace/name`) a node agent's Lease says it holds the virtual IPs of.
pub fn agent_holds(lease: &Lease) -> Vec<String> {
    lease
        .annotations()
        .get(AGENT_HOLDS_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok())
        .unwrap_or_default()
}

/// Nodes whose agent may still have the virtual IPs of instance `key` (`namespace/name`) up:
/// its Lease lists the instance, and it cannot be trusted to have dropped them: the node
/// exists and is not out of service, and the agent is not known to have fenced itself. An
/// agent has fenced itself (taken its addresses down) once its Lease has been silent for its
/// self-fence time plus a margin *while its node is silent too* (its kubelet's Lease stale
/// for `cluster`'s threshold): an agent that went silent while its kubelet heartbeats has
/// crashed or is restarting, not fenced, and its addresses stay up until it is back and
/// lets them go, or its node is fenced. An agent without a self-fence time is trusted only
/// to have stopped with its node's deletion or fencing.
pub fn vip_holders(
    key: &str,
    stores: &Stores,
    cluster: Option<&FailoverCluster>,
    now: jiff::Timestamp,
) -> BTreeSet<String> {
    vip_holders_among(
        key,
        stores.leases.state().iter().map(|l| l.as_ref()),
        stores,
        cluster,
        now,
    )
}

/// [`vip_holders`] judged from `leases` (read fresh from the API server, say) rather than
/// the cache; nodes, fencing and the times Leases were seen still come from `stores`.
pub fn vip_holders_among<'a>(
    key: &str,
    leases: impl IntoIterator<Item = &'a Lease>,
    stores: &Stores,
    cluster: Option<&FailoverCluster>,
    now: jiff::Timestamp,
) -> BTreeSet<String> {
    let mut holders = BTreeSet::new();
    for lease in leases {
        let Some(node) = lease
            .name_any()
            .strip_prefix(AGENT_LEASE_PREFIX)
            .map(String::from)
        else {
            continue;
        };
        if lease.namespace().as_deref() != Some(NODE_LEASE_NAMESPACE)
            || !agent_holds(lease).iter().any(|k| k == key)
        {
            continue;
        }
        let Some(n) = stores.node(&node) else {
            continue;
        };
        let fenced = n
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT));
        if fenced {
            continue;
        }
        let seen = stores
            .heartbeats
            .lease(&lease.name_any(), renew_time(lease));
        let node_silent = cluster
            .and_then(|c| node_health_of(&node, c, stores, now))
            .is_some_and(|h| h.heartbeat_stale);
        let dropped_by_itself = node_silent
            && self_fence_of(lease.annotations())
                .is_some_and(|s| seen + s + SELF_FENCE_MARGIN <= now);
        if !dropped_by_itself {
            holders.insert(node);
        }
    }
    holders
}
