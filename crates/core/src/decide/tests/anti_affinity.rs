//! Anti-affinity classes: instances that share one keep off each other's nodes.

use super::*;
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
