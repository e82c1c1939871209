//! `decide`: a pure function of an instance's spec and status, what was observed of the
//! cluster, and the clock. It returns the status to record and the actions to take. It never
//! touches the API; the controller (`kube-failover-controller`) observes and applies.
//!
//! A move (placement, failover, planned move) is a sequence of steps recorded in
//! `status.move`. Each round does the first step not yet recorded: if its outcome is already
//! observed it records the step's time, otherwise it asks for the step's action. Actions are
//! idempotent, so a round repeated by a crash or a new leader doubles nothing.

pub mod facts;
pub mod health;
mod moves;
mod placement;
pub mod quarantine;
pub mod quorum;
mod recording;
mod shared;
mod steady;
pub mod whatif;

use std::collections::{BTreeMap, BTreeSet};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};

use crate::api::{
    FailoverClusterInstanceSpec, FailoverClusterInstanceStatus, Fencing, Served, condition, reason,
    set_condition,
};
pub use health::{
    AgentFacts, AgentHealth, HeartbeatBasis, NodeFacts, NodeHealth, node_health, required_healthy,
    unfence_at,
};
pub use moves::{GRANT_HANDOVER, SELF_FENCE_MARGIN};
pub use placement::{candidates, failover_threshold, failovers_in_period};
pub use recording::may_act_before_recording;
pub use shared::Shared;

/// How many finished moves `status.history` keeps.
pub const HISTORY_LIMIT: usize = 10;

/// A pod of the instance, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    pub name: String,
    /// The pod's UID: deletes carry it as a precondition, so that a late delete can never
    /// hit a newer pod of the same name.
    pub uid: String,
    pub node: Option<String>,
    pub ready: bool,
    pub ip: Option<String>,
    /// Marked for deletion but still in the API.
    pub terminating: bool,
    /// The pod's phase is Failed: its workload stopped on a healthy node.
    pub failed: bool,
    /// Container restarts so far (the sum of the containers' `restartCount`).
    pub restarts: u32,
}

/// A VolumeAttachment of one of the instance's volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentFacts {
    pub name: String,
    pub uid: String,
    pub node: String,
    /// The volume may be used from several nodes at once (ReadWriteMany or ReadOnlyMany):
    /// another node's attachment is legitimate and is never waited for.
    pub shared: bool,
    /// Marked for deletion (its detach is under way): it is waited for, not deleted again.
    pub terminating: bool,
}

/// Everything `decide` reads besides the instance itself.
#[derive(Clone, Debug)]
pub struct Observed {
    pub now: Timestamp,
    /// False when the referenced FailoverCluster does not exist.
    pub cluster_found: bool,
    /// The cluster allows the instance's namespace (`spec.allowedNamespaces`).
    pub namespace_allowed: bool,
    /// Member nodes of the cluster and their health: the same for every instance of the
    /// cluster observed at one moment, and shared between them.
    pub members: Shared<BTreeMap<String, NodeHealth>>,
    /// Nodes that the instance involves (its owner, the ends of its move) which exist but
    /// are not members of the cluster (relabelled away), and their health. A node named by
    /// the instance and in neither map has been deleted.
    pub outside: BTreeMap<String, NodeHealth>,
    /// Votes needed for automatic failover (`quorum.minHealthy` of the votes).
    pub quorum_required: u32,
    /// Members that do not vote (`quorum.nonVotingNodes`).
    pub non_voting: BTreeSet<String>,
    /// The cluster's witness, if it names one, as judged now.
    pub witness: Option<quorum::WitnessVote>,
    pub fencing: Fencing,
    pub pods: Vec<PodFacts>,
    pub attachments: Vec<AttachmentFacts>,
    /// Claims whose volume can only be used on one node (local storage): claim → node.
    pub pinned_claims: BTreeMap<String, String>,
    /// Claims that do not exist yet (user-provided claims must exist before placement).
    pub missing_claims: Vec<String>,
    /// Members a claim's volume cannot reach (its node affinity, say a zone, excludes them):
    /// node → why.
    pub unreachable: BTreeMap<String, String>,
    /// Each member's site, when the cluster groups its members in sites (`spec.sites`).
    pub sites: Shared<BTreeMap<String, String>>,
    /// Members quarantined now (the cluster's status), and until when: nothing is placed on
    /// them.
    pub quarantined: Shared<BTreeMap<String, Timestamp>>,
    /// What keeps the instance from starting among those it depends on (`spec.dependsOn`):
    /// `None` when every one is Online.
    pub dependencies_pending: Option<Dependencies>,
    /// Addresses currently published in the instance's EndpointSlice (none while it is
    /// still attached to a Service that is not the instance's).
    pub endpoints: Vec<String>,
    /// An EndpointSlice of the network name's name exists that this instance did not
    /// create: it is never written, the endpoint is not published, and a move completes
    /// without it.
    pub endpoint_slice_taken: bool,
    /// The Service of the network name matches the spec.
    pub service_current: bool,
    /// A Service of the network name's name exists that this instance did not create: it is
    /// never taken over (and the rest of the instance runs and fails over all the same).
    pub service_taken: bool,
    /// What of the network name is withheld, and why (reason, message), as the controller
    /// judged it from the cluster's address pools and DNS zones and the address claims:
    /// empty when everything declared may be served. The spec `decide` is given has already
    /// lost what is withheld.
    pub network_withheld: Vec<(String, String)>,
    /// Virtual IPs this instance may use and has not claimed yet: the controller claims them
    /// (one `IPAddress` each, which the API server gives to one claimant only).
    pub addresses_to_claim: Vec<String>,
    /// Addresses claimed for this instance that it no longer declares or may no longer use.
    pub addresses_to_release: Vec<String>,
    /// Why the last write of the network name's Service failed, if it did.
    pub service_refused: Option<String>,
    /// Another instance of the same cluster with a higher priority started a move in the
    /// last few seconds and has not started its pod yet: this one lets it go first.
    pub higher_priority_starting: bool,
    /// The in-cluster DNS name of the network name.
    pub dns_name: String,
    /// Nodes whose agent may still have the instance's virtual IPs up: it lists them on its
    /// Lease, and neither released them since, nor can be trusted to have dropped them (its
    /// node fenced or deleted, or its Lease silent past its self-fence time).
    pub vip_holders: BTreeSet<String>,
    /// What an operator asked for through the instance's annotations.
    pub requests: Requests,
    /// The instance brings its virtual IPs up through the node agents (`vipMode: Agent`,
    /// with addresses to serve): a new owner needs a live agent.
    pub needs_agent: bool,
    /// Nodes hosting another instance of the cluster that shares an anti-affinity class
    /// with this one, or where such an instance is moving: node → those instances.
    pub neighbours: BTreeMap<String, Vec<Neighbour>>,
}

/// Why an instance's dependencies keep it from starting.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dependencies {
    /// These are not Online (name, what they are: `Moving`, `no such instance`…).
    Waiting(Vec<(String, String)>),
    /// Its dependencies lead back to it: the names along the cycle, itself first and last.
    Cycle(Vec<String>),
}

/// Another instance sharing an anti-affinity class with the one decided on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Neighbour {
    /// `namespace/name`.
    pub instance: String,
    /// The first class the two share.
    pub class: String,
    /// Either of the two is `Strict`: they never share a node.
    pub strict: bool,
    /// It ranks above the instance decided on (a higher priority, or the same and an
    /// earlier `namespace/name`): when the two share a node, the lower one moves off.
    pub outranks: bool,
    /// It is online on that node, no move in progress.
    pub settled: bool,
}

impl Neighbour {
    /// `ns/b (anti-affinity class sql, Strict)`.
    pub fn describe(&self) -> String {
        let strict = if self.strict { ", Strict" } else { "" };
        format!(
            "{} (anti-affinity class {}{strict})",
            self.instance, self.class
        )
    }
}

/// What an operator asked for (`kubectl failover stop` / `start`), read from the instance's
/// annotations: declarative, so that it is audited, survives a controller restart, and is
/// invisible to a GitOps tool that applies the instance's spec.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Requests {
    /// `kube-failover.io/offline: "true"`: take it offline, keeping its claims, Service and
    /// name.
    pub offline: bool,
    /// `kube-failover.io/start-requested`: bring it online; a new value resets a `Failed`
    /// instance's failover count, and a `NoAutoStart` one is placed while it is set.
    pub start: Option<String>,
    /// `kube-failover.io/move-requested` and `kube-failover.io/move-to`: a planned move, to
    /// that node or the next eligible owner; acted on once per request.
    pub moves: Option<(String, Option<String>)>,
}

impl Observed {
    /// The quorum's count: voting members heard from and not fenced
    /// (`MemberState::heard`), and the witness.
    pub fn votes(&self) -> quorum::Votes {
        let mut votes = quorum::count_votes(
            self.members.iter().map(|(n, h)| (n.as_str(), h.state)),
            &self.non_voting,
            self.witness.as_ref(),
            &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(0),
        );
        votes.required = self.quorum_required;
        votes
    }

    pub fn has_quorum(&self) -> bool {
        self.votes().held()
    }

    /// How the quorum is told in messages.
    pub fn describe_votes(&self) -> String {
        let voting = self
            .members
            .iter()
            .filter(|(n, _)| !self.non_voting.contains(*n));
        let (heard, total) = voting.fold((0, 0), |(h, t), (_, m)| {
            (h + u32::from(m.state.heard()), t + 1)
        });
        let some_do_not_vote = total < self.members.len() as u32;
        quorum::describe_votes(
            &self.votes(),
            heard,
            total,
            some_do_not_vote,
            self.witness.as_ref(),
        )
    }

    /// The health of a node, member or not; `None` when no such Node exists.
    pub fn node(&self, name: &str) -> Option<&NodeHealth> {
        self.members.get(name).or_else(|| self.outside.get(name))
    }
}

/// A side effect for `apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Server-side apply the Service of the network name (and the EndpointSlice shell).
    EnsureService,
    /// Server-side apply the claims made from templates.
    EnsureClaims,
    /// Publish exactly these addresses in the EndpointSlice (empty withdraws).
    SetEndpoints(Vec<String>),
    /// Taint the node out of service, unless its heartbeats changed since `basis`.
    Fence {
        node: String,
        basis: HeartbeatBasis,
    },
    /// Ask the node's agent to stop the instance workloads there (its kubelet is silent, the
    /// agent renews): [`crate::api::STOP_WORKLOADS_ANNOTATION`] on the Node, unless the
    /// kubelet renewed since `basis`.
    RequestWorkloadStop {
        node: String,
        basis: HeartbeatBasis,
    },
    /// Delete a pod, if it still has this UID; `force` means grace period 0 (only ever for a
    /// pod on a fenced node).
    DeletePod {
        name: String,
        uid: String,
        force: bool,
    },
    /// Delete a stale VolumeAttachment of a fenced node, if it still has this UID.
    DeleteAttachment {
        name: String,
        uid: String,
    },
    /// Create the pod of move `seq` on `node`, once the API says no other pod exists.
    CreatePod {
        node: String,
        seq: u64,
    },
    /// Claim these addresses for the instance (create their `IPAddress` objects).
    ClaimAddresses(Vec<String>),
    /// Let these claims of the instance go (delete their `IPAddress` objects, if still its).
    ReleaseAddresses(Vec<String>),
    Event(Event),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: FailoverClusterInstanceStatus,
    pub actions: Vec<Action>,
    /// Look again at this time even if nothing changes (a threshold or a delay ends).
    pub recheck_at: Option<Timestamp>,
    /// `recheck_at` is only when the owner's verdict may change by itself (a heartbeat
    /// deadline of the owner node): a timer on that node that wakes the instance when its
    /// verdict changes may stand in for the instance's own.
    pub recheck_for_owner: bool,
}

/// The name of the pod of move `seq`: deterministic, so that a create repeated by another
/// leader gets AlreadyExists instead of a second pod.
pub fn pod_name(instance: &str, seq: u64) -> String {
    format!("{instance}-{seq}")
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn micro(t: Timestamp) -> MicroTime {
    MicroTime(t)
}

fn cond(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: time(now),
    }
}

fn event(warning: bool, reason: &str, message: impl Into<String>) -> Action {
    Action::Event(Event {
        warning,
        reason: reason.into(),
        message: message.into(),
    })
}

/// Decides one round for one instance.
pub fn decide(
    name: &str,
    generation: Option<i64>,
    spec: &FailoverClusterInstanceSpec,
    current: Option<&FailoverClusterInstanceStatus>,
    obs: &Observed,
) -> Decision {
    let mut d = Decision {
        status: current.cloned().unwrap_or_default(),
        actions: Vec::new(),
        recheck_at: None,
        recheck_for_owner: false,
    };
    let now = obs.now;
    d.status.observed_generation = generation;

    if let Some((reason, message)) = invalid(spec, obs) {
        hold_invalid(&mut d, reason, message, generation, now);
        // Nothing already running is disturbed.
        return d;
    }
    set_condition(
        &mut d.status.conditions,
        cond(
            condition::VALID,
            true,
            reason::VALID,
            "spec accepted",
            generation,
            now,
        ),
    );

    if !obs.service_current && !obs.service_taken {
        d.actions.push(Action::EnsureService);
    }
    set_network_condition(&mut d, spec, obs, generation);
    if !obs.addresses_to_claim.is_empty() {
        d.actions
            .push(Action::ClaimAddresses(obs.addresses_to_claim.clone()));
    }
    if !obs.addresses_to_release.is_empty() && obs.service_current {
        // Let an address go only once the Service no longer carries it.
        d.actions
            .push(Action::ReleaseAddresses(obs.addresses_to_release.clone()));
    }
    if !spec.storage.claim_templates.is_empty() {
        d.actions.push(Action::EnsureClaims);
    }
    let quorum_ok = obs.has_quorum();
    set_quorum_condition(&mut d, obs, generation);
    advance(name, spec, obs, quorum_ok, &mut d);
    if obs.endpoint_slice_taken {
        d.actions.retain(|a| !matches!(a, Action::SetEndpoints(_)));
    }
    // Asked for twice in one round (a failover withdraws the endpoint as it starts the
    // move, and the move's first step asks again): done once.
    let mut asked = Vec::with_capacity(d.actions.len());
    d.actions.retain(|a| {
        let again = asked.contains(a);
        if !again {
            asked.push(a.clone());
        }
        !again
    });

    d.status.served = Some(Served {
        dns_name: obs.dns_name.clone(),
        virtual_ips: spec.virtual_ips.clone(),
        endpoint: obs.endpoints.first().cloned(),
        vip_node: vip_node(spec, &d.status, obs),
    });
    placement::prune_counts(spec, &mut d.status, now);
    d.status.failover_count = failovers_in_period(spec, &d.status, now);
    // A move started this round looks again on its own steps' times.
    d.recheck_for_owner &= d.status.current_move.is_none();
    d
}

/// What admission cannot check: the cluster must exist and allow the namespace, and the
/// template must run something. What withholds only the network name (a Service that is
/// another's, an address or hostname not granted) is `NetworkName`'s, and holds nothing
/// else: the workload runs and fails over.
fn invalid(spec: &FailoverClusterInstanceSpec, obs: &Observed) -> Option<(&'static str, String)> {
    if !obs.cluster_found {
        Some((
            reason::CLUSTER_NOT_FOUND,
            format!(
                "FailoverCluster {:?} does not exist; create it or fix spec.clusterRef",
                spec.cluster_ref
            ),
        ))
    } else if !obs.namespace_allowed {
        Some((
            reason::NAMESPACE_NOT_ALLOWED,
            format!(
                "FailoverCluster {:?} does not allow this namespace; a cluster administrator can add it to the cluster's spec.allowedNamespaces.names or label it to match spec.allowedNamespaces.selector",
                spec.cluster_ref
            ),
        ))
    } else if !spec.template.lists_a_container() {
        Some((
            reason::NO_CONTAINERS,
            "spec.template.spec.containers must list at least one container".to_string(),
        ))
    } else {
        None
    }
}

/// `NetworkName`: whether everything declared of the network name is served, else the
/// first thing withheld and why (every one in the message), with an Event when that
/// changes.
fn set_network_condition(
    d: &mut Decision,
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    generation: Option<i64>,
) {
    let mut withheld: Vec<(String, String)> = Vec::new();
    if obs.service_taken {
        withheld.push((
            reason::NETWORK_NAME_TAKEN.into(),
            format!(
                "a Service named {:?} already exists in this namespace and was not created for this instance; rename spec.networkName.name or remove that Service",
                spec.network_name.name
            ),
        ));
    }
    if obs.endpoint_slice_taken {
        withheld.push((
            reason::NETWORK_NAME_TAKEN.into(),
            format!(
                "an EndpointSlice named {:?} already exists in this namespace and was not created for this instance: the endpoint is not published; rename spec.networkName.name or remove that EndpointSlice",
                spec.network_name.name
            ),
        ));
    }
    if let Some(why) = &obs.service_refused {
        withheld.push((
            reason::SERVICE_NOT_WRITTEN.into(),
            format!(
                "the Service {:?} could not be written: {why}",
                spec.network_name.name
            ),
        ));
    }
    withheld.extend(obs.network_withheld.iter().cloned());
    let condition = match withheld.first() {
        None => cond(
            condition::NETWORK_NAME,
            true,
            reason::NETWORK_NAME_SERVED,
            "the network name is served as declared",
            generation,
            obs.now,
        ),
        Some((reason, _)) => cond(
            condition::NETWORK_NAME,
            false,
            reason,
            withheld
                .iter()
                .map(|(_, m)| m.as_str())
                .collect::<Vec<_>>()
                .join("; "),
            generation,
            obs.now,
        ),
    };
    let before = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::NETWORK_NAME)
        .map(|c| (c.reason.clone(), c.message.clone()));
    let changed = before.as_ref().map(|(r, m)| (r.as_str(), m.as_str()))
        != Some((condition.reason.as_str(), condition.message.as_str()));
    // Claiming is a passing state, not worth an Event; so is being served from the start.
    if changed
        && condition.reason != reason::VIRTUAL_IP_CLAIMING
        && (condition.status == "False" || before.is_some())
    {
        d.actions.push(event(
            condition.status == "False",
            &condition.reason,
            condition.message.clone(),
        ));
    }
    set_condition(&mut d.status.conditions, condition);
}

/// Holds an instance that is not valid: `Valid` False saying why, an Event when it was valid
/// before.
fn hold_invalid(
    d: &mut Decision,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) {
    let was_valid = d
        .status
        .conditions
        .iter()
        .all(|c| c.type_ != condition::VALID || c.status == "True");
    set_condition(
        &mut d.status.conditions,
        cond(
            condition::VALID,
            false,
            reason,
            message.clone(),
            generation,
            now,
        ),
    );
    if was_valid {
        d.actions.push(event(true, reason, message));
    }
}

/// `Quorum`: whether enough member nodes are up for automatic failover.
fn set_quorum_condition(d: &mut Decision, obs: &Observed, generation: Option<i64>) {
    let (quorum_ok, now) = (obs.has_quorum(), obs.now);
    set_condition(
        &mut d.status.conditions,
        cond(
            condition::QUORUM,
            quorum_ok,
            if quorum_ok {
                reason::QUORUM_HELD
            } else {
                reason::QUORUM_LOST
            },
            // Counts only when quorum is lost: a node failure must not rewrite the status
            // of every instance in the cluster (the cluster's status carries the counts).
            if quorum_ok {
                "enough member nodes are up for automatic failover".to_string()
            } else {
                obs.describe_votes()
            },
            generation,
            now,
        ),
    );
}

/// Who carries the round on after the steady state or a move has had its say. The two hand
/// the round to each other here, never by calling each other: a failover starts a move and
/// takes its first steps in the same round; a move whose new owner failed ends, and the
/// steady state decides from where it ended.
#[derive(Debug, PartialEq, Eq)]
enum Then {
    Done,
    StepMove,
    Steady,
}

/// The steady state or the move in progress, then whoever it hands the round to. A move
/// just started has created no pod, so it cannot hand back at once: a round takes at most
/// move, steady, move; the bound only guards that.
fn advance(
    name: &str,
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    quorum_ok: bool,
    d: &mut Decision,
) {
    let mut then = match d.status.current_move.clone() {
        Some(m) => moves::step_move(name, spec, obs, m, d),
        None => steady::steady(name, spec, obs, quorum_ok, d),
    };
    for _ in 0..3 {
        then = match (then, d.status.current_move.clone()) {
            (Then::StepMove, Some(m)) => moves::step_move(name, spec, obs, m, d),
            (Then::Steady, _) => steady::steady(name, spec, obs, obs.has_quorum(), d),
            (Then::Done | Then::StepMove, _) => return,
        };
    }
}

/// The node whose agent may bring the virtual IPs up (`vipMode: Agent`): the owner, outside
/// a move, once no other node's agent may still hold them. During a move nobody: the old
/// owner's agent takes them down as the endpoint is withdrawn, and the new owner's brings
/// them up once the move is over.
fn vip_node(
    spec: &FailoverClusterInstanceSpec,
    status: &FailoverClusterInstanceStatus,
    obs: &Observed,
) -> Option<String> {
    if spec.vip_mode != crate::api::VipMode::Agent
        || spec.virtual_ips.is_empty()
        || status.current_move.is_some()
        || !matches!(
            status.phase,
            crate::api::Phase::Online | crate::api::Phase::Degraded
        )
    {
        return None;
    }
    let owner = status.owner_node.clone()?;
    obs.vip_holders.iter().all(|n| *n == owner).then_some(owner)
}

/// Nodes other than `to` whose agent may still hold the instance's virtual IPs.
pub(crate) fn other_vip_holders(obs: &Observed, to: &str) -> Vec<String> {
    obs.vip_holders
        .iter()
        .filter(|n| *n != to)
        .cloned()
        .collect()
}

pub(crate) fn condition_reason<'a>(
    status: &'a FailoverClusterInstanceStatus,
    type_: &str,
) -> Option<&'a str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

#[cfg(test)]
mod tests;
