//! Sites on the real control plane with simulated nodes: members grouped by their zone
//! label, failover within the instance's site first, a longer threshold for members whose
//! heartbeats cross sites, and a volume that reaches one zone only.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kube::api::{Api, PostParams};
use kube_failover_core::api::{FailoverClusterInstance, ZONE_LABEL, reason};
use kube_failover_lab::controlplane::play_csi_attacher;
use kube_failover_lab::demo::{SIM_CSI_DRIVER, csi_claim_in_zone, instance};
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, is_online, nodes_and_cluster, online_message, online_on,
    online_reason, patch_node, status, wait_for,
};

const T: Duration = Duration::from_secs(90);

/// Four members: the first two in zone `a`, the last two in zone `b`.
async fn two_zones(client: &kube::Client, prefix: &str, spec: serde_json::Value) -> Vec<String> {
    let nodes = nodes_and_cluster(client, prefix, 4, spec).await;
    for (i, node) in nodes.iter().enumerate() {
        let zone = if i < 2 { "a" } else { "b" };
        patch_node(
            client,
            node,
            serde_json::json!({"metadata": {"labels": {ZONE_LABEL: zone}}}),
        )
        .await;
    }
    nodes
}

async fn create(client: &kube::Client, ns: &str, fci: FailoverClusterInstance) {
    Api::<FailoverClusterInstance>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &fci)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_failover_stays_in_its_site_then_crosses_and_a_remote_member_gets_the_longer_threshold() {
    let ns = TestNamespace::new("sites").await;
    let client = ns.client.clone();
    let cluster = format!("si{:x}", std::process::id() & 0xfff);
    // The control plane is in zone a: members in zone b are judged after 8 s, not 3.
    let spec = serde_json::json!({
        "sites": {"controlPlaneSite": "a", "crossSiteLeaseStaleSeconds": 8},
        "quorum": {"minHealthy": 1},
    });
    let n = two_zones(&client, &cluster, spec).await;
    let _replica = Replica::start(&ns.name, "r1", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    // db prefers a0, then b0, b1, a1; far prefers b1, then a0, a1, b0.
    let mut db = instance(
        "db",
        &cluster,
        &[n[0].clone(), n[2].clone(), n[3].clone(), n[1].clone()],
        None,
    )
    .unwrap();
    db.spec.virtual_ips.clear();
    create(&client, &ns.name, db).await;
    let mut far = instance(
        "far",
        &cluster,
        &[n[3].clone(), n[0].clone(), n[1].clone(), n[2].clone()],
        None,
    )
    .unwrap();
    far.spec.virtual_ips.clear();
    create(&client, &ns.name, far).await;
    wait_for(
        fcis.clone(),
        "db",
        T,
        "db Online on a0",
        online_on(n[0].clone()),
    )
    .await;
    wait_for(
        fcis.clone(),
        "far",
        T,
        "far Online on b1",
        online_on(n[3].clone()),
    )
    .await;

    // b1 (zone b, away from the control plane) dies: far fails over within zone b, to b0,
    // though a0 and a1 come first in its preferences; and only after the cross-site
    // threshold.
    let killed = jiff::Timestamp::now();
    control_plane().nodes.kill(&n[3]).await.unwrap();
    let moved = wait_for(
        fcis.clone(),
        "far",
        T,
        "far Online on b0",
        online_on(n[2].clone()),
    )
    .await;
    let started = status(&moved)
        .history
        .iter()
        .rev()
        .find(|m| m.from.as_deref() == Some(n[3].as_str()))
        .map(|m| m.started.0)
        .unwrap();
    let detected = started.duration_since(killed);
    eprintln!(
        "b1 (cross-site threshold 8 s) declared down {detected:?} after its heartbeats stopped"
    );
    // Its last renewal came at most a second before the kill.
    assert!(
        detected >= jiff::SignedDuration::from_secs(7),
        "a member outside the control plane's site was declared down after {detected:?}, before its 8 s threshold"
    );

    // a0 dies: db fails over within zone a, to a1, though b0 and b1 come first.
    let killed = jiff::Timestamp::now();
    control_plane().nodes.kill(&n[0]).await.unwrap();
    let moved = wait_for(
        fcis.clone(),
        "db",
        T,
        "db Online on a1",
        online_on(n[1].clone()),
    )
    .await;
    let started = status(&moved).history.last().unwrap().started.0;
    eprintln!(
        "a0 (threshold 3 s) declared down {:?} after its heartbeats stopped",
        started.duration_since(killed)
    );

    // a1 dies too: no member of zone a is left; db crosses to zone b.
    control_plane().nodes.kill(&n[1]).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "db Online on b0",
        online_on(n[2].clone()),
    )
    .await;
}

#[tokio::test]
async fn a_claim_pinned_to_a_zone_keeps_its_instance_there_and_says_why_when_the_zone_is_gone() {
    let ns = TestNamespace::new("zoned").await;
    let client = ns.client.clone();
    let cluster = format!("zo{:x}", std::process::id() & 0xfff);
    let n = two_zones(
        &client,
        &cluster,
        serde_json::json!({"quorum": {"minHealthy": 1}}),
    )
    .await;
    csi_claim_in_zone(&client, &ns.name, "data", "ReadWriteOnce", Some("b"))
        .await
        .unwrap();
    let attacher = tokio::spawn(play_csi_attacher(client.clone(), SIM_CSI_DRIVER.into()));
    let _replica = Replica::start(&ns.name, "r1", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    // Preferred in zone a first: the volume reaches zone b only.
    let mut db = instance(
        "db",
        &cluster,
        &[n[0].clone(), n[1].clone(), n[2].clone(), n[3].clone()],
        Some("data"),
    )
    .unwrap();
    db.spec.virtual_ips.clear();
    create(&client, &ns.name, db).await;
    wait_for(
        fcis.clone(),
        "db",
        T,
        "db Online on b0",
        online_on(n[2].clone()),
    )
    .await;
    // b0 dies: to b1, never to zone a.
    control_plane().nodes.kill(&n[2]).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "db Online on b1",
        online_on(n[3].clone()),
    )
    .await;
    // b1 dies: zone b is gone; zone a is up, and the instance waits, saying why.
    control_plane().nodes.kill(&n[3]).await.unwrap();
    let held = wait_for(
        fcis.clone(),
        "db",
        T,
        "db waiting for an owner",
        |i: Option<&FailoverClusterInstance>| {
            online_reason(i).as_deref() == Some(reason::NO_ELIGIBLE_OWNER)
        },
    )
    .await;
    let message = online_message(&held).unwrap();
    assert!(
        message.contains(&format!(
            "{}: the volume of claim data cannot be used there",
            n[0]
        )) && message.contains("topology.kubernetes.io/zone In [b]"),
        "{message}"
    );
    assert!(!is_online(Some(&held)));
    attacher.abort();
}
