//! An instance with no move in progress: bring it online, keep its endpoint in step with
//! its pod's readiness, restart it in place, and start a move when its owner fails, its pod
//! fails too often, or failback calls it home.

use jiff::SignedDuration;

use super::moves::{start_move, step_move};
use super::placement::failback_target;
use super::{
    Action, Decision, NodeHealth, Observed, candidates, cond, condition_reason, event,
    failover_threshold, failovers_in_period, pod_name, time,
};
use crate::api::{FailoverClusterInstanceSpec, Phase, Priority, condition, reason, set_condition};

/// No move in progress.
pub(super) fn steady(
    name: &str,
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    quorum_ok: bool,
    d: &mut Decision,
) {
    let now = obs.now;
    let generation = d.status.observed_generation;
    let Some(owner) = d.status.owner_node.clone() else {
        // Initial placement.
        if spec.priority == Priority::NoAutoStart {
            d.status.phase = Phase::Offline;
            set_condition(
                &mut d.status.conditions,
                cond(
                    condition::ONLINE,
                    false,
                    reason::NO_AUTO_START,
                    "priority NoAutoStart: not brought online automatically",
                    generation,
                    now,
                ),
            );
            return;
        }
        if !obs.missing_claims.is_empty() {
            d.status.phase = Phase::Pending;
            set_condition(
                &mut d.status.conditions,
                cond(
                    condition::ONLINE,
                    false,
                    reason::CLAIMS_MISSING,
                    format!(
                        "waiting for PersistentVolumeClaims {:?}",
                        obs.missing_claims
                    ),
                    generation,
                    now,
                ),
            );
            return;
        }
        match candidates(spec, obs, None).first() {
            Some(target) => start_move(d, None, Some(target.clone()), reason::PLACEMENT, true, now),
            None => {
                d.status.phase = Phase::Pending;
                set_condition(
                    &mut d.status.conditions,
                    cond(
                        condition::ONLINE,
                        false,
                        reason::NO_ELIGIBLE_OWNER,
                        "no preferred or possible owner node is up",
                        generation,
                        now,
                    ),
                );
            }
        }
        return;
    };

    let owner_health = obs.members.get(&owner).cloned();
    let owner_failed = owner_health.as_ref().is_none_or(NodeHealth::failed);
    if owner_failed {
        if d.status.phase == Phase::Failed {
            return;
        }
        let why = owner_health
            .as_ref()
            .and_then(|h| h.reason.clone())
            .unwrap_or_else(|| reason::NOT_A_MEMBER.into());
        if !obs.endpoints.is_empty() {
            // Clients get a refusal at once, not a black hole, whatever happens next.
            d.actions.push(Action::SetEndpoints(Vec::new()));
        }
        if !quorum_ok {
            d.status.phase = Phase::Offline;
            let msg = format!(
                "owner {owner} is down ({why}) but only {} of {} member nodes are up ({} required): not failing over, this controller may be the one cut off",
                obs.healthy_members(),
                obs.members.len(),
                obs.quorum_required
            );
            if condition_reason(&d.status, condition::ONLINE) != Some(reason::QUORUM_LOST) {
                d.actions
                    .push(event(true, reason::QUORUM_LOST, msg.clone()));
            }
            set_condition(
                &mut d.status.conditions,
                cond(
                    condition::ONLINE,
                    false,
                    reason::QUORUM_LOST,
                    msg,
                    generation,
                    now,
                ),
            );
            return;
        }
        if let Some(claim) = obs
            .pinned_claims
            .iter()
            .find(|(_, n)| **n == owner)
            .map(|(c, _)| c.clone())
        {
            d.status.phase = Phase::Offline;
            let msg = format!(
                "owner {owner} is down ({why}) and claim {claim} is bound to a volume that only {owner} can reach: staying down rather than starting without its data"
            );
            if condition_reason(&d.status, condition::ONLINE) != Some(reason::VOLUME_PINNED_TO_NODE)
            {
                d.actions
                    .push(event(true, reason::VOLUME_PINNED_TO_NODE, msg.clone()));
            }
            set_condition(
                &mut d.status.conditions,
                cond(
                    condition::ONLINE,
                    false,
                    reason::VOLUME_PINNED_TO_NODE,
                    msg,
                    generation,
                    now,
                ),
            );
            return;
        }
        let threshold = failover_threshold(spec, obs.members.len());
        let used = failovers_in_period(spec, &d.status, now);
        if used >= threshold {
            d.status.phase = Phase::Failed;
            let msg = format!(
                "owner {owner} is down ({why}); {used} failovers in the last {} s reached the threshold of {threshold}: left Failed until a person acts",
                spec.failover.period_seconds
            );
            d.actions.push(event(
                true,
                reason::FAILOVER_THRESHOLD_EXCEEDED,
                msg.clone(),
            ));
            set_condition(
                &mut d.status.conditions,
                cond(
                    condition::ONLINE,
                    false,
                    reason::FAILOVER_THRESHOLD_EXCEEDED,
                    msg,
                    generation,
                    now,
                ),
            );
            return;
        }
        start_move(
            d,
            Some(owner.clone()),
            None,
            &format!("{}: {why}", reason::NODE_DOWN),
            false,
            now,
        );
        d.actions.push(event(
            true,
            reason::FAILOVER_STARTED,
            format!("owner {owner} is down ({why}); failing over"),
        ));
        if let Some(m) = d.status.current_move.clone() {
            step_move(name, spec, obs, m, d);
        }
        return;
    }

    // The owner is healthy.
    if let Some(h) = &owner_health {
        d.recheck_at = h.recheck_at;
    }
    let seq = d.status.move_seq;
    let pod = obs.pods.iter().find(|p| p.name == pod_name(name, seq));
    match pod {
        None => {
            // Gone while its node is healthy (deleted by someone, or evicted): start it again.
            d.actions.push(Action::CreatePod {
                node: owner.clone(),
                seq,
            });
            d.status.phase = Phase::Online;
            set_condition(
                &mut d.status.conditions,
                cond(
                    condition::ONLINE,
                    false,
                    reason::POD_MISSING,
                    format!("recreating pod {} on {owner}", pod_name(name, seq)),
                    generation,
                    now,
                ),
            );
            if !obs.endpoints.is_empty() {
                d.actions.push(Action::SetEndpoints(Vec::new()));
            }
        }
        Some(p) if p.failed => {
            let since = now - SignedDuration::from_secs(i64::from(spec.restart.period_seconds));
            d.status.restarts.retain(|t| t.0 > since);
            if !obs.endpoints.is_empty() {
                d.actions.push(Action::SetEndpoints(Vec::new()));
            }
            if (d.status.restarts.len() as u32) < spec.restart.threshold {
                d.status.restarts.push(time(now));
                d.actions.push(Action::DeletePod {
                    name: p.name.clone(),
                    force: false,
                });
                d.actions.push(event(
                    true,
                    reason::RESTARTING,
                    format!(
                        "pod {} failed on {owner}; restarting it in place ({} of {})",
                        p.name,
                        d.status.restarts.len(),
                        spec.restart.threshold
                    ),
                ));
            } else {
                let target = candidates(spec, obs, Some(&owner)).first().cloned();
                d.status.restarts.clear();
                start_move(
                    d,
                    Some(owner.clone()),
                    target,
                    reason::RESTART_THRESHOLD_EXCEEDED,
                    true,
                    now,
                );
                d.actions.push(event(
                    true,
                    reason::RESTART_THRESHOLD_EXCEEDED,
                    format!(
                        "pod failed {} times within {} s on {owner}; moving the instance",
                        spec.restart.threshold, spec.restart.period_seconds
                    ),
                ));
            }
        }
        Some(p) => {
            let want: Vec<String> = if p.ready && !p.terminating {
                p.ip.iter().cloned().collect()
            } else {
                Vec::new()
            };
            if obs.endpoints != want {
                d.actions.push(Action::SetEndpoints(want.clone()));
            }
            d.status.phase = Phase::Online;
            if want.is_empty() {
                set_condition(
                    &mut d.status.conditions,
                    cond(
                        condition::ONLINE,
                        false,
                        reason::NOT_READY,
                        format!("pod {} on {owner} is not ready; endpoint withdrawn", p.name),
                        generation,
                        now,
                    ),
                );
            } else {
                set_condition(
                    &mut d.status.conditions,
                    cond(
                        condition::ONLINE,
                        true,
                        reason::ONLINE,
                        format!("online on {owner}"),
                        generation,
                        now,
                    ),
                );
            }
            // Failback to a more preferred owner that is up again.
            if let Some(target) = failback_target(spec, obs, &owner) {
                start_move(
                    d,
                    Some(owner.clone()),
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
        }
    }
}
