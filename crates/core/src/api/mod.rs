//! The `kube-failover.io/v1alpha1` API: `FailoverCluster` and `FailoverClusterInstance`.
//!
//! Every field has a documented default. What can be checked without looking at the
//! cluster is checked at admission, by the OpenAPI schema and CEL rules generated from
//! these types, so that a bad object is refused with a message rather than discovered by
//! the controller later.

mod cluster;
mod conditions;
mod instance;
mod template;

pub use cluster::*;
pub use conditions::{condition, reason, set_condition};
pub use instance::*;
pub use template::PodTemplate;

pub const GROUP: &str = "kube-failover.io";
pub const FINALIZER: &str = "kube-failover.io/cleanup";
/// Label on every object the controller creates for an instance: the instance's name.
pub const INSTANCE_LABEL: &str = "kube-failover.io/instance";
/// Label on a claim the controller made from one of an instance's `storage.claimTemplates`:
/// the template's name. The only claims the controller may delete (its admission policy
/// refuses it any other).
pub const CLAIM_TEMPLATE_LABEL: &str = "kube-failover.io/claim-template";

/// A claim that an instance's pod mounts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceClaim {
    /// The PersistentVolumeClaim's name.
    pub claim: String,
    /// The name of the pod volume that mounts it: the claim's name for a claim the user
    /// brought, the template's name for a claim made from a template.
    pub volume: String,
    /// Made by the controller from `storage.claimTemplates` (and deleted with the instance).
    pub from_template: bool,
}

impl FailoverClusterInstance {
    /// `namespace/name`: how logs, status and reports name an instance.
    pub fn key(&self) -> String {
        format!(
            "{}/{}",
            kube::ResourceExt::namespace(self).unwrap_or_default(),
            kube::ResourceExt::name_any(self)
        )
    }

    /// The name of the claim the controller makes from the template `template`.
    pub fn template_claim_name(&self, template: &str) -> String {
        format!("{}-{template}", kube::ResourceExt::name_any(self))
    }

    /// Every claim the instance uses: the user's, then those made from templates.
    pub fn claims(&self) -> Vec<InstanceClaim> {
        let storage = &self.spec.storage;
        let brought = storage.claims.iter().map(|c| InstanceClaim {
            claim: c.clone(),
            volume: c.clone(),
            from_template: false,
        });
        let made = storage.claim_templates.iter().map(|t| InstanceClaim {
            claim: self.template_claim_name(&t.name),
            volume: t.name.clone(),
            from_template: true,
        });
        brought.chain(made).collect()
    }
}

/// Where every node's heartbeat Leases live: the kubelet's (named after the node) and the
/// node agent's ([`agent_lease_name`]).
pub const NODE_LEASE_NAMESPACE: &str = "kube-node-lease";

/// On a Node, the time the controller fenced it; the taint is the controller's to remove.
pub const FENCED_AT_ANNOTATION: &str = "kube-failover.io/fenced-at";

/// The node agent's heartbeat: a Lease in `kube-node-lease` per node, renewed every second.
pub fn agent_lease_name(node: &str) -> String {
    format!("{AGENT_LEASE_PREFIX}{node}")
}
pub const AGENT_LEASE_PREFIX: &str = "kube-failover-agent-";
/// The label on every agent Lease (the controller lists them by it).
pub const AGENT_LEASE_LABEL: (&str, &str) = ("app.kubernetes.io/name", "kube-failover-agent");
/// On a node agent's Lease: the instances (`namespace/name`) whose virtual IPs are up on its
/// node, or about to be (listed before an address comes up), as a JSON list of strings. The
/// controller grants an instance's virtual IPs to a new owner only once no other live agent
/// lists it.
pub const AGENT_HOLDS_ANNOTATION: &str = "kube-failover.io/holds-virtual-ips";
/// On a node agent's Lease (or on a Node, for another agent): the seconds (a decimal number,
/// fractions allowed) within which, counted from the start of its last successful renewal,
/// the agent has taken its virtual IPs down and stopped the node's instance workloads once
/// it cannot renew its Lease.
pub const SELF_FENCE_ANNOTATION: &str = "kube-failover.io/self-fence-seconds";
/// On a Node, set by the controller when the node's kubelet is silent while its agent
/// renews, before it fences the node: the kubelet Lease's `renewTime` as the controller read
/// it. The agent stops the instance workloads of its node when this names the kubelet
/// Lease's `renewTime` as the agent sees it (the kubelet has not been heard from since).
pub const STOP_WORKLOADS_ANNOTATION: &str = "kube-failover.io/stop-workloads";
/// On a node agent's Lease: the agent has stopped the instance workloads of its node, and
/// keeps them stopped, since the kubelet Lease's `renewTime` this names. The controller
/// fences a node whose kubelet is silent and whose agent renews only on this word, and only
/// while it names the kubelet Lease's current `renewTime`.
pub const WORKLOADS_STOPPED_ANNOTATION: &str = "kube-failover.io/workloads-stopped";
/// On a node agent's Lease: the peer groups the agent consults before it fences itself (a
/// JSON list of [`PeerGroup`]), as its last successful renewal said. An agent that cannot
/// renew asks its peers; it holds (does not fence itself) only when, in every group, so
/// many peers say they cannot reach the API server either that the group lacks its quorum.
/// The controller counts on such an agent's self-fence only when one of these groups has
/// kept its quorum of steadily renewing agents for the whole self-fence time
/// ([`crate::decide`]'s fence step).
pub const PEER_GROUPS_ANNOTATION: &str = "kube-failover.io/peer-groups";

/// On a node agent's Lease: where it answers its peers (`address:port`, UDP).
pub const PEER_ADDRESS_ANNOTATION: &str = "kube-failover.io/peer-address";

/// One FailoverCluster's votes as a node agent counts them when it asks its peers: the
/// voting members, the witness votes, and the quorum the cluster's status gave when the
/// agent last renewed.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PeerGroup {
    pub cluster: String,
    /// The voting members.
    pub members: Vec<String>,
    pub required: u32,
    /// Votes from outside the members (the cluster's witness), which an agent cannot ask:
    /// it counts them as reachable, so they never make it hold.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub witnesses: u32,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// How much more than its Lease's duration (`leaseDurationSeconds`) a peer agent must have
/// gone without a successful renewal before another agent counts it cut off from the API
/// server. The controller counts an agent as renewing steadily only while no two renewals it
/// saw were further apart than that duration; this allowance covers how much the delay of
/// its watch may vary between two renewals.
pub const PEER_CUT_OFF_ALLOWANCE_MILLISECONDS: u64 = 500;

/// On an instance, `"true"`: an operator took it offline (`kubectl failover stop`). Its pod
/// is stopped with its grace period; its claims, Service and name are kept.
pub const OFFLINE_ANNOTATION: &str = "kube-failover.io/offline";
/// Set on a Node by `kubectl failover drain` (with `spec.unschedulable`), to the time of the
/// drain; removed by `resume`. `kubectl failover status` and `update-run` read it.
pub const DRAINED_ANNOTATION: &str = "kube-failover.io/drained";
/// On a FailoverCluster: where `kubectl failover update-run` is (JSON: its hook, the nodes
/// done, the node in progress and its step), so that the run goes on after an
/// interruption; removed when the run completes.
pub const UPDATE_RUN_ANNOTATION: &str = "kube-failover.io/update-run";
/// On an instance: when an operator last asked for it to start (`kubectl failover start`,
/// an RFC 3339 time). Each new value is acted on once: a `Failed` instance has its failover
/// count reset and comes online; a `NoAutoStart` one is placed.
pub const START_ANNOTATION: &str = "kube-failover.io/start-requested";
/// On an instance: when an operator last asked for a planned move (`kubectl failover move`,
/// an RFC 3339 time), acted on once per value; the target is `kube-failover.io/move-to`, or
/// the next eligible owner by preference when that is absent.
pub const MOVE_ANNOTATION: &str = "kube-failover.io/move-requested";
/// The node a requested move goes to (see [`MOVE_ANNOTATION`]).
pub const MOVE_TO_ANNOTATION: &str = "kube-failover.io/move-to";
/// An agent brings a virtual IP up only if its consistent read of the grant and the write of
/// its Lease listing the instance both completed within this many milliseconds of starting;
/// the controller hands a revoked grant to another node no sooner than this plus a margin
/// after revoking it. Together: an agent that read a grant before it was revoked lists the
/// instance on its Lease before the controller looks for holders.
pub const GRANT_CONFIRM_MILLISECONDS: u64 = 500;
