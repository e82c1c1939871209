//! Node health and quorum, as pure functions of what the API server says and the clock.

use jiff::{SignedDuration, Timestamp};

use crate::api::{Heartbeat, MemberState, reason};

/// What the controller needs to know of a node, read from its Node object and its Lease.
///
/// Every time here is on the controller's own clock: when the controller *saw* the Lease
/// renewed or the Ready condition change, never a timestamp written by another machine
/// (see `controller::heartbeats`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    /// When the controller saw the current renewal of the node's Lease in
    /// `kube-node-lease`, if it has one.
    pub lease_renewed: Option<Timestamp>,
    /// The Ready condition: `Some(true)` for True, `Some(false)` for False or Unknown,
    /// with the time the controller saw it take that status.
    pub ready: Option<(bool, Timestamp)>,
    /// `spec.unschedulable`: a cordoned node keeps what it hosts but takes nothing new.
    pub unschedulable: bool,
    /// Carries the `node.kubernetes.io/out-of-service` taint.
    pub out_of_service: bool,
    /// That taint was added by this controller (which marks the Node when it fences it).
    pub fenced_by_controller: bool,
    /// When it was added, on the clock of the replica that added it.
    pub fenced_at: Option<Timestamp>,
    /// How long after its last renewal a node agent on this node has stopped its workloads
    /// once it cannot reach the API server (`kube-failover.io/self-fence-seconds` on the
    /// agent's Lease or the Node).
    pub self_fence: Option<SignedDuration>,
}

pub const OUT_OF_SERVICE_TAINT: &str = "node.kubernetes.io/out-of-service";

/// The verdict on one node at one instant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeHealth {
    pub state: MemberState,
    /// When the node became Down (for `Down` and `Fenced`).
    pub down_since: Option<Timestamp>,
    pub reason: Option<String>,
    /// When the verdict would change without any new event (a Lease going stale, a
    /// NotReady condition reaching its threshold): the time to look again.
    pub recheck_at: Option<Timestamp>,
    /// The node's Lease has not been seen renewed for the threshold: its kubelet is
    /// silent. Only such a node may ever be fenced; a node whose kubelet still heartbeats
    /// but reports NotReady is unhealthy, never fenced.
    pub heartbeat_stale: bool,
    /// See `NodeFacts::self_fence`.
    pub self_fence: Option<SignedDuration>,
    /// When the controller saw the node's heartbeat Lease last renewed (`NodeFacts::lease_renewed`):
    /// a self-fencing agent's timer started no later.
    pub heartbeat_seen: Option<Timestamp>,
}

impl NodeHealth {
    /// Up and not cordoned: may take new instances.
    pub fn eligible(&self) -> bool {
        self.state == MemberState::Up
    }

    /// Down or fenced: what it hosts must move.
    pub fn failed(&self) -> bool {
        matches!(self.state, MemberState::Down | MemberState::Fenced)
    }
}

fn secs(s: u32) -> SignedDuration {
    SignedDuration::from_secs(i64::from(s))
}

/// Judges a node. A node is Down when its Lease has not been renewed for
/// `leaseStaleSeconds`, or its Ready condition has been False/Unknown for
/// `notReadySeconds`, whichever comes first. A node with neither a Lease nor a Ready
/// condition has never reported and is not Up either.
pub fn node_health(facts: &NodeFacts, hb: &Heartbeat, now: Timestamp) -> NodeHealth {
    let lease_deadline = facts
        .lease_renewed
        .map(|t| t + secs(hb.lease_stale_seconds));
    let not_ready_deadline = match facts.ready {
        Some((false, since)) => Some(since + secs(hb.not_ready_seconds)),
        _ => None,
    };
    let mut down: Option<(Timestamp, &str)> = None;
    for (deadline, reason) in [
        (lease_deadline, reason::LEASE_STALE),
        (not_ready_deadline, reason::NODE_NOT_READY),
    ] {
        if let Some(d) = deadline
            && d <= now
            && down.is_none_or(|(t, _)| d < t)
        {
            down = Some((d, reason));
        }
    }
    if facts.lease_renewed.is_none() && facts.ready.is_none() {
        return NodeHealth {
            state: MemberState::Down,
            down_since: None,
            reason: Some(reason::NEVER_REPORTED.into()),
            recheck_at: None,
            heartbeat_stale: false,
            self_fence: facts.self_fence,
            heartbeat_seen: facts.lease_renewed,
        };
    }
    let heartbeat_stale = lease_deadline.is_some_and(|d| d <= now);
    if let Some((since, reason)) = down {
        let state = if facts.out_of_service {
            MemberState::Fenced
        } else {
            MemberState::Down
        };
        return NodeHealth {
            state,
            down_since: Some(since),
            reason: Some(reason.into()),
            // A NotReady node may yet go silent: look again when its Lease would be stale.
            recheck_at: lease_deadline.filter(|d| *d > now),
            heartbeat_stale,
            self_fence: facts.self_fence,
            heartbeat_seen: facts.lease_renewed,
        };
    }
    let recheck_at = [lease_deadline, not_ready_deadline]
        .into_iter()
        .flatten()
        .filter(|d| *d > now)
        .min();
    let (state, reason) = if facts.out_of_service {
        // Fenced by someone while it still heartbeats: it must not host anything.
        (
            MemberState::Fenced,
            Some(reason::OUT_OF_SERVICE_TAINT.into()),
        )
    } else if facts.unschedulable {
        (MemberState::Paused, Some(reason::UNSCHEDULABLE.into()))
    } else {
        (MemberState::Up, None)
    };
    NodeHealth {
        state,
        down_since: None,
        reason,
        recheck_at,
        heartbeat_stale,
        self_fence: facts.self_fence,
        heartbeat_seen: facts.lease_renewed,
    }
}

/// When the out-of-service taint this controller added to a node may be removed: once the
/// node heartbeats again and has been seen Ready for `after_seconds`, counted from the
/// fencing at the earliest (a node back before the node lifecycle controller marked it
/// NotReady was Ready all along). `None` while that cannot happen without a new event (not
/// ours, silent, not Ready).
pub fn unfence_at(facts: &NodeFacts, health: &NodeHealth, after_seconds: u32) -> Option<Timestamp> {
    if !(facts.out_of_service && facts.fenced_by_controller) || health.heartbeat_stale {
        return None;
    }
    match facts.ready {
        Some((true, since)) => {
            Some(since.max(facts.fenced_at.unwrap_or(since)) + secs(after_seconds))
        }
        _ => None,
    }
}

/// Quorum: how many members must be Up (a count, or a percentage rounded up).
pub fn required_healthy(
    min_healthy: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString,
    total: u32,
) -> u32 {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match min_healthy {
        IntOrString::Int(n) => u32::try_from(*n).unwrap_or(0),
        IntOrString::String(s) => {
            let pct: u32 = s.trim_end_matches('%').parse().unwrap_or(100);
            (total * pct.min(100)).div_ceil(100)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn facts(lease: Option<i64>, ready: Option<(bool, i64)>) -> NodeFacts {
        NodeFacts {
            name: "n".into(),
            lease_renewed: lease.map(t),
            ready: ready.map(|(r, s)| (r, t(s))),
            unschedulable: false,
            out_of_service: false,
            fenced_by_controller: false,
            fenced_at: None,
            self_fence: None,
        }
    }

    #[test]
    fn fresh_lease_is_up_and_rechecks_when_it_would_go_stale() {
        let h = node_health(
            &facts(Some(0), Some((true, -100))),
            &Heartbeat::default(),
            t(5),
        );
        assert_eq!(h.state, MemberState::Up);
        assert_eq!(h.recheck_at, Some(t(20)));
    }

    #[test]
    fn stale_lease_is_down_from_the_threshold() {
        let h = node_health(
            &facts(Some(0), Some((true, -100))),
            &Heartbeat::default(),
            t(20),
        );
        assert_eq!(h.state, MemberState::Down);
        assert_eq!(h.down_since, Some(t(20)));
        assert_eq!(h.reason.as_deref(), Some(reason::LEASE_STALE));
    }

    #[test]
    fn not_ready_long_enough_is_down_even_with_a_fresh_lease() {
        let h = node_health(
            &facts(Some(9), Some((false, 0))),
            &Heartbeat::default(),
            t(10),
        );
        assert_eq!(h.state, MemberState::Down);
        assert_eq!(h.reason.as_deref(), Some(reason::NODE_NOT_READY));
        let h = node_health(
            &facts(Some(9), Some((false, 0))),
            &Heartbeat::default(),
            t(9),
        );
        assert_eq!(h.state, MemberState::Up);
        assert_eq!(h.recheck_at, Some(t(10)));
    }

    #[test]
    fn fenced_and_paused() {
        let mut f = facts(Some(0), Some((true, 0)));
        f.out_of_service = true;
        assert_eq!(
            node_health(&f, &Heartbeat::default(), t(30)).state,
            MemberState::Fenced
        );
        f.out_of_service = false;
        f.unschedulable = true;
        assert_eq!(
            node_health(&f, &Heartbeat::default(), t(1)).state,
            MemberState::Paused
        );
    }

    #[test]
    fn only_our_taint_on_a_node_back_and_ready_long_enough_is_removed() {
        let hb = Heartbeat::default();
        let mut f = facts(Some(100), Some((true, 90)));
        f.out_of_service = true;
        let health = node_health(&f, &hb, t(101));
        assert_eq!(health.state, MemberState::Fenced);
        assert_eq!(unfence_at(&f, &health, 60), None, "not ours");
        f.fenced_by_controller = true;
        assert_eq!(unfence_at(&f, &health, 60), Some(t(150)));
        let silent = node_health(&f, &hb, t(130));
        assert!(silent.heartbeat_stale);
        assert_eq!(unfence_at(&f, &silent, 60), None, "silent again");
        f.ready = Some((false, t(95)));
        assert_eq!(unfence_at(&f, &node_health(&f, &hb, t(101)), 60), None);
        // Back before it was ever seen NotReady: Ready since long before the fencing,
        // healthy counted from the fencing.
        f.ready = Some((true, t(0)));
        f.fenced_at = Some(t(98));
        assert_eq!(
            unfence_at(&f, &node_health(&f, &hb, t(101)), 60),
            Some(t(158))
        );
    }

    #[test]
    fn not_ready_with_a_fresh_lease_is_down_but_never_silent() {
        let h = node_health(
            &facts(Some(9), Some((false, 0))),
            &Heartbeat::default(),
            t(10),
        );
        assert_eq!(h.state, MemberState::Down);
        assert!(!h.heartbeat_stale);
        assert_eq!(
            h.recheck_at,
            Some(t(29)),
            "looks again when the Lease would go stale"
        );
    }

    #[test]
    fn quorum_rounds_percentages_up() {
        use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
        assert_eq!(required_healthy(&IntOrString::String("51%".into()), 3), 2);
        assert_eq!(required_healthy(&IntOrString::String("51%".into()), 10), 6);
        assert_eq!(required_healthy(&IntOrString::String("100%".into()), 7), 7);
        assert_eq!(required_healthy(&IntOrString::Int(2), 10), 2);
    }
}
