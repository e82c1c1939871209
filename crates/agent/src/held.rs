//! Which addresses are the agent's to take down, and which it must never touch. Pure, for
//! tests.
//!
//! The agent takes down only addresses it brought up itself: those its state file records
//! (and which are on the interface as the host addresses it adds), and those on the
//! interface carrying its marker ([`crate::addresses::MARK`]), which an earlier agent
//! brought up before its state file was lost. Everything else on the interface is the
//! node's, as is every address in its Node's `status.addresses`: these are never taken down
//! and never brought up, whatever an instance's status says, so that a virtual IP equal to a
//! node's address cannot take that node off the network.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use crate::addresses::OnLink;

/// The addresses of one round, sorted.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Sorted {
    /// The addresses on the interface that the agent brought up, with the instance
    /// (`namespace/name`) each is for: empty for an earlier agent's address that no
    /// instance is granted here.
    pub held: BTreeMap<IpAddr, String>,
    /// The node's own addresses: its Node's, and every address on the interface that the
    /// agent did not bring up.
    pub own: BTreeSet<IpAddr>,
    /// Addresses the state file recorded that turned out to be the node's own (an earlier
    /// version recorded a granted address it found already up): forgotten, and left up.
    pub forgotten: Vec<IpAddr>,
}

/// Sorts the addresses on the interface (`on_link`) into the agent's and the node's, from
/// the state file (`recorded`), the node's addresses (`node`) and what is granted here
/// (`want`, which names the instance of an address adopted by its marker).
///
/// A recorded address no longer on the interface is dropped: there is nothing to take down,
/// and if it is still granted it comes up again once its grant is confirmed.
pub fn sort(
    recorded: &BTreeMap<IpAddr, String>,
    on_link: &[OnLink],
    node: &BTreeSet<IpAddr>,
    want: &BTreeMap<IpAddr, String>,
) -> Sorted {
    let ours = |a: &OnLink| a.is_host() && (a.marked || recorded.contains_key(&a.ip));
    let mut own = node.clone();
    own.extend(on_link.iter().filter(|a| !ours(a)).map(|a| a.ip));
    let held = on_link
        .iter()
        .filter(|a| ours(a) && !own.contains(&a.ip))
        .map(|a| {
            let instance = recorded.get(&a.ip).or_else(|| want.get(&a.ip));
            (a.ip, instance.cloned().unwrap_or_default())
        })
        .collect();
    let forgotten = recorded
        .keys()
        .filter(|ip| own.contains(ip))
        .copied()
        .collect();
    Sorted {
        held,
        own,
        forgotten,
    }
}

/// The held addresses no longer granted here.
pub fn to_take_down(
    held: &BTreeMap<IpAddr, String>,
    want: &BTreeMap<IpAddr, String>,
) -> Vec<IpAddr> {
    held.keys()
        .filter(|ip| !want.contains_key(ip))
        .copied()
        .collect()
}

/// The granted addresses to bring up (those not up yet), and those refused because they are
/// the node's own.
pub fn to_bring_up(
    want: &BTreeMap<IpAddr, String>,
    held: &BTreeMap<IpAddr, String>,
    own: &BTreeSet<IpAddr>,
) -> (BTreeMap<IpAddr, String>, BTreeSet<IpAddr>) {
    let (refused, up): (BTreeMap<_, _>, BTreeMap<_, _>) = want
        .iter()
        .filter(|(ip, _)| !held.contains_key(ip))
        .map(|(ip, instance)| (*ip, instance.clone()))
        .partition(|(ip, _)| own.contains(ip));
    (up, refused.into_keys().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn host(s: &str, marked: bool) -> OnLink {
        let ip = ip(s);
        OnLink {
            ip,
            prefix: if ip.is_ipv4() { 32 } else { 128 },
            marked,
        }
    }

    fn map(entries: &[(&str, &str)]) -> BTreeMap<IpAddr, String> {
        entries
            .iter()
            .map(|(a, k)| (ip(a), k.to_string()))
            .collect()
    }

    fn set(addrs: &[&str]) -> BTreeSet<IpAddr> {
        addrs.iter().map(|a| ip(a)).collect()
    }

    /// The node's primary address (a /24 the agent did not add).
    fn primary() -> OnLink {
        OnLink {
            ip: ip("10.0.0.11"),
            prefix: 24,
            marked: false,
        }
    }

    #[test]
    fn the_nodes_own_address_published_as_a_vip_of_another_node_is_left_alone() {
        // Another node is granted the VIP: nothing is wanted here.
        let sorted = sort(
            &BTreeMap::new(),
            &[primary()],
            &set(&["10.0.0.11"]),
            &BTreeMap::new(),
        );
        assert!(sorted.held.is_empty());
        assert!(to_take_down(&sorted.held, &BTreeMap::new()).is_empty());
        // Even when the Node does not list it (read failed, or it is not in its status).
        let sorted = sort(
            &BTreeMap::new(),
            &[primary()],
            &BTreeSet::new(),
            &BTreeMap::new(),
        );
        assert!(sorted.held.is_empty());
        assert_eq!(sorted.own, set(&["10.0.0.11"]));
    }

    #[test]
    fn a_host_address_someone_else_added_is_not_the_agents() {
        // An unmarked /32 the state file does not record (an operator's, another tool's).
        let on_link = [primary(), host("10.0.0.200", false)];
        let sorted = sort(
            &BTreeMap::new(),
            &on_link,
            &BTreeSet::new(),
            &BTreeMap::new(),
        );
        assert!(sorted.held.is_empty());
        assert!(sorted.own.contains(&ip("10.0.0.200")));
    }

    #[test]
    fn what_the_agent_brought_up_is_taken_down_when_the_grant_goes() {
        let recorded = map(&[("10.0.0.200", "ns/db")]);
        let on_link = [primary(), host("10.0.0.200", true)];
        let sorted = sort(&recorded, &on_link, &set(&["10.0.0.11"]), &BTreeMap::new());
        assert_eq!(sorted.held, recorded);
        assert_eq!(
            to_take_down(&sorted.held, &BTreeMap::new()),
            vec![ip("10.0.0.200")]
        );
        // Still granted: it stays.
        assert!(to_take_down(&sorted.held, &recorded).is_empty());
    }

    #[test]
    fn a_recorded_address_is_the_agents_without_the_marker() {
        // A kernel older than 5.18 keeps no address protocol; an earlier version added none.
        let recorded = map(&[("2001:db8::10", "ns/db")]);
        let sorted = sort(
            &recorded,
            &[host("2001:db8::10", false)],
            &BTreeSet::new(),
            &BTreeMap::new(),
        );
        assert_eq!(sorted.held, recorded);
    }

    #[test]
    fn a_marked_address_is_adopted_when_the_state_file_is_lost() {
        let on_link = [
            primary(),
            host("10.0.0.200", true),
            host("10.0.0.201", true),
        ];
        let want = map(&[("10.0.0.201", "ns/web")]);
        let sorted = sort(&BTreeMap::new(), &on_link, &set(&["10.0.0.11"]), &want);
        assert_eq!(
            sorted.held,
            map(&[("10.0.0.200", ""), ("10.0.0.201", "ns/web")])
        );
        assert_eq!(to_take_down(&sorted.held, &want), vec![ip("10.0.0.200")]);
    }

    #[test]
    fn a_node_address_is_never_the_agents_even_when_marked_or_recorded() {
        // An earlier version recorded the node's address when it was granted here and
        // found it already up; or the Node lists an address the agent's marker is on.
        let recorded = map(&[("10.0.0.11", "ns/db"), ("10.0.0.12", "ns/db")]);
        let on_link = [primary(), host("10.0.0.12", true)];
        let sorted = sort(
            &recorded,
            &on_link,
            &set(&["10.0.0.11", "10.0.0.12"]),
            &BTreeMap::new(),
        );
        assert!(sorted.held.is_empty());
        assert_eq!(sorted.forgotten, vec![ip("10.0.0.11"), ip("10.0.0.12")]);
        assert!(to_take_down(&sorted.held, &BTreeMap::new()).is_empty());
    }

    #[test]
    fn only_the_host_address_the_agent_added_is_its_own() {
        // The same address as a /24 as well: the node's, so neither is touched.
        let recorded = map(&[("10.0.0.11", "ns/db")]);
        let on_link = [primary(), host("10.0.0.11", true)];
        let sorted = sort(&recorded, &on_link, &BTreeSet::new(), &BTreeMap::new());
        assert!(sorted.held.is_empty());
        assert_eq!(sorted.forgotten, vec![ip("10.0.0.11")]);
    }

    #[test]
    fn a_recorded_address_gone_from_the_interface_is_dropped() {
        let recorded = map(&[("10.0.0.200", "ns/db")]);
        let sorted = sort(&recorded, &[primary()], &BTreeSet::new(), &recorded);
        assert!(sorted.held.is_empty());
        assert!(sorted.forgotten.is_empty());
        // Granted still: it comes up again.
        let (up, refused) = to_bring_up(&recorded, &sorted.held, &sorted.own);
        assert_eq!(up, recorded);
        assert!(refused.is_empty());
    }

    #[test]
    fn a_granted_node_address_is_refused_and_the_rest_comes_up() {
        let want = map(&[
            ("10.0.0.11", "ns/db"),
            ("10.0.0.200", "ns/db"),
            ("10.0.0.201", "ns/web"),
            ("198.51.100.7", "ns/db"),
        ]);
        let held = map(&[("10.0.0.201", "ns/web")]);
        // 198.51.100.7: the node's ExternalIP, on no interface the agent looks at.
        let own = set(&["10.0.0.11", "198.51.100.7"]);
        let (up, refused) = to_bring_up(&want, &held, &own);
        assert_eq!(up, map(&[("10.0.0.200", "ns/db")]));
        assert_eq!(refused, own);
    }
}
