//! Members: their heartbeats, their clocks, and each cluster's quorum.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;

use super::Check;
use super::time::{SECOND, ago, clock_offset, renewal_age, secs, surely_past};
use crate::api::FailoverCluster;
use crate::rules::kubelet_lease_stale_seconds;

/// The Lease of member `node` of `cluster`: renewed within the cluster's threshold (on the
/// API server's clock), and the node's clock within a second of the server's.
pub fn judge_member_lease(
    node: &str,
    cluster: &FailoverCluster,
    lease: Option<&Lease>,
    now: Timestamp,
) -> Vec<Check> {
    let subject = format!("member {node} (cluster {})", cluster.name_any());
    let hb = &cluster.spec.heartbeat;
    let threshold = SignedDuration::from_secs(kubelet_lease_stale_seconds(hb).into());
    let Some(lease) = lease else {
        return vec![Check::fail(
            "heartbeats",
            subject,
            format!("no Lease kube-node-lease/{node}: its kubelet has never heartbeated"),
            "check the node's kubelet (systemctl status kubelet) or take the node out of the cluster",
        )];
    };
    let mut out = Vec::new();
    match renewal_age(lease, now) {
        Some((age, _)) if surely_past(age, threshold) => out.push(Check::fail(
            "heartbeats",
            subject.clone(),
            format!(
                "Lease kube-node-lease/{node} stale: last renewed {} (the cluster counts a \
                 member down after {})",
                ago(age),
                secs(threshold)
            ),
            "bring the node's kubelet back, or drain it / take it out of the cluster",
        )),
        Some((age, server)) => out.push(Check::pass(
            "heartbeats",
            subject.clone(),
            format!(
                "Lease renewed {}{}",
                ago(age),
                if server {
                    ""
                } else {
                    " (by its own renewTime)"
                }
            ),
        )),
        None => out.push(Check::fail(
            "heartbeats",
            subject.clone(),
            format!("Lease kube-node-lease/{node} never renewed"),
            "check the node's kubelet",
        )),
    }
    if let Some(offset) = clock_offset(lease).filter(|d| d.abs() > SECOND) {
        let side = if offset.is_positive() {
            format!("at least {} ahead of", secs(offset))
        } else {
            format!("about {} behind", secs(offset.abs()))
        };
        out.push(Check::warn(
            "heartbeats",
            format!("clock of {node}"),
            format!(
                "{side} the API server's (its Lease's renewTime against the server's time of \
                 that write); kube-failover never compares clocks, but logs, certificates and \
                 the workloads do"
            ),
            "synchronise the node's clock (chrony/NTP)",
        ));
    }
    out
}

pub fn judge_quorum(cluster: &FailoverCluster) -> Check {
    let subject = format!("cluster {}", cluster.name_any());
    let Some(q) = cluster.status.as_ref().and_then(|s| s.quorum.as_ref()) else {
        return Check::warn(
            "quorum",
            subject,
            "no quorum in its status: the controller has not computed it",
            "check that the controller runs (see the leader check)",
        );
    };
    let margin = i64::from(q.healthy) - i64::from(q.required);
    let counts = match &q.witness {
        None => format!(
            "{} of {} members up, {} required",
            q.healthy, q.total, q.required
        ),
        Some(w) => format!(
            "{} of {} votes heard (witness {}: {}), {} required",
            q.healthy,
            q.total,
            w.name,
            if w.heard {
                "heard"
            } else {
                w.reason.as_deref().unwrap_or("not heard")
            },
            q.required
        ),
    };
    // A witness not heard is the first thing to mend: it is what a two-node cluster lacks.
    let witness_lost = q.witness.as_ref().is_some_and(|w| !w.heard);
    let mend = |members: &'static str| {
        if witness_lost {
            "bring the witness back (the chart's witness pod, or what renews its Lease; see \
             docs/operations.md, \"Two nodes and a witness\")"
        } else {
            members
        }
    };
    match margin {
        m if m < 0 => Check::fail(
            "quorum",
            subject,
            format!("quorum lost: {counts} ({} short): nothing fails over", -m),
            mend(
                "bring members back up, or lower spec.quorum.minHealthy if fewer nodes are intended",
            ),
        ),
        0 => Check::warn(
            "quorum",
            subject,
            format!("{counts}: one more failure stops automatic failover"),
            mend("bring the down members back or add members"),
        ),
        m => Check::pass("quorum", subject, format!("{counts}: {m} more may fail")),
    }
}

/// Whether every instance serving on a member would have a place should that member fail,
/// as the controller judged it (the cluster's `Resilient` condition).
pub fn judge_resilience(cluster: &FailoverCluster) -> Check {
    let subject = format!("cluster {}", cluster.name_any());
    let resilient = cluster.status.as_ref().and_then(|s| {
        s.conditions
            .iter()
            .find(|c| c.type_ == crate::api::condition::RESILIENT)
    });
    match resilient {
        None => Check::warn(
            "resilience",
            subject,
            "no Resilient condition in its status: the controller has not judged it",
            "check that the controller runs (see the leader check)",
        ),
        Some(c) if c.status == "True" => Check::pass("resilience", subject, c.message.clone()),
        Some(c) => Check::warn(
            "resilience",
            subject,
            c.message.clone(),
            "widen those instances' possible owners, add a member they may use, or mend what \
             holds them; `kubectl failover simulate --fail NODE` shows each move",
        ),
    }
}

/// Whether every member of `cluster` runs the node agent, when the cluster fences by itself:
/// without an agent, the out-of-service taint assumes that a silent node is powered off
/// (a node cut off from the API server but running keeps running its workloads). An agent
/// whose Lease is stale is named too (`AgentDown`: its virtual IPs are held, nothing fails
/// over for it).
pub fn judge_agents(
    cluster: &FailoverCluster,
    agents: &[(String, super::facts::Read<Option<Lease>>)],
    now: Timestamp,
) -> Check {
    use crate::api::FencingMode;
    let subject = format!("cluster {} node agents", cluster.name_any());
    let threshold = SignedDuration::from_secs(cluster.spec.heartbeat.lease_stale_seconds.into());
    if agents.is_empty() {
        return super::facts::unchecked(
            "agents",
            subject,
            "no member read (the Nodes could not be read, or the cluster has no member)",
        );
    }
    let mut missing = Vec::new();
    let mut silent = Vec::new();
    for (node, lease) in agents {
        match lease {
            Ok(None) => missing.push(node.as_str()),
            Ok(Some(l)) => {
                if renewal_age(l, now).is_none_or(|(age, _)| surely_past(age, threshold)) {
                    silent.push(node.as_str());
                }
            }
            Err(e) => return super::facts::unchecked("agents", subject, e),
        }
    }
    let fences = cluster.spec.fencing.mode == FencingMode::OutOfServiceTaint;
    if fences && !missing.is_empty() {
        return Check::warn(
            "agents",
            subject,
            format!(
                "the cluster fences automatically, and member(s) {} run no node agent: a \
                 silent member is then assumed powered off, and one cut off from the API \
                 server but running keeps running its workloads after the taint",
                missing.join(", ")
            ),
            "run the agent on every member (Helm: agent.enabled=true, with agent.criSocket or \
             agent.stopCommand), or set fencing.mode: External with a fencer that powers \
             nodes off",
        );
    }
    if !silent.is_empty() {
        return Check::warn(
            "agents",
            subject,
            format!(
                "the agent of member(s) {} has not renewed its Lease for {}: AgentDown (never \
                 fenced for it; its virtual IPs are granted nowhere else until it is back)",
                silent.join(", "),
                secs(threshold)
            ),
            "kubectl -n <agent namespace> get pods -o wide, and the agent's logs on that node",
        );
    }
    Check::pass(
        "agents",
        subject,
        if missing.is_empty() {
            "every member runs the node agent, and each renews".to_string()
        } else {
            format!(
                "member(s) {} run no node agent (fencing mode {:?} does not rely on it)",
                missing.join(", "),
                cluster.spec.fencing.mode
            )
        },
    )
}
