//! Virtual IPs: what each VIP mode needs.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;

use super::Check;
use crate::api::{FailoverClusterInstance, Phase, VipMode};

/// What was read for an instance's virtual IPs.
#[derive(Clone, Debug, Default)]
pub struct VipFacts {
    /// `ExternalIPs`: the answer to a dry-run create of a Service with the VIPs as
    /// `externalIPs` in the instance's namespace: `Ok`, `Err((refused, message))` where
    /// `refused` is an admission refusal (else the caller may not ask).
    pub external_ips: Option<Result<(), (bool, String)>>,
    /// `LoadBalancer`: the instance's Service.
    pub service: Option<Service>,
    /// `Agent`: each eligible owner and whether its agent Lease is fresh (`None`: absent).
    pub agents: BTreeMap<String, Option<bool>>,
}

/// What each VIP mode needs: an admitted `externalIPs` Service, a load balancer that assigns
/// the VIPs, or a node agent on the possible owners.
pub fn judge_vips(fci: &FailoverClusterInstance, f: &VipFacts) -> Vec<Check> {
    let subject = format!("instance {} virtual IPs", fci.key());
    let vips = &fci.spec.virtual_ips;
    if vips.is_empty() {
        return vec![];
    }
    match fci.spec.vip_mode {
        VipMode::ExternalIPs => external_ips(f, subject, &vips.join(", ")),
        VipMode::LoadBalancer => load_balancer(fci, f, subject),
        VipMode::Agent => agent(f, subject),
    }
}

fn external_ips(f: &VipFacts, subject: String, list: &str) -> Vec<Check> {
    match &f.external_ips {
        Some(Ok(())) => vec![Check::pass(
            "virtualIPs",
            subject,
            format!(
                "mode ExternalIPs: a Service with externalIPs {list} is admitted (dry run); \
                 nothing in the cluster announces them, your network routes them to the owner"
            ),
        )],
        Some(Err((true, why))) => vec![Check::fail(
            "virtualIPs",
            subject,
            format!(
                "mode ExternalIPs: the API server refuses a Service with externalIPs {list}: {why}"
            ),
            "use vipMode LoadBalancer (MetalLB, kube-vip) or Agent, or allow externalIPs (DenyServiceExternalIPs)",
        )],
        Some(Err((false, why))) => vec![Check::warn(
            "virtualIPs",
            subject,
            format!("mode ExternalIPs: not checked, a dry-run Service create failed: {why}"),
            "run validate as someone who may create Services in the instance's namespace",
        )],
        None => vec![],
    }
}

fn load_balancer(fci: &FailoverClusterInstance, f: &VipFacts, subject: String) -> Vec<Check> {
    let vips = &fci.spec.virtual_ips;
    let list = vips.join(", ");
    let Some(svc) = &f.service else {
        return vec![Check::warn(
            "virtualIPs",
            subject,
            "mode LoadBalancer: its Service does not exist yet",
            "check that the controller runs and the instance is placed",
        )];
    };
    let ingress: BTreeSet<String> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect();
    let missing: Vec<&String> = vips.iter().filter(|v| !ingress.contains(*v)).collect();
    if missing.is_empty() {
        return vec![Check::pass(
            "virtualIPs",
            subject,
            format!(
                "mode LoadBalancer: {list} assigned to Service {}",
                svc.name_any()
            ),
        )];
    }
    let online = fci
        .status
        .as_ref()
        .is_some_and(|s| s.phase == Phase::Online);
    let message = format!(
        "mode LoadBalancer: no load balancer has assigned {} to Service {} \
         (status.loadBalancer)",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        svc.name_any()
    );
    let fix = "run an announcer (MetalLB L2 or kube-vip) whose address pool holds the \
               VIPs, or use vipMode Agent";
    vec![if online {
        Check::fail(
            "virtualIPs",
            subject,
            format!("{message}: clients cannot reach it"),
            fix,
        )
    } else {
        Check::warn("virtualIPs", subject, message, fix)
    }]
}

fn agent(f: &VipFacts, subject: String) -> Vec<Check> {
    let without: Vec<&str> = f
        .agents
        .iter()
        .filter(|(_, fresh)| **fresh != Some(true))
        .map(|(n, _)| n.as_str())
        .collect();
    let fix = "run the node agent on every possible owner (helm --set agent.enabled=true, \
               see docs/virtual-ips.md)";
    if f.agents.is_empty() || without.len() == f.agents.len() {
        vec![Check::fail(
            "virtualIPs",
            subject,
            "mode Agent: no node agent heartbeats on any of its possible owners (no fresh \
             kube-failover-agent-<node> Lease): the VIPs would never come up",
            fix,
        )]
    } else if !without.is_empty() {
        vec![Check::warn(
            "virtualIPs",
            subject,
            format!(
                "mode Agent: no node agent heartbeats on {}: owned there, its VIPs would \
                 not come up",
                without.join(", ")
            ),
            fix,
        )]
    } else {
        vec![Check::pass(
            "virtualIPs",
            subject,
            format!(
                "mode Agent: the node agent heartbeats on all {} possible owners",
                f.agents.len()
            ),
        )]
    }
}
