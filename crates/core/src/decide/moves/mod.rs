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

mod clearing;
mod online;

use clearing::{detach, fence, stop_old_pod, withdraw_endpoint};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use online::{choose_owner, publish, start_pod};

use super::{
    Action, AgentHealth, Decision, Dependencies, HISTORY_LIMIT, NodeHealth, Observed, PodFacts,
    Then, candidates, cond, event, micro, pod_name,
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
    d.status.current_move = Some(Move::started(from, to, reason, planned, micro(now)));
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
