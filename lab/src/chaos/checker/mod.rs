//! The invariant watcher's judgement: a pure function of what it was shown, in order.
//!
//! It is fed [`Observation`]s (every watch event on pods, EndpointSlices,
//! VolumeAttachments, Nodes, node Leases, instances and Events, every line of the API
//! server's audit log, and every fault the injector starts or ends) and keeps a mirror of
//! the API objects of its own. It never reads the controller's memory, logs or metrics:
//! what it judges is what the API server stored and recorded. Times are the watcher's: a
//! monotonic [`Instant`] when an event reached it, and the wall time of this machine (the
//! same clock as the API server's audit timestamps, all processes being local).

mod copies;
mod deletes;
mod history;
mod invariants;
mod leases;
mod mirror;
mod moves;
mod taints;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::{Resource, ResourceExt};
use kube_failover_core::api::{
    AGENT_LEASE_PREFIX, FailoverClusterInstance, INSTANCE_LABEL, Move, Phase,
    WORKLOADS_STOPPED_ANNOTATION, reason,
};
use serde::Serialize;

use crate::simruntime::Copies;

/// Kubernetes' taint for non-graceful node shutdown: the node is fenced.
pub use crate::controlplane::OUT_OF_SERVICE_TAINT;
pub use mirror::instance_online;
use mirror::{Mirror, node_fenced, node_ready, pod_node, pod_ready};

/// The faults the chaos run injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum FaultKind {
    /// The node's heartbeats stop (KWOK no longer manages it), as on power loss.
    NodeKill,
    /// The node's kubelet renews its Lease but reports Ready=False.
    NodeNotReady,
    /// The node's kubelet renews its Lease (and posts its status) with a clock minutes
    /// behind: it is alive.
    NodeSkew,
    /// The node's cluster-member label is removed: it left the cluster.
    NodeRelabel,
    /// The node is cordoned (`spec.unschedulable`).
    NodeCordon,
    /// The leader replica is killed (SIGKILL); a new process replaces it later.
    LeaderKill,
    /// The leader replica is stopped (SIGSTOP) past its Lease, then continued.
    LeaderPause,
    /// kube-apiserver is restarted (SIGTERM or SIGKILL).
    ApiServerRestart,
    /// The node agent is killed (SIGKILL) and started again later; its kubelet heartbeats
    /// on: the node is alive.
    AgentKill,
    /// Every running agent is restarted, one node at a time, each once the previous renews
    /// again (a DaemonSet's rolling update, maxUnavailable 1).
    AgentRollout,
    /// The kubelet dies: its heartbeats stop, its containers run on, its agent renews. The
    /// controller must have the agent stop them before anything moves.
    KubeletDead,
    /// The node is cut off from the API server: its kubelet's heartbeats stop, its agent's
    /// way to the API server is cut, its containers run on until the agent fences itself.
    NodeCutOff,
    /// kube-apiserver is stopped (SIGSTOP) for 10 s, then continued, every agent running.
    ApiServerStall,
}

impl FaultKind {
    pub const ALL: [FaultKind; 13] = [
        FaultKind::NodeKill,
        FaultKind::NodeNotReady,
        FaultKind::NodeSkew,
        FaultKind::NodeRelabel,
        FaultKind::NodeCordon,
        FaultKind::LeaderKill,
        FaultKind::LeaderPause,
        FaultKind::ApiServerRestart,
        FaultKind::AgentKill,
        FaultKind::AgentRollout,
        FaultKind::KubeletDead,
        FaultKind::NodeCutOff,
        FaultKind::ApiServerStall,
    ];

    /// A fault of one node: one at a time on a node, and counted against the number of
    /// nodes that may be faulty at once.
    pub fn is_node_fault(self) -> bool {
        matches!(
            self,
            FaultKind::NodeKill
                | FaultKind::NodeNotReady
                | FaultKind::NodeSkew
                | FaultKind::NodeRelabel
                | FaultKind::NodeCordon
                | FaultKind::AgentKill
                | FaultKind::KubeletDead
                | FaultKind::NodeCutOff
        )
    }

    /// A node fault that silences the node's kubelet: from its start until it is healed,
    /// nothing starts a container on the node.
    pub fn silences_kubelet(self) -> bool {
        matches!(
            self,
            FaultKind::NodeKill | FaultKind::KubeletDead | FaultKind::NodeCutOff
        )
    }

    /// A node fault that takes the node's agent away (killed, or cut off).
    pub fn downs_agent(self) -> bool {
        matches!(
            self,
            FaultKind::NodeKill | FaultKind::AgentKill | FaultKind::NodeCutOff
        )
    }

    pub fn name(self) -> &'static str {
        match self {
            FaultKind::NodeKill => "node kill",
            FaultKind::NodeNotReady => "node NotReady (Lease fresh)",
            FaultKind::NodeSkew => "node clock skew",
            FaultKind::NodeRelabel => "node relabel (leaves cluster)",
            FaultKind::NodeCordon => "node cordon",
            FaultKind::LeaderKill => "leader SIGKILL",
            FaultKind::LeaderPause => "leader SIGSTOP past its Lease",
            FaultKind::ApiServerRestart => "kube-apiserver restart",
            FaultKind::AgentKill => "agent SIGKILL (kubelet alive)",
            FaultKind::AgentRollout => "agent rollout (one at a time)",
            FaultKind::KubeletDead => "kubelet dead (agent alive)",
            FaultKind::NodeCutOff => "node cut off (containers run)",
            FaultKind::ApiServerStall => "kube-apiserver SIGSTOP 10 s",
        }
    }

    /// Whether this fault on a node justifies a move off it: a planned move (`planned`) or a
    /// fenced failover. Only a node whose kubelet's heartbeats stopped may be failed over
    /// (killed, its kubelet dead, or cut off); a node that is alive but NotReady, has left
    /// the cluster or is cordoned is moved off gracefully. A skewed clock or a dead agent
    /// justifies nothing: the node is alive.
    pub fn justifies(self, planned: bool) -> bool {
        match self {
            FaultKind::NodeKill | FaultKind::KubeletDead | FaultKind::NodeCutOff => true,
            FaultKind::NodeNotReady | FaultKind::NodeRelabel | FaultKind::NodeCordon => planned,
            _ => false,
        }
    }
}

/// A fault as the injector announces it.
#[derive(Clone, Debug)]
pub struct FaultRecord {
    pub id: u64,
    pub kind: FaultKind,
    pub node: Option<String>,
    pub detail: String,
}

impl std::fmt::Display for FaultRecord {
    /// `#id kind node (detail)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "#{} {} {}",
            self.id,
            self.kind.name(),
            self.node.as_deref().unwrap_or_default()
        )?;
        if !self.detail.is_empty() {
            write!(f, " ({})", self.detail)?;
        }
        Ok(())
    }
}

/// One watch event of one kind of object.
#[derive(Clone, Debug)]
pub enum Change<K> {
    /// Added or modified.
    Applied(K),
    Deleted(K),
    /// The watch (re)started a list: the objects follow as `Relisted`, then `RelistDone`.
    Relist,
    Relisted(K),
    RelistDone,
    /// The watch failed (it retries).
    Error(String),
}

/// A line of the API server's audit log, as far as the invariants need it.
#[derive(Clone, Debug, Default)]
pub struct AuditRecord {
    pub verb: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub user: String,
    pub user_agent: Option<String>,
    pub code: Option<i32>,
    /// When the API server received the request (its clock: this machine's).
    pub received: jiff::Timestamp,
    /// `gracePeriodSeconds` of a delete's DeleteOptions.
    pub grace_period: Option<i64>,
    /// The UID precondition of a delete.
    pub precondition_uid: Option<String>,
    /// For a write to a Node: whether the Node as stored after it carries the
    /// out-of-service taint.
    pub stored_node_fenced: Option<bool>,
}

impl AuditRecord {
    fn succeeded(&self) -> bool {
        self.code.is_some_and(|c| (200..300).contains(&c))
    }
}

/// Moved once, through a channel, to the watcher: boxing the objects would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Observed {
    Pod(Change<Pod>),
    Slice(Change<EndpointSlice>),
    Attachment(Change<VolumeAttachment>),
    Node(Change<Node>),
    Lease(Change<Lease>),
    Instance(Change<FailoverClusterInstance>),
    Event(Change<Event>),
    Audit(AuditRecord),
    FaultStarted(FaultRecord),
    FaultEnded {
        id: u64,
        detail: String,
    },
    /// The running copies of every instance at the simulated container runtimes, at each
    /// change of them and every second.
    Copies(Copies),
    /// A violation found outside the watcher (liveness at the end of the run).
    External {
        invariant: &'static str,
        message: String,
    },
    /// A line for the history only.
    Note(String),
}

#[derive(Clone, Debug)]
pub struct Observation {
    /// When the watcher received it (monotonic).
    pub at: Instant,
    /// The same moment on the wall clock.
    pub wall: jiff::Timestamp,
    /// Seen as it happened: a watch event on a stream that has not failed or relisted in
    /// the last seconds. A relisted object tells what changed while the watcher was not
    /// looking, not when.
    pub fresh: bool,
    pub what: Observed,
}

#[derive(Clone, Debug, Serialize)]
pub struct Violation {
    /// Seconds since the start of the run.
    pub at_seconds: f64,
    pub invariant: &'static str,
    pub message: String,
}

/// Tunables of the judgement.
#[derive(Clone, Debug)]
pub struct CheckerConfig {
    /// The controller's user name as the API server authenticates it (audit log).
    pub controller_user: String,
    /// A fault that ended at most this long before an instance was last seen online on its
    /// node still counts as a reason to move it (the controller's view lags the API).
    pub slack: Duration,
    /// An audited delete is judged once the wall clock is this far past it, so that
    /// audit lines of Node writes received before it (but completed after) are in.
    pub audit_settle: Duration,
    /// Lease duration of a node whose Lease does not say.
    pub default_lease: Duration,
    /// The cluster's `heartbeat.leaseStaleSeconds`: a node whose kubelet renewed within it
    /// is alive, never to be fenced; an agent that renewed within it is live, and its node
    /// is fenced only on its word that it stopped the workloads there.
    pub heartbeat_threshold: Duration,
    /// Watcher events kept for the history printed with a violation.
    pub history: usize,
}

impl CheckerConfig {
    pub fn new(controller_user: &str) -> Self {
        Self {
            controller_user: controller_user.to_string(),
            slack: Duration::from_secs(10),
            audit_settle: Duration::from_secs(3),
            default_lease: Duration::from_secs(4),
            heartbeat_threshold: Duration::from_secs(6),
            history: 50,
        }
    }
}

struct FaultState {
    rec: FaultRecord,
    start: Instant,
    end: Option<Instant>,
    /// The sandboxes of instance pods running on its node when it started.
    running_at_start: BTreeSet<String>,
}

/// A delete by the controller, to be judged once the audit log has settled.
struct PendingDelete {
    what: String,
    node: Option<String>,
    received: jiff::Timestamp,
    at: Instant,
}

/// An out-of-service taint seen added, to be judged once the Lease watch has caught up with
/// the Node watch (invariant 5, `taints`).
struct PendingTaint {
    node: String,
    /// The resourceVersion of the Node write that added it.
    version: Option<u64>,
    /// When the watcher saw it, on its clocks.
    at: Instant,
    wall: jiff::Timestamp,
}

/// Counts for the summary.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Tally {
    /// Moves completed (recorded in an instance's history), by kind.
    pub failovers: usize,
    pub planned_moves: usize,
    pub abandoned: usize,
    pub placements: usize,
    /// Move starts seen in instances' status (each checked for a reason).
    pub move_starts_checked: usize,
    /// Occurrences of Events by reason (FailoverStarted, PlannedMove, Fenced, …).
    pub events: BTreeMap<String, usize>,
    /// Deletes by the controller found in the audit log and judged.
    pub audited_force_pod_deletes: usize,
    pub audited_attachment_deletes: usize,
    /// Deletes whose node the watcher could not tell (never saw the object).
    pub unverified_deletes: usize,
    /// Out-of-service taints seen appear, and those judged against a fresh Lease.
    pub taints_seen: usize,
    pub audit_lines: usize,
    /// Looks at the running copies of every instance at the container runtimes, and the
    /// most copies of one instance seen running at once.
    pub copy_checks: usize,
    pub most_copies_at_once: usize,
}

/// The watcher's judgement. What it checks, as it sees it happen:
///
/// - two pods of one instance on two nodes, unless one is fenced and its pod being removed
///   (invariant 1, `invariants`); and two copies of an instance running at the container
///   runtimes, whatever the pods say (invariant 1 where it matters, `copies`);
/// - an EndpointSlice listing two addresses, a ReadWriteOnce volume attached to two nodes
///   (invariants 2 and 3, `invariants`);
/// - a force delete or a VolumeAttachment delete by the controller on a node not fenced
///   then, from the audit log (invariant 4, `deletes`);
/// - an out-of-service taint on a node whose kubelet it saw renew within the heartbeat
///   threshold, or whose agent it saw renew without the word that it stopped the instance
///   workloads (invariant 5, `invariants` and `leases`);
/// - a move off a node that had no fault to justify it (invariants 6 and 7, `moves`).
pub struct Checker {
    cfg: CheckerConfig,
    start: Instant,
    pods: Mirror<Pod>,
    slices: Mirror<EndpointSlice>,
    attachments: Mirror<VolumeAttachment>,
    nodes: Mirror<Node>,
    leases: Mirror<Lease>,
    instances: Mirror<FailoverClusterInstance>,
    /// Nodes carrying the out-of-service taint, as last seen.
    fenced: BTreeSet<String>,
    /// The last renewals of each Lease in `kube-node-lease` (kubelets' and agents'), by
    /// name, oldest first.
    renewals: BTreeMap<String, VecDeque<leases::Renewal>>,
    /// Every word of an agent that it stopped its node's instance workloads: by node and
    /// the kubelet renewal it names, the lowest resourceVersion of its Lease that said it.
    agent_words: BTreeMap<(String, jiff::Timestamp), u64>,
    /// Taints seen added, to be judged once the Lease watch has caught up.
    pending_taints: Vec<PendingTaint>,
    /// The running copies of each instance at the container runtimes, as last seen.
    copies: Copies,
    /// The node of every pod (by UID and by namespace/name) and attachment ever seen.
    pod_node_by_uid: BTreeMap<String, String>,
    pod_node_by_name: BTreeMap<String, String>,
    attachment_node: BTreeMap<String, String>,
    /// From the audit log: when each node gained or lost the taint (time the write was
    /// received, whether the stored Node carries it after), and when a Node was deleted.
    audited_fencing: BTreeMap<String, Vec<(jiff::Timestamp, bool)>>,
    audited_node_deleted: BTreeMap<String, jiff::Timestamp>,
    pending: Vec<PendingDelete>,
    faults: Vec<FaultState>,
    /// Per instance and node: when the instance was last seen online there, and when a move
    /// to that node was first seen.
    online_on: BTreeMap<(String, String), Instant>,
    move_to_seen: BTreeMap<(String, String), Instant>,
    moves_checked: BTreeSet<(String, String, bool)>,
    moves_counted: BTreeSet<(String, String)>,
    /// Moves already reported, by instance, node and since when it was online there: the
    /// status and the Event of one move are one violation.
    flagged_moves: BTreeSet<(String, String, u128)>,
    event_counts: BTreeMap<String, i32>,
    reported: BTreeSet<String>,
    /// Recent observations (one line each) and faults, for the history.
    recent: VecDeque<(Instant, String)>,
    recent_faults: VecDeque<(Instant, String)>,
    last_line: BTreeMap<String, String>,
    /// Print each history line as it is recorded.
    pub echo: bool,
    pub tally: Tally,
    pub violations: Vec<Violation>,
}

impl Checker {
    pub fn new(cfg: CheckerConfig, start: Instant) -> Self {
        Self {
            cfg,
            start,
            pods: Mirror::new(),
            slices: Mirror::new(),
            attachments: Mirror::new(),
            nodes: Mirror::new(),
            leases: Mirror::new(),
            instances: Mirror::new(),
            fenced: BTreeSet::new(),
            renewals: BTreeMap::new(),
            agent_words: BTreeMap::new(),
            pending_taints: Vec::new(),
            copies: Copies::new(),
            pod_node_by_uid: BTreeMap::new(),
            pod_node_by_name: BTreeMap::new(),
            attachment_node: BTreeMap::new(),
            audited_fencing: BTreeMap::new(),
            audited_node_deleted: BTreeMap::new(),
            pending: Vec::new(),
            faults: Vec::new(),
            online_on: BTreeMap::new(),
            move_to_seen: BTreeMap::new(),
            moves_checked: BTreeSet::new(),
            moves_counted: BTreeSet::new(),
            flagged_moves: BTreeSet::new(),
            event_counts: BTreeMap::new(),
            reported: BTreeSet::new(),
            recent: VecDeque::new(),
            recent_faults: VecDeque::new(),
            last_line: BTreeMap::new(),
            echo: false,
            tally: Tally::default(),
            violations: Vec::new(),
        }
    }

    fn secs(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64()
    }

    /// Instances known, and how many are online.
    pub fn instances_online(&self) -> (usize, usize) {
        let all = self.instances.live.len();
        let online = self
            .instances
            .live
            .values()
            .filter(|i| instance_online(i))
            .count();
        (all, online)
    }

    /// Judges one observation; returns the violations it revealed.
    pub fn observe(&mut self, obs: Observation) -> Vec<Violation> {
        let before = self.violations.len();
        self.remember(&obs);
        let Observation {
            at,
            wall,
            fresh,
            what,
        } = obs;
        match what {
            Observed::Pod(c) => {
                if let Change::Applied(p) | Change::Relisted(p) | Change::Deleted(p) = &c
                    && let Some(node) = pod_node(p)
                {
                    if let Some(uid) = p.uid() {
                        self.pod_node_by_uid.insert(uid, node.clone());
                    }
                    self.pod_node_by_name.insert(Mirror::key(p), node);
                }
                self.pods.apply(&c);
                self.check_pods(at);
            }
            Observed::Slice(c) => {
                self.slices.apply(&c);
                self.check_slices(at);
            }
            Observed::Attachment(c) => {
                if let Change::Applied(a) | Change::Relisted(a) | Change::Deleted(a) = &c {
                    self.attachment_node
                        .insert(a.name_any(), a.spec.node_name.clone());
                }
                self.attachments.apply(&c);
                self.check_attachments(at);
            }
            Observed::Node(c) => self.on_node(c, at, wall, fresh),
            Observed::Lease(c) => self.on_lease(c, at, fresh),
            Observed::Instance(c) => {
                self.instances.apply(&c);
                if let Change::Applied(i) | Change::Relisted(i) = &c {
                    self.on_instance(i, at);
                }
            }
            Observed::Event(c) => {
                if let Change::Applied(e) | Change::Relisted(e) = &c {
                    self.on_event(e, at);
                }
            }
            Observed::Audit(r) => self.on_audit(r, at),
            Observed::FaultStarted(rec) => {
                let running_at_start = self.sandboxes_running_on(rec.node.as_deref());
                self.faults.push(FaultState {
                    rec,
                    start: at,
                    end: None,
                    running_at_start,
                });
            }
            Observed::FaultEnded { id, .. } => {
                if let Some(f) = self.faults.iter_mut().find(|f| f.rec.id == id) {
                    f.end = Some(at);
                }
            }
            Observed::Copies(copies) => self.check_copies(copies, at),
            Observed::External { invariant, message } => self.violate(at, invariant, message),
            Observed::Note(_) => {}
        }
        self.judge_settled_deletes(wall);
        self.judge_settled_taints(at);
        self.violations[before..].to_vec()
    }

    /// Judges what is still pending (the end of the run).
    pub fn finish(&mut self) -> Vec<Violation> {
        let before = self.violations.len();
        let far = jiff::Timestamp::MAX;
        self.judge_settled_deletes(far);
        self.judge_settled_taints(self.start + Duration::from_secs(365 * 24 * 3600));
        self.violations[before..].to_vec()
    }

    fn violate(&mut self, at: Instant, invariant: &'static str, message: String) {
        self.violations.push(Violation {
            at_seconds: self.secs(at),
            invariant,
            message,
        });
    }

    /// Reports a violation once per key (a state that persists is one violation).
    fn violate_once(&mut self, key: String, at: Instant, invariant: &'static str, msg: String) {
        if self.reported.insert(key) {
            self.violate(at, invariant, msg);
        }
    }
}
