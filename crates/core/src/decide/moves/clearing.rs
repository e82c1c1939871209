//! Steps 1 to 4 of a move: they clear the way for the new pod (endpoint withdrawn, old
//! owner fenced, old pod gone, volumes detached), and may wait side by side.

use super::*;

/// Step 1: the endpoint is withdrawn.
pub(super) fn withdraw_endpoint(r: &mut Round) -> Flow {
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
pub(super) fn fence(r: &mut Round) -> Flow {
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
    let basis = health.as_ref().map(|h| h.basis.clone()).unwrap_or_default();
    if let Some(AgentHealth::Silent {
        before_kubelet: true,
        ..
    }) = health.as_ref().map(|h| &h.agent)
    {
        // The agent went down on its own while the kubelet still renewed, then the kubelet
        // went silent: nothing on the node has fenced itself, and nothing can be asked.
        let msg = format!(
            "the agent of {node} was down before its kubelet went silent: nothing there is \
             known to have stopped the instance workloads; waiting for the agent or the \
             kubelet to come back, or for {node} to be tainted \
             node.kubernetes.io/out-of-service by whoever powers it off"
        );
        return Flow::Park(reason::AGENT_DOWN, msg);
    }
    if let Some(h) = health.as_ref().filter(|h| {
        h.agent
            == AgentHealth::Live {
                stopped_workloads: false,
            }
    }) && h
        .basis
        .agent_seen
        .zip(h.down_since)
        .is_none_or(|(renewed, down)| renewed <= down)
    {
        // The agent's Lease is still fresh, but it has not renewed since the kubelet went
        // silent: it may have gone down with its node a moment after the kubelet's last
        // renewal. Either it renews (then it is asked) or it goes silent (then its
        // self-fence time counts); nothing is asked of an agent that may be gone.
        r.d.recheck_at = h.recheck_at;
        let msg = format!(
            "the kubelet of {node} is silent; waiting to see whether its agent still renews"
        );
        return Flow::Park(reason::AWAITING_AGENT_STOP, msg);
    }
    if let Some(AgentHealth::Live {
        stopped_workloads: false,
    }) = health.as_ref().map(|h| &h.agent)
    {
        // The kubelet is silent, the agent renews: it has not fenced itself, and the
        // containers may run on. It stops them when asked, and says so on its Lease.
        r.d.actions.push(Action::RequestWorkloadStop {
            node: node.clone(),
            basis,
        });
        let msg = format!(
            "the kubelet of {node} is silent but its agent renews: waiting for the agent to \
             stop the instance workloads there"
        );
        return Flow::Park(reason::AWAITING_AGENT_STOP, msg);
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
        if let Some(AgentHealth::Silent { peer_groups, .. }) = health.as_ref().map(|h| &h.agent) {
            match peers_steady_at(r, &node, peer_groups, s + SELF_FENCE_MARGIN) {
                Ok(steady) => at = at.max(steady),
                Err(msg) => {
                    // Looked at again as the peers' agents renew (or do not).
                    r.d.recheck_at = Some(now + SignedDuration::from_secs(1));
                    return Flow::Park(reason::PEERS_CUT_OFF, msg);
                }
            }
        }
    }
    if at <= now {
        r.d.actions.push(Action::Fence {
            node: node.clone(),
            basis,
        });
        return Flow::Park(reason::FENCING, format!("tainting {node} out of service"));
    }
    r.d.recheck_at = Some(at);
    Flow::Park(reason::FENCE_DELAY, format!("fencing {node} at {at}"))
}

/// When the self-fence of `node`'s agent may be counted on, as far as its peers go: the
/// agent holds (does not fence itself) while, in every group it names, so many peers tell
/// it they cannot reach the API server either that the group lacks its quorum. A peer that
/// says so has not renewed for longer than its Lease's duration (plus an allowance), so the
/// controller has seen a break in its renewals. Hence the agent has fenced itself once, in
/// one of its groups, `required` members other than it have had agents renewing without a
/// break for the whole of `wait` (its self-fence time and the margin): every answer it
/// could have acted on in that time said "reachable", or came from a member not counted
/// here. A member without an agent never answers, and the agent counts it as reachable: so
/// does this, if the member is Up. The cluster's witness is never asked and counts as
/// reachable for the agent: here it counts only when it has been steady for the whole wait
/// (a group whose other voters are all cut off has lost its quorum whatever the witness
/// says, and the agent held). `Err` says why not yet, when no group can have its
/// quorum at all; no groups (an agent that asks no peers): no condition.
fn peers_steady_at(
    r: &Round,
    node: &str,
    groups: &[crate::api::PeerGroup],
    wait: SignedDuration,
) -> Result<Timestamp, String> {
    if groups.is_empty() {
        return Ok(r.now());
    }
    let now = r.now();
    let mut best: Option<Timestamp> = None;
    for g in groups {
        let mut times: Vec<Timestamp> = g
            .members
            .iter()
            .filter(|m| m.as_str() != node)
            .filter_map(|m| {
                let h = r.obs.node(m)?;
                match (&h.agent, h.agent_steady_since) {
                    (AgentHealth::Live { .. }, Some(since)) => Some(since + wait),
                    (AgentHealth::Absent, _) if h.state == MemberState::Up => Some(now),
                    _ => None,
                }
            })
            .collect();
        // The witness of the instance's own cluster, where the group counts it (the agent
        // cannot ask it, and counted it as reachable): it too must have been steady.
        if g.witnesses > 0
            && g.cluster == r.spec.cluster_ref
            && let Some(w) = r.obs.witness.as_ref().filter(|w| w.heard)
            && let Some(since) = w.steady_since
        {
            times.push(since + wait);
        }
        times.sort();
        let required = g.required as usize;
        let ready = if required == 0 {
            Some(now)
        } else {
            times.get(required - 1).copied()
        };
        if let Some(t) = ready {
            best = Some(best.map_or(t, |b| b.min(t)));
        }
    }
    best.ok_or_else(|| {
        format!(
            "the agent of {node} holds while its peers are cut off from the API server too, \
             and too few of them renew now for any of its groups ({}) to have its quorum: \
             waiting for them",
            groups
                .iter()
                .map(|g| format!("{}: {} required", g.cluster, g.required))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
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

/// Whether a pod may be deleted with no grace period: only on a node that is fenced now
/// (tainted out of service, or its Node deleted), where no kubelet is left to run it, or,
/// with `fencing.mode: None`, on the silent old owner of this failover (the user's choice).
/// A node this move fenced that is back and unfenced has a kubelet again: a pod there (one
/// created late by a deposed leader) is deleted with its grace period.
fn on_fenced_node(r: &Round, p: &PodFacts) -> bool {
    let Some(node) = &p.node else { return false };
    let fenced_here = r.failover() && r.m.fenced.is_some() && Some(node) == r.m.from.as_ref();
    match r.obs.node(node) {
        None => true,
        Some(h) if h.state == MemberState::Fenced => true,
        Some(h) => fenced_here && r.obs.fencing.mode == FencingMode::None && h.heartbeat_stale,
    }
}

/// Asks for `p` to be deleted: at once on a fenced node, with its grace period elsewhere
/// (and only once: a pod already terminating is left to its kubelet).
pub(super) fn stop_pod(r: &mut Round, p: &PodFacts) {
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
pub(super) fn pods_in_the_way(r: &Round) -> Vec<PodFacts> {
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
pub(super) fn stop_old_pod(r: &mut Round) -> Flow {
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
pub(super) fn detach(r: &mut Round) -> Flow {
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
        // One being deleted already is only waited for.
        if r.failover() && r.m.fenced.is_some() && Some(&a.node) == from.as_ref() && !a.terminating
        {
            r.d.actions.push(Action::DeleteAttachment {
                name: a.name.clone(),
                uid: a.uid.clone(),
            });
        }
    }
    let msg = format!("waiting for {} volume attachment(s) to go", blocking.len());
    Flow::Waiting(reason::DETACHING_VOLUMES, msg)
}
