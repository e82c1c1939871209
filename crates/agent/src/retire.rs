//! What the agent does on SIGTERM.
//!
//! Usually nothing: a rollout or a restart replaces it, its virtual IPs stay up with the
//! instance that serves through them, and the next agent takes them over from the state
//! file. But an agent removed from its node for good (its DaemonSet deleted, or no longer
//! selecting the node by its `nodeSelector`) would leave a Lease behind that lists the
//! addresses it held, and the controller would never grant them elsewhere: no agent would
//! ever come to release them. So an agent that is removed for good takes down every virtual
//! IP it brought up, and only then deletes its Lease: the controller then knows that no
//! agent runs there, and that nothing it brought up is left.
//!
//! When in doubt (not run from a pod of a DaemonSet, the API server out of reach, a
//! DaemonSet with node affinity this does not judge) it does nothing, as before.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::apps::v1::DaemonSet;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams};

use super::{AgentArgs, StateFile, addresses, held, node_addresses};
use kube_failover_core::api::{NODE_LEASE_NAMESPACE, agent_lease_name};

/// Why the agent is removed from its node for good, if it is: its pod's DaemonSet is gone
/// or being deleted, or its `nodeSelector` no longer matches the node's labels. `None` when
/// it will be replaced, or that cannot be told. Pure, for tests.
pub fn removed_for_good(daemonset: Option<&DaemonSet>, node: &Node) -> Option<String> {
    let Some(ds) = daemonset else {
        return Some("its DaemonSet is gone".into());
    };
    if ds.metadata.deletion_timestamp.is_some() {
        return Some("its DaemonSet is being deleted".into());
    }
    let pod = ds.spec.as_ref()?.template.spec.as_ref()?;
    if pod
        .affinity
        .as_ref()
        .is_some_and(|a| a.node_affinity.is_some())
    {
        return None;
    }
    let labels = node.metadata.labels.clone().unwrap_or_default();
    let unmatched: Vec<String> = pod
        .node_selector
        .iter()
        .flatten()
        .filter(|(k, v)| labels.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    (!unmatched.is_empty()).then(|| {
        format!(
            "its DaemonSet no longer selects this node ({} not on it)",
            unmatched.join(", ")
        )
    })
}

/// On SIGTERM: if this agent is removed from its node for good, takes its virtual IPs down
/// and deletes its Lease; otherwise leaves everything for the next agent.
pub async fn on_terminate(client: kube::Client, args: &AgentArgs) -> Result<()> {
    let (Some(ns), Some(name)) = (&args.pod_namespace, &args.pod_name) else {
        return Ok(());
    };
    let pod = Api::<Pod>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .context("reading this agent's pod")?;
    let Some(owner) = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true) && o.kind == "DaemonSet")
    else {
        return Ok(());
    };
    let daemonset = Api::<DaemonSet>::namespaced(client.clone(), ns)
        .get_opt(&owner.name)
        .await
        .context("reading this agent's DaemonSet")?
        // Another DaemonSet of the same name is not this agent's.
        .filter(|ds| ds.metadata.uid.as_deref() == Some(owner.uid.as_str()));
    let node = Api::<Node>::all(client.clone())
        .get(&args.node)
        .await
        .context("reading this node")?;
    let Some(why) = removed_for_good(daemonset.as_ref(), &node) else {
        tracing::info!(
            "SIGTERM: the agent exits; its virtual IPs and the instance workloads are left \
             as they are for the next agent"
        );
        return Ok(());
    };
    tracing::info!(%why, "SIGTERM, removed from this node for good: taking the virtual IPs down and deleting the Lease");
    let interface = addresses::Interface::open(&args.interface).await?;
    let state = StateFile::new(&args.state_dir, &args.node)?;
    let on_link = interface.addresses().await?;
    let sorted = held::sort(
        &state.load(),
        &on_link,
        &node_addresses(&node),
        &BTreeMap::new(),
    );
    let mut left = sorted.held.clone();
    for ip in sorted.held.keys() {
        interface.remove(*ip).await?;
        left.remove(ip);
        state.save(&left)?;
        tracing::info!(%ip, "virtual IP taken down");
    }
    // Only once nothing it brought up is left: without the Lease, no address counts as
    // held here.
    let leases: Api<Lease> = Api::namespaced(client, NODE_LEASE_NAMESPACE);
    leases
        .delete(&agent_lease_name(&args.node), &DeleteParams::default())
        .await
        .map(|_| ())
        .or_else(|e| match e {
            kube::Error::Api(s) if s.code == 404 => Ok(()),
            e => Err(e),
        })
        .context("deleting this agent's Lease")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(labels: serde_json::Value) -> Node {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "n1", "labels": labels}}))
            .unwrap()
    }

    fn daemonset(pod: serde_json::Value) -> DaemonSet {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "agent"},
            "spec": {"selector": {}, "template": {"spec": pod}},
        }))
        .unwrap()
    }

    #[test]
    fn removed_for_good_only_when_the_daemonset_no_longer_runs_here() {
        let n = node(serde_json::json!({"role": "db"}));
        let selecting =
            daemonset(serde_json::json!({"containers": [], "nodeSelector": {"role": "db"}}));
        let everywhere = daemonset(serde_json::json!({"containers": []}));
        assert_eq!(removed_for_good(Some(&selecting), &n), None, "a rollout");
        assert_eq!(removed_for_good(Some(&everywhere), &n), None);
        assert!(removed_for_good(None, &n).unwrap().contains("gone"));
        let elsewhere =
            daemonset(serde_json::json!({"containers": [], "nodeSelector": {"role": "web"}}));
        assert!(
            removed_for_good(Some(&elsewhere), &n)
                .unwrap()
                .contains("role=web")
        );
        let mut deleting = selecting.clone();
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        assert!(
            removed_for_good(Some(&deleting), &n)
                .unwrap()
                .contains("being deleted")
        );
        // Node affinity is not judged here: in doubt, the next agent is expected.
        let affinity = daemonset(serde_json::json!({
            "containers": [], "nodeSelector": {"role": "web"},
            "affinity": {"nodeAffinity": {}},
        }));
        assert_eq!(removed_for_good(Some(&affinity), &n), None);
    }
}
