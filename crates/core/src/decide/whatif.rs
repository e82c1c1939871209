//! What if: where each instance of a cluster would go if some members failed or were
//! drained, or why it would be held, from the same `decide` the controller runs.
//!
//! Each instance is decided on as it is now (`Observed`, made by the caller from what it
//! read), with the members named failing (their kubelet and agent silent from now on: a
//! node powered off) or drained (cordoned), round after round in a world that does what
//! each round asks at once: the endpoint withdrawn, the node fenced, pods deleted and their
//! volumes detached, the clock moved on to the next time a round asked to look again. It
//! ends where the move creates its pod (the answer: the new owner), or where nothing more
//! happens (the answer: why it is held). Instances go in the order the controller lets them
//! start, higher priority first; each one's new owner counts for the anti-affinity of the
//! next.
//!
//! The world here is kind: deletes are instant, nothing else fails meanwhile. It answers
//! where and whether, never when.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use serde::Serialize;

use super::{Action, AgentHealth, HeartbeatBasis, NodeHealth, Observed, Shared, decide};
use crate::api::{
    FailoverCluster, FailoverClusterInstance, FailoverClusterInstanceStatus, MemberState, Phase,
    condition, reason,
};
use crate::rules::neighbours;

/// The failures to imagine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scenario {
    /// Members that fail: their kubelet and agent go silent at once.
    pub fail: BTreeSet<String>,
    /// Members drained (cordoned): what they host moves off with planned moves.
    pub drain: BTreeSet<String>,
}

impl Scenario {
    pub fn failing(node: &str) -> Self {
        Self {
            fail: BTreeSet::from([node.to_string()]),
            drain: BTreeSet::new(),
        }
    }

    fn touches(&self, node: &str) -> bool {
        self.fail.contains(node) || self.drain.contains(node)
    }
}

/// What would become of one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Outcome {
    /// Nothing changes for it.
    Stays,
    /// It would start on `to`: a failover (fenced first) when `failover`, else a planned
    /// move or a placement. `waits`: what it would wait for before its pod starts there
    /// (its dependencies), if anything.
    Moves {
        to: String,
        failover: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        waits: Option<String>,
    },
    /// It would go nowhere: the reason and message its status would give.
    Held { reason: String, message: String },
}

/// The answer for one instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Answer {
    /// `namespace/name`.
    pub instance: String,
    /// Its owner now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Its owner fails or is drained in the scenario (or its move in progress involves one).
    pub affected: bool,
    pub outcome: Outcome,
}

impl Answer {
    /// It leaves its owner (or is placed) for another node.
    pub fn moves(&self) -> bool {
        matches!(&self.outcome, Outcome::Moves { to, .. } if Some(to) != self.owner.as_ref())
    }
}

/// How many rounds one instance gets before the answer is "undecided" (a move takes about
/// seven; the rest are waits).
const MAX_ROUNDS: usize = 64;
/// How many times in a row a round may change nothing but the clock before the instance
/// counts as held where it is.
const IDLE_ROUNDS: usize = 3;

fn involves(i: &FailoverClusterInstance, scenario: &Scenario) -> bool {
    let Some(s) = i.status.as_ref() else {
        return false;
    };
    s.owner_node.as_deref().is_some_and(|n| scenario.touches(n))
        || s.current_move.as_ref().is_some_and(|m| {
            m.from.as_deref().is_some_and(|n| scenario.touches(n))
                || m.to.as_deref().is_some_and(|n| scenario.touches(n))
        })
}

/// The answer for each instance of `cluster` among `instances`: those the scenario touches
/// first, then the rest, each in the order the controller ranks them (priority, then
/// `namespace/name`). `observe` gives what the controller would observe of an instance now
/// (its anti-affinity neighbours are made here); `labels` a namespace's labels.
pub fn simulate(
    cluster: &FailoverCluster,
    instances: &[FailoverClusterInstance],
    mut observe: impl FnMut(&FailoverClusterInstance) -> Observed,
    labels: impl Fn(&str) -> BTreeMap<String, String>,
    scenario: &Scenario,
) -> Vec<Answer> {
    let name = cluster.name_any();
    let mut world: Vec<FailoverClusterInstance> = instances
        .iter()
        .filter(|i| i.spec.cluster_ref == name)
        .cloned()
        .collect();
    let mut order: Vec<usize> = (0..world.len()).collect();
    order.sort_by_key(|&i| {
        (
            !involves(&world[i], scenario),
            world[i].spec.priority,
            world[i].key(),
        )
    });
    let mut answers = Vec::with_capacity(order.len());
    let mut edits = Edits::default();
    for i in order {
        let fci = world[i].clone();
        let mut obs = observe(&fci);
        obs.neighbours = neighbours(&fci, world.iter(), Some(cluster), &labels);
        let now = obs.now;
        edits.make(&mut obs.members, Edit::Scenario, |m| {
            apply_to_members(m, scenario, now)
        });
        apply_to_outside(&mut obs, scenario);
        let outcome = rounds(&fci, obs, &mut edits);
        if let Outcome::Moves { to, .. } = &outcome {
            // Counted where it goes for the anti-affinity of those that come after it.
            let status = world[i].status.get_or_insert_with(Default::default);
            status.owner_node = Some(to.clone());
            status.current_move = None;
            status.phase = Phase::Online;
        }
        answers.push(Answer {
            instance: fci.key(),
            owner: fci.status.as_ref().and_then(|s| s.owner_node.clone()),
            affected: involves(&fci, scenario),
            outcome,
        });
    }
    answers.sort_by(|a, b| a.instance.cmp(&b.instance));
    answers
}

/// The scenario as `decide` would observe it: failed members silent (kubelet and agent,
/// from now on), drained ones cordoned. Writes nothing that is so already, so that members
/// shared with other instances' observations are copied only when they change (see
/// [`Edits`]).
pub fn apply(obs: &mut Observed, scenario: &Scenario) {
    apply_to_members(&mut obs.members, scenario, obs.now);
    apply_to_outside(obs, scenario);
}

/// [`apply`] to the members.
fn apply_to_members(members: &mut Members, scenario: &Scenario, now: jiff::Timestamp) {
    for node in &scenario.fail {
        if members.get(node).is_some_and(|h| !h.failed())
            && let Some(h) = members.get_mut(node)
        {
            fail(h, now);
        }
    }
    for node in &scenario.drain {
        if members
            .get(node)
            .is_some_and(|h| h.state == MemberState::Up)
            && let Some(h) = members.get_mut(node)
        {
            h.state = MemberState::Paused;
            h.reason = Some(reason::UNSCHEDULABLE.into());
        }
    }
}

/// [`apply`] to the nodes the instance involves that are not members.
fn apply_to_outside(obs: &mut Observed, scenario: &Scenario) {
    for node in &scenario.fail {
        if !obs.members.contains_key(node)
            && let Some(h) = obs.outside.get_mut(node)
            && !h.failed()
        {
            fail(h, obs.now);
        }
    }
}

/// A node powered off at `now`: its kubelet and agent silent from then on.
fn fail(h: &mut NodeHealth, now: jiff::Timestamp) {
    h.state = MemberState::Down;
    h.reason = Some(reason::LEASE_STALE.into());
    h.down_since = Some(now);
    h.heartbeat_stale = true;
    h.heartbeat_seen = Some(now);
    h.recheck_at = None;
    h.basis = HeartbeatBasis {
        kubelet_seen: Some(now),
        agent_seen: Some(now),
    };
    h.agent = match std::mem::take(&mut h.agent) {
        AgentHealth::Absent => AgentHealth::Absent,
        // Silent with its node: it fences itself after its self-fence time.
        AgentHealth::Live { .. } => AgentHealth::Silent {
            seen: now,
            self_fence: h.self_fence,
            before_kubelet: false,
            peer_groups: Vec::new(),
        },
        // Already down before its node: nothing there is known to stop the workloads.
        AgentHealth::Silent {
            seen,
            self_fence,
            peer_groups,
            ..
        } => AgentHealth::Silent {
            seen,
            self_fence,
            before_kubelet: true,
            peer_groups,
        },
    };
    h.agent_steady_since = None;
}

type Members = Shared<BTreeMap<String, NodeHealth>>;

/// The edits one simulation makes to members' health (the scenario, a fence, a workload
/// stop), each made once and shared by every instance that observed the same members and
/// makes the same edit: with the members shared between instances (as the controller
/// observes them, see [`Shared`]), a simulation copies them a few times, not once per
/// instance.
#[derive(Default)]
struct Edits {
    done: Vec<(Members, Edit, Members)>,
}

#[derive(Clone, PartialEq, Eq)]
enum Edit {
    Scenario,
    Fence(String),
    StopWorkloads(String),
}

impl Edits {
    /// `members` after `edit`, made by `make` unless made before from the very same members.
    fn make(&mut self, members: &mut Members, edit: Edit, make: impl FnOnce(&mut Members)) {
        if let Some((_, _, after)) = self
            .done
            .iter()
            .find(|(before, e, _)| Shared::same(before, members) && *e == edit)
        {
            *members = after.clone();
            return;
        }
        let before = members.clone();
        make(members);
        self.done.push((before, edit, members.clone()));
    }
}

/// Rounds of `decide` for one instance in a world that does at once what each asks.
fn rounds(fci: &FailoverClusterInstance, mut obs: Observed, edits: &mut Edits) -> Outcome {
    let name = fci.name_any();
    let generation = fci.metadata.generation;
    let mut status = fci.status.clone();
    let before = status.clone().unwrap_or_default();
    let mut idle = 0;
    for _ in 0..MAX_ROUNDS {
        let d = decide(&name, generation, &fci.spec, status.as_ref(), &obs);
        let mut changed = status.as_ref() != Some(&d.status);
        for action in &d.actions {
            match action {
                Action::CreatePod { node, .. } => {
                    return Outcome::Moves {
                        to: node.clone(),
                        failover: is_failover(&d.status),
                        waits: None,
                    };
                }
                Action::SetEndpoints(addresses) if obs.endpoints != *addresses => {
                    obs.endpoints = addresses.clone();
                    changed = true;
                }
                Action::Fence { node, .. } => {
                    if obs.members.contains_key(node) {
                        edits.make(&mut obs.members, Edit::Fence(node.clone()), |m| {
                            if let Some(h) = m.get_mut(node) {
                                h.state = MemberState::Fenced;
                            }
                        });
                    } else if let Some(h) = obs.outside.get_mut(node) {
                        h.state = MemberState::Fenced;
                    }
                    obs.vip_holders.remove(node);
                    changed = true;
                }
                Action::RequestWorkloadStop { node, .. } => {
                    if obs.members.contains_key(node) {
                        edits.make(&mut obs.members, Edit::StopWorkloads(node.clone()), |m| {
                            if let Some(h) = m.get_mut(node) {
                                h.agent = AgentHealth::Live {
                                    stopped_workloads: true,
                                };
                            }
                        });
                    }
                    changed = true;
                }
                Action::DeletePod { uid, .. } => {
                    let gone: Vec<String> = obs
                        .pods
                        .iter()
                        .filter(|p| p.uid == *uid)
                        .filter_map(|p| p.node.clone())
                        .collect();
                    obs.pods.retain(|p| p.uid != *uid);
                    // The attach/detach controller detaches what the pod used there.
                    for node in gone {
                        if obs.pods.iter().all(|p| p.node.as_ref() != Some(&node)) {
                            obs.attachments.retain(|a| a.node != node);
                        }
                    }
                    changed = true;
                }
                Action::DeleteAttachment { uid, .. } => {
                    obs.attachments.retain(|a| a.uid != *uid);
                    changed = true;
                }
                _ => {}
            }
        }
        let quiet = !changed;
        status = Some(d.status);
        if !quiet {
            idle = 0;
            continue;
        }
        idle += 1;
        match d.recheck_at {
            Some(at) if idle < IDLE_ROUNDS && at > obs.now => obs.now = at,
            _ => return settled(&before, status.as_ref()),
        }
    }
    settled(&before, status.as_ref())
}

fn is_failover(status: &FailoverClusterInstanceStatus) -> bool {
    status
        .current_move
        .as_ref()
        .is_some_and(|m| !m.planned && m.from.is_some())
}

/// Where the rounds came to rest: the move's target, if it has one, with what it waits
/// for; else why it is held; else it stays.
fn settled(
    before: &FailoverClusterInstanceStatus,
    after: Option<&FailoverClusterInstanceStatus>,
) -> Outcome {
    let Some(after) = after else {
        return Outcome::Stays;
    };
    let why = |type_: &str| {
        after
            .conditions
            .iter()
            .find(|c| c.type_ == type_ && c.status == "False")
            .map(|c| (c.reason.clone(), c.message.clone()))
    };
    if let Some(m) = &after.current_move
        && let Some(to) = &m.to
        && m.old_pod_gone.is_some()
    {
        return Outcome::Moves {
            to: to.clone(),
            failover: is_failover(after),
            waits: why(condition::ONLINE).map(|(r, m)| format!("{r}: {m}")),
        };
    }
    let moved = after.current_move.is_some()
        || after.owner_node != before.owner_node
        || after.phase != before.phase;
    let serving = matches!(after.phase, Phase::Online | Phase::Degraded);
    if !moved && serving && why(condition::MOVING).is_none() {
        return Outcome::Stays;
    }
    match why(condition::ONLINE)
        .or_else(|| why(condition::MOVING))
        .or_else(|| why(condition::QUORUM))
    {
        Some((reason, message)) => Outcome::Held { reason, message },
        None if serving => Outcome::Stays,
        None => Outcome::Held {
            reason: format!("{:?}", after.phase),
            message: format!("it would be {:?}", after.phase),
        },
    }
}

/// An instance that would be held, were a member to fail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unprotected {
    /// The member whose failure strands it.
    pub member: String,
    /// `namespace/name`.
    pub instance: String,
    pub reason: String,
    pub message: String,
}

/// Whether every instance serving on a member would have a place should that member fail,
/// for each member heard from now (Up or Paused), one at a time; the instances that would
/// not. `observe` is called at most once per instance.
pub fn one_failure(
    cluster: &FailoverCluster,
    instances: &[FailoverClusterInstance],
    members: &[(String, MemberState)],
    observe: impl FnMut(&FailoverClusterInstance) -> Observed,
    labels: impl Fn(&str) -> BTreeMap<String, String>,
) -> Vec<Unprotected> {
    let mut cache: BTreeMap<String, Observed> = BTreeMap::new();
    let mut observe = observe;
    let mut out = Vec::new();
    // Those the failure leaves alone matter only as anti-affinity neighbours.
    let classes = instances
        .iter()
        .any(|i| !i.spec.anti_affinity_classes.is_empty());
    for (member, state) in members {
        if !state.heard() {
            continue;
        }
        let scenario = Scenario::failing(member);
        // Only those the failure touches, and those that rank with them for anti-affinity.
        let touched: Vec<FailoverClusterInstance> = instances
            .iter()
            .filter(|i| serving(i) && involves(i, &scenario))
            .cloned()
            .collect();
        if touched.is_empty() {
            continue;
        }
        let mut world: Vec<FailoverClusterInstance> = instances
            .iter()
            .filter(|i| classes && !involves(i, &scenario))
            .cloned()
            .collect();
        world.extend(touched.iter().cloned());
        let answers = simulate(
            cluster,
            &world,
            |i| cache.entry(i.key()).or_insert_with(|| observe(i)).clone(),
            &labels,
            &scenario,
        );
        for a in answers.into_iter().filter(|a| a.affected) {
            if let Outcome::Held { reason, message } = a.outcome
                && touched.iter().any(|t| t.key() == a.instance)
            {
                out.push(Unprotected {
                    member: member.clone(),
                    instance: a.instance,
                    reason,
                    message,
                });
            }
        }
    }
    out
}

/// Online or on its way there: what a failure would interrupt.
fn serving(i: &FailoverClusterInstance) -> bool {
    i.status.as_ref().is_some_and(|s| {
        matches!(s.phase, Phase::Online | Phase::Degraded | Phase::Moving)
            || (s.phase == Phase::Pending && s.current_move.is_some())
    })
}

/// The `Resilient` condition's status, reason and message from [`one_failure`]'s answer.
pub fn resilience(unprotected: &[Unprotected], members_checked: usize) -> (bool, String, String) {
    const SHOWN: usize = 5;
    if unprotected.is_empty() {
        return (
            true,
            reason::RESILIENT.into(),
            format!(
                "every instance would have a place should any one member fail ({members_checked} members checked)"
            ),
        );
    }
    let mut told: Vec<String> = unprotected
        .iter()
        .take(SHOWN)
        .map(|u| {
            format!(
                "if {} fails, {} is held ({}: {})",
                u.member, u.instance, u.reason, u.message
            )
        })
        .collect();
    if unprotected.len() > SHOWN {
        told.push(format!("and {} more", unprotected.len() - SHOWN));
    }
    (
        false,
        reason::NOT_RESILIENT.into(),
        format!(
            "{} instance(s) would be held by one member's failure: {}; `kubectl failover simulate --fail NODE` shows every move",
            unprotected.len(),
            told.join("; ")
        ),
    )
}
