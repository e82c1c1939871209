//! Leader election on a `coordination.k8s.io/v1` Lease.
//!
//! Every write to the Lease carries the resourceVersion it was decided from, so two
//! candidates can never both believe they took it. Another holder's Lease counts as expired
//! only when this replica has seen it unrenewed for its whole duration on its own monotonic
//! clock (as client-go does): the holder's `renewTime` comes from another machine's clock
//! and is compared for change only. A leader counts itself leader only until
//! its last successful renewal plus the lease duration minus a safety margin, measured on its
//! own monotonic clock; past that it stops acting even if it could not reach the API server
//! to learn that it lost. It also steps down at that moment (logs it, tells subscribers) even
//! while a request to the API server hangs: a round is abandoned once a success could no
//! longer extend leadership, so the loop never stalls on a server that stopped answering.

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
    /// Nanoseconds since `epoch` (at least 1) at which the last successful round started;
    /// 0 before the first.
    renewed: Arc<AtomicU64>,
    /// The Lease's duration; `None` when leadership is not elected.
    lease_duration: Option<Duration>,
    /// How many times this replica has become leader: a write made in one term says nothing
    /// of what another leader may have done before a later one.
    term: Arc<AtomicU64>,
    changes: watch::Receiver<bool>,
}

/// What /healthz needs to know of leadership, at one moment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderView {
    /// The election loop holds this replica for the leader (the value subscribers see).
    pub claims: bool,
    /// When the round that last acquired or renewed the Lease started.
    pub last_renewal: Option<Instant>,
    /// `None` when leadership is not elected (always held).
    pub lease_duration: Option<Duration>,
}

impl Leadership {
    /// Leadership that is always held: for a single replica started with election off.
    pub fn always() -> Self {
        let (_tx, rx) = watch::channel(true);
        Self {
            epoch: Instant::now(),
            valid_until: Arc::new(AtomicU64::new(u64::MAX)),
            renewed: Arc::new(AtomicU64::new(0)),
            lease_duration: None,
            term: Arc::new(AtomicU64::new(1)),
            changes: rx,
        }
    }

    pub fn is_leader(&self) -> bool {
        let now = self.epoch.elapsed().as_nanos() as u64;
        now < self.valid_until.load(Ordering::Acquire)
    }

    /// The current term: it grows each time this replica becomes leader again (0 before
    /// the first time).
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }

    /// Resolves when leadership flips either way.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.changes.clone()
    }

    /// Whether the election loop claims leadership and when it last renewed the Lease.
    pub fn view(&self) -> LeaderView {
        let renewed = self.renewed.load(Ordering::Acquire);
        LeaderView {
            claims: *self.changes.borrow(),
            last_renewal: (renewed != 0).then(|| self.epoch + Duration::from_nanos(renewed)),
            lease_duration: self.lease_duration,
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.epoch).as_nanos() as u64
    }

    /// The moment this replica's leadership runs out, unless renewed before.
    fn valid_until(&self) -> Option<Instant> {
        self.epoch.checked_add(Duration::from_nanos(
            self.valid_until.load(Ordering::Acquire),
        ))
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
        renewed: Arc::new(AtomicU64::new(0)),
        lease_duration: Some(cfg.lease_duration),
        term: Arc::new(AtomicU64::new(0)),
        changes: rx,
    };
    let shared = leadership.clone();
    tokio::spawn(async move {
        let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
        let margin = cfg.lease_duration / 5;
        let valid_for = cfg.lease_duration - margin;
        let mut seen: Option<Seen> = None;
        loop {
            let attempt = Instant::now();
            // Requests have no timeout of their own, and one to an API server that stopped
            // answering hangs. A round still under way when its success would already have
            // run out is given up: the next one starts afresh.
            let round = tokio::time::timeout_at(
                (attempt + valid_for).into(),
                try_acquire_or_renew(&api, &cfg, &mut seen),
            );
            match stepping_down_on_expiry(&shared, &tx, &cfg.identity, round).await {
                Ok(Ok(true)) => {
                    shared
                        .valid_until
                        .store(shared.nanos(attempt + valid_for), Ordering::Release);
                    shared
                        .renewed
                        .store(shared.nanos(attempt).max(1), Ordering::Release);
                    if shared.is_leader() && !*tx.borrow() {
                        tracing::info!(identity = %cfg.identity, "acquired leadership");
                        shared.term.fetch_add(1, Ordering::AcqRel);
                        let _ = tx.send(true);
                    }
                }
                Ok(Ok(false)) => {
                    shared.valid_until.store(0, Ordering::Release);
                    if *tx.borrow() {
                        tracing::warn!(identity = %cfg.identity, "lost leadership");
                        let _ = tx.send(false);
                    }
                }
                // Keep acting only while the last renewal is still valid: the step-down at
                // its end is `stepping_down_on_expiry`'s.
                Ok(Err(e)) => tracing::warn!(error = %e, "leader lease renewal failed"),
                Err(_) => tracing::warn!(after = ?valid_for, "leader lease renewal timed out"),
            }
            let wait = if shared.is_leader() {
                cfg.renew_every
            } else {
                cfg.renew_every.min(cfg.lease_duration / 4)
            };
            stepping_down_on_expiry(&shared, &tx, &cfg.identity, tokio::time::sleep(wait)).await;
        }
    });
    leadership
}

/// Awaits `fut`; if this replica claims leadership and its last renewal runs out meanwhile,
/// steps down at that moment rather than when `fut` ends.
async fn stepping_down_on_expiry<F: std::future::Future>(
    shared: &Leadership,
    tx: &watch::Sender<bool>,
    identity: &str,
    fut: F,
) -> F::Output {
    let mut fut = std::pin::pin!(fut);
    loop {
        let claims = *tx.borrow();
        let Some(until) = shared.valid_until().filter(|_| claims) else {
            return fut.await;
        };
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(until.into()) => {
                if !shared.is_leader() {
                    tracing::warn!(
                        %identity,
                        "lost leadership: the Lease was not renewed within its duration"
                    );
                    let _ = tx.send(false);
                }
            }
            out = &mut fut => return out,
        }
    }
}

/// Another holder's Lease as last seen: who held it, its `renewTime`, and when this
/// replica first saw that pair.
struct Seen {
    holder: String,
    renew_time: Option<MicroTime>,
    at: Instant,
}

/// Whether the Lease held by `holder` with `renew_time` has gone unrenewed for `held_for`
/// on this replica's clock, noting it as seen now if it changed.
fn expired(
    seen: &mut Option<Seen>,
    holder: &str,
    renew_time: Option<&MicroTime>,
    held_for: Duration,
) -> bool {
    match seen {
        Some(s) if s.holder == holder && s.renew_time.as_ref() == renew_time => {
            s.at.elapsed() > held_for
        }
        _ => {
            *seen = Some(Seen {
                holder: holder.to_string(),
                renew_time: renew_time.cloned(),
                at: Instant::now(),
            });
            false
        }
    }
}

/// One round: returns whether we hold the Lease after it.
async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaderConfig,
    seen: &mut Option<Seen>,
) -> kube::Result<bool> {
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
        let held_for = spec.lease_duration_seconds.unwrap_or(duration_secs).max(1);
        let held_for = Duration::from_secs(u64::try_from(held_for).unwrap_or(1));
        if !expired(seen, &holder, spec.renew_time.as_ref(), held_for) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_holder_expires_only_after_unrenewed_for_its_duration_on_our_clock() {
        let mut seen = None;
        // Its renewTime is a day in the past by our clock: that alone proves nothing.
        let old = MicroTime(jiff::Timestamp::now() - jiff::SignedDuration::from_hours(24));
        let d = Duration::from_millis(30);
        assert!(!expired(&mut seen, "a", Some(&old), d));
        assert!(!expired(&mut seen, "a", Some(&old), d));
        std::thread::sleep(Duration::from_millis(40));
        assert!(expired(&mut seen, "a", Some(&old), d));
        // A renewal (any new value) starts the wait again.
        let newer = MicroTime(old.0 + jiff::SignedDuration::from_secs(1));
        assert!(!expired(&mut seen, "a", Some(&newer), d));
    }
}
