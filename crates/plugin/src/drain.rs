//! `kubectl failover drain NODE` and `resume NODE [--failback]`: Suspend-ClusterNode -Drain
//! and Resume-ClusterNode -Failback.
//!
//! Drain cordons the node (`spec.unschedulable`, as `kubectl cordon` does) and marks it with
//! `kube-failover.io/drained`; the controller sees the member `Paused` and moves what it
//! hosts off with planned moves, higher priorities first, and places nothing new on it. A
//! paused node still heartbeats and still counts for the quorum. Resume uncordons it; with
//! `--failback` it asks for a planned move back of every instance the drain moved off.

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};

use super::start_stop::{FIELD_MANAGER, annotate};
use kube_failover_core::api::{
    CLEAR_QUARANTINE_ANNOTATION, DRAINED_ANNOTATION, FailoverCluster, FailoverClusterInstance,
    MOVE_ANNOTATION, MOVE_TO_ANNOTATION, MemberState, Phase, reason,
};

#[derive(Debug, clap::Args)]
pub struct DrainArgs {
    /// The member node.
    pub node: String,
    /// Wait until every instance it hosted is online elsewhere (`--wait=false`: return once
    /// the node is cordoned).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub wait: bool,
    /// How long the wait lasts, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Drain even if an instance it hosts has no other node to go to (it stays where it is
    /// and says so in its status).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct ResumeArgs {
    /// The member node.
    pub node: String,
    /// Move back the instances the drain moved off it (planned moves).
    #[arg(long)]
    pub failback: bool,
    /// With `--failback`, wait until they are online on it.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1,
          default_missing_value = "true")]
    pub wait: bool,
    /// How long the wait lasts, in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Lift the node's quarantine (it failed too often, see `quorum` in `status`): instances
    /// may be placed on it again at once.
    #[arg(long)]
    pub clear_quarantine: bool,
}

/// The node the instance is on or on its way to or from: what a drain of it must wait for.
fn involves(i: &FailoverClusterInstance, node: &str) -> bool {
    let Some(s) = i.status.as_ref() else {
        return false;
    };
    s.owner_node.as_deref() == Some(node)
        || s.current_move
            .as_ref()
            .is_some_and(|m| m.from.as_deref() == Some(node) || m.to.as_deref() == Some(node))
}

fn serving_on(i: &FailoverClusterInstance) -> Option<&str> {
    let s = i.status.as_ref()?;
    (matches!(s.phase, Phase::Online | Phase::Degraded) && s.current_move.is_none())
        .then_some(s.owner_node.as_deref())
        .flatten()
}

/// Why a drain of `node` would leave some instance it hosts nowhere to go, as far as the
/// clusters' status tells: `ns/name: no other member is Up among its possible owners`.
pub fn stranded(
    node: &str,
    hosted: &[&FailoverClusterInstance],
    clusters: &BTreeMap<String, FailoverCluster>,
) -> Vec<String> {
    hosted
        .iter()
        .filter(|i| {
            let up = clusters
                .get(&i.spec.cluster_ref)
                .and_then(|c| c.status.as_ref())
                .map(|s| s.members.as_slice())
                .unwrap_or_default()
                .iter()
                .filter(|m| m.name != node && m.state == MemberState::Up)
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>();
            let possible = &i.spec.owners.possible;
            !up.iter()
                .any(|m| possible.is_empty() || possible.iter().any(|p| p == m))
        })
        .map(|i| {
            format!(
                "{}: no other member is Up among its possible owners",
                i.key()
            )
        })
        .collect()
}

/// Every FailoverCluster, by name, and whether `node` is a member of one of them.
async fn clusters_of(client: &Client, node: &str) -> Result<BTreeMap<String, FailoverCluster>> {
    let all: BTreeMap<String, FailoverCluster> = Api::<FailoverCluster>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing FailoverClusters")?
        .items
        .into_iter()
        .map(|c| (c.name_any(), c))
        .collect();
    if !all.values().any(|c| is_member(c, node)) {
        bail!(
            "{node} is not a member of any FailoverCluster (kubectl failover status lists the members)"
        );
    }
    Ok(all)
}

fn is_member(c: &FailoverCluster, node: &str) -> bool {
    c.status
        .as_ref()
        .is_some_and(|s| s.members.iter().any(|m| m.name == node))
}

/// Cordons (or uncordons) `node` and sets (or removes) the drain mark, as this tool.
async fn set_drained(client: &Client, node: &str, drained: bool) -> Result<()> {
    let patch = if drained {
        serde_json::json!({
            "metadata": {"annotations": {DRAINED_ANNOTATION: jiff::Timestamp::now().to_string()}},
            "spec": {"unschedulable": true},
        })
    } else {
        serde_json::json!({
            "metadata": {"annotations": {DRAINED_ANNOTATION: null}},
            "spec": {"unschedulable": null},
        })
    };
    merge_node(client, node, &patch).await
}

/// A merge patch of the Node `node`, as this verb's field manager.
async fn merge_node(client: &Client, node: &str, patch: &serde_json::Value) -> Result<()> {
    Api::<Node>::all(client.clone())
        .patch(
            node,
            &PatchParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &Patch::Merge(patch),
        )
        .await
        .with_context(|| format!("patching node {node}"))?;
    Ok(())
}

/// Watches every instance until `done` says the set of them is as wanted, printing each
/// instance that comes online on a node for the first time; false on timeout.
async fn wait_until(
    client: &Client,
    watched: &[String],
    timeout: u64,
    done: impl Fn(&BTreeMap<String, FailoverClusterInstance>) -> bool,
) -> Result<bool> {
    let api: Api<FailoverClusterInstance> = Api::all(client.clone());
    let mut seen: BTreeMap<String, FailoverClusterInstance> = BTreeMap::new();
    let mut printed: BTreeMap<String, String> = BTreeMap::new();
    // Judged only on a whole list: during the first one, instances not yet listed would
    // pass for deleted.
    let mut listed = false;
    let mut stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .boxed();
    let wait = async {
        while let Some(event) = stream.next().await {
            match event.context("watching instances")? {
                watcher::Event::Apply(i) | watcher::Event::InitApply(i) => {
                    let k = i.key();
                    if watched.contains(&k)
                        && let Some(owner) = serving_on(&i)
                        && printed.get(&k).map(String::as_str) != Some(owner)
                    {
                        if listed || seen.contains_key(&k) {
                            println!("{k}: online on {owner}");
                        }
                        printed.insert(k.clone(), owner.to_string());
                    }
                    seen.insert(k, i);
                }
                watcher::Event::Delete(i) => {
                    seen.remove(&i.key());
                }
                watcher::Event::Init => {
                    seen.clear();
                    listed = false;
                }
                watcher::Event::InitDone => listed = true,
            }
            if listed && done(&seen) {
                return Ok::<_, anyhow::Error>(true);
            }
        }
        Ok(false)
    };
    match tokio::time::timeout(Duration::from_secs(timeout), wait).await {
        Ok(r) => r,
        Err(_) => Ok(false),
    }
}

/// What each instance waits for, from its `Moving` or `Online` condition.
fn waiting_for(i: &FailoverClusterInstance) -> String {
    let s = i.status.as_ref();
    let c = s.and_then(|s| {
        let find = |t: &str| {
            s.conditions
                .iter()
                .find(|c| c.type_ == t && c.status != "True")
        };
        find("Moving").or_else(|| find("Online"))
    });
    match c {
        Some(c) => format!("{}: {}", c.reason, c.message),
        None => format!("{:?}", s.map(|s| s.phase).unwrap_or_default()),
    }
}

/// Starts a drain of `node`, as `drain` does: refused (an error listing them) when an
/// instance it hosts would have nowhere to go, unless `force`; else the node is cordoned
/// and marked, and the controller moves what it hosts off. Each line `drain` prints goes to
/// `say` as it happens; returns the instances it moves off (`ns/name`), higher priority
/// first.
pub(crate) async fn start_drain(
    client: &Client,
    node: &str,
    force: bool,
    say: &mut (impl FnMut(String) + Send),
) -> Result<Vec<String>> {
    Api::<Node>::all(client.clone())
        .get_opt(node)
        .await?
        .with_context(|| format!("no node {node}"))?;
    let clusters = clusters_of(client, node).await?;
    let instances = Api::<FailoverClusterInstance>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing instances")?
        .items;
    let mut hosted: Vec<&FailoverClusterInstance> =
        instances.iter().filter(|i| involves(i, node)).collect();
    hosted.sort_by_key(|i| (i.spec.priority, i.key()));
    let stranded = stranded(node, &hosted, &clusters);
    if !stranded.is_empty() && !force {
        bail!(
            "draining {node} would leave instances nowhere to go (--force drains anyway; they stay on it):\n  {}",
            stranded.join("\n  ")
        );
    }
    set_drained(client, node, true).await?;
    let order: Vec<String> = hosted
        .iter()
        .map(|i| format!("{} ({:?})", i.key(), i.spec.priority))
        .collect();
    if order.is_empty() {
        say(format!("node/{node} drained: it hosts no instance"));
        return Ok(Vec::new());
    }
    say(format!(
        "node/{node} cordoned; moving {} instance(s) off, higher priority first: {}",
        order.len(),
        order.join(", ")
    ));
    Ok(hosted.iter().map(|i| i.key()).collect())
}

pub async fn drain(client: Client, args: DrainArgs) -> Result<ExitCode> {
    let node = &args.node;
    let watched = start_drain(&client, node, args.force, &mut |line| println!("{line}")).await?;
    if watched.is_empty() || !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let done = |seen: &BTreeMap<String, FailoverClusterInstance>| {
        watched.iter().all(|k| {
            seen.get(k)
                .is_none_or(|i| serving_on(i).is_some_and(|o| o != node))
        })
    };
    if wait_until(&client, &watched, args.timeout, done).await? {
        println!("node/{node} drained");
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("node/{node}: not drained after {} s:", args.timeout);
    let api = Api::<FailoverClusterInstance>::all(client);
    for i in api.list(&ListParams::default()).await?.items {
        if involves(&i, node) {
            eprintln!("  {}: {}", i.key(), waiting_for(&i));
        }
    }
    Ok(ExitCode::FAILURE)
}

/// Whether the last finished move of `i` took it off `node` because `node` was cordoned,
/// and it may go back.
fn drained_off(i: &FailoverClusterInstance, node: &str) -> bool {
    let Some(s) = i.status.as_ref() else {
        return false;
    };
    let possible = &i.spec.owners.possible;
    s.current_move.is_none()
        && s.owner_node.as_deref() != Some(node)
        && matches!(s.phase, Phase::Online | Phase::Degraded)
        && (possible.is_empty() || possible.iter().any(|p| p == node))
        && s.history.last().is_some_and(|m| {
            m.planned
                && m.from.as_deref() == Some(node)
                && m.reason.starts_with(reason::UNSCHEDULABLE)
        })
}

/// Resumes `node`, as `resume` does: uncordoned and unmarked, its quarantine lifted with
/// `clear_quarantine`, and with `failback` a planned move back asked for every instance the
/// drain moved off. Each line `resume` prints goes to `say` as it happens; returns the
/// instances asked to fail back (`ns/name`).
pub(crate) async fn start_resume(
    client: &Client,
    node: &str,
    clear_quarantine: bool,
    failback: bool,
    say: &mut (impl FnMut(String) + Send),
) -> Result<Vec<String>> {
    Api::<Node>::all(client.clone())
        .get_opt(node)
        .await?
        .with_context(|| format!("no node {node}"))?;
    set_drained(client, node, false).await?;
    say(format!("node/{node} resumed: it may host instances again"));
    if clear_quarantine {
        let patch = serde_json::json!({"metadata": {"annotations": {
            CLEAR_QUARANTINE_ANNOTATION: jiff::Timestamp::now().to_string(),
        }}});
        merge_node(client, node, &patch).await?;
        say(format!(
            "node/{node}: its quarantine, if any, is lifted (the controller clears it from the \
             cluster's status)"
        ));
    }
    if !failback {
        return Ok(Vec::new());
    }
    let all = Api::<FailoverClusterInstance>::all(client.clone());
    let mut back: Vec<FailoverClusterInstance> = all
        .list(&ListParams::default())
        .await
        .context("listing instances")?
        .items
        .into_iter()
        .filter(|i| drained_off(i, node))
        .collect();
    back.sort_by_key(|i| (i.spec.priority, i.key()));
    if back.is_empty() {
        say(format!("no instance to fail back to {node}"));
        return Ok(Vec::new());
    }
    let id = jiff::Timestamp::now().to_string();
    for i in &back {
        let api: Api<FailoverClusterInstance> =
            Api::namespaced(client.clone(), &i.namespace().unwrap_or_default());
        annotate(
            &api,
            &i.name_any(),
            serde_json::json!({ MOVE_ANNOTATION: id, MOVE_TO_ANNOTATION: node }),
        )
        .await?;
        say(format!("{}: failback to {node} requested", i.key()));
    }
    Ok(back.iter().map(|i| i.key()).collect())
}

pub async fn resume(client: Client, args: ResumeArgs) -> Result<ExitCode> {
    let node = &args.node;
    let watched = start_resume(
        &client,
        node,
        args.clear_quarantine,
        args.failback,
        &mut |line| println!("{line}"),
    )
    .await?;
    if watched.is_empty() || !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let done = |seen: &BTreeMap<String, FailoverClusterInstance>| {
        watched
            .iter()
            .all(|k| seen.get(k).is_none_or(|i| serving_on(i) == Some(node)))
    };
    if wait_until(&client, &watched, args.timeout, done).await? {
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("not all failed back to {node} after {} s", args.timeout);
    Ok(ExitCode::FAILURE)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_failover_core::api::{
        FailoverClusterInstanceStatus, FailoverClusterStatus, MemberStatus, Move, Owners,
    };

    fn instance(name: &str, owner: &str, possible: &[&str]) -> FailoverClusterInstance {
        let mut i: FailoverClusterInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1",
            "kind": "FailoverClusterInstance",
            "metadata": {"name": name, "namespace": "db"},
            "spec": {
                "clusterRef": "c",
                "networkName": {"name": name, "ports": [{"name": "sql", "port": 1433}]},
                "template": {"spec": {"containers": [{"name": "w", "image": "w"}]}},
            },
        }))
        .unwrap();
        i.spec.owners = Owners {
            possible: possible.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        };
        i.status = Some(FailoverClusterInstanceStatus {
            owner_node: Some(owner.into()),
            phase: Phase::Online,
            ..Default::default()
        });
        i
    }

    fn cluster(members: &[(&str, MemberState)]) -> BTreeMap<String, FailoverCluster> {
        let mut c: FailoverCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1",
            "kind": "FailoverCluster",
            "metadata": {"name": "c"},
            "spec": {},
        }))
        .unwrap();
        c.status = Some(FailoverClusterStatus {
            members: members
                .iter()
                .map(|(n, s)| MemberStatus {
                    name: n.to_string(),
                    state: *s,
                    last_heartbeat: None,
                    reason: None,
                    instance_count: 0,
                    agent: None,
                    non_voting: false,
                    site: None,
                    failures: vec![],
                    quarantine: None,
                })
                .collect(),
            ..Default::default()
        });
        BTreeMap::from([("c".to_string(), c)])
    }

    #[test]
    fn a_drain_is_refused_when_an_instance_would_have_nowhere_to_go() {
        let clusters = cluster(&[
            ("n0", MemberState::Up),
            ("n1", MemberState::Down),
            ("n2", MemberState::Up),
        ]);
        let free = instance("free", "n0", &[]);
        let pinned = instance("pinned", "n0", &["n0", "n1"]);
        let out = stranded("n0", &[&free, &pinned], &clusters);
        assert_eq!(
            out,
            vec!["db/pinned: no other member is Up among its possible owners"]
        );
        // Paused members take nothing new either.
        let clusters = cluster(&[("n0", MemberState::Up), ("n2", MemberState::Paused)]);
        assert_eq!(stranded("n0", &[&free], &clusters).len(), 1);
    }

    #[test]
    fn resume_fails_back_only_what_the_drain_moved_off() {
        let mut drained = instance("a", "n1", &[]);
        let moved = |from: &str, why: &str, planned: bool| -> Move {
            serde_json::from_value(serde_json::json!({
                "from": from, "to": "n1", "reason": why, "planned": planned,
                "started": "2026-01-01T00:00:00.000000Z",
            }))
            .unwrap()
        };
        let status = drained.status.as_mut().unwrap();
        status.history = vec![moved("n0", reason::UNSCHEDULABLE, true)];
        assert!(drained_off(&drained, "n0"));
        assert!(!drained_off(&drained, "n2"), "it was not on n2");
        let mut failed_over = drained.clone();
        failed_over.status.as_mut().unwrap().history =
            vec![moved("n0", "NodeDown: LeaseStale", false)];
        assert!(
            !drained_off(&failed_over, "n0"),
            "a failover is not a drain"
        );
        let mut elsewhere = drained.clone();
        elsewhere.spec.owners.possible = vec!["n1".into(), "n2".into()];
        assert!(
            !drained_off(&elsewhere, "n0"),
            "n0 is no longer a possible owner"
        );
    }
}
