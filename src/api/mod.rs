//! The `kube-failover.io/v1alpha1` API: `FailoverCluster` and `FailoverClusterInstance`.
//!
//! Every field has a documented default. What can be checked without looking at the
//! cluster is checked at admission, by the OpenAPI schema and CEL rules generated from
//! these types, so that a bad object is refused with a message rather than discovered by
//! the controller later.

mod cluster;
mod instance;

pub use cluster::*;
pub use instance::*;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

pub const GROUP: &str = "kube-failover.io";
pub const FINALIZER: &str = "kube-failover.io/cleanup";
/// Label on every object the controller creates for an instance: the instance's name.
pub const INSTANCE_LABEL: &str = "kube-failover.io/instance";

/// Condition types, shared by both kinds.
pub mod condition {
    /// The instance is online on a healthy owner with its endpoint published.
    pub const ONLINE: &str = "Online";
    /// The spec could be acted on (everything that admission cannot check, did check).
    pub const VALID: &str = "Valid";
    /// The cluster has enough healthy members to fail over automatically.
    pub const QUORUM: &str = "Quorum";
    /// A move is in progress.
    pub const MOVING: &str = "Moving";
}

/// Sets `cond` in `conditions`, keeping `lastTransitionTime` when the status is unchanged.
pub fn set_condition(conditions: &mut Vec<Condition>, cond: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == cond.type_) {
        Some(existing) if existing.status == cond.status => {
            existing.reason = cond.reason;
            existing.message = cond.message;
            existing.observed_generation = cond.observed_generation;
        }
        Some(existing) => *existing = cond,
        None => conditions.push(cond),
    }
}
