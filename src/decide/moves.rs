//! A move in progress (placement, failover or planned move): each round carries it one step
//! further, in order, each step waiting for the API server's word that the one before it
//! is done.

use jiff::{SignedDuration, Timestamp};

use super::steady::steady;
use super::{
    Action, Decision, HISTORY_LIMIT, NodeHealth, Observed, PodFacts, candidates, cond, event,
    micro, pod_name,
};
use crate::api::{
    FailoverClusterInstanceSpec, FencingMode, MemberState, Move, Phase, condition, reason,
    set_condition,
};

pub(super) fn start_move(
    d: &mut Decision,
    from: Option<String>,
    to: Option<String>,
    reason: &str,
    planned: bool,
    now: Timestamp,
) {
    d.status.move_seq += 1;
    d.status.current_move = Some(Move {
        from,
        to,
        reason: reason.into(),
        planned,
        started: micro(now),
        endpoint_withdrawn: None,
        fenced: None,
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
    d.status.current_move = None;
}

/// Leaves the move where it is, saying what it waits for.
fn park(
    d: &mut Decision,
    m: Move,
    waiting: Option<(&str, String)>,
    moving: &dyn Fn(&mut Decision, &str, String),
) {
    if let Some((reason, msg)) = waiting {
        moving(d, reason, msg);
    }
    d.status.current_move = Some(m);
}

/// Carries the move in progress one step further.
pub(super) fn step_move(
    name: &str,
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    mut m: Move,
    d: &mut Decision,
) {
    let now = obs.now;
    let generation = d.status.observed_generation;
    let seq = d.status.move_seq;
    let new_pod = pod_name(name, seq);
    let from = m.from.clone();
    let is_failover = !m.planned && from.is_some();
    d.status.phase = if from.is_some() {
        Phase::Moving
    } else {
        Phase::Pending
    };
    let moving = |d: &mut Decision, reason: &str, msg: String| {
        set_condition(
            &mut d.status.conditions,
            cond(condition::ONLINE, false, reason, msg, generation, now),
        );
    };

    // Steps 1–4 clear the way for the new pod. Within a failover, withdrawing the endpoint
    // and fencing are independent and go out together; once the old owner is fenced, the
    // old pod and its volume attachments are removed together. A planned move withdraws
    // the endpoint before it stops the pod, so that clients are refused, not cut off.
    let mut waiting: Option<(&str, String)> = None;

    // 1. Withdraw the endpoint.
    if m.endpoint_withdrawn.is_none() {
        if obs.endpoints.is_empty() {
            m.endpoint_withdrawn = Some(micro(now));
        } else {
            d.actions.push(Action::SetEndpoints(Vec::new()));
            waiting = Some((
                reason::WITHDRAWING_ENDPOINT,
                "withdrawing the endpoint".into(),
            ));
            if !is_failover {
                return park(d, m, waiting, &moving);
            }
        }
    }

    // 2. Fence the old owner (unplanned moves only).
    if is_failover && m.fenced.is_none() {
        let node = from.clone().unwrap_or_default();
        let health = obs.members.get(&node);
        let fenced = match obs.fencing.mode {
            FencingMode::None => true,
            _ => health.is_none_or(|h| h.state == MemberState::Fenced),
        };
        if fenced {
            m.fenced = Some(micro(now));
            d.actions
                .push(event(false, reason::FENCED, format!("{node} is fenced")));
        } else if !obs.has_quorum() {
            // Fencing cannot be undone: with the quorum gone, wait.
            let msg = format!("quorum lost before {node} was fenced; waiting");
            return park(d, m, Some((reason::QUORUM_LOST, msg)), &moving);
        } else if obs.fencing.mode == FencingMode::External {
            let msg = format!(
                "waiting for an external fencer to taint {node} with node.kubernetes.io/out-of-service or delete it"
            );
            return park(d, m, Some((reason::AWAITING_FENCE, msg)), &moving);
        } else {
            let down_since = health.and_then(|h| h.down_since).unwrap_or(now);
            let at = down_since + SignedDuration::from_secs(i64::from(obs.fencing.delay_seconds));
            if at <= now {
                d.actions.push(Action::Fence { node: node.clone() });
                let msg = format!("tainting {node} out of service");
                return park(d, m, Some((reason::FENCING, msg)), &moving);
            }
            d.recheck_at = Some(at);
            let msg = format!("fencing {node} at {at}");
            return park(d, m, Some((reason::FENCE_DELAY, msg)), &moving);
        }
    }

    // 3. The old pod must be gone from the API, not only marked for deletion.
    let old: Vec<&PodFacts> = obs.pods.iter().filter(|p| p.name != new_pod).collect();
    if m.old_pod_gone.is_none() {
        if old.is_empty() {
            m.old_pod_gone = Some(micro(now));
        } else {
            for p in old {
                if !p.terminating || is_failover {
                    d.actions.push(Action::DeletePod {
                        name: p.name.clone(),
                        force: is_failover,
                    });
                }
            }
            waiting = waiting.or(Some((
                reason::STOPPING_OLD_POD,
                "waiting for the old pod to be gone".into(),
            )));
        }
    }

    // 4. No volume of the instance may still be attached anywhere.
    if m.volumes_detached.is_none() {
        if obs.attachments.is_empty() {
            m.volumes_detached = Some(micro(now));
        } else {
            for a in &obs.attachments {
                // After an unplanned move the node is fenced; a planned move waits for
                // the attach/detach controller to detach gracefully.
                if is_failover && Some(&a.node) == from.as_ref() {
                    d.actions.push(Action::DeleteAttachment {
                        name: a.name.clone(),
                    });
                }
            }
            let msg = format!(
                "waiting for {} volume attachment(s) to go",
                obs.attachments.len()
            );
            waiting = waiting.or(Some((reason::DETACHING_VOLUMES, msg)));
        }
    }
    if waiting.is_some() {
        return park(d, m, waiting, &moving);
    }

    // 5. Choose the new owner (again, if the chosen one failed meanwhile).
    let target_ok =
        m.to.as_ref()
            .is_some_and(|t| obs.members.get(t).is_some_and(NodeHealth::eligible));
    if !target_ok && m.pod_created.is_none() {
        m.to = candidates(spec, obs, from.as_deref()).into_iter().next();
    }
    let Some(to) = m.to.clone() else {
        moving(
            d,
            reason::NO_ELIGIBLE_OWNER,
            "no preferred or possible owner node is up; waiting for one".into(),
        );
        d.status.phase = if from.is_some() {
            Phase::Offline
        } else {
            Phase::Pending
        };
        d.status.current_move = Some(m);
        return;
    };

    // The new owner failed after its pod was created (nodes often fail together): this move
    // ends there, and a failover from the new owner starts, fencing it like any other.
    if m.pod_created.is_some() && obs.members.get(&to).is_none_or(NodeHealth::failed) {
        d.status.owner_node = Some(to.clone());
        d.actions.push(event(
            true,
            reason::NEW_OWNER_FAILED,
            format!("{to} failed before the instance came online there"),
        ));
        finish_move(d, m);
        let quorum_ok = obs.has_quorum();
        steady(name, spec, obs, quorum_ok, d);
        return;
    }

    // 6. Start the pod on the new owner: higher priorities first, when many move at once.
    let pod = obs.pods.iter().find(|p| p.name == new_pod);
    if m.pod_created.is_none() {
        if pod.is_none() && obs.higher_priority_starting {
            d.recheck_at = Some(now + SignedDuration::from_millis(200));
            d.status.owner_node = Some(to.clone());
            moving(
                d,
                reason::WAITING_FOR_HIGHER_PRIORITY,
                format!("instances of higher priority start first; then {new_pod} on {to}"),
            );
            d.status.current_move = Some(m);
            return;
        }
        if pod.is_none() {
            d.actions.push(Action::CreatePod {
                node: to.clone(),
                seq,
            });
            moving(
                d,
                reason::STARTING_POD,
                format!("starting pod {new_pod} on {to}"),
            );
            d.status.owner_node = Some(to);
            d.status.current_move = Some(m);
            return;
        }
        m.pod_created = Some(micro(now));
        d.status.owner_node = Some(to.clone());
    }

    // 7. Publish the endpoint once the pod is ready.
    let ip = pod
        .filter(|p| p.ready && !p.terminating)
        .and_then(|p| p.ip.clone());
    match ip {
        Some(ip) if obs.endpoints == [ip.clone()] => {
            m.online = Some(micro(now));
            d.status.owner_node = Some(to.clone());
            d.status.phase = Phase::Online;
            set_condition(
                &mut d.status.conditions,
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
            d.actions.push(event(
                false,
                if from.is_some() {
                    reason::MOVED_ONLINE
                } else {
                    reason::ONLINE
                },
                format!("online on {to} after {took:.1} s ({})", m.reason),
            ));
            finish_move(d, m);
        }
        Some(ip) => {
            d.actions.push(Action::SetEndpoints(vec![ip]));
            moving(
                d,
                reason::PUBLISHING_ENDPOINT,
                format!("pod {new_pod} ready on {to}; publishing its endpoint"),
            );
            d.status.current_move = Some(m);
        }
        None => {
            moving(
                d,
                reason::WAITING_FOR_READY,
                format!("waiting for pod {new_pod} on {to} to be ready"),
            );
            d.status.current_move = Some(m);
        }
    }
}
