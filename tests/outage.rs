//! Fault 8 of `docs/safety.md`: the API server unreachable, then restarted, under a running
//! controller. Nothing is lost, nothing is duplicated, and the outage itself moves nothing.
//!
//! A test binary of its own: it stops the API server of its control plane, which every test
//! sharing that control plane would feel.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, ListParams};
use kube::{Client, ResourceExt};
use kube_failover_core::api::{FailoverClusterInstance, reason};
use kube_failover_lab::harness::{
    Replica, TestNamespace, apiserver_pid, control_plane, create_spread_instances,
    event_reasons_among, has_oos_taint, is_online, moving, owner, pod_uids, wait_each_instance,
    wait_for,
};
use nix::sys::signal::{Signal, kill};

const T: Duration = Duration::from_secs(90);
const N: usize = 6;

/// The addresses each EndpointSlice lists.
async fn slice_addresses(client: &Client, ns: &str) -> BTreeMap<String, Vec<String>> {
    Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| {
            let addresses = s
                .endpoints
                .iter()
                .flatten()
                .flat_map(|e| e.addresses.clone())
                .collect();
            (s.name_any(), addresses)
        })
        .collect()
}

async fn await_apiserver(client: &Client) {
    let deadline = tokio::time::Instant::now() + T;
    while Api::<Node>::all(client.clone())
        .list(&ListParams::default().limit(1))
        .await
        .is_err()
    {
        assert!(tokio::time::Instant::now() < deadline, "API server back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn an_api_server_outage_and_restart_move_nothing_and_lose_nothing() {
    let ns = TestNamespace::new("outage").await;
    let client = ns.client.clone();
    let (cluster, nodes) = ns
        .cluster(
            3,
            serde_json::json!({"heartbeat": {"leaseStaleSeconds": 10, "notReadySeconds": 10}}),
        )
        .await;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    create_spread_instances(&client, &ns.name, &cluster, &nodes, N).await;
    let _replica = Replica::start(&ns.name, "r", false);
    wait_each_instance(&fcis, N, T, "instance Online", is_online).await;
    let before = pod_uids(&client, &ns.name).await;
    assert_eq!(before.len(), N);
    let slices_before = slice_addresses(&client, &ns.name).await;

    // Unreachable for twice the detection threshold (10 s): requests and watches hang, no
    // heartbeat gets through, every Lease looks stale by the time it is back.
    let pid = apiserver_pid();
    kill(pid, Signal::SIGSTOP).unwrap();
    tokio::time::sleep(Duration::from_secs(20)).await;
    kill(pid, Signal::SIGCONT).unwrap();
    await_apiserver(&client).await;
    // Then killed outright and started again: watches cut without an answer.
    control_plane().kill_apiserver().await.unwrap();
    await_apiserver(&client).await;

    // While it could not tell (QuorumLost) an instance may say `Unknown`; then Online
    // again, where it was.
    wait_each_instance(
        &fcis,
        N,
        T,
        "instance Online again after the outage",
        is_online,
    )
    .await;
    // Twice the threshold more for anything the outage would set off to show: the node
    // lifecycle controller, blind too, may mark nodes NotReady for a moment (instances then
    // say `Unknown`), but no move may start.
    let moved = wait_for(fcis.clone(), "db-0", T, "a move after the outage", moving);
    let moved = tokio::time::timeout(Duration::from_secs(20), moved).await;
    assert!(moved.is_err(), "db-0 started a move after the outage");
    wait_each_instance(&fcis, N, T, "instance Online at the end", is_online).await;

    let after = pod_uids(&client, &ns.name).await;
    assert_eq!(after, before, "no pod deleted, replaced or added");
    // An endpoint may have been withdrawn for a while: when the node lifecycle controller,
    // blind during the outage, marks the pods not ready, as Kubernetes' own EndpointSlice
    // controller would. At the end each lists the same pod again.
    assert_eq!(
        slice_addresses(&client, &ns.name).await,
        slices_before,
        "every endpoint back on the same pod"
    );
    for f in fcis.list(&ListParams::default()).await.unwrap() {
        let s = f.status.clone().unwrap();
        assert!(is_online(Some(&f)), "{} online: {s:?}", f.name_any());
        assert_eq!(s.failover_count, 0, "{}", f.name_any());
        assert_eq!(s.history.len(), 1, "the placement only: {:?}", s.history);
    }
    let services = Api::<Service>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(services.items.len(), N, "one Service per instance");
    let slices = Api::<EndpointSlice>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(slices.items.len(), N, "one EndpointSlice per instance");
    for s in &slices.items {
        let addresses: usize = s
            .endpoints
            .iter()
            .flatten()
            .map(|e| e.addresses.len())
            .sum();
        assert_eq!(addresses, 1, "{} lists one address", s.name_any());
    }
    let reasons = event_reasons_among(
        &client,
        &ns.name,
        &[
            reason::FENCED,
            reason::FAILOVER_STARTED,
            reason::PLANNED_MOVE,
        ],
    )
    .await;
    assert!(reasons.is_empty(), "moves after the outage: {reasons:?}");
    let node_api: Api<Node> = Api::all(client.clone());
    for n in &nodes {
        let tainted = has_oos_taint(&node_api.get(n).await.unwrap());
        assert!(!tainted, "{n} tainted out of service");
    }

    // And the controller still fails over once the API is back.
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let moved = wait_for(
        fcis.clone(),
        "db-0",
        T,
        "db-0 failed over off node 0",
        |f: Option<&FailoverClusterInstance>| {
            is_online(f) && f.and_then(owner).as_deref() != Some(nodes[0].as_str())
        },
    )
    .await;
    assert_eq!(moved.status.unwrap().failover_count, 1);
}
