//! The invariant watcher's judgement: a pure function of what it was shown, in order.
//!
//! It is fed [`Observation`]s (every watch event on pods, EndpointSlices,
//! VolumeAttachments, Nodes, node Leases, instances and Events, every line of the API
//! server's audit log, and every fault the injector starts or ends) and keeps a mirror of
//! the API objects of its own. It never reads the controller's memory, logs or metrics:
//! what it judges is what the API server stored and recorded. Times are the watcher's: a
//! monotonic [`Instant`] when an event reached it, and the wall time of this machine (the
//! same clock as the API server's audit timestamps, all processes being local).

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::{Resource, ResourceExt};
use kube_failover_core::api::{FailoverClusterInstance, INSTANCE_LABEL, Move, Phase, reason};
use serde::Serialize;

/// Kubernetes' taint for non-graceful node shutdown: the node is fenced.
pub use crate::controlplane::OUT_OF_SERVICE_TAINT;

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
}

impl FaultKind {
    pub const ALL: [FaultKind; 8] = [
        FaultKind::NodeKill,
        FaultKind::NodeNotReady,
        FaultKind::NodeSkew,
        FaultKind::NodeRelabel,
        FaultKind::NodeCordon,
        FaultKind::LeaderKill,
        FaultKind::LeaderPause,
        FaultKind::ApiServerRestart,
    ];

    pub fn is_node_fault(self) -> bool {
        matches!(
            self,
            FaultKind::NodeKill
                | FaultKind::NodeNotReady
                | FaultKind::NodeSkew
                | FaultKind::NodeRelabel
                | FaultKind::NodeCordon
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
        }
    }

    /// Whether this fault on a node justifies a move off it: a planned move (`planned`) or a
    /// fenced failover. Only a node whose heartbeats stopped may be failed over; a node
    /// that is alive but NotReady, has left the cluster or is cordoned is moved off
    /// gracefully. A skewed clock justifies nothing: the node is alive.
    pub fn justifies(self, planned: bool) -> bool {
        match self {
            FaultKind::NodeKill => true,
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
            history: 50,
        }
    }
}

/// The objects of one kind, as the watcher last saw them.
struct Mirror<K> {
    live: BTreeMap<String, K>,
    relisting: Option<BTreeMap<String, K>>,
}

impl<K: Resource + Clone> Mirror<K> {
    fn new() -> Self {
        Self {
            live: BTreeMap::new(),
            relisting: None,
        }
    }

    fn key(obj: &K) -> String {
        match obj.meta().namespace.as_deref() {
            Some(ns) => format!("{ns}/{}", obj.meta().name.as_deref().unwrap_or_default()),
            None => obj.meta().name.clone().unwrap_or_default(),
        }
    }

    /// Applies a change; returns the previous version of an applied or deleted object.
    fn apply(&mut self, change: &Change<K>) -> Option<K> {
        match change {
            Change::Applied(o) => self.live.insert(Self::key(o), o.clone()),
            Change::Deleted(o) => self.live.remove(&Self::key(o)),
            Change::Relist => {
                self.relisting = Some(BTreeMap::new());
                None
            }
            Change::Relisted(o) => {
                self.relisting
                    .get_or_insert_with(BTreeMap::new)
                    .insert(Self::key(o), o.clone());
                None
            }
            Change::RelistDone => {
                if let Some(all) = self.relisting.take() {
                    self.live = all;
                }
                None
            }
            Change::Error(_) => None,
        }
    }
}

struct FaultState {
    rec: FaultRecord,
    start: Instant,
    end: Option<Instant>,
}

/// A delete by the controller, to be judged once the audit log has settled.
struct PendingDelete {
    what: String,
    node: Option<String>,
    received: jiff::Timestamp,
    at: Instant,
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
}

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
    /// When the watcher last saw each node's Lease renewed, on its own clock, and the
    /// Lease's duration.
    renewed: BTreeMap<String, (Instant, Duration)>,
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

fn pod_node(p: &Pod) -> Option<String> {
    p.spec.as_ref()?.node_name.clone()
}

fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_fenced(n: &Node) -> bool {
    n.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT))
}

fn node_ready(n: &Node) -> String {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.status.clone())
        .unwrap_or_else(|| "-".into())
}

fn renew_time(l: &Lease) -> Option<String> {
    l.spec
        .as_ref()?
        .renew_time
        .as_ref()
        .map(|t| t.0.to_string())
}

/// An instance online: phase Online, no move, endpoint published (as the tests define it).
pub fn instance_online(i: &FailoverClusterInstance) -> bool {
    i.status.as_ref().is_some_and(|s| {
        s.phase == Phase::Online
            && s.current_move.is_none()
            && s.served.as_ref().is_some_and(|v| v.endpoint.is_some())
    })
}

/// The node an Event's note says a move leaves (the controller's wording; used for new
/// Events only: a repeated Event keeps the note of its first occurrence).
fn move_source_in_note(note: &str) -> Option<String> {
    let word = |rest: &str| rest.split_whitespace().next().map(str::to_string);
    if let Some(rest) = note.strip_prefix("owner ") {
        return word(rest);
    }
    if let Some(rest) = note.strip_prefix("moving from ") {
        return word(rest);
    }
    if note.contains(" went silent") {
        return word(note);
    }
    None
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
            renewed: BTreeMap::new(),
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
            Observed::Node(c) => self.on_node(c, at, fresh),
            Observed::Lease(c) => {
                let previous = self.leases.apply(&c);
                if let Change::Applied(l) = &c
                    && fresh
                    && previous.as_ref().and_then(renew_time) != renew_time(l)
                {
                    let node = l.name_any();
                    let gap = self
                        .renewed
                        .get(&node)
                        .map(|(t, _)| at.saturating_duration_since(*t));
                    if gap.is_none_or(|g| g > Duration::from_secs(2)) {
                        let text = match gap {
                            Some(g) => format!(
                                "lease {node} renewed after {:.1} s without a renewal seen",
                                g.as_secs_f64()
                            ),
                            None => format!("lease {node} renewal first seen"),
                        };
                        self.push_line(at, true, text);
                    }
                    let duration = l
                        .spec
                        .as_ref()
                        .and_then(|s| s.lease_duration_seconds)
                        .and_then(|s| u64::try_from(s).ok())
                        .map(Duration::from_secs)
                        .unwrap_or(self.cfg.default_lease);
                    self.renewed.insert(l.name_any(), (at, duration));
                }
            }
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
            Observed::FaultStarted(rec) => self.faults.push(FaultState {
                rec,
                start: at,
                end: None,
            }),
            Observed::FaultEnded { id, .. } => {
                if let Some(f) = self.faults.iter_mut().find(|f| f.rec.id == id) {
                    f.end = Some(at);
                }
            }
            Observed::External { invariant, message } => self.violate(at, invariant, message),
            Observed::Note(_) => {}
        }
        self.judge_settled_deletes(wall);
        self.violations[before..].to_vec()
    }

    /// Judges what is still pending (the end of the run).
    pub fn finish(&mut self) -> Vec<Violation> {
        let before = self.violations.len();
        let far = jiff::Timestamp::MAX;
        self.judge_settled_deletes(far);
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

    /// Invariant 1: never two pods of one instance on two different nodes, unless one of
    /// those nodes is fenced (out-of-service taint, or the Node gone) and that pod is being
    /// removed.
    fn check_pods(&mut self, at: Instant) {
        let mut by_instance: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        for p in self.pods.live.values() {
            let terminal = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
            if terminal || pod_node(p).is_none() {
                continue;
            }
            if let Some(inst) = p.labels().get(INSTANCE_LABEL) {
                let ns = p.namespace().unwrap_or_default();
                by_instance
                    .entry(format!("{ns}/{inst}"))
                    .or_default()
                    .push(p);
            }
        }
        let mut found = Vec::new();
        for (inst, pods) in by_instance {
            let nodes: BTreeSet<String> = pods.iter().filter_map(|p| pod_node(p)).collect();
            if nodes.len() < 2 {
                continue;
            }
            let excused = |p: &Pod| {
                let node = pod_node(p).unwrap_or_default();
                let fenced = self.fenced.contains(&node) || !self.nodes.live.contains_key(&node);
                fenced && p.metadata.deletion_timestamp.is_some()
            };
            let live_nodes: BTreeSet<String> = pods
                .iter()
                .filter(|p| !excused(p))
                .filter_map(|p| pod_node(p))
                .collect();
            if live_nodes.len() >= 2 {
                let desc: Vec<String> = pods
                    .iter()
                    .map(|p| {
                        let node = pod_node(p).unwrap_or_default();
                        format!(
                            "{} on {node} (node fenced: {}, deleting: {}, ready: {})",
                            p.name_any(),
                            self.fenced.contains(&node),
                            p.metadata.deletion_timestamp.is_some(),
                            pod_ready(p)
                        )
                    })
                    .collect();
                let key = format!(
                    "pods {inst} {:?}",
                    pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
                );
                found.push((
                    key,
                    format!(
                        "instance {inst} has pods on {} nodes, not fenced and removed: {}",
                        live_nodes.len(),
                        desc.join("; ")
                    ),
                ));
            }
        }
        for (key, msg) in found {
            self.violate_once(key, at, "two pods of one instance on two nodes", msg);
        }
    }

    /// Invariant 2: an instance's EndpointSlice never lists two addresses.
    fn check_slices(&mut self, at: Instant) {
        let mut by_service: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in self.slices.live.values() {
            let Some(svc) = s.labels().get("kubernetes.io/service-name") else {
                continue;
            };
            let ns = s.namespace().unwrap_or_default();
            let addrs = by_service.entry(format!("{ns}/{svc}")).or_default();
            for e in s.endpoints.iter().flatten() {
                addrs.extend(e.addresses.iter().cloned());
            }
        }
        let found: Vec<(String, BTreeSet<String>)> = by_service
            .into_iter()
            .filter(|(_, a)| a.len() > 1)
            .collect();
        for (svc, addrs) in found {
            self.violate_once(
                format!("slice {svc} {addrs:?}"),
                at,
                "an EndpointSlice lists two addresses",
                format!("the EndpointSlices of {svc} list {addrs:?}"),
            );
        }
    }

    /// Invariant 3: no ReadWriteOnce volume attached to two nodes.
    fn check_attachments(&mut self, at: Instant) {
        let mut by_volume: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for a in self.attachments.live.values() {
            let attached = a.status.as_ref().is_some_and(|s| s.attached);
            if let (true, Some(pv)) = (attached, a.spec.source.persistent_volume_name.as_ref()) {
                by_volume
                    .entry(pv.clone())
                    .or_default()
                    .insert(a.spec.node_name.clone());
            }
        }
        let found: Vec<(String, BTreeSet<String>)> =
            by_volume.into_iter().filter(|(_, n)| n.len() > 1).collect();
        for (pv, nodes) in found {
            self.violate_once(
                format!("va {pv} {nodes:?}"),
                at,
                "a ReadWriteOnce volume attached to two nodes",
                format!("volume {pv} is attached (attached=true) to {nodes:?}"),
            );
        }
    }

    /// Invariant 5: no out-of-service taint added to a node whose Lease the watcher saw
    /// renewed, on its own clock, within the Lease's duration before the taint appeared.
    fn on_node(&mut self, c: Change<Node>, at: Instant, fresh: bool) {
        self.nodes.apply(&c);
        let now_fenced: BTreeSet<String> = self
            .nodes
            .live
            .values()
            .filter(|n| node_fenced(n))
            .map(|n| n.name_any())
            .collect();
        if let Change::Applied(n) = &c {
            let name = n.name_any();
            if node_fenced(n) && !self.fenced.contains(&name) {
                self.tally.taints_seen += 1;
                if let (true, Some((renewed, duration))) = (fresh, self.renewed.get(&name)) {
                    let age = at.saturating_duration_since(*renewed);
                    if age < *duration {
                        let msg = format!(
                            "node {name} got the out-of-service taint {:.3} s after the watcher saw its Lease renewed (Lease duration {} s)",
                            age.as_secs_f64(),
                            duration.as_secs()
                        );
                        self.violate(at, "a live node fenced", msg);
                    }
                }
            }
        }
        self.fenced = now_fenced;
        self.check_pods(at);
    }

    fn on_instance(&mut self, i: &FailoverClusterInstance, at: Instant) {
        let key = Mirror::key(i);
        let Some(s) = i.status.as_ref() else { return };
        if instance_online(i)
            && let Some(owner) = &s.owner_node
        {
            self.online_on.insert((key.clone(), owner.clone()), at);
        }
        if let Some(m) = &s.current_move {
            if let Some(to) = &m.to {
                let seen = (key.clone(), m.started.0.to_string(), m.planned);
                if !self.moves_checked.contains(&seen) {
                    self.move_to_seen.insert((key.clone(), to.clone()), at);
                }
            }
            self.check_move(&key, m, at);
        }
        for m in &s.history {
            self.check_move(&key, m, at);
            if self
                .moves_counted
                .insert((key.clone(), m.started.0.to_string()))
            {
                if m.reason.to_lowercase().contains("abandoned") {
                    self.tally.abandoned += 1;
                } else if m.from.is_none() {
                    self.tally.placements += 1;
                } else if m.planned {
                    self.tally.planned_moves += 1;
                } else {
                    self.tally.failovers += 1;
                }
            }
        }
    }

    /// Invariants 6 and 7: a move off a node starts only for a fault of that node.
    fn check_move(&mut self, instance: &str, m: &Move, at: Instant) {
        let Some(from) = &m.from else { return };
        if !self
            .moves_checked
            .insert((instance.to_string(), m.started.0.to_string(), m.planned))
        {
            return;
        }
        self.tally.move_starts_checked += 1;
        if let Err(msg) = self.justified(instance, from, m.planned, at) {
            let what = if m.planned {
                "planned move"
            } else {
                "failover"
            };
            if !self.flag_move(instance, from) {
                return;
            }
            let msg = format!(
                "instance {instance}: {what} from {from} (reason {:?}, started {}) {msg}",
                m.reason, m.started.0
            );
            self.violate(at, "a move without a node fault", msg);
        }
    }

    /// Since when a move of `instance` off `from` needs a reason: when it was last seen
    /// online there, or else when a move to there was first seen, or else the start.
    fn window(&self, instance: &str, from: &str) -> (Instant, &'static str) {
        let key = (instance.to_string(), from.to_string());
        match (self.online_on.get(&key), self.move_to_seen.get(&key)) {
            (Some(t), _) => (*t, "it was last seen online there"),
            (None, Some(t)) => (*t, "a move to it was first seen"),
            (None, None) => (self.start, "the start of the run"),
        }
    }

    /// Marks the move of `instance` off `from` reported; false if it already was.
    fn flag_move(&mut self, instance: &str, from: &str) -> bool {
        let since = self.window(instance, from).0;
        self.flagged_moves.insert((
            instance.to_string(),
            from.to_string(),
            since.saturating_duration_since(self.start).as_millis(),
        ))
    }

    fn justified(
        &self,
        instance: &str,
        from: &str,
        planned: bool,
        at: Instant,
    ) -> Result<(), String> {
        let (since, since_what) = self.window(instance, from);
        let window_start = since.checked_sub(self.cfg.slack).unwrap_or(self.start);
        let ok = self.faults.iter().any(|f| {
            f.rec.node.as_deref() == Some(from)
                && f.rec.kind.justifies(planned)
                && f.start <= at
                && f.end.is_none_or(|e| e >= window_start)
        });
        if ok {
            return Ok(());
        }
        let on_node: Vec<String> = self
            .faults
            .iter()
            .filter(|f| f.rec.node.as_deref() == Some(from))
            .map(|f| {
                format!(
                    "{} {:+.1}..{}",
                    f.rec.kind.name(),
                    self.secs(f.start),
                    f.end
                        .map(|e| format!("{:+.1}", self.secs(e)))
                        .unwrap_or_else(|| "now".into())
                )
            })
            .collect();
        let needed = if planned {
            "a kill, NotReady, relabel or cordon"
        } else {
            "a kill (heartbeats stopped)"
        };
        Err(format!(
            "seen at {:+.1} s, but {from} had no fault that justifies it ({needed}) since {since_what} ({:+.1} s); faults injected on {from}: {on_node:?}",
            self.secs(at),
            self.secs(since)
        ))
    }

    fn on_event(&mut self, e: &Event, at: Instant) {
        let Some(why) = e.reason.clone() else { return };
        let uid = e.uid().unwrap_or_else(|| Mirror::key(e));
        let count = e.series.as_ref().map(|s| s.count).unwrap_or(1);
        let before = self.event_counts.get(&uid).copied().unwrap_or(0);
        if count <= before {
            return;
        }
        self.event_counts.insert(uid, count);
        *self.tally.events.entry(why.clone()).or_default() +=
            usize::try_from(count - before).unwrap_or(0);
        let planned = match why.as_str() {
            reason::FAILOVER_STARTED => false,
            reason::PLANNED_MOVE => true,
            _ => return,
        };
        if before > 0 {
            // A repeat: its note is the first occurrence's; the move it announces is
            // judged from the instance's status (`check_move`).
            return;
        }
        let Some(regarding) = e.regarding.as_ref() else {
            return;
        };
        let instance = format!(
            "{}/{}",
            regarding.namespace.clone().unwrap_or_default(),
            regarding.name.clone().unwrap_or_default()
        );
        let note = e.note.clone().unwrap_or_default();
        let Some(from) = move_source_in_note(&note) else {
            self.violate(
                at,
                "a move without a node fault",
                format!("{why} Event on {instance} names no node: {note:?}"),
            );
            return;
        };
        if let Err(msg) = self.justified(&instance, &from, planned, at) {
            if !self.flag_move(&instance, &from) {
                return;
            }
            self.violate(
                at,
                "a move without a node fault",
                format!("{why} Event on {instance} ({note:?}) {msg}"),
            );
        }
    }

    /// Invariant 4, from the audit log: no force delete of a pod and no VolumeAttachment
    /// delete by the controller on a node that was not fenced when the API server received
    /// it.
    fn on_audit(&mut self, r: AuditRecord, at: Instant) {
        self.tally.audit_lines += 1;
        if !r.succeeded() || r.subresource.is_some() {
            return;
        }
        match (r.resource.as_str(), r.verb.as_str()) {
            ("nodes", "delete") => {
                if let Some(name) = r.name {
                    self.audited_node_deleted.insert(name, r.received);
                }
            }
            ("nodes", _) => {
                if let (Some(name), Some(fenced)) = (r.name, r.stored_node_fenced) {
                    let writes = self.audited_fencing.entry(name).or_default();
                    writes.push((r.received, fenced));
                    writes.sort_by_key(|(t, _)| *t);
                }
            }
            ("pods", "delete") if r.user == self.cfg.controller_user => {
                if r.grace_period != Some(0) {
                    return;
                }
                let key = format!(
                    "{}/{}",
                    r.namespace.clone().unwrap_or_default(),
                    r.name.clone().unwrap_or_default()
                );
                let node = r
                    .precondition_uid
                    .as_ref()
                    .and_then(|u| self.pod_node_by_uid.get(u))
                    .or_else(|| self.pod_node_by_name.get(&key))
                    .cloned();
                self.tally.audited_force_pod_deletes += 1;
                self.pending.push(PendingDelete {
                    what: format!("force delete (grace 0) of pod {key}"),
                    node,
                    received: r.received,
                    at,
                });
            }
            ("volumeattachments", "delete") if r.user == self.cfg.controller_user => {
                let name = r.name.clone().unwrap_or_default();
                self.tally.audited_attachment_deletes += 1;
                self.pending.push(PendingDelete {
                    what: format!("delete of VolumeAttachment {name}"),
                    node: self.attachment_node.get(&name).cloned(),
                    received: r.received,
                    at,
                });
            }
            _ => {}
        }
    }

    /// Whether the audit log shows `node` fenced (tainted, or deleted) at `t`.
    fn fenced_at(&self, node: &str, t: jiff::Timestamp) -> bool {
        if self.audited_node_deleted.get(node).is_some_and(|d| *d <= t) {
            return true;
        }
        self.audited_fencing
            .get(node)
            .and_then(|writes| writes.iter().rev().find(|(w, _)| *w <= t))
            .is_some_and(|(_, fenced)| *fenced)
    }

    fn judge_settled_deletes(&mut self, wall: jiff::Timestamp) {
        let settle = jiff::SignedDuration::try_from(self.cfg.audit_settle).unwrap_or_default();
        let (due, later): (Vec<PendingDelete>, Vec<PendingDelete>) = self
            .pending
            .drain(..)
            .partition(|d| d.received.checked_add(settle).is_ok_and(|t| t <= wall));
        self.pending = later;
        for d in due {
            match &d.node {
                None => self.tally.unverified_deletes += 1,
                Some(node) if !self.fenced_at(node, d.received) => {
                    let msg = format!(
                        "{} on node {node} by {}, received {}: the audit log shows {node} not tainted out of service then (its Node writes: {:?})",
                        d.what,
                        self.cfg.controller_user,
                        d.received,
                        self.audited_fencing
                            .get(node.as_str())
                            .cloned()
                            .unwrap_or_default()
                    );
                    self.violate(d.at, "a force delete on a node not fenced", msg);
                }
                Some(_) => {}
            }
        }
    }

    /// Records a line for the history (one per change of what is shown of an object).
    fn remember(&mut self, obs: &Observation) {
        fn line<K: Resource>(
            kind: &str,
            c: &Change<K>,
            show: impl Fn(&K) -> String,
        ) -> Option<(String, String)> {
            let key = |o: &K| {
                format!(
                    "{kind} {}{}",
                    o.meta()
                        .namespace
                        .as_ref()
                        .map(|n| format!("{n}/"))
                        .unwrap_or_default(),
                    o.meta().name.clone().unwrap_or_default()
                )
            };
            match c {
                Change::Applied(o) | Change::Relisted(o) => {
                    Some((key(o), format!("{} {}", key(o), show(o))))
                }
                Change::Deleted(o) => Some((key(o), format!("{} deleted", key(o)))),
                Change::Relist => {
                    Some((format!("{kind} relist"), format!("{kind} watch relisting")))
                }
                Change::RelistDone => None,
                Change::Error(e) => {
                    Some((format!("{kind} error"), format!("{kind} watch error: {e}")))
                }
            }
        }
        let entry = match &obs.what {
            Observed::Pod(c) => line("pod", c, |p| {
                format!(
                    "node={} phase={} ready={} deleting={}",
                    pod_node(p).unwrap_or_default(),
                    p.status
                        .as_ref()
                        .and_then(|s| s.phase.clone())
                        .unwrap_or_default(),
                    pod_ready(p),
                    p.metadata.deletion_timestamp.is_some()
                )
            }),
            Observed::Slice(c) => line("endpointslice", c, |s| {
                let addrs: Vec<&String> = s
                    .endpoints
                    .iter()
                    .flatten()
                    .flat_map(|e| e.addresses.iter())
                    .collect();
                format!("addresses={addrs:?}")
            }),
            Observed::Attachment(c) => line("volumeattachment", c, |a| {
                format!(
                    "pv={} node={} attached={}",
                    a.spec
                        .source
                        .persistent_volume_name
                        .clone()
                        .unwrap_or_default(),
                    a.spec.node_name,
                    a.status.as_ref().is_some_and(|s| s.attached)
                )
            }),
            Observed::Node(c) => line("node", c, |n| {
                let taints: Vec<String> = n
                    .spec
                    .as_ref()
                    .and_then(|s| s.taints.as_ref())
                    .map(|ts| {
                        ts.iter()
                            .map(|t| t.key.trim_start_matches("node.kubernetes.io/").to_string())
                            .collect()
                    })
                    .unwrap_or_default();
                let labels: Vec<String> = n
                    .labels()
                    .iter()
                    .filter(|(k, _)| k.contains("member") || k.contains("alive"))
                    .map(|(k, v)| format!("{}={v}", k.rsplit('/').next().unwrap_or(k)))
                    .collect();
                format!(
                    "ready={} taints={taints:?} unschedulable={} {}",
                    node_ready(n),
                    n.spec
                        .as_ref()
                        .and_then(|s| s.unschedulable)
                        .unwrap_or(false),
                    labels.join(",")
                )
            }),
            // Renewals every second would drown the history; the last one of each node is
            // printed with it.
            Observed::Lease(_) => None,
            Observed::Instance(c) => line("fci", c, |i| {
                let s = i.status.clone().unwrap_or_default();
                let mv = s
                    .current_move
                    .as_ref()
                    .map(|m| {
                        format!(
                            " move {}->{} planned={} ({}) fenced={} oldPodGone={} detached={} podCreated={}",
                            m.from.clone().unwrap_or_default(),
                            m.to.clone().unwrap_or_default(),
                            m.planned,
                            m.reason,
                            m.fenced.is_some(),
                            m.old_pod_gone.is_some(),
                            m.volumes_detached.is_some(),
                            m.pod_created.is_some()
                        )
                    })
                    .unwrap_or_default();
                let cond = s
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Online")
                    .map(|c| c.reason.clone())
                    .unwrap_or_default();
                format!(
                    "phase={:?} owner={} endpoint={} online-reason={cond}{mv}",
                    s.phase,
                    s.owner_node.unwrap_or_default(),
                    s.served.and_then(|v| v.endpoint).unwrap_or_default()
                )
            }),
            Observed::Event(c) => line("event", c, |e| {
                format!(
                    "{} {} x{}: {}",
                    e.reason.clone().unwrap_or_default(),
                    e.regarding
                        .as_ref()
                        .and_then(|r| r.name.clone())
                        .unwrap_or_default(),
                    e.series.as_ref().map(|s| s.count).unwrap_or(1),
                    e.note.clone().unwrap_or_default()
                )
            }),
            Observed::Audit(r) => {
                let interesting = r.resource != "nodes" || r.stored_node_fenced.is_some();
                interesting.then(|| {
                    (
                        format!("audit {}", r.received),
                        format!(
                            "audit {} {} {}/{} by {} ({}) code={} grace={:?} uid={:?} fenced-after={:?} received={}",
                            r.verb,
                            r.resource,
                            r.namespace.clone().unwrap_or_default(),
                            r.name.clone().unwrap_or_default(),
                            r.user,
                            r.user_agent.clone().unwrap_or_default().split(' ').next().unwrap_or_default(),
                            r.code.unwrap_or(0),
                            r.grace_period,
                            r.precondition_uid,
                            r.stored_node_fenced,
                            r.received
                        ),
                    )
                })
            }
            Observed::FaultStarted(f) => {
                self.push_fault(obs.at, format!("FAULT {f}"));
                None
            }
            Observed::FaultEnded { id, detail } => {
                let what = self
                    .faults
                    .iter()
                    .find(|f| f.rec.id == *id)
                    .map(|f| {
                        format!(
                            "{} {}",
                            f.rec.kind.name(),
                            f.rec.node.clone().unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                self.push_fault(obs.at, format!("HEALED #{id} {what} {detail}"));
                None
            }
            Observed::External { invariant, message } => {
                Some((String::new(), format!("{invariant}: {message}")))
            }
            Observed::Note(n) => Some((String::new(), n.clone())),
        };
        let Some((key, text)) = entry else { return };
        if !key.is_empty() && self.last_line.get(&key) == Some(&text) {
            return;
        }
        if !key.is_empty() {
            self.last_line.insert(key, text.clone());
        }
        self.push_line(obs.at, obs.fresh, text);
    }

    fn push_line(&mut self, at: Instant, fresh: bool, text: String) {
        let text = if fresh {
            text
        } else {
            format!("{text} [relisted/late]")
        };
        if self.echo {
            println!("  {:>+9.3} s  {text}", self.secs(at));
        }
        self.recent.push_back((at, text));
        while self.recent.len() > self.cfg.history {
            self.recent.pop_front();
        }
    }

    fn push_fault(&mut self, at: Instant, text: String) {
        self.recent_faults.push_back((at, text));
        while self.recent_faults.len() > self.cfg.history {
            self.recent_faults.pop_front();
        }
    }

    /// The recent history: the last watcher events and faults, in time order, then the last
    /// Lease renewal the watcher saw of each node.
    pub fn history(&self) -> String {
        let mut all: Vec<&(Instant, String)> = self
            .recent
            .iter()
            .chain(self.recent_faults.iter())
            .collect();
        all.sort_by_key(|(t, _)| *t);
        let mut out = String::new();
        for (t, line) in all {
            let _ = writeln!(out, "  {:>+9.3} s  {line}", self.secs(*t));
        }
        let _ = writeln!(out, "  last Lease renewal seen (watcher's clock):");
        for (node, (t, _)) in &self.renewed {
            let _ = writeln!(out, "    {node}: {:+.3} s", self.secs(*t));
        }
        out
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const CONTROLLER: &str = "system:serviceaccount:kube-failover:kube-failover";

    struct Feed {
        c: Checker,
        t0: Instant,
        wall0: jiff::Timestamp,
    }

    impl Feed {
        fn new() -> Self {
            let t0 = Instant::now();
            Self {
                c: Checker::new(CheckerConfig::new(CONTROLLER), t0),
                t0,
                wall0: jiff::Timestamp::now(),
            }
        }

        fn at(&mut self, secs: f64, what: Observed) -> Vec<Violation> {
            let d = Duration::from_secs_f64(secs);
            self.c.observe(Observation {
                at: self.t0 + d,
                wall: self.wall0 + jiff::SignedDuration::try_from(d).unwrap(),
                fresh: true,
                what,
            })
        }

        fn wall(&self, secs: f64) -> jiff::Timestamp {
            self.wall0 + jiff::SignedDuration::from_secs_f64(secs)
        }
    }

    fn node(name: &str, fenced: bool) -> Node {
        let taints = if fenced {
            serde_json::json!([{"key": OUT_OF_SERVICE_TAINT, "value": "nodeshutdown", "effect": "NoExecute"}])
        } else {
            serde_json::json!([])
        };
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"taints": taints}
        }))
        .unwrap()
    }

    fn pod(name: &str, instance: &str, node: &str, deleting: bool) -> Pod {
        let mut meta = serde_json::json!({
            "name": name, "namespace": "chaos", "uid": format!("uid-{name}"),
            "labels": {INSTANCE_LABEL: instance}
        });
        if deleting {
            meta["deletionTimestamp"] = serde_json::json!("2026-01-01T00:00:00Z");
        }
        serde_json::from_value(serde_json::json!({
            "metadata": meta,
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
            "status": {"phase": "Running"}
        }))
        .unwrap()
    }

    fn nodes(f: &mut Feed, fenced: &[&str]) {
        for n in ["a", "b", "c"] {
            f.at(
                0.0,
                Observed::Node(Change::Applied(node(n, fenced.contains(&n)))),
            );
        }
    }

    #[test]
    fn two_pods_of_one_instance_on_two_unfenced_nodes_is_a_violation() {
        let mut f = Feed::new();
        nodes(&mut f, &[]);
        assert!(
            f.at(
                1.0,
                Observed::Pod(Change::Applied(pod("db-1", "db", "a", false)))
            )
            .is_empty()
        );
        let v = f.at(
            2.0,
            Observed::Pod(Change::Applied(pod("db-2", "db", "b", false))),
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].invariant, "two pods of one instance on two nodes");
        assert!(
            v[0].message.contains("db-1 on a") && v[0].message.contains("db-2 on b"),
            "{}",
            v[0].message
        );
        // Still the same state: reported once.
        assert!(
            f.at(
                3.0,
                Observed::Pod(Change::Applied(pod("db-2", "db", "b", false)))
            )
            .is_empty()
        );
    }

    #[test]
    fn a_pod_being_removed_from_a_fenced_node_is_excused_and_only_that() {
        let mut f = Feed::new();
        nodes(&mut f, &["a"]);
        f.at(
            1.0,
            Observed::Pod(Change::Applied(pod("db-1", "db", "a", true))),
        );
        assert!(
            f.at(
                2.0,
                Observed::Pod(Change::Applied(pod("db-2", "db", "b", false)))
            )
            .is_empty()
        );
        // Fenced but not being removed: no excuse.
        let mut f = Feed::new();
        nodes(&mut f, &["a"]);
        f.at(
            1.0,
            Observed::Pod(Change::Applied(pod("db-1", "db", "a", false))),
        );
        assert_eq!(
            f.at(
                2.0,
                Observed::Pod(Change::Applied(pod("db-2", "db", "b", false)))
            )
            .len(),
            1
        );
        // Being removed but not fenced: no excuse.
        let mut f = Feed::new();
        nodes(&mut f, &[]);
        f.at(
            1.0,
            Observed::Pod(Change::Applied(pod("db-1", "db", "a", true))),
        );
        assert_eq!(
            f.at(
                2.0,
                Observed::Pod(Change::Applied(pod("db-2", "db", "b", false)))
            )
            .len(),
            1
        );
        // Two instances on two nodes are fine.
        let mut f = Feed::new();
        nodes(&mut f, &[]);
        f.at(
            1.0,
            Observed::Pod(Change::Applied(pod("db-1", "db", "a", false))),
        );
        assert!(
            f.at(
                2.0,
                Observed::Pod(Change::Applied(pod("web-1", "web", "b", false)))
            )
            .is_empty()
        );
    }

    #[test]
    fn an_endpoint_slice_with_two_addresses_is_a_violation() {
        let mut f = Feed::new();
        let slice = |addrs: &[&str]| -> EndpointSlice {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "db", "namespace": "chaos", "labels": {"kubernetes.io/service-name": "db"}},
                "addressType": "IPv4",
                "endpoints": addrs.iter().map(|a| serde_json::json!({"addresses": [a]})).collect::<Vec<_>>()
            }))
            .unwrap()
        };
        assert!(
            f.at(1.0, Observed::Slice(Change::Applied(slice(&["10.0.0.1"]))))
                .is_empty()
        );
        assert!(
            f.at(2.0, Observed::Slice(Change::Applied(slice(&[]))))
                .is_empty()
        );
        let v = f.at(
            3.0,
            Observed::Slice(Change::Applied(slice(&["10.0.0.1", "10.0.0.2"]))),
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].invariant, "an EndpointSlice lists two addresses");
    }

    #[test]
    fn a_volume_attached_to_two_nodes_is_a_violation() {
        let mut f = Feed::new();
        let va = |name: &str, node: &str, attached: bool| -> VolumeAttachment {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name},
                "spec": {"attacher": "x", "nodeName": node, "source": {"persistentVolumeName": "pv-1"}},
                "status": {"attached": attached}
            }))
            .unwrap()
        };
        f.at(
            1.0,
            Observed::Attachment(Change::Applied(va("va-a", "a", true))),
        );
        assert!(
            f.at(
                2.0,
                Observed::Attachment(Change::Applied(va("va-b", "b", false)))
            )
            .is_empty()
        );
        let v = f.at(
            3.0,
            Observed::Attachment(Change::Applied(va("va-b", "b", true))),
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            f.at(
                4.0,
                Observed::Attachment(Change::Deleted(va("va-a", "a", true)))
            )
            .is_empty()
        );
    }

    fn node_write(f: &Feed, node: &str, at: f64, fenced: bool) -> Observed {
        Observed::Audit(AuditRecord {
            verb: "update".into(),
            resource: "nodes".into(),
            name: Some(node.into()),
            user: CONTROLLER.into(),
            code: Some(200),
            received: f.wall(at),
            stored_node_fenced: Some(fenced),
            ..Default::default()
        })
    }

    fn force_delete(f: &Feed, pod: &str, at: f64, user: &str) -> Observed {
        Observed::Audit(AuditRecord {
            verb: "delete".into(),
            resource: "pods".into(),
            namespace: Some("chaos".into()),
            name: Some(pod.into()),
            user: user.into(),
            code: Some(200),
            received: f.wall(at),
            grace_period: Some(0),
            precondition_uid: Some(format!("uid-{pod}")),
            ..Default::default()
        })
    }

    #[test]
    fn a_force_delete_by_the_controller_on_an_unfenced_node_is_a_violation() {
        let mut f = Feed::new();
        nodes(&mut f, &[]);
        f.at(
            1.0,
            Observed::Pod(Change::Applied(pod("db-1", "db", "a", false))),
        );
        f.at(
            1.0,
            Observed::Pod(Change::Applied(pod("db-2", "db", "b", false))),
        );
        let fenced_a = node_write(&f, "a", 2.0, true);
        f.at(2.1, fenced_a);
        // On the fenced node: fine; by someone else on an unfenced one: not ours to judge.
        let d1 = force_delete(&f, "db-1", 3.0, CONTROLLER);
        let d2 = force_delete(&f, "db-2", 3.0, "kube-failover-admin");
        f.at(3.1, d1);
        f.at(3.1, d2);
        assert!(f.at(10.0, Observed::Note("later".into())).is_empty());
        // By the controller on the unfenced node b: judged once the log has settled.
        let d3 = force_delete(&f, "db-2", 11.0, CONTROLLER);
        assert!(
            f.at(11.1, d3).is_empty(),
            "not judged before the log settles"
        );
        let v = f.at(15.0, Observed::Note("later".into()));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].invariant, "a force delete on a node not fenced");
        // Unfenced again, then deleted: a violation too.
        let unfenced_a = node_write(&f, "a", 16.0, false);
        f.at(16.1, unfenced_a);
        let d4 = force_delete(&f, "db-1", 17.0, CONTROLLER);
        f.at(17.1, d4);
        assert_eq!(f.c.finish().len(), 1);
    }

    #[test]
    fn a_taint_right_after_a_renewal_is_a_violation_and_after_a_silence_is_not() {
        let lease = |node: &str, renew: &str| -> Lease {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": node, "namespace": "kube-node-lease"},
                "spec": {"renewTime": renew, "leaseDurationSeconds": 4}
            }))
            .unwrap()
        };
        let mut f = Feed::new();
        nodes(&mut f, &[]);
        // The renewTime is minutes behind (a skewed clock): what counts is that it changed.
        f.at(
            1.0,
            Observed::Lease(Change::Applied(lease("a", "2020-01-01T00:00:00.000000Z"))),
        );
        f.at(
            2.0,
            Observed::Lease(Change::Applied(lease("a", "2020-01-01T00:00:01.000000Z"))),
        );
        let v = f.at(3.0, Observed::Node(Change::Applied(node("a", true))));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].invariant, "a live node fenced");
        // Node b: last renewal long before the taint.
        f.at(
            4.0,
            Observed::Lease(Change::Applied(lease("b", "2026-01-01T00:00:00.000000Z"))),
        );
        assert!(
            f.at(12.0, Observed::Node(Change::Applied(node("b", true))))
                .is_empty()
        );
    }

    fn fci(owner: &str, mv: Option<serde_json::Value>, online: bool) -> FailoverClusterInstance {
        let mut status = serde_json::json!({
            "phase": if online { "Online" } else { "Moving" },
            "ownerNode": owner,
            "served": {"dnsName": "db.chaos.svc", "endpoint": "10.0.0.1"},
        });
        if let Some(m) = mv {
            status["move"] = m;
        }
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverClusterInstance",
            "metadata": {"name": "db", "namespace": "chaos"},
            "spec": {"clusterRef": "c", "networkName": {"name": "db", "ports": [{"name": "p", "port": 1}]},
                     "template": {}},
            "status": status
        }))
        .unwrap()
    }

    fn mv(from: &str, planned: bool, started: &str) -> serde_json::Value {
        serde_json::json!({"from": from, "to": "b", "reason": "NodeDown: LeaseStale", "planned": planned, "started": started})
    }

    fn fault(id: u64, kind: FaultKind, node: &str) -> Observed {
        Observed::FaultStarted(FaultRecord {
            id,
            kind,
            node: Some(node.into()),
            detail: String::new(),
        })
    }

    #[test]
    fn a_move_needs_a_node_fault_of_the_right_kind_since_the_instance_was_online_there() {
        // No fault at all: a leader change, a restart or an API server restart alone.
        let mut f = Feed::new();
        f.at(
            1.0,
            Observed::Instance(Change::Applied(fci("a", None, true))),
        );
        f.at(
            2.0,
            Observed::FaultStarted(FaultRecord {
                id: 1,
                kind: FaultKind::ApiServerRestart,
                node: None,
                detail: String::new(),
            }),
        );
        let v = f.at(
            3.0,
            Observed::Instance(Change::Applied(fci(
                "a",
                Some(mv("a", false, "2026-01-01T00:00:00.000000Z")),
                false,
            ))),
        );
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].invariant, "a move without a node fault");

        // A kill justifies a failover.
        let mut f = Feed::new();
        f.at(
            1.0,
            Observed::Instance(Change::Applied(fci("a", None, true))),
        );
        f.at(2.0, fault(1, FaultKind::NodeKill, "a"));
        assert!(
            f.at(
                9.0,
                Observed::Instance(Change::Applied(fci(
                    "a",
                    Some(mv("a", false, "2026-01-01T00:00:00.000000Z")),
                    false
                )))
            )
            .is_empty()
        );

        // A skewed clock justifies nothing; NotReady justifies a planned move only.
        let mut f = Feed::new();
        f.at(
            1.0,
            Observed::Instance(Change::Applied(fci("a", None, true))),
        );
        f.at(2.0, fault(1, FaultKind::NodeSkew, "a"));
        assert_eq!(
            f.at(
                9.0,
                Observed::Instance(Change::Applied(fci(
                    "a",
                    Some(mv("a", false, "2026-01-01T00:00:00.000000Z")),
                    false
                )))
            )
            .len(),
            1
        );
        let mut f = Feed::new();
        f.at(
            1.0,
            Observed::Instance(Change::Applied(fci("a", None, true))),
        );
        f.at(2.0, fault(1, FaultKind::NodeNotReady, "a"));
        assert!(
            f.at(
                9.0,
                Observed::Instance(Change::Applied(fci(
                    "a",
                    Some(mv("a", true, "2026-01-01T00:00:00.000000Z")),
                    false
                )))
            )
            .is_empty()
        );
        // ... and the same move escalated to a failover (the node went silent) is not.
        assert_eq!(
            f.at(
                10.0,
                Observed::Instance(Change::Applied(fci(
                    "a",
                    Some(mv("a", false, "2026-01-01T00:00:00.000000Z")),
                    false
                )))
            )
            .len(),
            1
        );

        // A fault healed long before the instance was last online there does not count.
        let mut f = Feed::new();
        f.at(1.0, fault(1, FaultKind::NodeKill, "a"));
        f.at(
            5.0,
            Observed::FaultEnded {
                id: 1,
                detail: String::new(),
            },
        );
        f.at(
            60.0,
            Observed::Instance(Change::Applied(fci("a", None, true))),
        );
        assert_eq!(
            f.at(
                70.0,
                Observed::Instance(Change::Applied(fci(
                    "a",
                    Some(mv("a", false, "2026-01-01T00:01:00.000000Z")),
                    false
                )))
            )
            .len(),
            1
        );
    }

    #[test]
    fn a_failover_event_from_a_node_without_a_fault_is_a_violation() {
        let event = |reason_: &str, note: &str, count: Option<i32>| -> Event {
            let mut e = serde_json::json!({
                "metadata": {"name": "db.1", "namespace": "chaos", "uid": "e1"},
                "eventTime": "2026-01-01T00:00:00.000000Z",
                "reason": reason_, "note": note,
                "regarding": {"kind": "FailoverClusterInstance", "namespace": "chaos", "name": "db"},
            });
            if let Some(c) = count {
                e["series"] = serde_json::json!({"count": c, "lastObservedTime": "2026-01-01T00:00:01.000000Z"});
            }
            serde_json::from_value(e).unwrap()
        };
        let mut f = Feed::new();
        f.at(
            1.0,
            Observed::Instance(Change::Applied(fci("a", None, true))),
        );
        f.at(2.0, fault(1, FaultKind::NodeCordon, "a"));
        assert!(
            f.at(
                3.0,
                Observed::Event(Change::Applied(event(
                    reason::PLANNED_MOVE,
                    "moving from a (Unschedulable) to b",
                    None
                )))
            )
            .is_empty()
        );
        // A repeat of the same Event keeps its first note: counted, judged from the status.
        let v = f.at(
            4.0,
            Observed::Event(Change::Applied(event(
                reason::PLANNED_MOVE,
                "moving from c (Unschedulable) to b",
                Some(2),
            ))),
        );
        assert!(v.is_empty(), "{v:?}");
        let mut e = event(
            reason::FAILOVER_STARTED,
            "owner c is down (LeaseStale); failing over",
            None,
        );
        e.metadata.uid = Some("e2".into());
        let v = f.at(5.0, Observed::Event(Change::Applied(e)));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(f.c.tally.events.get(reason::FAILOVER_STARTED), Some(&1));
        assert_eq!(f.c.tally.events.get(reason::PLANNED_MOVE), Some(&2));
        assert_eq!(
            move_source_in_note("node-3 went silent during a graceful move; failing over, fenced")
                .as_deref(),
            Some("node-3")
        );
    }
}
