//! What if: the answers of `whatif` are those `decide` gives as the failure plays out.

use super::*;
use crate::api::{FailoverCluster, FailoverClusterInstance};
use crate::decide::whatif::{Answer, Outcome, Scenario, one_failure, resilience, simulate};

fn cluster(classes: serde_json::Value) -> FailoverCluster {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverCluster",
        "metadata": {"name": "c"},
        "spec": {"nodeSelector": {}, "allowedNamespaces": {"selector": {}},
                 "antiAffinityClasses": classes},
    }))
    .unwrap()
}

/// An instance of cluster `c` online on `owner`, its pod ready there.
fn online(name: &str, owner: &str, spec: serde_json::Value) -> FailoverClusterInstance {
    let mut base = serde_json::json!({
        "clusterRef": "c",
        "networkName": {"name": name, "ports": [{"name": "sql", "port": 5432}]},
        "template": {"spec": {"containers": [{"name": "db", "image": "db"}]}},
    });
    for (k, v) in spec.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverClusterInstance",
        "metadata": {"name": name, "namespace": "ns", "generation": 1},
        "spec": base,
        "status": {"phase": "Online", "ownerNode": owner, "moveSeq": 1,
                   "conditions": [{"type": "Online", "status": "True", "reason": "Online",
                                   "message": "online", "lastTransitionTime": "2023-11-14T22:13:20Z"}]},
    }))
    .unwrap()
}

/// What the controller would observe of an instance on a cluster of `members`: its pod
/// ready on its owner, its endpoint published, a volume attached there.
fn world(members: &[(&str, NodeHealth)]) -> impl Fn(&FailoverClusterInstance) -> Observed {
    let base = observed(members);
    move |i: &FailoverClusterInstance| {
        let mut obs = base.clone();
        let owner = i.status.as_ref().and_then(|s| s.owner_node.clone());
        if let Some(owner) = owner {
            let name = kube::ResourceExt::name_any(i);
            obs.pods = vec![pod(&pod_name(&name, 1), &owner, true)];
            obs.endpoints = vec!["10.0.0.9".into()];
            obs.attachments = vec![AttachmentFacts {
                name: format!("va-{name}"),
                uid: format!("va-uid-{name}"),
                node: owner,
                shared: false,
                terminating: false,
            }];
        }
        obs
    }
}

fn no_labels(_: &str) -> BTreeMap<String, String> {
    BTreeMap::new()
}

fn outcome_of<'a>(answers: &'a [Answer], name: &str) -> &'a Outcome {
    &answers
        .iter()
        .find(|a| a.instance == format!("ns/{name}"))
        .unwrap_or_else(|| panic!("no answer for {name}: {answers:?}"))
        .outcome
}

fn three() -> Vec<(&'static str, NodeHealth)> {
    vec![("a", up()), ("b", up()), ("c", up())]
}

#[test]
fn a_failed_owner_sends_its_instance_to_the_next_preferred_member_fenced() {
    let db = online(
        "db",
        "a",
        serde_json::json!({"owners": {"preferred": ["a", "c", "b"]}}),
    );
    let answers = simulate(
        &cluster(serde_json::json!([])),
        std::slice::from_ref(&db),
        world(&three()),
        no_labels,
        &Scenario::failing("a"),
    );
    assert_eq!(
        outcome_of(&answers, "db"),
        &Outcome::Moves {
            to: "c".into(),
            failover: true,
            waits: None
        }
    );
    assert!(answers[0].affected && answers[0].moves());
    // Another member's failure leaves it where it is.
    let answers = simulate(
        &cluster(serde_json::json!([])),
        &[db],
        world(&three()),
        no_labels,
        &Scenario::failing("b"),
    );
    assert_eq!(outcome_of(&answers, "db"), &Outcome::Stays);
    assert!(!answers[0].affected && !answers[0].moves());
}

#[test]
fn a_drain_moves_it_off_planned() {
    let db = online("db", "a", serde_json::json!({}));
    let scenario = Scenario {
        fail: Default::default(),
        drain: ["a".to_string()].into(),
    };
    let answers = simulate(
        &cluster(serde_json::json!([])),
        &[db],
        world(&three()),
        no_labels,
        &scenario,
    );
    assert_eq!(
        outcome_of(&answers, "db"),
        &Outcome::Moves {
            to: "b".into(),
            failover: false,
            waits: None
        }
    );
}

#[test]
fn held_without_the_quorum_or_past_the_threshold_or_with_nowhere_to_go() {
    let db = online("db", "a", serde_json::json!({}));
    let two_fail = Scenario {
        fail: ["a".to_string(), "b".to_string()].into(),
        drain: Default::default(),
    };
    let answers = simulate(
        &cluster(serde_json::json!([])),
        std::slice::from_ref(&db),
        world(&three()),
        no_labels,
        &two_fail,
    );
    assert!(
        matches!(outcome_of(&answers, "db"), Outcome::Held { reason, .. } if reason == reason::QUORUM_LOST),
        "{answers:?}"
    );

    let mut spent = online(
        "spent",
        "a",
        serde_json::json!({"failover": {"threshold": 1}}),
    );
    spent.status.as_mut().unwrap().failovers = vec![Time(Timestamp::now())];
    let answers = simulate(
        &cluster(serde_json::json!([])),
        &[spent],
        |i: &FailoverClusterInstance| {
            let mut obs = world(&three())(i);
            obs.now = Timestamp::now();
            obs
        },
        no_labels,
        &Scenario::failing("a"),
    );
    assert!(
        matches!(outcome_of(&answers, "spent"), Outcome::Held { reason, .. } if reason == reason::FAILOVER_THRESHOLD_EXCEEDED),
        "{answers:?}"
    );

    let only_a = online(
        "only-a",
        "a",
        serde_json::json!({"owners": {"possible": ["a"]}}),
    );
    let answers = simulate(
        &cluster(serde_json::json!([])),
        &[only_a],
        world(&three()),
        no_labels,
        &Scenario::failing("a"),
    );
    assert!(
        matches!(outcome_of(&answers, "only-a"), Outcome::Held { reason, message } if reason == reason::NO_ELIGIBLE_OWNER && message.contains("a")),
        "{answers:?}"
    );
}

#[test]
fn held_where_fencing_cannot_be_done_or_the_agent_was_down_first() {
    let db = online("db", "a", serde_json::json!({}));
    let external = |i: &FailoverClusterInstance| {
        let mut obs = world(&three())(i);
        obs.fencing.mode = FencingMode::External;
        obs
    };
    let answers = simulate(
        &cluster(serde_json::json!([])),
        std::slice::from_ref(&db),
        external,
        no_labels,
        &Scenario::failing("a"),
    );
    assert!(
        matches!(outcome_of(&answers, "db"), Outcome::Held { reason, .. } if reason == reason::AWAITING_FENCE),
        "{answers:?}"
    );
    let mut agent_down = up();
    agent_down.agent = AgentHealth::Silent {
        seen: t(0),
        self_fence: Some(jiff::SignedDuration::from_secs(5)),
        before_kubelet: false,
        peer_groups: Vec::new(),
    };
    let answers = simulate(
        &cluster(serde_json::json!([])),
        std::slice::from_ref(&db),
        world(&[("a", agent_down), ("b", up()), ("c", up())]),
        no_labels,
        &Scenario::failing("a"),
    );
    assert!(
        matches!(outcome_of(&answers, "db"), Outcome::Held { reason, .. } if reason == reason::AGENT_DOWN),
        "{answers:?}"
    );
    // A live agent with a self-fence time: fenced once it has, then moved.
    let mut agent_up = up();
    agent_up.agent = AgentHealth::Live {
        stopped_workloads: false,
    };
    agent_up.self_fence = Some(jiff::SignedDuration::from_secs(5));
    let answers = simulate(
        &cluster(serde_json::json!([])),
        &[db],
        world(&[("a", agent_up), ("b", up()), ("c", up())]),
        no_labels,
        &Scenario::failing("a"),
    );
    assert!(answers[0].moves(), "{answers:?}");
}

#[test]
fn the_higher_priority_goes_first_and_a_strict_class_keeps_the_next_off_its_node() {
    // x (High) and y (Low) share the strict class sql; a and b fail, only c is left
    // besides d, which y's claim cannot reach.
    let members = [
        ("a", up()),
        ("b", up()),
        ("c", up()),
        ("d", up()),
        ("e", up()),
    ];
    let x = online(
        "x",
        "a",
        serde_json::json!({"priority": "High", "antiAffinityClasses": ["sql"],
                           "antiAffinityMode": "Strict", "owners": {"possible": ["a", "b", "c"]}}),
    );
    let y = online(
        "y",
        "b",
        serde_json::json!({"priority": "Low", "antiAffinityClasses": ["sql"],
                           "owners": {"possible": ["a", "b", "c"]}}),
    );
    let answers = simulate(
        &cluster(serde_json::json!([])),
        &[y, x],
        world(&members),
        no_labels,
        &Scenario {
            fail: ["a".to_string(), "b".to_string()].into(),
            drain: Default::default(),
        },
    );
    assert_eq!(
        outcome_of(&answers, "x"),
        &Outcome::Moves {
            to: "c".into(),
            failover: true,
            waits: None
        }
    );
    assert!(
        matches!(outcome_of(&answers, "y"), Outcome::Held { reason, message } if reason == reason::NO_ELIGIBLE_OWNER && message.contains("ns/x")),
        "{answers:?}"
    );
}

#[test]
fn one_failure_names_the_instances_a_member_would_strand() {
    let members = three();
    let pinned = online(
        "pinned",
        "b",
        serde_json::json!({"owners": {"possible": ["b"]}}),
    );
    let free = online("free", "a", serde_json::json!({}));
    let states: Vec<(String, MemberState)> = members
        .iter()
        .map(|(n, h)| (n.to_string(), h.state))
        .collect();
    let mut observed_once = BTreeMap::<String, usize>::new();
    let observe = world(&members);
    let unprotected = one_failure(
        &cluster(serde_json::json!([])),
        &[pinned, free],
        &states,
        |i| {
            *observed_once.entry(i.key()).or_default() += 1;
            observe(i)
        },
        no_labels,
    );
    assert_eq!(unprotected.len(), 1, "{unprotected:?}");
    assert_eq!(unprotected[0].member, "b");
    assert_eq!(unprotected[0].instance, "ns/pinned");
    assert_eq!(unprotected[0].reason, reason::NO_ELIGIBLE_OWNER);
    assert!(observed_once.values().all(|n| *n == 1), "{observed_once:?}");
    let (ok, why, message) = resilience(&unprotected, states.len());
    assert!(!ok);
    assert_eq!(why, reason::NOT_RESILIENT);
    assert!(
        message.contains("if b fails, ns/pinned is held"),
        "{message}"
    );
    let (ok, why, _) = resilience(&[], 3);
    assert!(ok);
    assert_eq!(why, reason::RESILIENT);
}

proptest! {
    /// Whatever fails among five members, an instance the scenario leaves alone stays; one
    /// it touches either moves to a member the scenario leaves healthy or is held; and
    /// never to a failed or drained member.
    #[test]
    fn answers_never_send_an_instance_to_a_touched_member(
        owners in proptest::collection::vec(0usize..5, 1..5),
        failed in proptest::collection::btree_set(0usize..5, 0..3),
        drained in proptest::collection::btree_set(0usize..5, 0..2),
    ) {
        let names = ["a", "b", "c", "d", "e"];
        let members: Vec<(&str, NodeHealth)> = names.iter().map(|n| (*n, up())).collect();
        let instances: Vec<FailoverClusterInstance> = owners
            .iter()
            .enumerate()
            .map(|(k, o)| online(&format!("i{k}"), names[*o], serde_json::json!({})))
            .collect();
        let scenario = Scenario {
            fail: failed.iter().map(|k| names[*k].to_string()).collect(),
            drain: drained.iter().map(|k| names[*k].to_string()).collect(),
        };
        let answers = simulate(&cluster(serde_json::json!([])), &instances, world(&members), no_labels, &scenario);
        prop_assert_eq!(answers.len(), instances.len());
        for a in &answers {
            match &a.outcome {
                Outcome::Stays => prop_assert!(!a.affected, "{:?}", a),
                Outcome::Moves { to, failover, .. } => {
                    prop_assert!(a.affected, "{:?}", a);
                    prop_assert!(!scenario.fail.contains(to) && !scenario.drain.contains(to), "{:?}", a);
                    prop_assert_eq!(*failover, scenario.fail.contains(a.owner.as_ref().unwrap()));
                }
                Outcome::Held { .. } => prop_assert!(a.affected, "{:?}", a),
            }
        }
    }
}
