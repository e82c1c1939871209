//! The HTTP endpoints: `/metrics` (Prometheus), `/healthz` and `/readyz`.

use std::sync::Arc;

use kube::runtime::reflector::Store;

use super::Leadership;
use super::metrics::{self, Metrics};
use crate::api::FailoverClusterInstance;

/// Readiness of this replica: caches synced, leadership known.
#[derive(Clone, Default)]
pub struct Health {
    pub synced: Arc<std::sync::atomic::AtomicBool>,
}

pub async fn serve_http(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    instances: Store<FailoverClusterInstance>,
    health: Health,
    leader: Leadership,
) {
    use axum::{Router, http::StatusCode, routing::get};
    let m = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                // Instances by phase, counted from the cache at scrape time.
                m.instances.clear();
                for i in instances.state() {
                    let phase = i.status.as_ref().map(|s| s.phase).unwrap_or_default();
                    m.instances
                        .get_or_create(&metrics::PhaseLabel {
                            phase: format!("{phase:?}"),
                        })
                        .inc();
                }
                async move { m.render() }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
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
