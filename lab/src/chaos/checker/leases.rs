//! What the watcher keeps of the Leases in `kube-node-lease`: the last renewals of each
//! kubelet's and each agent's, and every word of an agent that it stopped the instance
//! workloads of its node.

use super::*;

/// Renewals kept per Lease: enough to find the one before a taint once the watches settled.
const RENEWALS_KEPT: usize = 32;

/// One renewal of a Lease, as the watcher saw it.
#[derive(Clone, Debug)]
pub(super) struct Renewal {
    /// The resourceVersion of the Lease that carries it.
    pub(super) version: Option<u64>,
    /// Its `renewTime`, on the clock of whoever renewed it.
    pub(super) renew_time: Option<jiff::Timestamp>,
    /// When the watcher saw it, if it saw it happen (not on a relist).
    pub(super) seen: Option<Instant>,
    /// The Lease's duration.
    pub(super) duration: Duration,
}

/// An object's resourceVersion as a number: etcd's revision, global to every kind, so that
/// versions of a Lease and of a Node tell which was written first (one etcd, as here).
pub(super) fn resource_version<K: Resource>(o: &K) -> Option<u64> {
    o.meta().resource_version.as_deref()?.parse().ok()
}

/// The node whose agent renews the Lease `name`, if it is an agent's.
pub(super) fn agent_node(name: &str) -> Option<&str> {
    name.strip_prefix(AGENT_LEASE_PREFIX)
}

impl Checker {
    pub(super) fn on_lease(&mut self, c: Change<Lease>, at: Instant, fresh: bool) {
        self.leases.apply(&c);
        let (Change::Applied(l) | Change::Relisted(l)) = &c else {
            return;
        };
        let name = l.name_any();
        if let Some(node) = agent_node(&name) {
            self.note_word(node.to_string(), l);
        }
        let renew_time = l
            .spec
            .as_ref()
            .and_then(|s| s.renew_time.as_ref())
            .map(|t| t.0);
        let history = self.renewals.entry(name.clone()).or_default();
        if history.back().is_some_and(|r| r.renew_time == renew_time) {
            return;
        }
        let seen = (fresh && matches!(c, Change::Applied(_))).then_some(at);
        let last_seen = history.iter().rev().find_map(|r| r.seen);
        history.push_back(Renewal {
            version: resource_version(l),
            renew_time,
            seen,
            duration: l
                .spec
                .as_ref()
                .and_then(|s| s.lease_duration_seconds)
                .and_then(|s| u64::try_from(s).ok())
                .map(Duration::from_secs)
                .unwrap_or(self.cfg.default_lease),
        });
        while history.len() > RENEWALS_KEPT {
            history.pop_front();
        }
        if seen.is_none() {
            return;
        }
        let gap = last_seen.map(|t| at.saturating_duration_since(t));
        if gap.is_none_or(|g| g > Duration::from_secs(2)) {
            let text = match gap {
                Some(g) => format!(
                    "lease {name} renewed after {:.1} s without a renewal seen",
                    g.as_secs_f64()
                ),
                None => format!("lease {name} renewal first seen"),
            };
            self.push_line(at, true, text);
        }
    }

    /// Keeps the word of `node`'s agent, if its Lease `l` says it stopped the instance
    /// workloads: the kubelet renewal it names, and the lowest version that said so.
    fn note_word(&mut self, node: String, l: &Lease) {
        let Some(since) = l
            .annotations()
            .get(WORKLOADS_STOPPED_ANNOTATION)
            .and_then(|w| w.parse::<jiff::Timestamp>().ok())
        else {
            return;
        };
        let version = resource_version(l).unwrap_or(0);
        let first = self.agent_words.entry((node, since)).or_insert(version);
        *first = (*first).min(version);
    }

    /// The last renewal of the Lease `name` written before `version` (the last seen, when
    /// versions are unknown).
    pub(super) fn renewal_before(&self, name: &str, version: Option<u64>) -> Option<&Renewal> {
        self.renewals
            .get(name)?
            .iter()
            .rev()
            .find(|r| match (r.version, version) {
                (Some(r), Some(v)) => r < v,
                _ => true,
            })
    }

    /// When the watcher last saw the Lease `name` renewed, on its clock.
    pub(super) fn last_seen_renewal(&self, name: &str) -> Option<Instant> {
        self.renewals.get(name)?.iter().rev().find_map(|r| r.seen)
    }

    /// Whether `node`'s agent said, in a version of its Lease written before `version` (any
    /// when unknown), that it stopped the instance workloads there since the kubelet's
    /// renewal `kubelet_renewed`.
    pub(super) fn agent_said_stopped(
        &self,
        node: &str,
        kubelet_renewed: Option<jiff::Timestamp>,
        version: Option<u64>,
    ) -> bool {
        kubelet_renewed
            .and_then(|r| self.agent_words.get(&(node.to_string(), r)))
            .is_some_and(|said| version.is_none_or(|v| *said < v))
    }
}
