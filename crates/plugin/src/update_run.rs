//! `kubectl failover update-run --exec 'CMD {node}'`: Cluster-Aware Updating.
//!
//! One member at a time: drain it (its instances move off with planned moves), run the hook
//! with the node's name, wait until the node heartbeats again and is Ready, resume it
//! (with `--failback`, moving back what the drain moved off). The run stops at the first
//! failure, and never drains a node while another member is drained, when its silence
//! would cost the quorum, or when an instance it hosts would have nowhere to go.
//!
//! Progress is recorded on the FailoverCluster (annotation `kube-failover.io/update-run`),
//! so that the same command run again after an interruption goes on from the step it was
//! in: the nodes done are not touched again; a hook that was running is run again (hooks
//! must be safe to repeat, as Cluster-Aware Updating's are).

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};

use super::drain::{DrainArgs, ResumeArgs, drain, resume};
use super::start_stop::FIELD_MANAGER;
use kube_failover_core::api::{
    DRAINED_ANNOTATION, FailoverCluster, NODE_LEASE_NAMESPACE, UPDATE_RUN_ANNOTATION,
};

#[derive(Debug, clap::Args)]
pub struct UpdateRunArgs {
    /// The hook, run with `sh -c` once per member, `{node}` replaced by the node's name
    /// (it updates and, if it must, restarts the node). A non-zero exit stops the run.
    #[arg(long = "exec")]
    pub exec: String,
    /// The FailoverCluster whose members are updated (default: the only one).
    #[arg(long)]
    pub cluster: Option<String>,
    /// After each node, move back the instances its drain moved off (`resume --failback`);
    /// without it, failback follows each instance's policy.
    #[arg(long)]
    pub failback: bool,
    /// Seconds each drain, each node's return and each failback may take.
    #[arg(long, default_value_t = 900)]
    pub timeout: u64,
    /// Forget an interrupted run recorded on the cluster and start from the first node.
    #[arg(long)]
    pub restart: bool,
}

/// Where a run is, as recorded on the FailoverCluster.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct Progress {
    /// The hook of the run: resuming takes the same one.
    pub exec: String,
    /// Nodes updated and resumed, in order.
    #[serde(default)]
    pub done: Vec<String>,
    /// The node being updated, and its step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<(String, Step)>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    Drain,
    Hook,
    Return,
    Resume,
}

/// The node to update next: the one in progress, else the first member (by name) not done.
pub fn next_node(members: &[String], progress: &Progress) -> Option<(String, Step)> {
    if let Some(current) = &progress.current {
        return Some(current.clone());
    }
    let mut todo: Vec<&String> = members
        .iter()
        .filter(|m| !progress.done.contains(m))
        .collect();
    todo.sort();
    todo.first().map(|n| (n.to_string(), Step::Drain))
}

/// Why `node` may not be drained now, if it may not: another member is drained (one at a
/// time), or its silence while the hook runs would leave fewer members heard than the
/// quorum requires.
pub fn refuse_drain(node: &str, cluster: &FailoverCluster, drained: &[String]) -> Option<String> {
    if let Some(other) = drained.iter().find(|d| d.as_str() != node) {
        return Some(format!(
            "{other} is drained: one member at a time (resume it with `kubectl failover resume {other}`)"
        ));
    }
    let status = cluster.status.as_ref()?;
    let member = status.members.iter().find(|m| m.name == node)?;
    let quorum = status.quorum.as_ref()?;
    // A member that does not vote costs no vote when silent.
    let heard_after = quorum
        .healthy
        .saturating_sub(u32::from(member.state.heard() && !member.non_voting));
    if heard_after < quorum.required {
        return Some(format!(
            "with {node} silent, {heard_after} of {} votes would be heard, below the {} the quorum requires",
            quorum.total, quorum.required
        ));
    }
    None
}

/// The cluster to update: the one named, or the only one.
async fn the_cluster(client: &Client, name: Option<&str>) -> Result<FailoverCluster> {
    let api: Api<FailoverCluster> = Api::all(client.clone());
    if let Some(name) = name {
        return api
            .get_opt(name)
            .await?
            .with_context(|| format!("no FailoverCluster {name}"));
    }
    let mut all = api.list(&ListParams::default()).await?.items;
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => bail!("no FailoverCluster in this Kubernetes cluster"),
        _ => bail!(
            "{} FailoverClusters: name one with --cluster ({})",
            all.len(),
            all.iter()
                .map(|c| c.name_any())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

async fn save(client: &Client, cluster: &str, progress: Option<&Progress>) -> Result<()> {
    let value = progress.map(serde_json::to_string).transpose()?;
    let patch = serde_json::json!({"metadata": {"annotations": {UPDATE_RUN_ANNOTATION: value}}});
    Api::<FailoverCluster>::all(client.clone())
        .patch(
            cluster,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(&patch),
        )
        .await
        .with_context(|| format!("recording the update run on FailoverCluster {cluster}"))?;
    Ok(())
}

fn member_names(cluster: &FailoverCluster) -> Vec<String> {
    cluster
        .status
        .as_ref()
        .map(|s| s.members.iter().map(|m| m.name.clone()).collect())
        .unwrap_or_default()
}

/// Members carrying the drain mark or cordoned.
async fn drained_members(client: &Client, members: &[String]) -> Result<Vec<String>> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut out = Vec::new();
    for m in members {
        if let Some(n) = nodes.get_opt(m).await? {
            let cordoned = n.spec.as_ref().and_then(|s| s.unschedulable) == Some(true);
            if cordoned || n.annotations().contains_key(DRAINED_ANNOTATION) {
                out.push(m.clone());
            }
        }
    }
    Ok(out)
}

/// Runs the hook for `node`, its output going to ours; whether it exited 0.
async fn run_hook(exec: &str, node: &str) -> Result<bool> {
    let cmd = exec.replace("{node}", node);
    println!("node/{node}: running hook: {cmd}");
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(&cmd)
        .env("KUBE_FAILOVER_NODE", node)
        .status()
        .await
        .with_context(|| format!("starting the hook `{cmd}`"))?;
    if !status.success() {
        eprintln!("node/{node}: hook failed ({status})");
    }
    Ok(status.success())
}

/// Waits until `node` is back: its Lease renewed after this call began (a renewal seen, so
/// no clock is compared), its Node Ready, and the controller hearing it again.
async fn wait_back(client: &Client, cluster: &str, node: &str, timeout: u64) -> Result<()> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let before = leases
        .get_opt(node)
        .await?
        .and_then(|l| l.resource_version());
    let renewed = async {
        let mut stream = watcher(
            leases.clone(),
            watcher::Config::default().fields(&format!("metadata.name={node}")),
        )
        .default_backoff()
        .applied_objects()
        .boxed();
        while let Some(lease) = stream.next().await {
            if lease?.resource_version() != before {
                return Ok::<_, anyhow::Error>(());
            }
        }
        bail!("the watch of {node}'s Lease ended")
    };
    let ready = await_condition(
        Api::<Node>::all(client.clone()),
        node,
        |n: Option<&Node>| {
            n.and_then(|n| n.status.as_ref()?.conditions.as_ref())
                .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
        },
    );
    let heard = await_condition(
        Api::<FailoverCluster>::all(client.clone()),
        cluster,
        |c: Option<&FailoverCluster>| {
            c.and_then(|c| c.status.as_ref())
                .is_some_and(|s| s.members.iter().any(|m| m.name == node && m.state.heard()))
        },
    );
    let all = async {
        renewed.await?;
        ready.await?;
        heard.await?;
        Ok::<_, anyhow::Error>(())
    };
    tokio::time::timeout(Duration::from_secs(timeout), all)
        .await
        .with_context(|| format!("{node} not back (heartbeating and Ready) after {timeout} s"))?
}

pub async fn run(client: Client, args: UpdateRunArgs) -> Result<ExitCode> {
    let cluster = the_cluster(&client, args.cluster.as_deref()).await?;
    let name = cluster.name_any();
    let mut progress = progress_to_go_on_from(&cluster, &args)?;
    let members = member_names(&cluster);
    if members.is_empty() {
        bail!("FailoverCluster {name} has no members (yet): nothing to update");
    }
    println!(
        "update run of cluster {name}: {} member(s), one at a time: {}",
        members.len(),
        members.join(", ")
    );
    let total = members.len();
    while let Some((node, step)) = next_node(&members, &progress) {
        let position = progress.done.len() + 1;
        let run = Run {
            client: &client,
            cluster: &name,
            node: &node,
            args: &args,
        };
        run.take_off(step, position, total, &mut progress).await?;
        run.give_back(&mut progress).await?;
        println!("node/{node}: updated ({position} of {total})");
    }
    save(&client, &name, None).await?;
    println!(
        "update run of {name} complete: {} node(s) updated",
        progress.done.len()
    );
    Ok(ExitCode::SUCCESS)
}

/// The progress recorded on the cluster by an interrupted run with the same hook, else a
/// fresh start.
fn progress_to_go_on_from(cluster: &FailoverCluster, args: &UpdateRunArgs) -> Result<Progress> {
    let name = cluster.name_any();
    let recorded: Option<Progress> = cluster
        .annotations()
        .get(UPDATE_RUN_ANNOTATION)
        .and_then(|v| serde_json::from_str(v).ok());
    Ok(match recorded {
        Some(p) if !args.restart => {
            if p.exec != args.exec {
                bail!(
                    "an update run of {name} with --exec '{}' was interrupted ({} node(s) done): run it again with that --exec to go on, or pass --restart",
                    p.exec,
                    p.done.len()
                );
            }
            println!(
                "going on with the interrupted update run of {name}: done {}",
                if p.done.is_empty() {
                    "none".to_string()
                } else {
                    p.done.join(", ")
                }
            );
            p
        }
        _ => Progress {
            exec: args.exec.clone(),
            ..Default::default()
        },
    })
}

/// One member's turn in the run; each step is recorded on the cluster before the next.
struct Run<'a> {
    client: &'a Client,
    cluster: &'a str,
    node: &'a str,
    args: &'a UpdateRunArgs,
}

impl Run<'_> {
    async fn record(&self, progress: &mut Progress, step: Option<Step>) -> Result<()> {
        progress.current = step.map(|s| (self.node.to_string(), s));
        save(self.client, self.cluster, Some(progress)).await
    }

    /// From `step` on: drain the node, run the hook on it, wait until it is back.
    async fn take_off(
        &self,
        mut step: Step,
        position: usize,
        total: usize,
        progress: &mut Progress,
    ) -> Result<()> {
        let node = self.node;
        if step == Step::Drain {
            self.drain(position, total, progress).await?;
            step = Step::Hook;
            self.record(progress, Some(step)).await?;
        }
        if step == Step::Hook {
            if !run_hook(&progress.exec, node).await? {
                bail!(
                    "the hook failed on {node}, which stays drained; the run stopped. Fix it and run the same command again to go on, or `kubectl failover resume {node}`"
                );
            }
            step = Step::Return;
            self.record(progress, Some(step)).await?;
        }
        if step == Step::Return {
            wait_back(self.client, self.cluster, node, self.args.timeout).await?;
            println!("node/{node}: back (heartbeating, Ready)");
            self.record(progress, Some(Step::Resume)).await?;
        }
        Ok(())
    }

    /// Drains the node, unless another member is drained or its silence would cost the
    /// quorum.
    async fn drain(&self, position: usize, total: usize, progress: &mut Progress) -> Result<()> {
        let node = self.node;
        let cluster = the_cluster(self.client, Some(self.cluster)).await?;
        let drained = drained_members(self.client, &member_names(&cluster)).await?;
        if let Some(why) = refuse_drain(node, &cluster, &drained) {
            save(self.client, self.cluster, Some(progress)).await?;
            bail!("not draining {node}: {why}; the run stopped (run it again to go on)");
        }
        self.record(progress, Some(Step::Drain)).await?;
        println!("node/{node}: {position} of {total}: draining");
        let drained = drain(
            self.client.clone(),
            DrainArgs {
                node: node.to_string(),
                wait: true,
                timeout: self.args.timeout,
                force: false,
            },
        )
        .await;
        match drained {
            Ok(code) if code == ExitCode::SUCCESS => Ok(()),
            Ok(_) => bail!("{node} was not drained; the run stopped (run it again to go on)"),
            Err(e) => Err(e.context(format!("draining {node}; the run stopped"))),
        }
    }

    /// Resumes the node (with failback if asked) and records it done.
    async fn give_back(&self, progress: &mut Progress) -> Result<()> {
        let node = self.node;
        let resumed = resume(
            self.client.clone(),
            ResumeArgs {
                node: node.to_string(),
                failback: self.args.failback,
                wait: true,
                timeout: self.args.timeout,
                clear_quarantine: false,
            },
        )
        .await?;
        if resumed != ExitCode::SUCCESS {
            bail!("{node} resumed, but its failback did not finish; the run stopped");
        }
        progress.done.push(node.to_string());
        self.record(progress, None).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(members: &[(&str, &str)], healthy: u32, required: u32) -> FailoverCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1",
            "kind": "FailoverCluster",
            "metadata": {"name": "c"},
            "spec": {},
            "status": {
                "members": members.iter().map(|(n, s)| serde_json::json!({"name": n, "state": s})).collect::<Vec<_>>(),
                "quorum": {"total": members.len(), "healthy": healthy, "required": required},
            }
        }))
        .unwrap()
    }

    #[test]
    fn one_member_at_a_time_in_order_going_on_where_it_stopped() {
        let members: Vec<String> = ["n2", "n0", "n1"].map(String::from).to_vec();
        let mut p = Progress::default();
        assert_eq!(next_node(&members, &p), Some(("n0".into(), Step::Drain)));
        p.done.push("n0".into());
        assert_eq!(next_node(&members, &p), Some(("n1".into(), Step::Drain)));
        p.current = Some(("n1".into(), Step::Return));
        assert_eq!(next_node(&members, &p), Some(("n1".into(), Step::Return)));
        p.current = None;
        p.done.extend(["n1".into(), "n2".into()]);
        assert_eq!(next_node(&members, &p), None);
        // What is recorded reads back the same.
        let s = serde_json::to_string(&Progress {
            exec: "x {node}".into(),
            done: vec!["n0".into()],
            current: Some(("n1".into(), Step::Hook)),
        })
        .unwrap();
        assert_eq!(
            s,
            r#"{"exec":"x {node}","done":["n0"],"current":["n1","Hook"]}"#
        );
    }

    #[test]
    fn a_drain_is_refused_while_another_is_drained_or_when_it_would_cost_the_quorum() {
        let ok = cluster(&[("n0", "Up"), ("n1", "Up"), ("n2", "Up")], 3, 2);
        assert_eq!(refuse_drain("n0", &ok, &[]), None);
        // Its own mark (a run that stopped after the drain) is no reason.
        assert_eq!(refuse_drain("n0", &ok, &["n0".into()]), None);
        let other = refuse_drain("n0", &ok, &["n1".into()]).unwrap();
        assert!(
            other.starts_with("n1 is drained: one member at a time"),
            "{other}"
        );
        let tight = cluster(&[("n0", "Up"), ("n1", "Down"), ("n2", "Up")], 2, 2);
        let why = refuse_drain("n0", &tight, &[]).unwrap();
        assert_eq!(
            why,
            "with n0 silent, 1 of 3 votes would be heard, below the 2 the quorum requires"
        );
        // A member already silent costs nothing more.
        assert_eq!(refuse_drain("n1", &tight, &[]), None);
    }
}
