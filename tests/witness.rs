//! Two-node clusters with a witness, on the real control plane with simulated nodes: the
//! witness's Lease is renewed by the witness's own code (`kube-failover witness`), here in
//! the test process, and stopped when the test says.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube_failover_controller::witness::{WitnessConfig, run};
use kube_failover_core::api::{
    FailoverCluster, FailoverClusterInstance, NODE_LEASE_NAMESPACE, reason,
};
use kube_failover_lab::controlplane::{CONTROLLER_NS, WITNESS_SA, install_witness_identity};
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, has_oos_taint, is_online, nodes_and_cluster,
    online_message, online_on, online_reason, owner, service_account_config, wait_for,
};

const T: Duration = Duration::from_secs(90);

/// The chart's default witness Lease.
const CHART_LEASE: &str = "kube-failover-witness-default";

/// A client as the chart's witness ServiceAccount, its identity installed as the chart makes
/// it for [`CHART_LEASE`] (RBAC and admission policy as they ship).
async fn chart_witness_client() -> kube::Client {
    let cp = control_plane();
    let admin = cp.client().unwrap();
    let helm = cp.tools_bin().join("helm");
    install_witness_identity(&admin, &helm, CHART_LEASE)
        .await
        .unwrap();
    let config = service_account_config(CONTROLLER_NS, WITNESS_SA).await;
    kube::Client::try_from(config).unwrap()
}

/// A witness renewing `lease` every 500 ms until dropped.
struct Witness(tokio::task::JoinHandle<anyhow::Result<()>>);

impl Witness {
    fn start(client: &kube::Client, lease: &str) -> Self {
        let config = WitnessConfig {
            lease: lease.into(),
            identity: "witness-test".into(),
            renew_every: Duration::from_millis(500),
        };
        Self(tokio::spawn(run(client.clone(), config)))
    }
}

impl Drop for Witness {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The cluster's quorum as its status says: (votes, heard, required, witness heard).
fn quorum_of(c: Option<&FailoverCluster>) -> Option<(u32, u32, u32, Option<bool>)> {
    let q = c?.status.as_ref()?.quorum.clone()?;
    Some((q.total, q.healthy, q.required, q.witness.map(|w| w.heard)))
}

/// Two member nodes and a cluster whose witness is the Lease `lease`.
async fn two_nodes_and_a_witness(client: &kube::Client, prefix: &str, lease: &str) -> Vec<String> {
    let spec = serde_json::json!({"quorum": {"witness": {"lease": lease}}});
    nodes_and_cluster(client, prefix, 2, spec).await
}

async fn create_db(client: &kube::Client, ns: &str, cluster: &str, nodes: &[String]) {
    let fci = kube_failover_lab::demo::instance("db", cluster, nodes, None).unwrap();
    Api::<FailoverClusterInstance>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &fci)
        .await
        .unwrap();
}

async fn pod_nodes(client: &kube::Client, ns: &str) -> Vec<(String, Option<String>)> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("kube-failover.io/instance=db"))
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|p| (p.name_any(), p.spec.and_then(|s| s.node_name)))
        .collect()
}

/// A two-node cluster whose witness `witness_client` renews, a replica, and the instance
/// `db` Online with the three votes heard.
struct TwoNodes {
    nodes: Vec<String>,
    cluster: String,
    fcis: Api<FailoverClusterInstance>,
    clusters: Api<FailoverCluster>,
    witness: Option<Witness>,
    _replica: Replica,
}

impl TwoNodes {
    async fn online(
        ns: &TestNamespace,
        cluster: String,
        lease: &str,
        witness_client: &kube::Client,
    ) -> Self {
        let client = ns.client.clone();
        let nodes = two_nodes_and_a_witness(&client, &cluster, lease).await;
        let witness = Some(Witness::start(witness_client, lease));
        let replica = Replica::start(&ns.name, "r1", false);
        create_db(&client, &ns.name, &cluster, &nodes).await;
        let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
        wait_for(fcis.clone(), "db", T, "instance Online", is_online).await;
        let clusters: Api<FailoverCluster> = Api::all(client);
        wait_for(
            clusters.clone(),
            &cluster,
            T,
            "three votes heard, the witness among them",
            |c: Option<&FailoverCluster>| quorum_of(c) == Some((3, 3, 2, Some(true))),
        )
        .await;
        Self {
            nodes,
            cluster,
            fcis,
            clusters,
            witness,
            _replica: replica,
        }
    }

    /// The owner's node, and the other.
    async fn owner_and_other(&self) -> (String, String) {
        let first = owner(&self.fcis.get("db").await.unwrap()).unwrap();
        let other = self.nodes.iter().find(|n| **n != first).unwrap().clone();
        (first, other)
    }
}

#[tokio::test]
async fn a_two_node_cluster_with_its_witness_fails_over_when_one_node_dies() {
    let ns = TestNamespace::new("witness").await;
    let client = ns.client.clone();
    // The witness runs as the chart makes it: its own ServiceAccount, RBAC and policy.
    let cluster = format!("wi{:x}", std::process::id() & 0xfff);
    let two = TwoNodes::online(&ns, cluster, CHART_LEASE, &chart_witness_client().await).await;
    let (fcis, clusters, cluster) = (two.fcis.clone(), two.clusters.clone(), two.cluster.clone());

    // The owner dies: the other node and the witness are two votes of three.
    let (first, other) = two.owner_and_other().await;
    let killed = std::time::Instant::now();
    control_plane().nodes.kill(&first).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "instance Online on the other node",
        online_on(other.clone()),
    )
    .await;
    eprintln!(
        "two nodes and a witness: Online on {other} {:.1} s after {first}'s heartbeats stopped (3 s threshold)",
        killed.elapsed().as_secs_f64()
    );
    let moved = fcis.get("db").await.unwrap();
    let history = moved.status.unwrap().history;
    let failover = history.iter().rev().find(|m| m.from.is_some()).unwrap();
    assert_eq!(failover.from.as_deref(), Some(first.as_str()));
    assert!(failover.fenced.is_some(), "the dead node was fenced first");
    let pods = pod_nodes(&client, &ns.name).await;
    assert_eq!(pods.len(), 1, "one pod: {pods:?}");
    assert_eq!(pods[0].1.as_deref(), Some(other.as_str()));
    wait_for(
        clusters,
        &cluster,
        T,
        "two votes of three heard: the survivor and the witness",
        |c: Option<&FailoverCluster>| quorum_of(c) == Some((3, 2, 2, Some(true))),
    )
    .await;
}

#[tokio::test]
async fn with_its_witness_gone_too_a_two_node_cluster_holds_and_says_why() {
    let ns = TestNamespace::new("witness-gone").await;
    let client = ns.client.clone();
    let cluster = format!("wg{:x}", std::process::id() & 0xfff);
    let lease = format!("kube-failover-witness-{cluster}");
    let mut two = TwoNodes::online(&ns, cluster, &lease, &client).await;
    let (fcis, clusters, cluster) = (two.fcis.clone(), two.clusters.clone(), two.cluster.clone());

    // The witness goes: the cluster still has its quorum (both nodes), and says the witness
    // is not heard.
    drop(two.witness.take());
    let told = wait_for(
        clusters.clone(),
        &cluster,
        T,
        "the witness not heard",
        |c: Option<&FailoverCluster>| quorum_of(c) == Some((3, 2, 2, Some(false))),
    )
    .await;
    let reason_given = told.status.unwrap().quorum.unwrap().witness.unwrap().reason;
    assert!(
        reason_given
            .as_deref()
            .is_some_and(|r| r.contains(&lease) && r.contains("not renewed")),
        "{reason_given:?}"
    );

    // Then the owner dies: one vote of three. Nothing moves, nothing is fenced.
    let (first, other) = two.owner_and_other().await;
    control_plane().nodes.kill(&first).await.unwrap();
    let held = wait_for(
        fcis.clone(),
        "db",
        T,
        "QuorumLost in status",
        |i: Option<&FailoverClusterInstance>| {
            online_reason(i).as_deref() == Some(reason::QUORUM_LOST)
        },
    )
    .await;
    let message = online_message(&held).unwrap();
    assert!(message.contains("1 of 3 votes heard"), "{message}");
    assert!(
        message.contains(&format!("witness Lease {lease}")),
        "{message}"
    );
    let status = held.status.clone().unwrap();
    assert_eq!(status.owner_node.as_deref(), Some(first.as_str()));
    assert!(status.current_move.is_none(), "no move started");
    let dead: Node = Api::<Node>::all(client.clone()).get(&first).await.unwrap();
    assert!(!has_oos_taint(&dead), "nothing fenced without quorum");
    assert_eq!(
        pod_nodes(&client, &ns.name).await,
        vec![("db-1".to_string(), Some(first.clone()))],
        "no pod started elsewhere"
    );

    // The witness is back: two votes of three, and the instance fails over.
    let _witness = Witness::start(&client, &lease);
    wait_for(
        fcis.clone(),
        "db",
        T,
        "instance Online on the survivor once the witness is back",
        online_on(other.clone()),
    )
    .await;
}

#[tokio::test]
async fn the_charts_witness_may_renew_its_own_lease_and_nothing_else() {
    let witness = chart_witness_client().await;
    let leases: Api<Lease> = Api::namespaced(witness.clone(), NODE_LEASE_NAMESPACE);
    // Its own Lease: created if absent, renewed.
    let own = WitnessConfig {
        lease: CHART_LEASE.into(),
        identity: "rights-test".into(),
        renew_every: Duration::from_millis(500),
    };
    let task = Witness(tokio::spawn(run(witness.clone(), own)));
    let admin: Api<Lease> =
        Api::namespaced(control_plane().client().unwrap(), NODE_LEASE_NAMESPACE);
    wait_for(
        admin.clone(),
        CHART_LEASE,
        T,
        "the witness Lease renewed",
        |l: Option<&Lease>| {
            l.and_then(|l| l.spec.as_ref()?.renew_time.as_ref())
                .is_some()
        },
    )
    .await;
    drop(task);
    // Another witness's Lease: refused by the chart's admission policy, which says why.
    let other = Lease {
        metadata: kube::api::ObjectMeta {
            name: Some("kube-failover-witness-other".into()),
            ..Default::default()
        },
        spec: None,
    };
    // The policy takes effect once the API server has loaded it: the first refusal is
    // awaited (dry runs, so nothing is created meanwhile).
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let deadline = tokio::time::Instant::now() + T;
    let refusal = loop {
        match leases.create(&dry, &other).await {
            Ok(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the witness's admission policy never took effect"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => break e,
        }
    };
    match refusal {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 403, "{e:?}");
            assert!(
                e.message.contains("may create only its own Lease"),
                "{}",
                e.message
            );
        }
        other => panic!("refused otherwise: {other:?}"),
    }
    // A node's Lease (the kubelet's heartbeat): neither read nor written.
    let node = control_plane()
        .nodes
        .create("wr", 1, &Default::default())
        .await
        .unwrap()
        .remove(0);
    let kubelet = wait_for(admin, &node, T, "the node's Lease", |l: Option<&Lease>| {
        l.is_some()
    })
    .await;
    match leases
        .replace(&node, &PostParams::default(), &kubelet)
        .await
    {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("wrote a node's Lease: {other:?}"),
    }
    match leases.get(&node).await {
        Err(kube::Error::Api(e)) => assert_eq!(e.code, 403, "{e:?}"),
        other => panic!("read a node's Lease: {other:?}"),
    }
}

/// Stands for a node agent (its Lease only): renews `kube-failover-agent-<node>` every
/// 500 ms, announcing a self-fence time of 2 s, until dropped.
struct AgentLease(tokio::task::JoinHandle<()>);

impl AgentLease {
    fn start(client: &kube::Client, node: &str) -> Self {
        let api: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
        let name = kube_failover_core::api::agent_lease_name(node);
        Self(tokio::spawn(async move {
            loop {
                let mut lease: Lease = serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "annotations": {
                        kube_failover_core::api::SELF_FENCE_ANNOTATION: "2"}},
                    "spec": {"holderIdentity": "test", "leaseDurationSeconds": 2,
                        "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(jiff::Timestamp::now())},
                }))
                .unwrap();
                match api.get_opt(&name).await {
                    Ok(Some(old)) => {
                        lease.metadata.resource_version = old.metadata.resource_version;
                        let _ = api.replace(&name, &PostParams::default(), &lease).await;
                    }
                    Ok(None) => {
                        let _ = api.create(&PostParams::default(), &lease).await;
                    }
                    Err(_) => {}
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }))
    }
}

impl Drop for AgentLease {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[tokio::test]
async fn the_api_server_votes_only_while_every_member_announces_a_self_fencing_agent() {
    let ns = TestNamespace::new("witness-api").await;
    let client = ns.client.clone();
    let cluster = format!("wa{:x}", std::process::id() & 0xfff);
    let spec = serde_json::json!({"quorum": {"witness": {"apiServer": true}}});
    let nodes = nodes_and_cluster(&client, &cluster, 2, spec).await;
    let _replica = Replica::start(&ns.name, "r1", false);
    create_db(&client, &ns.name, &cluster, &nodes).await;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    wait_for(fcis.clone(), "db", T, "instance Online", is_online).await;
    let clusters: Api<FailoverCluster> = Api::all(client.clone());
    // No agent on the members: the API server gives no vote, and the status says why.
    let told = wait_for(
        clusters.clone(),
        &cluster,
        T,
        "the API server not heard",
        |c: Option<&FailoverCluster>| quorum_of(c) == Some((3, 2, 2, Some(false))),
    )
    .await;
    let why = told
        .status
        .unwrap()
        .quorum
        .unwrap()
        .witness
        .unwrap()
        .reason
        .unwrap();
    assert!(
        why.contains("runs no node agent that fences itself"),
        "{why}"
    );
    // Both members announce agents that fence themselves: the API server votes.
    let mut agents: Vec<Option<AgentLease>> = nodes
        .iter()
        .map(|n| Some(AgentLease::start(&client, n)))
        .collect();
    wait_for(
        clusters.clone(),
        &cluster,
        T,
        "the API server heard",
        |c: Option<&FailoverCluster>| quorum_of(c) == Some((3, 3, 2, Some(true))),
    )
    .await;
    // The owner's node dies with its agent: the survivor and the API server are two votes of
    // three; the node is tainted once its agent's self-fence time has passed.
    let owner_node = owner(&fcis.get("db").await.unwrap()).unwrap();
    let i = nodes.iter().position(|n| *n == owner_node).unwrap();
    let other = nodes[1 - i].clone();
    agents[i].take();
    control_plane().nodes.kill(&owner_node).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "instance Online on the other node",
        online_on(other),
    )
    .await;
    let moved = fcis.get("db").await.unwrap();
    let failover = moved
        .status
        .unwrap()
        .history
        .into_iter()
        .rev()
        .find(|m| m.from.is_some())
        .unwrap();
    assert!(failover.fenced.is_some(), "fenced first");
}
