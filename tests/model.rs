//! Model checking of the decision core: an exhaustive, breadth-first exploration of
//! `decide` composed with a model of the world it acts on, checking the invariants of
//! `docs/safety.md` in every reachable state.
//!
//! The world is unkind in the ways a real cluster is: three nodes, each with a kubelet and
//! a node agent that fail apart. A kubelet reports NotReady with a fresh Lease, or its
//! process dies while the node's containers run on; an agent crashes (its node's containers
//! untouched: it neither renews nor fences); a node is cut off from the API server with its
//! kubelet and agent, its containers running on until its agent fences itself. Up to two
//! such faults in a run, so that the quorum can be lost. Each node's health is what the
//! real `node_health` makes of the Leases the controller saw (the kubelet's and the
//! agent's), and the agent does what the real one does: it fences itself once cut off for
//! its self-fence time, stops the instance containers of a node whose kubelet is silent when
//! the controller asks (`Action::RequestWorkloadStop`) and then says so on its Lease, keeps
//! them stopped while its node is out of service, and stops containers whose pod is gone.
//! Besides: caches of each kind that lag behind the API on their own (nodes and Leases,
//! pods, attachments, endpoints); a controller that crashes (or loses leadership) between
//! any two of a round's actions, and whose next round may run on stale caches; a leader
//! paused after its status write whose actions go out late, interleaved with its
//! successor's; deletes that take effect only when a kubelet or kube-controller-manager gets
//! to them; pods that become ready late; volumes attached and detached by the attach/detach
//! controller; the controller removing its taint from a node back in service. What the API
//! server itself guarantees is modelled as it is: a status write carries the
//! resourceVersion it was decided from, deletes carry the UID, a create of an existing name
//! fails, and the executor's own checks (no pod created while another pod of the instance
//! exists; no taint when the kubelet's Lease was renewed since the cache saw it, or when the
//! agent renewed without saying it stopped the workloads) run against the API's state, not
//! the cache's.
//!
//! In every state it checks: never two copies of an instance's workload running (counted
//! where they run: containers on the nodes, not pod objects; a node whose kubelet is dead or
//! cut off runs on what it was running, and a container whose pod was force-deleted from
//! the API while its kubelet could not hear of it runs on until the kubelet is back or the
//! agent stops it), nor pods on two unfenced nodes, two endpoints, a volume attached twice;
//! no force delete or detach on a node not fenced; no taint added to a node while
//! containers of an instance run there; and of every round of `decide`: no Fence of a node
//! whose kubelet heartbeat it sees, or whose agent renews without having said it stopped
//! the workloads, or without the quorum (counted here from the cache, apart from
//! `decide`'s count); no move off a node that no fault of its kubelet touched (an agent's
//! death moves nothing). Then liveness: from every reachable state, some sequence of steps
//! brings every instance Online.
//!
//! `cargo test --test model -- --nocapture` explores the bounded models and prints the
//! number of states explored; `KUBE_FAILOVER_MODEL_DEPTH=deep` explores larger ones (see
//! the tests). A broken invariant fails the test with the steps that lead to it.
//! The executor's last check before a taint compares the Leases with what the round that
//! decided it saw (as `controller/fence.rs` does); the controller removes its taint from a
//! node back in service once a move off it has cleared the way, and `decide` deletes a pod
//! with no grace period only on a node fenced now.
//!
//! A third world gives the votes to two members and a witness (the third node hosts
//! instances without a vote) and lets the witness fail and come back like a node.
//!
//! What the model leaves out, on purpose: clock skew (node health here is what the
//! controller observed on its own clock, which is how `controller/heartbeats.rs` measures
//! it; skew is tested on the real control plane), Events, Services and claims (created
//! idempotently, never deleted by a move), virtual IPs, nodes without an agent (a
//! self-fence time announced on the Node), a node powered off (a cut whose containers stop
//! at once), the second a kubelet cut off may restart a container before its fenced agent
//! stops it again, and the faults no fencing without a power switch survives: a node's agent
//! dead while its kubelet is silent too (nothing on the node stops its containers, and to
//! the controller it looks like a node cut off whose agent fenced itself).

#![allow(clippy::unwrap_used)]

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::rc::Rc;

use kube_failover_core::api::{
    FailoverClusterInstanceSpec, FailoverClusterInstanceStatus, Heartbeat, Phase,
};
use kube_failover_core::decide::quorum::WitnessVote;
use kube_failover_core::decide::{
    Action, AgentFacts, AttachmentFacts, NodeFacts, Observed, PodFacts, decide, node_health,
    pod_name,
};

const NODES: usize = 3;

/// The kubelet's process.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Kubelet {
    /// Running and Ready.
    Up,
    /// Running, reporting NotReady (it still starts and stops pods).
    NotReady,
    /// Dead: it renews nothing, starts nothing, stops nothing; the containers it started run
    /// on.
    Dead,
}

/// One node, as it is.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Node {
    kubelet: Kubelet,
    /// The agent's process runs.
    agent: bool,
    /// Cut off from the API server, kubelet and agent with it.
    cut_off: bool,
    /// Carries the out-of-service taint.
    tainted: bool,
    /// Its instance containers were stopped by its agent (fencing itself, asked to, or out
    /// of service) and nothing has started them again since: the agent holds them stopped,
    /// or no kubelet runs to restart them.
    stopped: bool,
    /// The Node's `stop-workloads` annotation names the kubelet's current renewal.
    stop_asked: bool,
    /// The agent's Lease says it stopped the instance workloads since the kubelet's current
    /// renewal.
    attested: bool,
    /// The kubelet's Lease was renewed since the controller's cache of nodes and Leases last
    /// caught up.
    kubelet_renewed: bool,
    /// The agent's Lease was, likewise.
    agent_renewed: bool,
    /// A fault of its kubelet (death, NotReady, a cut) has touched it in this run.
    faulted: bool,
}

impl Node {
    const UP: Node = Node {
        kubelet: Kubelet::Up,
        agent: true,
        cut_off: false,
        tainted: false,
        stopped: false,
        stop_asked: false,
        attested: false,
        kubelet_renewed: false,
        agent_renewed: false,
        faulted: false,
    };

    /// The kubelet renews its Lease.
    fn heartbeats(&self) -> bool {
        !self.cut_off && self.kubelet != Kubelet::Dead
    }

    /// The agent renews its Lease (and sees the API server).
    fn agent_renews(&self) -> bool {
        !self.cut_off && self.agent
    }

    /// What the controller's cache of nodes and Leases sees of it.
    fn seen(&self) -> Seen {
        Seen {
            kubelet: match (self.heartbeats(), self.kubelet) {
                (false, _) => Kubelet::Dead,
                (true, k) => k,
            },
            agent_live: self.agent_renews(),
            attested: self.attested,
            tainted: self.tainted,
            long_silent: false,
        }
    }

    /// The agent keeps the instance containers stopped: cut off (it fenced itself), asked
    /// to for the kubelet's current silence, or out of service.
    fn holding(&self) -> bool {
        self.agent && (self.cut_off || self.stop_asked || self.tainted)
    }
}

/// What the controller's cache holds of a node: its kubelet's Lease and Ready condition,
/// its agent's Lease, its taint.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
struct Seen {
    /// `Up`, `NotReady`, or `Dead` for a Lease gone stale.
    kubelet: Kubelet,
    agent_live: bool,
    attested: bool,
    tainted: bool,
    /// By the controller's own clock, the agent's Lease has been silent for longer than
    /// its self-fence time (plus margin). Set by time passing while both Leases look
    /// silent in the cache; reset when the cache sees the agent renew.
    long_silent: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Pod {
    inst: usize,
    seq: u64,
    node: usize,
    uid: u32,
    terminating: bool,
    ready: bool,
    /// Its kubelet has seen it (a kubelet dead or cut off cannot start a pod made since).
    seen: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Attachment {
    inst: usize,
    node: usize,
    uid: u32,
}

/// What the API server holds (and the nodes do).
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct World {
    nodes: [Node; NODES],
    pods: Vec<Pod>,
    /// Containers still running on a node whose pod object is gone (force deleted while its
    /// kubelet could not hear of it): (instance, node).
    ghosts: Vec<(usize, usize)>,
    attachments: Vec<Attachment>,
    /// Each instance's endpoints (interned: see `Interned`).
    endpoints: Vec<u32>,
    /// Each instance's status, as the API server stores it (interned). The controller reads
    /// the status it wrote at once (see `Step::Reconcile`): the cache has no other.
    status: Vec<u32>,
    next_uid: u32,
    failures: u8,
    /// The witness renews its Lease (with `Model::witness` only).
    witness: bool,
}

/// The controller's caches: each kind a snapshot of the world taken at its own time.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Cache {
    nodes: [Seen; NODES],
    /// The witness's Lease looks renewed (part of the cache of nodes and Leases).
    witness: bool,
    pods: Vec<Pod>,
    attachments: Vec<Attachment>,
    endpoints: Vec<u32>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct State {
    world: World,
    cache: Cache,
    /// Actions of the round in progress, not yet carried out, by instance.
    pending: Vec<(usize, ActionRepr)>,
    /// Actions of a round whose leader was paused (SIGSTOP) after its status write and
    /// deposed; they may still go out, late, at any point.
    paused: Vec<(usize, ActionRepr)>,
    deposed: bool,
    violation: Option<String>,
}

#[derive(Clone, Debug)]
enum Step {
    /// The kubelet's process dies; the node's containers run on.
    KubeletDies(usize),
    NotReady(usize),
    /// The node is cut off from the API server, its kubelet and agent with it.
    Cut(usize),
    /// The agent crashes.
    AgentDies(usize),
    /// The witness stops renewing (with `Model::witness`).
    WitnessDies,
    WitnessBack,
    KubeletBack(usize),
    Reconnect(usize),
    AgentBack(usize),
    /// The controller's clock passes the self-fence time (plus margin) of a node whose
    /// Leases both look silent; an agent cut off since the renewal the cache saw has fenced
    /// itself by then (its timer started before the controller's: fault 13).
    TimePasses(usize),
    /// The agent stops the instance containers (asked to, or out of service) and, if asked,
    /// says so on its Lease.
    AgentStops(usize),
    /// The agent stops the containers whose pod is gone from the API.
    AgentSweeps(usize),
    /// The controller removes its taint from a node healthy again.
    Unfence(usize),
    SyncNodes,
    SyncPods,
    SyncAttachments,
    SyncEndpoints,
    Reconcile(usize),
    Apply(usize),
    Crash,
    Pause,
    ApplyPaused(usize),
    KubeletStops(u32),
    PodReady(u32),
    TaintedNodeCleared(usize),
    Attach(u32),
    Detach(u32),
}

struct Model {
    specs: Vec<FailoverClusterInstanceSpec>,
    max_failures: u8,
    /// The cluster's votes are two members' and a witness's: the last node does not vote
    /// (`quorum.nonVotingNodes`), and a witness Lease gives the third vote.
    witness: bool,
    /// A leader may be paused after its status write (one whose actions go out late).
    pauses: bool,
    interned: RefCell<Interned>,
    /// Rounds already decided, by what they read (see `Model::round`).
    rounds: RefCell<FastMap<u128, Rc<Round>>>,
}

/// An instance's status as the API server stores it (JSON), and what the model reads of
/// it.
struct Status {
    json: String,
    parsed: FailoverClusterInstanceStatus,
    online: bool,
    /// Where the status names a pod by UID (`"podUid":"<uid>"`): the UID's place in `json`,
    /// and the UID.
    pod_uid: Option<(std::ops::Range<usize>, u32)>,
}

/// Statuses and endpoint lists, which states name by index: hashing, cloning and comparing
/// states then costs nothing for them.
#[derive(Default)]
struct Interned {
    status_ids: HashMap<String, u32>,
    statuses: Vec<Rc<Status>>,
    endpoint_ids: HashMap<Vec<String>, u32>,
    endpoints: Vec<Vec<String>>,
}

impl Interned {
    fn status(&mut self, json: String) -> u32 {
        if let Some(&id) = self.status_ids.get(&json) {
            return id;
        }
        let parsed: FailoverClusterInstanceStatus = serde_json::from_str(&json).unwrap();
        const POD_UID: &str = "\"podUid\":\"";
        let pod_uid = json.find(POD_UID).map(|at| {
            let start = at + POD_UID.len();
            let end = start + json[start..].find('"').unwrap();
            (start..end, json[start..end].parse().unwrap())
        });
        let id = u32::try_from(self.statuses.len()).unwrap();
        self.statuses.push(Rc::new(Status {
            online: parsed.phase == Phase::Online,
            parsed,
            pod_uid,
            json: json.clone(),
        }));
        self.status_ids.insert(json, id);
        id
    }

    fn endpoints(&mut self, e: Vec<String>) -> u32 {
        let next = u32::try_from(self.endpoints.len()).unwrap();
        let id = *self.endpoint_ids.entry(e.clone()).or_insert(next);
        if id == next {
            self.endpoints.push(e);
        }
        id
    }
}

/// What a round of `decide` did, from what it read: the status it wrote, its actions, and
/// what the invariants of a round need.
struct Round {
    status: u32,
    actions: Vec<ActionRepr>,
    /// It started a move off this node.
    started_off: Option<usize>,
}

fn node_name(n: usize) -> String {
    format!("n{n}")
}

fn node_index(name: &str) -> usize {
    name[1..].parse().unwrap()
}

fn inst_name(i: usize) -> String {
    format!("db{i}")
}

/// The controller's clock: every round runs at `NOW`.
const NOW: i64 = 100;

fn t(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
}

/// What every agent announces on its Lease.
const SELF_FENCE: jiff::SignedDuration = jiff::SignedDuration::from_secs(30);

/// The renewals the controller saw last, on its own clock: a silent kubelet's (stale from
/// `NOW - 10`), a silent agent's before and after the controller's clock passed its
/// self-fence time plus margin.
const KUBELET_SILENT_SINCE: i64 = 70;
const AGENT_SILENT_SINCE: i64 = 75;
const AGENT_LONG_SILENT_SINCE: i64 = 60;

fn ip(p: &Pod) -> String {
    format!("10.0.{}.{}", p.node, p.seq)
}

fn spec(preferred: [usize; 3]) -> FailoverClusterInstanceSpec {
    serde_json::from_value(serde_json::json!({
        "clusterRef": "c",
        "networkName": {"name": "db", "ports": [{"name": "sql", "port": 5432}]},
        "template": {"spec": {"containers": [{"name": "db", "image": "db"}]}},
        "owners": {"preferred": preferred.map(node_name)},
    }))
    .unwrap()
}

/// What the controller's `observe` reads of a node from the cache it holds.
fn node_facts(n: usize, s: &Seen) -> NodeFacts {
    let silent = s.kubelet == Kubelet::Dead;
    NodeFacts {
        name: node_name(n),
        lease_renewed: Some(t(if silent { KUBELET_SILENT_SINCE } else { NOW })),
        agent: Some(AgentFacts {
            renewed: t(match (s.agent_live, s.long_silent) {
                (true, _) => NOW,
                (false, false) => AGENT_SILENT_SINCE,
                (false, true) => AGENT_LONG_SILENT_SINCE,
            }),
            self_fence: Some(SELF_FENCE),
            stopped_workloads: s.attested,
            // The model's agents fence themselves without asking peers.
            steady_since: None,
            peer_groups: Vec::new(),
        }),
        // A NotReady condition seen long enough ago to count; a silent kubelet's not yet
        // turned Unknown (its stale Lease makes it Down all the same).
        ready: Some((s.kubelet != Kubelet::NotReady, t(0))),
        unschedulable: false,
        out_of_service: s.tainted,
        fenced_by_controller: s.tainted,
        fenced_at: s.tainted.then(|| t(0)),
        self_fence: None,
    }
}

impl Model {
    fn new(specs: Vec<FailoverClusterInstanceSpec>, max_failures: u8, pauses: bool) -> Self {
        Model {
            specs,
            max_failures,
            witness: false,
            pauses,
            interned: RefCell::default(),
            rounds: RefCell::default(),
        }
    }

    fn status(&self, id: u32) -> Rc<Status> {
        self.interned.borrow().statuses[id as usize].clone()
    }

    fn init(&self) -> State {
        let empty = serde_json::to_string(&FailoverClusterInstanceStatus::default()).unwrap();
        let empty = self.interned.borrow_mut().status(empty);
        let none = self.interned.borrow_mut().endpoints(Vec::new());
        let world = World {
            nodes: [Node::UP; NODES],
            pods: Vec::new(),
            ghosts: Vec::new(),
            attachments: Vec::new(),
            endpoints: vec![none; self.specs.len()],
            status: vec![empty; self.specs.len()],
            next_uid: 1,
            failures: 0,
            witness: self.witness,
        };
        let mut state = State {
            cache: Cache {
                nodes: world.nodes.map(|n| n.seen()),
                witness: world.witness,
                pods: world.pods.clone(),
                attachments: world.attachments.clone(),
                endpoints: world.endpoints.clone(),
            },
            world,
            pending: Vec::new(),
            paused: Vec::new(),
            deposed: false,
            violation: None,
        };
        self.canonicalise(&mut state);
        state
    }

    /// What `observe` would give `decide` for instance `i`, from the caches: each member's
    /// health as the real `node_health` judges the Leases and conditions cached.
    fn observed(&self, c: &Cache, i: usize) -> Observed {
        let hb = Heartbeat::default();
        let members = (0..NODES)
            .map(|n| {
                let s = &c.nodes[n];
                let h = node_health(&node_facts(n, s), &hb, t(NOW));
                // The times above mean what the model says they do.
                assert_eq!(
                    h.heartbeat_stale,
                    s.kubelet == Kubelet::Dead,
                    "{s:?}: {h:?}"
                );
                assert_eq!(h.agent_live(), s.agent_live, "{s:?}: {h:?}");
                assert_eq!(h.agent_down(), !h.heartbeat_stale && !s.agent_live);
                assert_eq!(
                    h.state.heard(),
                    s.kubelet == Kubelet::Up && !s.tainted,
                    "{s:?}: {h:?}"
                );
                (node_name(n), h)
            })
            .collect();
        Observed {
            now: t(NOW),
            cluster_found: true,
            members,
            outside: Default::default(),
            quorum_required: 2,
            non_voting: if self.witness {
                [node_name(NODES - 1)].into()
            } else {
                Default::default()
            },
            witness: self.witness.then(|| WitnessVote {
                name: "Lease kube-failover-witness-model".into(),
                heard: c.witness,
                reason: (!c.witness).then(|| "not renewed".into()),
                steady_since: c.witness.then(|| t(0)),
                recheck_at: None,
            }),
            fencing: Default::default(),
            pods: c
                .pods
                .iter()
                .filter(|p| p.inst == i)
                .map(|p| PodFacts {
                    name: pod_name(&inst_name(i), p.seq),
                    uid: p.uid.to_string(),
                    node: Some(node_name(p.node)),
                    ready: p.ready,
                    ip: Some(ip(p)),
                    terminating: p.terminating,
                    failed: false,
                    restarts: 0,
                })
                .collect(),
            attachments: c
                .attachments
                .iter()
                .filter(|a| a.inst == i)
                .map(|a| AttachmentFacts {
                    name: format!("va-{}", a.uid),
                    uid: a.uid.to_string(),
                    node: node_name(a.node),
                    shared: false,
                    terminating: false,
                })
                .collect(),
            pinned_claims: Default::default(),
            missing_claims: Vec::new(),
            unreachable: Default::default(),
            sites: Default::default(),
            dependencies_pending: None,
            quarantined: Default::default(),
            endpoints: self.interned.borrow().endpoints[c.endpoints[i] as usize].clone(),
            endpoint_slice_taken: false,
            service_current: true,
            service_taken: false,
            network_withheld: Vec::new(),
            addresses_to_claim: Vec::new(),
            addresses_to_release: Vec::new(),
            needs_agent: false,
            service_refused: None,
            namespace_allowed: true,
            higher_priority_starting: false,
            neighbours: Default::default(),
            dns_name: "db.ns.svc".into(),
            vip_holders: Default::default(),
            requests: Default::default(),
        }
    }

    fn steps(&self, s: &State) -> Vec<Step> {
        let w = &s.world;
        let c = &s.cache;
        let mut out = Vec::new();
        for n in 0..NODES {
            let x = &w.nodes[n];
            if w.failures < self.max_failures {
                // An agent is never dead while its kubelet is silent (see the module's
                // documentation): its kubelet dies, or its node is cut off, only while it
                // runs; it dies only while its kubelet heartbeats.
                if x.kubelet != Kubelet::Dead && x.agent {
                    out.push(Step::KubeletDies(n));
                }
                if x.kubelet == Kubelet::Up {
                    out.push(Step::NotReady(n));
                }
                if !x.cut_off && x.agent {
                    out.push(Step::Cut(n));
                }
                if x.agent && x.heartbeats() {
                    out.push(Step::AgentDies(n));
                }
            }
            if x.kubelet != Kubelet::Up {
                out.push(Step::KubeletBack(n));
            }
            if x.cut_off {
                out.push(Step::Reconnect(n));
            }
            if !x.agent {
                out.push(Step::AgentBack(n));
            }
            let seen = &c.nodes[n];
            if seen.kubelet == Kubelet::Dead && !seen.agent_live && !seen.long_silent {
                out.push(Step::TimePasses(n));
            }
            if x.agent_renews() && ((x.stop_asked && !x.attested) || (x.tainted && !x.stopped)) {
                out.push(Step::AgentStops(n));
            }
            if x.agent_renews() && w.ghosts.iter().any(|g| g.1 == n) {
                out.push(Step::AgentSweeps(n));
            }
            if x.tainted
                && (w.pods.iter().any(|p| p.node == n) || w.attachments.iter().any(|a| a.node == n))
            {
                out.push(Step::TaintedNodeCleared(n));
            }
            if x.tainted && seen.tainted && seen.kubelet == Kubelet::Up && !self.clearing(w, n) {
                out.push(Step::Unfence(n));
            }
        }
        if self.witness {
            if w.witness && w.failures < self.max_failures {
                out.push(Step::WitnessDies);
            }
            if !w.witness {
                out.push(Step::WitnessBack);
            }
        }
        if c.witness != w.witness
            || (0..NODES).any(|n| {
                let x = &w.nodes[n];
                c.nodes[n] != seen_now(x, &c.nodes[n]) || x.kubelet_renewed || x.agent_renewed
            })
        {
            out.push(Step::SyncNodes);
        }
        if c.pods != w.pods {
            out.push(Step::SyncPods);
        }
        if c.attachments != w.attachments {
            out.push(Step::SyncAttachments);
        }
        if c.endpoints != w.endpoints {
            out.push(Step::SyncEndpoints);
        }
        for i in 0..self.specs.len() {
            if s.pending.is_empty() {
                out.push(Step::Reconcile(i));
            }
        }
        for k in 0..s.pending.len() {
            out.push(Step::Apply(k));
        }
        if !s.pending.is_empty() {
            out.push(Step::Crash);
            if self.pauses && !s.deposed {
                out.push(Step::Pause);
            }
        }
        for k in 0..s.paused.len() {
            out.push(Step::ApplyPaused(k));
        }
        for p in &w.pods {
            let x = &w.nodes[p.node];
            // Only a kubelet that reaches the API server stops a pod and removes it.
            if p.terminating && x.heartbeats() {
                out.push(Step::KubeletStops(p.uid));
            }
            if !p.terminating
                && !p.ready
                && x.heartbeats()
                && x.kubelet == Kubelet::Up
                && !x.stopped
            {
                out.push(Step::PodReady(p.uid));
            }
            // The attach/detach controller attaches a ReadWriteOnce volume to one node at a
            // time (a pod elsewhere waits with a Multi-Attach error).
            if !p.terminating && !w.attachments.iter().any(|a| a.inst == p.inst) {
                out.push(Step::Attach(p.uid));
            }
        }
        for a in &w.attachments {
            let used = w.pods.iter().any(|p| p.inst == a.inst && p.node == a.node);
            if !used && w.nodes[a.node].heartbeats() {
                out.push(Step::Detach(a.uid));
            }
        }
        out
    }

    /// An action, told as the counterexamples tell it.
    fn show(&self, a: &ActionRepr) -> String {
        match *a {
            ActionRepr::SetEndpoints(e) => {
                format!(
                    "SetEndpoints({:?})",
                    self.interned.borrow().endpoints[e as usize]
                )
            }
            ActionRepr::Fence {
                node,
                kubelet_renewed,
                agent_renewed,
            } => {
                let since: Vec<&str> = [(kubelet_renewed, "kubelet"), (agent_renewed, "agent")]
                    .into_iter()
                    .filter_map(|(renewed, what)| renewed.then_some(what))
                    .collect();
                if since.is_empty() {
                    format!("Fence({})", node_name(node))
                } else {
                    format!(
                        "Fence({}) (renewed since the round's cache: {})",
                        node_name(node),
                        since.join(", ")
                    )
                }
            }
            ActionRepr::RequestWorkloadStop(node) => {
                format!("RequestWorkloadStop({})", node_name(node))
            }
            ActionRepr::DeletePod { uid, force } => {
                format!("DeletePod(uid {uid}{})", if force { ", force" } else { "" })
            }
            ActionRepr::DeleteAttachment { uid } => format!("DeleteAttachment(uid {uid})"),
            ActionRepr::CreatePod { node, seq } => {
                format!("CreatePod({}, seq {seq})", node_name(node))
            }
        }
    }

    /// A step of a counterexample, told with what it does in state `s`.
    fn describe(&self, s: &State, step: &Step) -> String {
        match *step {
            Step::Reconcile(i) => {
                let after = self.next(s, step);
                let status = &self.status(after.world.status[i]).parsed;
                let at = status.current_move.as_ref().map_or_else(
                    || format!("{:?} on {:?}", status.phase, status.owner_node),
                    |m| format!("moving {:?} -> {:?} ({})", m.from, m.to, m.reason),
                );
                let actions: Vec<String> =
                    after.pending.iter().map(|(_, a)| self.show(a)).collect();
                format!("Reconcile({i}): {at}; actions {actions:?}")
            }
            Step::Apply(k) => format!("Apply {}", self.show(&s.pending[k].1)),
            Step::ApplyPaused(k) => format!("Apply (paused leader) {}", self.show(&s.paused[k].1)),
            _ => format!("{step:?}"),
        }
    }

    fn next(&self, s: &State, step: &Step) -> State {
        let mut s = s.clone();
        let before = s.world.nodes;
        let w = &mut s.world;
        match *step {
            Step::KubeletDies(n) => {
                w.nodes[n].kubelet = Kubelet::Dead;
                w.failures += 1;
                w.nodes[n].faulted = true;
            }
            Step::NotReady(n) => {
                w.nodes[n].kubelet = Kubelet::NotReady;
                w.failures += 1;
                w.nodes[n].faulted = true;
                if w.nodes[n].heartbeats() {
                    for p in w.pods.iter_mut().filter(|p| p.node == n) {
                        p.ready = false;
                    }
                }
            }
            Step::Cut(n) => {
                w.nodes[n].cut_off = true;
                w.failures += 1;
                w.nodes[n].faulted = true;
            }
            Step::AgentDies(n) => {
                w.nodes[n].agent = false;
                w.failures += 1;
            }
            Step::WitnessDies => {
                w.witness = false;
                w.failures += 1;
            }
            Step::WitnessBack => w.witness = true,
            Step::KubeletBack(n) => w.nodes[n].kubelet = Kubelet::Up,
            Step::Reconnect(n) => w.nodes[n].cut_off = false,
            Step::AgentBack(n) => w.nodes[n].agent = true,
            Step::TimePasses(n) => {
                s.cache.nodes[n].long_silent = true;
                let x = &mut w.nodes[n];
                if x.agent && x.cut_off && !x.agent_renewed {
                    x.stopped = true;
                    w.ghosts.retain(|g| g.1 != n);
                }
            }
            Step::AgentStops(n) => {
                let x = &mut w.nodes[n];
                x.stopped = true;
                x.attested |= x.stop_asked;
                w.ghosts.retain(|g| g.1 != n);
            }
            Step::AgentSweeps(n) => w.ghosts.retain(|g| g.1 != n),
            Step::Unfence(n) => {
                // The taint goes, and the request to stop with it.
                w.nodes[n].tainted = false;
                w.nodes[n].stop_asked = false;
            }
            Step::SyncNodes => {
                s.cache.witness = w.witness;
                for n in 0..NODES {
                    s.cache.nodes[n] = seen_now(&w.nodes[n], &s.cache.nodes[n]);
                    w.nodes[n].kubelet_renewed = false;
                    w.nodes[n].agent_renewed = false;
                }
            }
            Step::SyncPods => s.cache.pods = w.pods.clone(),
            Step::SyncAttachments => s.cache.attachments = w.attachments.clone(),
            Step::SyncEndpoints => s.cache.endpoints = w.endpoints.clone(),
            Step::Reconcile(i) => {
                let round = self.round(&s.cache, w.status[i], i);
                if let Some(v) = round_broken(w, &s.cache, &round, self.witness) {
                    s.violation.get_or_insert(v);
                }
                // The status write carries the resourceVersion it was decided from, so a
                // round decided on a status older than the API's fails with a conflict and
                // does nothing: a lagging status cache only delays rounds. The model
                // therefore lets the controller read the status it wrote at once (a lag
                // would add states, not behaviours).
                w.status[i] = round.status;
                s.pending = round
                    .actions
                    .iter()
                    .map(|a| {
                        let mut a = a.clone();
                        if let ActionRepr::Fence {
                            node,
                            kubelet_renewed,
                            agent_renewed,
                        } = &mut a
                        {
                            let x = &w.nodes[*node];
                            *kubelet_renewed = x.kubelet_renewed;
                            *agent_renewed = x.agent_renewed;
                        }
                        (i, a)
                    })
                    .collect();
            }
            Step::Apply(k) => {
                let (i, a) = s.pending.remove(k);
                if let Some(v) = apply(&mut s.world, i, a) {
                    s.violation.get_or_insert(v);
                }
            }
            Step::Crash => s.pending.clear(),
            Step::Pause => {
                s.paused = std::mem::take(&mut s.pending);
                s.deposed = true;
            }
            Step::ApplyPaused(k) => {
                let (i, a) = s.paused.remove(k);
                if let Some(v) = apply(&mut s.world, i, a) {
                    s.violation.get_or_insert(v);
                }
            }
            Step::KubeletStops(uid) => w.pods.retain(|p| p.uid != uid),
            Step::PodReady(uid) => {
                for p in w.pods.iter_mut().filter(|p| p.uid == uid) {
                    p.ready = true;
                }
            }
            Step::TaintedNodeCleared(n) => {
                // kube-controller-manager on an out-of-service node: pods force-deleted,
                // volumes detached.
                orphan(w, |p| p.node == n);
                w.pods.retain(|p| p.node != n);
                w.attachments.retain(|a| a.node != n);
            }
            Step::Attach(uid) => {
                let p = w.pods.iter().find(|p| p.uid == uid).cloned().unwrap();
                let uid = w.next_uid;
                w.next_uid += 1;
                w.attachments.push(Attachment {
                    inst: p.inst,
                    node: p.node,
                    uid,
                });
            }
            Step::Detach(uid) => w.attachments.retain(|a| a.uid != uid),
        }
        settle(&mut s, &before);
        if s.violation.is_none() {
            s.violation = invariant_broken(&s.world, &self.interned.borrow());
        }
        self.canonicalise(&mut s);
        s
    }

    /// A round of `decide` for instance `i` on the caches `c` and its status: decided once
    /// for all the states that share what it reads.
    fn round(&self, c: &Cache, status: u32, i: usize) -> Rc<Round> {
        let key = fingerprint(&(c, status, i));
        if let Some(r) = self.rounds.borrow().get(&key) {
            return r.clone();
        }
        let current = self.status(status);
        let observed = self.observed(c, i);
        let d = decide(
            &inst_name(i),
            Some(1),
            &self.specs[i],
            Some(&current.parsed),
            &observed,
        );
        let started_off = d
            .status
            .current_move
            .as_ref()
            .filter(|_| current.parsed.current_move.is_none())
            .and_then(|m| m.from.as_deref())
            .map(node_index);
        let mut interned = self.interned.borrow_mut();
        let actions = d
            .actions
            .iter()
            .filter(|a| {
                !matches!(
                    a,
                    Action::Event(_) | Action::EnsureService | Action::EnsureClaims
                )
            })
            .map(|a| match a {
                Action::SetEndpoints(e) => ActionRepr::SetEndpoints(interned.endpoints(e.clone())),
                Action::Fence { node, .. } => ActionRepr::Fence {
                    node: node_index(node),
                    kubelet_renewed: false,
                    agent_renewed: false,
                },
                Action::RequestWorkloadStop { node, .. } => {
                    ActionRepr::RequestWorkloadStop(node_index(node))
                }
                Action::DeletePod { uid, force, .. } => ActionRepr::DeletePod {
                    uid: uid.parse().unwrap(),
                    force: *force,
                },
                Action::DeleteAttachment { uid, .. } => ActionRepr::DeleteAttachment {
                    uid: uid.parse().unwrap(),
                },
                Action::CreatePod { node, seq } => ActionRepr::CreatePod {
                    node: node_index(node),
                    seq: *seq,
                },
                other => panic!("not a write: {other:?}"),
            })
            .collect();
        let round = Rc::new(Round {
            status: interned.status(serde_json::to_string(&d.status).unwrap()),
            actions,
            started_off,
        });
        drop(interned);
        self.rounds.borrow_mut().insert(key, round.clone());
        round
    }

    /// Makes states that differ only in names the controller cannot tell apart one state:
    /// UIDs are renumbered in order of appearance. Without this, every fresh UID would make
    /// a situation already explored look new, and the exploration never ends.
    fn canonicalise(&self, s: &mut State) {
        // A handful of UIDs: a list beats a map.
        let mut map: Vec<u32> = Vec::new();
        let mut renumber = |uid: u32| -> u32 {
            let at = map.iter().position(|&u| u == uid).unwrap_or_else(|| {
                map.push(uid);
                map.len() - 1
            });
            u32::try_from(at).unwrap() + 1
        };
        for p in s.world.pods.iter_mut().chain(s.cache.pods.iter_mut()) {
            p.uid = renumber(p.uid);
        }
        for a in s
            .world
            .attachments
            .iter_mut()
            .chain(s.cache.attachments.iter_mut())
        {
            a.uid = renumber(a.uid);
        }
        for (_, a) in s.pending.iter_mut().chain(s.paused.iter_mut()) {
            if let ActionRepr::DeletePod { uid, .. } | ActionRepr::DeleteAttachment { uid } = a {
                *uid = renumber(*uid);
            }
        }
        // The status names a pod by UID in one place.
        for id in &mut s.world.status {
            let status = self.status(*id);
            if let Some((range, uid)) = &status.pod_uid {
                let renumbered = renumber(*uid);
                if renumbered != *uid {
                    let mut json = status.json.clone();
                    json.replace_range(range.clone(), &renumbered.to_string());
                    *id = self.interned.borrow_mut().status(json);
                }
            }
        }
        s.world.next_uid = u32::try_from(map.len()).unwrap() + 1;
    }
}

/// What the cache of nodes and Leases holds once it has caught up with `x`; the
/// controller's clock stays past the agent's self-fence time only if the agent has not
/// renewed since.
fn seen_now(x: &Node, was: &Seen) -> Seen {
    let mut seen = x.seen();
    seen.long_silent = was.long_silent && !seen.agent_live && !x.agent_renewed;
    seen
}

impl Model {
    /// Whether a move off `n` keeps the controller from removing its taint: one still
    /// clearing the way (what the controller checks).
    fn clearing(&self, w: &World, n: usize) -> bool {
        w.status.iter().any(|&id| {
            self.status(id)
                .parsed
                .current_move
                .as_ref()
                .is_some_and(|m| {
                    m.from.as_deref() == Some(node_name(n).as_str())
                        && (m.old_pod_gone.is_none() || m.volumes_detached.is_none())
                })
        })
    }
}

/// What follows by itself from a step: a kubelet back in touch renews (and so a request
/// or an attestation naming its old renewal no longer holds), sees its pods and kills the
/// containers whose pods are gone; an agent back in touch renews; containers the agent no
/// longer holds stopped are started again by a running kubelet.
fn settle(s: &mut State, before: &[Node; NODES]) {
    let w = &mut s.world;
    for (n, was) in before.iter().enumerate() {
        let x = &mut w.nodes[n];
        let kubelet_back = x.heartbeats() && !was.heartbeats();
        let agent_back = x.agent_renews() && !was.agent_renews();
        if kubelet_back {
            x.kubelet_renewed = true;
            x.stop_asked = false;
            x.attested = false;
        }
        if agent_back {
            x.agent_renewed = true;
        }
        for (_, a) in s.pending.iter_mut().chain(s.paused.iter_mut()) {
            if let ActionRepr::Fence {
                node,
                kubelet_renewed,
                agent_renewed,
            } = a
                && *node == n
            {
                *kubelet_renewed |= kubelet_back;
                *agent_renewed |= agent_back;
            }
        }
        if x.stopped && x.kubelet != Kubelet::Dead && !x.holding() {
            x.stopped = false;
        }
        let x = *x;
        if x.heartbeats() {
            w.ghosts.retain(|g| g.1 != n);
            for p in w.pods.iter_mut().filter(|p| p.node == n) {
                p.seen = true;
                // Its containers stopped: the kubelet reports it not ready.
                if x.stopped {
                    p.ready = false;
                }
            }
        }
    }
}

/// The actions of `decide`, in a form the state can hold and hash: nodes by index,
/// endpoint lists interned.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum ActionRepr {
    SetEndpoints(u32),
    /// With whether the node's kubelet, and its agent, renewed their Leases since the
    /// cache the round decided on.
    Fence {
        node: usize,
        kubelet_renewed: bool,
        agent_renewed: bool,
    },
    RequestWorkloadStop(usize),
    DeletePod {
        uid: u32,
        force: bool,
    },
    DeleteAttachment {
        uid: u32,
    },
    CreatePod {
        node: usize,
        seq: u64,
    },
}

/// Carries out one action on the API's state, with the executor's own checks; returns the
/// invariant it breaks, if any.
fn apply(w: &mut World, i: usize, a: ActionRepr) -> Option<String> {
    match a {
        ActionRepr::SetEndpoints(e) => w.endpoints[i] = e,
        ActionRepr::Fence {
            node,
            kubelet_renewed,
            agent_renewed,
        } => {
            let n = node;
            let x = w.nodes[n];
            // The executor reads both Leases from the API: a kubelet renewed since the round
            // saw it, or an agent renewed since without its word that the workloads are
            // stopped, calls the taint off. (An agent silent now may have renewed last just
            // as the cache caught up: the check lets that one through.)
            let kubelet_renewed = x.heartbeats() || kubelet_renewed;
            let agent_renewed = x.agent_renews() || agent_renewed;
            if kubelet_renewed || (agent_renewed && !x.attested) || x.tainted {
                return None;
            }
            w.nodes[n].tainted = true;
            if let Some(p) = w.pods.iter().find(|p| p.node == n && p.seen && !x.stopped) {
                return Some(format!(
                    "{} tainted out of service while the containers of {}'s pod run there",
                    node_name(n),
                    inst_name(p.inst)
                ));
            }
            if let Some(g) = w.ghosts.iter().find(|g| g.1 == n) {
                return Some(format!(
                    "{} tainted out of service while containers of {} run there",
                    node_name(n),
                    inst_name(g.0)
                ));
            }
        }
        ActionRepr::RequestWorkloadStop(node) => {
            // The executor writes the kubelet Lease's `renewTime` as the API has it. For a
            // kubelet that heartbeats, that renewal is superseded within its renewal period,
            // and the agent stops nothing for long: the model leaves that out.
            let n = node;
            if !w.nodes[n].heartbeats() {
                w.nodes[n].stop_asked = true;
            }
        }
        ActionRepr::DeletePod { uid, force } => {
            let p = w.pods.iter().find(|p| p.uid == uid).cloned()?;
            // The executor deletes with no grace period only on a node fenced now (a fresh
            // read); elsewhere with the pod's grace period.
            if force && w.nodes[p.node].tainted {
                orphan(w, |q| q.uid == uid);
                w.pods.retain(|q| q.uid != uid);
            } else {
                for q in w.pods.iter_mut().filter(|q| q.uid == uid) {
                    q.terminating = true;
                    q.ready = false;
                }
            }
        }
        ActionRepr::DeleteAttachment { uid } => {
            let a = w.attachments.iter().find(|a| a.uid == uid).cloned()?;
            // Only off a node fenced now (a fresh read).
            if w.nodes[a.node].tainted {
                w.attachments.retain(|x| x.uid != uid);
            }
        }
        ActionRepr::CreatePod { node, seq } => {
            // The executor lists the instance's pods from the API first.
            if w.pods.iter().any(|p| p.inst == i) {
                return None;
            }
            let uid = w.next_uid;
            w.next_uid += 1;
            let n = node;
            w.pods.push(Pod {
                inst: i,
                seq,
                node: n,
                uid,
                terminating: false,
                ready: false,
                seen: w.nodes[n].heartbeats(),
            });
        }
    }
    None
}

/// Pods removed from the API while their kubelet cannot hear of it keep running there,
/// unless the agent holds them stopped.
fn orphan(w: &mut World, removed: impl Fn(&Pod) -> bool) {
    let runs_on = |n: usize| !w.nodes[n].heartbeats() && !w.nodes[n].stopped;
    let ghosts: Vec<(usize, usize)> = w
        .pods
        .iter()
        .filter(|p| removed(p) && p.seen && runs_on(p.node))
        .map(|p| (p.inst, p.node))
        .collect();
    w.ghosts.extend(ghosts);
    w.ghosts.sort_unstable();
    w.ghosts.dedup();
}

/// Invariants of one round of `decide`, against the caches it read and the world.
fn round_broken(w: &World, c: &Cache, round: &Round, witness: bool) -> Option<String> {
    if let Some(from) = round.started_off
        && !w.nodes[from].faulted
    {
        return Some(format!(
            "a move off {} started though no fault of its kubelet ever touched it",
            node_name(from)
        ));
    }
    // Fencing needs the quorum: members heard from (kubelet heartbeating and Ready, not
    // fenced), counted here from the cache, apart from `decide`'s own count. Clearing a
    // node already fenced (its pods force-deleted, its attachments deleted) is what
    // kube-controller-manager does anyway, and is checked against the taint when it is
    // carried out.
    // With a witness, the last node does not vote and the witness does.
    let voters = if witness { NODES - 1 } else { NODES };
    let heard = (0..voters)
        .filter(|&n| c.nodes[n].kubelet == Kubelet::Up && !c.nodes[n].tainted)
        .count()
        + usize::from(witness && c.witness);
    for a in &round.actions {
        let ActionRepr::Fence { node, .. } = *a else {
            continue;
        };
        let seen = &c.nodes[node];
        let node = node_name(node);
        if seen.kubelet != Kubelet::Dead {
            return Some(format!(
                "decided to fence {node}, whose kubelet heartbeat it sees"
            ));
        }
        if seen.agent_live && !seen.attested {
            return Some(format!(
                "decided to fence {node}, whose agent renews without having said it stopped \
                 the workloads there"
            ));
        }
        if heard < 2 {
            return Some(format!(
                "decided to fence {node} with {heard} of {NODES} votes heard: no quorum"
            ));
        }
    }
    None
}

/// The nodes where the workload of instance `i` runs: containers, not pod objects.
fn running(w: &World, i: usize) -> Vec<usize> {
    // A pod's containers run once its kubelet has seen it, whatever has become of the
    // kubelet since, until its agent stops them; those of a pod gone from the API while
    // its kubelet could not hear of it run on as ghosts.
    let mut running: Vec<usize> = w
        .pods
        .iter()
        .filter(|p| p.inst == i && p.seen && !w.nodes[p.node].stopped)
        .map(|p| p.node)
        .chain(w.ghosts.iter().filter(|g| g.0 == i).map(|g| g.1))
        .collect();
    running.sort_unstable();
    running.dedup();
    running
}

fn invariant_broken(w: &World, interned: &Interned) -> Option<String> {
    for i in 0..w.status.len() {
        let running = running(w, i);
        if running.len() > 1 {
            return Some(format!("{} runs on {running:?} at once", inst_name(i)));
        }
        let mut nodes: Vec<usize> = w
            .pods
            .iter()
            .filter(|p| p.inst == i && !w.nodes[p.node].tainted)
            .map(|p| p.node)
            .collect();
        nodes.sort();
        nodes.dedup();
        if nodes.len() > 1 {
            return Some(format!(
                "{} has pods on unfenced nodes {nodes:?}",
                inst_name(i)
            ));
        }
        if interned.endpoints[w.endpoints[i] as usize].len() > 1 {
            return Some(format!("{} lists two endpoints", inst_name(i)));
        }
        let mut attached: Vec<usize> = w
            .attachments
            .iter()
            .filter(|a| a.inst == i)
            .map(|a| a.node)
            .collect();
        attached.sort();
        attached.dedup();
        if attached.len() > 1 {
            return Some(format!(
                "the volume of {} is attached to {attached:?}",
                inst_name(i)
            ));
        }
    }
    None
}

/// A 128-bit fingerprint of what `value` hashes: two lanes of multiply and rotate, each
/// finished by SplitMix64's mixer. SipHash, compiled without optimisation as this test is,
/// took a third of the run; two states that collide would be taken for one, which with 128
/// bits and a few million states is as unlikely as it gets.
fn fingerprint(value: &impl Hash) -> u128 {
    let mut h = Fingerprinter::default();
    value.hash(&mut h);
    (u128::from(finish(h.a)) << 64) | u128::from(finish(h.b))
}

struct Fingerprinter {
    a: u64,
    b: u64,
}

impl Default for Fingerprinter {
    fn default() -> Self {
        Fingerprinter {
            a: 0x243F_6A88_85A3_08D3,
            b: 0x1319_8A2E_0370_7344,
        }
    }
}

impl Fingerprinter {
    fn mix(&mut self, v: u64) {
        self.a = (self.a ^ v)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15)
            .rotate_left(31);
        self.b = (self.b ^ v)
            .wrapping_add(0x632B_E59B_D9B4_E019)
            .wrapping_mul(0xD6E8_FEB8_6659_FD93)
            .rotate_left(23);
    }
}

fn finish(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Hasher for Fingerprinter {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }
    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }
    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }
    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }
    fn write_u128(&mut self, i: u128) {
        self.mix(i as u64);
        self.mix((i >> 64) as u64);
    }
    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }
    fn finish(&self) -> u64 {
        finish(self.a)
    }
}

/// Maps keyed by fingerprints (or small values), hashed without SipHash.
type FastMap<K, V> = HashMap<K, V, std::hash::BuildHasherDefault<Fingerprinter>>;

impl Model {
    /// Whether every instance is Online with its endpoint published.
    fn serving(&self, w: &World) -> bool {
        let interned = self.interned.borrow();
        w.status
            .iter()
            .zip(&w.endpoints)
            .all(|(&status, &endpoints)| {
                interned.statuses[status as usize].online
                    && interned.endpoints[endpoints as usize].len() == 1
            })
    }
}

impl Model {
    fn replay(&self, parents: &[(usize, Option<Step>)], id: usize) -> State {
        let mut path = Vec::new();
        let mut at = id;
        while let (parent, Some(step)) = &parents[at] {
            path.push(step.clone());
            at = *parent;
        }
        path.into_iter()
            .rev()
            .fold(self.init(), |s, step| self.next(&s, &step))
    }
}

/// The steps from the initial state to state `id`, each told with what it does.
fn trace(model: &Model, parents: &[(usize, Option<Step>)], id: usize) -> Vec<String> {
    let mut path = Vec::new();
    let mut at = id;
    while let (parent, Some(step)) = &parents[at] {
        path.push(step.clone());
        at = *parent;
    }
    path.reverse();
    let mut lines = Vec::new();
    let mut s = model.init();
    for step in path {
        lines.push(model.describe(&s, &step));
        s = model.next(&s, &step);
    }
    lines
}

/// Breadth-first over every reachable state; returns the number explored, or the trace to
/// the first state that breaks an invariant. Then liveness: from every reachable state,
/// some sequence of steps (nodes come back, caches catch up, the controller runs) must lead
/// to every instance Online; a state from which none does is a stuck instance.
fn explore(model: &Model, limit: usize) -> Result<usize, Vec<String>> {
    let init = model.init();
    // For each state seen: its parent's index and the step that led to it, the states that
    // lead to it, and whether every instance is Online in it.
    let mut parents: Vec<(usize, Option<Step>)> = vec![(0, None)];
    let mut preds: Vec<Vec<u32>> = vec![Vec::new()];
    let mut goal: Vec<bool> = vec![model.serving(&init.world)];
    let mut seen: FastMap<u128, usize> = FastMap::default();
    seen.insert(fingerprint(&init), 0);
    let mut queue = VecDeque::from([(init, 0usize)]);
    let index = |i: usize| u32::try_from(i).unwrap();
    while let Some((s, idx)) = queue.pop_front() {
        for step in model.steps(&s) {
            let next = model.next(&s, &step);
            let f = fingerprint(&next);
            if let Some(&known) = seen.get(&f) {
                preds[known].push(index(idx));
                continue;
            }
            let id = parents.len();
            parents.push((idx, Some(step)));
            preds.push(vec![index(idx)]);
            goal.push(model.serving(&next.world));
            seen.insert(f, id);
            if let Some(v) = &next.violation {
                let mut lines = trace(model, &parents, id);
                lines.push(format!("violation: {v}"));
                return Err(lines);
            }
            assert!(
                parents.len() < limit,
                "more than {limit} states: bound the model"
            );
            if id.is_multiple_of(100_000) {
                eprintln!("model: {id} states so far, {} queued", queue.len());
            }
            queue.push_back((next, id));
        }
    }
    // Backwards from the states where every instance is Online.
    let mut live = goal.clone();
    let mut back: VecDeque<usize> = (0..goal.len()).filter(|&i| goal[i]).collect();
    while let Some(i) = back.pop_front() {
        for &p in &preds[i] {
            let p = p as usize;
            if !live[p] {
                live[p] = true;
                back.push_back(p);
            }
        }
    }
    if let Some(stuck) = live.iter().position(|l| !l) {
        let mut lines = trace(model, &parents, stuck);
        lines.push("then, with every node back and the caches caught up:".into());
        let mut s = model.replay(&parents, stuck);
        for n in 0..NODES {
            let x = s.world.nodes[n];
            for (broken, step) in [
                (x.kubelet != Kubelet::Up, Step::KubeletBack(n)),
                (x.cut_off, Step::Reconnect(n)),
                (!x.agent, Step::AgentBack(n)),
            ] {
                if broken {
                    s = model.next(&s, &step);
                }
            }
        }
        s.pending.clear();
        for _ in 0..4 {
            for step in [
                Step::SyncNodes,
                Step::SyncPods,
                Step::SyncAttachments,
                Step::SyncEndpoints,
            ] {
                s = model.next(&s, &step);
            }
            for i in 0..model.specs.len() {
                lines.push(format!("  {}", model.describe(&s, &Step::Reconcile(i))));
                s = model.next(&s, &Step::Reconcile(i));
                while !s.pending.is_empty() {
                    s = model.next(&s, &Step::Apply(0));
                }
            }
        }
        lines.push(
            "violation: stuck: from here no sequence of steps brings every instance Online".into(),
        );
        return Err(lines);
    }
    Ok(parents.len())
}

fn check(name: &str, model: &Model) {
    let started = std::time::Instant::now();
    match explore(model, 200_000_000) {
        Ok(states) => eprintln!(
            "model ({name}): {states} states explored ({} instance(s), {} fault(s) at most) in {:.1} s; no invariant broken and none stuck",
            model.specs.len(),
            model.max_failures,
            started.elapsed().as_secs_f64()
        ),
        Err(trace) => panic!("counterexample ({name}):\n  {}", trace.join("\n  ")),
    }
}

fn deep() -> bool {
    std::env::var("KUBE_FAILOVER_MODEL_DEPTH").is_ok_and(|v| v == "deep")
}

/// Part of every `cargo test`: one instance on three nodes, one fault of any kind (a
/// kubelet dead, NotReady, a node cut off, an agent dead) and its repair, lagging caches, a
/// crash between any two actions and a leader paused after its status write whose actions
/// go out late. `KUBE_FAILOVER_MODEL_DEPTH=deep` adds a second instance preferring other
/// nodes, its moves interleaved with the first's; run it with `--release`. It may not
/// finish within memory: it then searches for counterexamples, and proves nothing.
#[test]
fn decide_keeps_the_invariants_in_every_reachable_state() {
    let specs = if deep() {
        vec![spec([0, 1, 2]), spec([1, 2, 0])]
    } else {
        vec![spec([0, 1, 2])]
    };
    check("one fault", &Model::new(specs, 1, true));
}

/// Part of every `cargo test`: the same world with two faults in a run (two nodes', or a
/// kubelet's and another node's agent's, or a kubelet's and its node's cut), so that the
/// quorum can be lost between a failover's start and its fence. A leader paused after its
/// status write is left to the one-fault model (with it, this one had explored 12 million
/// states, and queued 2 million more, after 200 s); `KUBE_FAILOVER_MODEL_DEPTH=deep` adds
/// it.
#[test]
fn decide_keeps_the_invariants_through_two_faults() {
    check("two faults", &Model::new(vec![spec([0, 1, 2])], 2, deep()));
}

/// Part of every `cargo test`: the votes are two members' and a witness's (the third node
/// hosts instances but does not vote), and the witness is one more thing that fails: two
/// faults in a run among the three nodes and the witness, so that a member's failure with
/// the witness gone loses the quorum between a failover's start and its fence.
#[test]
fn decide_keeps_the_invariants_with_a_witness_and_a_member_that_does_not_vote() {
    let mut model = Model::new(vec![spec([0, 1, 2])], 2, deep());
    model.witness = true;
    check("a witness and a member that does not vote", &model);
}
