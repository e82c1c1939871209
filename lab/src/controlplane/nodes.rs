//! Simulated nodes: Node objects whose heartbeats (Lease renewals in `kube-node-lease` and
//! the Ready condition) come from the KWOK controller.
//!
//! KWOK manages only the nodes that carry [`NODE_ALIVE_LABEL`]`=true`, through a label
//! selector on its watch. Removing the label drops the node from that watch, so its Lease
//! stops being renewed and its status stops being updated, exactly as when a kubelet dies;
//! kube-controller-manager's node lifecycle controller then marks it Ready=Unknown and taints
//! it. Setting the label again revives it.

use std::collections::BTreeMap;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Config};

pub const NODE_ALIVE_LABEL: &str = "sim.kube-failover.io/alive";

/// Handle on the simulated nodes of a control plane.
#[derive(Clone)]
pub struct SimulatedNodes {
    config: Config,
}

impl SimulatedNodes {
    pub(crate) fn new(config: Config) -> Self {
        Self { config }
    }

    fn api(&self) -> Result<Api<Node>> {
        Ok(Api::all(Client::try_from(self.config.clone())?))
    }

    /// Creates nodes `{prefix}-0` … `{prefix}-{n-1}` with the given extra labels, alive.
    /// KWOK fills in their status and starts their heartbeats.
    pub async fn create(
        &self,
        prefix: &str,
        n: usize,
        labels: &BTreeMap<String, String>,
    ) -> Result<Vec<String>> {
        let api = self.api()?;
        let mut names = Vec::with_capacity(n);
        for i in 0..n {
            let name = format!("{prefix}-{i}");
            let mut all = labels.clone();
            all.insert(NODE_ALIVE_LABEL.into(), "true".into());
            all.insert("kubernetes.io/hostname".into(), name.clone());
            all.insert("kubernetes.io/os".into(), "linux".into());
            all.insert("kubernetes.io/arch".into(), "amd64".into());
            all.insert("type".into(), "kwok".into());
            let node: Node = serde_json::from_value(serde_json::json!({
                "metadata": {
                    "name": name,
                    "labels": all,
                    "annotations": {
                        "node.alpha.kubernetes.io/ttl": "0",
                        "kwok.x-k8s.io/node": "fake",
                        // As a kubelet would: the attach/detach controller attaches its volumes.
                        "volumes.kubernetes.io/controller-managed-attach-detach": "true"
                    }
                },
                "spec": {}
            }))?;
            api.create(&PostParams::default(), &node)
                .await
                .with_context(|| format!("creating node {name}"))?;
            names.push(name);
        }
        Ok(names)
    }

    /// Stops the node's heartbeats: its Lease is no longer renewed and its status no longer
    /// updated. Pods bound to it stay as they are, as on a node that lost power.
    pub async fn kill(&self, name: &str) -> Result<()> {
        self.set_alive(name, false).await
    }

    /// Stops the heartbeats of `names` together, each just after one last renewal of its
    /// Lease written here: the nodes fall silent in the same instant, as a rack that loses
    /// power does, rather than each a different time after its last renewal by KWOK (up to
    /// a quarter of the Lease apart). Returns the time of the last renewals.
    pub async fn kill_together(&self, names: &[String]) -> Result<jiff::Timestamp> {
        futures::future::try_join_all(names.iter().map(|n| self.kill(n))).await?;
        let leases: Api<Lease> =
            Api::namespaced(Client::try_from(self.config.clone())?, "kube-node-lease");
        let now = jiff::Timestamp::now();
        let renewed = MicroTime(now);
        futures::future::try_join_all(names.iter().map(|n| {
            let patch = serde_json::json!({"spec": {"renewTime": renewed}});
            let leases = leases.clone();
            async move {
                leases
                    .patch(n, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .with_context(|| format!("renewing the Lease of node {n} a last time"))
            }
        }))
        .await?;
        Ok(now)
    }

    /// Each node reports its status once, as a kubelet does every few minutes with nothing
    /// changed (KWOK every ten): the Ready condition's `lastHeartbeatTime` moves on, nothing
    /// else. Controllers watching Nodes see one update per node.
    pub async fn report_status(&self, names: &[String]) -> Result<()> {
        let api = self.api()?;
        let now = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::now());
        let patch = serde_json::json!({
            "status": {"conditions": [{"type": "Ready", "lastHeartbeatTime": now}]}
        });
        futures::future::try_join_all(names.iter().map(|n| {
            let api = api.clone();
            let patch = &patch;
            async move {
                api.patch_status(n, &PatchParams::default(), &Patch::Strategic(patch))
                    .await
                    .with_context(|| format!("reporting the status of node {n}"))
            }
        }))
        .await?;
        Ok(())
    }

    /// Restarts the node's heartbeats.
    pub async fn revive(&self, name: &str) -> Result<()> {
        self.set_alive(name, true).await
    }

    async fn set_alive(&self, name: &str, alive: bool) -> Result<()> {
        let patch = serde_json::json!({
            "metadata": {"labels": {NODE_ALIVE_LABEL: if alive { "true" } else { "false" }}}
        });
        self.api()?
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .with_context(|| format!("setting {NODE_ALIVE_LABEL}={alive} on node {name}"))?;
        Ok(())
    }
}
