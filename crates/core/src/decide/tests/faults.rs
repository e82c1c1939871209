//! `decide` under the faults of `docs/safety.md`: what it must never ask for.

use super::*;

/// Every action of `acts` that may only ever hit a fenced node.
fn fencing_actions(acts: &[Action]) -> Vec<&Action> {
    acts.iter()
        .filter(|a| {
            matches!(
                a,
                Action::Fence { .. }
                    | Action::DeletePod { force: true, .. }
                    | Action::DeleteAttachment { .. }
            )
        })
        .collect()
}

/// A node whose kubelet heartbeats (fresh Lease) but reports NotReady.
fn not_ready() -> NodeHealth {
    let mut h = down(90);
    h.heartbeat_stale = false;
    h.reason = Some(reason::NODE_NOT_READY.into());
    h
}

#[test]
fn an_owner_that_leaves_the_cluster_moves_gracefully_never_fenced() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    // Relabelled out of the cluster, still heartbeating.
    let h = obs.members.remove("a").unwrap();
    obs.outside.insert("a".into(), h);
    let acts = settle(&s, &mut st, &mut obs);
    assert!(fencing_actions(&acts).is_empty(), "{acts:?}");
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::DeletePod { force: false, .. }))
    );
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    let m = st.history.last().unwrap();
    assert!(m.planned);
    assert_eq!(m.reason, reason::NOT_A_MEMBER);
    assert_eq!(st.failover_count, 0, "leaving is not a failure");
}

#[test]
fn an_owner_missing_from_every_map_is_never_called_fenced() {
    // What an empty or partial node cache looks like to `decide`: the owner's Node is not
    // there. It is treated as deleted: a graceful move, nothing forced, no Fenced event.
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.remove("a");
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(fencing_actions(&d.actions).is_empty(), "{:?}", d.actions);
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::Event(e) if e.reason == reason::FENCED)),
        "{:?}",
        d.actions
    );
}

#[test]
fn a_not_ready_kubelet_with_a_fresh_lease_is_never_fenced() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), not_ready());
    let acts = settle(&s, &mut st, &mut obs);
    assert!(fencing_actions(&acts).is_empty(), "{acts:?}");
    assert_eq!(st.owner_node.as_deref(), Some("b"), "moved gracefully");
    assert!(st.history.last().unwrap().planned);
}

#[test]
fn a_node_back_before_it_was_fenced_keeps_its_instance() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    obs.fencing.delay_seconds = 30;
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    let seq = st.move_seq;
    obs.members.insert("a".into(), down(95));
    obs.now = t(100) + jiff::SignedDuration::from_millis(250);
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    // Through the API server, as `settle` does: `Time` keeps whole seconds.
    st = serde_json::from_value(serde_json::to_value(&d.status).unwrap()).unwrap();
    assert!(st.current_move.is_some(), "failover started");
    assert_eq!(st.failover_count, 1);
    // Heartbeats come back during the fencing delay.
    obs.members.insert("a".into(), up());
    let acts = settle(&s, &mut st, &mut obs);
    assert!(fencing_actions(&acts).is_empty(), "{acts:?}");
    assert!(st.current_move.is_none(), "the move ended");
    assert_eq!(st.owner_node.as_deref(), Some("a"));
    assert_eq!(st.move_seq, seq, "its pod keeps its name");
    assert_eq!(obs.pods.len(), 1);
    assert_eq!(
        obs.pods[0].name,
        pod_name("db", seq),
        "the old pod was never touched"
    );
    assert_eq!(st.failover_count, 0, "a false alarm is not counted");
    assert_eq!(st.phase, Phase::Online);
}

#[test]
fn fencing_mode_none_says_not_fenced() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    obs.fencing.mode = FencingMode::None;
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), down(90));
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    let reasons: Vec<&str> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some(e.reason.as_str()),
            _ => None,
        })
        .collect();
    assert!(reasons.contains(&reason::NOT_FENCED), "{reasons:?}");
    assert!(!reasons.contains(&reason::FENCED), "{reasons:?}");
    assert!(!d.actions.iter().any(|a| matches!(a, Action::Fence { .. })));
}

#[test]
fn a_self_fencing_node_is_fenced_only_after_its_self_fence_time() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    let mut silent = down(100);
    silent.self_fence = Some(jiff::SignedDuration::from_secs(10));
    obs.members.insert("a".into(), silent);
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(!d.actions.iter().any(|a| matches!(a, Action::Fence { .. })));
    assert_eq!(
        d.recheck_at,
        Some(t(110) + crate::decide::SELF_FENCE_MARGIN),
        "down since 100 + 10 s + the margin"
    );
    st = d.status;
    obs.now = t(110) + crate::decide::SELF_FENCE_MARGIN;
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(d.actions.iter().any(|a| matches!(a, Action::Fence { .. })));
}

#[test]
fn the_failover_threshold_counts_past_the_history_limit() {
    let mut s = spec(&[]);
    s.failover.threshold = Some(12);
    let names: Vec<String> = (0..14).map(|i| format!("n{i}")).collect();
    let mut obs = observed(&names.iter().map(|n| (n.as_str(), up())).collect::<Vec<_>>());
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    for round in 0..13 {
        let owner = st.owner_node.clone().unwrap();
        obs.now = t(100 + round);
        obs.members.insert(owner.clone(), down(99 + round));
        settle(&s, &mut st, &mut obs);
        // The failed node comes back (unfenced), so that the quorum holds throughout.
        obs.members.insert(owner, up());
    }
    assert_eq!(st.history.len(), HISTORY_LIMIT);
    assert_eq!(st.failover_count, 12);
    assert_eq!(
        st.phase,
        Phase::Failed,
        "the 13th failure is past the threshold of 12"
    );
}

#[test]
fn a_shared_volume_attached_elsewhere_does_not_block_a_move() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    // Another workload on c uses the same ReadWriteMany volume.
    obs.attachments.push(AttachmentFacts {
        name: "va-c".into(),
        uid: "uid-va-c".into(),
        node: "c".into(),
        shared: true,
        terminating: false,
    });
    obs.members.insert("a".into(), down(90));
    let acts = settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Online, "{acts:?}");
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    assert_eq!(obs.attachments.len(), 1, "c's attachment is left alone");
}

#[test]
fn container_restarts_are_counted_once_each() {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.pods[0].restarts = 2;
    for _ in 0..5 {
        st = decide("db", Some(1), &s, Some(&st), &obs).status;
    }
    assert_eq!(st.restarts.len(), 2, "seen five times, counted once");
    obs.pods[0].restarts = 4;
    let acts = settle(&s, &mut st, &mut obs);
    assert_eq!(
        st.owner_node.as_deref(),
        Some("b"),
        "4 restarts > threshold 3: moved ({acts:?})"
    );
    assert!(fencing_actions(&acts).is_empty());
}

/// Runs the move's rounds, carrying out what they ask, until the round that would create the
/// new pod (whose status is kept, its actions not carried out).
fn clear_the_way(
    s: &FailoverClusterInstanceSpec,
    st: &mut FailoverClusterInstanceStatus,
    obs: &mut Observed,
) {
    for _ in 0..10 {
        let d = decide("db", Some(1), s, Some(st), obs);
        *st = d.status;
        if d.actions
            .iter()
            .any(|a| matches!(a, Action::CreatePod { .. }))
        {
            return;
        }
        for a in d.actions {
            match a {
                Action::SetEndpoints(e) => obs.endpoints = e,
                Action::Fence { node, .. } => {
                    obs.members.insert(node, fenced());
                }
                Action::DeletePod { name, .. } => obs.pods.retain(|p| p.name != name),
                _ => {}
            }
        }
    }
    panic!("no pod created within ten rounds: {st:?}");
}

#[test]
fn a_pod_of_the_move_on_another_node_is_not_adopted() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), down(90));
    clear_the_way(&s, &mut st, &mut obs);
    // A deposed leader created this move's pod on c, while this one chose b.
    let name = pod_name("db", st.move_seq);
    obs.pods.push(pod(&name, "c", true));
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::DeletePod { name: n, force: false, .. } if *n == name)),
        "{:?}",
        d.actions
    );
    let m = d.status.current_move.as_ref().unwrap();
    assert!(m.pod_created.is_none());
    assert!(
        m.volumes_detached.is_none(),
        "the misplaced pod's volume must be seen detached again before a pod starts on b"
    );
}

#[test]
fn a_cordoned_owner_is_left_gracefully_when_another_node_may_take_it() {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    let mut paused = up();
    paused.state = MemberState::Paused;
    paused.reason = Some(reason::UNSCHEDULABLE.into());
    // With nowhere to go it stays, serving, and says why.
    obs.members.insert("b".into(), paused.clone());
    obs.members.insert("a".into(), paused.clone());
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::DeletePod { .. })),
        "{acts:?}"
    );
    assert_eq!(st.owner_node.as_deref(), Some("a"));
    assert!(st.conditions.iter().any(|c| c.reason == reason::NO_TARGET));
    // Once b is up it moves there, gracefully.
    obs.members.insert("b".into(), up());
    let acts = settle(&s, &mut st, &mut obs);
    assert!(fencing_actions(&acts).is_empty(), "{acts:?}");
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    assert!(st.history.last().unwrap().planned);
}

#[test]
fn a_not_ready_owner_that_then_goes_silent_is_failed_over_fenced() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), not_ready());
    // The graceful delete is asked for; the kubelet never gets to it.
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(fencing_actions(&d.actions).is_empty(), "{:?}", d.actions);
    st = d.status;
    assert!(st.current_move.as_ref().unwrap().planned);
    obs.members.insert("a".into(), down(95));
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::Fence { node, .. } if node == "a")),
        "{:?}",
        d.actions
    );
    assert!(!d.status.current_move.as_ref().unwrap().planned);
    assert_eq!(d.status.failover_count, 1);
}

/// Found by the chaos run (seed 7): a replica that took over the leadership saw every
/// Lease silent for a few seconds (0 of 6 members up) and turned two graceful moves off
/// healthy nodes into failovers. Without the quorum the silence is in doubt: the move stays
/// graceful, and nothing is counted as a failover.
#[test]
fn a_graceful_move_is_not_escalated_without_quorum() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), not_ready());
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    st = d.status;
    assert!(st.current_move.as_ref().unwrap().planned);
    // Every member looks silent at once: this controller may be the one cut off.
    for n in ["a", "b", "c"] {
        obs.members.insert(n.into(), down(95));
    }
    assert!(!obs.has_quorum());
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(fencing_actions(&d.actions).is_empty(), "{:?}", d.actions);
    let m = d.status.current_move.as_ref().unwrap();
    assert!(m.planned, "escalated without quorum: {}", m.reason);
    assert_eq!(d.status.failover_count, 0);
    assert!(d.status.failovers.is_empty());
}

/// Found by the model checker (tests/model.rs): a pod created late by a leader that was
/// paused and deposed, after the way was cleared, used to block the move for ever (the new
/// pod waits for it to go, and nothing deleted it).
#[test]
fn a_pod_created_late_after_the_way_was_cleared_is_removed_again() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    let old = obs.pods[0].name.clone();
    obs.members.insert("a".into(), down(90));
    clear_the_way(&s, &mut st, &mut obs);
    assert!(st.current_move.as_ref().unwrap().old_pod_gone.is_some());
    // The old pod comes back on c: a deposed leader's create, gone out late.
    obs.pods.push(pod(&old, "c", false));
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::DeletePod { name, force: false, .. } if *name == old)),
        "{:?}",
        d.actions
    );
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::CreatePod { .. }))
    );
    let m = d.status.current_move.as_ref().unwrap();
    assert!(m.old_pod_gone.is_none() && m.volumes_detached.is_none());
}

#[test]
fn the_self_fence_wait_counts_from_the_last_heartbeat_seen() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    // Last renewal seen at 98, stale (down) at 100: the agent stopped by 98 + 10.
    let mut silent = down(100);
    silent.self_fence = Some(jiff::SignedDuration::from_secs(10));
    silent.heartbeat_seen = Some(t(98));
    obs.members.insert("a".into(), silent);
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(!d.actions.iter().any(|a| matches!(a, Action::Fence { .. })));
    assert_eq!(
        d.recheck_at,
        Some(t(108) + crate::decide::SELF_FENCE_MARGIN),
        "seen at 98 + 10 s + the margin"
    );
}

#[test]
fn a_drained_node_counts_for_the_quorum_and_a_failover_proceeds() {
    // Three members, two needed: one drained (Paused, heartbeating), the owner dies. The
    // drained node is heard from, so the quorum holds and the instance fails over to the
    // one node that may take it.
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("a"));
    let mut paused = up();
    paused.state = MemberState::Paused;
    paused.reason = Some(reason::UNSCHEDULABLE.into());
    obs.members.insert("b".into(), paused);
    obs.members.insert("a".into(), down(90));
    assert!(obs.has_quorum(), "2 of 3 heard from, 2 required");
    settle(&s, &mut st, &mut obs);
    assert_eq!(
        st.owner_node.as_deref(),
        Some("c"),
        "never on the drained node"
    );
    // Without the drained node's heartbeat, no quorum: nothing moves.
    let mut st2 = FailoverClusterInstanceStatus::default();
    let mut obs2 = observed(&[("a", up()), ("b", up()), ("c", up())]);
    settle(&s, &mut st2, &mut obs2);
    obs2.members.insert("b".into(), down(90));
    obs2.members.insert("a".into(), down(90));
    let acts = settle(&s, &mut st2, &mut obs2);
    assert!(fencing_actions(&acts).is_empty(), "{acts:?}");
    assert_eq!(st2.owner_node.as_deref(), Some("a"));
}

#[test]
fn a_silent_kubelet_with_a_live_agent_is_fenced_only_on_the_agents_word() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    // The kubelet went silent long ago; the agent renews and has not stopped anything. A
    // self-fence time on the Node is not counted on: the agent, renewing, has not fenced.
    let mut silent = down(0);
    silent.self_fence = None;
    silent.agent = AgentHealth::Live {
        stopped_workloads: false,
    };
    // Its Lease is fresh but was last renewed before the kubelet went silent (it may have
    // gone down with its node a moment later): nothing is asked of it yet.
    silent.basis.agent_seen = Some(t(-1));
    obs.members.insert("a".into(), silent.clone());
    obs.endpoints.clear();
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::RequestWorkloadStop { .. } | Action::Fence { .. })),
        "{:?}",
        d.actions
    );
    // It renewed since the kubelet went silent: it is alive, and asked.
    silent.basis.agent_seen = Some(t(50));
    obs.members.insert("a".into(), silent.clone());
    for _ in 0..3 {
        let d = decide("db", Some(1), &s, Some(&st), &obs);
        assert!(fencing_actions(&d.actions).is_empty(), "{:?}", d.actions);
        assert!(
            d.actions
                .iter()
                .any(|a| matches!(a, Action::RequestWorkloadStop { node, .. } if node == "a")),
            "{:?}",
            d.actions
        );
        assert!(
            !d.actions
                .iter()
                .any(|a| matches!(a, Action::CreatePod { .. }))
        );
        assert!(
            d.status
                .conditions
                .iter()
                .any(|c| c.reason == reason::AWAITING_AGENT_STOP),
            "{:?}",
            d.status.conditions
        );
        st = d.status;
        obs.now += jiff::SignedDuration::from_secs(60);
    }
    // Its word: the workloads are stopped since the kubelet's last renewal. Fenced at once.
    silent.agent = AgentHealth::Live {
        stopped_workloads: true,
    };
    obs.members.insert("a".into(), silent);
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        d.actions
            .iter()
            .any(|a| matches!(a, Action::Fence { node, .. } if node == "a")),
        "{:?}",
        d.actions
    );
}

#[test]
fn a_silent_agent_whose_kubelet_heartbeats_moves_nothing() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    let mut h = up();
    h.agent = AgentHealth::Silent {
        seen: t(0),
        self_fence: Some(jiff::SignedDuration::from_secs(3)),
        before_kubelet: true,
        peer_groups: Vec::new(),
    };
    assert!(h.agent_down());
    obs.members.insert("a".into(), h);
    obs.now = t(1000);
    let acts = settle(&s, &mut st, &mut obs);
    assert!(fencing_actions(&acts).is_empty(), "{acts:?}");
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::DeletePod { .. } | Action::CreatePod { .. })),
        "{acts:?}"
    );
    assert_eq!(st.owner_node.as_deref(), Some("a"));
}

#[test]
fn an_instance_with_agent_vips_is_placed_only_where_an_agent_renews() {
    let s = spec(&["a", "b", "c"]);
    let live = || {
        let mut h = up();
        h.agent = AgentHealth::Live {
            stopped_workloads: false,
        };
        h
    };
    let mut obs = observed(&[("a", up()), ("b", live()), ("c", live())]);
    obs.needs_agent = true;
    let why = crate::decide::placement::ineligible(&obs, "a").unwrap();
    assert!(why.contains(reason::NO_AGENT), "{why}");
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b"));
}

#[test]
fn a_node_whose_agent_was_down_before_its_kubelet_went_silent_is_never_fenced() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    let mut silent = down(0);
    silent.agent = AgentHealth::Silent {
        seen: t(-100),
        self_fence: Some(jiff::SignedDuration::from_secs(3)),
        before_kubelet: true,
        peer_groups: Vec::new(),
    };
    silent.self_fence = None;
    obs.members.insert("a".into(), silent);
    obs.endpoints.clear();
    for _ in 0..3 {
        let d = decide("db", Some(1), &s, Some(&st), &obs);
        assert!(fencing_actions(&d.actions).is_empty(), "{:?}", d.actions);
        assert!(
            d.status
                .conditions
                .iter()
                .any(|c| c.reason == reason::AGENT_DOWN),
            "{:?}",
            d.status.conditions
        );
        st = d.status;
        obs.now += jiff::SignedDuration::from_secs(600);
    }
}

/// The old owner `a`, its kubelet and agent silent since 100, whose agent announced a 3 s
/// self-fence and asks its peers `a`, `b`, `c` (2 required) before it fences itself.
fn holding_owner() -> NodeHealth {
    let mut silent = down(100);
    silent.heartbeat_seen = Some(t(100));
    silent.self_fence = Some(jiff::SignedDuration::from_secs(3));
    silent.agent = AgentHealth::Silent {
        seen: t(100),
        self_fence: Some(jiff::SignedDuration::from_secs(3)),
        before_kubelet: false,
        peer_groups: vec![crate::api::PeerGroup {
            cluster: "c".into(),
            members: vec!["a".into(), "b".into(), "c".into()],
            required: 2,
            witnesses: 0,
        }],
    };
    silent
}

/// Up, its agent renewing without a break since `since`.
fn steady_peer(since: i64) -> NodeHealth {
    let mut h = up();
    h.agent = AgentHealth::Live {
        stopped_workloads: false,
    };
    h.agent_steady_since = Some(t(since));
    h
}

#[test]
fn a_node_whose_agent_asks_its_peers_is_fenced_only_once_enough_of_them_renewed_steadily_for_its_self_fence_time()
 {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    // b's agent was cut off too and is back since 108: until 108 + 3 s + the margin, a's
    // agent may have held on b's word; c alone is not a quorum of 2.
    obs.members.insert("a".into(), holding_owner());
    obs.members.insert("b".into(), steady_peer(108));
    obs.members.insert("c".into(), steady_peer(0));
    obs.now = t(109);
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(fencing_actions(&d.actions).is_empty(), "{:?}", d.actions);
    let regained = t(108) + jiff::SignedDuration::from_secs(3) + crate::decide::SELF_FENCE_MARGIN;
    assert_eq!(d.recheck_at, Some(regained), "b steady for the whole wait");
    st = d.status;
    obs.now = regained;
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        d.actions.iter().any(|a| matches!(a, Action::Fence { .. })),
        "{:?}",
        d.actions
    );
}

#[test]
fn a_node_whose_agent_may_be_holding_on_its_peers_word_is_not_fenced() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    // b's kubelet heartbeats (the cluster has its quorum) but its agent has not renewed
    // steadily: it may have told a it is cut off, and a holds. Never fenced on a's
    // self-fence, however long.
    let mut b = up();
    b.agent = AgentHealth::Live {
        stopped_workloads: false,
    };
    b.agent_steady_since = None;
    obs.members.insert("a".into(), holding_owner());
    obs.members.insert("b".into(), b);
    obs.endpoints.clear();
    obs.members.insert("c".into(), steady_peer(0));
    for now in [110, 200, 10_000] {
        obs.now = t(now);
        let d = decide("db", Some(1), &s, Some(&st), &obs);
        assert!(fencing_actions(&d.actions).is_empty(), "{:?}", d.actions);
        assert!(
            d.status
                .conditions
                .iter()
                .any(|c| c.reason == reason::PEERS_CUT_OFF),
            "{:?}",
            d.status.conditions
        );
        st = d.status;
    }
    // A member without an agent never answers, so a counts it reachable: so does this.
    let mut no_agent = up();
    no_agent.agent = AgentHealth::Absent;
    obs.members.insert("b".into(), no_agent);
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        d.actions.iter().any(|a| matches!(a, Action::Fence { .. })),
        "{:?}",
        d.actions
    );
}

#[test]
fn in_a_two_node_cluster_a_silent_agent_is_counted_on_only_while_its_peer_and_the_witness_were_steady()
 {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up())]);
    let witness = |heard: bool, since: i64| crate::decide::quorum::WitnessVote {
        name: "Lease kube-failover-witness-c".into(),
        heard,
        reason: None,
        steady_since: heard.then(|| t(since)),
        recheck_at: None,
    };
    obs.witness = Some(witness(true, 0));
    obs.quorum_required = 2;
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    let mut a = holding_owner();
    if let AgentHealth::Silent { peer_groups, .. } = &mut a.agent {
        peer_groups[0].cluster = s.cluster_ref.clone();
        peer_groups[0].members = vec!["a".into(), "b".into()];
        peer_groups[0].witnesses = 1;
    }
    obs.members.insert("a".into(), a);
    obs.members.insert("b".into(), steady_peer(0));
    obs.endpoints.clear();
    // b and the witness steady for the whole wait: a's agent has fenced itself.
    obs.now = t(110);
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        d.actions.iter().any(|a| matches!(a, Action::Fence { .. })),
        "{:?}",
        d.actions
    );
    // The witness renewed steadily only since 108: a quorum of steady votes (b and the
    // witness) only from 108 + 3 s + the margin.
    obs.witness = Some(witness(true, 108));
    obs.now = t(109);
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(fencing_actions(&d.actions).is_empty(), "{:?}", d.actions);
    // Witness not heard: one vote of three, no quorum, nothing fenced however long.
    obs.witness = Some(witness(false, 0));
    for now in [110, 10_000] {
        obs.now = t(now);
        let d = decide("db", Some(1), &s, Some(&st), &obs);
        assert!(fencing_actions(&d.actions).is_empty(), "{:?}", d.actions);
        assert!(
            d.status
                .conditions
                .iter()
                .any(|c| c.reason == reason::QUORUM_LOST),
            "{:?}",
            d.status.conditions
        );
    }
}

#[test]
fn a_settled_instance_looks_again_only_at_its_owners_deadline_and_a_moving_one_on_its_own() {
    let s = spec(&["a", "b", "c"]);
    let mut owner = up();
    owner.recheck_at = Some(t(140));
    let mut obs = observed(&[("a", owner.clone()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    let on = st.owner_node.clone().unwrap();
    obs.members.insert(on.clone(), owner);
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert_eq!(d.status.phase, Phase::Online);
    assert!(d.recheck_for_owner, "only its owner's deadline");
    assert_eq!(d.recheck_at, obs.members[&on].recheck_at);
    // Its owner silent: the move looks again on its own steps' times.
    obs.members.insert(on, down(100));
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(d.status.current_move.is_some());
    assert!(!d.recheck_for_owner);
}
