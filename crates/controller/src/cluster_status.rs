//! Status of FailoverClusters: member nodes and their state, the instances each owns, and
//! the quorum. Recomputed when a node or an instance changes, and when a member's verdict
//! would change with time (a Lease going stale); written only when something other than a
//! heartbeat time changed, and only by the leader.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, PostParams};
use kube::runtime::events::{Event as KubeEvent, EventType};
use kube::{Resource, ResourceExt};
use tokio::sync::Notify;

use super::fence::unfence;
use super::observe::{member_health, site_of, witness_vote};
use super::watches::key;
use super::{Context, FIELD_MANAGER};
use kube::runtime::reflector::ObjectRef;
use kube_failover_core::api::CLEAR_QUARANTINE_ANNOTATION;
use kube_failover_core::api::{
    AgentState, FailoverCluster, FailoverClusterInstance, FailoverClusterStatus, MemberStatus,
    QuorumStatus, condition, reason, set_condition,
};
use kube_failover_core::decide::quarantine::carry_quarantine;
use kube_failover_core::decide::quorum::{WitnessVote, count_votes, describe_votes, non_voting};
use kube_failover_core::decide::{AgentHealth, unfence_at, whatif};
use kube_failover_core::rules::pools_overlapping;

/// The status `cluster` should have now, and when to look again.
pub fn desired_status(
    cluster: &FailoverCluster,
    ctx: &Context,
    now: jiff::Timestamp,
) -> (FailoverClusterStatus, Option<jiff::Timestamp>) {
    let mut hosted: BTreeMap<String, u32> = BTreeMap::new();
    let mut held: Vec<String> = Vec::new();
    for i in ctx
        .stores
        .instances_under(&key::cluster(&cluster.name_any()))
    {
        if i.spec.cluster_ref != cluster.name_any() {
            continue;
        }
        let ns = i.namespace().unwrap_or_default();
        let labels = super::observe::namespace_labels(&ctx.stores, &ns);
        if !cluster.spec.allowed_namespaces.allows(&ns, &labels) {
            held.push(format!("{ns}/{}", i.name_any()));
        }
        if let Some(owner) = i.status.as_ref().and_then(|s| s.owner_node.clone()) {
            *hosted.entry(owner).or_default() += 1;
        }
    }
    let mut status = cluster.status.clone().unwrap_or_default();
    let mut list = Vec::new();
    let members = member_health(cluster, &ctx.stores, now);
    let witness = witness_vote(cluster, &members, &ctx.stores, now);
    let mut recheck: Option<jiff::Timestamp> = witness.as_ref().and_then(|w| w.recheck_at);
    let non_voting = non_voting(&cluster.spec.quorum);
    for (facts, health) in members {
        if let Some(at) = health.recheck_at {
            recheck = Some(recheck.map_or(at, |r: jiff::Timestamp| r.min(at)));
        }
        list.push(MemberStatus {
            name: facts.name.clone(),
            state: health.state,
            last_heartbeat: facts.lease_renewed.map(Time),
            reason: health
                .reason
                .clone()
                .or_else(|| health.agent_down().then(|| reason::AGENT_DOWN.to_string())),
            instance_count: hosted.remove(&facts.name).unwrap_or_default(),
            agent: match health.agent {
                AgentHealth::Absent => None,
                AgentHealth::Live { .. } => Some(AgentState::Renewing),
                AgentHealth::Silent { .. } => Some(AgentState::Down),
            },
            non_voting: non_voting.contains(&facts.name),
            site: ctx
                .stores
                .nodes
                .get(&ObjectRef::new(&facts.name))
                .and_then(|n| site_of(cluster, &n)),
            failures: Vec::new(),
            quarantine: None,
        });
    }
    // Failures and quarantines, carried on from the status as it was.
    let cleared: BTreeMap<String, jiff::Timestamp> = list
        .iter()
        .filter_map(|m| {
            let node = ctx.stores.nodes.get(&ObjectRef::new(&m.name))?;
            let at = node
                .annotations()
                .get(CLEAR_QUARANTINE_ANNOTATION)?
                .parse()
                .ok()?;
            Some((m.name.clone(), at))
        })
        .collect();
    let previous = cluster
        .status
        .as_ref()
        .map(|s| s.members.clone())
        .unwrap_or_default();
    if let Some(at) = carry_quarantine(
        &mut list,
        &previous,
        &cleared,
        &cluster.spec.quarantine,
        now,
    ) {
        recheck = Some(recheck.map_or(at, |r: jiff::Timestamp| r.min(at)));
    }
    let votes = count_votes(
        list.iter().map(|m| (m.name.as_str(), m.state)),
        &non_voting,
        witness.as_ref(),
        &cluster.spec.quorum.min_healthy,
    );
    let voting = list.iter().filter(|m| !m.non_voting);
    let (members_heard, members_voting) =
        voting.fold((0, 0), |(h, t), m| (h + u32::from(m.state.heard()), t + 1));
    let told = describe_votes(
        &votes,
        members_heard,
        members_voting,
        members_voting < list.len() as u32,
        witness.as_ref(),
    );
    let ok = votes.held();
    status.members = list;
    status.quorum = Some(QuorumStatus {
        total: votes.total,
        healthy: votes.heard,
        required: votes.required,
        witness: witness.as_ref().map(WitnessVote::status),
    });
    status.observed_generation = cluster.metadata.generation;
    set_condition(
        &mut status.conditions,
        Condition {
            type_: condition::QUORUM.into(),
            status: if ok { "True" } else { "False" }.into(),
            reason: if ok {
                reason::QUORUM_HELD
            } else {
                reason::QUORUM_LOST
            }
            .into(),
            message: format!("{told} for automatic failover"),
            observed_generation: cluster.metadata.generation,
            last_transition_time: Time(now),
        },
    );
    held.sort();
    set_condition(&mut status.conditions, tenancy(&held, cluster, now));
    let sight = ctx.stores.heartbeats.out_of_sight();
    set_condition(&mut status.conditions, heartbeats_seen(sight, cluster, now));
    let overlapping = pools_overlapping(&cluster.spec, &super::network::reserved(&ctx.stores));
    set_condition(
        &mut status.conditions,
        address_pools(&overlapping, cluster, now),
    );
    let (condition, at) = resilient(cluster, &status.members, ctx, now);
    set_condition(&mut status.conditions, condition);
    if let Some(at) = at {
        recheck = Some(recheck.map_or(at, |r: jiff::Timestamp| r.min(at)));
    }
    (status, recheck)
}

/// The shortest time between two what-if runs for one cluster: each decides every instance
/// serving on a member once per member round, so a storm of changes must not run it for
/// every one of them.
const RESILIENCE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// The longest a what-if answer is kept while what it is made from looks the same.
const RESILIENCE_REFRESH: std::time::Duration = std::time::Duration::from_secs(30);

/// What the last what-if run of each cluster was made from (a digest of its members' states
/// and its instances' owners, phases and generations), when, and what it said.
static RESILIENCE: std::sync::Mutex<BTreeMap<String, (u64, std::time::Instant, Condition)>> =
    std::sync::Mutex::new(BTreeMap::new());

/// The `Resilient` condition: whether every instance serving on a member would have a place
/// should that member fail, one member at a time, as the controller's own decisions would
/// play it out (`decide::whatif`, what `kubectl failover simulate` runs).
/// Run again only when what it is made from changed, and at most every
/// [`RESILIENCE_EVERY`]; returns the condition and, when a run was put off, when to look
/// again.
fn resilient(
    cluster: &FailoverCluster,
    members: &[MemberStatus],
    ctx: &Context,
    now: jiff::Timestamp,
) -> (Condition, Option<jiff::Timestamp>) {
    use std::hash::{Hash, Hasher};
    let name = cluster.name_any();
    let all = ctx.stores.instances_under(&key::cluster(&name));
    let mine: Vec<&FailoverClusterInstance> = all
        .iter()
        .map(|i| i.as_ref())
        .filter(|i| i.spec.cluster_ref == name)
        .collect();
    let mut digest = std::hash::DefaultHasher::new();
    cluster.metadata.generation.hash(&mut digest);
    for m in members {
        (&m.name, format!("{:?}{:?}", m.state, m.agent)).hash(&mut digest);
    }
    for i in &mine {
        let s = i.status.as_ref();
        (
            i.key(),
            i.metadata.generation,
            s.and_then(|s| s.owner_node.as_deref()),
            s.map(|s| format!("{:?}", s.phase)),
            s.and_then(|s| s.current_move.as_ref()?.to.as_deref()),
        )
            .hash(&mut digest);
    }
    let digest = digest.finish();
    let mut last = RESILIENCE.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((was, at, condition)) = last.get(&name) {
        let since = at.elapsed();
        // What the digest leaves out (pods, claims, the witness, counts that age out of
        // their periods) is caught up with at least every RESILIENCE_REFRESH.
        if *was == digest && since < RESILIENCE_REFRESH {
            let wait =
                jiff::SignedDuration::try_from(RESILIENCE_REFRESH - since).unwrap_or_default();
            return (condition.clone(), Some(now + wait));
        }
        if since < RESILIENCE_EVERY {
            let wait = jiff::SignedDuration::try_from(RESILIENCE_EVERY - since).unwrap_or_default();
            return (condition.clone(), Some(now + wait));
        }
    }
    let condition = judge_resilience(cluster, &mine, members, ctx, now);
    last.insert(name, (digest, std::time::Instant::now(), condition.clone()));
    (condition, None)
}

fn judge_resilience(
    cluster: &FailoverCluster,
    mine: &[&FailoverClusterInstance],
    members: &[MemberStatus],
    ctx: &Context,
    now: jiff::Timestamp,
) -> Condition {
    let instances: Vec<FailoverClusterInstance> = mine.iter().map(|i| (*i).clone()).collect();
    let states: Vec<(String, kube_failover_core::api::MemberState)> =
        members.iter().map(|m| (m.name.clone(), m.state)).collect();
    let view = super::observe::ClusterView::of(cluster, &ctx.stores, now);
    let unprotected = whatif::one_failure(
        cluster,
        &instances,
        &states,
        |i| super::observe::observe_in(i, &ctx.stores, now, Some(&view)),
        |ns| super::observe::namespace_labels(&ctx.stores, ns),
    );
    let checked = states.iter().filter(|(_, s)| s.heard()).count();
    let (ok, reason, message) = whatif::resilience(&unprotected, checked);
    Condition {
        type_: condition::RESILIENT.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason,
        message,
        observed_generation: cluster.metadata.generation,
        last_transition_time: Time(now),
    }
}

/// The `AddressPools` condition: False, naming each pool and what of the cluster's own it
/// overlaps, while a pool does.
fn address_pools(
    overlapping: &[(String, Vec<String>)],
    cluster: &FailoverCluster,
    now: jiff::Timestamp,
) -> Condition {
    const SHOWN: usize = 5;
    let (status, reason, message) = if overlapping.is_empty() {
        (
            "True",
            reason::POOLS_CLEAR,
            "no address pool overlaps the cluster's own addresses".to_string(),
        )
    } else {
        let pools = overlapping
            .iter()
            .map(|(pool, what)| {
                let mut shown = what
                    .iter()
                    .take(SHOWN)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ");
                if what.len() > SHOWN {
                    shown.push_str(&format!(" and {} more", what.len() - SHOWN));
                }
                format!("pool {pool} overlaps {shown}")
            })
            .collect::<Vec<_>>()
            .join("; ");
        (
            "False",
            reason::POOL_OVERLAPS_CLUSTER,
            format!(
                "{pools}. Those addresses are never served as virtual IPs; narrow spec.addressPools to leave them out"
            ),
        )
    };
    Condition {
        type_: condition::ADDRESS_POOLS.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: cluster.metadata.generation,
        last_transition_time: Time(now),
    }
}

/// The `HeartbeatsSeen` condition: False while this controller cannot see heartbeats (and
/// so fails nothing over), saying since when and why.
fn heartbeats_seen(
    out_of_sight: Option<(jiff::Timestamp, &str)>,
    cluster: &FailoverCluster,
    now: jiff::Timestamp,
) -> Condition {
    let (status, reason, message) = match out_of_sight {
        None => (
            "True",
            reason::HEARTBEATS_IN_SIGHT,
            "the nodes' Leases are watched: a silent node is seen".to_string(),
        ),
        Some((since, why)) => (
            "False",
            reason::HEARTBEATS_OUT_OF_SIGHT,
            format!(
                "since {since}: {why}, so renewals may arrive unseen: no node counts as silent and nothing fails over until heartbeats are seen again (see the controller's log)"
            ),
        ),
    };
    Condition {
        type_: condition::HEARTBEATS_SEEN.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: cluster.metadata.generation,
        last_transition_time: Time(now),
    }
}

/// The `Tenancy` condition: False, naming them, while instances that name this cluster are
/// held because their namespace is not allowed (`spec.allowedNamespaces`).
fn tenancy(held: &[String], cluster: &FailoverCluster, now: jiff::Timestamp) -> Condition {
    const SHOWN: usize = 10;
    let (status, reason, message) = if held.is_empty() {
        (
            "True",
            reason::ALL_NAMESPACES_ALLOWED,
            "every instance of this cluster is in a namespace it allows".to_string(),
        )
    } else {
        let mut names = held
            .iter()
            .take(SHOWN)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if held.len() > SHOWN {
            names.push_str(&format!(" and {} more", held.len() - SHOWN));
        }
        (
            "False",
            reason::NAMESPACE_NOT_ALLOWED,
            format!(
                "{} instance(s) held, not placed or failed over, because spec.allowedNamespaces does not allow their namespace: {names}",
                held.len()
            ),
        )
    };
    Condition {
        type_: condition::TENANCY.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: cluster.metadata.generation,
        last_transition_time: Time(now),
    }
}

/// Removes the out-of-service taint this controller added to members that have been
/// healthy for `fencing.unfenceAfterSeconds`, unless a move off the node is still clearing
/// the way. Returns when to look again for a node not yet due. (A move that has cleared the
/// way may still meet a pod created there late by a deposed leader: it deletes it with no
/// grace period only while the node is fenced, see `decide`'s `on_fenced_node`.)
async fn unfence_returned(
    cluster: &FailoverCluster,
    ctx: &Context,
    now: jiff::Timestamp,
) -> Option<jiff::Timestamp> {
    let mut next: Option<jiff::Timestamp> = None;
    let after = cluster.spec.fencing.unfence_after_seconds;
    for (facts, health) in member_health(cluster, &ctx.stores, now) {
        let Some(at) = unfence_at(&facts, &health, after) else {
            continue;
        };
        if at > now {
            next = Some(next.map_or(at, |n| n.min(at)));
            continue;
        }
        let clearing = ctx.stores.instances_under(key::MOVING).iter().any(|i| {
            i.status
                .as_ref()
                .and_then(|s| s.current_move.as_ref())
                .is_some_and(|m| {
                    m.from.as_deref() == Some(facts.name.as_str())
                        && (m.old_pod_gone.is_none() || m.volumes_detached.is_none())
                })
        });
        if clearing || ctx.ensure_leader().is_err() {
            continue;
        }
        match unfence(&facts.name, ctx).await {
            Ok(true) => {
                let event = KubeEvent {
                    type_: EventType::Normal,
                    reason: reason::UNFENCED.into(),
                    note: Some(format!(
                        "{} has been healthy for {after} s: removed the out-of-service taint this controller added",
                        facts.name
                    )),
                    action: "Unfence".into(),
                    secondary: None,
                };
                let _ = ctx.events.publish(&event, &cluster.object_ref(&())).await;
            }
            Ok(false) => {}
            Err(e) => {
                tracing::warn!(node = %facts.name, error = %e, "removing the out-of-service taint failed");
                let soon = now + jiff::SignedDuration::from_secs(1);
                next = Some(next.map_or(soon, |n| n.min(soon)));
            }
        }
    }
    next
}

/// Heartbeat times change every renewal; they alone do not warrant a write.
fn without_heartbeats(s: &FailoverClusterStatus) -> FailoverClusterStatus {
    let mut s = s.clone();
    for m in &mut s.members {
        m.last_heartbeat = None;
    }
    s
}

/// Runs until the process ends.
pub async fn run(ctx: Arc<Context>, changed: Arc<Notify>) {
    loop {
        let now = ctx.stores.heartbeats.clock().now();
        let mut next: Option<jiff::Timestamp> = None;
        // No decision before every cache has synced: an empty cache is not an empty cluster.
        if ctx.leader.is_leader() && ctx.synced() {
            for cluster in ctx.stores.clusters.state() {
                // A replica limited to one namespace sees only that namespace's instances:
                // it keeps the status of the clusters they use and leaves the others alone.
                if ctx.namespace.is_some()
                    && ctx
                        .stores
                        .indexes
                        .instances
                        .count(&key::cluster(&cluster.name_any()))
                        == 0
                {
                    continue;
                }
                let (desired, recheck) = desired_status(&cluster, &ctx, now);
                ctx.metrics.record_cluster(&cluster.name_any(), &desired);
                if let Some(at) = recheck {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
                if let Some(at) = unfence_returned(&cluster, &ctx, now).await {
                    next = Some(next.map_or(at, |n| n.min(at)));
                }
                let current = cluster.status.clone().unwrap_or_default();
                if without_heartbeats(&current) == without_heartbeats(&desired) {
                    continue;
                }
                if let Err(e) = write(&cluster, &current, desired, &ctx).await {
                    tracing::debug!(cluster = %cluster.name_any(), error = %e, "cluster status write");
                    next = Some(now + jiff::SignedDuration::from_secs(1));
                }
            }
        }
        let wait = next
            .map(|n| now.duration_until(n).unsigned_abs() + Duration::from_millis(50))
            .unwrap_or(Duration::from_secs(30))
            .min(Duration::from_secs(30));
        tokio::select! {
            _ = changed.notified() => {}
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn write(
    cluster: &FailoverCluster,
    current: &FailoverClusterStatus,
    desired: FailoverClusterStatus,
    ctx: &Context,
) -> Result<(), super::Error> {
    ctx.ensure_leader()?;
    let quorum = |s: &FailoverClusterStatus| {
        s.conditions
            .iter()
            .find(|c| c.type_ == condition::QUORUM)
            .map(|c| c.status.clone())
    };
    let (was, is) = (quorum(current), quorum(&desired));
    let message = desired
        .conditions
        .iter()
        .find(|c| c.type_ == condition::QUORUM)
        .map(|c| c.message.clone())
        .unwrap_or_default();
    let mut updated = cluster.clone();
    updated.status = Some(desired);
    let api: Api<FailoverCluster> = Api::all(ctx.client.clone());
    // Carries the resourceVersion read: a stale write is refused with a conflict.
    api.replace_status(
        &cluster.name_any(),
        &PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &updated,
    )
    .await?;
    if was.is_some() && was != is {
        let lost = is.as_deref() == Some("False");
        let event = KubeEvent {
            type_: if lost {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: if lost {
                reason::QUORUM_LOST
            } else {
                reason::QUORUM_REGAINED
            }
            .into(),
            note: Some(message),
            action: "Observe".into(),
            secondary: None,
        };
        let _ = ctx.events.publish(&event, &cluster.object_ref(&())).await;
    }
    Ok(())
}
