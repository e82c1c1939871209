//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every write to the Lease carries the resourceVersion it was decided from, so two
//! candidates can never both believe they took it. A leader counts itself leader only until
//! its last successful renewal plus the lease duration minus a safety margin, measured on its
//! own monotonic clock; past that it stops acting even if it could not reach the API server
//! to learn that it lost.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

#[derive(Clone, Debug)]
pub struct LeaderConfig {
    pub namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

/// Shared view of leadership: cheap to query before every write.
#[derive(Clone)]
pub struct Leadership {
    epoch: Instant,
    /// Nanoseconds since `epoch` until which this replica may act; 0 when not leader.
    valid_until: Arc<AtomicU64>,
    changes: watch::Receiver<bool>,
}

impl Leadership {
    /// Leadership that is always held: for a single replica started with election off.
    pub fn always() -> Self {
        let (_tx, rx) = watch::channel(true);
        Self {
            epoch: Instant::now(),
            valid_until: Arc::new(AtomicU64::new(u64::MAX)),
            changes: rx,
        }
    }

    pub fn is_leader(&self) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        now < self.valid_until.load(Ordering::Acquire)
    }

    /// Resolves when leadership flips either way.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changes.clone()
    }
}

fn micro_now() -> MicroTime {
    MicroTime(jiff::Timestamp::now())
}

/// Starts the election loop on the current runtime and returns the shared view.
pub fn start(client: Client, cfg: LeaderConfig) -> Leadership {
    let (tx, rx) = watch::channel(false);
    let leadership = Leadership {
        epoch: Instant::now(),
        valid_until: Arc::new(AtomicU64::new(0)),
        changes: rx,
    };
    let shared = leadership.clone();
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let margin = cfg.lease_duration / 5;
        loop {
            let attempt = Instant::now();
            match try_acquire_or_renew(&api, &cfg).await {
                Ok(true) => {
                    let until = attempt + cfg.lease_duration - margin;
                    let nanos = until.duration_since(shared.epoch).as_nanos() as u64;
                    shared.valid_until.store(nanos, Ordering::Release);
                    if !*tx.borrow() {
                        tracing::info!(identity = %cfg.identity, "acquired leadership");
                        let _ = tx.send(true);
                    }
                }
                Ok(false) => {
                    shared.valid_until.store(0, Ordering::Release);
                    if *tx.borrow() {
                        tracing::warn!(identity = %cfg.identity, "lost leadership");
                        let _ = tx.send(false);
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "leader lease renewal failed");
                    // Keep acting only while the last renewal is still valid.
                    if !shared.is_leader() && *tx.borrow() {
                        let _ = tx.send(false);
                    }
                }
            }
            let wait = if shared.is_leader() {
                cfg.renew_every
            } else {
                cfg.renew_every.min(cfg.lease_duration / 4)
            };
            tokio::time::sleep(wait).await;
        }
    });
    leadership
}

/// One round: returns whether we hold the Lease after it.
async fn try_acquire_or_renew(api: &Api<Lease>, cfg: &LeaderConfig) -> kube::Result<bool> {
    let duration_secs = cfg.lease_duration.as_secs().max(1) as i32;
    let existing = api.get_opt(&cfg.lease_name).await?;
    let Some(mut lease) = existing else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.lease_name.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(duration_secs),
                acquire_time: Some(micro_now()),
                renew_time: Some(micro_now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    let holder = spec.holder_identity.clone().unwrap_or_default();
    let ours = holder == cfg.identity;
    if !ours && !holder.is_empty() {
        let renewed = spec.renew_time.as_ref().map(|t| t.0);
        let held_for = spec.lease_duration_seconds.unwrap_or(duration_secs);
        let expired = renewed.is_none_or(|r| {
            r + jiff::SignedDuration::from_secs(i64::from(held_for)) < jiff::Timestamp::now()
        });
        if !expired {
            return Ok(false);
        }
    }
    if !ours {
        spec.holder_identity = Some(cfg.identity.clone());
        spec.acquire_time = Some(micro_now());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
    }
    spec.lease_duration_seconds = Some(duration_secs);
    spec.renew_time = Some(micro_now());
    // `replace` sends the resourceVersion we read: a concurrent change makes this a 409.
    match api
        .replace(&cfg.lease_name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
