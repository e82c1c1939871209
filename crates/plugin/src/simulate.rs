//! `kubectl failover simulate`: what `crm_simulate` answers for Pacemaker. Were these
//! members to fail (or be drained), where would each instance go, or why would it be held?
//! The controller's own decisions (`decide::whatif`) over the cluster as it is now: its
//! members as the controller last judged them (the cluster's status), the instances with
//! their status, pods, claims, volumes and attachments as the API has them.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::core::v1::{Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, ListParams};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;

use super::{Output, default_namespace, table};
use kube_failover_core::api::{
    AgentState, FailoverCluster, FailoverClusterInstance, INSTANCE_LABEL, MemberState, VipMode,
    reason,
};
use kube_failover_core::decide::facts::{
    dependencies_pending, observe_storage, pod_facts, requests,
};
use kube_failover_core::decide::quarantine::quarantined;
use kube_failover_core::decide::quorum::{WitnessVote, non_voting};
use kube_failover_core::decide::whatif::{Answer, Outcome, Scenario, simulate};
use kube_failover_core::decide::{AgentHealth, HeartbeatBasis, NodeHealth, Observed};
use kube_failover_core::rules::controlled_by;

#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// A member node that fails (its kubelet and node agent silent from now on); repeat
    /// for several.
    #[arg(long = "fail", value_name = "NODE")]
    pub fail: Vec<String>,
    /// A member node drained (cordoned, what it hosts moved off with planned moves);
    /// repeat for several.
    #[arg(long = "drain", value_name = "NODE")]
    pub drain: Vec<String>,
    /// Report only the instances of this namespace (all are simulated, as far as the
    /// caller may read them).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// `json` and `yaml` print the report for scripts.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
}

/// What `simulate` reports.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SimulateReport {
    pub fail: Vec<String>,
    pub drain: Vec<String>,
    pub clusters: Vec<ClusterAnswer>,
    /// Instances that would leave their owner (or be placed).
    pub moves: usize,
    /// Instances the scenario touches that would be held.
    pub held: usize,
    /// What could not be read, and so was not taken into account.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterAnswer {
    pub name: String,
    pub answers: Vec<Answer>,
}

/// Everything read from the API server that the answers are made from.
#[derive(Default)]
pub struct Snapshot {
    pub now: Timestamp,
    pub clusters: Vec<FailoverCluster>,
    pub instances: Vec<FailoverClusterInstance>,
    pub pods: Vec<Pod>,
    pub claims: Vec<PersistentVolumeClaim>,
    pub volumes: BTreeMap<String, PersistentVolume>,
    pub attachments: Vec<VolumeAttachment>,
    pub nodes: BTreeMap<String, Node>,
    pub namespaces: Option<BTreeMap<String, BTreeMap<String, String>>>,
}

/// A member as the controller last judged it (the cluster's status): what `decide` needs
/// of its health. Heartbeat times are the controller's own; ages do not matter here, only
/// who is heard from, fenced, cordoned, and whose agent renews.
pub fn member_health(m: &kube_failover_core::api::MemberStatus, now: Timestamp) -> NodeHealth {
    let failed = matches!(m.state, MemberState::Down | MemberState::Fenced);
    let silent = m.state == MemberState::Fenced
        || (m.state == MemberState::Down && m.reason.as_deref() == Some(reason::LEASE_STALE));
    let long_ago = now - SignedDuration::from_hours(1);
    NodeHealth {
        state: m.state,
        down_since: failed.then_some(now),
        reason: m.reason.clone().filter(|r| r != reason::AGENT_DOWN),
        recheck_at: None,
        heartbeat_stale: silent,
        self_fence: None,
        basis: HeartbeatBasis::default(),
        heartbeat_seen: m.last_heartbeat.as_ref().map(|t| t.0),
        agent: match m.agent {
            None => AgentHealth::Absent,
            Some(AgentState::Renewing) => AgentHealth::Live {
                stopped_workloads: false,
            },
            Some(AgentState::Down) => AgentHealth::Silent {
                seen: long_ago,
                self_fence: None,
                before_kubelet: !failed,
                peer_groups: Vec::new(),
            },
        },
        agent_steady_since: (m.agent == Some(AgentState::Renewing)).then_some(long_ago),
    }
}

impl Snapshot {
    fn labels(&self, ns: &str) -> BTreeMap<String, String> {
        self.namespaces
            .as_ref()
            .and_then(|n| n.get(ns).cloned())
            .unwrap_or_default()
    }

    /// What the controller would observe of `fci` (a member of `cluster`) now.
    pub fn observe(&self, cluster: &FailoverCluster, fci: &FailoverClusterInstance) -> Observed {
        let ns = fci.namespace().unwrap_or_default();
        let status = cluster.status.clone().unwrap_or_default();
        let members: BTreeMap<String, NodeHealth> = status
            .members
            .iter()
            .map(|m| (m.name.clone(), member_health(m, self.now)))
            .collect();
        let witness = status
            .quorum
            .as_ref()
            .and_then(|q| q.witness.as_ref())
            .map(|w| WitnessVote {
                name: w.name.clone(),
                heard: w.heard,
                reason: w.reason.clone(),
                steady_since: w.heard.then(|| self.now - SignedDuration::from_hours(1)),
                recheck_at: None,
            });
        let allowed = match &self.namespaces {
            Some(_) => cluster
                .spec
                .allowed_namespaces
                .allows(&ns, &self.labels(&ns)),
            // Unreadable: the instance's own status says whether it was held for it.
            None => true,
        };
        let mut obs = Observed {
            now: self.now,
            cluster_found: true,
            namespace_allowed: allowed,
            members: members.into(),
            outside: BTreeMap::new(),
            quorum_required: status.quorum.as_ref().map_or(0, |q| q.required),
            non_voting: non_voting(&cluster.spec.quorum),
            witness,
            fencing: cluster.spec.fencing.clone(),
            pods: self
                .pods
                .iter()
                .filter(|p| {
                    p.namespace().as_deref() == Some(ns.as_str())
                        && p.labels().get(INSTANCE_LABEL) == Some(&fci.name_any())
                        && controlled_by(&p.metadata, fci)
                })
                .map(pod_facts)
                .collect(),
            attachments: Vec::new(),
            pinned_claims: BTreeMap::new(),
            missing_claims: Vec::new(),
            unreachable: BTreeMap::new(),
            sites: status
                .members
                .iter()
                .filter_map(|m| Some((m.name.clone(), m.site.clone()?)))
                .collect(),
            quarantined: quarantined(&status.members, self.now).into(),
            dependencies_pending: dependencies_pending(fci, |name| {
                self.instances
                    .iter()
                    .find(|i| i.namespace().as_deref() == Some(ns.as_str()) && i.name_any() == name)
            }),
            endpoints: fci
                .status
                .as_ref()
                .and_then(|s| s.served.as_ref()?.endpoint.clone())
                .into_iter()
                .collect(),
            endpoint_slice_taken: false,
            service_current: true,
            service_taken: false,
            network_withheld: Vec::new(),
            addresses_to_claim: Vec::new(),
            addresses_to_release: Vec::new(),
            service_refused: None,
            higher_priority_starting: false,
            dns_name: String::new(),
            vip_holders: BTreeSet::new(),
            requests: requests(fci.annotations()),
            needs_agent: fci.spec.vip_mode == VipMode::Agent && !fci.spec.virtual_ips.is_empty(),
            neighbours: BTreeMap::new(),
        };
        observe_storage(
            &mut obs,
            fci,
            |claim| {
                self.claims.iter().find(|c| {
                    c.namespace().as_deref() == Some(ns.as_str()) && c.name_any() == claim
                })
            },
            |volume| self.volumes.get(volume),
            |node| self.nodes.get(node),
            |volume| {
                self.attachments
                    .iter()
                    .filter(|a| a.spec.source.persistent_volume_name.as_deref() == Some(volume))
                    .collect()
            },
        );
        obs
    }

    /// The answers for each cluster the scenario touches.
    pub fn answer(&self, scenario: &Scenario) -> Vec<ClusterAnswer> {
        self.clusters
            .iter()
            .filter(|c| {
                c.status
                    .as_ref()
                    .is_some_and(|s| s.members.iter().any(|m| is_named(scenario, &m.name)))
            })
            .map(|c| ClusterAnswer {
                name: c.name_any(),
                answers: simulate(
                    c,
                    &self.instances,
                    |i| self.observe(c, i),
                    |ns| self.labels(ns),
                    scenario,
                ),
            })
            .collect()
    }
}

fn is_named(scenario: &Scenario, node: &str) -> bool {
    scenario.fail.contains(node) || scenario.drain.contains(node)
}

/// Lists what the answers are made from. Instances, pods and claims of every namespace,
/// else (when the caller may not) of `namespace`; volumes, attachments, nodes and
/// namespaces when the caller may read them, else left out and said so.
async fn read(client: &Client, namespace: &str, unread: &mut Vec<String>) -> Result<Snapshot> {
    let clusters = Api::<FailoverCluster>::all(client.clone())
        .list(&ListParams::default())
        .await
        .context("listing FailoverClusters")?
        .items;
    let instances = match Api::<FailoverClusterInstance>::all(client.clone())
        .list(&ListParams::default())
        .await
    {
        Ok(l) => l.items,
        Err(e) => {
            unread.push(format!(
                "instances of other namespaces than {namespace} ({e}): their anti-affinity is not counted"
            ));
            Api::<FailoverClusterInstance>::namespaced(client.clone(), namespace)
                .list(&ListParams::default())
                .await
                .context("listing FailoverClusterInstances")?
                .items
        }
    };
    let namespaces: BTreeSet<String> = instances.iter().filter_map(|i| i.namespace()).collect();
    let mut pods = Vec::new();
    let mut claims = Vec::new();
    for ns in &namespaces {
        let selector = ListParams::default().labels(INSTANCE_LABEL);
        match Api::<Pod>::namespaced(client.clone(), ns)
            .list(&selector)
            .await
        {
            Ok(l) => pods.extend(l.items),
            Err(e) => unread.push(format!("pods of namespace {ns}: {e}")),
        }
        match Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
            .list(&ListParams::default())
            .await
        {
            Ok(l) => claims.extend(l.items),
            Err(e) => unread.push(format!("claims of namespace {ns}: {e}")),
        }
    }
    async fn all<K>(client: &Client, what: &str, unread: &mut Vec<String>) -> Option<Vec<K>>
    where
        K: Resource<Scope = k8s_openapi::ClusterResourceScope>
            + Clone
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
        K::DynamicType: Default,
    {
        match Api::<K>::all(client.clone())
            .list(&ListParams::default())
            .await
        {
            Ok(l) => Some(l.items),
            Err(e) => {
                unread.push(format!("{what}: {e}"));
                None
            }
        }
    }
    let volumes = all::<PersistentVolume>(client, "PersistentVolumes", unread)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|v| (v.name_any(), v))
        .collect();
    let attachments = all::<VolumeAttachment>(client, "VolumeAttachments", unread)
        .await
        .unwrap_or_default();
    let nodes = all::<Node>(client, "Nodes", unread)
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|n| (n.name_any(), n))
        .collect();
    let namespaces = all::<Namespace>(client, "Namespaces", unread)
        .await
        .map(|ns| {
            ns.into_iter()
                .map(|n| (n.name_any(), n.labels().clone()))
                .collect()
        });
    Ok(Snapshot {
        now: Timestamp::now(),
        clusters,
        instances,
        pods,
        claims,
        volumes,
        attachments,
        nodes,
        namespaces,
    })
}

/// The report for `scenario` over `snapshot`, limited to `namespace` if given.
pub fn report(
    snapshot: &Snapshot,
    scenario: &Scenario,
    namespace: Option<&str>,
    unread: Vec<String>,
) -> SimulateReport {
    let mut clusters = snapshot.answer(scenario);
    if let Some(ns) = namespace {
        let prefix = format!("{ns}/");
        for c in &mut clusters {
            c.answers.retain(|a| a.instance.starts_with(&prefix));
        }
    }
    let answers = clusters.iter().flat_map(|c| &c.answers);
    let moves = answers.clone().filter(|a| a.moves()).count();
    let held = answers
        .filter(|a| a.affected && matches!(a.outcome, Outcome::Held { .. }))
        .count();
    SimulateReport {
        fail: scenario.fail.iter().cloned().collect(),
        drain: scenario.drain.iter().cloned().collect(),
        clusters,
        moves,
        held,
        unread,
    }
}

/// The report as tables: one row per instance, with where it would go or why it would be
/// held.
pub fn render(r: &SimulateReport) -> String {
    let mut out = String::new();
    for c in &r.clusters {
        out.push_str(&format!("cluster {}\n", c.name));
        let rows: Vec<Vec<String>> = c
            .answers
            .iter()
            .map(|a| {
                let owner = a.owner.clone().unwrap_or_else(|| "-".into());
                let (would, detail) = match &a.outcome {
                    Outcome::Stays => ("stays".to_string(), String::new()),
                    Outcome::Moves {
                        to,
                        failover,
                        waits,
                    } => {
                        let how = match (a.owner.is_some(), failover) {
                            (false, _) => "placed on",
                            (true, true) => "fails over to",
                            (true, false) => "moves to",
                        };
                        let waits = waits
                            .as_ref()
                            .map(|w| format!(" (once {w})"))
                            .unwrap_or_default();
                        (format!("{how} {to}"), waits.trim().to_string())
                    }
                    Outcome::Held { reason, message } => {
                        (format!("held: {reason}"), message.clone())
                    }
                };
                vec![a.instance.clone(), owner, would, detail]
            })
            .collect();
        out.push_str(&table(&["INSTANCE", "OWNER", "WOULD", "WHY"], &rows));
    }
    let mut what: Vec<String> = r.fail.iter().map(|n| format!("{n} fails")).collect();
    what.extend(r.drain.iter().map(|n| format!("{n} is drained")));
    out.push_str(&format!(
        "if {}: {} move(s), {} held\n",
        what.join(" and "),
        r.moves,
        r.held
    ));
    for u in &r.unread {
        out.push_str(&format!("not read (left out of the answer): {u}\n"));
    }
    out
}

pub async fn run(client: Client, args: SimulateArgs) -> Result<ExitCode> {
    if args.fail.is_empty() && args.drain.is_empty() {
        bail!("name at least one node: --fail NODE or --drain NODE");
    }
    let scenario = Scenario {
        fail: args.fail.iter().cloned().collect(),
        drain: args.drain.iter().cloned().collect(),
    };
    let namespace = match &args.namespace {
        Some(ns) => ns.clone(),
        None => default_namespace().await,
    };
    let mut unread = Vec::new();
    let snapshot = read(&client, &namespace, &mut unread).await?;
    let members: BTreeSet<&str> = snapshot
        .clusters
        .iter()
        .filter_map(|c| c.status.as_ref())
        .flat_map(|s| s.members.iter().map(|m| m.name.as_str()))
        .collect();
    let strangers: Vec<&String> = scenario
        .fail
        .iter()
        .chain(&scenario.drain)
        .filter(|n| !members.contains(n.as_str()))
        .collect();
    if !strangers.is_empty() {
        bail!(
            "not a member of any FailoverCluster (as their status lists them): {}",
            strangers
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let r = report(&snapshot, &scenario, args.namespace.as_deref(), unread);
    match args.output {
        Output::Table | Output::Wide => print!("{}", render(&r)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&r)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&r)?),
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster(members: serde_json::Value) -> FailoverCluster {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverCluster",
            "metadata": {"name": "c"},
            "spec": {"nodeSelector": {}, "allowedNamespaces": {"selector": {}}},
            "status": {"members": members, "quorum": {"total": 3, "healthy": 3, "required": 2}},
        }))
        .unwrap()
    }

    fn instance(name: &str, owner: &str, possible: &[&str]) -> FailoverClusterInstance {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverClusterInstance",
            "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}")},
            "spec": {
                "clusterRef": "c",
                "networkName": {"name": name, "ports": [{"name": "sql", "port": 5432}]},
                "template": {"spec": {"containers": [{"name": "db", "image": "db"}]}},
                "owners": {"possible": possible},
            },
            "status": {"phase": "Online", "ownerNode": owner, "moveSeq": 1,
                       "served": {"dnsName": "x", "endpoint": "10.0.0.1"}},
        }))
        .unwrap()
    }

    fn pod_of(fci: &FailoverClusterInstance, node: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{}-1", fci.name_any()), "namespace": "ns",
                         "uid": format!("pod-{}", fci.name_any()),
                         "labels": {INSTANCE_LABEL: fci.name_any()},
                         "ownerReferences": [{"apiVersion": "kube-failover.io/v1alpha1",
                             "kind": "FailoverClusterInstance", "name": fci.name_any(),
                             "uid": fci.uid().unwrap(), "controller": true}]},
            "spec": {"nodeName": node, "containers": [{"name": "db", "image": "db"}]},
            "status": {"podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
        }))
        .unwrap()
    }

    fn snapshot(members: serde_json::Value) -> Snapshot {
        let db = instance("db", "a", &[]);
        let pinned = instance("pinned", "a", &["a"]);
        let web = instance("web", "b", &[]);
        Snapshot {
            now: Timestamp::now(),
            clusters: vec![cluster(members)],
            pods: vec![pod_of(&db, "a"), pod_of(&pinned, "a"), pod_of(&web, "b")],
            instances: vec![db, pinned, web],
            namespaces: Some(BTreeMap::from([("ns".to_string(), BTreeMap::new())])),
            ..Default::default()
        }
    }

    fn three_up() -> serde_json::Value {
        serde_json::json!([
            {"name": "a", "state": "Up", "agent": "Renewing"},
            {"name": "b", "state": "Up", "agent": "Renewing"},
            {"name": "c", "state": "Up"},
        ])
    }

    #[test]
    fn a_failure_reports_each_move_and_each_instance_held() {
        let s = snapshot(three_up());
        let r = report(&s, &Scenario::failing("a"), None, Vec::new());
        let answers = &r.clusters[0].answers;
        let of = |n: &str| &answers.iter().find(|a| a.instance == n).unwrap().outcome;
        assert!(
            matches!(of("ns/db"), Outcome::Moves { to, failover: true, .. } if to == "b"),
            "{answers:?}"
        );
        assert!(
            matches!(of("ns/pinned"), Outcome::Held { reason, .. } if reason == "NoEligibleOwner"),
            "{answers:?}"
        );
        assert_eq!(of("ns/web"), &Outcome::Stays);
        assert_eq!((r.moves, r.held), (1, 1));
        let text = render(&r);
        assert!(text.contains("fails over to b"), "{text}");
        assert!(text.contains("held: NoEligibleOwner"), "{text}");
        assert!(text.contains("if a fails: 1 move(s), 1 held"), "{text}");
    }

    #[test]
    fn the_members_state_comes_from_the_clusters_status() {
        // c is already down: failing a or b too loses the quorum, whatever b's agent.
        let members = serde_json::json!([
            {"name": "a", "state": "Up", "agent": "Renewing"},
            {"name": "b", "state": "Up", "agent": "Down", "reason": "AgentDown"},
            {"name": "c", "state": "Down", "reason": "LeaseStale"},
        ]);
        let s = snapshot(members);
        let r = report(&s, &Scenario::failing("b"), None, Vec::new());
        let web = r.clusters[0]
            .answers
            .iter()
            .find(|a| a.instance == "ns/web")
            .unwrap();
        assert!(
            matches!(&web.outcome, Outcome::Held { reason, .. } if reason == reason::QUORUM_LOST),
            "{web:?}"
        );
        let r = report(&s, &Scenario::failing("a"), Some("ns"), Vec::new());
        let db = r.clusters[0]
            .answers
            .iter()
            .find(|a| a.instance == "ns/db")
            .unwrap();
        assert!(
            matches!(&db.outcome, Outcome::Held { reason, .. } if reason == reason::QUORUM_LOST),
            "{db:?}"
        );
        // Another namespace's report lists none of them.
        let r = report(&s, &Scenario::failing("a"), Some("other"), Vec::new());
        assert!(r.clusters[0].answers.is_empty());
    }
}
