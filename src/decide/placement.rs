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

pub(super) fn failback_target(
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
