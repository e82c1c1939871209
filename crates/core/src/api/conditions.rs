//! Condition types and the reasons that conditions, Events and move records carry: the
//! words users see in `kubectl describe` and alert on, in one place.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

/// Condition types, shared by both kinds.
pub mod condition {
    /// The instance is online on a healthy owner with its endpoint published.
    pub const ONLINE: &str = "Online";
    /// The spec could be acted on (everything that admission cannot check, did check).
    pub const VALID: &str = "Valid";
    /// The cluster has enough healthy members to fail over automatically.
    pub const QUORUM: &str = "Quorum";
    /// On a FailoverCluster: every instance that names it is in a namespace it allows.
    pub const TENANCY: &str = "Tenancy";
    /// On a FailoverCluster: the controller sees the nodes' heartbeats (the API server
    /// answers and the Lease watch delivers). While False no node counts as silent, so
    /// nothing fails over.
    pub const HEARTBEATS_SEEN: &str = "HeartbeatsSeen";
    /// A move is in progress.
    pub const MOVING: &str = "Moving";
    /// The network name is served as declared: its Service, its virtual IPs (each in a pool
    /// the namespace may use and claimed for this instance alone) and its external hostname
    /// (in a zone the namespace may use). False says what is withheld and why; the workload
    /// runs and fails over either way.
    pub const NETWORK_NAME: &str = "NetworkName";
    /// On a FailoverCluster: no address pool overlaps the cluster's own addresses (nodes'
    /// addresses, pod ranges, Service ranges). Those addresses are never served whatever
    /// the pools say; False names the pools to narrow.
    pub const ADDRESS_POOLS: &str = "AddressPools";
    /// On a FailoverCluster: should any one member fail, every instance serving on it
    /// would have a place to go (the controller asks its own decisions, as `kubectl
    /// failover simulate` does). False names the instances that would be held, and why.
    pub const RESILIENT: &str = "Resilient";
}

/// Reasons of conditions and Events, and why a move started.
pub mod reason {
    // HeartbeatsSeen
    /// The API server is ready and the Lease watch delivers.
    pub const HEARTBEATS_IN_SIGHT: &str = "HeartbeatsInSight";
    /// The API server is not ready, the Lease watch fails, or no Lease arrives from any
    /// node: heartbeats may be arriving unseen, so no node counts as silent.
    pub const HEARTBEATS_OUT_OF_SIGHT: &str = "HeartbeatsOutOfSight";
    // NetworkName
    /// Everything declared of the network name is served.
    pub const NETWORK_NAME_SERVED: &str = "Served";
    /// A virtual IP lies in no address pool that the namespace may use.
    pub const VIRTUAL_IP_NOT_ALLOWED: &str = "VirtualIPNotAllowed";
    /// A virtual IP is one of the cluster's own addresses (a node's, a Service or pod
    /// range's) or a special-purpose one.
    pub const VIRTUAL_IP_RESERVED: &str = "VirtualIPReserved";
    /// A virtual IP is claimed by another instance or by a Service.
    pub const VIRTUAL_IP_IN_USE: &str = "VirtualIPInUse";
    /// A virtual IP is being claimed for this instance.
    pub const VIRTUAL_IP_CLAIMING: &str = "VirtualIPClaiming";
    /// The external hostname lies in no DNS zone that the namespace may use.
    pub const HOSTNAME_NOT_ALLOWED: &str = "HostnameNotAllowed";
    /// The Service of the network name could not be written.
    pub const SERVICE_NOT_WRITTEN: &str = "ServiceNotWritten";
    // AddressPools
    /// No pool overlaps the cluster's own addresses.
    pub const POOLS_CLEAR: &str = "PoolsClear";
    /// A pool overlaps the cluster's own addresses (which are withheld all the same).
    pub const POOL_OVERLAPS_CLUSTER: &str = "PoolOverlapsCluster";
    // Valid
    /// The spec was accepted.
    pub const VALID: &str = "Valid";
    /// `spec.clusterRef` names no FailoverCluster.
    pub const CLUSTER_NOT_FOUND: &str = "ClusterNotFound";
    /// The pod template runs no container.
    pub const NO_CONTAINERS: &str = "NoContainers";
    /// A Service of the network name's name exists that the instance did not create.
    pub const NETWORK_NAME_TAKEN: &str = "NetworkNameTaken";
    /// The cluster does not allow the instance's namespace (`spec.allowedNamespaces`).
    pub const NAMESPACE_NOT_ALLOWED: &str = "NamespaceNotAllowed";
    /// On a FailoverCluster: no instance that names it is held for its namespace.
    pub const ALL_NAMESPACES_ALLOWED: &str = "AllNamespacesAllowed";

    // Quorum (on instances and clusters)
    pub const QUORUM_HELD: &str = "QuorumHeld";
    /// Too few member nodes are up: nothing fails over automatically.
    pub const QUORUM_LOST: &str = "QuorumLost";
    /// The old owner's agent may be holding (not fencing itself) because its peers said they
    /// cannot reach the API server either, and too few of them have renewed steadily since
    /// for its self-fence to be counted on.
    pub const PEERS_CUT_OFF: &str = "PeersCutOff";
    /// An Event on the cluster when the quorum comes back.
    pub const QUORUM_REGAINED: &str = "QuorumRegained";
    // Resilient
    /// Every instance would have a place should any one member fail.
    pub const RESILIENT: &str = "Resilient";
    /// Some instance would be held should some one member fail.
    pub const NOT_RESILIENT: &str = "NotResilient";

    // Online, while steady
    pub const ONLINE: &str = "Online";
    /// Priority `NoAutoStart`: left offline until a person starts it.
    pub const NO_AUTO_START: &str = "NoAutoStart";
    /// A claim the user named does not exist yet.
    pub const CLAIMS_MISSING: &str = "ClaimsMissing";
    /// No preferred or possible owner node is up.
    pub const NO_ELIGIBLE_OWNER: &str = "NoEligibleOwner";
    /// The owner failed and a claim's volume is reachable from that node only.
    pub const VOLUME_PINNED_TO_NODE: &str = "VolumePinnedToNode";
    /// Too many failovers within the failover period: left Failed.
    pub const FAILOVER_THRESHOLD_EXCEEDED: &str = "FailoverThresholdExceeded";
    /// The pod of the instance is gone while its node is healthy: started again.
    pub const POD_MISSING: &str = "PodMissing";
    /// The pod is not ready: its endpoint is withdrawn.
    pub const NOT_READY: &str = "NotReady";
    /// An operator took it offline (`kube-failover.io/offline`): its pod is being stopped.
    pub const STOPPING: &str = "Stopping";
    /// An operator took it offline (`kube-failover.io/offline`); its claims, Service and
    /// name are kept.
    pub const STOPPED: &str = "Stopped";
    /// An Event: an operator asked for it to start (`kube-failover.io/start-requested`).
    pub const START_REQUESTED: &str = "StartRequested";

    // Events and move reasons
    /// A move that brings a new instance online.
    pub const PLACEMENT: &str = "Placement";
    /// A failover (the move's reason is `NodeDown: <why the node is down>`).
    pub const NODE_DOWN: &str = "NodeDown";
    pub const FAILOVER_STARTED: &str = "FailoverStarted";
    /// The pod failed on a healthy node and is restarted in place.
    pub const RESTARTING: &str = "Restarting";
    /// The pod failed `restart.threshold` times within the period: the instance moves.
    pub const RESTART_THRESHOLD_EXCEEDED: &str = "RestartThresholdExceeded";
    /// A more preferred owner is up again and the failback policy allows moving back.
    pub const FAILBACK: &str = "Failback";
    /// Its owner also hosts an instance of one of its anti-affinity classes that ranks
    /// above it, and a free node is up: the instance moves there.
    pub const ANTI_AFFINITY: &str = "AntiAffinity";
    /// A move an operator asked for (`kube-failover.io/move-requested`).
    pub const MOVE_REQUESTED: &str = "MoveRequested";
    /// An Event: a requested move was refused (the instance is not online, or the target
    /// cannot take it), and why.
    pub const MOVE_REFUSED: &str = "MoveRefused";
    pub const FENCED: &str = "Fenced";
    /// The new owner failed before the instance came online there.
    pub const NEW_OWNER_FAILED: &str = "NewOwnerFailed";
    /// The old owner's heartbeats came back before it was fenced: the failover is called
    /// off and the instance stays on it.
    pub const MOVE_ABANDONED: &str = "MoveAbandoned";
    /// Fencing mode `None`: the old owner is not fenced.
    pub const NOT_FENCED: &str = "NotFenced";
    /// The controller removed the out-of-service taint it had added to a node that has
    /// been healthy for `fencing.unfenceAfterSeconds`.
    pub const UNFENCED: &str = "Unfenced";
    /// A graceful move off an owner that is still running (it left the cluster, its
    /// kubelet reports NotReady, or its workload restarted too often).
    pub const PLANNED_MOVE: &str = "PlannedMove";
    /// A planned move is due but no other node may take the instance: it stays.
    pub const NO_TARGET: &str = "NoTarget";
    /// The instance is online on its new owner after a move.
    pub const MOVED_ONLINE: &str = "MovedOnline";
    /// A Warning Event, once per pod: a pod carries the instance's label but is not
    /// controlled by the instance (no owner reference to it with `controller: true`). The
    /// controller ignores it: never counted as the instance's pod, deleted, adopted or
    /// waited for (`rules::controlled_by`).
    pub const FOREIGN_POD_IGNORED: &str = "ForeignPodIgnored";

    // Online, while a move waits for a step
    pub const WITHDRAWING_ENDPOINT: &str = "WithdrawingEndpoint";
    /// Fencing mode `External`: waiting for another fencer.
    pub const AWAITING_FENCE: &str = "AwaitingFence";
    pub const FENCING: &str = "Fencing";
    /// Waiting for `fencing.delaySeconds` to pass before fencing.
    pub const FENCE_DELAY: &str = "FenceDelay";
    pub const STOPPING_OLD_POD: &str = "StoppingOldPod";
    pub const DETACHING_VOLUMES: &str = "DetachingVolumes";
    pub const WAITING_FOR_HIGHER_PRIORITY: &str = "WaitingForHigherPriority";
    /// An instance it depends on (`spec.dependsOn`) is not Online: its start waits.
    pub const WAITING_FOR_DEPENDENCY: &str = "WaitingForDependency";
    /// Its `spec.dependsOn` leads back to itself: it cannot start until the cycle is broken.
    pub const DEPENDENCY_CYCLE: &str = "DependencyCycle";
    pub const STARTING_POD: &str = "StartingPod";
    pub const WAITING_FOR_READY: &str = "WaitingForReady";
    pub const PUBLISHING_ENDPOINT: &str = "PublishingEndpoint";
    /// Another node's agent may still hold the virtual IPs (`vipMode: Agent`).
    pub const AWAITING_VIP_RELEASE: &str = "AwaitingVIPRelease";
    /// The old owner's kubelet is silent while its agent renews: waiting for the agent to
    /// say it stopped the instance workloads there.
    pub const AWAITING_AGENT_STOP: &str = "AwaitingAgentStop";

    // Why a member node is not Up (member status, and the `NodeDown: …` move reason)
    /// The node's Lease has not been renewed for `heartbeat.leaseStaleSeconds`.
    pub const LEASE_STALE: &str = "LeaseStale";
    /// The node's agent has not renewed its Lease for `heartbeat.leaseStaleSeconds` while
    /// its kubelet heartbeats: the agent's fault, never the node's (it is not fenced).
    pub const AGENT_DOWN: &str = "AgentDown";
    /// An instance with `vipMode: Agent` may be placed only where an agent renews.
    pub const NO_AGENT: &str = "NoAgent";
    /// The node's Ready condition has been False or Unknown for `heartbeat.notReadySeconds`.
    pub const NODE_NOT_READY: &str = "NotReady";
    /// The node has neither a Lease nor a Ready condition.
    pub const NEVER_REPORTED: &str = "NeverReported";
    /// The node carries `node.kubernetes.io/out-of-service`.
    pub const OUT_OF_SERVICE_TAINT: &str = "OutOfServiceTaint";
    /// The node is cordoned.
    pub const UNSCHEDULABLE: &str = "Unschedulable";
    /// The owner is not (or no longer) a member of the cluster: a planned move.
    pub const NOT_A_MEMBER: &str = "NotAMember";
    /// The owner's Node object was deleted.
    pub const NODE_DELETED: &str = "NodeDeleted";
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
