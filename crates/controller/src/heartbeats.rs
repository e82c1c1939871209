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
//!
//! Three signs say the controller cannot see: the API server's readiness probe fails (it
//! is down, restarting, shutting down, or cannot reach etcd), the Lease watch fails, or no
//! Lease at all has arrived, from any node, for three times the longest renewal interval
//! the Leases announce (a watch that stalled or reconnected unseen, an etcd stall that the
//! probe missed: when every heartbeat in the cluster stops at once, the pipe is at fault,
//! not the nodes).

use std::collections::{BTreeMap, HashMap};
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
    /// How often the Lease's holder renews it, as its duration announces (a kubelet renews
    /// every quarter of its Lease's duration).
    renew_every: Option<SignedDuration>,
    /// Since when the renewals have been seen without a break: no two further apart than
    /// the Lease's duration.
    steady_since: Timestamp,
    /// The Lease's duration, the longest gap between renewals that is no break.
    duration: Option<SignedDuration>,
}

/// A quarter of a Lease's duration: how often a kubelet renews it.
const RENEW_FRACTION: f64 = 0.25;
/// No Lease from any node for this many renewal intervals means the controller is blind.
const QUIET_INTERVALS: i32 = 3;
/// ... and never for less than this, whatever the Leases announce.
const QUIET_FLOOR: SignedDuration = SignedDuration::from_secs(3);

/// Why the API server's readiness probe failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ApiLost {
    /// No answer, or not ready.
    NotReady,
    /// The probe was refused (401 or 403).
    Refused,
}

/// Whether this controller can see the API server.
#[derive(Clone, Copy, Debug, Default)]
struct Sight {
    /// The API server's readiness probe fails, and how.
    api_lost: Option<ApiLost>,
    /// The Lease watch failed and has delivered no Lease since: renewals may be arriving
    /// unseen (a watch in backoff after an API server restart, or refused while the
    /// restarted server's authorizer warms up).
    leases_lost: bool,
    /// Since when either has been so, if it is.
    lost: Option<Timestamp>,
    /// When it answered again after it had not.
    regained: Option<Timestamp>,
    /// When the Lease watch last delivered a Lease, any Lease.
    last_delivery: Option<Timestamp>,
}

/// Every Lease's and Node's [`Seen`], by name, and how many announce each renewal
/// interval (so that the longest is known without a scan: it is asked for at every
/// verdict on every node).
#[derive(Default)]
struct SeenAll {
    by_name: HashMap<String, Seen>,
    renew_every: BTreeMap<SignedDuration, usize>,
}

/// When this controller saw each node's heartbeats change.
#[derive(Clone, Default)]
pub struct Heartbeats {
    clock: Clock,
    seen: Arc<Mutex<SeenAll>>,
    sight: Arc<Mutex<Sight>>,
    /// Time the tests move on by hand, added to the clock's.
    #[cfg(test)]
    skew: Arc<Mutex<SignedDuration>>,
}

impl Heartbeats {
    pub fn new(clock: Clock) -> Self {
        Self {
            clock,
            seen: Arc::default(),
            sight: Arc::default(),
            #[cfg(test)]
            skew: Arc::default(),
        }
    }

    #[cfg(not(test))]
    fn now(&self) -> Timestamp {
        self.clock.now()
    }

    #[cfg(test)]
    fn now(&self) -> Timestamp {
        let skew = *self.skew.lock().unwrap_or_else(|e| e.into_inner());
        self.clock
            .now()
            .saturating_add(skew)
            .unwrap_or(Timestamp::MAX)
    }

    #[cfg(test)]
    fn advance(&self, by: SignedDuration) {
        *self.skew.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }

    /// The API server is not ready (or refuses to say): until it is, no node counts as
    /// silent.
    pub fn api_unreachable(&self, how: ApiLost) {
        self.lose("the API server is not ready", |s| s.api_lost = Some(how));
    }

    /// The API server is ready: if it was not, every node counts as renewed now.
    pub fn api_reachable(&self) {
        self.regain(|s| s.api_lost = None);
    }

    /// The Lease watch failed: until it delivers a Lease again, no node counts as silent.
    pub fn leases_unseen(&self) {
        self.lose("the Lease watch failed", |s| s.leases_lost = true);
    }

    /// The Lease watch delivered a Lease: if it had failed, or no Lease had arrived for
    /// longer than [`Self::quiet_limit`], every node counts as renewed now (once the API
    /// server answers too).
    pub fn leases_seen(&self) {
        let now = self.now();
        let limit = self.quiet_limit();
        let mut sight = self.sight.lock().unwrap_or_else(|e| e.into_inner());
        let quiet = sight.last_delivery.map(|last| now.duration_since(last));
        sight.last_delivery = Some(now);
        sight.leases_lost = false;
        let was_quiet = quiet.is_some_and(|q| q > limit);
        if sight.api_lost.is_some() {
            return;
        }
        if sight.lost.take().is_some() || was_quiet {
            if was_quiet {
                tracing::warn!(
                    quiet = ?quiet.unwrap_or_default(),
                    "no Lease arrived from any node for longer than {limit:?}: node silence \
                     is measured from now"
                );
            } else {
                tracing::info!("heartbeats in sight again: node silence is measured from now");
            }
            sight.regained = Some(now);
        }
    }

    /// How long the Lease watch may deliver nothing at all before the controller counts
    /// itself blind: three times the longest renewal interval the Leases announce, at
    /// least three seconds.
    fn quiet_limit(&self) -> SignedDuration {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let longest = seen
            .renew_every
            .last_key_value()
            .map_or(SignedDuration::ZERO, |(every, _)| *every);
        (longest * QUIET_INTERVALS).max(QUIET_FLOOR)
    }

    /// Since when the Lease watch has delivered nothing for longer than
    /// [`Self::quiet_limit`], if it has.
    fn quiet_since(&self, sight: &Sight, now: Timestamp) -> Option<Timestamp> {
        let last = sight.last_delivery?;
        (now.duration_since(last) > self.quiet_limit()).then_some(last)
    }

    fn lose(&self, why: &str, f: impl FnOnce(&mut Sight)) {
        let now = self.now();
        let mut sight = self.sight.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut sight);
        if sight.lost.is_none() {
            tracing::warn!("{why}: no node counts as silent until heartbeats are seen again");
            sight.lost = Some(now);
        }
    }

    fn regain(&self, f: impl FnOnce(&mut Sight)) {
        let now = self.now();
        let mut sight = self.sight.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut sight);
        if sight.api_lost.is_none() && !sight.leases_lost && sight.lost.take().is_some() {
            tracing::info!("heartbeats in sight again: node silence is measured from now");
            sight.regained = Some(now);
        }
    }

    /// A change seen at `observed`, as silence is measured: not before sight was regained,
    /// and now while it is lost.
    fn since(&self, observed: Timestamp) -> Timestamp {
        let now = self.now();
        let sight = *self.sight.lock().unwrap_or_else(|e| e.into_inner());
        let lost = sight.lost.or_else(|| self.quiet_since(&sight, now));
        match (lost, sight.regained) {
            (Some(_), _) => self.now(),
            (None, Some(regained)) => observed.max(regained),
            (None, None) => observed,
        }
    }

    pub fn clock(&self) -> Clock {
        self.clock
    }

    /// Since when heartbeats have been in sight without a break (from this controller's
    /// start, or from when they came back into sight); `None` while they are out of it.
    pub fn in_sight_since(&self) -> Option<Timestamp> {
        if self.out_of_sight().is_some() {
            return None;
        }
        Some(self.since(Timestamp::UNIX_EPOCH))
    }

    /// Since when, and why, heartbeats are out of sight (no node counts as silent), if
    /// they are.
    pub fn out_of_sight(&self) -> Option<(Timestamp, &'static str)> {
        let now = self.now();
        let sight = *self.sight.lock().unwrap_or_else(|e| e.into_inner());
        let why = match (sight.api_lost, sight.leases_lost) {
            (Some(ApiLost::NotReady), _) => "the API server is not ready",
            (Some(ApiLost::Refused), _) => {
                "the API server refuses this controller its readiness (get on /readyz)"
            }
            (None, true) => "the Lease watch fails",
            (None, false) => {
                let since = self.quiet_since(&sight, now)?;
                return Some((since, "no Lease has arrived from any node"));
            }
        };
        Some((sight.lost?, why))
    }

    fn with<T>(&self, node: &str, f: impl FnOnce(&mut Seen, Timestamp) -> T) -> T {
        let now = self.now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let entry = seen
            .by_name
            .entry(node.to_string())
            .or_insert_with(|| Seen {
                renew_time: None,
                renewal_observed: now,
                ready: None,
                ready_observed: now,
                renew_every: None,
                steady_since: now,
                duration: None,
            });
        f(entry, now)
    }

    /// Notes the Lease `renew_time` of `node` as seen now; returns when this renewal was
    /// first seen, on this controller's clock (see [`Self::api_reachable`]).
    pub fn lease(&self, node: &str, renew_time: Option<Timestamp>) -> Timestamp {
        let observed = self.with(node, |s, now| {
            if s.renew_time != renew_time {
                if s.duration
                    .is_none_or(|d| now.duration_since(s.renewal_observed) > d)
                {
                    s.steady_since = now;
                }
                s.renew_time = renew_time;
                s.renewal_observed = now;
            }
            s.renewal_observed
        });
        self.since(observed)
    }

    /// Since when this controller has seen `lease` renewed without a break (no two renewals
    /// further apart than its duration, and the last one within it), on its own clock;
    /// `None` while there is a break, or the Lease announces no duration. Measured, like
    /// silence, only while heartbeats are in sight: after they were out of it, from when
    /// they came back into it. A node agent that tells its peers it is cut off from the API
    /// server has gone longer than its Lease's duration (and an allowance) without a
    /// renewal, so here its renewals show a break (see `decide`'s fence step).
    pub fn steady_since(&self, lease: &Lease) -> Option<Timestamp> {
        let name = lease.name_any();
        self.lease(&name, renew_time(lease));
        let duration = lease_duration(lease);
        let since = self.with(&name, |s, now| {
            s.duration = duration;
            let d = duration?;
            (now.duration_since(s.renewal_observed) <= d).then_some(s.steady_since)
        })?;
        Some(self.since(since))
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
        let name = lease.name_any();
        let duration = lease_duration(lease);
        self.with(&name, |s, _| s.duration = duration);
        self.lease(&name, renew_time(lease));
        let every = lease
            .spec
            .as_ref()
            .and_then(|s| s.lease_duration_seconds)
            .and_then(|d| SignedDuration::try_from_secs_f64(f64::from(d) * RENEW_FRACTION).ok());
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let SeenAll {
            by_name,
            renew_every,
        } = &mut *seen;
        let Some(s) = by_name.get_mut(&name) else {
            return;
        };
        if s.renew_every == every {
            return;
        }
        if let Some(was) = s.renew_every
            && let Some(n) = renew_every.get_mut(&was)
        {
            *n -= 1;
            if *n == 0 {
                renew_every.remove(&was);
            }
        }
        if let Some(every) = every {
            *renew_every.entry(every).or_default() += 1;
        }
        s.renew_every = every;
    }

    /// Called for every Node the watch delivers.
    pub fn observe_node(&self, node: &Node) {
        self.ready(&node.name_any(), ready_status(node));
    }
}

/// A Lease's `leaseDurationSeconds`, if it announces a positive one.
fn lease_duration(lease: &Lease) -> Option<SignedDuration> {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.lease_duration_seconds)
        .filter(|d| *d > 0)
        .map(|d| SignedDuration::from_secs(i64::from(d)))
}

/// Asks the API server whether it is ready (`/readyz`, which the chart's ClusterRole and the
/// default `system:public-info-viewer` role let the controller read) every second, and
/// tells `heartbeats` whether it said so within five seconds. Readiness, not mere
/// reachability: a server that is starting, shutting down or cannot reach etcd answers its
/// version while no heartbeat gets through it. A refusal counts as not ready: a restarted
/// server refuses everything for a moment while its authorizer warms up, and an identity
/// refused for good is said in the cluster's status (`HeartbeatsSeen`) rather than guessed
/// around.
pub async fn probe_api(client: kube::Client, heartbeats: Heartbeats) {
    const TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match tokio::time::timeout(TIMEOUT, probe_once(&client)).await {
            Ok(Ok(())) => heartbeats.api_reachable(),
            Ok(Err(kube::Error::Api(e))) if e.code == 401 || e.code == 403 => {
                heartbeats.api_unreachable(ApiLost::Refused)
            }
            _ => heartbeats.api_unreachable(ApiLost::NotReady),
        }
    }
}

async fn probe_once(client: &kube::Client) -> kube::Result<()> {
    let request = http::Request::get("/readyz")
        .body(Vec::new())
        .map_err(kube::Error::HttpError)?;
    client.request_text(request).await.map(drop)
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
        hb.api_unreachable(ApiLost::NotReady);
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
        hb.api_unreachable(ApiLost::NotReady);
        hb.leases_seen();
        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(hb.lease("n", Some(t(1))) > back);
    }

    fn lease_object(name: &str, duration: i32, renewed: i64) -> Lease {
        let mut lease = Lease::default();
        lease.metadata.name = Some(name.into());
        lease.spec = Some(k8s_openapi::api::coordination::v1::LeaseSpec {
            lease_duration_seconds: Some(duration),
            renew_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
                t(renewed),
            )),
            ..Default::default()
        });
        lease
    }

    fn deliver(hb: &Heartbeats, lease: &Lease) {
        hb.leases_seen();
        hb.observe_lease(lease);
    }

    /// Whole seconds of silence (the real clock moves on a little between the lines).
    fn age(hb: &Heartbeats, node: &str, renewed: i64) -> i64 {
        hb.now()
            .duration_since(hb.lease(node, Some(t(renewed))))
            .as_secs()
    }

    #[test]
    fn an_agent_renews_steadily_only_without_a_gap_longer_than_its_lease_duration() {
        let hb = Heartbeats::default();
        let s = SignedDuration::from_secs;
        let ms = SignedDuration::from_millis;
        // Equal up to the real clock's move between two lines.
        let near = |a: Option<Timestamp>, b: Timestamp| {
            a.is_some_and(|a| a.duration_since(b).abs() < ms(100))
        };
        let start = hb.now();
        // Renewals every 1.5 s on a 2 s Lease: steady since first seen.
        for i in 0..4 {
            let lease = lease_object("agent-b", 2, i);
            deliver(&hb, &lease);
            assert!(near(hb.steady_since(&lease), start), "renewal {i}");
            hb.advance(ms(1500));
        }
        // Silent: past the duration, no longer steady.
        hb.advance(ms(600));
        let last = lease_object("agent-b", 2, 3);
        assert_eq!(hb.steady_since(&last), None, "2.1 s since the last renewal");
        // Back: steady again from this renewal on, not from before the break.
        hb.advance(s(5));
        let back = lease_object("agent-b", 2, 10);
        deliver(&hb, &back);
        let resumed = hb.now();
        assert!(near(hb.steady_since(&back), resumed));
        hb.advance(s(1));
        let next = lease_object("agent-b", 2, 11);
        deliver(&hb, &next);
        assert!(near(hb.steady_since(&next), resumed));
        // A Lease that announces no duration is never steady.
        let mut bare = lease_object("agent-c", 2, 0);
        bare.spec.as_mut().unwrap().lease_duration_seconds = None;
        deliver(&hb, &bare);
        assert_eq!(hb.steady_since(&bare), None);
    }

    #[test]
    fn no_node_counts_silent_while_no_lease_arrives_from_any_node() {
        // Seen on the real control plane (chaos run): after a 2 s API server SIGKILL that
        // neither the probe nor the watch noticed, the first renewals to get through made
        // the quorum, and a healthy node whose renewal came later looked silent.
        let hb = Heartbeats::default();
        let s = SignedDuration::from_secs;
        // Kubelets renewing every second (4 s Leases): blind after 3 s without any.
        deliver(&hb, &lease_object("a", 4, 0));
        deliver(&hb, &lease_object("b", 4, 0));
        assert_eq!(hb.quiet_limit(), s(3));
        hb.advance(s(2));
        deliver(&hb, &lease_object("a", 4, 2));
        assert_eq!(age(&hb, "b", 0), 2, "b renews late; a arrived: in sight");
        assert_eq!(hb.out_of_sight(), None);
        // Nothing from anyone for longer than the limit: nobody counts as silent...
        hb.advance(s(4));
        assert_eq!(age(&hb, "b", 0), 0, "b is not silent while nothing arrives");
        let (since, why) = hb.out_of_sight().expect("out of sight");
        assert_eq!(why, "no Lease has arrived from any node");
        assert_eq!(hb.now().duration_since(since).as_secs(), 4);
        // ... and when Leases arrive again, silence is measured from then.
        hb.advance(s(1));
        deliver(&hb, &lease_object("a", 4, 7));
        assert_eq!(hb.out_of_sight(), None);
        hb.advance(s(2));
        assert_eq!(
            age(&hb, "b", 0),
            2,
            "b's silence counts from the end of the gap"
        );
        // A quiet spell within the limit changes nothing.
        deliver(&hb, &lease_object("a", 4, 9));
        hb.advance(s(2));
        deliver(&hb, &lease_object("a", 4, 11));
        assert_eq!(age(&hb, "b", 0), 4);
    }

    #[test]
    fn the_quiet_limit_follows_the_longest_renewal_interval() {
        let hb = Heartbeats::default();
        // Kubelet defaults: 40 s Leases, renewed every 10 s: blind after 30 s.
        deliver(&hb, &lease_object("a", 40, 0));
        deliver(&hb, &lease_object("agent-a", 2, 0));
        assert_eq!(hb.quiet_limit(), SignedDuration::from_secs(30));
        hb.advance(SignedDuration::from_secs(20));
        assert_eq!(hb.out_of_sight(), None, "10 s Leases may all be 20 s apart");
        // The longest Lease shortened: the limit follows it down, and back up.
        deliver(&hb, &lease_object("a", 8, 1));
        assert_eq!(hb.quiet_limit(), SignedDuration::from_secs(6));
        deliver(&hb, &lease_object("b", 40, 0));
        deliver(&hb, &lease_object("c", 40, 0));
        deliver(&hb, &lease_object("b", 4, 1));
        assert_eq!(
            hb.quiet_limit(),
            SignedDuration::from_secs(30),
            "c still says 40 s"
        );
        deliver(&hb, &lease_object("c", 4, 1));
        assert_eq!(hb.quiet_limit(), SignedDuration::from_secs(6));
    }

    #[test]
    fn the_clock_does_not_go_back() {
        let c = Clock::default();
        let a = c.now();
        assert!(c.now() >= a);
    }
}
