//! The network name withheld (a Service that is another's, an address or a hostname not
//! granted): said in `NetworkName`, and nothing else held.

use super::*;
use crate::api::condition;

fn network(st: &FailoverClusterInstanceStatus) -> (String, String, String) {
    let c = st
        .conditions
        .iter()
        .find(|c| c.type_ == condition::NETWORK_NAME)
        .expect("a NetworkName condition");
    (c.status.clone(), c.reason.clone(), c.message.clone())
}

fn events(acts: &[Action]) -> Vec<String> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Event(e) => Some(e.reason.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn a_service_that_is_anothers_withholds_the_name_and_the_instance_still_fails_over() {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    obs.service_current = false;
    obs.service_taken = true;
    let mut st = FailoverClusterInstanceStatus::default();
    let d = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        !d.actions.contains(&Action::EnsureService),
        "another's Service is never written"
    );
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Online, "placed all the same");
    let (status, reason, _) = network(&st);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reason::NETWORK_NAME_TAKEN)
    );
    assert!(
        st.conditions
            .iter()
            .all(|c| c.type_ != condition::VALID || c.status == "True"),
        "the instance itself is valid"
    );
    // Its owner dies: it fails over.
    obs.members.insert("a".into(), down(90));
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Fence { node, .. } if node == "a"))
    );
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    assert_eq!(st.phase, Phase::Online);
}

#[test]
fn a_withheld_address_is_said_once_and_never_served() {
    let mut s = spec(&["a"]);
    // What the controller hands `decide`: the spec without the address it may not use.
    s.virtual_ips = vec!["192.0.2.10".into()];
    let mut obs = observed(&[("a", up()), ("b", up())]);
    obs.network_withheld = vec![(
        reason::VIRTUAL_IP_NOT_ALLOWED.into(),
        "virtual IP 192.0.2.50 lies in no address pool this namespace may use".into(),
    )];
    let mut st = FailoverClusterInstanceStatus::default();
    let first = decide("db", Some(1), &s, Some(&st), &obs);
    assert_eq!(
        events(&first.actions)
            .iter()
            .filter(|r| *r == reason::VIRTUAL_IP_NOT_ALLOWED)
            .count(),
        1
    );
    st = first.status;
    let again = decide("db", Some(1), &s, Some(&st), &obs);
    assert!(
        !events(&again.actions).contains(&reason::VIRTUAL_IP_NOT_ALLOWED.to_string()),
        "said once, not every round"
    );
    let (status, reason, message) = network(&again.status);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reason::VIRTUAL_IP_NOT_ALLOWED)
    );
    assert!(message.contains("192.0.2.50"), "{message}");
    // Served: only what the controller handed over.
    let served = again.status.served.clone().expect("served");
    assert_eq!(served.virtual_ips, vec!["192.0.2.10".to_string()]);
    // Fixed: True again, with an Event saying so.
    obs.network_withheld.clear();
    let fixed = decide("db", Some(1), &s, Some(&again.status), &obs);
    assert_eq!(network(&fixed.status).0, "True");
    assert!(events(&fixed.actions).contains(&reason::NETWORK_NAME_SERVED.to_string()));
}

#[test]
fn addresses_are_claimed_at_once_and_let_go_only_once_the_service_no_longer_carries_them() {
    let s = spec(&["a"]);
    let mut obs = observed(&[("a", up())]);
    obs.addresses_to_claim = vec!["192.0.2.10".into()];
    obs.addresses_to_release = vec!["192.0.2.9".into()];
    obs.service_current = false;
    let d = decide("db", Some(1), &s, None, &obs);
    assert!(
        d.actions
            .contains(&Action::ClaimAddresses(vec!["192.0.2.10".into()]))
    );
    assert!(
        !d.actions
            .iter()
            .any(|a| matches!(a, Action::ReleaseAddresses(_))),
        "the Service may still carry the old address"
    );
    obs.service_current = true;
    let d = decide("db", Some(1), &s, None, &obs);
    assert!(
        d.actions
            .contains(&Action::ReleaseAddresses(vec!["192.0.2.9".into()]))
    );
}

#[test]
fn a_refused_service_write_is_said_and_holds_nothing() {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    obs.service_refused = Some("admission webhook denied the request".into());
    let mut st = FailoverClusterInstanceStatus::default();
    settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Online);
    let (status, reason, message) = network(&st);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reason::SERVICE_NOT_WRITTEN)
    );
    assert!(message.contains("denied"), "{message}");
}

#[test]
fn an_endpoint_slice_that_is_anothers_is_never_written_and_the_instance_still_fails_over() {
    let s = spec(&["a", "b"]);
    let mut obs = observed(&[("a", up()), ("b", up()), ("c", up())]);
    obs.endpoint_slice_taken = true;
    let mut st = FailoverClusterInstanceStatus::default();
    let acts = settle(&s, &mut st, &mut obs);
    assert_eq!(st.phase, Phase::Online, "placed all the same");
    assert!(
        !acts.iter().any(|a| matches!(a, Action::SetEndpoints(_))),
        "another's EndpointSlice is never written: {acts:?}"
    );
    let (status, reason, message) = network(&st);
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", reason::NETWORK_NAME_TAKEN)
    );
    assert!(message.contains("EndpointSlice"), "{message}");
    // Its owner dies: the move completes without publishing the endpoint.
    obs.members.insert("a".into(), down(90));
    let acts = settle(&s, &mut st, &mut obs);
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::Fence { node, .. } if node == "a"))
    );
    assert!(!acts.iter().any(|a| matches!(a, Action::SetEndpoints(_))));
    assert_eq!(st.owner_node.as_deref(), Some("b"));
    assert_eq!(st.phase, Phase::Online);
}
