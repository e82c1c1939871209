use super::*;
use crate::api::{
    FailbackMode, FailoverClusterInstanceSpec, FencingMode, MemberState, Phase, Priority, reason,
};
use proptest::prelude::*;

mod anti_affinity;
mod dependencies;
mod faults;
mod network;
mod operations;
mod sites;
mod whatif;

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
        agent: AgentHealth::Absent,
        agent_steady_since: None,
        basis: Default::default(),
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
        agent: AgentHealth::Absent,
        agent_steady_since: None,
        basis: Default::default(),
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
        agent: AgentHealth::Absent,
        agent_steady_since: None,
        basis: Default::default(),
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
        non_voting: Default::default(),
        witness: None,
        fencing: Fencing::default(),
        pods: Vec::new(),
        attachments: Vec::new(),
        pinned_claims: BTreeMap::new(),
        missing_claims: Vec::new(),
        unreachable: Default::default(),
        sites: Default::default(),
        dependencies_pending: None,
        quarantined: Default::default(),
        endpoints: Vec::new(),
        endpoint_slice_taken: false,
        outside: BTreeMap::new(),
        service_current: true,
        service_taken: false,
        network_withheld: Vec::new(),
        addresses_to_claim: Vec::new(),
        addresses_to_release: Vec::new(),
        service_refused: None,
        namespace_allowed: true,
        higher_priority_starting: false,
        neighbours: Default::default(),
        dns_name: "db.ns.svc".into(),
        vip_holders: Default::default(),
        requests: Default::default(),
        needs_agent: false,
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
                Action::Fence { node, .. } => obs
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

/// Runs the move's rounds, carrying out what they ask (the new pod is created not ready),
/// until the move records its pod created; returns the pod's node and number.
fn until_pod_created(
    s: &FailoverClusterInstanceSpec,
    st: &mut FailoverClusterInstanceStatus,
    obs: &mut Observed,
) -> (String, u64) {
    let mut created = None;
    for _ in 0..10 {
        let d = decide("db", Some(1), s, Some(st), obs);
        *st = d.status;
        for a in d.actions {
            match a {
                Action::SetEndpoints(e) => obs.endpoints = e,
                Action::Fence { node, .. } => {
                    obs.members.insert(node, fenced());
                }
                Action::DeletePod { name, .. } => obs.pods.retain(|p| p.name != name),
                Action::CreatePod { node, seq } => {
                    obs.pods.push(pod(&pod_name("db", seq), &node, false));
                    created = Some((node, seq));
                }
                _ => {}
            }
        }
        if st
            .current_move
            .as_ref()
            .is_some_and(|m| m.pod_created.is_some())
        {
            return created.expect("a pod recorded created was asked for");
        }
    }
    panic!("no pod recorded created within ten rounds: {st:?}");
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

/// An instance settled Online on node "a" with a volume attached there; then "a" dies.
fn online_on_a_when_a_dies_with_its_volume() -> (
    FailoverClusterInstanceSpec,
    Observed,
    FailoverClusterInstanceStatus,
) {
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
        terminating: false,
    });
    (s, obs, st)
}

#[test]
fn fails_over_in_order_fence_delete_detach_create_publish() {
    let (s, mut obs, mut st) = online_on_a_when_a_dies_with_its_volume();
    // The round that starts the failover withdraws the endpoint once.
    let first = decide("db", Some(1), &s, Some(&st), &obs);
    let withdrawals = first
        .actions
        .iter()
        .filter(|a| **a == Action::SetEndpoints(vec![]))
        .count();
    assert_eq!(withdrawals, 1, "{:?}", first.actions);
    let acts = settle(&s, &mut st, &mut obs);
    let pos = |f: &dyn Fn(&Action) -> bool| acts.iter().position(f).expect("action present");
    let withdraw = pos(&|a| a == &Action::SetEndpoints(vec![]));
    let fence = pos(&|a| matches!(a, Action::Fence { node, .. } if node == "a"));
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
fn a_new_pod_gone_before_it_was_ready_is_created_again() {
    let s = spec(&["a", "b", "c"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    obs.members.insert("a".into(), down(90));
    // Rounds until the new pod is created on b; it never becomes ready.
    let (node, seq) = until_pod_created(&s, &mut st, &mut obs);
    assert_eq!(node, "b");
    // Deleted by someone while b is up: the move does not wait for it forever.
    obs.pods.clear();
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        d.actions.contains(&Action::CreatePod {
            node: "b".into(),
            seq
        }),
        "{:?}",
        d.actions
    );
    assert!(
        d.status
            .current_move
            .is_some_and(|m| m.pod_created.is_none())
    );
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

#[test]
fn a_template_without_a_container_holds_the_instance_invalid() {
    let mut s = spec(&["a", "b"]);
    let obs = observed(&[("a", up()), ("b", up())]);
    assert!(s.template.lists_a_container());
    s.template = serde_json::from_value(serde_json::json!({"spec": {"containers": []}})).unwrap();
    let d = decide("db", Some(1), &s, None, &obs);
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::CreatePod { .. })),
        "{:?}",
        d.actions
    );
    let valid = d
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == condition::VALID)
        .expect("a Valid condition");
    assert_eq!(
        (valid.status.as_str(), valid.reason.as_str()),
        ("False", reason::NO_CONTAINERS)
    );
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
            for (k, a) in d.actions.iter().enumerate() {
                prop_assert!(!d.actions[..k].contains(a), "asked twice in one round: {:?}", d.actions);
            }
            for a in &d.actions {
                match a {
                    Action::CreatePod { node, seq } => {
                        let name = pod_name("db", *seq);
                        let others = obs.pods.iter().filter(|p| p.name != name).count();
                        prop_assert_eq!(others, 0, "pod created while another exists");
                        prop_assert!(obs.members[node].eligible(), "pod created on a node that is not up");
                        if !obs.pods.iter().any(|p| p.name == name) { obs.pods.push(pod(&name, node, true)); }
                    }
                    Action::Fence { node, .. } => {
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

/// The rounds of a failover, as the controller runs them: a round that
/// `may_act_before_recording` acts without writing, and the next round writes what it
/// carried. Counts the status writes, and which actions went out before their round's write.
#[test]
fn a_failover_writes_its_status_four_times() {
    let (s, mut obs, st) = online_on_a_when_a_dies_with_its_volume();
    let mut written = st.clone();
    let mut carried = st.clone();
    let (mut writes, mut unwritten) = (0, Vec::new());
    for _ in 0..20 {
        let d = decide("db", Some(1), &s, Some(&carried), &obs);
        let acts: Vec<Action> = d
            .actions
            .iter()
            .filter(|a| {
                !matches!(
                    a,
                    Action::Event(_) | Action::EnsureService | Action::EnsureClaims
                )
            })
            .cloned()
            .collect();
        if acts.is_empty() && d.status == written {
            // Waiting for the new pod (created not ready, as by a kubelet): it becomes ready.
            match obs.pods.iter_mut().find(|p| !p.ready) {
                Some(p) => {
                    p.ready = true;
                    continue;
                }
                None => break,
            }
        }
        if may_act_before_recording(Some(&written), &d) {
            unwritten.extend(acts.iter().cloned());
        } else {
            writes += 1;
            written = d.status.clone();
        }
        carried = d.status;
        for a in &acts {
            match a {
                Action::SetEndpoints(e) => obs.endpoints = e.clone(),
                Action::Fence { node, .. } => {
                    obs.members.insert(node.clone(), fenced());
                }
                Action::DeletePod { name, .. } => obs.pods.retain(|p| &p.name != name),
                Action::DeleteAttachment { name, .. } => {
                    obs.attachments.retain(|a| &a.name != name)
                }
                Action::CreatePod { node, seq } => {
                    obs.pods.push(pod(&pod_name("db", *seq), node, false))
                }
                _ => {}
            }
        }
    }
    assert_eq!(written.phase, Phase::Online, "{written:?}");
    assert_eq!(written.owner_node.as_deref(), Some("b"));
    // Started (withdraw, fence); owner chosen (create); pod created; online. The deletes
    // and the publication went out before the writes that recorded them.
    assert_eq!(writes, 4, "{written:?}");
    assert!(
        unwritten
            .iter()
            .any(|a| matches!(a, Action::DeletePod { force: true, .. }))
            && unwritten
                .iter()
                .any(|a| matches!(a, Action::DeleteAttachment { .. }))
            && unwritten
                .iter()
                .any(|a| matches!(a, Action::SetEndpoints(e) if !e.is_empty())),
        "{unwritten:?}"
    );
    assert!(
        !unwritten
            .iter()
            .any(|a| matches!(a, Action::Fence { .. } | Action::CreatePod { .. })),
        "{unwritten:?}"
    );
}
