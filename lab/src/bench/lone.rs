//! Lone failovers, one after the other: one instance's reaction, measured often enough for a
//! p99. The instances fail back (`failback.mode: Immediate`, set for this phase), so that
//! each round starts from the same spread. Each round waits until every instance is Online on
//! its most preferred node, kills the node hosting the fewest instances (one, when there are
//! as many nodes as instances), waits until they are Online elsewhere, and revives the node:
//! the controller lifts its taint once it has been back for the cluster's
//! `fencing.unfenceAfterSeconds`, and its instances move back to it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{Result, bail};
use kube::{Client, ResourceExt};

use super::{Stats, online, watch_instances};
use crate::controlplane::ControlPlane;
use kube_failover_core::api::{FailoverClusterInstance, Move};

/// One instance's reaction over lone failovers, and when each step was done, from the move's
/// start.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct LoneFailovers {
    /// Rounds run (one node killed in each).
    pub rounds: usize,
    /// Move started → new pod created, over every move of every round.
    pub reaction: Stats,
    /// Each step's time from the move's start (`endpointWithdrawn`, `fenced`…), over the
    /// same moves, in the order the steps happen.
    pub steps: Vec<(String, Stats)>,
}

/// Runs `rounds` lone failovers among `members`, every instance Online at the start of each.
pub async fn run(
    cp: &ControlPlane,
    client: &Client,
    members: &[String],
    rounds: usize,
) -> Result<LoneFailovers> {
    let mut moves: Vec<Move> = Vec::new();
    fail_back(client).await?;
    // When each node was last killed (round number): the least recently killed goes first
    // among those hosting as few instances.
    let mut killed_in: BTreeMap<String, usize> = BTreeMap::new();
    for round in 0..rounds {
        let all = explained(
            client,
            "every instance Online on its most preferred node before a lone failover",
            &BTreeSet::new(),
            |all| all.iter().all(|i| online(i) && home(i)),
        )
        .await?;
        let Some(victim) = pick(&all, members, &killed_in) else {
            bail!("no member node hosts an instance");
        };
        let affected: BTreeSet<String> = all
            .iter()
            .filter(|i| owner(i) == Some(victim.as_str()))
            .map(|i| i.name_any())
            .collect();
        let killed_at = cp
            .nodes
            .kill_together(std::slice::from_ref(&victim))
            .await?;
        killed_in.insert(victim.clone(), round);
        let after = explained(
            client,
            "a lone failover's instances Online elsewhere",
            &affected,
            |all| {
                all.iter()
                    .filter(|i| affected.contains(&i.name_any()))
                    .all(|i| online(i) && move_since(i, &victim, killed_at).is_some())
            },
        )
        .await?;
        moves.extend(
            after
                .iter()
                .filter(|i| affected.contains(&i.name_any()))
                .filter_map(|i| move_since(i, &victim, killed_at)),
        );
        cp.nodes.revive(&victim).await?;
        eprintln!(
            "[bench] lone failover {} of {rounds}: {victim} killed, {} instance(s) moved",
            round + 1,
            affected.len()
        );
    }
    Ok(summarise(rounds, &moves))
}

/// [`watch_instances`] with two minutes' patience, and what the instances that are not Online
/// say if it runs out.
async fn explained<F>(
    client: &Client,
    what: &str,
    watched: &BTreeSet<String>,
    done: F,
) -> Result<Vec<FailoverClusterInstance>>
where
    F: FnMut(&[std::sync::Arc<FailoverClusterInstance>]) -> bool,
{
    match watch_instances(client, Duration::from_secs(120), what, done).await {
        Ok(all) => Ok(all),
        Err(e) => Err(e.context(not_online(client, watched).await)),
    }
}

/// What the instances that are not Online, not home, or `watched`, say, for an error.
async fn not_online(client: &Client, watched: &BTreeSet<String>) -> String {
    let api: kube::Api<FailoverClusterInstance> = kube::Api::namespaced(client.clone(), super::NS);
    match api.list(&Default::default()).await {
        Ok(listed) => listed
            .items
            .iter()
            .filter(|i| !online(i) || !home(i) || watched.contains(&i.name_any()))
            .map(|i| {
                format!(
                    "{} (preferred {:?}): {:?}",
                    i.name_any(),
                    i.spec.owners.preferred,
                    i.status
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("the instances could not be listed: {e}"),
    }
}

/// Every instance fails back to its most preferred node once that node is up again.
async fn fail_back(client: &Client) -> Result<()> {
    let api: kube::Api<FailoverClusterInstance> = kube::Api::namespaced(client.clone(), super::NS);
    let patch = serde_json::json!({"spec": {"failback": {"mode": "Immediate"}}});
    for i in api.list(&Default::default()).await? {
        api.patch(
            &i.name_any(),
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(())
}

/// Whether an instance runs on its most preferred node (or has none).
fn home(i: &FailoverClusterInstance) -> bool {
    match i.spec.owners.preferred.first() {
        Some(first) => owner(i) == Some(first.as_str()),
        None => true,
    }
}

/// The node an instance runs on.
fn owner(i: &FailoverClusterInstance) -> Option<&str> {
    i.status.as_ref()?.owner_node.as_deref()
}

/// The member hosting the fewest instances (at least one), the least recently killed first.
fn pick(
    all: &[FailoverClusterInstance],
    members: &[String],
    killed_in: &BTreeMap<String, usize>,
) -> Option<String> {
    let mut hosted: BTreeMap<&str, usize> = BTreeMap::new();
    for i in all {
        if let Some(o) = owner(i) {
            *hosted.entry(o).or_default() += 1;
        }
    }
    members
        .iter()
        .filter_map(|m| Some((m, *hosted.get(m.as_str())?)))
        .min_by_key(|(m, n)| {
            let last = killed_in.get(*m).map_or(-1, |r| *r as i64);
            (*n, last, (*m).clone())
        })
        .map(|(m, _)| m.clone())
}

/// The instance's move off `from` that started after `killed_at`, once it is done.
fn move_since(i: &FailoverClusterInstance, from: &str, killed_at: jiff::Timestamp) -> Option<Move> {
    i.status
        .as_ref()?
        .history
        .iter()
        .rev()
        .find(|m| m.from.as_deref() == Some(from) && m.started.0 > killed_at && m.online.is_some())
        .cloned()
}

fn summarise(rounds: usize, moves: &[Move]) -> LoneFailovers {
    let since_start =
        |m: &Move, t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>| {
            t.map(|t| t.0.duration_since(m.started.0).as_secs_f64())
        };
    let reaction = moves
        .iter()
        .filter_map(|m| since_start(m, m.pod_created.as_ref()))
        .collect();
    let mut steps: Vec<(String, Vec<f64>)> = Vec::new();
    for m in moves {
        for (name, _, t) in m.steps().into_iter().skip(1) {
            let Some(secs) = since_start(m, t) else {
                continue;
            };
            match steps.iter_mut().find(|(n, _)| n == name) {
                Some((_, v)) => v.push(secs),
                None => steps.push((name.to_string(), vec![secs])),
            }
        }
    }
    LoneFailovers {
        rounds,
        reaction: Stats::of(reaction),
        steps: steps.into_iter().map(|(n, v)| (n, Stats::of(v))).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;

    fn at(ms: i64) -> MicroTime {
        MicroTime(jiff::Timestamp::from_millisecond(ms).unwrap())
    }

    #[test]
    fn the_reaction_and_each_step_are_counted_from_the_move_start() {
        let m = |start: i64, created: i64| Move {
            fenced: Some(at(start + 10)),
            pod_created: Some(at(created)),
            online: Some(at(created + 500)),
            ..Move::started(
                Some("a".into()),
                Some("b".into()),
                "NodeDown",
                false,
                at(start),
            )
        };
        let s = summarise(2, &[m(1_000, 1_040), m(5_000, 5_060)]);
        assert_eq!(s.reaction.n, 2);
        assert!((s.reaction.max - 0.060).abs() < 1e-9, "{:?}", s.reaction);
        let names: Vec<&str> = s.steps.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["fenced", "podCreated", "online"]);
        assert!((s.steps[0].1.p50 - 0.010).abs() < 1e-9);
    }

    #[test]
    fn the_least_loaded_node_killed_longest_ago_is_picked() {
        let inst = |name: &str, node: &str| {
            let mut i = crate::demo::instance(name, "c", &[], None).unwrap();
            i.status = Some(kube_failover_core::api::FailoverClusterInstanceStatus {
                owner_node: Some(node.into()),
                ..Default::default()
            });
            i
        };
        let all = vec![
            inst("x", "a"),
            inst("y", "a"),
            inst("z", "b"),
            inst("w", "c"),
        ];
        let members: Vec<String> = ["a", "b", "c", "d"].map(String::from).to_vec();
        // b and c host one each, d none, a two: b, never killed, before c killed in round 0.
        let killed = BTreeMap::from([("c".to_string(), 0)]);
        assert_eq!(pick(&all, &members, &killed).as_deref(), Some("b"));
        let killed = BTreeMap::from([("b".to_string(), 3), ("c".to_string(), 1)]);
        assert_eq!(pick(&all, &members, &killed).as_deref(), Some("c"));
    }
}
