//! Steps 5 to 7 of a move: they bring the instance online on its new owner (owner chosen,
//! pod started, endpoint published), one at a time, once the way is clear.

use super::clearing::{pods_in_the_way, stop_pod};
use super::*;

/// Step 5: the new owner: the one chosen if still eligible, else the best candidate now.
pub(super) fn choose_owner(r: &mut Round) -> Flow {
    // Judged again each round until the pod is created: the target may have failed, or an
    // instance it must never share a node with may have been seen going there.
    let target_ok =
        r.m.to
            .as_ref()
            .is_some_and(|t| super::super::placement::ineligible(r.obs, t).is_none());
    if !target_ok && r.m.pod_created.is_none() {
        r.m.to = candidates(r.spec, r.obs, r.m.from.as_deref())
            .into_iter()
            .next();
    }
    let Some(to) = r.m.to.clone() else {
        let msg = no_owner_message(r.spec, r.obs, r.m.from.as_deref());
        r.say(reason::NO_ELIGIBLE_OWNER, msg);
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
pub(super) fn start_pod(r: &mut Round) -> Flow {
    let to = r.m.to.clone().unwrap_or_default();
    let now = r.now();
    if r.m.pod_created.is_some() {
        if r.obs.pods.iter().any(|p| p.name == r.new_pod) {
            return Flow::Next;
        }
        // Created, and gone since while its node is up (`choose_owner` hands a failed one
        // back): deleted by someone, or by Kubernetes while the node was out of service.
        // Nothing would ever make it ready: it is created again, as in the steady state.
        r.m.pod_created = None;
        r.d.actions.push(event(
            true,
            reason::POD_MISSING,
            format!(
                "pod {} on {to} is gone before it was ready; creating it again",
                r.new_pod
            ),
        ));
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
        None if r.obs.dependencies_pending.is_some() => {
            // Looked at again every second: a dependency coming online wakes nothing here.
            r.d.recheck_at = Some(now + SignedDuration::from_secs(1));
            r.d.status.owner_node = Some(to.clone());
            let pending = r.obs.dependencies_pending.clone();
            match pending.unwrap_or(Dependencies::Waiting(Vec::new())) {
                Dependencies::Cycle(path) => {
                    let msg = format!(
                        "its dependencies lead back to it ({}): not starting {} until the \
                         cycle is broken in spec.dependsOn",
                        path.join(" -> "),
                        r.new_pod
                    );
                    Flow::Park(reason::DEPENDENCY_CYCLE, msg)
                }
                Dependencies::Waiting(waiting) => {
                    let names: Vec<String> = waiting
                        .iter()
                        .map(|(n, what)| format!("{n} ({what})"))
                        .collect();
                    let msg = format!(
                        "waiting for {} to be Online before starting {} on {to}",
                        names.join(", "),
                        r.new_pod
                    );
                    Flow::Park(reason::WAITING_FOR_DEPENDENCY, msg)
                }
            }
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
pub(super) fn publish(r: &mut Round) -> Flow {
    let to = r.m.to.clone().unwrap_or_default();
    let now = r.now();
    let pod = r
        .obs
        .pods
        .iter()
        .find(|p| p.name == r.new_pod)
        .filter(|p| p.ready && !p.terminating && !p.failed);
    let ip = pod.and_then(|p| p.ip.clone());
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
        let others = super::super::other_vip_holders(r.obs, &to);
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
    if !r.obs.endpoint_slice_taken && r.obs.endpoints != [ip.clone()] {
        r.d.actions.push(Action::SetEndpoints(vec![ip]));
        let msg = format!("pod {} ready on {to}; publishing its endpoint", r.new_pod);
        return Flow::Park(reason::PUBLISHING_ENDPOINT, msg);
    }
    if let Some(p) = pod {
        // Counted from here as in the steady state, whose first round then finds nothing
        // new to write.
        super::super::steady::count_restarts(p, r.d, now);
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

/// Why no member can take the instance: each possible owner passed over and why (the first
/// five; the node it leaves is not listed).
fn no_owner_message(
    spec: &crate::api::FailoverClusterInstanceSpec,
    obs: &super::Observed,
    from: Option<&str>,
) -> String {
    let why: Vec<String> = crate::rules::owner_order(spec, obs.members.keys())
        .into_iter()
        .filter(|n| Some(n.as_str()) != from)
        .filter_map(|n| {
            super::super::placement::ineligible(obs, n)
                .filter(|_| obs.members.get(n).is_some_and(NodeHealth::eligible))
                .map(|w| format!("{n}: {w}"))
        })
        .collect();
    if why.is_empty() {
        return "no preferred or possible owner node is up; waiting for one".into();
    }
    let more = why.len().saturating_sub(5);
    let listed = why.into_iter().take(5).collect::<Vec<_>>().join("; ");
    let more = if more > 0 {
        format!("; and {more} more")
    } else {
        String::new()
    };
    format!("no member that is up can take it ({listed}{more}); waiting for one")
}
