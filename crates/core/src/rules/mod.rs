//! The rules that judge the cluster's facts, shared by the controller (which acts on them)
//! and `kubectl failover validate` (which reports them): which nodes are members, which may
//! own an instance, which heartbeat counts and for how long, where a volume is pinned, which
//! virtual IPs and hostnames a namespace may use, which anti-affinity classes count between
//! two instances. One definition each, so that the report can never disagree with what the
//! controller does.

mod addresses;
mod classes;
mod dependencies;
mod heartbeats;
mod membership;
mod ownership;
mod volumes;

pub use addresses::{
    CLAIM_PARENT_GROUP, CLAIM_PARENT_RESOURCE, Reserved, VipVerdict, claim_holder, claimed_by,
    judge_hostname, judge_vip, pool_nets, pools_overlapping, reserved_from,
};
pub use classes::{NamespaceOf, neighbours, shared_class};
pub use dependencies::dependency_cycle;
pub use heartbeats::kubelet_lease_stale_seconds;
pub use membership::{CONTROL_PLANE_LABELS, is_member, owner_order};
pub use ownership::controlled_by;
pub use volumes::{describe_affinity, pinned_node, volume_reaches};
