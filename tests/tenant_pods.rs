//! Pods the controller counts: only those its instance controls (an owner reference with
//! `controller: true` to the instance's UID). A pod that merely carries the instance's label,
//! which anyone who may create pods in the namespace can set, is never counted, deleted,
//! adopted or waited for, and is reported once with a Warning Event. On the real control
//! plane with simulated nodes.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use kube_failover_core::api::{FailoverClusterInstance, INSTANCE_LABEL, reason};
use kube_failover_core::rules::controlled_by;
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, create_instance, is_online, online_on, owner, status,
    wait_for,
};

const T: Duration = Duration::from_secs(90);

/// The `ForeignPodIgnored` Events among `events` that name the pod `pod`.
fn reports_of<'a>(events: &'a [Event], pod: &'a str) -> impl Iterator<Item = &'a Event> + 'a {
    events.iter().filter(move |e| {
        e.reason.as_deref() == Some(reason::FOREIGN_POD_IGNORED)
            && e.note.as_deref().is_some_and(|n| n.contains(pod))
    })
}

/// Awaits, through a watch, the first `ForeignPodIgnored` Event that names `pod`.
async fn report_seen(client: &Client, ns: &str, pod: &str) {
    let events = watcher(
        Api::<Event>::namespaced(client.clone(), ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .applied_objects()
    .filter_map(|e| async move { e.ok() })
    .filter(|e| futures::future::ready(reports_of(std::slice::from_ref(e), pod).count() > 0));
    tokio::time::timeout(T, Box::pin(events).next())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no {} Event naming {pod} within {T:?}",
                reason::FOREIGN_POD_IGNORED
            )
        });
}

#[tokio::test]
async fn a_pod_only_labelled_for_the_instance_is_never_touched_and_reported_once() {
    let ns = TestNamespace::new("tenant-pods").await;
    let client = ns.client.clone();
    let (cluster, nodes) = ns.cluster(3, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "r1", false);
    create_instance(&client, &ns.name, "db", &cluster, &nodes, None).await;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    wait_for(
        fcis.clone(),
        "db",
        T,
        "instance Online on its first preferred node",
        online_on(nodes[0].clone()),
    )
    .await;

    // What anyone who may create pods in the namespace can make: the instance's label, no
    // owner, running on the node the instance fails over to.
    let impostor: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "db-impostor", "labels": {INSTANCE_LABEL: "db"}},
        "spec": {
            "nodeName": nodes[1],
            "containers": [{"name": "db", "image": "registry.example/db:1"}],
        },
    }))
    .unwrap();
    let impostor = pods
        .create(&PostParams::default(), &impostor)
        .await
        .unwrap();
    let impostor_uid = impostor.uid().unwrap();
    report_seen(&client, &ns.name, "db-impostor").await;

    // The owner stops heartbeating: the instance fails over as it would without the pod.
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let killed = Instant::now();
    let moved = wait_for(
        fcis.clone(),
        "db",
        T,
        "failed over and Online on a healthy node",
        |i: Option<&FailoverClusterInstance>| {
            is_online(i) && i.and_then(owner).is_some_and(|o| o != nodes[0])
        },
    )
    .await;
    eprintln!(
        "failed over to {} in {:.1} s",
        owner(&moved).unwrap_or_default(),
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(owner(&moved).as_deref(), Some(nodes[1].as_str()));

    // The instance's new pod is its own, and its address, not the impostor's, is published.
    let labelled = pods
        .list(&ListParams::default().labels(&format!("{INSTANCE_LABEL}=db")))
        .await
        .unwrap()
        .items;
    let own: Vec<&Pod> = labelled
        .iter()
        .filter(|p| controlled_by(&p.metadata, &moved))
        .collect();
    assert_eq!(
        own.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["db-2"],
        "one pod of the instance, made for this move"
    );
    let own_ip = own[0].status.as_ref().and_then(|s| s.pod_ip.clone());
    assert_eq!(
        status(&moved).served.and_then(|s| s.endpoint),
        own_ip,
        "the endpoint is the instance's own pod"
    );

    // The impostor is the same pod as before, never marked for deletion.
    let after = pods.get("db-impostor").await.unwrap();
    assert_eq!(after.uid().as_deref(), Some(impostor_uid.as_str()));
    assert!(
        after.metadata.deletion_timestamp.is_none(),
        "the impostor was never deleted"
    );

    // Reported exactly once, on the instance: one Event, never repeated (a repeat would be a
    // second Event, or a count in this one's series).
    let events = Api::<Event>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    let reports: Vec<&Event> = reports_of(&events, "db-impostor").collect();
    assert_eq!(reports.len(), 1, "{reports:#?}");
    let report = reports[0];
    assert_eq!(report.type_.as_deref(), Some("Warning"));
    assert!(
        report.series.is_none(),
        "reported more than once: {report:#?}"
    );
    assert_eq!(
        report.regarding.as_ref().and_then(|r| r.name.as_deref()),
        Some("db")
    );
    assert_eq!(
        report.related.as_ref().and_then(|r| r.name.as_deref()),
        Some("db-impostor")
    );
    assert!(
        report
            .note
            .as_deref()
            .is_some_and(|n| n.contains("ignores it")),
        "{report:#?}"
    );
}
