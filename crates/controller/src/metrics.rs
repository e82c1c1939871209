//! Prometheus metrics of the controller, all named `kube_failover_*`.
//!
//! Who sets what:
//! - counters and histograms: the replica that did it (each finished move is counted by the
//!   replica whose status write ended it, once: a second write of the same status conflicts);
//! - the per-cluster gauges (quorum votes, member states, agents, `Resilient`):
//!   [`Metrics::record_cluster`], from the status the leader computes; a replica that is not
//!   the leader exports none (they are dropped at scrape time, see [`Metrics::retain_clusters`]);
//! - instances by phase, moves in progress, fence taints and leadership: at scrape time,
//!   from this replica's caches ([`Metrics::record_instances`], [`Metrics::record_fences`],
//!   [`Metrics::record_leader`]).
//!
//! Labels are bounded: cluster, node, step, phase, state, kind; never an instance's name.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube_failover_core::api::{
    AgentState, FailoverClusterInstanceStatus, FailoverClusterStatus, MemberState, Move, condition,
};
use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabel {
    pub watch: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    pub verb: String,
    /// The resource, with its subresource if any (`pods`, `failoverclusterinstances/status`).
    pub resource: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabel {
    pub cluster: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberLabels {
    pub cluster: String,
    pub node: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MemberStateLabels {
    pub cluster: String,
    pub node: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NodeLabel {
    pub node: String,
}

/// `kind`: `placement`, `planned` or `unplanned` (see [`move_kind`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterKindLabels {
    pub cluster: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    pub step: String,
    pub kind: String,
}

/// A gauge of seconds or of a Unix time.
type SecondsGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Buckets of the move durations, in seconds: from a simulated node's milliseconds to a
/// stuck move's minutes.
const MOVE_BUCKETS: [f64; 14] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// The `kind` of a move (see [`move_kind`]).
const MOVE_KINDS: [&str; 3] = ["placement", "planned", "unplanned"];

/// The member states, as `kube_failover_member_state{state}` names them.
const MEMBER_STATES: [(MemberState, &str); 4] = [
    (MemberState::Up, "Up"),
    (MemberState::Down, "Down"),
    (MemberState::Paused, "Paused"),
    (MemberState::Fenced, "Fenced"),
];

pub struct Metrics {
    registry: Registry,
    /// The name and type of each family, as registered.
    families: Vec<(String, MetricType)>,
    /// Requests this replica sent to the API server, by verb (get, list, watch, create,
    /// update, patch, delete) and resource.
    pub api_requests: Family<VerbLabel, Counter>,
    pub failovers: Family<ReasonLabel, Counter>,
    pub failover_duration: Histogram,
    pub instances: Family<PhaseLabel, Gauge>,
    pub reconcile_errors: Family<ErrorLabel, Counter>,
    pub reconcile_duration: Histogram,
    /// Objects each watch saw changed or deleted (its lists aside): what wakes reconciles.
    watch_changes: Family<WatchLabel, Counter>,
    /// Finished moves by cluster and kind (placement, planned, unplanned).
    pub moves: Family<ClusterKindLabels, Counter>,
    /// Each step of each finished move, by step and kind.
    pub move_step_duration: Family<StepLabels, Histogram, fn() -> Histogram>,
    /// Instances with a move in progress, by kind.
    pub moving_instances: Family<KindLabel, Gauge>,
    /// When the oldest move in progress of each kind started (Unix seconds).
    pub moving_since: Family<KindLabel, SecondsGauge>,
    /// 1 while this replica is the leader.
    pub leader: Gauge,
    /// When the controller's out-of-service taint was set on a node (Unix seconds).
    pub fenced_since: Family<NodeLabel, SecondsGauge>,
    /// When the controller may remove its taint from a node that is healthy again.
    pub unfence_due: Family<NodeLabel, SecondsGauge>,
    pub quorum_votes: Family<ClusterLabel, Gauge>,
    pub quorum_votes_heard: Family<ClusterLabel, Gauge>,
    pub quorum_votes_required: Family<ClusterLabel, Gauge>,
    pub member_state: Family<MemberStateLabels, Gauge>,
    pub member_agent_down: Family<MemberLabels, Gauge>,
    pub cluster_resilient: Family<ClusterLabel, Gauge>,
    /// The clusters [`Metrics::record_cluster`] exports, and their members: what to remove
    /// when a member or a cluster is gone.
    recorded: Mutex<BTreeMap<String, BTreeSet<String>>>,
}

/// The prefix of every metric's name.
const PREFIX: &str = "kube_failover";

/// The registry being filled, and the name and type of each family registered.
struct Registering {
    registry: Registry,
    families: Vec<(String, MetricType)>,
}

impl Registering {
    fn add<M: Metric + Clone>(&mut self, name: &str, help: &str, metric: M) -> M {
        self.families
            .push((format!("{PREFIX}_{name}"), metric.metric_type()));
        self.registry.register(name, help, metric.clone());
        metric
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut r = Registering {
            registry: Registry::with_prefix(PREFIX),
            families: Vec::new(),
        };
        let failovers = r.add("failovers", "Moves finished, by reason", Family::default());
        let failover_duration = r.add(
            "failover_duration_seconds",
            "Time from the start of a failover to the instance online again",
            Histogram::new([
                0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
            ]),
        );
        let instances = r.add("instances", "Instances by phase", Family::default());
        let reconcile_errors = r.add(
            "reconcile_errors",
            "Failed reconciles, by error",
            Family::default(),
        );
        let reconcile_duration = r.add(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
        );
        let watch_changes = r.add(
            "watch_changes",
            "Objects a watch saw changed or deleted since it started (its lists aside), by watch",
            Family::default(),
        );
        let api_requests = r.add(
            "api_requests",
            "Requests sent to the Kubernetes API server, by verb and resource",
            Family::default(),
        );
        let moves = r.add(
            "moves",
            "Moves finished, by cluster and kind: placement, planned (graceful, nothing fenced) or unplanned (a failover)",
            Family::default(),
        );
        let move_step_duration = r.add(
            "move_step_duration_seconds",
            "Time each step of a finished move took, from the end of the step before it (the move's start for the first) to its own, by step (WithdrawEndpoint, Fence, StopOldPod, Detach, StartPod, Publish) and kind; a move records no time for ChooseOwner, which is counted in StartPod",
            Family::<StepLabels, Histogram>::new_with_constructor(
                (|| Histogram::new(MOVE_BUCKETS)) as fn() -> Histogram,
            ),
        );
        let moving_instances = r.add(
            "moving_instances",
            "Instances with a move in progress, by kind",
            Family::default(),
        );
        let moving_since = r.add(
            "moving_since_timestamp_seconds",
            "When the oldest move in progress of each kind started, in Unix seconds",
            Family::default(),
        );
        let leader = r.add(
            "leader",
            "1 while this replica is the leader, 0 while it stands by",
            Gauge::default(),
        );
        let fenced_since = r.add(
            "fenced_since_timestamp_seconds",
            "When the controller tainted a member node out of service (node.kubernetes.io/out-of-service), in Unix seconds, while the taint is on",
            Family::default(),
        );
        let unfence_due = r.add(
            "unfence_due_timestamp_seconds",
            "When the controller may remove the out-of-service taint it set on a node that heartbeats and is Ready again (fencing.unfenceAfterSeconds after that), in Unix seconds",
            Family::default(),
        );
        let quorum_votes = r.add(
            "quorum_votes",
            "Votes of the cluster: its voting members and its witness",
            Family::default(),
        );
        let quorum_votes_heard = r.add(
            "quorum_votes_heard",
            "Votes heard: voting members Up or Paused, and the witness when heard from",
            Family::default(),
        );
        let quorum_votes_required = r.add(
            "quorum_votes_required",
            "Votes automatic failover needs (quorum.minHealthy)",
            Family::default(),
        );
        let member_state = r.add(
            "member_state",
            "1 for the state each member node is in (Up, Down, Paused, Fenced), 0 for the others",
            Family::default(),
        );
        let member_agent_down = r.add(
            "member_agent_down",
            "1 while the node agent of a member is down (its Lease not renewed), 0 while it renews; absent where no agent runs",
            Family::default(),
        );
        let cluster_resilient = r.add(
            "cluster_resilient",
            "1 when every instance would have a place to go should any one member fail (condition Resilient), 0 when not",
            Family::default(),
        );
        Self {
            registry: r.registry,
            families: r.families,
            api_requests,
            failovers,
            failover_duration,
            instances,
            reconcile_errors,
            reconcile_duration,
            watch_changes,
            moves,
            move_step_duration,
            moving_instances,
            moving_since,
            leader,
            fenced_since,
            unfence_due,
            quorum_votes,
            quorum_votes_heard,
            quorum_votes_required,
            member_state,
            member_agent_down,
            cluster_resilient,
            recorded: Mutex::new(BTreeMap::new()),
        }
    }
}

/// A node carrying the out-of-service taint this controller set, as [`Metrics::record_fences`]
/// exports it.
#[derive(Clone, Debug, PartialEq)]
pub struct FenceTaint {
    pub node: String,
    /// When it was set (the node's `kube-failover.io/fenced-at`).
    pub since: Option<jiff::Timestamp>,
    /// When the controller may remove it, once the node is healthy again.
    pub unfence_due: Option<jiff::Timestamp>,
}

/// `placement`, `planned` or `unplanned`: the `kind` label of a move.
pub fn move_kind(m: &Move) -> &'static str {
    match (m.from.is_some(), m.planned) {
        (false, _) => "placement",
        (true, true) => "planned",
        (true, false) => "unplanned",
    }
}

/// The steps of a move and how long each took, in seconds: from the end of the step before
/// it (the latest time recorded so far; the move's start for the first) to its own time, 0
/// when it was recorded no later. So the steps of a finished move add up to its duration.
/// Steps the move did not record (no fencing in a planned move, an ended move's last
/// steps) are left out; ChooseOwner records no time, so its part is in StartPod's.
pub fn step_durations(m: &Move) -> Vec<(&'static str, f64)> {
    let steps: [(&'static str, &Option<MicroTime>); 6] = [
        ("WithdrawEndpoint", &m.endpoint_withdrawn),
        ("Fence", &m.fenced),
        ("StopOldPod", &m.old_pod_gone),
        ("Detach", &m.volumes_detached),
        ("StartPod", &m.pod_created),
        ("Publish", &m.online),
    ];
    let mut previous = m.started.0;
    let mut out = Vec::new();
    for (step, at) in steps {
        let Some(at) = at else { continue };
        let took = previous.duration_until(at.0).as_secs_f64().max(0.0);
        previous = previous.max(at.0);
        out.push((step, took));
    }
    out
}

fn unix_seconds(t: jiff::Timestamp) -> f64 {
    t.as_millisecond() as f64 / 1000.0
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Every gauge of `cluster`, from its status: the quorum's votes (total, heard,
    /// required), each member's state and its agent's, and whether the cluster is
    /// `Resilient` (1, 0; nothing while the condition is absent or Unknown). Series of
    /// members the status no longer lists are removed.
    pub fn record_cluster(&self, cluster: &str, status: &FailoverClusterStatus) {
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        let c = ClusterLabel {
            cluster: cluster.to_string(),
        };
        match &status.quorum {
            Some(q) => {
                self.quorum_votes.get_or_create(&c).set(i64::from(q.total));
                self.quorum_votes_heard
                    .get_or_create(&c)
                    .set(i64::from(q.healthy));
                self.quorum_votes_required
                    .get_or_create(&c)
                    .set(i64::from(q.required));
            }
            None => {
                self.quorum_votes.remove(&c);
                self.quorum_votes_heard.remove(&c);
                self.quorum_votes_required.remove(&c);
            }
        }
        let resilient = status
            .conditions
            .iter()
            .find(|c| c.type_ == condition::RESILIENT)
            .and_then(|c| match c.status.as_str() {
                "True" => Some(1),
                "False" => Some(0),
                _ => None,
            });
        match resilient {
            Some(v) => {
                self.cluster_resilient.get_or_create(&c).set(v);
            }
            None => {
                self.cluster_resilient.remove(&c);
            }
        }
        // The cluster's move counters exist from 0 on, so that its first move is an increase.
        for kind in MOVE_KINDS {
            let _ = self.moves.get_or_create(&ClusterKindLabels {
                cluster: cluster.to_string(),
                kind: kind.to_string(),
            });
        }
        let listed: BTreeSet<String> = status.members.iter().map(|m| m.name.clone()).collect();
        let before = recorded.insert(cluster.to_string(), listed.clone());
        for gone in before.unwrap_or_default().difference(&listed) {
            self.remove_member(cluster, gone);
        }
        for m in &status.members {
            for (state, name) in MEMBER_STATES {
                self.member_state
                    .get_or_create(&MemberStateLabels {
                        cluster: cluster.to_string(),
                        node: m.name.clone(),
                        state: name.to_string(),
                    })
                    .set(i64::from(m.state == state));
            }
            let member = MemberLabels {
                cluster: cluster.to_string(),
                node: m.name.clone(),
            };
            match m.agent {
                Some(agent) => {
                    self.member_agent_down
                        .get_or_create(&member)
                        .set(i64::from(agent == AgentState::Down));
                }
                None => {
                    self.member_agent_down.remove(&member);
                }
            }
        }
    }

    fn remove_member(&self, cluster: &str, node: &str) {
        for (_, state) in MEMBER_STATES {
            self.member_state.remove(&MemberStateLabels {
                cluster: cluster.to_string(),
                node: node.to_string(),
                state: state.to_string(),
            });
        }
        self.member_agent_down.remove(&MemberLabels {
            cluster: cluster.to_string(),
            node: node.to_string(),
        });
    }

    /// Removes every series [`Metrics::record_cluster`] set for the clusters `keep` turns
    /// down: clusters deleted, or all of them on a replica that is not the leader (whose
    /// figures would be stale).
    pub fn retain_clusters(&self, keep: impl Fn(&str) -> bool) {
        let mut recorded = self.recorded.lock().unwrap_or_else(|e| e.into_inner());
        let gone: Vec<String> = recorded.keys().filter(|c| !keep(c)).cloned().collect();
        for cluster in gone {
            let members = recorded.remove(&cluster).unwrap_or_default();
            for node in &members {
                self.remove_member(&cluster, node);
            }
            let c = ClusterLabel { cluster };
            self.quorum_votes.remove(&c);
            self.quorum_votes_heard.remove(&c);
            self.quorum_votes_required.remove(&c);
            self.cluster_resilient.remove(&c);
        }
    }

    /// Counts the moves a status write of the instance of `cluster` finished: those in
    /// `written`'s history that were not in `before`'s. Called only after that write
    /// succeeded: another write of the same change (another replica, a later round) is
    /// refused as a conflict or finds the move already in the history, so each move is
    /// counted once.
    pub fn record_finished_moves(
        &self,
        cluster: &str,
        before: Option<&FailoverClusterInstanceStatus>,
        written: &FailoverClusterInstanceStatus,
    ) {
        // The history keeps the last moves, newest last: those that started after every
        // move it held before are the ones this write appended.
        let newest_known = before.and_then(|s| s.history.iter().map(|m| m.started.0).max());
        for m in &written.history {
            if newest_known.is_none_or(|t| m.started.0 > t) {
                self.record_move(cluster, m);
            }
        }
    }

    fn record_move(&self, cluster: &str, m: &Move) {
        let kind = move_kind(m);
        self.moves
            .get_or_create(&ClusterKindLabels {
                cluster: cluster.to_string(),
                kind: kind.to_string(),
            })
            .inc();
        for (step, took) in step_durations(m) {
            self.move_step_duration
                .get_or_create(&StepLabels {
                    step: step.to_string(),
                    kind: kind.to_string(),
                })
                .observe(took);
        }
        if m.from.is_some() {
            let reason = m.reason.split(':').next().unwrap_or("Unknown").to_string();
            self.failovers.get_or_create(&ReasonLabel { reason }).inc();
            if let Some(online) = &m.online {
                self.failover_duration
                    .observe(online.0.duration_since(m.started.0).as_secs_f64());
            }
        }
    }

    /// Instances by phase, and the moves in progress by kind with the start of the oldest.
    pub fn record_instances<'a>(
        &self,
        statuses: impl IntoIterator<Item = Option<&'a FailoverClusterInstanceStatus>>,
    ) {
        let mut phases: BTreeMap<String, i64> = BTreeMap::new();
        let mut moving: BTreeMap<&'static str, (i64, jiff::Timestamp)> = BTreeMap::new();
        for status in statuses {
            let phase = status.map(|s| s.phase).unwrap_or_default();
            *phases.entry(format!("{phase:?}")).or_default() += 1;
            if let Some(m) = status.and_then(|s| s.current_move.as_ref()) {
                let e = moving.entry(move_kind(m)).or_insert((0, m.started.0));
                e.0 += 1;
                e.1 = e.1.min(m.started.0);
            }
        }
        self.instances.clear();
        for (phase, n) in phases {
            self.instances.get_or_create(&PhaseLabel { phase }).set(n);
        }
        self.moving_instances.clear();
        self.moving_since.clear();
        for (kind, (n, since)) in moving {
            let k = KindLabel { kind: kind.into() };
            self.moving_instances.get_or_create(&k).set(n);
            self.moving_since.get_or_create(&k).set(unix_seconds(since));
        }
    }

    /// The out-of-service taints this controller set, and when each may be removed.
    pub fn record_fences(&self, taints: &[FenceTaint]) {
        self.fenced_since.clear();
        self.unfence_due.clear();
        for t in taints {
            let node = NodeLabel {
                node: t.node.clone(),
            };
            if let Some(since) = t.since {
                self.fenced_since
                    .get_or_create(&node)
                    .set(unix_seconds(since));
            }
            if let Some(due) = t.unfence_due {
                self.unfence_due.get_or_create(&node).set(unix_seconds(due));
            }
        }
    }

    /// Brings the watch change counters up to what the watches counted.
    pub fn record_watch_changes(&self, watches: &[super::watches::WatchView]) {
        for w in watches {
            let counter = self.watch_changes.get_or_create(&WatchLabel {
                watch: w.name.to_string(),
            });
            let seen = counter.get();
            if w.changes > seen {
                counter.inc_by(w.changes - seen);
            }
        }
    }

    pub fn record_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }
}

/// The names of the samples the controller exports (`kube_failover_moves_total`,
/// `kube_failover_move_step_duration_seconds_bucket`…), from the metric families it
/// registers: what alert rules and dashboards may refer to.
pub fn exported_names() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for (name, kind) in Metrics::default().families {
        let suffixes: &[&str] = match kind {
            MetricType::Counter => &["_total"],
            MetricType::Histogram => &["_bucket", "_sum", "_count"],
            MetricType::Info => &["_info"],
            _ => &[""],
        };
        names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
    }
    names
}

/// The Kubernetes verb of an API request.
pub fn verb(method: &http::Method, uri: &http::Uri) -> &'static str {
    let query = uri.query().unwrap_or_default();
    match *method {
        http::Method::GET
            if query
                .split('&')
                .any(|p| p == "watch=true" || p == "watch=1") =>
        {
            "watch"
        }
        http::Method::GET if is_collection(uri.path()) => "list",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// Whether a path names a collection (`…/pods`) rather than one object (`…/pods/name`).
fn is_collection(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segs.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return false,
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    rest.len() == 1
}

/// The resource an API request is about, with its subresource (`pods`, `nodes`,
/// `failoverclusterinstances/status`); `other` for paths that name none (discovery).
pub fn resource(uri: &http::Uri) -> String {
    let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segs.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return "other".into(),
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    match rest {
        [] => "other".into(),
        [resource] | [resource, _] => (*resource).into(),
        [resource, _, sub, ..] => format!("{resource}/{sub}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kube_failover_core::api::{MemberStatus, Phase, QuorumStatus};

    fn t(ms: i64) -> jiff::Timestamp {
        jiff::Timestamp::from_millisecond(1_800_000_000_000 + ms).unwrap()
    }

    fn member(name: &str, state: MemberState, agent: Option<AgentState>) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            state,
            last_heartbeat: None,
            reason: None,
            instance_count: 0,
            agent,
            non_voting: false,
            site: None,
            failures: Vec::new(),
            quarantine: None,
        }
    }

    fn resilient(status: &str) -> Condition {
        Condition {
            // The type string the cluster's status carries.
            type_: "Resilient".into(),
            status: status.into(),
            reason: "Whatever".into(),
            message: String::new(),
            observed_generation: None,
            last_transition_time: Time(t(0)),
        }
    }

    fn cluster_status(
        members: Vec<MemberStatus>,
        votes: Option<(u32, u32, u32)>,
        conditions: Vec<Condition>,
    ) -> FailoverClusterStatus {
        FailoverClusterStatus {
            observed_generation: None,
            members,
            quorum: votes.map(|(total, healthy, required)| QuorumStatus {
                total,
                healthy,
                required,
                witness: None,
            }),
            conditions,
        }
    }

    /// The sample lines of `name` (exactly that sample name) in the rendered metrics.
    fn samples(m: &Metrics, name: &str) -> BTreeSet<String> {
        m.render()
            .lines()
            .filter(|l| l.split(['{', ' ']).next() == Some(name))
            .map(String::from)
            .collect()
    }

    fn set(lines: &[&str]) -> BTreeSet<String> {
        lines.iter().map(|l| l.to_string()).collect()
    }

    #[test]
    fn record_cluster_exports_votes_members_agents_and_resilience() {
        let m = Metrics::default();
        m.record_cluster(
            "sql",
            &cluster_status(
                vec![
                    member("a", MemberState::Up, Some(AgentState::Renewing)),
                    member("b", MemberState::Fenced, Some(AgentState::Down)),
                    member("c", MemberState::Up, None),
                ],
                Some((4, 3, 3)),
                vec![resilient("False")],
            ),
        );
        assert_eq!(
            samples(&m, "kube_failover_quorum_votes"),
            set(&[r#"kube_failover_quorum_votes{cluster="sql"} 4"#])
        );
        assert_eq!(
            samples(&m, "kube_failover_quorum_votes_heard"),
            set(&[r#"kube_failover_quorum_votes_heard{cluster="sql"} 3"#])
        );
        assert_eq!(
            samples(&m, "kube_failover_quorum_votes_required"),
            set(&[r#"kube_failover_quorum_votes_required{cluster="sql"} 3"#])
        );
        assert_eq!(
            samples(&m, "kube_failover_cluster_resilient"),
            set(&[r#"kube_failover_cluster_resilient{cluster="sql"} 0"#])
        );
        assert_eq!(
            samples(&m, "kube_failover_moves_total"),
            set(&[
                r#"kube_failover_moves_total{cluster="sql",kind="placement"} 0"#,
                r#"kube_failover_moves_total{cluster="sql",kind="planned"} 0"#,
                r#"kube_failover_moves_total{cluster="sql",kind="unplanned"} 0"#,
            ]),
            "counted from 0, so that the first move is an increase"
        );
        let states = samples(&m, "kube_failover_member_state");
        assert_eq!(states.len(), 12, "four states for each of three members");
        for line in [
            r#"kube_failover_member_state{cluster="sql",node="a",state="Up"} 1"#,
            r#"kube_failover_member_state{cluster="sql",node="a",state="Fenced"} 0"#,
            r#"kube_failover_member_state{cluster="sql",node="b",state="Fenced"} 1"#,
            r#"kube_failover_member_state{cluster="sql",node="b",state="Up"} 0"#,
            r#"kube_failover_member_state{cluster="sql",node="c",state="Down"} 0"#,
        ] {
            assert!(states.contains(line), "{line} in {states:#?}");
        }
        assert_eq!(
            samples(&m, "kube_failover_member_agent_down"),
            set(&[
                r#"kube_failover_member_agent_down{cluster="sql",node="a"} 0"#,
                r#"kube_failover_member_agent_down{cluster="sql",node="b"} 1"#,
            ]),
            "no series for a member without an agent"
        );

        // b leaves the cluster, a goes down, the agent of a goes away, the cluster is
        // resilient again.
        m.record_cluster(
            "sql",
            &cluster_status(
                vec![
                    member("a", MemberState::Down, None),
                    member("c", MemberState::Up, None),
                ],
                Some((3, 1, 2)),
                vec![resilient("True")],
            ),
        );
        let states = samples(&m, "kube_failover_member_state");
        assert_eq!(states.len(), 8, "{states:#?}");
        assert!(
            !states.iter().any(|l| l.contains(r#"node="b""#)),
            "{states:#?}"
        );
        assert!(
            states.contains(r#"kube_failover_member_state{cluster="sql",node="a",state="Down"} 1"#)
        );
        assert!(
            states.contains(r#"kube_failover_member_state{cluster="sql",node="a",state="Up"} 0"#)
        );
        assert_eq!(samples(&m, "kube_failover_member_agent_down"), set(&[]));
        assert_eq!(
            samples(&m, "kube_failover_quorum_votes_heard"),
            set(&[r#"kube_failover_quorum_votes_heard{cluster="sql"} 1"#])
        );
        assert_eq!(
            samples(&m, "kube_failover_cluster_resilient"),
            set(&[r#"kube_failover_cluster_resilient{cluster="sql"} 1"#])
        );

        // Resilient unknown or absent, no quorum computed: nothing is exported for them.
        for conditions in [vec![resilient("Unknown")], vec![]] {
            m.record_cluster(
                "sql",
                &cluster_status(vec![member("c", MemberState::Up, None)], None, conditions),
            );
            assert_eq!(samples(&m, "kube_failover_cluster_resilient"), set(&[]));
            assert_eq!(samples(&m, "kube_failover_quorum_votes"), set(&[]));
            assert_eq!(samples(&m, "kube_failover_quorum_votes_required"), set(&[]));
            assert_eq!(samples(&m, "kube_failover_member_state").len(), 4);
        }
    }

    #[test]
    fn clusters_are_kept_apart_and_dropped_when_gone_or_not_leading() {
        let m = Metrics::default();
        let status = |node: &str| {
            cluster_status(
                vec![member(node, MemberState::Up, Some(AgentState::Renewing))],
                Some((1, 1, 1)),
                vec![resilient("True")],
            )
        };
        m.record_cluster("one", &status("n1"));
        m.record_cluster("two", &status("n2"));
        // A member of `one` going away leaves `two`'s alone.
        m.record_cluster("one", &cluster_status(vec![], Some((0, 0, 0)), vec![]));
        assert_eq!(
            samples(&m, "kube_failover_member_agent_down"),
            set(&[r#"kube_failover_member_agent_down{cluster="two",node="n2"} 0"#])
        );
        m.retain_clusters(|c| c == "one");
        let text = m.render();
        assert!(
            !text
                .lines()
                .any(|l| l.contains(r#"cluster="two""#)
                    && !l.starts_with("kube_failover_moves_total")),
            "{text}"
        );
        assert!(
            text.contains(r#"kube_failover_quorum_votes{cluster="one"} 0"#),
            "{text}"
        );
        m.retain_clusters(|_| false);
        let text = m.render();
        let left: Vec<&str> = text.lines().filter(|l| l.contains("cluster=")).collect();
        // What this replica counted stays: counters only grow.
        assert!(
            left.iter()
                .all(|l| l.starts_with("kube_failover_moves_total{")),
            "{left:#?}"
        );
        assert_eq!(left.len(), 6, "three kinds for each cluster: {left:#?}");
        // Recorded again, exported again.
        m.record_cluster("two", &status("n2"));
        assert_eq!(samples(&m, "kube_failover_member_state").len(), 4);
    }

    fn at(ms: i64) -> Option<MicroTime> {
        Some(MicroTime(t(ms)))
    }

    fn failover(started: i64) -> Move {
        Move {
            from: Some("a".into()),
            to: Some("b".into()),
            reason: "NodeDown: LeaseStale".into(),
            planned: false,
            started: MicroTime(t(started)),
            endpoint_withdrawn: at(started + 100),
            // Fenced before the withdrawal was confirmed: they go out together.
            fenced: at(started + 50),
            vip_released: None,
            old_pod_gone: at(started + 1100),
            volumes_detached: at(started + 3100),
            pod_created: at(started + 3600),
            online: at(started + 5600),
        }
    }

    #[test]
    fn step_durations_follow_the_timeline_and_add_up_to_the_move() {
        let steps = step_durations(&failover(0));
        assert_eq!(
            steps,
            vec![
                ("WithdrawEndpoint", 0.1),
                ("Fence", 0.0),
                ("StopOldPod", 1.0),
                ("Detach", 2.0),
                ("StartPod", 0.5),
                ("Publish", 2.0),
            ]
        );
        let total: f64 = steps.iter().map(|(_, s)| s).sum();
        assert!((total - 5.6).abs() < 1e-9, "{total}");
        // A planned move fences nothing; one that ended early has no later steps.
        let mut planned = failover(0);
        planned.planned = true;
        planned.fenced = None;
        planned.pod_created = None;
        planned.online = None;
        let names: Vec<&str> = step_durations(&planned).iter().map(|(s, _)| *s).collect();
        assert_eq!(names, ["WithdrawEndpoint", "StopOldPod", "Detach"]);
        assert_eq!(move_kind(&planned), "planned");
        assert_eq!(move_kind(&failover(0)), "unplanned");
        let mut placement = failover(0);
        placement.from = None;
        assert_eq!(move_kind(&placement), "placement");
    }

    #[test]
    fn a_finished_move_is_counted_once_whoever_sees_it_again() {
        let m = Metrics::default();
        let mut placement = failover(0);
        placement.from = None;
        placement.fenced = None;
        let moving = FailoverClusterInstanceStatus {
            history: vec![placement.clone()],
            current_move: Some(failover(10_000)),
            phase: Phase::Moving,
            ..Default::default()
        };
        let done = FailoverClusterInstanceStatus {
            history: vec![placement.clone(), failover(10_000)],
            current_move: None,
            phase: Phase::Online,
            ..Default::default()
        };
        // The first placement is counted when it lands in a history that was empty.
        m.record_finished_moves("sql", None, &moving);
        m.record_finished_moves("sql", Some(&moving), &done);
        // Later rounds, and the status read back from the API, add nothing.
        m.record_finished_moves("sql", Some(&done), &done);
        m.record_finished_moves("sql", Some(&moving), &moving);
        // A full history drops its oldest move: that is no move finishing.
        let mut trimmed = done.clone();
        trimmed.history.remove(0);
        m.record_finished_moves("sql", Some(&done), &trimmed);
        assert_eq!(
            samples(&m, "kube_failover_moves_total"),
            set(&[
                r#"kube_failover_moves_total{cluster="sql",kind="placement"} 1"#,
                r#"kube_failover_moves_total{cluster="sql",kind="unplanned"} 1"#,
            ])
        );
        assert_eq!(
            samples(&m, "kube_failover_failovers_total"),
            set(&[r#"kube_failover_failovers_total{reason="NodeDown"} 1"#])
        );
        assert_eq!(
            samples(&m, "kube_failover_failover_duration_seconds_count"),
            set(&["kube_failover_failover_duration_seconds_count 1"])
        );
        let counts = samples(&m, "kube_failover_move_step_duration_seconds_count");
        for line in [
            r#"kube_failover_move_step_duration_seconds_count{step="Fence",kind="unplanned"} 1"#,
            r#"kube_failover_move_step_duration_seconds_count{step="Publish",kind="unplanned"} 1"#,
            r#"kube_failover_move_step_duration_seconds_count{step="Publish",kind="placement"} 1"#,
        ] {
            assert!(counts.contains(line), "{line} in {counts:#?}");
        }
        assert!(
            !counts
                .iter()
                .any(|l| l.contains(r#"step="Fence",kind="placement""#)),
            "{counts:#?}"
        );
        let sums = samples(&m, "kube_failover_move_step_duration_seconds_sum");
        assert!(
            sums.contains(r#"kube_failover_move_step_duration_seconds_sum{step="Detach",kind="unplanned"} 2.0"#),
            "{sums:#?}"
        );
    }

    #[test]
    fn instances_by_phase_and_moves_in_progress_with_the_oldest_start() {
        let m = Metrics::default();
        let status = |phase, current_move| FailoverClusterInstanceStatus {
            phase,
            current_move,
            ..Default::default()
        };
        let mut planned = failover(20_000);
        planned.planned = true;
        let statuses = [
            status(Phase::Online, None),
            status(Phase::Moving, Some(failover(5_000))),
            status(Phase::Moving, Some(failover(1_000))),
            status(Phase::Moving, Some(planned)),
        ];
        m.record_instances(statuses.iter().map(Some).chain([None]));
        assert_eq!(
            samples(&m, "kube_failover_instances"),
            set(&[
                r#"kube_failover_instances{phase="Online"} 1"#,
                r#"kube_failover_instances{phase="Moving"} 3"#,
                r#"kube_failover_instances{phase="Pending"} 1"#,
            ])
        );
        assert_eq!(
            samples(&m, "kube_failover_moving_instances"),
            set(&[
                r#"kube_failover_moving_instances{kind="unplanned"} 2"#,
                r#"kube_failover_moving_instances{kind="planned"} 1"#,
            ])
        );
        assert_eq!(
            samples(&m, "kube_failover_moving_since_timestamp_seconds"),
            set(&[
                r#"kube_failover_moving_since_timestamp_seconds{kind="unplanned"} 1800000001.0"#,
                r#"kube_failover_moving_since_timestamp_seconds{kind="planned"} 1800000020.0"#,
            ])
        );
        // Once they are done, the moves are gone from the metrics.
        m.record_instances([Some(&status(Phase::Online, None))]);
        assert_eq!(samples(&m, "kube_failover_moving_instances"), set(&[]));
        assert_eq!(
            samples(&m, "kube_failover_moving_since_timestamp_seconds"),
            set(&[])
        );
        assert_eq!(
            samples(&m, "kube_failover_instances"),
            set(&[r#"kube_failover_instances{phase="Online"} 1"#])
        );
    }

    #[test]
    fn fence_taints_and_leadership() {
        let m = Metrics::default();
        m.record_fences(&[
            FenceTaint {
                node: "a".into(),
                since: Some(t(500)),
                unfence_due: Some(t(60_500)),
            },
            FenceTaint {
                node: "b".into(),
                since: Some(t(0)),
                unfence_due: None,
            },
        ]);
        assert_eq!(
            samples(&m, "kube_failover_fenced_since_timestamp_seconds"),
            set(&[
                r#"kube_failover_fenced_since_timestamp_seconds{node="a"} 1800000000.5"#,
                r#"kube_failover_fenced_since_timestamp_seconds{node="b"} 1800000000.0"#,
            ])
        );
        assert_eq!(
            samples(&m, "kube_failover_unfence_due_timestamp_seconds"),
            set(&[r#"kube_failover_unfence_due_timestamp_seconds{node="a"} 1800000060.5"#])
        );
        m.record_fences(&[]);
        assert_eq!(
            samples(&m, "kube_failover_fenced_since_timestamp_seconds"),
            set(&[])
        );
        assert_eq!(
            samples(&m, "kube_failover_leader"),
            set(&["kube_failover_leader 0"])
        );
        m.record_leader(true);
        assert_eq!(
            samples(&m, "kube_failover_leader"),
            set(&["kube_failover_leader 1"])
        );
    }

    #[test]
    fn exported_names_are_the_samples_of_every_family() {
        let names = exported_names();
        for name in [
            "kube_failover_failovers_total",
            "kube_failover_moves_total",
            "kube_failover_move_step_duration_seconds_bucket",
            "kube_failover_move_step_duration_seconds_count",
            "kube_failover_instances",
            "kube_failover_leader",
            "kube_failover_quorum_votes_heard",
            "kube_failover_cluster_resilient",
        ] {
            assert!(names.contains(name), "{name} in {names:#?}");
        }
        assert!(!names.contains("kube_failover_moves"), "{names:#?}");
        // Every sample of a render with a sample in each family is named.
        let m = Metrics::default();
        m.record_cluster(
            "c",
            &cluster_status(
                vec![member("n", MemberState::Up, Some(AgentState::Down))],
                Some((1, 1, 1)),
                vec![resilient("True")],
            ),
        );
        m.record_finished_moves(
            "c",
            None,
            &FailoverClusterInstanceStatus {
                history: vec![failover(0)],
                ..Default::default()
            },
        );
        m.record_instances([Some(&FailoverClusterInstanceStatus {
            current_move: Some(failover(0)),
            ..Default::default()
        })]);
        m.record_fences(&[FenceTaint {
            node: "n".into(),
            since: Some(t(0)),
            unfence_due: Some(t(0)),
        }]);
        m.api_requests
            .get_or_create(&VerbLabel {
                verb: "get".into(),
                resource: "pods".into(),
            })
            .inc();
        m.reconcile_errors
            .get_or_create(&ErrorLabel {
                error: "kube".into(),
            })
            .inc();
        m.reconcile_duration.observe(0.1);
        m.record_watch_changes(&[crate::watches::WatchView {
            name: "pods",
            ended: false,
            listing_since: None,
            changes: 3,
        }]);
        let rendered: BTreeSet<String> = m
            .render()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split(['{', ' ']).next())
            .map(String::from)
            .collect();
        assert_eq!(rendered, names);
    }

    #[test]
    fn watch_changes_follow_the_watches_counts_without_counting_twice() {
        let m = Metrics::default();
        let pods = |changes| crate::watches::WatchView {
            name: "pods",
            ended: false,
            listing_since: None,
            changes,
        };
        m.record_watch_changes(&[pods(3)]);
        m.record_watch_changes(&[pods(3)]);
        m.record_watch_changes(&[pods(5)]);
        assert!(
            m.render()
                .lines()
                .any(|l| l == "kube_failover_watch_changes_total{watch=\"pods\"} 5"),
            "{}",
            m.render()
        );
    }

    #[test]
    fn verbs_from_requests() {
        let v = |m: http::Method, u: &str| verb(&m, &u.parse().unwrap());
        assert_eq!(
            v(
                http::Method::GET,
                "/api/v1/namespaces/a/pods?labelSelector=x"
            ),
            "list"
        );
        assert_eq!(v(http::Method::GET, "/api/v1/namespaces/a/pods/p"), "get");
        assert_eq!(v(http::Method::GET, "/api/v1/nodes"), "list");
        assert_eq!(v(http::Method::GET, "/api/v1/nodes/n"), "get");
        assert_eq!(v(http::Method::GET, "/api/v1/namespaces/a"), "get");
        assert_eq!(
            v(
                http::Method::GET,
                "/apis/kube-failover.io/v1alpha1/failoverclusterinstances?watch=true&resourceVersion=1"
            ),
            "watch"
        );
        assert_eq!(
            v(
                http::Method::PUT,
                "/apis/kube-failover.io/v1alpha1/namespaces/a/failoverclusterinstances/x/status"
            ),
            "update"
        );
        assert_eq!(
            v(http::Method::DELETE, "/api/v1/namespaces/a/pods/p"),
            "delete"
        );
    }

    #[test]
    fn resources_from_requests() {
        let r = |u: &str| resource(&u.parse().unwrap());
        assert_eq!(r("/api/v1/namespaces/a/pods?labelSelector=x"), "pods");
        assert_eq!(r("/api/v1/namespaces/a/pods/p"), "pods");
        assert_eq!(r("/api/v1/nodes/n"), "nodes");
        assert_eq!(r("/api/v1/namespaces"), "namespaces");
        assert_eq!(r("/api/v1/namespaces/a"), "namespaces");
        assert_eq!(
            r("/apis/kube-failover.io/v1alpha1/namespaces/a/failoverclusterinstances/x/status"),
            "failoverclusterinstances/status"
        );
        assert_eq!(
            r("/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/n"),
            "leases"
        );
        assert_eq!(r("/apis"), "other");
        assert_eq!(r("/version"), "other");
    }
}
