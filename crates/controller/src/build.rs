//! `build`: the desired objects of an instance, as pure functions of its spec.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, Service, ServicePort,
    ServiceSpec, Volume,
};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use kube_failover_core::api::{
    CLAIM_TEMPLATE_LABEL, FailoverClusterInstance, INSTANCE_LABEL, InstanceClaim, VipMode,
};

pub const SPEC_HASH_ANNOTATION: &str = "kube-failover.io/spec-hash";
pub const EXTERNAL_DNS_ANNOTATION: &str = "external-dns.alpha.kubernetes.io/hostname";
pub const MANAGED_BY: &str = "kube-failover.io";

/// Whether an object was made for this instance (it names the instance as its controller).
pub fn owned_by(meta: &ObjectMeta, fci: &FailoverClusterInstance) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| Some(&o.uid) == fci.metadata.uid.as_ref())
}

fn owner_ref(fci: &FailoverClusterInstance) -> Vec<OwnerReference> {
    fci.controller_owner_ref(&()).into_iter().collect()
}

fn meta(
    fci: &FailoverClusterInstance,
    name: String,
    extra: BTreeMap<String, String>,
) -> ObjectMeta {
    let mut labels = extra;
    labels.insert(INSTANCE_LABEL.into(), fci.name_any());
    labels.insert("app.kubernetes.io/managed-by".into(), MANAGED_BY.into());
    ObjectMeta {
        name: Some(name),
        namespace: fci.namespace(),
        labels: Some(labels),
        owner_references: Some(owner_ref(fci)),
        ..Default::default()
    }
}

fn service_ports(fci: &FailoverClusterInstance) -> Vec<ServicePort> {
    fci.spec
        .network_name
        .ports
        .iter()
        .map(|p| ServicePort {
            name: Some(p.name.clone()),
            port: i32::from(p.port),
            target_port: Some(IntOrString::Int(i32::from(p.target_port.unwrap_or(p.port)))),
            protocol: Some(format!("{:?}", p.protocol)),
            ..Default::default()
        })
        .collect()
}

/// A stable hash of what the Service is made from, so that `observe` can tell from the store
/// whether it needs applying.
pub fn service_hash(fci: &FailoverClusterInstance) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&(
        &fci.spec.network_name,
        &fci.spec.virtual_ips,
        fci.spec.vip_mode,
    ))
    .unwrap_or_default()
    .hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Annotations that MetalLB and kube-vip read for the addresses a LoadBalancer Service asks
/// for (`spec.loadBalancerIP` is deprecated and holds one address only).
pub const LOAD_BALANCER_IP_ANNOTATIONS: [&str; 2] =
    ["metallb.io/loadBalancerIPs", "kube-vip.io/loadbalancerIPs"];

/// The Service of the network name: no selector (the controller owns its EndpointSlice),
/// traffic kept on the owner node. The virtual IPs go where `vipMode` says: external IPs,
/// a LoadBalancer request, or nowhere (the node agent brings them up on the owner).
pub fn service(fci: &FailoverClusterInstance) -> Service {
    let mut m = meta(fci, fci.spec.network_name.name.clone(), BTreeMap::new());
    let mut annotations = BTreeMap::from([(SPEC_HASH_ANNOTATION.to_string(), service_hash(fci))]);
    if let Some(host) = &fci.spec.network_name.external_hostname {
        annotations.insert(EXTERNAL_DNS_ANNOTATION.into(), host.clone());
    }
    let vips = &fci.spec.virtual_ips;
    let mut spec = ServiceSpec {
        ports: Some(service_ports(fci)),
        ..Default::default()
    };
    match fci.spec.vip_mode {
        _ if vips.is_empty() => {}
        VipMode::ExternalIPs => {
            spec.external_ips = Some(vips.clone());
            spec.external_traffic_policy = Some("Local".into());
        }
        VipMode::LoadBalancer => {
            spec.type_ = Some("LoadBalancer".into());
            spec.external_traffic_policy = Some("Local".into());
            if let [one] = vips.as_slice() {
                spec.load_balancer_ip = Some(one.clone());
            }
            for key in LOAD_BALANCER_IP_ANNOTATIONS {
                annotations.insert(key.into(), vips.join(","));
            }
        }
        VipMode::Agent => {}
    }
    m.annotations = Some(annotations);
    Service {
        metadata: m,
        spec: Some(spec),
        status: None,
    }
}

/// The address family of the network name's EndpointSlice (immutable once created): that
/// of the addresses it lists; with none, the Service's first IP family as the API server
/// allocated it; before that, IPv6 when every virtual IP is IPv6; else IPv4.
pub fn slice_family(
    fci: &FailoverClusterInstance,
    addresses: &[String],
    service: Option<&Service>,
) -> &'static str {
    let v6 = |a: &String| a.contains(':');
    if let Some(a) = addresses.first() {
        return if v6(a) { "IPv6" } else { "IPv4" };
    }
    let allocated = service.and_then(|s| s.spec.as_ref()?.ip_families.as_ref()?.first().cloned());
    match allocated.as_deref() {
        Some("IPv6") => "IPv6",
        Some(_) => "IPv4",
        None if !fci.spec.virtual_ips.is_empty() && fci.spec.virtual_ips.iter().all(v6) => "IPv6",
        None => "IPv4",
    }
}

/// The label that attaches an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The EndpointSlice of the network name, of address family `family`, listing exactly
/// `addresses`; attached to the Service of that name (`attach`) unless that Service is
/// another's.
pub fn endpoint_slice(
    fci: &FailoverClusterInstance,
    family: &str,
    addresses: &[String],
    pod: Option<&kube_failover_core::kinds::CachedPod>,
    attach: bool,
) -> EndpointSlice {
    let net = fci.spec.network_name.name.clone();
    let mut labels = BTreeMap::from([(
        "endpointslice.kubernetes.io/managed-by".to_string(),
        MANAGED_BY.to_string(),
    )]);
    if attach {
        labels.insert(SERVICE_NAME_LABEL.to_string(), net.clone());
    }
    EndpointSlice {
        metadata: meta(fci, net, labels),
        address_type: family.to_string(),
        endpoints: Some(
            addresses
                .iter()
                .map(|a| Endpoint {
                    addresses: vec![a.clone()],
                    conditions: Some(EndpointConditions {
                        ready: Some(true),
                        serving: Some(true),
                        terminating: Some(false),
                    }),
                    node_name: pod.and_then(|p| p.spec.as_ref()?.node_name.clone()),
                    target_ref: pod.map(|p| ObjectReference {
                        kind: Some("Pod".into()),
                        name: p.metadata.name.clone(),
                        namespace: p.metadata.namespace.clone(),
                        uid: p.metadata.uid.clone(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .collect(),
        ),
        ports: Some(
            fci.spec
                .network_name
                .ports
                .iter()
                .map(|p| EndpointPort {
                    name: Some(p.name.clone()),
                    port: Some(i32::from(p.target_port.unwrap_or(p.port))),
                    protocol: Some(format!("{:?}", p.protocol)),
                    ..Default::default()
                })
                .collect(),
        ),
    }
}

/// The workload pod of move `seq`, pinned to `node`, with every claim as a volume named after
/// the claim (unless the template already defines a volume of that name).
pub fn pod(fci: &FailoverClusterInstance, node: &str, seq: u64) -> Pod {
    let template = fci.spec.template.spec();
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert("kube-failover.io/move".into(), seq.to_string());
    let mut m = meta(
        fci,
        kube_failover_core::decide::pod_name(&fci.name_any(), seq),
        labels,
    );
    m.annotations = template
        .metadata
        .as_ref()
        .and_then(|m| m.annotations.clone());
    let mut spec = template.spec.unwrap_or_default();
    spec.node_name = Some(node.to_string());
    let volumes = spec.volumes.get_or_insert_with(Vec::new);
    for InstanceClaim { claim, volume, .. } in fci.claims() {
        if volumes.iter().any(|v| v.name == volume) {
            continue;
        }
        volumes.push(Volume {
            name: volume,
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim,
                read_only: None,
            }),
            ..Default::default()
        });
    }
    Pod {
        metadata: m,
        spec: Some(spec),
        status: None,
    }
}

/// Claims made from the instance's templates.
pub fn claims(fci: &FailoverClusterInstance) -> Vec<PersistentVolumeClaim> {
    fci.spec
        .storage
        .claim_templates
        .iter()
        .map(|t| PersistentVolumeClaim {
            metadata: meta(
                fci,
                fci.template_claim_name(&t.name),
                BTreeMap::from([(CLAIM_TEMPLATE_LABEL.to_string(), t.name.clone())]),
            ),
            spec: Some(t.spec.clone()),
            status: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fci(vips: &[&str]) -> FailoverClusterInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1",
            "kind": "FailoverClusterInstance",
            "metadata": {"name": "db", "namespace": "ns"},
            "spec": {
                "clusterRef": "c",
                "networkName": {"name": "db", "ports": [{"name": "sql", "port": 5432}]},
                "virtualIPs": vips,
                "template": {"spec": {"containers": [{"name": "db", "image": "db"}]}},
            }
        }))
        .unwrap()
    }

    #[test]
    fn an_ipv6_only_instance_gets_an_ipv6_slice_before_it_has_an_address() {
        assert_eq!(slice_family(&fci(&["2001:db8::10"]), &[], None), "IPv6");
        assert_eq!(slice_family(&fci(&["192.0.2.10"]), &[], None), "IPv4");
        assert_eq!(slice_family(&fci(&[]), &["fd00::5".into()], None), "IPv6");
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db"}, "spec": {"ipFamilies": ["IPv6"]}
        }))
        .unwrap();
        assert_eq!(slice_family(&fci(&[]), &[], Some(&svc)), "IPv6");
    }
}
