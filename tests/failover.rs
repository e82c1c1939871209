//! Failover cluster instances end to end, on the real control plane with simulated nodes.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, ResourceExt};
use kube_failover_core::api::{FailoverClusterInstance, Move, Phase, reason};
use kube_failover_lab::controlplane::{CONTROLLER_USER, play_csi_attacher};
use kube_failover_lab::demo::{SIM_CSI_DRIVER, csi_claim, instance};
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, create_instance, create_spread_instances, free_addr,
    has_oos_taint, http_get, in_phase, is_online, nodes_and_cluster, online_message, online_reason,
    owner, patch_node, status, wait_each_instance, wait_for, wait_gone,
};

const T: Duration = Duration::from_secs(90);

fn failovers(i: &FailoverClusterInstance) -> Vec<Move> {
    status(i)
        .history
        .into_iter()
        .filter(|m| m.from.is_some())
        .collect()
}

/// Addresses published in the instance's EndpointSlice, read from the API.
async fn slice_addresses(client: &Client, ns: &str) -> Vec<String> {
    let slice = Api::<EndpointSlice>::namespaced(client.clone(), ns)
        .get("db")
        .await
        .unwrap();
    slice
        .endpoints
        .iter()
        .flatten()
        .flat_map(|e| e.addresses.clone())
        .collect()
}

async fn pods_of(client: &Client, ns: &str) -> Vec<Pod> {
    Api::<Pod>::namespaced(client.clone(), ns)
        .list(&ListParams::default().labels("kube-failover.io/instance=db"))
        .await
        .unwrap()
        .items
}

/// Watches pods, the EndpointSlice and VolumeAttachments and records, at every event, the
/// worst it has seen: Ready pods of the instance, addresses in the slice, nodes a volume is
/// attached to.
#[derive(Default, Debug)]
struct Worst {
    ready_pods: usize,
    endpoints: usize,
    nodes_per_volume: usize,
    events: usize,
}

fn sample_invariants(client: Client, ns: String, pv: String) -> Arc<Mutex<Worst>> {
    let worst = Arc::new(Mutex::new(Worst::default()));
    let w = worst.clone();
    tokio::spawn(async move {
        let (pod_store, pod_writer) = kube::runtime::reflector::store::<Pod>();
        let (slice_store, slice_writer) = kube::runtime::reflector::store::<EndpointSlice>();
        let (va_store, va_writer) = kube::runtime::reflector::store::<VolumeAttachment>();
        let pods = watcher(
            Api::<Pod>::namespaced(client.clone(), &ns),
            watcher::Config::default().labels("kube-failover.io/instance=db"),
        )
        .default_backoff()
        .reflect(pod_writer)
        .map(|_| ());
        let slices = watcher(
            Api::<EndpointSlice>::namespaced(client.clone(), &ns),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(slice_writer)
        .map(|_| ());
        let vas = watcher(
            Api::<VolumeAttachment>::all(client.clone()),
            watcher::Config::default(),
        )
        .default_backoff()
        .reflect(va_writer)
        .map(|_| ());
        let mut all = futures::stream::select(futures::stream::select(pods, slices), vas).boxed();
        while all.next().await.is_some() {
            let ready = pod_store
                .state()
                .iter()
                .filter(|p| {
                    p.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|cs| {
                            cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                        })
                })
                .count();
            let endpoints = slice_store
                .state()
                .iter()
                .map(|s| {
                    s.endpoints
                        .iter()
                        .flatten()
                        .map(|e| e.addresses.len())
                        .sum::<usize>()
                })
                .max()
                .unwrap_or(0);
            let nodes: BTreeSet<String> = va_store
                .state()
                .iter()
                .filter(|v| v.spec.source.persistent_volume_name.as_deref() == Some(pv.as_str()))
                .map(|v| v.spec.node_name.clone())
                .collect();
            let mut w = w.lock().unwrap();
            w.ready_pods = w.ready_pods.max(ready);
            w.endpoints = w.endpoints.max(endpoints);
            w.nodes_per_volume = w.nodes_per_volume.max(nodes.len());
            w.events += 1;
        }
    });
    worst
}

/// Reasons of the Events about instance `name`, once `done` holds for them (bounded).
async fn event_reasons_until(
    client: &Client,
    ns: &str,
    name: &str,
    done: impl Fn(&BTreeSet<String>) -> bool,
) -> BTreeSet<String> {
    let (store, writer) = kube::runtime::reflector::store::<Event>();
    let mut events = watcher(
        Api::<Event>::namespaced(client.clone(), ns),
        watcher::Config::default(),
    )
    .default_backoff()
    .reflect(writer)
    .boxed();
    let reasons = || -> BTreeSet<String> {
        store
            .state()
            .iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .filter_map(|e| e.reason.clone())
            .collect()
    };
    let deadline = tokio::time::Instant::now() + T;
    loop {
        let now = reasons();
        if done(&now) {
            return now;
        }
        match tokio::time::timeout_at(deadline, events.next()).await {
            Ok(Some(_)) => {}
            _ => return now,
        }
    }
}

#[tokio::test]
async fn online_then_fails_over_to_next_preferred_node() {
    let ns = TestNamespace::new("failover").await;
    let client = ns.client.clone();
    let cluster = format!("fo{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&client, &cluster, 3, serde_json::json!({})).await;
    csi_claim(&client, &ns.name, "data").await.unwrap();
    let pv = format!("{}-data", ns.name);
    let attacher = tokio::spawn(play_csi_attacher(client.clone(), SIM_CSI_DRIVER.into()));
    let http = free_addr();
    let _replica = Replica::start_serving(&ns.name, "r1", false, Some(http));
    let created = create_instance(&client, &ns.name, "db", &cluster, &nodes, Some("data")).await;
    let vip = created.spec.virtual_ips[0].clone();
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);

    // 1. Online on the first preferred node.
    let online = wait_for(fcis.clone(), "db", T, "instance Online", is_online).await;
    let st = status(&online);
    assert_eq!(st.owner_node.as_deref(), Some(nodes[0].as_str()));
    let pods = pods_of(&client, &ns.name).await;
    assert_eq!(pods.len(), 1);
    let pod = &pods[0];
    assert_eq!(
        pod.spec.as_ref().unwrap().node_name.as_deref(),
        Some(nodes[0].as_str())
    );
    assert!(
        pod.spec
            .as_ref()
            .unwrap()
            .volumes
            .iter()
            .flatten()
            .any(|v| v
                .persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.claim_name == "data")),
        "the claim is mounted"
    );
    let pod_ip = pod.status.as_ref().unwrap().pod_ip.clone().unwrap();
    let svc = Api::<Service>::namespaced(client.clone(), &ns.name)
        .get("db")
        .await
        .unwrap();
    let spec = svc.spec.unwrap();
    assert_eq!(spec.external_ips, Some(vec![vip.clone()]));
    assert!(spec.selector.is_none(), "the Service has no selector");
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    let addresses = slice_addresses(&client, &ns.name).await;
    assert_eq!(
        addresses,
        vec![pod_ip.clone()],
        "exactly the Ready pod's address"
    );
    assert_eq!(st.served.as_ref().unwrap().virtual_ips, vec![vip.clone()]);
    assert_eq!(
        st.served.as_ref().unwrap().endpoint.as_deref(),
        Some(pod_ip.as_str())
    );

    // Printer columns, through the real kubectl.
    let cp = control_plane();
    let out = std::process::Command::new(cp.tools_bin().join("kubectl"))
        .args([
            "--kubeconfig",
            cp.kubeconfig().to_str().unwrap(),
            "get",
            "fci",
            "db",
            "-n",
            &ns.name,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let row: Vec<&str> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        ["NAME", "OWNER", "PHASE", "VIP", "FAILOVERS", "AGE"],
        "{text}"
    );
    assert_eq!(
        &row[..5],
        ["db", nodes[0].as_str(), "Online", vip.as_str(), "0"],
        "{text}"
    );

    // The attach/detach controller attached the volume to the owner.
    let vas: Api<VolumeAttachment> = Api::all(client.clone());
    let pv_for_wait = pv.clone();
    let owner = nodes[0].clone();
    tokio::time::timeout(T, async {
        loop {
            let list = vas.list(&ListParams::default()).await.unwrap();
            if list.items.iter().any(|v| {
                v.spec.source.persistent_volume_name.as_deref() == Some(pv_for_wait.as_str())
                    && v.spec.node_name == owner
            }) {
                break;
            }
            // The attach/detach controller reconciles on its own period; there is no
            // event to wait on for an object that does not exist yet.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("VolumeAttachment on the owner");

    // 2. Kill the owner: everything moves to the next preferred healthy node.
    let worst = sample_invariants(client.clone(), ns.name.clone(), pv.clone());
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let moved = wait_for(
        fcis.clone(),
        "db",
        T,
        "failed over and Online",
        |i: Option<&FailoverClusterInstance>| {
            is_online(i) && i.is_some_and(|i| !failovers(i).is_empty())
        },
    )
    .await;
    let st = status(&moved);
    assert_eq!(st.owner_node.as_deref(), Some(nodes[1].as_str()));
    assert_eq!(st.failover_count, 1);
    let dead: Node = Api::<Node>::all(client.clone())
        .get(&nodes[0])
        .await
        .unwrap();
    assert!(has_oos_taint(&dead), "the dead node is fenced");
    let pods = pods_of(&client, &ns.name).await;
    assert_eq!(
        pods.len(),
        1,
        "the old pod is gone: {:?}",
        pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
    );
    assert_eq!(pods[0].name_any(), "db-2");
    assert_eq!(
        pods[0].spec.as_ref().unwrap().node_name.as_deref(),
        Some(nodes[1].as_str())
    );
    let stale = vas
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|v| {
            v.spec.source.persistent_volume_name.as_deref() == Some(pv.as_str())
                && v.spec.node_name == nodes[0]
        });
    assert_eq!(
        stale.count(),
        0,
        "no VolumeAttachment left on the dead node"
    );
    let new_ip = pods[0].status.as_ref().unwrap().pod_ip.clone().unwrap();
    let addresses = slice_addresses(&client, &ns.name).await;
    assert_eq!(addresses, vec![new_ip], "endpoint switched to the new pod");

    let m = failovers(&moved).pop().unwrap();
    assert!(!m.planned);
    assert_eq!(m.from.as_deref(), Some(nodes[0].as_str()));
    assert_eq!(m.to.as_deref(), Some(nodes[1].as_str()));
    let steps = [
        Some(m.started.clone()),
        m.endpoint_withdrawn.clone(),
        m.fenced.clone(),
        m.old_pod_gone.clone(),
        m.volumes_detached.clone(),
        m.pod_created.clone(),
        m.online.clone(),
    ];
    assert!(steps.iter().all(Option::is_some), "every step timed: {m:?}");
    // What must precede what: fencing before the old pod and its volume are removed;
    // everything before the new pod; the new pod before the instance is online.
    let t = |o: &Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime>| {
        o.clone().unwrap().0
    };
    assert!(
        t(&m.fenced) <= t(&m.old_pod_gone) && t(&m.fenced) <= t(&m.volumes_detached),
        "{m:?}"
    );
    for before in [&m.endpoint_withdrawn, &m.old_pod_gone, &m.volumes_detached] {
        assert!(t(before) <= t(&m.pod_created), "{m:?}");
    }
    assert!(
        m.started.0 <= t(&m.endpoint_withdrawn) && t(&m.pod_created) <= t(&m.online),
        "{m:?}"
    );

    // Events are published in the background: await them.
    let wanted = [
        reason::ONLINE,
        reason::FAILOVER_STARTED,
        reason::FENCED,
        reason::MOVED_ONLINE,
    ];
    let reasons = event_reasons_until(&client, &ns.name, "db", |r| {
        wanted.iter().all(|w| r.contains(*w))
    })
    .await;
    for r in wanted {
        assert!(reasons.contains(r), "Event {r} emitted: {reasons:?}");
    }

    let w = std::mem::take(&mut *worst.lock().unwrap());
    assert!(w.events > 0, "the sampler saw the failover: {w:?}");
    assert!(w.ready_pods <= 1, "never two Ready pods: {w:?}");
    assert!(w.endpoints <= 1, "never two endpoints: {w:?}");
    assert!(
        w.nodes_per_volume <= 1,
        "never attached on two nodes: {w:?}"
    );

    // What the replica serves tells the truth about what happened.
    let (code, body) = http_get(http, "/readyz").await.unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(
        body.contains("caches synced") && body.contains("leader"),
        "{body}"
    );
    let (code, _) = http_get(http, "/healthz").await.unwrap();
    assert_eq!(code, 200);
    let (_, metrics) = http_get(http, "/metrics").await.unwrap();
    for line in [
        "kube_failover_failovers_total{reason=\"NodeDown\"} 1",
        "kube_failover_failover_duration_seconds_count 1",
        "kube_failover_instances{phase=\"Online\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line} in /metrics:\n{metrics}"
        );
    }

    // The cluster's status lists the members, their state and what each owns.
    let fc: kube_failover_core::api::FailoverCluster = wait_for(
        Api::all(client.clone()),
        &cluster,
        T,
        "cluster status shows the dead member",
        |c: Option<&kube_failover_core::api::FailoverCluster>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.members
                    .iter()
                    .any(|m| m.state == kube_failover_core::api::MemberState::Fenced)
                    && s.members.iter().any(|m| m.instance_count > 0)
            })
        },
    )
    .await;
    let members = fc.status.unwrap().members;
    let by_name = |n: &str| members.iter().find(|m| m.name == n).unwrap().clone();
    assert_eq!(
        by_name(&nodes[0]).state,
        kube_failover_core::api::MemberState::Fenced
    );
    assert_eq!(
        by_name(&nodes[1]).state,
        kube_failover_core::api::MemberState::Up
    );
    assert_eq!(by_name(&nodes[1]).instance_count, 1);
    assert_eq!(by_name(&nodes[0]).instance_count, 0);
    attacher.abort();
}

#[tokio::test]
async fn no_failover_without_quorum() {
    let ns = TestNamespace::new("quorum").await;
    let client = ns.client.clone();
    let cluster = format!("qu{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&client, &cluster, 3, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "r1", false);
    create_instance(&client, &ns.name, "db", &cluster, &nodes, None).await;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    wait_for(fcis.clone(), "db", T, "instance Online", is_online).await;

    // Two of three members die at once: the survivor may be the one cut off.
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    control_plane().nodes.kill(&nodes[1]).await.unwrap();
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
    let st = status(&held);
    assert_eq!(
        st.owner_node.as_deref(),
        Some(nodes[0].as_str()),
        "no new owner"
    );
    assert!(st.current_move.is_none(), "no move started");
    let message = &online_message(&held).unwrap();
    assert!(message.contains("1 of 3 member nodes up"), "{message}");
    let pods = pods_of(&client, &ns.name).await;
    assert_eq!(
        pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["db-1"],
        "no pod started elsewhere"
    );
    let dead: Node = Api::<Node>::all(client.clone())
        .get(&nodes[0])
        .await
        .unwrap();
    assert!(!has_oos_taint(&dead), "nothing fenced without quorum");
}

/// One fence per failed node, whatever the number of its instances: six instances own one
/// node, the node dies, all six move, and the API server's audit log shows the controller
/// writing that Node once (the taint), with no write of it lost to a conflict.
/// The controller's requests that the shared control plane's audit log holds (see
/// `AUDIT_POLICY`), as the API server completed them.
fn controller_requests_audited() -> Vec<serde_json::Value> {
    std::fs::read_to_string(control_plane().audit_log())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|e| e["stage"] == "ResponseComplete" && e["user"]["username"] == CONTROLLER_USER)
        .collect()
}

#[tokio::test]
async fn a_dead_node_is_tainted_once_and_each_of_its_pods_deleted_once() {
    const N: usize = 6;
    let ns = TestNamespace::new("fence-once").await;
    let client = ns.client.clone();
    let cluster = format!("f1{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&client, &cluster, 3, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "r1", true);
    for i in 0..N {
        create_instance(
            &client,
            &ns.name,
            &format!("db-{i}"),
            &cluster,
            &nodes,
            None,
        )
        .await;
    }
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let first = nodes[0].clone();
    wait_each_instance(&fcis, N, T, "Online on node 0", move |i| {
        is_online(i) && i.and_then(owner).as_deref() == Some(first.as_str())
    })
    .await;

    let status_writes = |log: &[serde_json::Value]| -> BTreeMap<String, usize> {
        let mut by_instance = BTreeMap::new();
        for e in log.iter().filter(|e| {
            e["verb"] == "update"
                && e["objectRef"]["resource"] == "failoverclusterinstances"
                && e["objectRef"]["subresource"] == "status"
                && e["objectRef"]["namespace"] == ns.name.as_str()
                && e["responseStatus"]["code"] == 200
        }) {
            let name = e["objectRef"]["name"].as_str().unwrap_or_default();
            *by_instance.entry(name.to_string()).or_insert(0) += 1;
        }
        by_instance
    };
    let before = status_writes(&controller_requests_audited());
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let dead = nodes[0].clone();
    wait_each_instance(&fcis, N, T, "failed over and Online", move |i| {
        is_online(i) && i.and_then(owner).is_some_and(|o| o != dead)
    })
    .await;

    // The audit log is written before each response is sent (blocking mode): every write
    // the controller made to the dead Node is in it by now.
    let log = controller_requests_audited();
    let writes: Vec<(String, i64)> = log
        .iter()
        .filter(|e| {
            e["objectRef"]["resource"] == "nodes"
                && e["objectRef"]["name"] == nodes[0].as_str()
                && e["objectRef"]["subresource"].is_null()
        })
        .map(|e| {
            (
                e["verb"].as_str().unwrap_or_default().to_string(),
                e["responseStatus"]["code"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    let ok = writes.iter().filter(|(_, code)| (200..300).contains(code));
    assert_eq!(
        ok.count(),
        1,
        "one taint write for {N} instances: {writes:?}"
    );
    assert!(
        !writes.iter().any(|(_, code)| *code == 409),
        "no write of the Node lost to a conflict: {writes:?}"
    );
    assert!(has_oos_taint(
        &Api::<Node>::all(client.clone())
            .get(&nodes[0])
            .await
            .unwrap()
    ));

    // Each old pod is deleted once: the round after the delete goes on from the API
    // server's answer (the pod gone), and no round asks for it again.
    let deletes: Vec<(String, i64)> = log
        .iter()
        .filter(|e| {
            e["verb"] == "delete"
                && e["objectRef"]["resource"] == "pods"
                && e["objectRef"]["namespace"] == ns.name.as_str()
        })
        .map(|e| {
            (
                e["objectRef"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                e["responseStatus"]["code"].as_i64().unwrap_or_default(),
            )
        })
        .collect();
    let pods: BTreeSet<&str> = deletes.iter().map(|(p, _)| p.as_str()).collect();
    assert_eq!(pods.len(), N, "one old pod per instance: {deletes:?}");
    assert_eq!(
        deletes.len(),
        N,
        "each old pod deleted once, not again while the cache catches up: {deletes:?}"
    );

    // The status is written when a failover starts, when its new pod's owner is chosen,
    // when that pod is created and when it is online: the deletes and the publication go
    // out before the write that records them (`decide::may_act_before_recording`).
    let after = status_writes(&controller_requests_audited());
    let during: BTreeMap<&String, usize> = after
        .iter()
        .map(|(name, n)| (name, n - before.get(name).copied().unwrap_or(0)))
        .collect();
    assert_eq!(during.len(), N, "{during:?}");
    assert!(
        during.values().all(|n| *n <= 4),
        "at most four status writes per failover: {during:?}"
    );
}

/// What the controller goes on from after a delete (`own_writes::gone_for_good`) is what the
/// API server does: a pod deleted with no grace period, and no finalizer, is gone at once; one
/// with a finalizer, or deleted with its grace period, is only marked for deletion.
#[tokio::test]
async fn a_delete_answer_says_whether_the_object_is_gone() {
    use kube_failover_controller::own_writes::gone_for_good;
    let ns = TestNamespace::new("delete-answer").await;
    let client = ns.client.clone();
    let cluster = format!("da{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&client, &cluster, 1, serde_json::json!({})).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    let pod = |name: &str, finalizer: bool| -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "finalizers": if finalizer { vec!["example.com/hold"] } else { vec![] }},
            "spec": {"nodeName": nodes[0], "containers": [{"name": "c", "image": "x"}]}
        }))
        .unwrap()
    };
    for (name, finalizer) in [("now", false), ("held", true), ("graceful", false)] {
        pods.create(&PostParams::default(), &pod(name, finalizer))
            .await
            .unwrap();
    }
    let forced = DeleteParams::default().grace_period(0);
    let answer = pods.delete("now", &forced).await;
    assert!(gone_for_good(&answer, true), "{answer:?}");
    assert!(pods.get_opt("now").await.unwrap().is_none());

    let answer = pods.delete("held", &forced).await;
    assert!(!gone_for_good(&answer, true), "{answer:?}");
    assert!(pods.get_opt("held").await.unwrap().is_some());

    let answer = pods.delete("graceful", &DeleteParams::default()).await;
    assert!(!gone_for_good(&answer, false), "{answer:?}");

    // A second delete of what is gone: 404, gone.
    let answer = pods.delete("now", &forced).await;
    assert!(gone_for_good(&answer, true), "{answer:?}");

    // Let the held pod go.
    let patch = serde_json::json!({"metadata": {"finalizers": null}});
    pods.patch(
        "held",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(&patch),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn failover_threshold_leaves_the_instance_failed() {
    let ns = TestNamespace::new("threshold").await;
    let client = ns.client.clone();
    let cluster = format!("th{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&client, &cluster, 5, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "r1", false);
    let mut fci = instance("db", &cluster, &nodes, None).unwrap();
    fci.spec.failover.threshold = Some(1);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    wait_for(fcis.clone(), "db", T, "instance Online", is_online).await;

    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "first failover",
        |i: Option<&FailoverClusterInstance>| {
            is_online(i) && i.is_some_and(|i| failovers(i).len() == 1)
        },
    )
    .await;
    control_plane().nodes.kill(&nodes[1]).await.unwrap();
    let failed = wait_for(
        fcis.clone(),
        "db",
        T,
        "instance Failed",
        in_phase(Phase::Failed),
    )
    .await;
    assert_eq!(
        online_reason(Some(&failed)).as_deref(),
        Some(reason::FAILOVER_THRESHOLD_EXCEEDED)
    );
    assert_eq!(
        status(&failed).owner_node.as_deref(),
        Some(nodes[1].as_str())
    );
    assert_eq!(failovers(&failed).len(), 1, "no second move");
    let names: Vec<String> = pods_of(&client, &ns.name)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert!(
        !names.iter().any(|n| n == "db-3"),
        "no pod for a second move: {names:?}"
    );
}

/// `failback.mode: Immediate`: once the most preferred node is back (its taint lifted), the
/// instance moves back to it at once, woken by that node's change, not by its five-minute
/// last look (longer than `T`).
#[tokio::test]
async fn an_instance_fails_back_once_its_preferred_node_returns() {
    let ns = TestNamespace::new("failback").await;
    let client = ns.client.clone();
    let (cluster, nodes) = ns
        .cluster(
            3,
            serde_json::json!({"fencing": {"unfenceAfterSeconds": 2}}),
        )
        .await;
    let _replica = Replica::start(&ns.name, "r", false);
    let mut fci = instance("db", &cluster, &nodes, None).unwrap();
    fci.spec.failback.mode = kube_failover_core::api::FailbackMode::Immediate;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    let on = |n: &str| kube_failover_lab::harness::online_on(n.to_string());
    wait_for(fcis.clone(), "db", T, "online on node 0", on(&nodes[0])).await;

    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    wait_for(
        fcis.clone(),
        "db",
        T,
        "failed over to node 1",
        on(&nodes[1]),
    )
    .await;
    control_plane().nodes.revive(&nodes[0]).await.unwrap();
    let back = wait_for(fcis.clone(), "db", T, "back on node 0", on(&nodes[0])).await;
    let last = status(&back).history.last().cloned().unwrap();
    assert_eq!(
        (last.from.as_deref(), last.to.as_deref(), last.planned),
        (Some(nodes[1].as_str()), Some(nodes[0].as_str()), true),
        "a planned move back: {last:?}"
    );
}

#[tokio::test]
async fn local_volume_on_the_failed_node_keeps_the_instance_down() {
    let ns = TestNamespace::new("local").await;
    let client = ns.client.clone();
    let cluster = format!("lo{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&client, &cluster, 3, serde_json::json!({})).await;
    let pv_name = format!("{}-local", ns.name);
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": pv_name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": ns.name, "name": "data"},
            "local": {"path": "/mnt/data"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": [nodes[1]]}
            ]}]}},
        }
    }))
    .unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .unwrap();
    let pvc: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "volumeName": pv_name,
                 "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &pvc)
        .await
        .unwrap();
    let http = free_addr();
    let _replica = Replica::start_serving(&ns.name, "r1", false, Some(http));
    create_instance(&client, &ns.name, "db", &cluster, &nodes, Some("data")).await;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let online = wait_for(fcis.clone(), "db", T, "instance Online", is_online).await;
    assert_eq!(
        status(&online).owner_node.as_deref(),
        Some(nodes[1].as_str()),
        "placed where its data is"
    );

    control_plane().nodes.kill(&nodes[1]).await.unwrap();
    let down = wait_for(
        fcis.clone(),
        "db",
        T,
        reason::VOLUME_PINNED_TO_NODE,
        |i: Option<&FailoverClusterInstance>| {
            online_reason(i).as_deref() == Some(reason::VOLUME_PINNED_TO_NODE)
        },
    )
    .await;
    let st = status(&down);
    assert_eq!(st.phase, Phase::Offline);
    let message = &online_message(&down).unwrap();
    assert!(
        message.contains("claim data") && message.contains(&nodes[1]),
        "{message}"
    );
    let names: Vec<String> = pods_of(&client, &ns.name)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(names, ["db-1"], "not started elsewhere without its data");
}

#[tokio::test]
async fn leader_killed_mid_failover_the_other_replica_finishes() {
    let ns = TestNamespace::new("leader").await;
    let client = ns.client.clone();
    let cluster = format!("le{:x}", std::process::id() & 0xfff);
    // A fencing delay holds the move at a known step long enough to kill the leader there.
    let nodes = nodes_and_cluster(
        &client,
        &cluster,
        3,
        serde_json::json!({"fencing": {"delaySeconds": 4}}),
    )
    .await;
    let r1 = Replica::start(&ns.name, "r1", true);
    let leases: Api<Lease> = Api::namespaced(client.clone(), &ns.name);
    wait_for(
        leases.clone(),
        "kube-failover-leader",
        T,
        "r1 leads",
        |l: Option<&Lease>| {
            l.and_then(|l| l.spec.as_ref()?.holder_identity.clone())
                .as_deref()
                == Some("r1")
        },
    )
    .await;
    let r2 = Replica::start(&ns.name, "r2", true);
    create_instance(&client, &ns.name, "db", &cluster, &nodes, None).await;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    wait_for(fcis.clone(), "db", T, "instance Online", is_online).await;

    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let mid = wait_for(
        fcis.clone(),
        "db",
        T,
        "move waiting to fence",
        |i: Option<&FailoverClusterInstance>| {
            i.and_then(|i| i.status.as_ref()?.current_move.clone())
                .is_some_and(|m| m.endpoint_withdrawn.is_some() && m.fenced.is_none())
        },
    )
    .await;
    assert_eq!(online_reason(Some(&mid)).as_deref(), Some("FenceDelay"));
    r1.kill();

    let done = wait_for(
        fcis.clone(),
        "db",
        T,
        "failover finished by r2",
        |i: Option<&FailoverClusterInstance>| {
            is_online(i) && i.is_some_and(|i| !failovers(i).is_empty())
        },
    )
    .await;
    let lease = leases.get("kube-failover-leader").await.unwrap();
    assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("r2"));
    let moves = failovers(&done);
    assert_eq!(moves.len(), 1, "one failover, not restarted: {moves:?}");
    let m = &moves[0];
    assert_eq!(
        m.started,
        mid.status.unwrap().current_move.unwrap().started,
        "carried on, not started over"
    );
    assert!(m.fenced.is_some() && m.online.is_some());
    assert_eq!(status(&done).owner_node.as_deref(), Some(nodes[1].as_str()));
    let names: Vec<String> = pods_of(&client, &ns.name)
        .await
        .iter()
        .map(|p| p.name_any())
        .collect();
    assert_eq!(names, ["db-2"], "exactly one new pod");
    let reasons = event_reasons_until(&client, &ns.name, "db", |r| {
        r.contains(reason::MOVED_ONLINE)
    })
    .await;
    assert!(reasons.contains(reason::FAILOVER_STARTED));
    let events = Api::<Event>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .unwrap();
    let started = events
        .items
        .iter()
        .filter(|e| e.reason.as_deref() == Some(reason::FAILOVER_STARTED))
        .map(|e| {
            e.deprecated_count
                .unwrap_or(1)
                .max(e.series.as_ref().map(|s| s.count).unwrap_or(1))
        })
        .sum::<i32>();
    assert_eq!(started, 1, "the failover was started once");
    drop(r2);
}

#[tokio::test]
async fn deleting_an_instance_removes_exactly_what_it_created() {
    let ns = TestNamespace::new("cleanup").await;
    let client = ns.client.clone();
    let cluster = format!("cl{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&client, &cluster, 3, serde_json::json!({})).await;
    let user_claim: PersistentVolumeClaim = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "users-data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap();
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns.name);
    claims
        .create(&PostParams::default(), &user_claim)
        .await
        .unwrap();
    // Bystanders that the controller must not touch.
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "keep-me"}, "spec": {"ports": [{"port": 80}]}
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns.name);
    pods.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({
            "metadata": {"name": "bystander"},
            "spec": {"nodeName": nodes[2], "containers": [{"name": "c", "image": "x"}]}
        }))
        .unwrap(),
    )
    .await
    .unwrap();

    let _replica = Replica::start(&ns.name, "r1", false);
    let mut fci = instance("db", &cluster, &nodes, Some("users-data")).unwrap();
    fci.spec.storage.claim_templates = vec![serde_json::from_value(serde_json::json!({
        "name": "logs",
        "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "", "resources": {"requests": {"storage": "1Gi"}}}
    }))
    .unwrap()];
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    wait_for(fcis.clone(), "db", T, "instance Online", is_online).await;
    assert!(
        claims.get_opt("db-logs").await.unwrap().is_some(),
        "claim made from the template"
    );

    fcis.delete("db", &DeleteParams::default()).await.unwrap();
    wait_gone(fcis.clone(), "db", T, "instance deleted").await;
    wait_gone(pods.clone(), "db-1", T, "instance pod deleted").await;
    wait_gone(claims.clone(), "db-logs", T, "template claim deleted").await;
    assert!(
        services.get_opt("db").await.unwrap().is_none(),
        "network name Service deleted"
    );
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns.name);
    assert!(
        slices.get_opt("db").await.unwrap().is_none(),
        "EndpointSlice deleted"
    );
    assert!(
        claims.get_opt("users-data").await.unwrap().is_some(),
        "the user's claim stays"
    );
    assert!(
        services.get_opt("keep-me").await.unwrap().is_some(),
        "unrelated Service stays"
    );
    assert!(
        pods.get_opt("bystander").await.unwrap().is_some(),
        "unrelated pod stays"
    );
}

/// An instance whose claim does not exist yet waits, says so in status and in a Warning
/// Event, and comes online as soon as the claim is created: claims are watched and mapped to
/// the instances that mount them, not noticed at the next periodic resync (5 minutes).
#[tokio::test]
async fn a_claim_created_late_brings_the_waiting_instance_online() {
    let ns = TestNamespace::new("lateclaim").await;
    let client = ns.client.clone();
    let cluster = format!("lc{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&client, &cluster, 2, serde_json::json!({})).await;
    let attacher = tokio::spawn(play_csi_attacher(client.clone(), SIM_CSI_DRIVER.into()));
    let _replica = Replica::start(&ns.name, "r1", false);
    create_instance(&client, &ns.name, "db", &cluster, &nodes, Some("late")).await;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let waiting = wait_for(
        fcis.clone(),
        "db",
        T,
        "waiting for its claim",
        |i: Option<&FailoverClusterInstance>| {
            online_reason(i).as_deref() == Some(reason::CLAIMS_MISSING)
        },
    )
    .await;
    let message = online_message(&waiting).unwrap();
    assert!(
        message.contains("late") && message.contains("spec.storage.claims"),
        "{message}"
    );
    let reasons = event_reasons_until(&client, &ns.name, "db", |r| {
        r.contains(reason::CLAIMS_MISSING)
    })
    .await;
    assert!(reasons.contains(reason::CLAIMS_MISSING), "{reasons:?}");

    let created = std::time::Instant::now();
    csi_claim(&client, &ns.name, "late").await.unwrap();
    // Woken by the claim's own event (0.2 s here), not by the 30 s recheck of a waiting
    // instance: the wait is bounded well under that.
    wait_for(
        fcis,
        "db",
        Duration::from_secs(15),
        "instance Online",
        is_online,
    )
    .await;
    eprintln!(
        "online {:.1} s after its claim was created",
        created.elapsed().as_secs_f64()
    );
    attacher.abort();
}

/// Nodes hosting pods of more than one instance, from every pod seen in `ns` (terminating
/// ones too: they may still run), checked on every pod event until the returned flag is
/// read.
fn watch_shared_nodes(client: Client, ns: &str) -> Arc<Mutex<Vec<String>>> {
    use kube::runtime::reflector;
    let shared = Arc::new(Mutex::new(Vec::new()));
    let seen = shared.clone();
    let (store, writer) = reflector::store::<Pod>();
    let stream = reflector(
        writer,
        watcher(
            Api::<Pod>::namespaced(client, ns),
            watcher::Config::default(),
        ),
    );
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(ev) = stream.next().await {
            if ev.is_err() {
                continue;
            }
            let mut by_node: std::collections::BTreeMap<String, BTreeSet<String>> =
                Default::default();
            for p in store.state() {
                let node = p.spec.as_ref().and_then(|s| s.node_name.clone());
                let inst = p
                    .labels()
                    .get(kube_failover_core::api::INSTANCE_LABEL)
                    .cloned();
                if let (Some(node), Some(inst)) = (node, inst) {
                    by_node.entry(node).or_default().insert(inst);
                }
            }
            for (node, insts) in by_node.into_iter().filter(|(_, i)| i.len() > 1) {
                seen.lock().unwrap().push(format!("{node}: {insts:?}"));
            }
        }
    });
    shared
}

#[tokio::test]
async fn an_anti_affinity_class_keeps_its_instances_apart_through_a_failover() {
    let ns = TestNamespace::new("antiaff").await;
    let client = ns.client.clone();
    let cluster = format!("aa{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&client, &cluster, 4, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "r1", false);
    let shared = watch_shared_nodes(client.clone(), &ns.name);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    // Three instances of one class, all preferring the same nodes in the same order:
    // without the class they would all land on the first.
    let create = |name: &'static str, mode: &'static str| {
        let (fcis, cluster, nodes) = (fcis.clone(), cluster.clone(), nodes.clone());
        async move {
            let mut fci = instance(name, &cluster, &nodes, None).unwrap();
            fci.spec.anti_affinity_classes = vec!["sql".into()];
            fci.spec.anti_affinity_mode = serde_json::from_value(mode.into()).unwrap();
            fcis.create(&PostParams::default(), &fci).await.unwrap();
        }
    };
    for name in ["sql-a", "sql-b", "sql-c"] {
        create(name, "Preferred").await;
    }
    let mut owners = std::collections::BTreeMap::new();
    for name in ["sql-a", "sql-b", "sql-c"] {
        let i = wait_for(fcis.clone(), name, T, "instance Online", is_online).await;
        owners.insert(name, status(&i).owner_node.unwrap());
    }
    let distinct: BTreeSet<&String> = owners.values().collect();
    assert_eq!(distinct.len(), 3, "one node each: {owners:?}");
    let free = nodes
        .iter()
        .find(|n| !distinct.contains(n))
        .unwrap()
        .clone();

    // The owner of sql-a dies: it fails over to the one free node, not to a preferred one
    // that hosts another of its class.
    let dead = owners["sql-a"].clone();
    control_plane().nodes.kill(&dead).await.unwrap();
    let moved = wait_for(
        fcis.clone(),
        "sql-a",
        T,
        "sql-a online on the free node",
        |i: Option<&FailoverClusterInstance>| {
            is_online(i) && i.and_then(owner) == Some(free.clone())
        },
    )
    .await;
    assert!(!failovers(&moved).is_empty(), "a failover, fenced");

    // A strict fourth one: every live node hosts one of its class, so it waits, saying why,
    // rather than share.
    create("sql-d", "Strict").await;
    let waiting = wait_for(
        fcis.clone(),
        "sql-d",
        T,
        "sql-d waits for a node of its own",
        |i: Option<&FailoverClusterInstance>| {
            online_reason(i).as_deref() == Some(reason::NO_ELIGIBLE_OWNER)
        },
    )
    .await;
    let message = online_message(&waiting).unwrap();
    assert!(
        message.contains("anti-affinity class sql, Strict"),
        "{message}"
    );
    assert!(pods_of(&client, &ns.name).await.iter().all(|p| {
        p.labels()
            .get(kube_failover_core::api::INSTANCE_LABEL)
            .map(String::as_str)
            != Some("sql-d")
    }));

    // The dead node comes back (unfenced): sql-d takes it.
    control_plane().nodes.revive(&dead).await.unwrap();
    let placed = wait_for(fcis.clone(), "sql-d", T, "sql-d Online", is_online).await;
    assert_eq!(status(&placed).owner_node.as_deref(), Some(dead.as_str()));
    let mut all = BTreeSet::new();
    for name in ["sql-a", "sql-b", "sql-c", "sql-d"] {
        let i = fcis.get(name).await.unwrap();
        assert!(is_online(Some(&i)), "{name} still online");
        all.insert(status(&i).owner_node.unwrap());
    }
    assert_eq!(all.len(), 4, "four nodes, one each");
    let shared = shared.lock().unwrap().clone();
    assert!(
        shared.is_empty(),
        "pods of two instances shared a node: {shared:?}"
    );
}

/// Two instances of a class share the only node left to them; once a free node is up
/// again, the lower-ranked one moves there by a planned move, although it prefers the node
/// it shares to the free one (no failback would take it there).
#[tokio::test]
async fn instances_sharing_a_node_part_once_a_free_node_is_up() {
    let ns = TestNamespace::new("aaparts").await;
    let client = ns.client.clone();
    // Five members (the quorum holds with two down); the instances may run on three.
    let (cluster, nodes) = ns.cluster(5, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "r", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let three = nodes[..3].to_vec();
    let on = |n: &str| kube_failover_lab::harness::online_on(n.to_string());
    // One after the other, so that sql-a takes node 0 and sql-b node 1.
    for (name, node) in [("sql-a", &nodes[0]), ("sql-b", &nodes[1])] {
        let mut fci = instance(name, &cluster, &three, None).unwrap();
        fci.spec.owners.possible = three.clone();
        fci.spec.anti_affinity_classes = vec!["sql".into()];
        fci.spec.failback.mode = kube_failover_core::api::FailbackMode::Immediate;
        fcis.create(&PostParams::default(), &fci).await.unwrap();
        wait_for(fcis.clone(), name, T, "online on its own node", on(node)).await;
    }

    // Node 2 goes down, then node 1: sql-b has nowhere to go but node 0, and shares it.
    control_plane().nodes.kill(&nodes[2]).await.unwrap();
    let clusters: Api<kube_failover_core::api::FailoverCluster> = Api::all(client.clone());
    let down = nodes[2].clone();
    wait_for(
        clusters,
        &cluster,
        T,
        "node 2 down",
        move |c: Option<&kube_failover_core::api::FailoverCluster>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.members.iter().any(|m| {
                    m.name == down && m.state == kube_failover_core::api::MemberState::Down
                })
            })
        },
    )
    .await;
    control_plane().nodes.kill(&nodes[1]).await.unwrap();
    wait_for(
        fcis.clone(),
        "sql-b",
        T,
        "sql-b shares node 0",
        on(&nodes[0]),
    )
    .await;
    let a = fcis.get("sql-a").await.unwrap();
    assert_eq!(owner(&a).as_deref(), Some(nodes[0].as_str()), "sql-a stays");

    // Node 2 is back: sql-b (ranked below sql-a by name) moves there, planned.
    control_plane().nodes.revive(&nodes[2]).await.unwrap();
    let parted = wait_for(fcis.clone(), "sql-b", T, "sql-b on node 2", on(&nodes[2])).await;
    let last = status(&parted).history.last().cloned().unwrap();
    assert_eq!(
        (last.from.as_deref(), last.to.as_deref(), last.planned),
        (Some(nodes[0].as_str()), Some(nodes[2].as_str()), true),
        "a planned move off the shared node: {last:?}"
    );
    let a = fcis.get("sql-a").await.unwrap();
    assert!(is_online(Some(&a)), "sql-a still online");
    assert_eq!(
        owner(&a).as_deref(),
        Some(nodes[0].as_str()),
        "sql-a untouched"
    );
}

/// The value of the sample `series` (a metric's name, with its labels if it has any) on a
/// replica's /metrics, 0 if it is not there yet.
async fn metric(addr: std::net::SocketAddr, series: &str) -> f64 {
    let (code, text) = http_get(addr, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

const RECONCILES: &str = "kube_failover_reconcile_duration_seconds_count";
const NODE_CHANGES: &str = "kube_failover_watch_changes_total{watch=\"nodes\"}";

/// Awaits `cond`, asked every 50 ms, for at most `T`.
async fn until<F, Fut>(what: &str, cond: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + T;
    while !cond().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what} within {T:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Awaits the replica at rest: no reconcile over a whole second (checked every 250 ms). What
/// it counts then.
async fn reconciles_at_rest(addr: std::net::SocketAddr) -> f64 {
    let deadline = tokio::time::Instant::now() + T;
    let mut last = (metric(addr, RECONCILES).await, tokio::time::Instant::now());
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = metric(addr, RECONCILES).await;
        if now != last.0 {
            last = (now, tokio::time::Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(1) {
            return now;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "at rest within {T:?}"
        );
    }
}

/// A kubelet reports its Node's status every few minutes with nothing changed but the
/// heartbeat time (KWOK every ten seconds): each report woke every instance of the node and
/// the cluster's status. Now what the Node cache keeps decides: a report wakes nothing, a
/// change of a label (read for volumes' node affinity and sites) wakes the node's instances.
#[tokio::test]
async fn a_node_status_report_with_nothing_changed_wakes_no_instance() {
    const N: usize = 6;
    let ns = TestNamespace::new("reports").await;
    let client = ns.client.clone();
    let cluster = format!("sr{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&client, &cluster, 3, serde_json::json!({})).await;
    let http = free_addr();
    let _replica = Replica::start_serving(&ns.name, "r1", false, Some(http));
    create_spread_instances(&client, &ns.name, &cluster, &nodes, N).await;
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    wait_each_instance(&fcis, N, T, "Online", is_online).await;

    let before = reconciles_at_rest(http).await;
    let seen = metric(http, NODE_CHANGES).await;
    control_plane().nodes.report_status(&nodes).await.unwrap();
    // Each report has reached the replica's Node watch...
    let reports = nodes.len() as f64;
    until("the status reports seen by the Node watch", || async {
        metric(http, NODE_CHANGES).await >= seen + reports
    })
    .await;
    // ...and woke nothing: at rest again, with the count it had.
    assert_eq!(
        reconciles_at_rest(http).await,
        before,
        "a status report woke instances"
    );

    // What the cache keeps changes: the node's instances are woken (the check above can fail).
    let touched = nodes[0].clone();
    patch_node(
        &client,
        &touched,
        serde_json::json!({"metadata": {"labels": {"example.com/rack": "r2"}}}),
    )
    .await;
    until("a label change to wake the node's instances", || async {
        metric(http, RECONCILES).await > before
    })
    .await;
}
