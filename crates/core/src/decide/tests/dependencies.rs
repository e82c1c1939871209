//! Dependencies between instances: a start waits until the instances it depends on are
//! Online; a cycle holds it.

use super::*;

fn waiting(name: &str) -> Option<Dependencies> {
    Some(Dependencies::Waiting(vec![(name.into(), "Moving".into())]))
}

#[test]
fn a_dependent_instance_is_placed_only_once_its_dependencies_are_online() {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up())]);
    obs.dependencies_pending = waiting("db");
    let mut st = FailoverClusterInstanceStatus::default();
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::CreatePod { .. })),
        "{acts:?}"
    );
    let online = st
        .conditions
        .iter()
        .find(|c| c.type_ == condition::ONLINE)
        .unwrap();
    assert_eq!(online.reason, reason::WAITING_FOR_DEPENDENCY);
    assert!(
        online
            .message
            .contains("waiting for db (Moving) to be Online before starting db-1 on a"),
        "{}",
        online.message
    );
    // Looked at again soon: a dependency coming online wakes nothing by itself.
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        d.recheck_at
            .is_some_and(|at| at <= obs.now + jiff::SignedDuration::from_secs(1))
    );
    obs.dependencies_pending = None;
    let acts = settle(&s, &mut st, &mut obs);
    assert!(acts.contains(&Action::CreatePod {
        node: "a".into(),
        seq: 1
    }));
    assert_eq!(st.phase, Phase::Online);
}

#[test]
fn a_failover_keeps_the_order_and_a_cycle_holds_the_start() {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("a"));
    // a dies with the database on it: the way is cleared (fenced, old pod gone), and the new
    // pod waits for the database to be Online again.
    obs.members.insert("a".into(), down(90));
    obs.now = t(100);
    obs.dependencies_pending = waiting("db");
    let acts = settle(&s, &mut st, &mut obs);
    assert!(acts.iter().any(|a| matches!(a, Action::Fence { .. })));
    assert!(
        !acts.iter().any(|a| matches!(a, Action::CreatePod { .. })),
        "{acts:?}"
    );
    let m = st.current_move.clone().unwrap();
    assert!(m.old_pod_gone.is_some() && m.pod_created.is_none(), "{m:?}");
    // A cycle: held, and said.
    obs.dependencies_pending = Some(Dependencies::Cycle(vec![
        "app".into(),
        "db".into(),
        "app".into(),
    ]));
    settle(&s, &mut st, &mut obs);
    let online = st
        .conditions
        .iter()
        .find(|c| c.type_ == condition::ONLINE)
        .unwrap();
    assert_eq!(online.reason, reason::DEPENDENCY_CYCLE);
    assert!(
        online.message.contains("app -> db -> app"),
        "{}",
        online.message
    );
    obs.dependencies_pending = None;
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    assert_eq!(st.phase, Phase::Online);
}
