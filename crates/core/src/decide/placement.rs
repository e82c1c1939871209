//! Where an instance may run: candidate owners in order, failback targets, and the failover
//! threshold.

use jiff::{SignedDuration, Timestamp};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{NodeHealth, Observed};
use crate::api::{FailbackMode, FailoverClusterInstanceSpec, FailoverClusterInstanceStatus};

/// The failover threshold in force: the spec's, or member nodes − 1 (at least 1).
pub fn failover_threshold(spec: &FailoverClusterInstanceSpec, members: usize) -> u32 {
    spec.failover
        .threshold
        .unwrap_or_else(|| (members.saturating_sub(1) as u32).max(1))
}

/// Failovers (unplanned moves) that started within the failover period, counted from
/// `status.failovers`, which is bounded by the period, not by the history's length.
pub fn failovers_in_period(
    spec: &FailoverClusterInstanceSpec,
    status: &FailoverClusterInstanceStatus,
    now: Timestamp,
) -> u32 {
    let since = now - SignedDuration::from_secs(i64::from(spec.failover.period_seconds));
    status.failovers.iter().filter(|t| t.0 > since).count() as u32
}

/// The most failover and restart times worth keeping: the largest threshold admission
/// allows, plus one.
const MAX_COUNTED: usize = 1001;

/// Drops failover and restart times that fell out of their periods.
pub(super) fn prune_counts(
    spec: &FailoverClusterInstanceSpec,
    status: &mut FailoverClusterInstanceStatus,
    now: Timestamp,
) {
    let keep = |times: &mut Vec<Time>, period: u32| {
        let since = now - SignedDuration::from_secs(i64::from(period));
        times.retain(|t| t.0 > since);
        let excess = times.len().saturating_sub(MAX_COUNTED);
        times.drain(..excess);
    };
    keep(&mut status.failovers, spec.failover.period_seconds);
    keep(&mut status.restarts, spec.restart.period_seconds);
}

/// Candidate owners in order: preferred first, then possible owners (or every member when
/// none are listed), keeping only members that may take new work, minus `exclude`, and
/// only the pinned node when a claim is pinned. Nodes hosting an instance that shares an
/// anti-affinity class come last (never, if the pair is strict: see [`ineligible`]).
pub fn candidates(
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    exclude: Option<&str>,
) -> Vec<String> {
    let mut out: Vec<String> = crate::rules::owner_order(spec, obs.members.keys())
        .into_iter()
        .filter(|n| Some(n.as_str()) != exclude && ineligible(obs, n).is_none())
        .cloned()
        .collect();
    // A stable sort: preference order holds within the home site, then within the free
    // nodes and within the shared.
    let home = home_site(spec, obs, exclude);
    out.sort_by_key(|n| {
        let away = home.is_some() && obs.sites.get(n) != home;
        (away, obs.neighbours.contains_key(n))
    });
    out
}

/// The site an instance is placed in first: its preferred site, else the site of the node
/// it leaves (`from`: a failover stays in its site when it can). `None` when the cluster has
/// no sites.
pub fn home_site<'a>(
    spec: &'a FailoverClusterInstanceSpec,
    obs: &'a Observed,
    from: Option<&str>,
) -> Option<&'a String> {
    if obs.sites.is_empty() {
        return None;
    }
    spec.owners
        .preferred_site
        .as_ref()
        .or_else(|| from.and_then(|f| obs.sites.get(f)))
}

/// Why node `n` cannot take the instance now, if it cannot: said in status and Events, so
/// that nobody has to guess why a preferred owner was passed over.
pub fn ineligible(obs: &Observed, n: &str) -> Option<String> {
    let Some(health) = obs.members.get(n) else {
        return Some("not a member of the cluster (no such node, or not selected)".into());
    };
    if !NodeHealth::eligible(health) {
        let why = health
            .reason
            .as_deref()
            .map(|r| format!(" ({r})"))
            .unwrap_or_default();
        return Some(format!("{:?}{why}", health.state));
    }
    if obs.needs_agent && !health.agent_live() {
        return Some(format!(
            "no node agent renews there ({}; vipMode Agent needs one)",
            crate::api::reason::NO_AGENT
        ));
    }
    if let Some((claim, pinned)) = obs.pinned_claims.iter().find(|(_, p)| p.as_str() != n) {
        return Some(format!("claim {claim} is bound to {pinned}"));
    }
    if let Some(why) = obs.unreachable.get(n) {
        return Some(why.clone());
    }
    if let Some(until) = obs.quarantined.get(n) {
        return Some(format!(
            "quarantined until {until} (it failed too often; `kubectl failover resume \
             --clear-quarantine {n}` lifts it)"
        ));
    }
    obs.neighbours
        .get(n)
        .and_then(|ns| ns.iter().find(|x| x.strict))
        .map(|x| format!("hosts {}", x.describe()))
}

/// Why node `n` comes after the free nodes: it hosts an instance sharing an anti-affinity
/// class (one that is not strict; a strict one makes it [`ineligible`]).
fn shared(obs: &Observed, n: &str) -> Option<String> {
    let ns = obs.neighbours.get(n)?;
    let names: Vec<String> = ns.iter().map(super::Neighbour::describe).collect();
    Some(format!("hosts {}", names.join(", ")))
}

/// The preferred owners ahead of `chosen` (all of them when none was chosen) that were
/// passed over, with why: `node-0: Down (LeaseStale)`.
pub fn skipped(
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    chosen: Option<&str>,
) -> Vec<String> {
    spec.owners
        .preferred
        .iter()
        .take_while(|n| Some(n.as_str()) != chosen)
        .filter_map(|n| {
            ineligible(obs, n)
                .or_else(|| chosen.and_then(|_| shared(obs, n)))
                .map(|why| format!("{n}: {why}"))
        })
        .collect()
}

/// Whether failback (and, for `Preferred` anti-affinity, moving off a shared node) is
/// allowed now by `failback.mode`.
fn failback_allowed(spec: &FailoverClusterInstanceSpec, now: Timestamp) -> bool {
    match spec.failback.mode {
        FailbackMode::Never => false,
        FailbackMode::Immediate => true,
        FailbackMode::Window => {
            let hour = now.to_zoned(jiff::tz::TimeZone::UTC).hour() as u8;
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
    }
}

/// Where an instance sharing its `owner` with an instance of one of its anti-affinity
/// classes should go: only the lower-ranked of the two moves, only while the other is
/// settled there, only to a node hosting none of its classes, and, unless the pair is
/// strict, only when failback is allowed and an operator did not put it there.
pub(super) fn anti_affinity_target(
    spec: &FailoverClusterInstanceSpec,
    status: &FailoverClusterInstanceStatus,
    obs: &Observed,
    owner: &str,
) -> Option<(String, String)> {
    let above = obs
        .neighbours
        .get(owner)?
        .iter()
        .filter(|x| x.outranks && x.settled)
        .max_by_key(|x| x.strict)?;
    if !above.strict && (status.moved_by_operator || !failback_allowed(spec, obs.now)) {
        return None;
    }
    let target = candidates(spec, obs, Some(owner))
        .into_iter()
        .find(|n| !obs.neighbours.contains_key(n))?;
    Some((target, above.describe()))
}

pub(super) fn failback_target(
    spec: &FailoverClusterInstanceSpec,
    obs: &Observed,
    owner: &str,
) -> Option<String> {
    if !failback_allowed(spec, obs.now) {
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
