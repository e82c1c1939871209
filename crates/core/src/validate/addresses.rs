//! Address grants: each instance's virtual IPs and external hostname against what its
//! FailoverCluster grants its namespace, and each cluster's address pools against the
//! cluster's own addresses. The rules are the controller's ([`crate::rules::judge_vip`],
//! [`crate::rules::judge_hostname`], [`crate::rules::pools_overlapping`]): what fails here
//! is what the controller withholds (condition `NetworkName=False`) while the instance runs.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::IPAddress;
use kube::ResourceExt;

use super::Check;
use crate::api::{FailoverCluster, FailoverClusterInstance};
use crate::rules::{
    Reserved, VipVerdict, claim_holder, claimed_by, judge_hostname, judge_vip, pools_overlapping,
};

/// What the controller does with a virtual IP or hostname outside its grant.
const WITHHELD: &str = "the controller withholds it (condition NetworkName=False); the \
                        instance runs and fails over without it";

/// The cluster's address pools overlap none of its own addresses (nodes' addresses, pod
/// ranges, Service ranges). An overlap is a WARN, not a FAIL: the controller never serves
/// those addresses whatever the pool says (an instance that declares one fails its own
/// `networkName` check), so nothing stops working; but the pool promises tenants addresses
/// they can never have.
pub fn judge_pools(cluster: &FailoverCluster, reserved: &Reserved) -> Check {
    let subject = format!("cluster {} address pools", cluster.name_any());
    let pools = &cluster.spec.address_pools;
    if pools.is_empty() {
        return Check::pass(
            "addressPools",
            subject,
            "no address pools: its instances are granted no virtual IPs",
        );
    }
    let overlapping = pools_overlapping(&cluster.spec, reserved);
    if overlapping.is_empty() {
        return Check::pass(
            "addressPools",
            subject,
            format!(
                "none of its {} pools overlaps the cluster's own addresses (nodes' addresses, \
                 pod and Service ranges)",
                pools.len()
            ),
        );
    }
    let found = overlapping
        .iter()
        .map(|(pool, what)| format!("pool {pool} overlaps {}", what.join(", ")))
        .collect::<Vec<_>>()
        .join("; ");
    Check::warn(
        "addressPools",
        subject,
        format!(
            "{found}: the controller never serves those addresses as virtual IPs, whatever \
             the pool grants (condition AddressPools=False); an instance given one goes \
             without it"
        ),
        "narrow spec.addressPools to leave the cluster's own addresses out",
    )
}

/// What an instance declares of its network name against what its cluster grants its
/// namespace: each virtual IP in a pool the namespace may use, none of the cluster's own
/// or a special-purpose address, none held by another's `IPAddress`; its external hostname
/// in a DNS zone the namespace may use. A virtual IP or hostname outside its grant FAILs:
/// the controller withholds it (condition `NetworkName=False`) and clients cannot reach the
/// instance there, though it runs and fails over. An address held by another WARNs: it is
/// served here once the holder lets it go. `claims` are the cluster's `IPAddress` objects.
pub fn judge_network_name(
    fci: &FailoverClusterInstance,
    cluster: &FailoverCluster,
    namespace_labels: &BTreeMap<String, String>,
    reserved: &Reserved,
    claims: Result<&[IPAddress], &str>,
) -> Vec<Check> {
    let subject = format!("instance {} network name", fci.key());
    let ns = fci.namespace().unwrap_or_default();
    let cref = &fci.spec.cluster_ref;
    let mut out = Vec::new();
    // What passes: each virtual IP with its pool, the hostname with its zone.
    let mut vips_granted = Vec::new();
    let mut host_granted = None;
    // Granted addresses whose holder could not be read.
    let mut holder_unread = Vec::new();
    let claims: Result<BTreeMap<String, &IPAddress>, &str> =
        claims.map(|c| c.iter().map(|a| (a.name_any(), a)).collect());
    for vip in &fci.spec.virtual_ips {
        let pool = match judge_vip(vip, &ns, namespace_labels, &cluster.spec, reserved) {
            VipVerdict::Allowed { pool } => pool,
            refused => {
                out.push(refused_vip(vip, refused, &subject, cref, &ns));
                continue;
            }
        };
        let Ok(claims) = &claims else {
            holder_unread.push(vip.as_str());
            vips_granted.push(format!("{vip} (pool {pool})"));
            continue;
        };
        // The claim's name is the address's canonical text.
        let claim = vip
            .parse::<IpAddr>()
            .ok()
            .and_then(|ip| claims.get(&ip.to_string()).copied());
        match claim {
            Some(c) if claimed_by(c, fci) => {
                vips_granted.push(format!("{vip} (pool {pool}, claimed for it)"));
            }
            Some(c) => out.push(Check::warn(
                "networkName",
                &subject,
                format!(
                    "virtual IP {vip} is held by {} (IPAddress {}): the controller serves it \
                     here only once that lets it go (condition NetworkName=False, reason \
                     VirtualIPInUse)",
                    claim_holder(c),
                    c.name_any()
                ),
                format!(
                    "give one of the two another address, or delete {}",
                    claim_holder(c)
                ),
            )),
            None => vips_granted.push(format!(
                "{vip} (pool {pool}, not claimed yet: the controller claims it as it serves it)"
            )),
        }
    }
    if let Some(host) = &fci.spec.network_name.external_hostname {
        match judge_hostname(host, &ns, namespace_labels, &cluster.spec) {
            Ok(zone) => host_granted = Some(format!("external hostname {host} (zone {zone})")),
            Err(zones) if zones.is_empty() => out.push(Check::fail(
                "networkName",
                &subject,
                format!(
                    "external hostname {host} lies in no DNS zone of cluster {cref} that \
                     namespace {ns} may use: the cluster grants it none; {WITHHELD}"
                ),
                format!(
                    "a cluster administrator can add a zone granted to {ns} to the \
                     FailoverCluster's spec.dnsZones"
                ),
            )),
            Err(zones) => {
                let zones = named("zone", "zones", &zones);
                out.push(Check::fail(
                    "networkName",
                    &subject,
                    format!(
                        "external hostname {host} lies in no DNS zone of cluster {cref} that \
                         namespace {ns} may use (it may use {zones}); {WITHHELD}"
                    ),
                    format!(
                        "use a name in {zones}, or have a cluster administrator grant {ns} a \
                         zone that holds it (spec.dnsZones)"
                    ),
                ))
            }
        }
    }
    if let (Err(e), false) = (&claims, holder_unread.is_empty()) {
        out.push(Check::warn(
            "networkName",
            &subject,
            format!(
                "not checked whether another holds {}: {e}",
                holder_unread.join(", ")
            ),
            "run validate as someone who may read it (see docs/operations.md)",
        ));
    }
    if out.is_empty() {
        let mut parts = Vec::new();
        if !vips_granted.is_empty() {
            let noun = if vips_granted.len() == 1 {
                "virtual IP"
            } else {
                "virtual IPs"
            };
            parts.push(format!("{noun} {}", vips_granted.join(", ")));
        }
        parts.extend(host_granted);
        if !parts.is_empty() {
            out.push(Check::pass(
                "networkName",
                subject,
                format!(
                    "granted to namespace {ns} by cluster {cref}: {}",
                    parts.join("; ")
                ),
            ));
        }
    }
    out
}

/// The check for a virtual IP that the controller never serves.
fn refused_vip(vip: &str, verdict: VipVerdict, subject: &str, cref: &str, ns: &str) -> Check {
    match verdict {
        VipVerdict::Allowed { .. } | VipVerdict::NotAnAddress => Check::fail(
            "networkName",
            subject,
            format!("virtual IP {vip} is not an IP address: it is never served"),
            "write it as an IPv4 (192.0.2.10) or IPv6 (2001:db8::10) address in spec.virtualIPs",
        ),
        VipVerdict::Reserved { why } => Check::fail(
            "networkName",
            subject,
            format!("virtual IP {vip} is never served: {why}; {WITHHELD}"),
            "use an address from a pool its namespace may use, outside the cluster's nodes' \
             addresses and pod and Service ranges",
        ),
        VipVerdict::NotInPool { pools } if pools.is_empty() => Check::fail(
            "networkName",
            subject,
            format!(
                "virtual IP {vip} lies in no address pool of cluster {cref} that namespace {ns} \
                 may use: the cluster grants it none; {WITHHELD}"
            ),
            format!(
                "a cluster administrator can add a pool granted to {ns} to the \
                 FailoverCluster's spec.addressPools"
            ),
        ),
        VipVerdict::NotInPool { pools } => {
            let pools = named("pool", "pools", &pools);
            Check::fail(
                "networkName",
                subject,
                format!(
                    "virtual IP {vip} lies in no address pool of cluster {cref} that namespace \
                     {ns} may use (it may use {pools}); {WITHHELD}"
                ),
                format!(
                    "use an address from {pools}, or have a cluster administrator grant {ns} a \
                     pool that holds it (spec.addressPools)"
                ),
            )
        }
    }
}

/// `pool a` or `pools a, b`.
fn named(one: &str, many: &str, names: &[String]) -> String {
    let noun = if names.len() == 1 { one } else { many };
    format!("{noun} {}", names.join(", "))
}
