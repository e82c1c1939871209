//! `decide`: a pure function of an instance's spec and status, what was observed of the
//! cluster, and the clock. It returns the status to record and the actions to take. It never
//! touches the API; `crate::controller` observes and applies.
//!
//! A move (placement, failover, planned move) is a sequence of steps recorded in
//! `status.move`. Each round does the first step not yet recorded: if its outcome is already
//! observed it records the step's time, otherwise it asks for the step's action. Actions are
//! idempotent, so a round repeated by a crash or a new leader doubles nothing.

pub mod health;

use std::collections::BTreeMap;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, MicroTime, Time};

use crate::api::{
    FailbackMode, FailoverClusterInstanceSpec, FailoverClusterInstanceStatus, Fencing, FencingMode,
    Move, Phase, Priority, Served, condition, set_condition,
};
pub use health::{NodeFacts, NodeHealth, node_health, required_healthy};

/// How many finished moves `status.history` keeps.
pub const HISTORY_LIMIT: usize = 10;

/// A pod of the instance, as observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodFacts {
    pub name: String,
    pub node: Option<String>,
    pub ready: bool,
    pub ip: Option<String>,
    /// Marked for deletion but still in the API.
    pub terminating: bool,
    /// The pod's phase is Failed: its workload stopped on a healthy node.
    pub failed: bool,
}

/// A VolumeAttachment of one of the instance's volumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttachmentFacts {
    pub name: String,
    pub node: String,
}

/// Everything `decide` reads besides the instance itself.
#[derive(Clone, Debug)]
pub struct Observed {
    pub now: Timestamp,
    /// False when the referenced FailoverCluster does not exist.
    pub cluster_found: bool,
    /// Member nodes of the cluster and their health.
    pub members: BTreeMap<String, NodeHealth>,
    pub quorum_required: u32,
    pub fencing: Fencing,
    pub pods: Vec<PodFacts>,
    pub attachments: Vec<AttachmentFacts>,
    /// Claims whose volume can only be used on one node (local storage): claim → node.
    pub pinned_claims: BTreeMap<String, String>,
    /// Claims that do not exist yet (user-provided claims must exist before placement).
    pub missing_claims: Vec<String>,
    /// Addresses currently published in the instance's EndpointSlice.
    pub endpoints: Vec<String>,
    /// The Service of the network name matches the spec.
    pub service_current: bool,
    /// Another instance of the same cluster with a higher priority started a move in the
    /// last few seconds and has not started its pod yet: this one lets it go first.
    pub higher_priority_starting: bool,
    /// The in-cluster DNS name of the network name.
    pub dns_name: String,
}

impl Observed {
    pub fn healthy_members(&self) -> u32 {
        self.members
            .values()
            .filter(|h| h.state == crate::api::MemberState::Up)
            .count() as u32
    }

    pub fn has_quorum(&self) -> bool {
        self.healthy_members() >= self.quorum_required
    }
}

/// A side effect for `apply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Server-side apply the Service of the network name (and the EndpointSlice shell).
    EnsureService,
    /// Server-side apply the claims made from templates.
    EnsureClaims,
    /// Publish exactly these addresses in the EndpointSlice (empty withdraws).
    SetEndpoints(Vec<String>),
    /// Taint the node out of service.
    Fence {
        node: String,
    },
    /// Delete a pod; `force` means grace period 0 (its node is fenced or gone).
    DeletePod {
        name: String,
        force: bool,
    },
    /// Delete a stale VolumeAttachment.
    DeleteAttachment {
        name: String,
    },
    /// Create the pod of move `seq` on `node`, once the API says no other pod exists.
    CreatePod {
        node: String,
        seq: u64,
    },
    Event(Event),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub warning: bool,
    pub reason: String,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub status: FailoverClusterInstanceStatus,
    pub actions: Vec<Action>,
    /// Look again at this time even if nothing changes (a threshold or a delay ends).
    pub recheck_at: Option<Timestamp>,
}

/// The name of the pod of move `seq`: deterministic, so that a create repeated by another
/// leader gets AlreadyExists instead of a second pod.
pub fn pod_name(instance: &str, seq: u64) -> String {
    format!("{instance}-{seq}")
}

fn time(t: Timestamp) -> Time {
    Time(t)
}

fn micro(t: Timestamp) -> MicroTime {
    MicroTime(t)
}

fn cond(
    type_: &str,
    ok: bool,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.into(),
        message: message.into(),
        observed_generation: generation,
        last_transition_time: time(now),
    }
}

fn event(warning: bool, reason: &str, message: impl Into<String>) -> Action {
    Action::Event(Event {
        warning,
        reason: reason.into(),
        message: message.into(),
    })
}

/// The failover threshold in force: the spec's, or member nodes − 1 (at least 1).
pub fn failover_threshold(spec: &FailoverClusterInstanceSpec, members: usize) -> u32 {
    spec.failover
        .threshold
        .unwrap_or_else(|| (members.saturating_sub(1) as u32).max(1))
}

/// Unplanned moves that started within the failover period.
pub fn failovers_in_period(
    spec: &FailoverClusterInstanceSpec,
    status: &FailoverClusterInstanceStatus,
    now: Timestamp,
) -> u32 {
    let since = now - SignedDuration::from_secs(i64::from(spec.failover.period_seconds));
    status
        .history
        .iter()
        .chain(status.current_move.iter())
        .filter(|m| !m.planned && m.from.is_some() && m.started.0 > since)
        .count() as u32
}

/// Candidate owners in order: preferred first, then possible owners (or every member when
/// none are listed), keeping only members that may take new work, minus `exclude`, and
/// only the pinned node when a claim is pinned.
pub fn candidates(
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    exclude: Option<&str>,
) -> Vec<String> {
    let possible: Vec<&String> = if spec.owners.possible.is_empty() {
        obs.members.keys().collect()
    } else {
        spec.owners.possible.iter().collect()
    };
    let mut out: Vec<String> = Vec::new();
    for n in spec.owners.preferred.iter().chain(possible) {
        if out.contains(n) || Some(n.as_str()) == exclude {
            continue;
        }
        if !obs.members.get(n).is_some_and(NodeHealth::eligible) {
            continue;
        }
        if obs.pinned_claims.values().any(|pinned| pinned != n) {
            continue;
        }
        out.push(n.clone());
    }
    out
}

/// Decides one round for one instance.
pub fn decide(
    name: &str,
    generation: Option<i64>,
    spec: &FailoverClusterInstanceSpec,
    current: Option<&FailoverClusterInstanceStatus>,
    obs: &Observed,
) -> Decision {
    let mut d = Decision {
        status: current.cloned().unwrap_or_default(),
        actions: Vec::new(),
        recheck_at: None,
    };
    let now = obs.now;
    d.status.observed_generation = generation;

    // What admission cannot check: the cluster must exist, the template must run something.
    let invalid = if !obs.cluster_found {
        Some((
            "ClusterNotFound",
            format!(
                "FailoverCluster {:?} does not exist; create it or fix spec.clusterRef",
                spec.cluster_ref
            ),
        ))
    } else if spec
        .template
        .spec
        .as_ref()
        .is_none_or(|s| s.containers.is_empty())
    {
        Some((
            "NoContainers",
            "spec.template.spec.containers must list at least one container".to_string(),
        ))
    } else {
        None
    };
    if let Some((reason, message)) = invalid {
        let was_valid = d
            .status
            .conditions
            .iter()
            .all(|c| c.type_ != condition::VALID || c.status == "True");
        set_condition(
            &mut d.status.conditions,
            cond(
                condition::VALID,
                false,
                reason,
                message.clone(),
                generation,
                now,
            ),
        );
        if was_valid {
            d.actions.push(event(true, reason, message));
        }
        // Nothing already running is disturbed.
        return d;
    }
    set_condition(
        &mut d.status.conditions,
        cond(
            condition::VALID,
            true,
            "Valid",
            "spec accepted",
            generation,
            now,
        ),
    );

    if !obs.service_current {
        d.actions.push(Action::EnsureService);
    }
    if !spec.storage.claim_templates.is_empty() {
        d.actions.push(Action::EnsureClaims);
    }
    let quorum_ok = obs.has_quorum();
    set_condition(
        &mut d.status.conditions,
        cond(
            condition::QUORUM,
            quorum_ok,
            if quorum_ok {
                "QuorumHeld"
            } else {
                "QuorumLost"
            },
            // Counts only when quorum is lost: a node failure must not rewrite the status
            // of every instance in the cluster (the cluster's status carries the counts).
            if quorum_ok {
                "enough member nodes are up for automatic failover".to_string()
            } else {
                format!(
                    "{} of {} member nodes up, {} required",
                    obs.healthy_members(),
                    obs.members.len(),
                    obs.quorum_required
                )
            },
            generation,
            now,
        ),
    );

    match d.status.current_move.clone() {
        Some(m) => step_move(name, spec, obs, m, &mut d),
        None => steady(name, spec, obs, quorum_ok, &mut d),
    }

    d.status.served = Some(Served {
        dns_name: obs.dns_name.clone(),
        virtual_ips: spec.virtual_ips.clone(),
        endpoint: obs.endpoints.first().cloned(),
    });
    d.status.failover_count = failovers_in_period(spec, &d.status, now);
    d
}

/// No move in progress.
fn steady(
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
                    "NoAutoStart",
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
                    "ClaimsMissing",
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
            Some(target) => start_move(d, None, Some(target.clone()), "Placement", true, now),
            None => {
                d.status.phase = Phase::Pending;
                set_condition(
                    &mut d.status.conditions,
                    cond(
                        condition::ONLINE,
                        false,
                        "NoEligibleOwner",
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
            .unwrap_or_else(|| "NotAMember".into());
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
            if condition_reason(&d.status, condition::ONLINE) != Some("QuorumLost") {
                d.actions.push(event(true, "QuorumLost", msg.clone()));
            }
            set_condition(
                &mut d.status.conditions,
                cond(condition::ONLINE, false, "QuorumLost", msg, generation, now),
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
            if condition_reason(&d.status, condition::ONLINE) != Some("VolumePinnedToNode") {
                d.actions
                    .push(event(true, "VolumePinnedToNode", msg.clone()));
            }
            set_condition(
                &mut d.status.conditions,
                cond(
                    condition::ONLINE,
                    false,
                    "VolumePinnedToNode",
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
            d.actions
                .push(event(true, "FailoverThresholdExceeded", msg.clone()));
            set_condition(
                &mut d.status.conditions,
                cond(
                    condition::ONLINE,
                    false,
                    "FailoverThresholdExceeded",
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
            &format!("NodeDown: {why}"),
            false,
            now,
        );
        d.actions.push(event(
            true,
            "FailoverStarted",
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
                    "PodMissing",
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
                    "Restarting",
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
                    "RestartThresholdExceeded",
                    true,
                    now,
                );
                d.actions.push(event(
                    true,
                    "RestartThresholdExceeded",
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
                        "NotReady",
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
                        "Online",
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
                    "Failback",
                    true,
                    now,
                );
                d.actions.push(event(
                    false,
                    "Failback",
                    format!("{target} is preferred over {owner} and up; moving back"),
                ));
            }
        }
    }
}

fn failback_target(
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    owner: &str,
) -> Option<String> {
    let allowed = match spec.failback.mode {
        FailbackMode::Never => false,
        FailbackMode::Immediate => true,
        FailbackMode::Window => {
            let hour = obs.now.to_zoned(jiff::tz::TimeZone::UTC).hour() as u8;
            let (start, end) = (
                spec.failback.window_start_hour.unwrap_or(0),
                spec.failback.window_end_hour.unwrap_or(0),
            );
            if start <= end {
                (start..=end).contains(&hour)
            } else {
                hour >= start || hour <= end
            }
        }
    };
    if !allowed {
        return None;
    }
    let rank = |n: &str| spec.owners.preferred.iter().position(|p| p == n);
    let best = candidates(spec, obs, None).into_iter().next()?;
    match (rank(&best), rank(owner)) {
        (Some(b), Some(o)) if b < o => Some(best),
        (Some(_), None) => Some(best),
        _ => None,
    }
}

fn condition_reason<'a>(status: &'a FailoverClusterInstanceStatus, type_: &str) -> Option<&'a str> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.as_str())
}

fn start_move(
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
fn step_move(
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
            waiting = Some(("WithdrawingEndpoint", "withdrawing the endpoint".into()));
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
            _ => health.is_none_or(|h| h.state == crate::api::MemberState::Fenced),
        };
        if fenced {
            m.fenced = Some(micro(now));
            d.actions
                .push(event(false, "Fenced", format!("{node} is fenced")));
        } else if !obs.has_quorum() {
            // Fencing cannot be undone: with the quorum gone, wait.
            let msg = format!("quorum lost before {node} was fenced; waiting");
            return park(d, m, Some(("QuorumLost", msg)), &moving);
        } else if obs.fencing.mode == FencingMode::External {
            let msg = format!(
                "waiting for an external fencer to taint {node} with node.kubernetes.io/out-of-service or delete it"
            );
            return park(d, m, Some(("AwaitingFence", msg)), &moving);
        } else {
            let down_since = health.and_then(|h| h.down_since).unwrap_or(now);
            let at = down_since + SignedDuration::from_secs(i64::from(obs.fencing.delay_seconds));
            if at <= now {
                d.actions.push(Action::Fence { node: node.clone() });
                let msg = format!("tainting {node} out of service");
                return park(d, m, Some(("Fencing", msg)), &moving);
            }
            d.recheck_at = Some(at);
            let msg = format!("fencing {node} at {at}");
            return park(d, m, Some(("FenceDelay", msg)), &moving);
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
                "StoppingOldPod",
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
            waiting = waiting.or(Some(("DetachingVolumes", msg)));
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
            "NoEligibleOwner",
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
            "NewOwnerFailed",
            format!("{to} failed before the instance came online there"),
        ));
        d.status.history.push(m);
        let excess = d.status.history.len().saturating_sub(HISTORY_LIMIT);
        d.status.history.drain(..excess);
        d.status.current_move = None;
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
                "WaitingForHigherPriority",
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
            moving(d, "StartingPod", format!("starting pod {new_pod} on {to}"));
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
                    "Online",
                    format!("online on {to}"),
                    generation,
                    now,
                ),
            );
            let took = now.duration_since(m.started.0).as_secs_f64();
            d.actions.push(event(
                false,
                if from.is_some() {
                    "MovedOnline"
                } else {
                    "Online"
                },
                format!("online on {to} after {took:.1} s ({})", m.reason),
            ));
            d.status.history.push(m);
            let excess = d.status.history.len().saturating_sub(HISTORY_LIMIT);
            d.status.history.drain(..excess);
            d.status.current_move = None;
        }
        Some(ip) => {
            d.actions.push(Action::SetEndpoints(vec![ip]));
            moving(
                d,
                "PublishingEndpoint",
                format!("pod {new_pod} ready on {to}; publishing its endpoint"),
            );
            d.status.current_move = Some(m);
        }
        None => {
            moving(
                d,
                "WaitingForReady",
                format!("waiting for pod {new_pod} on {to} to be ready"),
            );
            d.status.current_move = Some(m);
        }
    }
}

#[cfg(test)]
mod tests;
