//! A move in progress (placement, failover or planned move): each round carries it one step
//! further, in order, each step waiting for the API server's word that the one before it
//! is done.
//!
//! The steps, and what each waits for before it is recorded in `status.move`:
//!
//! 1. [`Step::WithdrawEndpoint`]: the EndpointSlice lists nothing.
//! 2. [`Step::Fence`] (failovers only): the old owner carries the out-of-service taint (or
//!    its Node is gone, or fencing is `None`). Called off if its heartbeats come back first.
//! 3. [`Step::StopOldPod`]: no other pod of the instance is left in the API.
//! 4. [`Step::Detach`]: no attachment of its volumes is left that would stop the new owner.
//! 5. [`Step::ChooseOwner`]: an eligible node is chosen (again, if the chosen one failed).
//! 6. [`Step::StartPod`]: the pod of this move exists on the new owner.
//! 7. [`Step::Publish`]: the pod is ready and the EndpointSlice lists it: online.
//!
//! Steps 1 and 2 go out together in a failover, and so do 3 and 4: they are independent.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    Action, Decision, HISTORY_LIMIT, NodeHealth, Observed, PodFacts, Then, candidates, cond, event,
    micro, pod_name,
};
use crate::api::{
    FailoverClusterInstanceSpec, FencingMode, MemberState, Move, Phase, VipMode, condition, reason,
    set_condition,
};

/// The steps of a move, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    WithdrawEndpoint,
    Fence,
    StopOldPod,
    Detach,
    ChooseOwner,
    StartPod,
    Publish,
}

/// A margin on top of a node agent's self-fence time before the controller fences the node
/// itself. The agent's timer starts when it sent its last successful renewal, which the
/// controller saw later, so the bound holds without the margin; the margin covers the agent's
/// 100 ms check interval, taking the addresses down, and a stalled process.
pub const SELF_FENCE_MARGIN: SignedDuration = SignedDuration::from_secs(1);

/// How long after a move began (and revoked the old owner's grant) the virtual IPs may go
/// to the new owner: the agents' confirmation window, plus a margin for the status write that
/// revoked the grant.
pub const GRANT_HANDOVER: SignedDuration =
    SignedDuration::from_millis(crate::api::GRANT_CONFIRM_MILLISECONDS as i64 + 1000);

/// One step: carries the move as far as it can and says how the round goes on.
type StepFn = fn(&mut Round) -> Flow;

/// What a step says of the round.
enum Flow {
    /// Done (now or before): go on to the next step.
    Next,
    /// Asked for its action and waits; the independent step after it may go out too.
    Waiting(&'static str, String),
    /// Waits; nothing after it may run in this round.
    Park(&'static str, String),
    /// The move ended (online, abandoned, or handed over to a new one).
    Ended,
    /// The move ended where it was; the instance's steady state decides from there.
    HandBack,
}

/// One round of one move.
struct Round<'a, 'd> {
    spec: &'a FailoverClusterInstanceSpec,
    obs: &'a Observed,
    d: &'d mut Decision,
    m: Move,
    /// The pod of this move.
    new_pod: String,
}

impl Round<'_, '_> {
    fn now(&self) -> Timestamp {
        self.obs.now
    }

    /// An unplanned move off a failed owner: the only kind that fences.
    fn failover(&self) -> bool {
        !self.m.planned && self.m.from.is_some()
    }

    fn from(&self) -> Option<String> {
        self.m.from.clone()
    }

    fn say(&mut self, reason: &str, msg: String) {
        let (generation, now) = (self.d.status.observed_generation, self.now());
        set_condition(
            &mut self.d.status.conditions,
            cond(condition::ONLINE, false, reason, msg, generation, now),
        );
    }
}

pub(super) fn start_move(
    d: &mut Decision,
    from: Option<String>,
    to: Option<String>,
    reason: &str,
    planned: bool,
    now: Timestamp,
) {
    d.status.move_seq += 1;
    d.status.moved_by_operator = reason == crate::api::reason::MOVE_REQUESTED;
    d.status.current_move = Some(Move {
        from,
        to,
        reason: reason.into(),
        planned,
        started: micro(now),
        endpoint_withdrawn: None,
        fenced: None,
        vip_released: None,
        old_pod_gone: None,
        volumes_detached: None,
        pod_created: None,
        online: None,
    });
    d.status.phase = if d.status.owner_node.is_some() {
        Phase::Moving
    } else {
        Phase::Pending
    };
}

/// Ends the move: it goes to the history, which keeps the last `HISTORY_LIMIT` moves.
fn finish_move(d: &mut Decision, m: Move) {
    d.status.history.push(m);
    let excess = d.status.history.len().saturating_sub(HISTORY_LIMIT);
    d.status.history.drain(..excess);
    d.status.history_summary = d.status.history.iter().map(Move::summary).collect();
    d.status.current_move = None;
}

/// Carries the move in progress one step further.
pub(super) fn step_move(
    name: &str,
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    mut m: Move,
    d: &mut Decision,
) -> Then {
    escalate_if_silent(&mut m, obs, d);
    d.status.phase = if m.from.is_some() {
        Phase::Moving
    } else {
        Phase::Pending
    };
    let mut r = Round {
        spec,
        obs,
        new_pod: pod_name(name, d.status.move_seq),
        d,
        m,
    };
    let steps: [(Step, StepFn); 7] = [
        (Step::WithdrawEndpoint, withdraw_endpoint),
        (Step::Fence, fence),
        (Step::StopOldPod, stop_old_pod),
        (Step::Detach, detach),
        (Step::ChooseOwner, choose_owner),
        (Step::StartPod, start_pod),
        (Step::Publish, publish),
    ];
    // Steps 1–4 clear the way for the new pod and may wait side by side; 5–7 bring it
    // online, one at a time, once the way is clear.
    let mut waiting: Option<(&'static str, String)> = None;
    for (step, run) in steps {
        let clearing = matches!(
            step,
            Step::WithdrawEndpoint | Step::Fence | Step::StopOldPod | Step::Detach
        );
        match run(&mut r) {
            Flow::Next => {}
            // Withdrawing the endpoint waits alone in a planned move: clients are refused
            // before the pod stops, not cut off.
            Flow::Waiting(reason, msg)
                if clearing && (step != Step::WithdrawEndpoint || r.failover()) =>
            {
                waiting = waiting.or(Some((reason, msg)));
            }
            Flow::Waiting(reason, msg) | Flow::Park(reason, msg) => {
                park(r, waiting.or(Some((reason, msg))));
                return Then::Done;
            }
            Flow::Ended => return Then::Done,
            Flow::HandBack => return Then::Steady,
        }
        if step == Step::Detach && waiting.is_some() {
            park(r, waiting);
            return Then::Done;
        }
    }
    Then::Done
}

/// A graceful move waits for the old owner's kubelet to stop the old pod. If that kubelet
/// goes silent before it has (a NotReady node that then dies), no one ever will: the move
/// becomes a failover, which fences the node first like any other. Not without the quorum:
/// when most members look silent at once, this controller may be the one that cannot hear
/// (a replica just made leader, a watch behind); the move stays graceful and waits.
fn escalate_if_silent(m: &mut Move, obs: &Observed, d: &mut Decision) {
    let Some(from) = m.from.as_deref() else {
        return;
    };
    let silent = obs
        .node(from)
        .is_some_and(|h| h.heartbeat_stale || h.state == MemberState::Fenced);
    if !m.planned || m.old_pod_gone.is_some() || !silent || !obs.has_quorum() {
        return;
    }
    m.planned = false;
    m.reason = format!("{} (then {from} went silent)", m.reason);
    d.status.failovers.push(Time(obs.now));
    d.actions.push(event(
        true,
        reason::FAILOVER_STARTED,
        format!("{from} went silent during a graceful move; failing over, fenced"),
    ));
}

/// Leaves the move where it is, saying what it waits for.
fn park(mut r: Round, waiting: Option<(&'static str, String)>) {
    if let Some((reason, msg)) = waiting {
        r.say(reason, msg);
    }
    r.d.status.current_move = Some(r.m);
}

/// Step 1: the endpoint is withdrawn.
fn withdraw_endpoint(r: &mut Round) -> Flow {
    if r.m.endpoint_withdrawn.is_some() {
        return Flow::Next;
    }
    if r.obs.endpoints.is_empty() {
        r.m.endpoint_withdrawn = Some(micro(r.now()));
        return Flow::Next;
    }
    r.d.actions.push(Action::SetEndpoints(Vec::new()));
    Flow::Waiting(
        reason::WITHDRAWING_ENDPOINT,
        "withdrawing the endpoint".into(),
    )
}

/// Step 2: the old owner is fenced (failovers only).
fn fence(r: &mut Round) -> Flow {
    if !r.failover() || r.m.fenced.is_some() {
        return Flow::Next;
    }
    let now = r.now();
    let node = r.from().unwrap_or_default();
    let health = r.obs.node(&node);
    let confirmed = match health {
        None => Some(format!("{node} is fenced: its Node object was deleted")),
        Some(h) if h.state == MemberState::Fenced => Some(format!(
            "{node} is fenced (node.kubernetes.io/out-of-service)"
        )),
        _ => None,
    };
    if let Some(msg) = confirmed {
        r.m.fenced = Some(micro(now));
        r.d.actions.push(event(false, reason::FENCED, msg));
        return Flow::Next;
    }
    let health = health.cloned();
    if r.obs.fencing.mode == FencingMode::None {
        r.m.fenced = Some(micro(now));
        r.d.actions.push(event(
            true,
            reason::NOT_FENCED,
            format!("{node} is not fenced (fencing mode None); going on as configured"),
        ));
        return Flow::Next;
    }
    if health.as_ref().is_some_and(|h| !h.heartbeat_stale) {
        return abandon(r, &node);
    }
    if !r.obs.has_quorum() {
        // Fencing cannot be undone: with the quorum gone, wait.
        let msg = format!("quorum lost before {node} was fenced; waiting");
        return Flow::Park(reason::QUORUM_LOST, msg);
    }
    if r.obs.fencing.mode == FencingMode::External {
        let msg = format!(
            "waiting for an external fencer to taint {node} with node.kubernetes.io/out-of-service or delete it"
        );
        return Flow::Park(reason::AWAITING_FENCE, msg);
    }
    let down_since = health.as_ref().and_then(|h| h.down_since).unwrap_or(now);
    let mut at = down_since + SignedDuration::from_secs(i64::from(r.obs.fencing.delay_seconds));
    if let Some(s) = health.as_ref().and_then(|h| h.self_fence) {
        // The node's agent stops its workloads by itself that long after its last renewal,
        // which this controller saw no sooner than it was made: a partitioned node has
        // stopped before a second copy starts.
        let since = health
            .as_ref()
            .and_then(|h| h.heartbeat_seen)
            .unwrap_or(down_since);
        at = at.max(since + s + SELF_FENCE_MARGIN);
    }
    if at <= now {
        r.d.actions.push(Action::Fence { node: node.clone() });
        return Flow::Park(reason::FENCING, format!("tainting {node} out of service"));
    }
    r.d.recheck_at = Some(at);
    Flow::Park(reason::FENCE_DELAY, format!("fencing {node} at {at}"))
}

/// The old owner's heartbeats came back before it was fenced: the failover is called off
/// (its pod was never touched) and the instance stays, its endpoint published again once
/// its pod is ready.
fn abandon(r: &mut Round, node: &str) -> Flow {
    let mut m = r.m.clone();
    m.reason = format!(
        "{} (abandoned: {node} recovered before it was fenced)",
        m.reason
    );
    // This move created nothing: its pod number is free again, and the old pod keeps its.
    r.d.status.move_seq = r.d.status.move_seq.saturating_sub(1);
    // A false alarm does not count against the failover threshold.
    if let Some(i) =
        r.d.status
            .failovers
            .iter()
            // `Time` keeps whole seconds through the API; the move's start, microseconds.
            .rposition(|t| t.0.duration_since(m.started.0).abs() < SignedDuration::from_secs(1))
    {
        r.d.status.failovers.remove(i);
    }
    r.d.status.owner_node = Some(node.to_string());
    r.d.status.phase = Phase::Online;
    r.d.actions.push(event(
        false,
        reason::MOVE_ABANDONED,
        format!("{node} is heartbeating again and was not fenced: staying on it"),
    ));
    r.say(
        reason::MOVE_ABANDONED,
        format!("{node} recovered before it was fenced; waiting for the pod to be ready"),
    );
    finish_move(r.d, m);
    r.d.recheck_at = Some(r.now());
    Flow::Ended
}

/// Whether a pod may be deleted with no grace period: only on a fenced (or deleted) node,
/// where no kubelet is left to run it.
fn on_fenced_node(r: &Round, p: &PodFacts) -> bool {
    let Some(node) = &p.node else { return false };
    let fenced_here = r.failover() && r.m.fenced.is_some() && Some(node) == r.m.from.as_ref();
    fenced_here
        || r.obs
            .node(node)
            .is_none_or(|h| h.state == MemberState::Fenced)
}

/// Asks for `p` to be deleted: at once on a fenced node, with its grace period elsewhere
/// (and only once: a pod already terminating is left to its kubelet).
fn stop_pod(r: &mut Round, p: &PodFacts) {
    let force = on_fenced_node(r, p);
    if !p.terminating || force {
        r.d.actions.push(Action::DeletePod {
            name: p.name.clone(),
            uid: p.uid.clone(),
            force,
        });
    }
}

/// The pod of this move: its name, on the chosen owner (or already recorded as created).
/// A pod of that name elsewhere was made for an earlier target and is in the way.
fn is_new_pod(r: &Round, p: &PodFacts) -> bool {
    p.name == r.new_pod && (r.m.pod_created.is_some() || (p.node.is_some() && p.node == r.m.to))
}

/// Every pod of the instance but the pod of this move.
fn pods_in_the_way(r: &Round) -> Vec<PodFacts> {
    r.obs
        .pods
        .iter()
        .filter(|p| !is_new_pod(r, p))
        .cloned()
        .collect()
}

/// Step 3: no other pod of the instance is left in the API (gone, not only marked for
/// deletion). Checked again in every round until the new pod exists: a pod that appears
/// after this step was done (created late by a leader that was paused and deposed) is in
/// the way again, and so may be its volumes.
fn stop_old_pod(r: &mut Round) -> Flow {
    if r.m.pod_created.is_some() {
        return Flow::Next;
    }
    let old = pods_in_the_way(r);
    if old.is_empty() {
        r.m.old_pod_gone.get_or_insert(micro(r.now()));
        return Flow::Next;
    }
    if r.m.old_pod_gone.take().is_some() {
        r.m.volumes_detached = None;
    }
    for p in old {
        stop_pod(r, &p);
    }
    Flow::Waiting(
        reason::STOPPING_OLD_POD,
        "waiting for the old pod to be gone".into(),
    )
}

/// Step 4: no attachment of the instance's volumes is left that would keep the new owner
/// from attaching: any attachment of a ReadWriteOnce volume to another node (one to the
/// chosen owner is what the new pod needs), and the old owner's of a shared one.
fn detach(r: &mut Round) -> Flow {
    if r.m.volumes_detached.is_some() {
        return Flow::Next;
    }
    let from = r.from();
    let to = r.m.to.clone();
    let blocking: Vec<_> = r
        .obs
        .attachments
        .iter()
        .filter(|a| Some(&a.node) != to.as_ref())
        .filter(|a| !a.shared || Some(&a.node) == from.as_ref())
        .cloned()
        .collect();
    if blocking.is_empty() {
        // Recorded only once the pods are gone: a pod still in the way may yet attach.
        if r.m.old_pod_gone.is_some() {
            r.m.volumes_detached = Some(micro(r.now()));
        }
        return Flow::Next;
    }
    for a in &blocking {
        // After an unplanned move the old owner is fenced; a planned move waits for the
        // attach/detach controller to detach gracefully.
        if r.failover() && r.m.fenced.is_some() && Some(&a.node) == from.as_ref() {
            r.d.actions.push(Action::DeleteAttachment {
                name: a.name.clone(),
                uid: a.uid.clone(),
            });
        }
    }
    let msg = format!("waiting for {} volume attachment(s) to go", blocking.len());
    Flow::Waiting(reason::DETACHING_VOLUMES, msg)
}

/// Step 5: the new owner: the one chosen if still eligible, else the best candidate now.
fn choose_owner(r: &mut Round) -> Flow {
    // Judged again each round until the pod is created: the target may have failed, or an
    // instance it must never share a node with may have been seen going there.
    let target_ok =
        r.m.to
            .as_ref()
            .is_some_and(|t| super::placement::ineligible(r.obs, t).is_none());
    if !target_ok && r.m.pod_created.is_none() {
        r.m.to = candidates(r.spec, r.obs, r.m.from.as_deref())
            .into_iter()
            .next();
    }
    let Some(to) = r.m.to.clone() else {
        r.say(
            reason::NO_ELIGIBLE_OWNER,
            "no preferred or possible owner node is up; waiting for one".into(),
        );
        r.d.status.phase = if r.m.from.is_some() {
            Phase::Offline
        } else {
            Phase::Pending
        };
        r.d.status.current_move = Some(r.m.clone());
        return Flow::Ended;
    };
    // The new owner failed after its pod was created (nodes often fail together): this move
    // ends there, and whatever the new owner's state calls for starts from it.
    if r.m.pod_created.is_some() && r.obs.members.get(&to).is_none_or(NodeHealth::failed) {
        r.d.status.owner_node = Some(to.clone());
        r.d.actions.push(event(
            true,
            reason::NEW_OWNER_FAILED,
            format!("{to} failed before the instance came online there"),
        ));
        finish_move(r.d, r.m.clone());
        return Flow::HandBack;
    }
    Flow::Next
}

/// Step 6: the pod of this move runs on the new owner, higher priorities first when many
/// move at once. A pod of this move on another node is never adopted.
fn start_pod(r: &mut Round) -> Flow {
    let to = r.m.to.clone().unwrap_or_default();
    let now = r.now();
    if r.m.pod_created.is_some() {
        return Flow::Next;
    }
    // A pod in the way after step 3 was made by an earlier round that went out late (a
    // leader paused and deposed), or for a target that failed before the pod was recorded.
    // The way must be cleared again: the pod gone (step 3, which deletes it again should
    // this round's delete be lost) and its volumes detached (step 4).
    let in_way = pods_in_the_way(r);
    if let Some(first) = in_way.first() {
        let msg = format!(
            "pod {} is on {}, in the way of {} on {to}: removing it first",
            first.name,
            first.node.as_deref().unwrap_or("no node"),
            r.new_pod
        );
        r.m.old_pod_gone = None;
        r.m.volumes_detached = None;
        for p in &in_way {
            stop_pod(r, p);
        }
        return Flow::Park(reason::STOPPING_OLD_POD, msg);
    }
    let pod = r.obs.pods.iter().find(|p| p.name == r.new_pod).cloned();
    match pod {
        Some(_) => {
            r.m.pod_created = Some(micro(now));
            r.d.status.owner_node = Some(to);
            Flow::Next
        }
        None if r.obs.higher_priority_starting => {
            r.d.recheck_at = Some(now + SignedDuration::from_millis(200));
            r.d.status.owner_node = Some(to.clone());
            let msg = format!(
                "instances of higher priority start first; then {} on {to}",
                r.new_pod
            );
            Flow::Park(reason::WAITING_FOR_HIGHER_PRIORITY, msg)
        }
        None => {
            r.d.actions.push(Action::CreatePod {
                node: to.clone(),
                seq: r.d.status.move_seq,
            });
            r.d.status.owner_node = Some(to.clone());
            let msg = format!("starting pod {} on {to}", r.new_pod);
            Flow::Park(reason::STARTING_POD, msg)
        }
    }
}

/// Step 7: online: the pod is ready and the EndpointSlice lists it.
fn publish(r: &mut Round) -> Flow {
    let to = r.m.to.clone().unwrap_or_default();
    let now = r.now();
    let ip = r
        .obs
        .pods
        .iter()
        .find(|p| p.name == r.new_pod)
        .filter(|p| p.ready && !p.terminating && !p.failed)
        .and_then(|p| p.ip.clone());
    let Some(ip) = ip else {
        let msg = format!("waiting for pod {} on {to} to be ready", r.new_pod);
        return Flow::Park(reason::WAITING_FOR_READY, msg);
    };
    if r.spec.vip_mode == VipMode::Agent && !r.spec.virtual_ips.is_empty() {
        if r.m.from.is_some() {
            // The old owner's grant was revoked as the move began: an agent that read it just
            // before lists the instance on its Lease within the confirmation window.
            let handover = r.m.started.0 + GRANT_HANDOVER;
            if now < handover {
                let msg = format!(
                    "handing the virtual IPs over no sooner than {handover}, once an agent that read the old grant would list them"
                );
                r.d.recheck_at = Some(handover);
                return Flow::Park(reason::AWAITING_VIP_RELEASE, msg);
            }
        }
        let others = super::other_vip_holders(r.obs, &to);
        if !others.is_empty() {
            let msg = format!(
                "waiting for {} to release the virtual IPs (its node agent still lists them)",
                others.join(", ")
            );
            // The holder's self-fence time may pass without any event: look again.
            r.d.recheck_at = Some(now + SignedDuration::from_secs(1));
            return Flow::Park(reason::AWAITING_VIP_RELEASE, msg);
        }
        if r.m.vip_released.is_none() {
            r.m.vip_released = Some(micro(now));
        }
    }
    if r.obs.endpoints != [ip.clone()] {
        r.d.actions.push(Action::SetEndpoints(vec![ip]));
        let msg = format!("pod {} ready on {to}; publishing its endpoint", r.new_pod);
        return Flow::Park(reason::PUBLISHING_ENDPOINT, msg);
    }
    let mut m = r.m.clone();
    m.online = Some(micro(now));
    r.d.status.owner_node = Some(to.clone());
    r.d.status.phase = Phase::Online;
    let generation = r.d.status.observed_generation;
    set_condition(
        &mut r.d.status.conditions,
        cond(
            condition::ONLINE,
            true,
            reason::ONLINE,
            format!("online on {to}"),
            generation,
            now,
        ),
    );
    let took = now.duration_since(m.started.0).as_secs_f64();
    r.d.actions.push(event(
        false,
        if m.from.is_some() {
            reason::MOVED_ONLINE
        } else {
            reason::ONLINE
        },
        format!("online on {to} after {took:.1} s ({})", m.reason),
    ));
    finish_move(r.d, m);
    Flow::Ended
}
