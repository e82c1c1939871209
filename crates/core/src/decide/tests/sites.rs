//! Sites: failover within the instance's site first, a preferred site, volumes that reach
//! only some members.

use super::*;

/// Members a0, a1 in site a, b0, b1 in site b; the instance prefers b0, a0, b1, a1.
fn two_sites() -> (FailoverClusterInstanceSpec, Observed) {
    let s = spec(&["b0", "a0", "b1", "a1"]);
    let mut obs = observed(&[("a0", up()), ("a1", up()), ("b0", up()), ("b1", up())]);
    obs.quorum_required = 2;
    obs.sites = [("a0", "a"), ("a1", "a"), ("b0", "b"), ("b1", "b")]
        .map(|(n, s)| (n.to_string(), s.to_string()))
        .into_iter()
        .collect();
    (s, obs)
}

#[test]
fn a_failover_stays_in_its_site_while_a_member_there_can_take_it_then_crosses() {
    let (mut s, mut obs) = two_sites();
    s.owners.preferred = vec!["a0".into(), "b0".into(), "b1".into(), "a1".into()];
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("a0"));
    // a0 fails: b0 and b1 come before a1 in the preferred order, but a1 is in a0's site.
    obs.members.insert("a0".into(), down(90));
    obs.now = t(100);
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("a1"), "within site a");
    // a1 fails too: no member of site a can take it; it crosses, in preference order.
    obs.members.insert("a1".into(), down(190));
    obs.now = t(200);
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b0"), "across to site b");
}

#[test]
fn an_instance_is_placed_in_its_preferred_site_and_fails_over_within_it() {
    let (mut s, mut obs) = two_sites();
    s.owners.preferred = vec!["a0".into(), "a1".into(), "b0".into(), "b1".into()];
    s.owners.preferred_site = Some("b".into());
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b0"), "placed in site b");
    obs.members.insert("b0".into(), down(90));
    obs.now = t(100);
    settle(&s, &mut st, &mut obs);
    assert_eq!(
        st.owner_node.as_deref(),
        Some("b1"),
        "failed over within site b"
    );
}

#[test]
fn without_sites_the_preferred_order_alone_decides() {
    let (s, mut obs) = two_sites();
    obs.sites.clear();
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b0"));
    obs.members.insert("b0".into(), down(90));
    obs.now = t(100);
    settle(&s, &mut st, &mut obs);
    assert_eq!(
        st.owner_node.as_deref(),
        Some("a0"),
        "the next preferred owner"
    );
}

#[test]
fn a_volume_that_reaches_only_one_site_keeps_the_instance_there_and_says_why_when_none_can() {
    let (s, mut obs) = two_sites();
    for n in ["a0", "a1"] {
        obs.unreachable.insert(
            n.into(),
            "the volume of claim data cannot be used there (its node affinity: \
             topology.kubernetes.io/zone In [b])"
                .into(),
        );
    }
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b0"));
    obs.members.insert("b0".into(), down(90));
    obs.now = t(100);
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.owner_node.as_deref(), Some("b1"));
    // The whole site gone: nowhere the volume reaches; the instance waits, and says why.
    obs.members.insert("b1".into(), down(190));
    obs.members.insert("a0".into(), up());
    obs.now = t(200);
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        !acts
            .iter()
            .any(|a| matches!(a, Action::CreatePod { node, .. } if node.starts_with('a'))),
        "{acts:?}"
    );
    let said: Vec<&str> = st.conditions.iter().map(|c| c.message.as_str()).collect();
    assert!(
        said.iter()
            .any(|m| m.contains("a0: the volume of claim data cannot be used there")),
        "{said:?}"
    );
}
