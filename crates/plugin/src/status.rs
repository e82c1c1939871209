//! `kubectl failover status`: what Get-ClusterNode and Get-ClusterGroup show together.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use serde::Serialize;

use super::{Output, default_namespace, human_age, table};
use kube_failover_core::api::{
    FailoverCluster, FailoverClusterInstance, MemberState, MemberStatus, QuorumStatus,
};

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Instances of this namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Instances of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// `wide` adds the DNS name, the cluster and the Online condition's reason; `json` and
    /// `yaml` print the report for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
    /// Print the report again whenever a cluster or an instance changes (at most once a
    /// second), until interrupted.
    #[arg(short = 'w', long)]
    pub watch: bool,
}

/// What `status` reports, as `-o json|yaml` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusReport {
    pub clusters: Vec<ClusterReport>,
    pub instances: Vec<InstanceReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    pub name: String,
    /// Member nodes up (or paused) / members, and how many automatic failover needs.
    pub quorum: Option<QuorumStatus>,
    /// How many more members may fail before automatic failover stops (negative: that
    /// many short of the quorum).
    pub quorum_margin: Option<i64>,
    pub members: Vec<MemberReport>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberReport {
    pub name: String,
    pub state: MemberState,
    /// Milliseconds since the controller last saw the node's heartbeat.
    pub heartbeat_age_ms: Option<i64>,
    pub reason: Option<String>,
    pub instances: Vec<String>,
    /// Listed in `quorum.nonVotingNodes`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub non_voting: bool,
    /// Its site, when the cluster has sites.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// Quarantined until then (it failed too often): nothing is placed on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quarantined_until: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceReport {
    pub namespace: String,
    pub name: String,
    pub cluster: String,
    pub owner: Option<String>,
    pub phase: String,
    pub virtual_ips: Vec<String>,
    pub endpoint: Option<String>,
    pub dns_name: Option<String>,
    pub failovers: u32,
    /// The Online condition's reason and message when it is not True: what it waits for.
    pub reason: Option<String>,
    pub waiting_for: Option<String>,
}

/// The report of `clusters` and `instances` at `now`.
pub fn report(
    clusters: &[FailoverCluster],
    instances: &[FailoverClusterInstance],
    now: Timestamp,
) -> StatusReport {
    let clusters = clusters
        .iter()
        .map(|c| {
            let status = c.status.as_ref();
            let quorum = status.and_then(|s| s.quorum.clone());
            ClusterReport {
                name: c.name_any(),
                quorum_margin: quorum
                    .as_ref()
                    .map(|q| i64::from(q.healthy) - i64::from(q.required)),
                quorum,
                members: {
                    let cluster = c.name_any();
                    let mut members: Vec<MemberReport> = status
                        .map(|s| {
                            s.members
                                .iter()
                                .map(|m| member(m, owned_by(instances, &cluster, &m.name), now))
                                .collect()
                        })
                        .unwrap_or_default();
                    members.sort_by(|a, b| a.name.cmp(&b.name));
                    members
                },
            }
        })
        .collect();
    let instances = instances
        .iter()
        .map(|i| {
            let status = i.status.as_ref();
            let online = status.and_then(|s| s.conditions.iter().find(|c| c.type_ == "Online"));
            let waiting = online.filter(|c| c.status != "True");
            let served = status.and_then(|s| s.served.as_ref());
            InstanceReport {
                namespace: i.namespace().unwrap_or_default(),
                name: i.name_any(),
                cluster: i.spec.cluster_ref.clone(),
                owner: status.and_then(|s| s.owner_node.clone()),
                phase: status
                    .map(|s| format!("{:?}", s.phase))
                    .unwrap_or_else(|| "Pending".into()),
                virtual_ips: i.spec.virtual_ips.clone(),
                endpoint: served.and_then(|s| s.endpoint.clone()),
                dns_name: served.map(|s| s.dns_name.clone()),
                failovers: status.map(|s| s.failover_count).unwrap_or(0),
                reason: waiting.map(|c| c.reason.clone()),
                waiting_for: waiting.map(|c| c.message.clone()),
            }
        })
        .collect();
    StatusReport {
        clusters,
        instances,
    }
}

/// The instances of `cluster` that `node` owns, as `namespace/name`, sorted.
fn owned_by(instances: &[FailoverClusterInstance], cluster: &str, node: &str) -> Vec<String> {
    let mut owned: Vec<String> = instances
        .iter()
        .filter(|i| i.spec.cluster_ref == cluster)
        .filter(|i| i.status.as_ref().and_then(|s| s.owner_node.as_deref()) == Some(node))
        .map(|i| format!("{}/{}", i.namespace().unwrap_or_default(), i.name_any()))
        .collect();
    owned.sort();
    owned
}

fn member(m: &MemberStatus, instances: Vec<String>, now: Timestamp) -> MemberReport {
    MemberReport {
        name: m.name.clone(),
        state: m.state,
        heartbeat_age_ms: m
            .last_heartbeat
            .as_ref()
            .map(|t| now.duration_since(t.0).as_millis() as i64),
        reason: m.reason.clone(),
        instances,
        non_voting: m.non_voting,
        site: m.site.clone(),
        quarantined_until: m
            .quarantine
            .as_ref()
            .filter(|q| q.until.0 > now)
            .map(|q| q.until.0.to_string()),
    }
}

impl ClusterReport {
    /// The quorum in words (votes, not members, once a witness or a member that does not
    /// vote counts), and whether it is lost.
    pub fn quorum_text(&self) -> (String, bool) {
        let (Some(q), Some(margin)) = (&self.quorum, self.quorum_margin) else {
            return ("not yet computed".into(), false);
        };
        let voting = self.members.iter().all(|m| !m.non_voting);
        let counted = match &q.witness {
            None if voting => format!("{} of {} members up", q.healthy, q.total),
            None => format!("{} of {} votes heard", q.healthy, q.total),
            Some(w) => format!(
                "{} of {} votes heard (witness {}: {})",
                q.healthy,
                q.total,
                w.name,
                if w.heard {
                    "heard"
                } else {
                    w.reason.as_deref().unwrap_or("not heard")
                }
            ),
        };
        if margin >= 0 {
            (
                format!("{counted}, {} required: {margin} more may fail", q.required),
                false,
            )
        } else {
            (
                format!(
                    "LOST: {counted}, {} required ({} short): nothing fails over",
                    q.required, -margin
                ),
                true,
            )
        }
    }
}

/// The report as tables.
pub fn render(r: &StatusReport, wide: bool) -> String {
    let mut out = String::new();
    if r.clusters.is_empty() {
        out.push_str("No FailoverClusters.\n");
    }
    for c in &r.clusters {
        let (quorum, _) = c.quorum_text();
        out.push_str(&format!("Cluster {}   quorum: {quorum}\n", c.name));
        let sites = c.members.iter().any(|m| m.site.is_some());
        let rows: Vec<Vec<String>> = c
            .members
            .iter()
            .map(|m| {
                let name = match (&m.site, sites) {
                    (Some(site), true) => format!("{} ({site})", m.name),
                    _ => m.name.clone(),
                };
                vec![
                    name,
                    format!("{:?}", m.state),
                    m.heartbeat_age_ms
                        .map(|ms| human_age(jiff::SignedDuration::from_millis(ms)) + " ago")
                        .unwrap_or_else(|| "-".into()),
                    if m.instances.is_empty() {
                        "-".into()
                    } else {
                        m.instances.join(",")
                    },
                    [
                        m.reason.clone(),
                        m.non_voting.then(|| "does not vote".to_string()),
                        m.quarantined_until
                            .as_ref()
                            .map(|u| format!("quarantined until {u}")),
                    ]
                    .into_iter()
                    .flatten()
                    .collect::<Vec<_>>()
                    .join("; "),
                ]
            })
            .collect();
        out.push_str(&table(
            &["NODE", "STATE", "HEARTBEAT", "INSTANCES", "WHY"],
            &rows,
        ));
        out.push('\n');
    }
    if r.instances.is_empty() {
        out.push_str("No instances.\n");
        return out;
    }
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let rows: Vec<Vec<String>> = r
        .instances
        .iter()
        .map(|i| {
            let vips = if i.virtual_ips.is_empty() {
                "-".into()
            } else {
                i.virtual_ips.join(",")
            };
            let mut row = vec![
                i.namespace.clone(),
                i.name.clone(),
                dash(&i.owner),
                i.phase.clone(),
                vips,
                dash(&i.endpoint),
                i.failovers.to_string(),
            ];
            if wide {
                row.push(i.cluster.clone());
                row.push(dash(&i.dns_name));
                row.push(dash(&i.reason));
            }
            row.push(i.waiting_for.clone().unwrap_or_default());
            row
        })
        .collect();
    let mut header = vec![
        "NAMESPACE",
        "INSTANCE",
        "OWNER",
        "PHASE",
        "VIP",
        "ENDPOINT",
        "FAILOVERS",
    ];
    if wide {
        header.extend(["CLUSTER", "DNS", "REASON"]);
    }
    header.push("WAITING FOR");
    out.push_str(&table(&header, &rows));
    out
}

async fn fetch(
    clusters: &Api<FailoverCluster>,
    instances: &Api<FailoverClusterInstance>,
) -> Result<StatusReport> {
    let cs = clusters
        .list(&ListParams::default())
        .await
        .context("listing FailoverClusters (are the CRDs installed?)")?;
    let is = instances
        .list(&ListParams::default())
        .await
        .context("listing FailoverClusterInstances")?;
    Ok(report(&cs.items, &is.items, Timestamp::now()))
}

fn print(r: &StatusReport, output: Output) -> Result<()> {
    match output {
        Output::Table => print!("{}", render(r, false)),
        Output::Wide => print!("{}", render(r, true)),
        Output::Json => println!("{}", serde_json::to_string_pretty(r)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(r)?),
    }
    Ok(())
}

pub async fn run(client: Client, args: StatusArgs) -> Result<ExitCode> {
    let clusters: Api<FailoverCluster> = Api::all(client.clone());
    let instances: Api<FailoverClusterInstance> = if args.all_namespaces {
        Api::all(client.clone())
    } else {
        let ns = match args.namespace {
            Some(ns) => ns,
            None => default_namespace().await,
        };
        Api::namespaced(client.clone(), &ns)
    };
    print(&fetch(&clusters, &instances).await?, args.output)?;
    if !args.watch {
        return Ok(ExitCode::SUCCESS);
    }
    // Any change to a cluster or an instance: print again, at most once a second.
    // Only changes: the watches' initial listings are what was just printed.
    fn changed<K>(e: Result<watcher::Event<K>, watcher::Error>) -> Option<Result<()>> {
        match e {
            Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => Some(Ok(())),
            Ok(_) => None,
            Err(e) => Some(Err(e.into())),
        }
    }
    let config = watcher::Config::default();
    let changes = futures::stream::select(
        watcher(clusters.clone(), config.clone())
            .default_backoff()
            .filter_map(|e| futures::future::ready(changed(e)))
            .boxed(),
        watcher(instances.clone(), config)
            .default_backoff()
            .filter_map(|e| futures::future::ready(changed(e)))
            .boxed(),
    );
    let mut changes = std::pin::pin!(changes);
    let mut last = std::time::Instant::now();
    while let Some(change) = changes.next().await {
        if let Err(e) = change {
            eprintln!("watch: {e}");
            continue;
        }
        let wait = Duration::from_secs(1).saturating_sub(last.elapsed());
        tokio::time::sleep(wait).await;
        // Whatever else arrived meanwhile is in the new report.
        while let Some(Some(_)) = futures::FutureExt::now_or_never(changes.next()) {}
        last = std::time::Instant::now();
        println!();
        print(&fetch(&clusters, &instances).await?, args.output)?;
    }
    Ok(ExitCode::SUCCESS)
}
