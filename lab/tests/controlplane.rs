//! The test rig itself: a real control plane whose simulated nodes heartbeat, die and come
//! back, and whose API server really enforces schemas and RBAC.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::runtime::wait::Condition;
use kube_failover_lab::harness::{TestNamespace, control_plane, wait_for};

fn ready_status(node: &Node) -> Option<(String, String)> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.clone(), c.reason.clone().unwrap_or_default()))
}

fn node_ready_is(status: &'static str) -> impl Condition<Node> {
    move |n: Option<&Node>| n.and_then(ready_status).is_some_and(|(s, _)| s == status)
}

fn renewed_after(t: MicroTime) -> impl Condition<Lease> {
    move |l: Option<&Lease>| {
        l.and_then(|l| l.spec.as_ref()?.renew_time.clone())
            .is_some_and(|r| r.0 > t.0)
    }
}

fn renew_time(lease: &Lease) -> MicroTime {
    lease
        .spec
        .as_ref()
        .and_then(|s| s.renew_time.clone())
        .expect("node lease has a renewTime")
}

#[tokio::test]
async fn nodes_heartbeat_die_and_come_back() {
    let cp = control_plane();
    let client = cp.client().unwrap();
    let names = cp
        .nodes
        .create("heartbeat", 3, &BTreeMap::new())
        .await
        .unwrap();
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let timeout = Duration::from_secs(60);

    // Every node becomes Ready and its Lease is renewed, again and again.
    for name in &names {
        wait_for(
            nodes.clone(),
            name,
            timeout,
            "node Ready",
            node_ready_is("True"),
        )
        .await;
        let lease = wait_for(
            leases.clone(),
            name,
            timeout,
            "node Lease",
            |l: Option<&Lease>| l.is_some(),
        )
        .await;
        let first = renew_time(&lease);
        let renewed = wait_for(
            leases.clone(),
            name,
            timeout,
            "Lease renewed",
            renewed_after(first.clone()),
        )
        .await;
        assert!(renew_time(&renewed).0 > first.0);
    }

    // Kill one: kube-controller-manager marks it Unknown, and its Lease has gone stale.
    let victim = &names[1];
    cp.nodes.kill(victim).await.unwrap();
    let killed_at = jiff_now();
    let dead = wait_for(
        nodes.clone(),
        victim,
        timeout,
        "node Ready=Unknown",
        node_ready_is("Unknown"),
    )
    .await;
    let (_, reason) = ready_status(&dead).unwrap();
    assert_eq!(
        reason, "NodeStatusUnknown",
        "set by the node lifecycle controller"
    );
    // The taint follows the condition in a separate pass of the node lifecycle controller.
    wait_for(
        nodes.clone(),
        victim,
        timeout,
        "unreachable taint",
        |n: Option<&Node>| {
            n.and_then(|n| n.spec.as_ref()?.taints.as_ref())
                .is_some_and(|ts| ts.iter().any(|t| t.key == "node.kubernetes.io/unreachable"))
        },
    )
    .await;
    let lease = leases.get(victim).await.unwrap();
    let last = renew_time(&lease);
    let duration = lease.spec.as_ref().unwrap().lease_duration_seconds.unwrap();
    let age = jiff_now() - last.0;
    assert!(
        age.get_seconds() >= i64::from(duration),
        "the dead node's Lease is stale: last renewed {age:?} ago, duration {duration} s"
    );
    assert!(
        last.0 <= killed_at + jiff::SignedDuration::from_secs(1),
        "no renewal after the kill"
    );

    // The others stay Ready.
    for name in names.iter().filter(|n| *n != victim) {
        let node = nodes.get(name).await.unwrap();
        assert_eq!(ready_status(&node).unwrap().0, "True", "{name} still Ready");
    }

    // Revive it: heartbeats resume and it is Ready again.
    cp.nodes.revive(victim).await.unwrap();
    wait_for(
        leases.clone(),
        victim,
        timeout,
        "Lease renewed after revive",
        renewed_after(last),
    )
    .await;
    wait_for(
        nodes.clone(),
        victim,
        timeout,
        "node Ready again",
        node_ready_is("True"),
    )
    .await;
}

fn jiff_now() -> jiff::Timestamp {
    jiff::Timestamp::now()
}

#[tokio::test]
async fn api_server_enforces_schema_and_rbac() {
    let ns = TestNamespace::new("enforce").await;
    let cp = control_plane();

    // A CRD with a schema: the API server refuses an object that violates it.
    let crd: CustomResourceDefinition =
        serde_yaml::from_str(include_str!("fixtures/widget-crd.yaml")).unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(ns.client.clone());
    match crds.create(&PostParams::default(), &crd).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => panic!("create CRD: {e}"),
    }
    wait_for(
        crds,
        "widgets.test.kube-failover.io",
        Duration::from_secs(30),
        "CRD established",
        kube::runtime::conditions::is_crd_established(),
    )
    .await;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("test.kube-failover.io", "v1", "Widget"),
        "widgets",
    );
    let widgets: Api<DynamicObject> = Api::namespaced_with(ns.client.clone(), &ns.name, &ar);
    let widget = |name: &str, replicas: i64| -> DynamicObject {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "test.kube-failover.io/v1", "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"replicas": replicas}
        }))
        .unwrap()
    };
    widgets
        .create(&PostParams::default(), &widget("good", 3))
        .await
        .expect("a valid object is accepted");
    let err = widgets
        .create(&PostParams::default(), &widget("bad", -1))
        .await
        .expect_err("a negative replica count violates the schema");
    match err {
        kube::Error::Api(e) => {
            assert_eq!(e.code, 422, "{e:?}");
            assert!(
                e.message.contains("spec.replicas"),
                "message names the field: {}",
                e.message
            );
        }
        e => panic!("unexpected error {e}"),
    }

    // A ServiceAccount without RBAC permission is forbidden; granting a Role allows it.
    let sas: Api<ServiceAccount> = Api::namespaced(ns.client.clone(), &ns.name);
    sas.create(
        &PostParams::default(),
        &serde_json::from_value(serde_json::json!({"metadata": {"name": "nobody"}})).unwrap(),
    )
    .await
    .unwrap();
    let as_sa = cp
        .client_as_service_account(&ns.name, "nobody")
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(as_sa.clone(), &ns.name);
    match pods.list(&ListParams::default()).await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 403, "{e:?}");
            assert!(
                e.message
                    .contains(&format!("system:serviceaccount:{}:nobody", ns.name)),
                "{}",
                e.message
            );
        }
        other => panic!("listing pods without permission must be forbidden, got {other:?}"),
    }
    let roles: Api<Role> = Api::namespaced(ns.client.clone(), &ns.name);
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "pod-reader"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]
            }))
            .unwrap(),
        )
        .await
        .unwrap();
    let bindings: Api<RoleBinding> = Api::namespaced(ns.client.clone(), &ns.name);
    bindings.create(&PostParams::default(), &serde_json::from_value(serde_json::json!({
        "metadata": {"name": "nobody-reads-pods"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
        "subjects": [{"kind": "ServiceAccount", "name": "nobody", "namespace": ns.name}]
    })).unwrap()).await.unwrap();
    // RBAC reads bindings from an informer: await the grant rather than assume it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match pods.list(&ListParams::default()).await {
            Ok(_) => break,
            Err(kube::Error::Api(e)) if e.code == 403 && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("listing pods with a RoleBinding must succeed: {e}"),
        }
    }
    // Still forbidden outside what was granted.
    let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(as_sa, &ns.name);
    assert!(
        matches!(secrets.list(&ListParams::default()).await, Err(kube::Error::Api(e)) if e.code == 403)
    );
}

/// Run only as the child of `no_process_outlives_a_failed_test`: starts the control plane,
/// reports the process IDs it started, and panics.
#[tokio::test]
#[ignore = "run by no_process_outlives_a_failed_test"]
async fn child_starts_control_plane_then_panics() {
    let Ok(out) = std::env::var("KUBE_FAILOVER_CHILD_PIDS") else {
        return;
    };
    let cp = control_plane();
    std::fs::write(
        &out,
        cp.pids()
            .iter()
            .map(|p| format!("{p}\n"))
            .collect::<String>(),
    )
    .unwrap();
    panic!("deliberate failure with the control plane running");
}

#[test]
fn no_process_outlives_a_failed_test() {
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_starts_control_plane_then_panics",
            "--ignored",
            "--nocapture",
        ])
        .env("KUBE_FAILOVER_CHILD_PIDS", &pids_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(!status.success(), "the child test must fail");
    let pids: Vec<u32> = std::fs::read_to_string(&pids_file)
        .expect("the child wrote its process IDs before failing")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert!(
        pids.len() >= 4,
        "etcd, kube-apiserver, kube-controller-manager, kwok at least: {pids:?}"
    );
    // The watchdog terminates the group as soon as the child is gone; wait for it, bounded.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let alive: Vec<u32> = pids
            .iter()
            .copied()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| {
                    !s.rsplit(')')
                        .next()
                        .unwrap_or("")
                        .trim_start()
                        .starts_with('Z')
                })
            })
            .collect();
        if alive.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running after the failed test: {alive:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The API server restarted in place, gracefully and by SIGKILL: a client made before works
/// again, what was stored survives, and the audit log records force deletes with their
/// DeleteOptions and who sent them. Its own control plane: restarting the shared one would
/// cut the other tests of this binary off.
#[tokio::test]
async fn the_api_server_restarts_in_place_and_audits_deletes() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::DeleteParams;
    use kube_failover_lab::controlplane::{ControlPlane, ControlPlaneConfig};

    let mut cp = ControlPlane::start(ControlPlaneConfig {
        scheduler: false,
        audit_log: true,
        work_dir: std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("controlplane"),
        ..Default::default()
    })
    .await
    .unwrap();
    let client = cp.client().unwrap();
    cp.create_namespace(&client, "restart").await.unwrap();
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "restart");
    let map = |name: &str| -> ConfigMap {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name}, "data": {"k": name}
        }))
        .unwrap()
    };
    maps.create(&PostParams::default(), &map("before"))
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "restart");
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "doomed"},
        "spec": {"containers": [{"name": "c", "image": "x"}]}
    }))
    .unwrap();
    let uid = pods
        .create(&PostParams::default(), &pod)
        .await
        .unwrap()
        .metadata
        .uid
        .unwrap();
    let mut force = DeleteParams::default().grace_period(0);
    force.preconditions = Some(kube::api::Preconditions {
        uid: Some(uid.clone()),
        resource_version: None,
    });
    pods.delete("doomed", &force).await.unwrap();

    let pids_before = cp.pids();
    cp.restart_apiserver().await.unwrap();
    // The client made before the restart: its pooled connections died with the server.
    assert_eq!(
        maps.get("before").await.unwrap().data.unwrap()["k"],
        "before",
        "stored objects survive a graceful restart"
    );
    maps.create(&PostParams::default(), &map("between"))
        .await
        .unwrap();
    cp.kill_apiserver().await.unwrap();
    for name in ["before", "between"] {
        assert_eq!(
            maps.get(name).await.unwrap().data.unwrap()["k"],
            name,
            "stored objects survive a SIGKILL"
        );
    }
    let pids_after = cp.pids();
    assert_eq!(pids_before.len(), pids_after.len(), "one process replaced");
    assert_eq!(
        pids_before
            .iter()
            .filter(|p| !pids_after.contains(p))
            .count(),
        1,
        "only the API server is a new process: {pids_before:?} -> {pids_after:?}"
    );

    let audit = std::fs::read_to_string(cp.audit_log()).unwrap();
    let events: Vec<serde_json::Value> = audit
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let force_delete = events
        .iter()
        .find(|e| {
            e["verb"] == "delete"
                && e["objectRef"]["resource"] == "pods"
                && e["objectRef"]["name"] == "doomed"
        })
        .unwrap_or_else(|| panic!("the pod delete is audited: {audit}"));
    assert_eq!(force_delete["requestObject"]["gracePeriodSeconds"], 0);
    assert_eq!(force_delete["requestObject"]["preconditions"]["uid"], uid);
    assert_eq!(force_delete["user"]["username"], "kube-failover-admin");
    assert_eq!(force_delete["responseStatus"]["code"], 200);
    assert!(force_delete["requestReceivedTimestamp"].is_string());
    assert!(
        !events
            .iter()
            .any(|e| e["objectRef"]["resource"] == "configmaps"),
        "only what the policy names is logged"
    );
    cp.stop();
}
