//! Model checking of the decision core: an exhaustive, breadth-first exploration of
//! `decide` composed with a model of the world it acts on, checking the invariants of
//! `docs/safety.md` in every reachable state.
//!
//! The world is unkind in the ways a real cluster is: three nodes that die, come back or
//! report NotReady with a fresh Lease; caches of each kind that lag behind the API on their
//! own (nodes, pods, attachments, endpoints, statuses); a controller that crashes (or loses
//! leadership) between any two of a round's actions, and whose next round may run on stale
//! caches; deletes that take effect only when a kubelet or kube-controller-manager gets to
//! them; pods that become ready late; volumes attached and detached by the attach/detach
//! controller. What the API server itself guarantees is modelled as it is: a status write
//! carries the resourceVersion it was decided from, deletes carry the UID, a create of an
//! existing name fails, and the executor's own checks (no pod created while another pod of
//! the instance exists, no taint when the Lease was renewed since the cache saw it) run
//! against the API's state, not the cache's.
//!
//! `cargo test --test model -- --ignored --nocapture` explores the bounded model (one
//! instance, one node failure or NotReady, then returns); `KUBE_FAILOVER_MODEL_DEPTH=deep`
//! adds a second instance. It prints the states explored as it goes.

#![allow(clippy::unwrap_used)]

use std::collections::{HashMap, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};

use kube_failover::api::{FailoverClusterInstanceSpec, FailoverClusterInstanceStatus, MemberState};
use kube_failover::decide::{
    Action, AttachmentFacts, NodeHealth, Observed, PodFacts, decide, pod_name,
};

const NODES: usize = 3;

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
enum Kubelet {
    /// Heartbeating and Ready.
    Up,
    /// Heartbeating (fresh Lease) but reporting NotReady: it still runs and stops pods.
    NotReady,
    /// Powered off: no heartbeat, runs nothing.
    Dead,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Pod {
    inst: usize,
    seq: u64,
    node: usize,
    uid: u32,
    terminating: bool,
    ready: bool,
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
    kubelets: [Kubelet; NODES],
    tainted: [bool; NODES],
    pods: Vec<Pod>,
    attachments: Vec<Attachment>,
    endpoints: Vec<Vec<String>>,
    /// Each instance's status, as JSON (what the API server stores), and its version.
    status: Vec<String>,
    version: Vec<u32>,
    next_uid: u32,
    failures: u8,
}

/// The controller's caches: each kind a snapshot of the world taken at its own time.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct Cache {
    kubelets: [Kubelet; NODES],
    tainted: [bool; NODES],
    pods: Vec<Pod>,
    attachments: Vec<Attachment>,
    endpoints: Vec<Vec<String>>,
    status: Vec<String>,
    version: Vec<u32>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct State {
    world: World,
    cache: Cache,
    /// Actions of the round in progress, not yet carried out, by instance.
    pending: Vec<(usize, ActionRepr)>,
    violation: Option<String>,
}

#[derive(Clone, Debug)]
enum Step {
    Kill(usize),
    NotReady(usize),
    Revive(usize),
    SyncNodes,
    SyncPods,
    SyncAttachments,
    SyncEndpoints,
    SyncStatus(usize),
    Reconcile(usize),
    Apply(usize),
    Crash,
    KubeletStops(u32),
    PodReady(u32),
    TaintedNodeCleared(usize),
    Attach(u32),
    Detach(u32),
}

struct Model {
    specs: Vec<FailoverClusterInstanceSpec>,
    max_failures: u8,
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

fn t(s: i64) -> jiff::Timestamp {
    jiff::Timestamp::from_second(1_700_000_000 + s).unwrap()
}

fn ip(p: &Pod) -> String {
    format!("10.0.{}.{}", p.node, p.uid)
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

impl Model {
    fn init(&self) -> State {
        let empty = serde_json::to_string(&FailoverClusterInstanceStatus::default()).unwrap();
        let world = World {
            kubelets: [Kubelet::Up; NODES],
            tainted: [false; NODES],
            pods: Vec::new(),
            attachments: Vec::new(),
            endpoints: vec![Vec::new(); self.specs.len()],
            status: vec![empty; self.specs.len()],
            version: vec![0; self.specs.len()],
            next_uid: 1,
            failures: 0,
        };
        State {
            cache: Cache {
                kubelets: world.kubelets,
                tainted: world.tainted,
                pods: world.pods.clone(),
                attachments: world.attachments.clone(),
                endpoints: world.endpoints.clone(),
                status: world.status.clone(),
                version: world.version.clone(),
            },
            world,
            pending: Vec::new(),
            violation: None,
        }
    }

    /// What `observe` would give `decide` for instance `i`, from the caches.
    fn observed(&self, c: &Cache, i: usize) -> Observed {
        let mut members = std::collections::BTreeMap::new();
        for n in 0..NODES {
            let (state, stale, reason) = match c.kubelets[n] {
                Kubelet::Up => (MemberState::Up, false, None),
                Kubelet::NotReady => (MemberState::Down, false, Some("NotReady")),
                Kubelet::Dead => (MemberState::Down, true, Some("LeaseStale")),
            };
            let state = if c.tainted[n] {
                MemberState::Fenced
            } else {
                state
            };
            members.insert(
                node_name(n),
                NodeHealth {
                    state,
                    down_since: (state != MemberState::Up).then(|| t(90)),
                    reason: reason.map(String::from),
                    recheck_at: None,
                    heartbeat_stale: stale,
                    self_fence_seconds: None,
                },
            );
        }
        Observed {
            now: t(100),
            cluster_found: true,
            members,
            outside: Default::default(),
            quorum_required: 2,
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
                })
                .collect(),
            pinned_claims: Default::default(),
            missing_claims: Vec::new(),
            endpoints: c.endpoints[i].clone(),
            service_current: true,
            service_taken: false,
            higher_priority_starting: false,
            dns_name: "db.ns.svc".into(),
        }
    }

    fn steps(&self, s: &State) -> Vec<Step> {
        let w = &s.world;
        let mut out = Vec::new();
        for n in 0..NODES {
            match w.kubelets[n] {
                Kubelet::Up if w.failures < self.max_failures => {
                    out.push(Step::Kill(n));
                    out.push(Step::NotReady(n));
                }
                Kubelet::NotReady | Kubelet::Dead => out.push(Step::Revive(n)),
                _ => {}
            }
            if w.tainted[n]
                && (w.pods.iter().any(|p| p.node == n) || w.attachments.iter().any(|a| a.node == n))
            {
                out.push(Step::TaintedNodeCleared(n));
            }
        }
        let c = &s.cache;
        if c.kubelets != w.kubelets || c.tainted != w.tainted {
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
            if c.version[i] != w.version[i] {
                out.push(Step::SyncStatus(i));
            }
            if s.pending.is_empty() {
                out.push(Step::Reconcile(i));
            }
        }
        for k in 0..s.pending.len() {
            out.push(Step::Apply(k));
        }
        if !s.pending.is_empty() {
            out.push(Step::Crash);
        }
        for p in &w.pods {
            let running = w.kubelets[p.node] != Kubelet::Dead;
            if p.terminating && running {
                out.push(Step::KubeletStops(p.uid));
            }
            if !p.terminating && !p.ready && w.kubelets[p.node] == Kubelet::Up {
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
            if !used && w.kubelets[a.node] != Kubelet::Dead {
                out.push(Step::Detach(a.uid));
            }
        }
        out
    }

    fn next(&self, s: &State, step: &Step) -> State {
        let mut s = s.clone();
        let w = &mut s.world;
        match *step {
            Step::Kill(n) => {
                w.kubelets[n] = Kubelet::Dead;
                w.failures += 1;
                // A powered-off node's pods stop; their objects stay.
                for p in w.pods.iter_mut().filter(|p| p.node == n) {
                    p.ready = false;
                }
            }
            Step::NotReady(n) => {
                w.kubelets[n] = Kubelet::NotReady;
                w.failures += 1;
                for p in w.pods.iter_mut().filter(|p| p.node == n) {
                    p.ready = false;
                }
            }
            Step::Revive(n) => w.kubelets[n] = Kubelet::Up,
            Step::SyncNodes => {
                s.cache.kubelets = w.kubelets;
                s.cache.tainted = w.tainted;
            }
            Step::SyncPods => s.cache.pods = w.pods.clone(),
            Step::SyncAttachments => s.cache.attachments = w.attachments.clone(),
            Step::SyncEndpoints => s.cache.endpoints = w.endpoints.clone(),
            Step::SyncStatus(i) => {
                s.cache.status[i] = w.status[i].clone();
                s.cache.version[i] = w.version[i];
            }
            Step::Reconcile(i) => {
                let current: FailoverClusterInstanceStatus =
                    serde_json::from_str(&s.cache.status[i]).unwrap();
                let d = decide(
                    &inst_name(i),
                    Some(1),
                    &self.specs[i],
                    Some(&current),
                    &self.observed(&s.cache, i),
                );
                // The status write carries the version it was decided from.
                if s.cache.version[i] != w.version[i] {
                    return s;
                }
                let json = serde_json::to_string(&d.status).unwrap();
                if json != w.status[i] {
                    w.status[i] = json;
                    w.version[i] += 1;
                }
                s.pending = d
                    .actions
                    .iter()
                    .filter(|a| {
                        !matches!(
                            a,
                            Action::Event(_) | Action::EnsureService | Action::EnsureClaims
                        )
                    })
                    .map(|a| (i, ActionRepr::from(a)))
                    .collect();
            }
            Step::Apply(k) => {
                let (i, a) = s.pending.remove(k);
                if let Some(v) = apply(&mut s.world, i, a) {
                    s.violation.get_or_insert(v);
                }
            }
            Step::Crash => s.pending.clear(),
            Step::KubeletStops(uid) => w.pods.retain(|p| p.uid != uid),
            Step::PodReady(uid) => {
                for p in w.pods.iter_mut().filter(|p| p.uid == uid) {
                    p.ready = true;
                }
            }
            Step::TaintedNodeCleared(n) => {
                // kube-controller-manager on an out-of-service node: pods force-deleted,
                // volumes detached.
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
        if s.violation.is_none() {
            s.violation = invariant_broken(&s.world);
        }
        s
    }
}

/// The actions of `decide`, in a form the state can hold and hash.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
enum ActionRepr {
    SetEndpoints(Vec<String>),
    Fence(String),
    DeletePod { uid: String, force: bool },
    DeleteAttachment { uid: String },
    CreatePod { node: String, seq: u64 },
}

impl From<&Action> for ActionRepr {
    fn from(a: &Action) -> Self {
        match a {
            Action::SetEndpoints(e) => Self::SetEndpoints(e.clone()),
            Action::Fence { node } => Self::Fence(node.clone()),
            Action::DeletePod { uid, force, .. } => Self::DeletePod {
                uid: uid.clone(),
                force: *force,
            },
            Action::DeleteAttachment { uid, .. } => Self::DeleteAttachment { uid: uid.clone() },
            Action::CreatePod { node, seq } => Self::CreatePod {
                node: node.clone(),
                seq: *seq,
            },
            other => panic!("not a write: {other:?}"),
        }
    }
}

/// Carries out one action on the API's state, with the executor's own checks; returns the
/// invariant it breaks, if any.
fn apply(w: &mut World, i: usize, a: ActionRepr) -> Option<String> {
    match a {
        ActionRepr::SetEndpoints(e) => w.endpoints[i] = e,
        ActionRepr::Fence(node) => {
            let n = node_index(&node);
            // The executor reads the Lease from the API: a node heartbeating is not fenced.
            if w.kubelets[n] == Kubelet::Dead {
                w.tainted[n] = true;
            }
        }
        ActionRepr::DeletePod { uid, force } => {
            let uid: u32 = uid.parse().unwrap();
            let p = w.pods.iter().find(|p| p.uid == uid).cloned()?;
            if force {
                if !w.tainted[p.node] {
                    return Some(format!(
                        "pod {uid} force-deleted on {} which is not fenced",
                        node_name(p.node)
                    ));
                }
                w.pods.retain(|q| q.uid != uid);
            } else {
                for q in w.pods.iter_mut().filter(|q| q.uid == uid) {
                    q.terminating = true;
                    q.ready = false;
                }
            }
        }
        ActionRepr::DeleteAttachment { uid } => {
            let uid: u32 = uid.parse().unwrap();
            let a = w.attachments.iter().find(|a| a.uid == uid).cloned()?;
            if !w.tainted[a.node] {
                return Some(format!(
                    "attachment {uid} deleted on {} which is not fenced",
                    node_name(a.node)
                ));
            }
            w.attachments.retain(|x| x.uid != uid);
        }
        ActionRepr::CreatePod { node, seq } => {
            // The executor lists the instance's pods from the API first.
            if w.pods.iter().any(|p| p.inst == i) {
                return None;
            }
            let uid = w.next_uid;
            w.next_uid += 1;
            w.pods.push(Pod {
                inst: i,
                seq,
                node: node_index(&node),
                uid,
                terminating: false,
                ready: false,
            });
        }
    }
    None
}

fn invariant_broken(w: &World) -> Option<String> {
    for i in 0..w.status.len() {
        let mut nodes: Vec<usize> = w
            .pods
            .iter()
            .filter(|p| p.inst == i && !w.tainted[p.node])
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
        if w.endpoints[i].len() > 1 {
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

fn fingerprint(s: &State) -> u64 {
    let mut h = DefaultHasher::new();
    s.hash(&mut h);
    h.finish()
}

/// Breadth-first over every reachable state; returns the number explored, or the trace to
/// the first state that breaks an invariant.
fn explore(model: &Model, limit: usize) -> Result<usize, Vec<String>> {
    let init = model.init();
    // For each state seen: its parent's index and the step that led to it.
    let mut parents: Vec<(usize, Option<Step>)> = vec![(0, None)];
    let mut seen: HashMap<u64, usize> = HashMap::from([(fingerprint(&init), 0)]);
    let mut queue = VecDeque::from([(init, 0usize)]);
    while let Some((s, idx)) = queue.pop_front() {
        for step in model.steps(&s) {
            let next = model.next(&s, &step);
            let f = fingerprint(&next);
            if seen.contains_key(&f) {
                continue;
            }
            let id = parents.len();
            parents.push((idx, Some(step)));
            seen.insert(f, id);
            if let Some(v) = &next.violation {
                let mut trace = vec![format!("violation: {v}")];
                let mut at = id;
                while let (parent, Some(step)) = &parents[at] {
                    trace.push(format!("{step:?}"));
                    at = *parent;
                }
                trace.reverse();
                return Err(trace);
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
    Ok(parents.len())
}

/// Not yet part of every `cargo test`: the exploration does not finish, because fresh
/// pod and attachment UIDs make the same situation recur as new states (7.4 million states
/// in a release build, the frontier not shrinking). Until the states are canonicalised it
/// is run by hand: `cargo test --test model -- --ignored --nocapture`; a counterexample
/// found on the way is still a counterexample.
#[test]
#[ignore = "does not finish until its states are canonicalised; run with --ignored"]
fn decide_keeps_the_invariants_in_every_reachable_state() {
    // Bounded by default (one instance, one node failure or NotReady, then returns), so
    // that it runs with every `cargo test`; `KUBE_FAILOVER_MODEL_DEPTH=deep` adds a second
    // instance competing for the same nodes.
    let deep = std::env::var("KUBE_FAILOVER_MODEL_DEPTH").is_ok_and(|v| v == "deep");
    let specs = if deep {
        vec![spec([0, 1, 2]), spec([1, 2, 0])]
    } else {
        vec![spec([0, 1, 2])]
    };
    let model = Model {
        max_failures: 1,
        specs,
    };
    let started = std::time::Instant::now();
    match explore(&model, 50_000_000) {
        Ok(states) => eprintln!(
            "model: {states} states explored ({} instance(s), {} node failure(s) at most) in {:.1} s; no invariant broken",
            model.specs.len(),
            model.max_failures,
            started.elapsed().as_secs_f64()
        ),
        Err(trace) => panic!("counterexample:\n  {}", trace.join("\n  ")),
    }
}
