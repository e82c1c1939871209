//! Invariant 5: no out-of-service taint added to a node whose kubelet heartbeats, nor to a
//! node whose agent renews without having said that it stopped the instance workloads
//! there since the kubelet's last renewal.
//!
//! A taint is judged against the last renewals written before it (resourceVersions are
//! etcd's revisions, one order for every kind), once the Lease watch has had time to catch
//! up with the Node watch: two watches deliver in their own order, and a renewal the
//! watcher sees just before a taint may have been written just after it (a node revived
//! at once).
//!
//! How old a renewal was when the taint came is measured two ways, each erring towards
//! older, so that neither mistakes a sound taint for a violation:
//!
//! - on the wall clock: from its `renewTime` to when the watcher saw the taint. The
//!   controller cannot have seen the renewal before it was written, nor tainted after the
//!   watcher saw it; kubelets and agents write `renewTime` with this machine's clock (all
//!   run here), except a kubelet whose clock the run put behind, which only looks older;
//! - on the watcher's clock, from when it saw the renewal to when it saw the taint, against
//!   the Lease's duration: a skewed kubelet's renewals count too. (The two watches' delays
//!   may differ a little: the Lease's duration is well under the threshold.)

use super::*;

impl Checker {
    /// Notes a taint seen added to `node`, in the Node's version `version`.
    pub(super) fn note_taint(
        &mut self,
        node: &str,
        version: Option<u64>,
        at: Instant,
        wall: jiff::Timestamp,
    ) {
        self.pending_taints.push(PendingTaint {
            node: node.to_string(),
            version,
            at,
            wall,
        });
    }

    /// Judges the taints seen at least [`CheckerConfig::audit_settle`] before `now`.
    pub(super) fn judge_settled_taints(&mut self, now: Instant) {
        let settle = self.cfg.audit_settle;
        let (due, later): (Vec<PendingTaint>, Vec<PendingTaint>) = self
            .pending_taints
            .drain(..)
            .partition(|t| t.at + settle <= now);
        self.pending_taints = later;
        for t in due {
            self.judge_kubelet(&t);
            self.judge_agent(&t);
        }
    }

    /// A taint on a node whose kubelet renewed, within the heartbeat threshold (wall clock)
    /// or the Lease's duration (watcher's clock), before it.
    fn judge_kubelet(&mut self, t: &PendingTaint) {
        let Some(r) = self.renewal_before(&t.node, t.version) else {
            return;
        };
        let threshold = self.cfg.heartbeat_threshold;
        let wall_age = r.renew_time.and_then(|rt| age(t.wall, rt));
        let seen_age = r.seen.map(|s| t.at.saturating_duration_since(s));
        if wall_age.is_some_and(|a| a < threshold) || seen_age.is_some_and(|a| a < r.duration) {
            let msg = format!(
                "node {} got the out-of-service taint while its kubelet heartbeats: its last renewal before the taint (renewTime {:?}, resourceVersion {:?}) was {} old by the wall clock (heartbeat threshold {} s) and seen {} before it by the watcher (Lease duration {} s)",
                t.node,
                r.renew_time,
                r.version,
                secs(wall_age),
                threshold.as_secs(),
                secs(seen_age),
                r.duration.as_secs()
            );
            self.violate(t.at, "a live node fenced", msg);
        }
    }

    /// A taint on a node whose agent renewed within the heartbeat threshold (wall clock)
    /// before it, without its word that it stopped the instance workloads since the
    /// kubelet's last renewal, said before the taint.
    fn judge_agent(&mut self, t: &PendingTaint) {
        let lease = kube_failover_core::api::agent_lease_name(&t.node);
        let Some(agent_age) = self
            .renewal_before(&lease, t.version)
            .and_then(|r| age(t.wall, r.renew_time?))
        else {
            return;
        };
        if agent_age >= self.cfg.heartbeat_threshold {
            return;
        }
        let kubelet = self
            .renewal_before(&t.node, t.version)
            .and_then(|r| r.renew_time);
        if self.agent_said_stopped(&t.node, kubelet, t.version) {
            return;
        }
        let msg = format!(
            "node {} got the out-of-service taint {:.3} s after its agent's last renewal before it, and the agent had not said it stopped the instance workloads there since its kubelet's last renewal ({kubelet:?}) before the taint was written (resourceVersion {:?})",
            t.node,
            agent_age.as_secs_f64(),
            t.version
        );
        self.violate(
            t.at,
            "a node fenced while its agent renews without its word",
            msg,
        );
    }
}

/// How long before `then` the time `renewed` was; `None` if after it (a clock ahead).
fn age(then: jiff::Timestamp, renewed: jiff::Timestamp) -> Option<Duration> {
    Duration::try_from(then.duration_since(renewed)).ok()
}

fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "unknown".into(), |d| format!("{:.3} s", d.as_secs_f64()))
}
