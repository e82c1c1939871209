//! An instance with no move in progress: bring it online, keep its endpoint in step with
//! its pod's readiness, count its restarts, and start a move when its owner fails or leaves
//! the cluster, its workload restarts too often, or failback calls it home.

use super::moves::start_move;
use super::placement::{anti_affinity_target, failback_target};
use super::{
    Action, Decision, NodeHealth, Observed, PodFacts, Then, candidates, cond, condition_reason,
    event, failover_threshold, failovers_in_period, pod_name, time,
};
use crate::api::{
    FailoverClusterInstanceSpec, MemberState, Phase, Priority, RestartsSeen, condition, reason,
    set_condition,
};

/// What the owner's state asks of the instance.
#[derive(Debug, PartialEq, Eq)]
enum Owner {
    /// An Up member: it keeps hosting the instance.
    Healthy(Box<NodeHealth>),
    /// Its kubelet is silent (or it is fenced): only a fenced failover may move the instance.
    Silent(String),
    /// Its kubelet heartbeats but the node is not Ready: a graceful move, never a fence.
    Unhealthy(String),
    /// Relabelled out of the cluster, or its Node deleted: a graceful move.
    Left(String),
}

fn owner_state(obs: &Observed, owner: &str) -> Owner {
    let why = |h: &NodeHealth, default: &str| h.reason.clone().unwrap_or_else(|| default.into());
    if let Some(h) = obs.members.get(owner) {
        return if h.state == MemberState::Paused {
            // Cordoned: it takes nothing new, and what it hosts moves off gracefully.
            Owner::Left(why(h, reason::UNSCHEDULABLE))
        } else if !h.failed() {
            Owner::Healthy(Box::new(h.clone()))
        } else if h.heartbeat_stale || h.state == MemberState::Fenced {
            Owner::Silent(why(h, reason::LEASE_STALE))
        } else {
            Owner::Unhealthy(why(h, reason::NODE_NOT_READY))
        };
    }
    match obs.outside.get(owner) {
        Some(h) if h.heartbeat_stale || h.state == MemberState::Fenced => {
            Owner::Silent(why(h, reason::LEASE_STALE))
        }
        Some(_) => Owner::Left(reason::NOT_A_MEMBER.into()),
        None => Owner::Left(reason::NODE_DELETED.into()),
    }
}

/// No move in progress.
pub(super) fn steady(
    name: &str,
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    quorum_ok: bool,
    d: &mut Decision,
) -> Then {
    if obs.requests.offline {
        stop(obs, d);
        return Then::Done;
    }
    if let Some(request) = obs.requests.start.as_ref()
        && d.status.start_request.as_ref() != Some(request)
    {
        d.status.start_request = Some(request.clone());
        // The person has acted: the failovers counted so far are forgiven, and a Failed
        // instance may fail over again.
        d.status.failovers.clear();
        d.status.failover_count = 0;
        if d.status.phase == Phase::Failed {
            d.status.phase = Phase::Pending;
        }
        let msg = "start requested: failover count reset; bringing it online".to_string();
        d.actions.push(event(false, reason::START_REQUESTED, msg));
    }
    if let Some((id, to)) = obs.requests.moves.as_ref()
        && d.status.move_request.as_ref() != Some(id)
    {
        d.status.move_request = Some(id.clone());
        let serving = matches!(d.status.phase, Phase::Online | Phase::Degraded);
        match d.status.owner_node.clone() {
            Some(owner) if serving && obs.node(&owner).is_some_and(|h| !h.failed()) => {
                requested_move(spec, obs, &owner, to.as_deref(), d);
                return Then::Done;
            }
            _ => d.actions.push(event(
                true,
                reason::MOVE_REFUSED,
                format!(
                    "move refused: the instance is {:?}, not serving on a healthy owner",
                    d.status.phase
                ),
            )),
        }
    }
    let Some(owner) = d.status.owner_node.clone() else {
        place(spec, obs, d);
        return Then::Done;
    };
    if d.status.phase == Phase::Failed {
        // Left for a person to act on: nothing moves by itself.
        return Then::Done;
    }
    match owner_state(obs, &owner) {
        Owner::Healthy(h) => healthy_owner(name, spec, obs, &owner, &h, d),
        Owner::Silent(why) => fail_over(spec, obs, quorum_ok, &owner, &why, d),
        Owner::Unhealthy(why) => {
            if refuse_without_quorum(obs, quorum_ok, &owner, &why, d) {
                return Then::Done;
            }
            let why = format!("{}: {why}", reason::NODE_DOWN);
            move_off(name, spec, obs, &owner, &why, d)
        }
        Owner::Left(why) => move_off(name, spec, obs, &owner, &why, d),
    }
}

fn online_condition(d: &mut Decision, ok: bool, reason: &str, msg: String, now: jiff::Timestamp) {
    let generation = d.status.observed_generation;
    set_condition(
        &mut d.status.conditions,
        cond(condition::ONLINE, ok, reason, msg, generation, now),
    );
}

/// Like `online_condition`, with a Warning Event the first time the reason is given.
fn online_warning(d: &mut Decision, reason: &str, msg: String, now: jiff::Timestamp) {
    if condition_reason(&d.status, condition::ONLINE) != Some(reason) {
        d.actions.push(event(true, reason, msg.clone()));
    }
    online_condition(d, false, reason, msg, now);
}

/// Initial placement on the first eligible owner.
fn place(spec: &FailoverClusterInstanceSpec, obs: &Observed, d: &mut Decision) {
    let now = obs.now;
    if spec.priority == Priority::NoAutoStart && obs.requests.start.is_none() {
        d.status.phase = Phase::Offline;
        let msg = "priority NoAutoStart: not brought online automatically".to_string();
        return online_condition(d, false, reason::NO_AUTO_START, msg, now);
    }
    d.status.phase = Phase::Pending;
    if !obs.missing_claims.is_empty() {
        let msg = format!(
            "waiting for PersistentVolumeClaims {} in this namespace: create them, or correct spec.storage.claims",
            obs.missing_claims.join(", ")
        );
        return online_warning(d, reason::CLAIMS_MISSING, msg, now);
    }
    match candidates(spec, obs, None).first() {
        Some(target) => {
            let passed = super::placement::skipped(spec, obs, Some(target));
            if !passed.is_empty() {
                let msg = format!("placing on {target}; skipped {}", passed.join("; "));
                d.actions.push(event(false, reason::PLACEMENT, msg));
            }
            start_move(d, None, Some(target.clone()), reason::PLACEMENT, true, now);
        }
        None => {
            let passed = super::placement::skipped(spec, obs, None);
            let msg = if passed.is_empty() {
                "no preferred or possible owner node is up".to_string()
            } else {
                format!(
                    "no preferred or possible owner node is up: {}",
                    passed.join("; ")
                )
            };
            online_condition(d, false, reason::NO_ELIGIBLE_OWNER, msg, now);
        }
    }
}

/// A planned move an operator asked for, from a healthy `owner` to `to` (else the next
/// eligible owner by preference): refused, with a Warning Event saying why, when the target
/// cannot take the instance.
fn requested_move(
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    owner: &str,
    to: Option<&str>,
    d: &mut Decision,
) {
    if to == Some(owner) {
        // Already where the operator wants it (a failback got there first): nothing moves,
        // and failback leaves it there as it would after the move.
        d.status.moved_by_operator = true;
        let msg = format!("move to {owner} requested: it is already there");
        return d.actions.push(event(false, reason::MOVE_REQUESTED, msg));
    }
    let eligible = candidates(spec, obs, Some(owner));
    let target = match to {
        Some(t) if eligible.iter().any(|e| e == t) => Ok(t.to_string()),
        Some(t) => Err(match super::placement::ineligible(obs, t) {
            Some(why) => format!("{t} cannot take it: {why}"),
            None => format!("{t} is not one of its possible owners"),
        }),
        None => eligible
            .first()
            .cloned()
            .ok_or_else(|| "no other node can take it".to_string()),
    };
    match target {
        Ok(target) => {
            d.actions.push(event(
                false,
                reason::PLANNED_MOVE,
                format!("moving from {owner} to {target}, as requested"),
            ));
            start_move(
                d,
                Some(owner.into()),
                Some(target),
                reason::MOVE_REQUESTED,
                true,
                obs.now,
            );
        }
        Err(why) => d.actions.push(event(
            true,
            reason::MOVE_REFUSED,
            format!("move refused: {why}"),
        )),
    }
}

/// Taken offline by an operator: the endpoint is withdrawn and the pod stopped with its
/// grace period by its node's kubelet; once it is gone the instance has no owner, and its
/// claims, Service and name stay. An owner that does not heartbeat cannot stop its pod: the
/// instance says so and keeps it as its owner (nothing is fenced for a stop), so that a
/// start fails it over as usual.
fn stop(obs: &Observed, d: &mut Decision) {
    let now = obs.now;
    d.status.phase = Phase::Offline;
    if !obs.endpoints.is_empty() {
        d.actions.push(Action::SetEndpoints(Vec::new()));
    }
    let stopped = "taken offline by an operator (kube-failover.io/offline): claims, Service and \
                   name kept; `kubectl failover start` brings it back";
    let Some(owner) = d.status.owner_node.clone() else {
        return online_condition(d, false, reason::STOPPED, stopped.into(), now);
    };
    if obs.pods.is_empty() {
        d.status.owner_node = None;
        d.actions
            .push(event(false, reason::STOPPED, format!("stopped on {owner}")));
        return online_condition(d, false, reason::STOPPED, stopped.into(), now);
    }
    if obs.node(&owner).is_none_or(|h| h.heartbeat_stale) {
        let msg = format!(
            "taken offline by an operator, but {owner} is silent: its pod stays until the node \
             is back or fenced"
        );
        return online_condition(d, false, reason::STOPPING, msg, now);
    }
    for p in obs.pods.iter().filter(|p| !p.terminating) {
        d.actions.push(Action::DeletePod {
            name: p.name.clone(),
            uid: p.uid.clone(),
            force: false,
        });
    }
    let pods: Vec<&str> = obs.pods.iter().map(|p| p.name.as_str()).collect();
    let msg = format!(
        "taken offline by an operator: stopping {} on {owner}",
        pods.join(", ")
    );
    online_condition(d, false, reason::STOPPING, msg, now);
}

/// With too few members up this controller may be the one cut off: it moves nothing.
/// Returns whether it refused.
fn refuse_without_quorum(
    obs: &Observed,
    quorum_ok: bool,
    owner: &str,
    why: &str,
    d: &mut Decision,
) -> bool {
    if quorum_ok {
        return false;
    }
    d.status.phase = Phase::Unknown;
    // Renewals that restore the quorum trigger nothing by themselves: look again soon.
    d.recheck_at = Some(obs.now + jiff::SignedDuration::from_secs(2));
    let msg = format!(
        "owner {owner} is down ({why}) but only {}: not failing over, this controller may be the one cut off",
        obs.describe_votes()
    );
    online_warning(d, reason::QUORUM_LOST, msg, obs.now);
    true
}

/// The owner is silent: fail over, fenced, unless a guard says no.
fn fail_over(
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    quorum_ok: bool,
    owner: &str,
    why: &str,
    d: &mut Decision,
) -> Then {
    let now = obs.now;
    // Without the quorum the owner may well be serving: its endpoint stays.
    if refuse_without_quorum(obs, quorum_ok, owner, why, d) {
        return Then::Done;
    }
    if !obs.endpoints.is_empty() {
        // Clients get a refusal at once, not a black hole, whatever happens next.
        d.actions.push(Action::SetEndpoints(Vec::new()));
    }
    if let Some(claim) = obs
        .pinned_claims
        .iter()
        .find(|(_, n)| *n == owner)
        .map(|(c, _)| c.clone())
    {
        d.status.phase = Phase::Offline;
        let msg = format!(
            "owner {owner} is down ({why}) and claim {claim} is bound to a volume that only {owner} can reach: staying down rather than starting without its data"
        );
        online_warning(d, reason::VOLUME_PINNED_TO_NODE, msg, now);
        return Then::Done;
    }
    let threshold = failover_threshold(spec, obs.members.len());
    let used = failovers_in_period(spec, &d.status, now);
    if used >= threshold {
        d.status.phase = Phase::Failed;
        let msg = format!(
            "owner {owner} is down ({why}); {used} failovers in the last {} s reached the threshold of {threshold}: left Failed until a person acts",
            spec.failover.period_seconds
        );
        online_warning(d, reason::FAILOVER_THRESHOLD_EXCEEDED, msg, now);
        return Then::Done;
    }
    let move_reason = format!("{}: {why}", reason::NODE_DOWN);
    start_move(d, Some(owner.into()), None, &move_reason, false, now);
    d.status.failovers.push(time(now));
    d.actions.push(event(
        true,
        reason::FAILOVER_STARTED,
        format!("owner {owner} is down ({why}); failing over"),
    ));
    // The first steps (withdraw, fence) go out in this same round.
    Then::StepMove
}

/// A graceful move off an owner that is still running: only when another node may take the
/// instance. Otherwise it stays where it is, and says why.
fn move_off(
    name: &str,
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    owner: &str,
    why: &str,
    d: &mut Decision,
) -> Then {
    let now = obs.now;
    let Some(target) = candidates(spec, obs, Some(owner)).into_iter().next() else {
        let msg = format!("should move off {owner} ({why}) but no other node may take it");
        if condition_reason(&d.status, condition::MOVING) != Some(reason::NO_TARGET) {
            d.actions.push(event(true, reason::NO_TARGET, msg.clone()));
        }
        let generation = d.status.observed_generation;
        set_condition(
            &mut d.status.conditions,
            cond(
                condition::MOVING,
                false,
                reason::NO_TARGET,
                msg,
                generation,
                now,
            ),
        );
        // Keep serving from where it is, if it can.
        serve(name, obs, owner, d);
        return Then::Done;
    };
    start_move(d, Some(owner.into()), Some(target.clone()), why, true, now);
    d.actions.push(event(
        false,
        reason::PLANNED_MOVE,
        format!("moving from {owner} ({why}) to {target}"),
    ));
    Then::StepMove
}

/// Counts the pod's restarts not yet counted: container restarts by the kubelet, and the
/// pod's failure. Each is counted once, whatever the number of rounds that see it.
pub(super) fn count_restarts(p: &PodFacts, d: &mut Decision, now: jiff::Timestamp) {
    let seen = match &d.status.restarts_seen {
        Some(s) if s.pod_uid == p.uid => s.clone(),
        _ => RestartsSeen {
            pod_uid: p.uid.clone(),
            container_restarts: 0,
            failed: false,
        },
    };
    let new =
        p.restarts.saturating_sub(seen.container_restarts) + u32::from(p.failed && !seen.failed);
    for _ in 0..new.min(1001) {
        d.status.restarts.push(time(now));
    }
    d.status.restarts_seen = Some(RestartsSeen {
        pod_uid: p.uid.clone(),
        container_restarts: p.restarts.max(seen.container_restarts),
        failed: seen.failed || p.failed,
    });
}

/// The owner is healthy: keep the pod running there and its endpoint in step.
fn healthy_owner(
    name: &str,
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    owner: &str,
    health: &NodeHealth,
    d: &mut Decision,
) -> Then {
    let now = obs.now;
    d.recheck_at = health.recheck_at;
    d.recheck_for_owner = true;
    let seq = d.status.move_seq;
    let Some(p) = obs.pods.iter().find(|p| p.name == pod_name(name, seq)) else {
        serve(name, obs, owner, d);
        return Then::Done;
    };
    count_restarts(p, d, now);
    let restarts = d.status.restarts.len() as u32;
    if restarts > spec.restart.threshold && !candidates(spec, obs, Some(owner)).is_empty() {
        let msg = format!(
            "the workload restarted {restarts} times within {} s on {owner} (threshold {})",
            spec.restart.period_seconds, spec.restart.threshold
        );
        d.status.restarts.clear();
        d.actions
            .push(event(true, reason::RESTART_THRESHOLD_EXCEEDED, msg));
        return move_off(
            name,
            spec,
            obs,
            owner,
            reason::RESTART_THRESHOLD_EXCEEDED,
            d,
        );
    }
    if p.failed && !p.terminating {
        d.actions.push(Action::DeletePod {
            name: p.name.clone(),
            uid: p.uid.clone(),
            force: false,
        });
        d.actions.push(event(
            true,
            reason::RESTARTING,
            format!(
                "pod {} failed on {owner}; restarting it in place ({restarts} of {} restarts)",
                p.name, spec.restart.threshold
            ),
        ));
    }
    serve(name, obs, owner, d);
    if let Some((target, other)) = anti_affinity_target(spec, &d.status, obs, owner) {
        start_move(
            d,
            Some(owner.into()),
            Some(target.clone()),
            reason::ANTI_AFFINITY,
            true,
            now,
        );
        let msg = format!("{owner} also hosts {other}; moving to {target}");
        d.actions.push(event(false, reason::ANTI_AFFINITY, msg));
        return Then::Done;
    }
    // An operator's move sticks: failback does not undo it.
    if d.status.moved_by_operator {
        return Then::Done;
    }
    if let Some(target) = failback_target(spec, obs, owner) {
        start_move(
            d,
            Some(owner.into()),
            Some(target.clone()),
            reason::FAILBACK,
            true,
            now,
        );
        d.actions.push(event(
            false,
            reason::FAILBACK,
            format!("{target} is preferred over {owner} and up; moving back"),
        ));
    }
    Then::Done
}

/// Serves from `owner`: the endpoint lists the pod while it is ready, and a pod gone while
/// its node is healthy is started again.
fn serve(name: &str, obs: &Observed, owner: &str, d: &mut Decision) {
    let now = obs.now;
    let seq = d.status.move_seq;
    let pod_name = pod_name(name, seq);
    d.status.phase = Phase::Online;
    let Some(p) = obs.pods.iter().find(|p| p.name == pod_name) else {
        if obs.node(owner).is_some_and(|h| !h.failed()) {
            // Gone while its node is healthy (deleted by someone, or evicted): start it again.
            d.actions.push(Action::CreatePod {
                node: owner.into(),
                seq,
            });
        }
        if !obs.endpoints.is_empty() {
            d.actions.push(Action::SetEndpoints(Vec::new()));
        }
        let msg = format!("recreating pod {pod_name} on {owner}");
        d.status.phase = Phase::Degraded;
        return online_condition(d, false, reason::POD_MISSING, msg, now);
    };
    let want: Vec<String> = if p.ready && !p.terminating && !p.failed {
        p.ip.iter().cloned().collect()
    } else {
        Vec::new()
    };
    if obs.endpoints != want {
        d.actions.push(Action::SetEndpoints(want.clone()));
    }
    if want.is_empty() {
        let msg = format!("pod {} on {owner} is not ready; endpoint withdrawn", p.name);
        d.status.phase = Phase::Degraded;
        online_condition(d, false, reason::NOT_READY, msg, now);
    } else {
        online_condition(d, true, reason::ONLINE, format!("online on {owner}"), now);
    }
}
