use super::*;
use crate::api::{
    FailbackMode, FailoverClusterInstanceSpec, FencingMode, MemberState, Phase, Priority, reason,
};
use proptest::prelude::*;

mod faults;

fn t(s: i64) -> Timestamp {
    Timestamp::from_second(1_700_000_000 + s).unwrap()
}

fn spec(preferred: &[&str]) -> FailoverClusterInstanceSpec {
    serde_json::from_value(serde_json::json!({
        "clusterRef": "c",
        "networkName": {"name": "db", "ports": [{"name": "sql", "port": 5432}]},
        "template": {"spec": {"containers": [{"name": "db", "image": "db"}]}},
        "owners": {"preferred": preferred},
    }))
    .unwrap()
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
    }
}

fn down(since: i64) -> NodeHealth {
    NodeHealth {
        state: MemberState::Down,
        down_since: Some(t(since)),
        reason: Some(reason::LEASE_STALE.into()),
        recheck_at: None,
        heartbeat_stale: true,
        self_fence: None,
        heartbeat_seen: None,
    }
}

fn fenced() -> NodeHealth {
    NodeHealth {
        state: MemberState::Fenced,
        down_since: Some(t(0)),
        reason: Some(reason::LEASE_STALE.into()),
        recheck_at: None,
        heartbeat_stale: true,
        self_fence: None,
        heartbeat_seen: None,
    }
}

fn observed(members: &[(&str, NodeHealth)]) -> Observed {
    Observed {
        now: t(100),
        cluster_found: true,
        members: members
            .iter()
            .map(|(n, h)| (n.to_string(), h.clone()))
            .collect(),
        quorum_required: (members.len() as u32 * 51).div_ceil(100),
        fencing: Fencing::default(),
        pods: Vec::new(),
        attachments: Vec::new(),
        pinned_claims: BTreeMap::new(),
        missing_claims: Vec::new(),
        endpoints: Vec::new(),
        outside: BTreeMap::new(),
        service_current: true,
        service_taken: false,
        namespace_allowed: true,
        higher_priority_starting: false,
        neighbours: Default::default(),
        dns_name: "db.ns.svc".into(),
        vip_holders: Default::default(),
        requests: Default::default(),
    }
}

fn pod(name: &str, node: &str, ready: bool) -> PodFacts {
    PodFacts {
        name: name.into(),
        uid: format!("uid-{name}"),
        restarts: 0,
        node: Some(node.into()),
        ready,
        ip: Some(format!("10.0.0.{}", name.len())),
        terminating: false,
        failed: false,
    }
}

/// Runs rounds, feeding back each decision's status and simulating what the API server and
/// Kubernetes' controllers would do with each action, until nothing is left to do.
fn settle(
    spec: &FailoverClusterInstanceSpec,
    status: &mut FailoverClusterInstanceStatus,
    obs: &mut Observed,
) -> Vec<Action> {
    let mut all = Vec::new();
    for _ in 0..20 {
        let mut d = decide("db", Some(1), spec, Some(status), obs);
        // As through the API server: times lose what their format does not keep.
        d.status = serde_json::from_value(serde_json::to_value(&d.status).unwrap()).unwrap();
        let changed = d.status != *status;
        *status = d.status;
        let acts: Vec<Action> = d
            .actions
            .into_iter()
            .filter(|a| {
                !matches!(
                    a,
                    Action::Event(_) | Action::EnsureService | Action::EnsureClaims
                )
            })
            .collect();
        if acts.is_empty() && !changed {
            break;
        }
        for a in &acts {
            match a {
                Action::SetEndpoints(e) => obs.endpoints = e.clone(),
                Action::Fence { node } => obs
                    .members
                    .insert(node.clone(), fenced())
                    .map(|_| ())
                    .unwrap_or(()),
                Action::DeletePod { name, .. } => obs.pods.retain(|p| &p.name != name),
                Action::DeleteAttachment { name, .. } => {
                    obs.attachments.retain(|a| &a.name != name)
                }
                Action::CreatePod { node, seq } => {
                    obs.pods.push(pod(&pod_name("db", *seq), node, true))
                }
                _ => {}
            }
        }
        all.extend(acts);
    }
    all
}

#[test]
fn places_on_first_healthy_preferred_owner() {
    let s = spec(&["b", "a"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    let acts = settle(&s, &mut st, &mut obs);
    assert!(acts.contains(&Action::CreatePod {
        node: "b".into(),
        seq: 1
    }));
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    assert_eq!(st.phase, Phase::Online);
    assert_eq!(obs.endpoints.len(), 1);
    assert_eq!(st.history.len(), 1);
    assert_eq!(st.failover_count, 0, "placement is not a failover");
}

#[test]
fn fails_over_in_order_fence_delete_detach_create_publish() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), down(90));
    obs.attachments.push(AttachmentFacts {
        name: "va-1".into(),
        uid: "uid-va-1".into(),
        node: "a".into(),
        shared: false,
    });
    let acts = settle(&s, &mut st, &mut obs);
    let pos = |f: &dyn Fn(&Action) -> bool| acts.iter().position(f).expect("action present");
    let withdraw = pos(&|a| a == &Action::SetEndpoints(vec![]));
    let fence = pos(&|a| matches!(a, Action::Fence { node } if node == "a"));
    let delete = pos(&|a| matches!(a, Action::DeletePod { force: true, .. }));
    let detach = pos(&|a| matches!(a, Action::DeleteAttachment { .. }));
    let create = pos(&|a| matches!(a, Action::CreatePod { node, seq: 2 } if node == "b"));
    assert!(
        withdraw < fence && fence < delete && delete < detach && detach < create,
        "{acts:?}"
    );
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    assert_eq!(st.phase, Phase::Online);
    // One line per move, for `kubectl describe`.
    assert_eq!(st.history_summary.len(), 2);
    assert!(
        st.history_summary[0].ends_with("placement on a (Placement), 0.0 s"),
        "{:?}",
        st.history_summary
    );
    assert!(
        st.history_summary[1].contains("  failover from a to b (NodeDown: LeaseStale), "),
        "{:?}",
        st.history_summary
    );
    let m = st.history.last().unwrap();
    assert!(!m.planned);
    for step in [
        &m.endpoint_withdrawn,
        &m.fenced,
        &m.old_pod_gone,
        &m.volumes_detached,
        &m.pod_created,
        &m.online,
    ] {
        assert!(step.is_some(), "every step timed: {m:?}");
    }
    assert_eq!(st.failover_count, 1);
}

#[test]
fn no_failover_without_quorum() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), down(90));
    obs.members.insert("b".into(), down(90));
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        !acts.iter().any(|a| matches!(
            a,
            Action::CreatePod { .. } | Action::Fence { .. } | Action::DeletePod { .. }
        )),
        "{acts:?}"
    );
    assert_eq!(st.owner_node.as_deref(), Some("a"));
    assert_eq!(st.phase, Phase::Unknown);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::SetEndpoints(_))),
        "the endpoint stays: the owner may be serving"
    );
    assert!(
        st.conditions
            .iter()
            .any(|c| c.type_ == condition::ONLINE && c.reason == reason::QUORUM_LOST)
    );
}

#[test]
fn failover_threshold_leaves_the_instance_failed() {
    let mut s = spec(&["a", "b", "c"]);
    s.failover.threshold = Some(1);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), down(90));
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    obs.members.insert("b".into(), down(95));
    obs.members.insert("d".into(), up());
    let acts = settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Failed);
    assert!(!acts.iter().any(|a| matches!(a, Action::CreatePod { .. })));
}

#[test]
fn pinned_volume_stays_down() {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    obs.pinned_claims.insert("data".into(), "a".into());
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("a"));
    obs.members.insert("a".into(), down(90));
    let acts = settle(&s, &mut st, &mut obs);
    assert!(!acts.iter().any(|a| matches!(a, Action::CreatePod { .. })));
    assert!(
        st.conditions
            .iter()
            .any(|c| c.reason == reason::VOLUME_PINNED_TO_NODE)
    );
}

#[test]
fn external_fencing_waits_for_the_fencer() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    obs.fencing.mode = FencingMode::External;
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), down(90));
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::Fence { .. } | Action::CreatePod { .. })),
        "{acts:?}"
    );
    assert_eq!(st.phase, Phase::Moving);
    obs.members.insert("a".into(), fenced());
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b"));
}

#[test]
fn invalid_reference_disturbs_nothing() {
    let s = spec(&["a"]);
    let mut obs = observed(&[("a", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.cluster_found = false;
    let d = decide("db", Some(2), &s, Some(&st), &obs);
    assert!(
        d.actions.iter().all(|a| matches!(a, Action::Event(_))),
        "{:?}",
        d.actions
    );
    assert_eq!(d.status.owner_node.as_deref(), Some("a"));
}

#[test]
fn a_namespace_no_longer_allowed_holds_the_instance_and_disturbs_nothing() {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("a"));
    obs.namespace_allowed = false;
    // Even with its owner down: no move, no fence, only the condition and one Event.
    obs.members.insert("a".into(), down(0));
    let d = decide("db", Some(2), &s, Some(&st), &obs);
    assert!(
        matches!(&d.actions[..], [Action::Event(e)] if e.reason == reason::NAMESPACE_NOT_ALLOWED),
        "{:?}",
        d.actions
    );
    assert_eq!(d.status.owner_node.as_deref(), Some("a"));
    assert!(d.status.current_move.is_none());
    let valid = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::VALID)
        .expect("a Valid condition");
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", reason::NAMESPACE_NOT_ALLOWED)
    );
    // Said once, not at every reconcile.
    let again = decide("db", Some(2), &s, Some(&d.status), &obs);
    assert!(again.actions.is_empty(), "{:?}", again.actions);
}

#[derive(Clone, Debug)]
enum Step {
    Kill(usize),
    Revive(usize),
    Round,
}

proptest! {
    /// For any sequence of node failures and recoveries: never two pods, never a pod
    /// created while another exists, never a failover without quorum, never more
    /// failovers in the period than the threshold.
    #[test]
    fn safety_under_any_failure_sequence(steps in proptest::collection::vec(
        prop_oneof![ (0usize..5).prop_map(Step::Kill), (0usize..5).prop_map(Step::Revive), Just(Step::Round) ], 1..60)) {
        let names = ["n0", "n1", "n2", "n3", "n4"];
        let s = spec(&names);
        let mut obs = observed(&names.iter().map(|n| (*n, up())).collect::<Vec<_>>());
        let mut st = FailoverClusterInstanceStatus::default();
        let threshold = failover_threshold(&s, names.len());
        for (i, step) in steps.into_iter().enumerate() {
            obs.now = t(100 + i as i64);
            match step {
                Step::Kill(n) => { obs.members.insert(names[n].into(), down(100 + i as i64)); }
                Step::Revive(n) => {
                    // A fenced node stays fenced until a person removes the taint.
                    if obs.members[names[n]].state == MemberState::Down { obs.members.insert(names[n].into(), up()); }
                }
                Step::Round => {}
            }
            let d = decide("db", Some(1), &s, Some(&st), &obs);
            for a in &d.actions {
                match a {
                    Action::CreatePod { node, seq } => {
                        let name = pod_name("db", *seq);
                        let others = obs.pods.iter().filter(|p| p.name != name).count();
                        prop_assert_eq!(others, 0, "pod created while another exists");
                        prop_assert!(obs.members[node].eligible(), "pod created on a node that is not up");
                        if !obs.pods.iter().any(|p| p.name == name) { obs.pods.push(pod(&name, node, true)); }
                    }
                    Action::Fence { node } => {
                        prop_assert!(obs.has_quorum(), "fenced without quorum");
                        obs.members.insert(node.clone(), fenced());
                    }
                    Action::SetEndpoints(e) => obs.endpoints = e.clone(),
                    Action::DeletePod { name, .. } => obs.pods.retain(|p| &p.name != name),
                    _ => {}
                }
            }
            let was_moving_from = st.current_move.as_ref().and_then(|m| m.from.clone());
            let starts_failover = d.status.current_move.as_ref().is_some_and(|m| !m.planned && m.from.is_some()) && was_moving_from.is_none();
            if starts_failover { prop_assert!(obs.has_quorum(), "failover started without quorum"); }
            st = d.status;
            prop_assert!(obs.pods.len() <= 1, "two pods: {:?}", obs.pods);
            prop_assert!(obs.endpoints.len() <= 1);
            prop_assert!(failovers_in_period(&s, &st, obs.now) <= threshold);
        }
    }
}

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
    for _ in 0..10 {
        let d = decide("db", Some(1), &s, Some(&st), &obs);
        st = d.status;
        for a in d.actions {
            match a {
                Action::SetEndpoints(e) => obs.endpoints = e,
                Action::Fence { node } => {
                    obs.members.insert(node, fenced());
                }
                Action::DeletePod { name, .. } => obs.pods.retain(|p| p.name != name),
                Action::CreatePod { node, seq } => {
                    obs.pods.push(pod(&pod_name("db", seq), &node, false))
                }
                _ => {}
            }
        }
        if st
            .current_move
            .as_ref()
            .is_some_and(|m| m.pod_created.is_some())
        {
            break;
        }
    }
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

fn neighbour(instance: &str, strict: bool, outranks: bool) -> Neighbour {
    Neighbour {
        instance: instance.into(),
        class: "sql".into(),
        strict,
        outranks,
        settled: true,
    }
}

#[test]
fn anti_affinity_passes_over_a_shared_node_while_a_free_one_is_up() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    obs.neighbours
        .insert("a".into(), vec![neighbour("ns/other", false, true)]);
    let mut st = FailoverClusterInstanceStatus::default();
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    let placed = d.actions.iter().any(|a| {
        matches!(a, Action::Event(e) if e.message.contains("placing on b; skipped a: hosts ns/other (anti-affinity class sql)"))
    });
    assert!(placed, "{:?}", d.actions);
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b"));

    // Failover: the next free node, not the shared one, although it is preferred.
    obs.neighbours
        .insert("c".into(), vec![neighbour("ns/third", false, false)]);
    obs.members.insert("b".into(), down(90));
    let mut st2 = st.clone();
    settle(&s, &mut st2, &mut obs);
    // Only shared nodes are left: Preferred shares rather than stay down.
    assert_eq!(st2.owner_node.as_deref(), Some("a"), "{st2:?}");
}

#[test]
fn strict_anti_affinity_stays_offline_rather_than_share() {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    obs.neighbours
        .insert("b".into(), vec![neighbour("ns/other", true, true)]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("a"));
    // Its owner dies; b hosts a strict neighbour, c is free: c, never b.
    obs.members.insert("a".into(), down(90));
    let mut st_c = st.clone();
    settle(&s, &mut st_c, &mut obs);
    assert_eq!(st_c.owner_node.as_deref(), Some("c"));
    // With c taken too, it waits offline and says why.
    obs.neighbours
        .insert("c".into(), vec![neighbour("ns/third", true, false)]);
    obs.pods.clear();
    obs.endpoints.clear();
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::CreatePod { node, .. } if node != "a")),
        "{acts:?}"
    );
    let m = st.current_move.as_ref().expect("the failover waits");
    assert_eq!(m.to, None);
    assert_eq!(st.phase, Phase::Offline);
    // A target chosen before a strict neighbour was seen going there is chosen again.
    let mut placing = FailoverClusterInstanceStatus::default();
    let mut fresh = observed(&[("a", up()), ("b", up())]);
    let d = decide("db", Some(1), &s, Some(&placing), &fresh);
    placing = d.status;
    assert_eq!(
        placing.current_move.as_ref().and_then(|m| m.to.as_deref()),
        Some("a")
    );
    fresh
        .neighbours
        .insert("a".into(), vec![neighbour("ns/other", true, true)]);
    settle(&s, &mut placing, &mut fresh);
    assert_eq!(placing.owner_node.as_deref(), Some("b"));
}

#[test]
fn the_lower_ranked_of_two_sharing_a_node_moves_off_when_allowed() {
    let mut s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("a"));
    // A Preferred pair, failback Never: it stays.
    obs.neighbours
        .insert("a".into(), vec![neighbour("ns/other", false, true)]);
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(d.status.current_move.is_none());
    // It outranks the other: it stays whatever the mode.
    obs.neighbours
        .insert("a".into(), vec![neighbour("ns/other", true, false)]);
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(d.status.current_move.is_none());
    // Outranked, and the pair strict: it moves, a planned move, to the free node.
    obs.neighbours
        .insert("a".into(), vec![neighbour("ns/other", true, true)]);
    let mut moved = st.clone();
    settle(&s, &mut moved, &mut obs);
    let m = moved.history.last().unwrap();
    assert_eq!(
        (m.planned, m.reason.as_str(), m.to.as_deref()),
        (true, reason::ANTI_AFFINITY, Some("b"))
    );
    assert_eq!(moved.owner_node.as_deref(), Some("b"));
    // Preferred with failback Immediate moves too, but not after an operator's move.
    s.failback.mode = FailbackMode::Immediate;
    obs.neighbours
        .insert("a".into(), vec![neighbour("ns/other", false, true)]);
    obs.pods = vec![pod(&pod_name("db", st.move_seq), "a", true)];
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert_eq!(
        d.status.current_move.as_ref().map(|m| m.reason.as_str()),
        Some(reason::ANTI_AFFINITY)
    );
    st.moved_by_operator = true;
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(d.status.current_move.is_none());
    // A neighbour still moving there does not count as settled.
    st.moved_by_operator = false;
    obs.neighbours.insert(
        "a".into(),
        vec![Neighbour {
            settled: false,
            ..neighbour("ns/other", true, true)
        }],
    );
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(d.status.current_move.is_none());
}
