//! Restarts, failback, priorities, virtual IP grants, placement reasons, and the operator's
//! start, stop and move.

use super::*;
#[test]
fn restarts_in_place_then_moves_after_the_threshold() {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    for round in 1..=3 {
        // Each restart in place is a new pod of the same name (a new UID).
        obs.pods[0].uid = format!("uid-restart-{round}");
        obs.pods[0].failed = true;
        let d = decide("db", Some(1), &s, Some(&st), &obs);
        assert!(
            d.actions.contains(&Action::DeletePod {
                name: "db-1".into(),
                uid: format!("uid-restart-{round}"),
                force: false
            }),
            "restart {round} in place: {:?}",
            d.actions
        );
        assert!(d.status.current_move.is_none());
        st = d.status;
        obs.pods[0].failed = false;
    }
    assert_eq!(st.restarts.len(), 3);
    obs.pods[0].uid = "uid-restart-4".into();
    obs.pods[0].failed = true;
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::CreatePod { node, .. } if node == "b")),
        "{acts:?}"
    );
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Fence { .. })),
        "a planned move does not fence: {acts:?}"
    );
    let m = st.history.last().unwrap();
    assert!(m.planned);
    assert_eq!(m.reason, reason::RESTART_THRESHOLD_EXCEEDED);
    assert_eq!(
        st.failover_count, 0,
        "planned moves do not count as failovers"
    );
}

#[test]
fn failback_follows_the_policy() {
    let mut s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), down(90));
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    // a comes back, but fenced nodes stay fenced until a person clears the taint.
    obs.members.insert("a".into(), up());
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        acts.is_empty(),
        "Never (the default) does not fail back: {acts:?}"
    );
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    s.failback.mode = FailbackMode::Immediate;
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("a"), "Immediate fails back");
    assert_eq!(st.history.last().unwrap().reason, reason::FAILBACK);
}

#[test]
fn no_auto_start_stays_offline() {
    let mut s = spec(&["a"]);
    s.priority = Priority::NoAutoStart;
    let mut obs = observed(&[("a", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    let acts = settle(&s, &mut st, &mut obs);
    assert!(acts.is_empty());
    assert_eq!(st.phase, Phase::Offline);
}

#[test]
fn lower_priority_waits_for_higher_priority_to_start() {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    obs.higher_priority_starting = true;
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::CreatePod { .. })),
        "{acts:?}"
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.reason == reason::WAITING_FOR_HIGHER_PRIORITY)
    );
    obs.higher_priority_starting = false;
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        acts.iter().any(|a| matches!(a, Action::CreatePod { .. })),
        "{acts:?}"
    );
}

#[test]
fn new_owner_failing_before_online_starts_a_new_failover() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[
        ("a", up()),
        ("b", up()),
        ("c", up()),
        ("d", up()),
        ("e", up()),
    ]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), down(90));
    // Run until the new pod exists on b but is not ready yet.
    until_pod_created(&s, &mut st, &mut obs);
    assert_eq!(
        st.current_move
            .as_ref()
            .and_then(|m| m.to.clone())
            .as_deref(),
        Some("b")
    );
    obs.members.insert("b".into(), down(95));
    for p in &mut obs.pods {
        p.ready = true;
    }
    settle(&s, &mut st, &mut obs);
    assert_eq!(
        st.owner_node.as_deref(),
        Some("c"),
        "moved on from the failed new owner"
    );
    assert_eq!(st.phase, Phase::Online);
    assert_eq!(obs.pods.len(), 1);
}

#[test]
fn agent_vips_go_to_the_new_owner_only_once_the_old_one_released_them() {
    let mut s = spec(&["a", "b", "c"]);
    s.vip_mode = crate::api::VipMode::Agent;
    s.virtual_ips = vec!["192.0.2.10".into()];
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    let vip_node = |st: &FailoverClusterInstanceStatus| st.served.as_ref()?.vip_node.clone();
    assert_eq!(
        vip_node(&st).as_deref(),
        Some("a"),
        "granted to the owner once online"
    );
    // a's agent brought them up; a goes silent and is not yet known to have dropped them.
    obs.vip_holders.insert("a".into());
    obs.members.insert("a".into(), down(90));
    settle(&s, &mut st, &mut obs);
    let m = st.current_move.clone().expect("the move waits");
    assert_eq!(vip_node(&st), None, "nobody holds the grant during a move");
    assert_eq!(m.vip_released, None);
    assert!(
        st.conditions
            .iter()
            .any(|c| c.reason == reason::AWAITING_VIP_RELEASE && c.message.contains('a')),
        "{:?}",
        st.conditions
    );
    assert!(
        obs.endpoints.is_empty(),
        "nothing published before the release"
    );
    // a's agent dropped them (or its self-fence time passed), but an agent that read the
    // grant just before the move began may not have said so yet: the handover waits.
    obs.vip_holders.clear();
    settle(&s, &mut st, &mut obs);
    let handover = m.started.0 + crate::decide::GRANT_HANDOVER;
    assert!(obs.now < handover);
    assert_eq!(st.phase, Phase::Moving, "not before the handover time");
    assert!(obs.endpoints.is_empty());
    obs.now = handover;
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Online);
    assert_eq!(vip_node(&st).as_deref(), Some("b"));
    let m = st.history.last().unwrap();
    assert!(
        m.vip_released.is_some() && m.vip_released <= m.online,
        "{m:?}"
    );
}

#[test]
fn other_vip_modes_grant_nothing() {
    let mut s = spec(&["a"]);
    s.virtual_ips = vec!["192.0.2.10".into()];
    let mut obs = observed(&[("a", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Online);
    assert_eq!(st.served.as_ref().unwrap().vip_node, None);
}

#[test]
fn placement_says_why_a_preferred_owner_was_skipped() {
    let s = spec(&["a", "b", "z"]);
    let obs = observed(&[("a", down(0)), ("b", up())]);
    let d = decide("db", Some(1), &s, None, &obs);
    let said: Vec<&str> = d
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(e) if e.reason == reason::PLACEMENT => Some(e.message.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(said, ["placing on b; skipped a: Down (LeaseStale)"]);

    // Nowhere to go: the condition names each preferred owner and why not.
    let obs = observed(&[("a", down(0)), ("b", fenced())]);
    let d = decide("db", Some(1), &s, None, &obs);
    let online = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::ONLINE)
        .unwrap();
    assert_eq!(online.reason, reason::NO_ELIGIBLE_OWNER);
    assert!(
        online.message.contains("a: Down (LeaseStale)")
            && online.message.contains("b: Fenced (LeaseStale)")
            && online.message.contains("z: not a member"),
        "{}",
        online.message
    );
}

/// Issue found trying it as a new user: `PHASE` said `Online` while the pod was not ready
/// and its endpoint withdrawn. It says `Degraded` now; the owner keeps the instance and its
/// virtual IPs (no flapping of the address while the pod recovers).
#[test]
fn a_pod_not_ready_on_its_owner_is_degraded_not_online() {
    let mut s = spec(&["a", "b"]);
    s.vip_mode = crate::api::VipMode::Agent;
    s.virtual_ips = vec!["192.0.2.10".into()];
    let mut obs = observed(&[("a", up()), ("b", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Online);
    obs.pods[0].ready = false;
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Degraded);
    assert!(obs.endpoints.is_empty(), "endpoint withdrawn");
    assert_eq!(st.owner_node.as_deref(), Some("a"), "the owner keeps it");
    assert_eq!(
        st.served.as_ref().unwrap().vip_node.as_deref(),
        Some("a"),
        "and its virtual IPs"
    );
    let online = st.conditions.iter().find(|c| c.type_ == "Online").unwrap();
    assert_eq!(
        (online.status.as_str(), online.reason.as_str()),
        ("False", reason::NOT_READY)
    );
    obs.pods[0].ready = true;
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Online);
    assert!(!obs.endpoints.is_empty(), "published again");
}

/// `kubectl failover start` on a Failed instance: its failover count is reset and it fails
/// over; the same request seen again does nothing more.
#[test]
fn start_brings_a_failed_instance_online_with_its_count_reset() {
    let mut s = spec(&["a", "b", "c"]);
    s.failover.threshold = Some(1);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), down(90));
    settle(&s, &mut st, &mut obs);
    obs.members.insert("b".into(), down(95));
    obs.members.insert("d".into(), up());
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Failed);
    assert_eq!(st.failover_count, 1);
    obs.requests.start = Some("2026-11-22T19:00:00Z".into());
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Online);
    assert_eq!(st.owner_node.as_deref(), Some("c"));
    assert_eq!(st.start_request.as_deref(), Some("2026-11-22T19:00:00Z"));
    assert_eq!(
        st.failover_count, 1,
        "the failover it just did, counted afresh"
    );
    // The request stays on the instance; it is not acted on twice.
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::Event(e) if e.reason == reason::START_REQUESTED)),
        "{:?}",
        d.actions
    );
}

/// `kubectl failover stop` then `start`: the pod is stopped gracefully and the endpoint
/// withdrawn, nothing is fenced, the instance has no owner while offline; started, it comes
/// back on its preferred owner. A `NoAutoStart` instance is placed once started.
#[test]
fn stop_takes_it_offline_gracefully_and_start_brings_it_back() {
    let mut s = spec(&["a", "b"]);
    s.priority = Priority::NoAutoStart;
    let mut obs = observed(&[("a", up()), ("b", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Offline, "NoAutoStart");
    obs.requests.start = Some("t1".into());
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Online);
    assert_eq!(st.owner_node.as_deref(), Some("a"));

    obs.requests.offline = true;
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::DeletePod { force: false, .. })),
        "{acts:?}"
    );
    assert!(
        !acts.iter().any(|a| matches!(
            a,
            Action::Fence { .. } | Action::DeletePod { force: true, .. } | Action::CreatePod { .. }
        )),
        "{acts:?}"
    );
    assert_eq!(st.phase, Phase::Offline);
    assert_eq!(st.owner_node, None);
    assert!(obs.endpoints.is_empty() && obs.pods.is_empty());
    let online = st.conditions.iter().find(|c| c.type_ == "Online").unwrap();
    assert_eq!(online.reason, reason::STOPPED);

    obs.requests.offline = false;
    obs.requests.start = Some("t2".into());
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Online);
    assert_eq!(st.owner_node.as_deref(), Some("a"));
    assert!(!obs.endpoints.is_empty());
}

/// `kubectl failover move`: a planned move to the node asked for, nothing fenced; failback
/// does not undo it; a target that cannot take the instance is refused, saying why.
#[test]
fn a_requested_move_is_planned_sticks_and_is_refused_to_a_down_node() {
    let mut s = spec(&["a", "b", "c"]);
    s.failback.mode = crate::api::FailbackMode::Immediate;
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", down(90))]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("a"));

    obs.requests.moves = Some(("t1".into(), Some("c".into())));
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(d.status.current_move.is_none());
    assert!(
        d.actions.iter().any(|a| matches!(a, Action::Event(e)
            if e.reason == reason::MOVE_REFUSED && e.message.contains("c cannot take it: Down"))),
        "{:?}",
        d.actions
    );
    st = d.status;
    assert_eq!(st.move_request.as_deref(), Some("t1"));

    obs.requests.moves = Some(("t2".into(), Some("b".into())));
    let acts = settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    assert_eq!(st.phase, Phase::Online);
    let m = st.history.last().unwrap();
    assert!(
        m.planned && m.reason == reason::MOVE_REQUESTED && m.fenced.is_none(),
        "{m:?}"
    );
    assert!(
        !acts.iter().any(|a| matches!(
            a,
            Action::Fence { .. } | Action::DeletePod { force: true, .. }
        )),
        "{acts:?}"
    );
    // Failback (Immediate, a preferred over b) leaves an operator's move alone.
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    assert!(st.moved_by_operator);
}
