//! Quarantine on the real control plane with simulated nodes: a member that fails three
//! times within the period is quarantined; nothing is placed on it; `kubectl failover resume
//! --clear-quarantine` lifts it.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kube::api::{Api, PostParams};
use kube_failover_core::api::{
    FailoverCluster, FailoverClusterInstance, MemberState, MemberStatus,
};
use kube_failover_lab::demo::instance;
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, events, nodes_and_cluster, online_on, wait_for,
};

const T: Duration = Duration::from_secs(90);

fn member<'a>(c: Option<&'a FailoverCluster>, node: &str) -> Option<&'a MemberStatus> {
    c?.status.as_ref()?.members.iter().find(|m| m.name == node)
}

#[tokio::test]
async fn a_node_that_fails_three_times_is_quarantined_until_an_operator_lifts_it() {
    let ns = TestNamespace::new("quarantine").await;
    let client = ns.client.clone();
    let cluster = format!("qa{:x}", std::process::id() & 0xfff);
    let spec = serde_json::json!({"quarantine": {"threshold": 3, "periodSeconds": 600, "durationSeconds": 600}});
    let nodes = nodes_and_cluster(&client, &cluster, 4, spec).await;
    let _replica = Replica::start(&ns.name, "r1", false);
    let clusters: Api<FailoverCluster> = Api::all(client.clone());
    let flapping = nodes[0].clone();
    // A replica watching one namespace keeps the status of the clusters its instances use:
    // one instance, away from the node that will flap.
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let mut anchor = instance("anchor", &cluster, &nodes[1..], None).unwrap();
    anchor.spec.virtual_ips.clear();
    anchor.spec.owners.possible = nodes[1..].to_vec();
    fcis.create(&PostParams::default(), &anchor).await.unwrap();
    wait_for(
        fcis.clone(),
        "anchor",
        T,
        "anchor Online",
        online_on(nodes[1].clone()),
    )
    .await;

    // The first node dies and comes back three times.
    for round in 1..=3 {
        eprintln!("round {round}: killing {flapping}");
        control_plane().nodes.kill(&flapping).await.unwrap();
        let down = wait_for(
            clusters.clone(),
            &cluster,
            T,
            "the member Down",
            |c: Option<&FailoverCluster>| {
                member(c, &flapping).is_some_and(|m| m.state == MemberState::Down)
            },
        )
        .await;
        let m = member(Some(&down), &flapping).unwrap().clone();
        if round < 3 {
            assert_eq!(m.failures.len(), round, "{m:?}");
            assert!(m.quarantine.is_none(), "{m:?}");
        }
        control_plane().nodes.revive(&flapping).await.unwrap();
        wait_for(
            clusters.clone(),
            &cluster,
            T,
            "the member Up",
            |c: Option<&FailoverCluster>| {
                member(c, &flapping).is_some_and(|m| m.state == MemberState::Up)
            },
        )
        .await;
    }
    let quarantined = clusters.get(&cluster).await.unwrap();
    let m = member(Some(&quarantined), &flapping).unwrap().clone();
    let q = m
        .quarantine
        .clone()
        .expect("quarantined after its third failure");
    assert_eq!(
        q.until.0.duration_since(q.since.0),
        jiff::SignedDuration::from_secs(600)
    );

    // An instance that prefers it is placed on the next preferred member, and says why.
    let mut db = instance("db", &cluster, &nodes, None).unwrap();
    db.spec.virtual_ips.clear();
    fcis.create(&PostParams::default(), &db).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "db Online on the second node",
        online_on(nodes[1].clone()),
    )
    .await;
    let said: Vec<String> = events(&client, &ns.name)
        .await
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert!(
        said.iter()
            .any(|n| n.contains(&format!("skipped {flapping}: quarantined until"))),
        "{said:?}"
    );

    // The operator lifts it: `kubectl failover resume --clear-quarantine`.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_kube-failover"))
        .args(["resume", &flapping, "--clear-quarantine"])
        .env("KUBECONFIG", control_plane().kubeconfig())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for(
        clusters.clone(),
        &cluster,
        T,
        "the quarantine lifted",
        |c: Option<&FailoverCluster>| {
            member(c, &flapping).is_some_and(|m| m.quarantine.is_none() && m.failures.is_empty())
        },
    )
    .await;
    // Instances may be placed there again: a second instance that prefers it lands on it.
    let mut web = instance("web", &cluster, &nodes, None).unwrap();
    web.spec.virtual_ips.clear();
    web.spec.network_name.name = "web".into();
    fcis.create(&PostParams::default(), &web).await.unwrap();
    wait_for(
        fcis.clone(),
        "web",
        T,
        "web Online on the first node",
        online_on(flapping.clone()),
    )
    .await;
}
