//! Node health and quorum, as pure functions of what the API server says and the clock.

use jiff::{SignedDuration, Timestamp};

use crate::api::{Heartbeat, MemberState, PeerGroup, reason};
use crate::rules::kubelet_lease_stale_seconds;

/// What the controller needs to know of a node, read from its Node object and its Lease.
///
/// Every time here is on the controller's own clock: when the controller *saw* the Lease
/// renewed or the Ready condition change, never a timestamp written by another machine
/// (see `controller::heartbeats`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    pub name: String,
    /// When the controller saw the current renewal of the kubelet's Lease in
    /// `kube-node-lease`, if it has one.
    pub lease_renewed: Option<Timestamp>,
    /// The node agent's Lease, if the node has one.
    pub agent: Option<AgentFacts>,
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
    /// How long after the kubelet's last renewal something on the node other than the agent
    /// (a watchdog, another fencer) has stopped its workloads
    /// (`kube-failover.io/self-fence-seconds` on the Node).
    pub self_fence: Option<SignedDuration>,
}

/// What the controller knows of a node's agent, from its Lease
/// (`kube-node-lease/kube-failover-agent-<node>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentFacts {
    /// When the controller saw its Lease's current renewal.
    pub renewed: Timestamp,
    /// How long after its last renewal the agent has stopped the instance workloads of its
    /// node when it cannot renew (`kube-failover.io/self-fence-seconds` on its Lease).
    pub self_fence: Option<SignedDuration>,
    /// The agent attests that the instance workloads of its node are stopped and kept
    /// stopped since the kubelet's current renewal (`kube-failover.io/workloads-stopped`
    /// names the kubelet Lease's `renewTime` as it is now): the kubelet has not been heard
    /// from since.
    pub stopped_workloads: bool,
    /// Since when the controller has seen the agent renew without a break (no two renewals
    /// further apart than its Lease's duration, and the last within it); `None` while it
    /// does not.
    pub steady_since: Option<Timestamp>,
    /// The peer groups the agent consults before it fences itself, as its Lease says
    /// ([`crate::api::PEER_GROUPS_ANNOTATION`]).
    pub peer_groups: Vec<PeerGroup>,
}

/// What a round saw of a node's heartbeats: when the controller saw the current renewal of
/// the kubelet's Lease and of the agent's (on its own clock). Fencing acts on a round's
/// word only while the Leases are as that round saw them: the last check before the taint
/// compares the Leases read fresh with this, not with a cache that may have caught up since.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeartbeatBasis {
    pub kubelet_seen: Option<Timestamp>,
    pub agent_seen: Option<Timestamp>,
}

/// The verdict on a node's agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AgentHealth {
    /// The node has no agent Lease: no agent runs there (or never has).
    #[default]
    Absent,
    /// Renewing. `stopped_workloads`: see [`AgentFacts::stopped_workloads`].
    Live { stopped_workloads: bool },
    /// Not renewed for the threshold: crashed, restarting, rolled out, or cut off with its
    /// node. `seen`: when its last renewal was seen; `self_fence`: what it announced.
    /// `before_kubelet`: the kubelet still renewed after the agent had been silent for the
    /// threshold: the agent went down on its own (a crash, a restart), not with its node,
    /// and cannot have fenced itself since: its self-fence time is not counted on.
    Silent {
        seen: Timestamp,
        self_fence: Option<SignedDuration>,
        before_kubelet: bool,
        /// The peers it asks before it fences itself, and holds while they too are cut off.
        peer_groups: Vec<PeerGroup>,
    },
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
    /// What this verdict was made from, for the last check before fencing.
    pub basis: HeartbeatBasis,
    /// When the self-fence timer (`self_fence`) started at the latest: the last renewal
    /// seen of the Lease whose silence starts it (the agent's, or the kubelet's for a
    /// self-fence time announced on the Node).
    pub heartbeat_seen: Option<Timestamp>,
    /// The node's agent.
    pub agent: AgentHealth,
    /// See [`AgentFacts::steady_since`].
    pub agent_steady_since: Option<Timestamp>,
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

    /// The agent is silent while the kubelet heartbeats: the agent's own fault (a crash, a
    /// restart, a rollout), never a reason to fence or fail over; its virtual IPs may still
    /// be up and are granted nowhere else until it is back or the node is fenced.
    pub fn agent_down(&self) -> bool {
        !self.heartbeat_stale && matches!(self.agent, AgentHealth::Silent { .. })
    }

    /// The agent renews its Lease.
    pub fn agent_live(&self) -> bool {
        matches!(self.agent, AgentHealth::Live { .. })
    }
}

fn secs(s: u32) -> SignedDuration {
    SignedDuration::from_secs(i64::from(s))
}

/// Judges a node. A node is Down when its kubelet's Lease has not been renewed for the
/// threshold, or its Ready condition has been False/Unknown for `notReadySeconds`, whichever
/// comes first. A node with neither a Lease nor a Ready condition has never reported and is
/// not Up either.
///
/// The agent's Lease is a second heartbeat, never a replacement: an agent silent while the
/// kubelet renews is the agent's fault ([`NodeHealth::agent_down`]), not the node's. With
/// `heartbeat.source: Agent` the kubelet's Lease is judged no faster than a kubelet renews
/// ([`kubelet_lease_stale_seconds`]) and the agent's with `leaseStaleSeconds`; a node
/// without a kubelet Lease is judged by its agent's alone.
pub fn node_health(facts: &NodeFacts, hb: &Heartbeat, now: Timestamp) -> NodeHealth {
    let agent_deadline = facts
        .agent
        .as_ref()
        .map(|a| a.renewed + secs(hb.lease_stale_seconds));
    let agent = match &facts.agent {
        None => AgentHealth::Absent,
        Some(a) if agent_deadline.is_some_and(|d| d <= now) => AgentHealth::Silent {
            seen: a.renewed,
            self_fence: a.self_fence,
            before_kubelet: agent_deadline
                .zip(facts.lease_renewed)
                .is_some_and(|(d, k)| k > d),
            peer_groups: a.peer_groups.clone(),
        },
        Some(a) => AgentHealth::Live {
            stopped_workloads: a.stopped_workloads,
        },
    };
    let lease_deadline = match facts.lease_renewed {
        Some(t) => Some(t + secs(kubelet_lease_stale_seconds(hb))),
        None => agent_deadline,
    };
    // The self-fence timer the controller may count on: the agent's, when the agent itself
    // is silent (it fences itself when it cannot renew); a live agent's never (it renews,
    // so it has not fenced itself: the controller waits for its word instead). Without an
    // agent, what the Node announces, counted from the kubelet's last renewal.
    let (self_fence, heartbeat_seen) = match &agent {
        AgentHealth::Silent {
            before_kubelet: true,
            ..
        } => (None, facts.lease_renewed),
        AgentHealth::Silent {
            seen, self_fence, ..
        } => (*self_fence, Some(*seen)),
        AgentHealth::Live { .. } => (None, facts.lease_renewed),
        AgentHealth::Absent => (facts.self_fence, facts.lease_renewed),
    };
    let basis = HeartbeatBasis {
        kubelet_seen: facts.lease_renewed,
        agent_seen: facts.agent.as_ref().map(|a| a.renewed),
    };
    let agent_steady_since = facts.agent.as_ref().and_then(|a| a.steady_since);
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
    if facts.lease_renewed.is_none() && facts.agent.is_none() && facts.ready.is_none() {
        return NodeHealth {
            state: MemberState::Down,
            down_since: None,
            reason: Some(reason::NEVER_REPORTED.into()),
            recheck_at: None,
            heartbeat_stale: false,
            self_fence,
            heartbeat_seen,
            agent,
            agent_steady_since,
            basis,
        };
    }
    let heartbeat_stale = lease_deadline.is_some_and(|d| d <= now);
    // The agent's Lease going stale changes the verdict too (AgentDown), without any event.
    let agent_recheck = agent_deadline.filter(|d| *d > now);
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
            recheck_at: [lease_deadline.filter(|d| *d > now), agent_recheck]
                .into_iter()
                .flatten()
                .min(),
            heartbeat_stale,
            self_fence,
            heartbeat_seen,
            agent,
            agent_steady_since,
            basis,
        };
    }
    let recheck_at = [lease_deadline, not_ready_deadline, agent_deadline]
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
        self_fence,
        heartbeat_seen,
        agent,
        agent_steady_since,
        basis,
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
    use crate::api::{HeartbeatSource, KUBELET_LEASE_STALE_FLOOR};

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
            agent: None,
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

    fn agent(renewed: i64) -> Option<AgentFacts> {
        Some(AgentFacts {
            renewed: t(renewed),
            self_fence: Some(SignedDuration::from_secs(3)),
            stopped_workloads: false,
            steady_since: Some(t(renewed)),
            peer_groups: Vec::new(),
        })
    }

    #[test]
    fn a_silent_agent_with_a_heartbeating_kubelet_is_agent_down_never_down() {
        for source in [HeartbeatSource::Kubelet, HeartbeatSource::Agent] {
            let hb = Heartbeat {
                source,
                lease_stale_seconds: 3,
                ..Heartbeat::default()
            };
            let mut f = facts(Some(99), Some((true, 0)));
            f.agent = agent(50);
            let h = node_health(&f, &hb, t(100));
            assert_eq!(h.state, MemberState::Up, "{source:?}");
            assert!(!h.heartbeat_stale);
            assert!(h.agent_down());
        }
    }

    #[test]
    fn a_silent_kubelet_with_a_live_agent_is_down_and_counts_on_no_self_fence() {
        let hb = Heartbeat {
            lease_stale_seconds: 3,
            ..Heartbeat::default()
        };
        let mut f = facts(Some(50), Some((true, 0)));
        f.agent = agent(99);
        f.self_fence = Some(SignedDuration::from_secs(5));
        let h = node_health(&f, &hb, t(100));
        assert_eq!(h.state, MemberState::Down);
        assert!(h.heartbeat_stale);
        assert!(!h.agent_down());
        assert_eq!(
            h.agent,
            AgentHealth::Live {
                stopped_workloads: false
            }
        );
        assert_eq!(h.self_fence, None, "a renewing agent has not fenced itself");
    }

    #[test]
    fn both_silent_counts_the_agents_self_fence_from_its_last_renewal() {
        let hb = Heartbeat {
            lease_stale_seconds: 3,
            ..Heartbeat::default()
        };
        let mut f = facts(Some(50), Some((true, 0)));
        f.agent = agent(60);
        let h = node_health(&f, &hb, t(100));
        assert_eq!(h.state, MemberState::Down);
        assert_eq!(h.down_since, Some(t(53)));
        assert_eq!(h.self_fence, Some(SignedDuration::from_secs(3)));
        assert_eq!(h.heartbeat_seen, Some(t(60)));
    }

    #[test]
    fn an_agent_down_before_its_kubelet_went_silent_has_no_self_fence_counted() {
        let hb = Heartbeat {
            lease_stale_seconds: 3,
            ..Heartbeat::default()
        };
        // The agent's last renewal at 10, the kubelet's at 50: the agent was silent for
        // its threshold (13) while the kubelet renewed. Both silent now.
        let mut f = facts(Some(50), Some((true, 0)));
        f.agent = agent(10);
        let h = node_health(&f, &hb, t(100));
        assert!(h.heartbeat_stale);
        assert!(matches!(
            h.agent,
            AgentHealth::Silent {
                before_kubelet: true,
                ..
            }
        ));
        assert_eq!(h.self_fence, None);
        // Both went silent together (a cut, a power-off): its self-fence counts.
        let mut f = facts(Some(50), Some((true, 0)));
        f.agent = agent(49);
        let h = node_health(&f, &hb, t(100));
        assert_eq!(h.self_fence, Some(SignedDuration::from_secs(3)));
        assert_eq!(h.heartbeat_seen, Some(t(49)));
    }

    #[test]
    fn with_the_agent_source_the_kubelet_is_judged_no_faster_than_it_renews() {
        let hb = Heartbeat {
            source: HeartbeatSource::Agent,
            lease_stale_seconds: 3,
            ..Heartbeat::default()
        };
        let mut f = facts(Some(90), Some((true, 0)));
        f.agent = agent(90);
        // Both silent for 10 s: the agent's 3 s are past, the kubelet's floor is not.
        let h = node_health(&f, &hb, t(100));
        assert!(!h.heartbeat_stale);
        assert!(h.agent_down());
        let h = node_health(&f, &hb, t(90 + i64::from(KUBELET_LEASE_STALE_FLOOR)));
        assert!(h.heartbeat_stale);
        assert_eq!(h.state, MemberState::Down);
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
