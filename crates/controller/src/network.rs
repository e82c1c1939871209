//! What of an instance's network name the controller may serve: its virtual IPs only where
//! the cluster's address pools grant them to the namespace, never one of the cluster's own
//! addresses, and each only once the API server has given this instance its `IPAddress`
//! claim; its external hostname only in a DNS zone granted to the namespace. Everything
//! downstream (the Service, the status the agents read, `decide`) is handed the admitted
//! instance, so that what a tenant declares beyond its grant reaches nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use k8s_openapi::api::networking::v1::{IPAddress, IPAddressSpec, ParentReference};
use kube::ResourceExt;
use kube::api::ObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance, reason};
pub use kube_failover_core::rules::claimed_by;
use kube_failover_core::rules::{
    CLAIM_PARENT_GROUP, CLAIM_PARENT_RESOURCE, Reserved, VipVerdict, claim_holder, judge_hostname,
    judge_vip, reserved_from,
};

use super::observe::Stores;

/// The label that marks the `IPAddress` claims this controller makes.
pub const MANAGED_BY_LABEL: &str = "ipaddress.kubernetes.io/managed-by";
/// Its value.
pub const MANAGED_BY: &str = "kube-failover.io";

/// An instance as it may be served, and what was withheld.
pub struct Admitted {
    /// The instance with only the virtual IPs and hostname it may serve.
    pub instance: FailoverClusterInstance,
    /// What was withheld, and why: (reason, message).
    pub withheld: Vec<(String, String)>,
    /// Addresses granted and not yet claimed.
    pub to_claim: Vec<String>,
    /// This instance's claims on addresses it may no longer serve.
    pub to_release: Vec<String>,
}

/// The cluster's own addresses, from the caches: every node's addresses and pod ranges, and
/// the Service ranges.
pub fn reserved(stores: &Stores) -> Reserved {
    let nodes = stores.nodes.state();
    let cidrs = stores.service_cidrs.state();
    reserved_from(
        nodes.iter().map(|n| n.as_ref()),
        cidrs.iter().map(|c| c.as_ref()),
    )
}

/// The canonical text of an address (the `IPAddress` object's name).
pub(crate) fn canonical(vip: &str) -> Option<String> {
    vip.parse::<IpAddr>().ok().map(|ip| ip.to_string())
}

/// Judges what `fci` may serve of its network name on `cluster`. `fresh` are claims as the
/// API server answered them this round, ahead of the cache.
pub fn admit(
    fci: &FailoverClusterInstance,
    cluster: Option<&FailoverCluster>,
    stores: &Stores,
    fresh: &[IPAddress],
) -> Admitted {
    let ns = fci.namespace().unwrap_or_default();
    let labels = super::observe::namespace_labels(stores, &ns);
    let mut admitted = Admitted {
        instance: fci.clone(),
        withheld: Vec::new(),
        to_claim: Vec::new(),
        to_release: Vec::new(),
    };
    let mut served = Vec::new();
    // The cluster's own addresses: read from every Node, so only when there is a virtual
    // IP to judge.
    let reserved = (!fci.spec.virtual_ips.is_empty()).then(|| reserved(stores));
    // The claims on an address: as the API server answered this round, else as cached.
    let claim_on = |name: &str| {
        fresh
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(name))
            .map(|c| std::sync::Arc::new(c.clone()))
            .or_else(|| stores.ip_addresses.get(&ObjectRef::new(name)))
    };
    for vip in &fci.spec.virtual_ips {
        let verdict = match (cluster, &reserved) {
            (Some(c), Some(reserved)) => judge_vip(vip, &ns, &labels, &c.spec, reserved),
            _ => VipVerdict::NotInPool { pools: vec![] },
        };
        match verdict {
            VipVerdict::Allowed { .. } => {}
            VipVerdict::NotAnAddress => continue,
            VipVerdict::Reserved { why } => {
                admitted.withheld.push((
                    reason::VIRTUAL_IP_RESERVED.into(),
                    format!("virtual IP {vip} is never served: {why}"),
                ));
                continue;
            }
            VipVerdict::NotInPool { pools } => {
                let may = if pools.is_empty() {
                    "it may use none: a cluster administrator can add a pool to the FailoverCluster's spec.addressPools".to_string()
                } else {
                    format!("it may use {}", pools.join(", "))
                };
                admitted.withheld.push((
                    reason::VIRTUAL_IP_NOT_ALLOWED.into(),
                    format!(
                        "virtual IP {vip} lies in no address pool of FailoverCluster {:?} that this namespace may use ({may})",
                        fci.spec.cluster_ref
                    ),
                ));
                continue;
            }
        }
        let Some(name) = canonical(vip) else { continue };
        match claim_on(&name) {
            Some(c) if claimed_by(&c, fci) => served.push(vip.clone()),
            Some(c) => admitted.withheld.push((
                reason::VIRTUAL_IP_IN_USE.into(),
                format!(
                    "virtual IP {vip} is held by {}; it is served here once that lets it go",
                    claim_holder(&c)
                ),
            )),
            None => {
                admitted.withheld.push((
                    reason::VIRTUAL_IP_CLAIMING.into(),
                    format!("claiming virtual IP {vip}"),
                ));
                admitted.to_claim.push(name);
            }
        }
    }
    let mut mine: BTreeSet<String> = claims_of(fci, stores)
        .iter()
        .map(|c| c.name_any())
        .collect();
    for c in fresh {
        if claimed_by(c, fci) {
            mine.insert(c.name_any());
        } else {
            mine.remove(&c.name_any());
        }
    }
    admitted.to_release = mine
        .into_iter()
        .filter(|name| !served.iter().any(|v| canonical(v).as_ref() == Some(name)))
        .filter(|name| !admitted.to_claim.contains(name))
        .collect();
    admitted.instance.spec.virtual_ips = served;
    if let Some(host) = &fci.spec.network_name.external_hostname {
        let verdict = match cluster {
            Some(c) => judge_hostname(host, &ns, &labels, &c.spec),
            None => Err(vec![]),
        };
        if let Err(zones) = verdict {
            let may = if zones.is_empty() {
                "it may use none: a cluster administrator can add a zone to the FailoverCluster's spec.dnsZones".to_string()
            } else {
                format!("it may use {}", zones.join(", "))
            };
            admitted.withheld.push((
                reason::HOSTNAME_NOT_ALLOWED.into(),
                format!(
                    "external hostname {host} lies in no DNS zone of FailoverCluster {:?} that this namespace may use ({may})",
                    fci.spec.cluster_ref
                ),
            ));
            admitted.instance.spec.network_name.external_hostname = None;
        }
    }
    admitted
}

/// The claim on `address` for `fci`.
pub fn claim(fci: &FailoverClusterInstance, address: &str) -> IPAddress {
    IPAddress {
        metadata: ObjectMeta {
            name: Some(address.to_string()),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_string(),
                MANAGED_BY.to_string(),
            )])),
            ..Default::default()
        },
        spec: IPAddressSpec {
            parent_ref: ParentReference {
                group: Some(CLAIM_PARENT_GROUP.into()),
                resource: CLAIM_PARENT_RESOURCE.into(),
                namespace: fci.namespace(),
                name: fci.name_any(),
            },
        },
    }
}

/// This instance's claims, as the cache shows them.
pub fn claims_of(fci: &FailoverClusterInstance, stores: &Stores) -> Vec<std::sync::Arc<IPAddress>> {
    let key = super::watches::key::instance(&fci.namespace().unwrap_or_default(), &fci.name_any());
    stores
        .indexes
        .ip_addresses
        .get(&key, &stores.ip_addresses)
        .into_iter()
        .filter(|c| claimed_by(c, fci))
        .collect()
}

/// The instances whose virtual IPs include `address` (woken when its claim changes).
pub fn declares(fci: &FailoverClusterInstance, address: &str) -> bool {
    fci.spec
        .virtual_ips
        .iter()
        .any(|v| canonical(v).as_deref() == Some(address))
}

/// Claims `addresses` for `fci` now, so that an address is served in the round that claims
/// it: returns each claim as the API server answered, created or, when one exists already,
/// read back (this instance's own, made in a round the cache has not caught up with, or
/// another holder's, whom the condition then names).
pub async fn claim_now(
    fci: &FailoverClusterInstance,
    addresses: &[String],
    client: &kube::Client,
) -> kube::Result<Vec<IPAddress>> {
    let api: kube::Api<IPAddress> = kube::Api::all(client.clone());
    let mut answers = Vec::new();
    for address in addresses {
        match api
            .create(&kube::api::PostParams::default(), &claim(fci, address))
            .await
        {
            Ok(created) => answers.push(created),
            Err(kube::Error::Api(e)) if e.code == 409 => {
                // Deleted since (its holder let it go): the next round claims it again.
                if let Some(existing) = api.get_opt(address).await? {
                    answers.push(existing);
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(answers)
}
