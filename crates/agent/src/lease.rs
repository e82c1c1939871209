//! The agent's heartbeat: its Lease in `kube-node-lease`, renewed every `--renew-ms`.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;

use super::{AgentArgs, Shared};
use kube_failover_core::api::{
    AGENT_HOLDS_ANNOTATION, AGENT_LEASE_LABEL, PEER_ADDRESS_ANNOTATION, PEER_GROUPS_ANNOTATION,
    PeerGroup, SELF_FENCE_ANNOTATION, WORKLOADS_STOPPED_ANNOTATION, agent_lease_name,
};

const NAMESPACE: &str = kube_failover_core::api::NODE_LEASE_NAMESPACE;

/// What the agent says on its Lease besides its renewal.
#[derive(Clone, Debug, Default)]
pub struct Says {
    /// The instances whose virtual IPs are up here.
    pub holds: std::collections::BTreeSet<String>,
    /// See `Shared::workloads_stopped`.
    pub workloads_stopped: Option<String>,
    /// Where it answers its peers, and the groups it asks, when it asks any.
    pub peers: Option<(std::net::SocketAddr, Vec<PeerGroup>)>,
}

/// The Lease as this agent writes it, over `current` (which carries the resourceVersion that
/// makes the write conditional).
pub fn desired(
    current: Option<&Lease>,
    args: &AgentArgs,
    says: &Says,
    now: jiff::Timestamp,
) -> Lease {
    let mut lease = current.cloned().unwrap_or_else(|| Lease {
        metadata: ObjectMeta {
            name: Some(agent_lease_name(&args.node)),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        spec: None,
    });
    // The controller lists agent Leases by this label: kept on every write.
    lease
        .metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(AGENT_LEASE_LABEL.0.into(), AGENT_LEASE_LABEL.1.into());
    let annotations = lease
        .metadata
        .annotations
        .get_or_insert_with(Default::default);
    annotations.insert(
        AGENT_HOLDS_ANNOTATION.into(),
        serde_json::to_string(&says.holds).unwrap_or_else(|_| "[]".into()),
    );
    annotations.insert(
        SELF_FENCE_ANNOTATION.into(),
        args.announced_self_fence().to_string(),
    );
    match &says.workloads_stopped {
        Some(since) => annotations.insert(WORKLOADS_STOPPED_ANNOTATION.into(), since.clone()),
        None => annotations.remove(WORKLOADS_STOPPED_ANNOTATION),
    };
    match &says.peers {
        Some((address, groups)) => {
            annotations.insert(PEER_ADDRESS_ANNOTATION.into(), address.to_string());
            annotations.insert(
                PEER_GROUPS_ANNOTATION.into(),
                serde_json::to_string(groups).unwrap_or_else(|_| "[]".into()),
            );
        }
        None => {
            annotations.remove(PEER_ADDRESS_ANNOTATION);
            annotations.remove(PEER_GROUPS_ANNOTATION);
        }
    }
    let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
    spec.holder_identity = Some(args.node.clone());
    // Two renewal intervals: the controller counts two renewals it saw further apart than
    // this as a break (see `peers`).
    spec.lease_duration_seconds = Some(args.lease_duration_seconds());
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// Renews the Lease every `--renew-ms`, and at once when what it says changed. A renewal that
/// takes longer than the interval is abandoned (and counts as not made).
pub(super) async fn renew(client: kube::Client, args: AgentArgs, shared: Arc<Shared>) {
    let api: Api<Lease> = Api::namespaced(client, NAMESPACE);
    let name = agent_lease_name(&args.node);
    let mut current: Option<Lease> = None;
    let every = args.renew_every();
    let mut failing = false;
    loop {
        let started = Instant::now();
        let says = says(&shared, &args);
        // The groups this write names (none: the Lease then names none, and the agent must
        // not hold), kept before the write: if it lands, the Lease names them, and an agent
        // restarted meanwhile must hold only if it would with them too.
        let naming: Vec<PeerGroup> = says
            .peers
            .as_ref()
            .map(|(_, g)| g.clone())
            .unwrap_or_default();
        if args.peers.enabled() {
            shared.saved.update(|s| {
                if !s.group_sets.contains(&naming) {
                    s.group_sets.push(naming.clone());
                }
            });
        }
        let attempt = async {
            if current.is_none() {
                current = api.get_opt(&name).await?;
            }
            let lease = desired(current.as_ref(), &args, &says, jiff::Timestamp::now());
            let written = if lease.metadata.resource_version.is_some() {
                api.replace(&name, &PostParams::default(), &lease).await
            } else {
                api.create(&PostParams::default(), &lease).await
            };
            anyhow::Ok(written)
        };
        match tokio::time::timeout(every, attempt).await {
            Ok(Ok(Ok(lease))) => {
                current = Some(lease);
                *shared.renewed.lock().unwrap_or_else(|e| e.into_inner()) = Some(started);
                *shared.answered.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
                if args.peers.enabled() {
                    shared.saved.update(|s| s.group_sets = vec![naming]);
                }
                shared.last.send_replace(Some((started, says.holds)));
                if failing {
                    tracing::info!("heartbeat Lease renewed again");
                    failing = false;
                }
            }
            outcome => {
                // A conflict or any doubt: read the Lease again before the next write.
                current = None;
                if !failing {
                    let error = match outcome {
                        Ok(Ok(Err(e))) => e.to_string(),
                        Ok(Err(e)) => format!("{e:#}"),
                        _ => format!("no answer within {every:?}"),
                    };
                    tracing::warn!(%error, "heartbeat Lease not renewed");
                    failing = true;
                }
            }
        }
        let next = started + every;
        tokio::select! {
            () = tokio::time::sleep_until(next.into()) => {}
            () = shared.poke.notified() => {}
        }
    }
}

/// What the Lease should say now.
fn says(shared: &Shared, args: &AgentArgs) -> Says {
    let holds = shared
        .holds
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let workloads_stopped = shared
        .workloads_stopped
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    // The configured address, whether or not the exchange has started yet: the Lease must
    // not drop the groups a restarted agent may already hold by.
    let address = args.peers.peer_address;
    // Until this agent has listed the clusters (a restarted agent, the API server out of
    // reach), the groups the Lease named before, as kept on the node: never none for want
    // of knowing.
    let listed = shared
        .groups
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let peers = address.and_then(|a| {
        let groups = listed.or_else(|| shared.saved.get().group_sets.first().cloned())?;
        Some((a, groups))
    });
    Says {
        holds,
        workloads_stopped,
        peers,
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use kube::ResourceExt;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        agent: AgentArgs,
    }

    fn args(flags: &[&str]) -> AgentArgs {
        let mut argv = vec!["agent", "--node", "n1", "--interface", "eth0"];
        argv.extend_from_slice(flags);
        Cli::parse_from(argv).agent
    }

    #[test]
    fn the_lease_says_what_is_held_and_when_the_agent_fences_itself() {
        let a = args(&[
            "--self-fence-seconds",
            "2.5",
            "--stop-timeout-seconds",
            "0.25",
        ]);
        let holds = ["ns/db".to_string()].into();
        let now = jiff::Timestamp::from_second(1_000).unwrap();
        let says = Says {
            holds,
            ..Default::default()
        };
        let lease = desired(None, &a, &says, now);
        assert_eq!(
            lease.metadata.name.as_deref(),
            Some("kube-failover-agent-n1")
        );
        assert_eq!(
            lease.labels().get(AGENT_LEASE_LABEL.0).map(String::as_str),
            Some(AGENT_LEASE_LABEL.1)
        );
        assert_eq!(lease.annotations()[AGENT_HOLDS_ANNOTATION], r#"["ns/db"]"#);
        assert_eq!(lease.annotations()[SELF_FENCE_ANNOTATION], "2.75");
        let spec = lease.spec.as_ref().unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("n1"));
        // Two renewals (1 s each): what the controller takes for a break.
        assert_eq!(spec.lease_duration_seconds, Some(2));
        assert!(!lease.annotations().contains_key(PEER_GROUPS_ANNOTATION));
        assert_eq!(spec.renew_time.as_ref().map(|t| t.0), Some(now));

        // Over the stored Lease: its resourceVersion (the write is conditional) and what
        // others put on it stay; the label comes back if someone removed it.
        let mut stored = lease.clone();
        stored.metadata.resource_version = Some("42".into());
        stored.metadata.labels = None;
        stored
            .metadata
            .annotations
            .as_mut()
            .unwrap()
            .insert("other".into(), "x".into());
        let group = PeerGroup {
            cluster: "c".into(),
            members: vec!["n1".into(), "n2".into()],
            required: 2,
            witnesses: 0,
        };
        let stopped = Says {
            workloads_stopped: Some("t1".into()),
            peers: Some(("10.0.0.1:9811".parse().unwrap(), vec![group])),
            ..Default::default()
        };
        let later = desired(Some(&stored), &a, &stopped, now);
        assert_eq!(
            later.annotations()[PEER_ADDRESS_ANNOTATION],
            "10.0.0.1:9811"
        );
        assert_eq!(
            later.annotations()[PEER_GROUPS_ANNOTATION],
            r#"[{"cluster":"c","members":["n1","n2"],"required":2}]"#
        );
        assert_eq!(later.annotations()[WORKLOADS_STOPPED_ANNOTATION], "t1");
        let again = desired(Some(&later), &a, &Says::default(), now);
        assert!(!again.annotations().contains_key(PEER_GROUPS_ANNOTATION));
        assert!(
            !again
                .annotations()
                .contains_key(WORKLOADS_STOPPED_ANNOTATION)
        );
        assert_eq!(later.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(later.annotations()["other"], "x");
        assert_eq!(later.annotations()[AGENT_HOLDS_ANNOTATION], "[]");
        assert!(later.labels().contains_key(AGENT_LEASE_LABEL.0));
    }

    #[test]
    fn a_self_fence_time_under_two_renewals_is_refused() {
        assert!(
            args(&["--renew-ms", "1000", "--self-fence-seconds", "2"])
                .validate()
                .is_ok()
        );
        let e = args(&["--renew-ms", "1000", "--self-fence-seconds", "1.5"])
            .validate()
            .unwrap_err()
            .to_string();
        assert!(e.contains("twice the renewal interval"), "{e}");
        assert!(args(&["--self-fence-seconds", "NaN"]).validate().is_err());
    }
}
