//! Heartbeats as this controller observed them, on its own clock.
//!
//! A node's Lease carries the kubelet's `renewTime` and its Ready condition the controller
//! manager's `lastTransitionTime`: timestamps of other machines, whose clocks may be minutes
//! off. Comparing them with this machine's clock would make a node whose clock is behind
//! look dead. So, as kube-controller-manager does, the controller never compares them with
//! its own time: it notes *when it saw* each new `renewTime` and each change of Ready, on its
//! own monotonic clock, and measures ages from those moments. A node seen for the first time
//! (at start, for every node) counts as renewed at that moment: after a restart nothing looks
//! stale before a full threshold has passed on this clock.
//!
//! Silence is measured only while this controller can see. While the API server does not
//! answer it (see [`probe_api`]), no node counts as silent; once it answers again, every
//! node counts as renewed at that moment. Otherwise, after an outage, the first renewals to
//! get through would restore the quorum while the nodes not yet heard from looked dead, and
//! live nodes would be fenced because of the outage alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt;

/// This controller's clock: the wall time read once at start, advanced by the monotonic
/// clock, so that a step of the system clock does not age or rejuvenate anything.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    base: Instant,
    base_time: Timestamp,
}

impl Default for Clock {
    fn default() -> Self {
        Self {
            base: Instant::now(),
            base_time: Timestamp::now(),
        }
    }
}

impl Clock {
    pub fn now(&self) -> Timestamp {
        let elapsed = SignedDuration::try_from(self.base.elapsed()).unwrap_or(SignedDuration::MAX);
        self.base_time
            .saturating_add(elapsed)
            .unwrap_or(Timestamp::MAX)
    }
}

#[derive(Clone, Debug)]
struct Seen {
    /// The Lease's `renewTime` as written (compared for change only, never with a clock).
    renew_time: Option<Timestamp>,
    renewal_observed: Timestamp,
    /// The Ready condition's status (`Some(true)` for True).
    ready: Option<bool>,
    ready_observed: Timestamp,
}

/// Whether this controller can see the API server.
#[derive(Clone, Copy, Debug, Default)]
struct Sight {
    /// The API server does not answer its version probe.
    api_lost: bool,
    /// The Lease watch failed and has delivered no Lease since: renewals may be arriving
    /// unseen (a watch in backoff after an API server restart, or refused while the
    /// restarted server's authorizer warms up).
    leases_lost: bool,
    /// Since when either has been so, if it is.
    lost: Option<Timestamp>,
    /// When it answered again after it had not.
    regained: Option<Timestamp>,
}

/// When this controller saw each node's heartbeats change.
#[derive(Clone, Default)]
pub struct Heartbeats {
    clock: Clock,
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    sight: Arc<Mutex<Sight>>,
}

impl Heartbeats {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            seen: Arc::default(),
            sight: Arc::default(),
        }
    }

    /// The API server did not answer: until it does, no node counts as silent.
    pub fn api_unreachable(&self) {
        self.lose("the API server does not answer", |s| s.api_lost = true);
    }

    /// The API server answered: if it had not, every node counts as renewed now.
    pub fn api_reachable(&self) {
        self.regain(|s| s.api_lost = false);
    }

    /// The Lease watch failed: until it delivers a Lease again, no node counts as silent.
    pub fn leases_unseen(&self) {
        self.lose("the Lease watch failed", |s| s.leases_lost = true);
    }

    /// The Lease watch delivered a Lease: if it had failed, every node counts as renewed
    /// now (once the API server answers too).
    pub fn leases_seen(&self) {
        self.regain(|s| s.leases_lost = false);
    }

    fn lose(&self, why: &str, f: impl FnOnce(&mut Sight)) {
        let now = self.clock.now();
        let mut sight = self.sight.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut sight);
        if sight.lost.is_none() {
            tracing::warn!("{why}: no node counts as silent until heartbeats are seen again");
            sight.lost = Some(now);
        }
    }

    fn regain(&self, f: impl FnOnce(&mut Sight)) {
        let now = self.clock.now();
        let mut sight = self.sight.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut sight);
        if !sight.api_lost && !sight.leases_lost && sight.lost.take().is_some() {
            tracing::info!("heartbeats in sight again: node silence is measured from now");
            sight.regained = Some(now);
        }
    }

    /// A change seen at `observed`, as silence is measured: not before sight was regained,
    /// and now while it is lost.
    fn since(&self, observed: Timestamp) -> Timestamp {
        let sight = *self.sight.lock().unwrap_or_else(|e| e.into_inner());
        match (sight.lost, sight.regained) {
            (Some(_), _) => self.clock.now(),
            (None, Some(regained)) => observed.max(regained),
            (None, None) => observed,
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Since when, and why, heartbeats are out of sight (no node counts as silent), if
    /// they are.
    pub fn out_of_sight(&self) -> Option<(Timestamp, &'static str)> {
        let sight = *self.sight.lock().unwrap_or_else(|e| e.into_inner());
        let why = match (sight.api_lost, sight.leases_lost) {
            (true, _) => "the API server does not answer",
            (false, true) => "the Lease watch fails",
            (false, false) => return None,
        };
        Some((sight.lost?, why))
    }

    fn with<T>(&self, node: &str, f: impl FnOnce(&mut Seen, Timestamp) -> T) -> T {
        let now = self.clock.now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen.entry(node.to_string()).or_insert_with(|| Seen {
            renew_time: None,
            renewal_observed: now,
            ready: None,
            ready_observed: now,
        });
        f(entry, now)
    }

    /// Notes the Lease `renew_time` of `node` as seen now; returns when this renewal was
    /// first seen, on this controller's clock (see [`Self::api_reachable`]).
    pub fn lease(&self, node: &str, renew_time: Option<Timestamp>) -> Timestamp {
        let observed = self.with(node, |s, now| {
            if s.renew_time != renew_time {
                s.renew_time = renew_time;
                s.renewal_observed = now;
            }
            s.renewal_observed
        });
        self.since(observed)
    }

    /// Notes the Ready status of `node` as seen now; returns since when it has been seen
    /// with that status, on this controller's clock (see [`Self::api_reachable`]).
    pub fn ready(&self, node: &str, ready: Option<bool>) -> Timestamp {
        let observed = self.with(node, |s, now| {
            if s.ready != ready {
                s.ready = ready;
                s.ready_observed = now;
            }
            s.ready_observed
        });
        self.since(observed)
    }

    /// Called for every Lease the watch delivers, so that a renewal is noted when it
    /// arrives, not when a reconcile next looks.
    pub fn observe_lease(&self, lease: &Lease) {
        self.lease(&lease.name_any(), renew_time(lease));
    }

    /// Called for every Node the watch delivers.
    pub fn observe_node(&self, node: &Node) {
        self.ready(&node.name_any(), ready_status(node));
    }
}

/// Asks the API server for its version every second (a request every identity may make),
/// and tells `heartbeats` whether it answered within five seconds.
pub async fn probe_api(client: kube::Client, heartbeats: Heartbeats) {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::time::timeout(TIMEOUT, client.apiserver_version()).await {
            Ok(Ok(_)) => heartbeats.api_reachable(),
            _ => heartbeats.api_unreachable(),
        }
    }
}

pub fn renew_time(lease: &Lease) -> Option<Timestamp> {
    lease.spec.as_ref()?.renew_time.as_ref().map(|t| t.0)
}

/// The Ready condition as the kubelet reports it: `Some(true)` for True, `Some(false)` for
/// False; `None` when it is Unknown or absent. Unknown is what the node lifecycle controller
/// writes when it stops hearing the kubelet, a verdict drawn from the Lease this controller
/// watches itself, and one that lags: after an API server outage every node is Unknown until
/// its kubelet posts its status again, Lease renewed all along. See [`ready_fact`].
pub fn ready_status(node: &Node) -> Option<bool> {
    let condition = node
        .status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")?;
    match condition.status.as_str() {
        "True" => Some(true),
        "False" => Some(false),
        _ => None,
    }
}

/// What the Ready condition counts for in a node's health: the kubelet's own True or False;
/// Unknown only for a node without a Lease (there it is the only sign of silence). With a
/// Lease, silence is judged from the Lease alone, so that the node lifecycle controller's
/// lagging Unknown never moves an instance off a node whose kubelet heartbeats.
pub fn ready_fact(ready: Option<bool>, has_condition: bool, has_lease: bool) -> Option<bool> {
    match ready {
        Some(r) => Some(r),
        None if has_condition && !has_lease => Some(false),
        None => None,
    }
}

/// Whether the Node has a Ready condition at all (whatever its status).
pub fn has_ready_condition(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    #[test]
    fn ready_unknown_counts_only_for_a_node_without_a_lease() {
        // The kubelet's own report counts either way.
        assert_eq!(ready_fact(Some(false), true, true), Some(false));
        assert_eq!(ready_fact(Some(true), true, false), Some(true));
        // Unknown, written by the node lifecycle controller: the Lease decides.
        assert_eq!(ready_fact(None, true, true), None);
        // Without a Lease it is the only sign the kubelet went silent.
        assert_eq!(ready_fact(None, true, false), Some(false));
        // No condition at all: nothing to count.
        assert_eq!(ready_fact(None, false, false), None);
    }

    #[test]
    fn a_renewal_is_dated_when_seen_not_by_its_writer() {
        let hb = Heartbeats::default();
        // A kubelet whose clock is an hour behind: its renewTime means nothing here.
        let first = hb.lease("n", Some(t(-3600)));
        assert!(hb.clock().now() >= first);
        // The same renewal seen again keeps its date; a new one gets a newer date.
        assert_eq!(hb.lease("n", Some(t(-3600))), first);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(hb.lease("n", Some(t(-3599))) > first);
    }

    #[test]
    fn ready_changes_are_dated_when_seen() {
        let hb = Heartbeats::default();
        let up = hb.ready("n", Some(true));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(hb.ready("n", Some(true)), up);
        assert!(hb.ready("n", Some(false)) > up);
    }

    #[test]
    fn no_node_counts_silent_while_the_api_server_is_out_of_sight() {
        let hb = Heartbeats::default();
        let first = hb.lease("n", Some(t(1)));
        std::thread::sleep(std::time::Duration::from_millis(5));
        hb.api_unreachable();
        // Nothing is heard, and nothing counts as silent: the renewal is as of now.
        assert!(hb.lease("n", Some(t(1))) > first);
        std::thread::sleep(std::time::Duration::from_millis(5));
        hb.api_reachable();
        let back = hb.lease("n", Some(t(1)));
        assert!(back > first);
        // Once back, silence is measured from the moment sight was regained.
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(hb.lease("n", Some(t(1))), back);
        assert_eq!(hb.ready("n", Some(false)), hb.ready("n", Some(false)));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(
            hb.lease("n", Some(t(2))) > back,
            "a new renewal is newer still"
        );
    }

    #[test]
    fn no_node_counts_silent_while_the_lease_watch_is_failing() {
        // Seen on the real control plane (chaos run): the API server answered again, but
        // the Lease watch was still backing off, and three healthy nodes' instances were
        // about to fail over on Leases the cache had not seen renewed.
        let hb = Heartbeats::default();
        let first = hb.lease("n", Some(t(1)));
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(hb.out_of_sight(), None);
        hb.leases_unseen();
        hb.api_reachable();
        assert!(
            hb.lease("n", Some(t(1))) > first,
            "the API server answering is not enough while the watch fails"
        );
        // Said in the cluster's status (condition HeartbeatsSeen), not only in the log.
        assert_eq!(
            hb.out_of_sight().map(|(_, why)| why),
            Some("the Lease watch fails")
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
        hb.leases_seen();
        assert_eq!(hb.out_of_sight(), None);
        let back = hb.lease("n", Some(t(1)));
        assert!(back > first);
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert_eq!(hb.lease("n", Some(t(1))), back, "measured from then on");
        // Both must be in sight: the watch flowing does not hide an unanswered probe.
        hb.api_unreachable();
        hb.leases_seen();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(hb.lease("n", Some(t(1))) > back);
    }

    #[test]
    fn the_clock_does_not_go_back() {
        let c = Clock::default();
        let a = c.now();
        assert!(c.now() >= a);
    }
}
