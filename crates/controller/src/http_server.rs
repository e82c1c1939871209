//! The HTTP endpoints: `/metrics` (Prometheus), `/healthz` and `/readyz`.
//!
//! - `/readyz` (readiness): 200 once every cache has synced, leader or standby alike (its
//!   body says which); 503 before. A standby is ready: it takes over from warm caches.
//! - `/healthz` (liveness): 200 while the process is doing its job, 503 (body: what failed)
//!   when a restart is the remedy: a watch stream has ended (the task polling it ended or
//!   panicked), or a watch has been listing for `WATCH_STALL_LIMIT` (5 min) with no page
//!   arriving, or this replica claims leadership but its Lease was not renewed within the
//!   lease duration (the election loop is stuck or gone: a live one steps down first). A
//!   watch retrying through an API outage is alive; a standby needs no renewal.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::ResourceExt;

use super::Context;
use super::leader::LeaderView;
use super::metrics;
use super::observe::member_health;
use super::watches::{WATCH_STALL_LIMIT, WatchView, Watches};
use kube_failover_core::api::FailoverCluster;
use kube_failover_core::decide::unfence_at;

/// Readiness and liveness of this replica: caches synced; every watch alive.
#[derive(Clone, Default)]
pub struct Health {
    pub synced: Arc<std::sync::atomic::AtomicBool>,
    pub watches: Watches,
}

/// What `/healthz` answers at `now`: `Ok` with a summary, or `Err` with every check that
/// failed. See the module's documentation for the checks.
pub fn check_health(
    now: Instant,
    leader: &LeaderView,
    watches: &[WatchView],
    stall_limit: Duration,
) -> Result<String, String> {
    let mut failed = Vec::new();
    for w in watches {
        if w.ended {
            failed.push(format!("watch {} ended", w.name));
        } else if let Some(since) = w.listing_since
            && now.saturating_duration_since(since) > stall_limit
        {
            failed.push(format!(
                "watch {} listing for {} s without progress",
                w.name,
                now.saturating_duration_since(since).as_secs()
            ));
        }
    }
    if leader.claims
        && let Some(duration) = leader.lease_duration
    {
        match leader.last_renewal {
            Some(at) if now.saturating_duration_since(at) <= duration => {}
            Some(at) => failed.push(format!(
                "leader but the Lease was last renewed {:.1} s ago (lease {} s)",
                now.saturating_duration_since(at).as_secs_f64(),
                duration.as_secs_f64()
            )),
            None => failed.push("leader but the Lease was never renewed".into()),
        }
    }
    if failed.is_empty() {
        let role = if leader.claims { "leader" } else { "standby" };
        Ok(format!("ok: {role}, {} watches alive", watches.len()))
    } else {
        Err(failed.join("; "))
    }
}

/// What this replica's caches say, recorded into the metrics just before they are rendered:
/// leadership, instances by phase and the moves in progress, the fence taints; and the
/// per-cluster series dropped unless this replica leads and the cluster still exists.
fn scrape(ctx: &Context) -> String {
    // Two scrapes at once would each clear what the other is recording.
    static SCRAPING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = SCRAPING.lock().unwrap_or_else(|e| e.into_inner());
    let m = &ctx.metrics;
    let leading = ctx.leader.is_leader();
    m.record_leader(leading);
    let instances = ctx.stores.instances.state();
    m.record_instances(instances.iter().map(|i| i.status.as_ref()));
    let clusters = ctx.stores.clusters.state();
    m.record_fences(&fence_taints(&clusters, ctx));
    let names: std::collections::BTreeSet<String> = clusters.iter().map(|c| c.name_any()).collect();
    m.retain_clusters(|c| leading && names.contains(c));
    m.record_watch_changes(&ctx.health.watches.views());
    m.render()
}

/// The members carrying the out-of-service taint this controller set, when it set it, and
/// when it may remove it (`decide::unfence_at`; the earliest, for a node of several
/// clusters).
fn fence_taints(clusters: &[Arc<FailoverCluster>], ctx: &Context) -> Vec<metrics::FenceTaint> {
    let now = ctx.stores.heartbeats.clock().now();
    let mut taints: std::collections::BTreeMap<String, metrics::FenceTaint> = Default::default();
    for cluster in clusters {
        let after = cluster.spec.fencing.unfence_after_seconds;
        for (facts, health) in member_health(cluster, &ctx.stores, now) {
            if !(facts.out_of_service && facts.fenced_by_controller) {
                continue;
            }
            let due = unfence_at(&facts, &health, after);
            let t = taints
                .entry(facts.name.clone())
                .or_insert_with(|| metrics::FenceTaint {
                    node: facts.name.clone(),
                    since: facts.fenced_at,
                    unfence_due: None,
                });
            t.unfence_due = match (t.unfence_due, due) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
        }
    }
    taints.into_values().collect()
}

pub async fn serve_http(addr: std::net::SocketAddr, ctx: Arc<Context>) {
    use axum::{Router, http::StatusCode, routing::get};
    let (watches, leadership) = (ctx.health.watches.clone(), ctx.leader.clone());
    let (health, leader) = (ctx.health.clone(), ctx.leader.clone());
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = scrape(&ctx);
                async move { body }
            }),
        )
        .route(
            "/healthz",
            get(move || {
                let verdict = check_health(
                    Instant::now(),
                    &leadership.view(),
                    &watches.views(),
                    WATCH_STALL_LIMIT,
                );
                async move {
                    match verdict {
                        Ok(body) => (StatusCode::OK, body),
                        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("unhealthy: {why}")),
                    }
                }
            }),
        )
        .route(
            "/readyz",
            get(move || {
                let synced = health.synced.load(std::sync::atomic::Ordering::Acquire);
                let role = if leader.is_leader() {
                    "leader"
                } else {
                    "standby"
                };
                async move {
                    if synced {
                        (StatusCode::OK, format!("ok: caches synced, {role}"))
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "caches not synced".to_string(),
                        )
                    }
                }
            }),
        );
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "http server stopped");
            }
        }
        Err(e) => tracing::error!(error = %e, %addr, "cannot bind the metrics address"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);
    const LIMIT: Duration = Duration::from_secs(300);

    fn watch(name: &'static str, ended: bool, listing_since: Option<Instant>) -> WatchView {
        WatchView {
            name,
            ended,
            listing_since,
            changes: 0,
        }
    }

    fn leader(claims: bool, last_renewal: Option<Instant>) -> LeaderView {
        LeaderView {
            claims,
            last_renewal,
            lease_duration: Some(6 * S),
        }
    }

    #[test]
    fn healthy_watches_and_a_fresh_lease_are_healthy() {
        let t0 = Instant::now();
        let now = t0 + 1000 * S;
        let watches = [watch("pods", false, None), watch("nodes", false, None)];
        assert_eq!(
            check_health(now, &leader(true, Some(now - 5 * S)), &watches, LIMIT),
            Ok("ok: leader, 2 watches alive".into())
        );
        // A standby needs no renewal at all.
        assert_eq!(
            check_health(now, &leader(false, None), &watches, LIMIT),
            Ok("ok: standby, 2 watches alive".into())
        );
        assert_eq!(
            check_health(now, &leader(false, Some(t0)), &watches, LIMIT),
            Ok("ok: standby, 2 watches alive".into())
        );
        // Election off: always leader, no Lease.
        let always = LeaderView {
            claims: true,
            last_renewal: None,
            lease_duration: None,
        };
        assert!(check_health(now, &always, &watches, LIMIT).is_ok());
    }

    #[test]
    fn a_watch_that_ended_is_unhealthy() {
        let now = Instant::now();
        let watches = [watch("pods", false, None), watch("nodes", true, None)];
        assert_eq!(
            check_health(now, &leader(false, None), &watches, LIMIT),
            Err("watch nodes ended".into())
        );
    }

    #[test]
    fn listing_is_healthy_up_to_the_limit_then_not() {
        let t0 = Instant::now();
        let w = |since| [watch("volumes", false, Some(since))];
        let standby = leader(false, None);
        assert!(check_health(t0 + LIMIT, &standby, &w(t0), LIMIT).is_ok());
        assert_eq!(
            check_health(t0 + LIMIT + S, &standby, &w(t0), LIMIT),
            Err("watch volumes listing for 301 s without progress".into())
        );
    }

    #[test]
    fn a_leader_whose_lease_was_not_renewed_within_its_duration_is_unhealthy() {
        let t0 = Instant::now();
        let watches = [watch("pods", false, None)];
        assert!(check_health(t0 + 6 * S, &leader(true, Some(t0)), &watches, LIMIT).is_ok());
        let err = check_health(t0 + 7 * S, &leader(true, Some(t0)), &watches, LIMIT).unwrap_err();
        assert_eq!(
            err,
            "leader but the Lease was last renewed 7.0 s ago (lease 6 s)"
        );
        assert_eq!(
            check_health(t0, &leader(true, None), &watches, LIMIT),
            Err("leader but the Lease was never renewed".into())
        );
    }

    #[test]
    fn every_failed_check_is_named() {
        let t0 = Instant::now();
        let now = t0 + 1000 * S;
        let watches = [
            watch("pods", true, None),
            watch("claims", false, Some(t0)),
            watch("nodes", false, Some(now - S)),
        ];
        assert_eq!(
            check_health(now, &leader(true, Some(t0)), &watches, LIMIT),
            Err(
                "watch pods ended; watch claims listing for 1000 s without progress; \
                 leader but the Lease was last renewed 1000.0 s ago (lease 6 s)"
                    .into()
            )
        );
    }
}
