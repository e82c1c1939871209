//! One timer per node for the settled instances it hosts.
//!
//! A settled instance looks again at its owner's next heartbeat deadline, the moment its
//! owner's verdict may change by itself (a Lease going stale). Every renewal moves that
//! deadline on, so a timer per instance would wake every instance once per renewal period
//! to find nothing changed. Instead, an instance whose decision needs nothing but that
//! deadline (`Decision::recheck_for_owner`) hands it to the timer of its owner node here.
//! The timer looks at the node's verdict at the deadline, and wakes the instances handed to
//! it (and any instance the cache files under that owner) only when the verdict is no
//! longer the one they decided on; otherwise it waits for the node's next deadline.
//!
//! Nothing is lost by waking too much: a woken instance decides again and hands its
//! deadline back. So whenever in doubt (the node or its cluster gone, instances handed over
//! on different verdicts) every instance of the timer is woken.

use std::collections::{HashMap, HashSet};

use futures::Stream;
use jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use tokio::sync::mpsc;

use super::observe::{Stores, node_health_of};
use super::watches::key;
use kube_failover_core::api::FailoverClusterInstance;
use kube_failover_core::api::MemberState;
use kube_failover_core::decide::{AgentHealth, NodeHealth};

/// What of a node's health a settled instance's decision rests on: everything but the
/// times that move with each renewal (`recheck_at`, `heartbeat_seen`, `basis`,
/// `agent_steady_since`, which only a move reads).
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    state: MemberState,
    down_since: Option<Timestamp>,
    reason: Option<String>,
    heartbeat_stale: bool,
    self_fence: Option<jiff::SignedDuration>,
    agent: AgentHealth,
}

impl From<&NodeHealth> for Verdict {
    fn from(h: &NodeHealth) -> Self {
        Self {
            state: h.state,
            down_since: h.down_since,
            reason: h.reason.clone(),
            heartbeat_stale: h.heartbeat_stale,
            self_fence: h.self_fence,
            agent: h.agent.clone(),
        }
    }
}

/// An instance hands its deadline to its owner's timer.
pub struct Handed {
    cluster: String,
    node: String,
    at: Timestamp,
    verdict: Verdict,
    instance: ObjectRef<FailoverClusterInstance>,
}

/// The sending side, kept by the reconciles.
#[derive(Clone)]
pub struct NodeDeadlines(mpsc::UnboundedSender<Handed>);

impl NodeDeadlines {
    /// Starts the timers, reading node health from `stores`; returns the stream of the
    /// instances they wake.
    pub fn start(
        stores: Stores,
    ) -> (
        Self,
        impl Stream<Item = ObjectRef<FailoverClusterInstance>> + Send + 'static,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let (wake_tx, wake_rx) = mpsc::unbounded_channel();
        tokio::spawn(run(stores, rx, wake_tx));
        let woken = futures::stream::unfold(wake_rx, |mut rx| async move {
            let next = rx.recv().await?;
            Some((next, rx))
        });
        (Self(tx), woken)
    }

    /// `instance` of `cluster`, settled on `node` judged `health`, looks again at `at`.
    pub fn hand(
        &self,
        instance: ObjectRef<FailoverClusterInstance>,
        cluster: &str,
        node: &str,
        health: &NodeHealth,
        at: Timestamp,
    ) -> bool {
        self.0
            .send(Handed {
                cluster: cluster.into(),
                node: node.into(),
                at,
                verdict: health.into(),
                instance,
            })
            .is_ok()
    }
}

/// One node's timer, in one cluster (its heartbeat settings are the cluster's).
struct Timer {
    at: Timestamp,
    verdict: Verdict,
    instances: HashSet<ObjectRef<FailoverClusterInstance>>,
}

/// The timers: instances handed over, and when each node's is due.
#[derive(Default)]
pub struct Timers {
    timers: HashMap<(String, String), Timer>,
}

/// What a timer's node now says, for [`Timers::fire`].
pub enum Now {
    /// The same verdict, due again at this deadline.
    Same(Timestamp),
    /// Another verdict, no deadline left, or the node or cluster gone.
    Changed,
}

impl Timers {
    /// Takes an instance's deadline; returns the instances to wake now: those handed over on
    /// another verdict than this one (one of the two is out of date, and a woken instance
    /// decides again on the node as it is).
    pub fn hand(&mut self, h: Handed) -> Vec<ObjectRef<FailoverClusterInstance>> {
        let k = (h.cluster, h.node);
        match self.timers.get_mut(&k) {
            Some(t) if t.verdict == h.verdict => {
                t.at = t.at.min(h.at);
                t.instances.insert(h.instance);
                Vec::new()
            }
            other => {
                let woken = other
                    .map(|t| t.instances.drain().filter(|i| *i != h.instance).collect())
                    .unwrap_or_default();
                self.timers.insert(
                    k,
                    Timer {
                        at: h.at,
                        verdict: h.verdict,
                        instances: HashSet::from([h.instance]),
                    },
                );
                woken
            }
        }
    }

    /// The next time a timer is due.
    pub fn next(&self) -> Option<Timestamp> {
        self.timers.values().map(|t| t.at).min()
    }

    /// Fires every timer due at `now`: `judge` says what its node's verdict is now. A timer
    /// whose verdict holds waits for the node's next deadline; the others wake their
    /// instances (returned with their cluster and node) and are dropped.
    pub fn fire(
        &mut self,
        now: Timestamp,
        judge: impl Fn(&str, &str, &Verdict) -> Now,
    ) -> Vec<(String, String, Vec<ObjectRef<FailoverClusterInstance>>)> {
        let due: Vec<(String, String)> = self
            .timers
            .iter()
            .filter(|(_, t)| t.at <= now)
            .map(|(k, _)| k.clone())
            .collect();
        let mut woken = Vec::new();
        for k in due {
            let verdict = &self.timers[&k].verdict;
            match judge(&k.0, &k.1, verdict) {
                Now::Same(at) if at > now => {
                    if let Some(t) = self.timers.get_mut(&k) {
                        t.at = at;
                    }
                }
                _ => {
                    let t = self.timers.remove(&k).map(|t| t.instances);
                    woken.push((k.0, k.1, t.into_iter().flatten().collect()));
                }
            }
        }
        woken
    }
}

/// How long after a deadline its timer looks, as a reconcile's requeue does: a renewal at
/// the last moment has arrived by then.
const AFTER_DEADLINE: std::time::Duration = std::time::Duration::from_millis(50);

/// Runs the timers until the reconciles are gone.
async fn run(
    stores: Stores,
    mut handed: mpsc::UnboundedReceiver<Handed>,
    wake: mpsc::UnboundedSender<ObjectRef<FailoverClusterInstance>>,
) {
    let mut timers = Timers::default();
    loop {
        let now = stores.heartbeats.clock().now();
        let woken = timers.fire(now, |cluster, node, verdict| {
            let health = stores
                .clusters
                .get(&ObjectRef::new(cluster))
                .and_then(|c| node_health_of(node, &c, &stores, now));
            match health {
                Some(h) if Verdict::from(&h) == *verdict => {
                    h.recheck_at.map_or(Now::Changed, Now::Same)
                }
                _ => Now::Changed,
            }
        });
        for (cluster, node, mut instances) in woken {
            // And every instance the cache has on that node: one may have been handed over
            // on a write the cache had not shown yet.
            instances.extend(
                stores
                    .instances_under(&key::owner(&node))
                    .iter()
                    .filter(|i| i.spec.cluster_ref == cluster)
                    .map(|i| ObjectRef::from(i.as_ref())),
            );
            for i in instances {
                let _ = wake.send(i);
            }
        }
        let wait = timers
            .next()
            .map(|at| now.duration_until(at).unsigned_abs() + AFTER_DEADLINE);
        tokio::select! {
            h = handed.recv() => {
                let Some(h) = h else { return };
                // Every deadline handed meanwhile, before the timers are looked over again
                // (a look is over every node's timer: once per batch, not per deadline).
                let more = std::iter::from_fn(|| handed.try_recv().ok());
                for h in std::iter::once(h).chain(more) {
                    for i in timers.hand(h) {
                        let _ = wake.send(i);
                    }
                }
            }
            _ = sleep(wait) => {}
        }
    }
}

async fn sleep(wait: Option<std::time::Duration>) {
    match wait {
        Some(w) => tokio::time::sleep(w).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn up() -> NodeHealth {
        NodeHealth {
            state: MemberState::Up,
            down_since: None,
            reason: None,
            recheck_at: None,
            heartbeat_stale: false,
            self_fence: None,
            heartbeat_seen: None,
            agent: AgentHealth::Absent,
            agent_steady_since: None,
            basis: Default::default(),
        }
    }

    fn handed(instance: &str, node: &str, health: &NodeHealth, at: i64) -> Handed {
        Handed {
            cluster: "c".into(),
            node: node.into(),
            at: t(at),
            verdict: health.into(),
            instance: ObjectRef::new(instance).within("ns"),
        }
    }

    fn names(refs: &[ObjectRef<FailoverClusterInstance>]) -> Vec<String> {
        let mut n: Vec<String> = refs.iter().map(|r| r.name.clone()).collect();
        n.sort();
        n
    }

    #[test]
    fn a_renewed_node_wakes_nobody_and_its_timer_follows_the_next_deadline() {
        let mut timers = Timers::default();
        assert!(timers.hand(handed("a", "n1", &up(), 40)).is_empty());
        assert!(timers.hand(handed("b", "n1", &up(), 42)).is_empty());
        assert!(timers.hand(handed("c", "n2", &up(), 50)).is_empty());
        assert_eq!(timers.next(), Some(t(40)), "the earliest of n1's");
        // Not due yet: nothing happens.
        assert!(timers.fire(t(39), |_, _, _| Now::Changed).is_empty());
        // Due, renewed since: no one is woken, the timer is due at the new deadline.
        let woken = timers.fire(t(40), |_, node, _| {
            assert_eq!(node, "n1");
            Now::Same(t(60))
        });
        assert!(woken.is_empty());
        assert_eq!(timers.next(), Some(t(50)));
        // n2's verdict changed at its deadline: its instance is woken, its timer gone.
        let woken = timers.fire(t(50), |_, _, _| Now::Changed);
        assert_eq!(woken.len(), 1);
        assert_eq!(
            (woken[0].1.as_str(), names(&woken[0].2)),
            ("n2", vec!["c".to_string()])
        );
        assert_eq!(timers.next(), Some(t(60)));
        // n1 goes silent: both its instances are woken.
        let woken = timers.fire(t(60), |_, _, _| Now::Changed);
        assert_eq!(names(&woken[0].2), ["a", "b"]);
        assert_eq!(timers.next(), None);
    }

    #[test]
    fn a_deadline_already_passed_with_the_same_verdict_is_changed_and_wakes() {
        let mut timers = Timers::default();
        timers.hand(handed("a", "n1", &up(), 40));
        // The node says the same, but gives no deadline after now: woken.
        let woken = timers.fire(t(41), |_, _, _| Now::Same(t(41)));
        assert_eq!(names(&woken[0].2), ["a"]);
    }

    #[test]
    fn instances_handed_over_on_another_verdict_are_woken_to_decide_again() {
        let mut timers = Timers::default();
        timers.hand(handed("a", "n1", &up(), 40));
        timers.hand(handed("b", "n1", &up(), 40));
        let mut paused = up();
        paused.state = MemberState::Paused;
        // `c` decided on a newer (or older) verdict: `a` and `b` decide again.
        let woken = timers.hand(handed("c", "n1", &paused, 45));
        assert_eq!(names(&woken), ["a", "b"]);
        // `a` comes back on that verdict: nobody else is woken.
        assert!(timers.hand(handed("a", "n1", &paused, 45)).is_empty());
        // The same instance again on the old verdict wakes only `c`.
        let woken = timers.hand(handed("a", "n1", &up(), 46));
        assert_eq!(names(&woken), ["c"]);
    }

    #[test]
    fn times_that_move_with_each_renewal_are_not_part_of_the_verdict() {
        let mut a = up();
        let mut b = up();
        a.recheck_at = Some(t(10));
        b.recheck_at = Some(t(20));
        b.heartbeat_seen = Some(t(5));
        b.agent_steady_since = Some(t(1));
        assert_eq!(Verdict::from(&a), Verdict::from(&b));
        b.heartbeat_stale = true;
        assert_ne!(Verdict::from(&a), Verdict::from(&b));
    }
}
