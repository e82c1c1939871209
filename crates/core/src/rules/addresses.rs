//! Which virtual IPs and external hostnames a namespace may use on a cluster: the cluster's
//! address pools and DNS zones say what its administrator granted, and some addresses are
//! never granted, whatever a pool says (a node's own address, the cluster's Service and pod
//! ranges, and the special-purpose addresses). One definition, used by the controller (which
//! serves only what passes) and by `kubectl failover validate` (which reports the rest).

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use kube::ResourceExt;

use crate::api::{
    AddressPool, DnsZone, FailoverClusterInstance, FailoverClusterSpec, NamespaceGrant,
};

/// The `parentRef` group of the controller's `IPAddress` claims on virtual IPs.
pub const CLAIM_PARENT_GROUP: &str = "kube-failover.io";
/// The `parentRef` resource of those claims.
pub const CLAIM_PARENT_RESOURCE: &str = "failoverclusterinstances";

/// The cluster's own addresses: every node's addresses (`status.addresses`) and pod ranges
/// (`spec.podCIDRs`, else `spec.podCIDR`), and the Service ranges of the `ServiceCIDR`
/// objects. What does not parse is left out.
pub fn reserved_from<'a>(
    nodes: impl IntoIterator<Item = &'a Node>,
    service_cidrs: impl IntoIterator<Item = &'a ServiceCIDR>,
) -> Reserved {
    let mut r = Reserved::default();
    for node in nodes {
        let name = node.name_any();
        let addresses = node.status.as_ref().and_then(|s| s.addresses.as_ref());
        for a in addresses.into_iter().flatten() {
            if let Ok(ip) = a.address.parse::<IpAddr>() {
                r.node_addresses.insert(ip, name.clone());
            }
        }
        let spec = node.spec.as_ref();
        let cidrs = spec
            .and_then(|s| s.pod_cidrs.clone())
            .or_else(|| spec.and_then(|s| s.pod_cidr.clone()).map(|c| vec![c]))
            .unwrap_or_default();
        for c in cidrs {
            if let Ok(net) = c.parse() {
                r.pod_cidrs.push((net, name.clone()));
            }
        }
    }
    for sc in service_cidrs {
        let cidrs = sc.spec.as_ref().and_then(|s| s.cidrs.clone());
        for c in cidrs.unwrap_or_default() {
            if let Ok(net) = c.parse() {
                r.service_cidrs.push((net, sc.name_any()));
            }
        }
    }
    r
}

/// Whether `claim` is `fci`'s own claim on its address.
pub fn claimed_by(claim: &IPAddress, fci: &FailoverClusterInstance) -> bool {
    let p = &claim.spec.parent_ref;
    p.group.as_deref() == Some(CLAIM_PARENT_GROUP)
        && p.resource == CLAIM_PARENT_RESOURCE
        && p.namespace == fci.namespace()
        && p.name == fci.name_any()
}

/// Who holds an `IPAddress`, as messages name it: `instance NS/NAME` for an instance's
/// claim, else the parent's resource and name (`services NS/NAME`).
pub fn claim_holder(claim: &IPAddress) -> String {
    let p = &claim.spec.parent_ref;
    let resource =
        if p.resource == CLAIM_PARENT_RESOURCE && p.group.as_deref() == Some(CLAIM_PARENT_GROUP) {
            "instance"
        } else {
            p.resource.as_str()
        };
    match p.namespace.as_deref().filter(|n| !n.is_empty()) {
        Some(ns) => format!("{resource} {ns}/{}", p.name),
        None => format!("{resource} {}", p.name),
    }
}

/// Addresses that belong to the cluster itself and are never a virtual IP.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reserved {
    /// Every node's addresses (`status.addresses`): address → node.
    pub node_addresses: BTreeMap<IpAddr, String>,
    /// The Service address ranges (the `ServiceCIDR` objects), with the name of each.
    pub service_cidrs: Vec<(IpNet, String)>,
    /// The pod address ranges (each node's `spec.podCIDRs`), with the node of each.
    pub pod_cidrs: Vec<(IpNet, String)>,
}

impl Reserved {
    /// Why `ip` can never be a virtual IP, if it cannot.
    pub fn why(&self, ip: IpAddr) -> Option<String> {
        if let Some(special) = special_purpose(ip) {
            return Some(format!("{ip} is {special}"));
        }
        if let Some(node) = self.node_addresses.get(&ip) {
            return Some(format!("{ip} is an address of node {node}"));
        }
        if let Some((net, name)) = self.service_cidrs.iter().find(|(n, _)| n.contains(&ip)) {
            return Some(format!(
                "{ip} lies in the cluster's Service range {net} (ServiceCIDR {name})"
            ));
        }
        if let Some((net, node)) = self.pod_cidrs.iter().find(|(n, _)| n.contains(&ip)) {
            return Some(format!("{ip} lies in the pod range {net} of node {node}"));
        }
        None
    }

    /// What of the cluster's own addresses the range `net` overlaps, if anything.
    pub fn overlaps(&self, net: &IpNet) -> Vec<String> {
        let mut found = Vec::new();
        if let Some(node_ip) = self.node_addresses.iter().find(|(ip, _)| net.contains(*ip)) {
            found.push(format!("address {} of node {}", node_ip.0, node_ip.1));
        }
        for (n, name) in &self.service_cidrs {
            if nets_overlap(net, n) {
                found.push(format!("Service range {n} (ServiceCIDR {name})"));
            }
        }
        for (n, node) in &self.pod_cidrs {
            if nets_overlap(net, n) {
                found.push(format!("pod range {n} of node {node}"));
            }
        }
        found
    }
}

fn nets_overlap(a: &IpNet, b: &IpNet) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The kinds of address that are never anyone's virtual IP.
fn special_purpose(ip: IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        return Some("the unspecified address");
    }
    if ip.is_loopback() {
        return Some("a loopback address");
    }
    if ip.is_multicast() {
        return Some("a multicast address");
    }
    match ip {
        IpAddr::V4(v4) if v4.is_broadcast() => Some("the broadcast address"),
        IpAddr::V4(v4) if v4.is_link_local() => Some("a link-local address"),
        IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => Some("a link-local address"),
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => {
            Some("an IPv4-mapped IPv6 address (write the IPv4 address)")
        }
        _ => None,
    }
}

/// Who may use a pool or a zone: `None` is every namespace the cluster allows.
fn open_to(
    namespaces: Option<&NamespaceGrant>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    namespaces.is_none_or(|n| n.allows(namespace, labels))
}

/// A virtual IP, judged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VipVerdict {
    /// In the named pool, which the namespace may use.
    Allowed { pool: String },
    /// Not an address at all (admission refuses these).
    NotAnAddress,
    /// One of the cluster's own addresses, or a special-purpose one: never served.
    Reserved { why: String },
    /// In no pool that the namespace may use; `pools` are those it may use.
    NotInPool { pools: Vec<String> },
}

/// Judges `vip`, as an instance of `namespace` (with `labels`) declares it on `cluster`.
pub fn judge_vip(
    vip: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    cluster: &FailoverClusterSpec,
    reserved: &Reserved,
) -> VipVerdict {
    let Ok(ip) = vip.parse::<IpAddr>() else {
        return VipVerdict::NotAnAddress;
    };
    if let Some(why) = reserved.why(ip) {
        return VipVerdict::Reserved { why };
    }
    let usable: Vec<&AddressPool> = cluster
        .address_pools
        .iter()
        .filter(|p| open_to(p.namespaces.as_ref(), namespace, labels))
        .collect();
    match usable.iter().find(|p| pool_contains(p, ip)) {
        Some(pool) => VipVerdict::Allowed {
            pool: pool.name.clone(),
        },
        None => VipVerdict::NotInPool {
            pools: usable.iter().map(|p| p.name.clone()).collect(),
        },
    }
}

/// The pool's ranges, parsed (admission refuses a range that does not parse; one that
/// slipped through contains nothing).
pub fn pool_nets(pool: &AddressPool) -> Vec<IpNet> {
    pool.cidrs.iter().filter_map(|c| c.parse().ok()).collect()
}

fn pool_contains(pool: &AddressPool, ip: IpAddr) -> bool {
    pool_nets(pool).iter().any(|n| n.contains(&ip))
}

/// The cluster's pools that overlap its own addresses, each with what it overlaps.
pub fn pools_overlapping(
    cluster: &FailoverClusterSpec,
    reserved: &Reserved,
) -> Vec<(String, Vec<String>)> {
    cluster
        .address_pools
        .iter()
        .filter_map(|p| {
            let found: Vec<String> = pool_nets(p)
                .iter()
                .flat_map(|n| reserved.overlaps(n))
                .collect();
            (!found.is_empty()).then(|| (p.name.clone(), found))
        })
        .collect()
}

/// Whether `hostname` lies in a zone of `cluster` that `namespace` may use: `Ok(zone)`, or
/// `Err(zones it may use)`.
pub fn judge_hostname(
    hostname: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    cluster: &FailoverClusterSpec,
) -> Result<String, Vec<String>> {
    let host = hostname.trim_end_matches('.').to_ascii_lowercase();
    let usable: Vec<&DnsZone> = cluster
        .dns_zones
        .iter()
        .filter(|z| open_to(z.namespaces.as_ref(), namespace, labels))
        .collect();
    usable
        .iter()
        .find(|z| in_zone(&host, &z.zone))
        .map(|z| z.zone.clone())
        .ok_or_else(|| usable.iter().map(|z| z.zone.clone()).collect())
}

/// `host` is the zone or a name under it (label-wise: `evilexample.com` is not under
/// `example.com`).
fn in_zone(host: &str, zone: &str) -> bool {
    let zone = zone.trim_end_matches('.').to_ascii_lowercase();
    host == zone
        || host
            .strip_suffix(&zone)
            .is_some_and(|rest| rest.ends_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(json: serde_json::Value) -> FailoverClusterSpec {
        serde_json::from_value(json).unwrap()
    }

    fn labels() -> BTreeMap<String, String> {
        BTreeMap::new()
    }

    fn pools() -> FailoverClusterSpec {
        cluster(serde_json::json!({
            "addressPools": [
                {"name": "s-only", "cidrs": ["192.0.2.0/28"], "namespaces": {"names": ["s"]}},
                {"name": "shared", "cidrs": ["198.51.100.0/24", "2001:db8::/120"]},
            ]
        }))
    }

    fn reserved() -> Reserved {
        Reserved {
            node_addresses: [("198.51.100.7".parse().unwrap(), "node-1".to_string())].into(),
            service_cidrs: vec![("10.96.0.0/16".parse().unwrap(), "kubernetes".into())],
            pod_cidrs: vec![("10.244.1.0/24".parse().unwrap(), "node-1".into())],
        }
    }

    #[test]
    fn a_vip_is_allowed_only_in_a_pool_its_namespace_may_use() {
        let (c, r) = (pools(), reserved());
        let judge = |vip, ns| judge_vip(vip, ns, &labels(), &c, &r);
        assert_eq!(
            judge("192.0.2.5", "s"),
            VipVerdict::Allowed {
                pool: "s-only".into()
            }
        );
        assert_eq!(
            judge("192.0.2.5", "t"),
            VipVerdict::NotInPool {
                pools: vec!["shared".into()]
            },
            "t may not take from s's pool, and is told which pools it may use"
        );
        assert_eq!(
            judge("2001:db8::10", "t"),
            VipVerdict::Allowed {
                pool: "shared".into()
            }
        );
        assert_eq!(
            judge("203.0.113.1", "s"),
            VipVerdict::NotInPool {
                pools: vec!["s-only".into(), "shared".into()]
            }
        );
        assert_eq!(judge("not-an-ip", "s"), VipVerdict::NotAnAddress);
    }

    #[test]
    fn no_pool_means_no_virtual_ip() {
        let c = cluster(serde_json::json!({}));
        assert_eq!(
            judge_vip("192.0.2.5", "s", &labels(), &c, &Reserved::default()),
            VipVerdict::NotInPool { pools: vec![] }
        );
    }

    #[test]
    fn the_clusters_own_addresses_are_never_served_whatever_the_pools_say() {
        // A pool that covers everything.
        let c = cluster(serde_json::json!({
            "addressPools": [{"name": "all", "cidrs": ["0.0.0.0/0", "::/0"]}]
        }));
        let r = reserved();
        for (vip, why) in [
            ("198.51.100.7", "an address of node node-1"),
            ("10.96.0.1", "Service range 10.96.0.0/16"),
            ("10.244.1.9", "pod range 10.244.1.0/24 of node node-1"),
            ("127.0.0.1", "loopback"),
            ("::1", "loopback"),
            ("169.254.169.254", "link-local"),
            ("fe80::1", "link-local"),
            ("224.0.0.1", "multicast"),
            ("ff02::1", "multicast"),
            ("0.0.0.0", "unspecified"),
            ("::", "unspecified"),
            ("255.255.255.255", "broadcast"),
            ("::ffff:192.0.2.1", "IPv4-mapped"),
        ] {
            match judge_vip(vip, "s", &labels(), &c, &r) {
                VipVerdict::Reserved { why: w } => assert!(w.contains(why), "{vip}: {w}"),
                other => panic!("{vip} judged {other:?}"),
            }
        }
        assert!(matches!(
            judge_vip("192.0.2.1", "s", &labels(), &c, &r),
            VipVerdict::Allowed { .. }
        ));
    }

    #[test]
    fn a_pool_that_overlaps_the_clusters_own_ranges_is_reported() {
        let c = cluster(serde_json::json!({
            "addressPools": [
                {"name": "bad", "cidrs": ["10.96.0.0/12"]},
                {"name": "nodes", "cidrs": ["198.51.100.0/24"]},
                {"name": "fine", "cidrs": ["192.0.2.0/24"]},
            ]
        }));
        let found = pools_overlapping(&c, &reserved());
        let names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["bad", "nodes"]);
        assert!(
            found[0]
                .1
                .iter()
                .any(|w| w.contains("ServiceCIDR kubernetes"))
        );
        assert!(found[1].1.iter().any(|w| w.contains("node-1")));
    }

    #[test]
    fn a_hostname_must_lie_in_a_zone_its_namespace_may_use() {
        let c = cluster(serde_json::json!({
            "dnsZones": [
                {"zone": "s.example.com", "namespaces": {"names": ["s"]}},
                {"zone": "shared.example.com"},
            ]
        }));
        let judge = |h, ns| judge_hostname(h, ns, &labels(), &c);
        assert_eq!(judge("db.s.example.com", "s"), Ok("s.example.com".into()));
        assert_eq!(judge("s.example.com.", "s"), Ok("s.example.com".into()));
        assert_eq!(
            judge("db.s.example.com", "t"),
            Err(vec!["shared.example.com".into()])
        );
        // Label-wise: a name that merely ends with the zone's text is not in it.
        assert!(judge("evils.example.com", "s").is_err());
        assert!(judge("www.example.com", "s").is_err());
        assert_eq!(
            judge_hostname("a.b", "s", &labels(), &cluster(serde_json::json!({}))),
            Err(vec![])
        );
    }
}
