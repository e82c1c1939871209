//! What the controller's ServiceAccount may do, on the real API server with the RBAC and the
//! admission policies of `deploy/kube-failover.yaml` (the harness installs them with the
//! control plane, and every test's controller runs as that ServiceAccount), and which
//! namespaces may use a FailoverCluster.
//!
//! `every_write_the_controller_does_not_need_is_refused` prints the table of
//! `docs/security.md` (run with `--nocapture`): for each write, what RBAC alone says (as
//! `kubectl auth can-i` would) and what the API server does with the admission policies.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim, Pod, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IPAddress;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Client, Resource, ResourceExt};
use kube_failover_core::api::{FailoverClusterInstance, condition, reason};
use kube_failover_lab::harness::{
    OUT_OF_SERVICE as OOS, Replica, TestNamespace, control_plane, controller_config, moving,
    nodes_and_cluster, wait_for,
};
use serde_json::json;

const T: Duration = Duration::from_secs(60);

fn dry() -> PostParams {
    PostParams {
        dry_run: true,
        ..Default::default()
    }
}

fn dry_delete() -> DeleteParams {
    DeleteParams {
        dry_run: true,
        ..Default::default()
    }
}

/// What the API server answered a write: `Ok` or the refusal's message.
fn outcome<T>(r: kube::Result<T>) -> Result<(), String> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) => Err(format!("{} {}", e.code, e.message)),
        Err(e) => Err(e.to_string()),
    }
}

/// Whether RBAC alone lets the controller's ServiceAccount do `verb` on `resource`, as
/// `kubectl auth can-i --as system:serviceaccount:kube-failover:kube-failover` answers.
async fn can_i(sa: &Client, verb: &str, group: &str, resource: &str, ns: Option<&str>) -> bool {
    let review: SelfSubjectAccessReview = serde_json::from_value(json!({
        "spec": {"resourceAttributes": {
            "verb": verb, "group": group, "resource": resource, "namespace": ns.unwrap_or("")
        }}
    }))
    .unwrap();
    Api::<SelfSubjectAccessReview>::all(sa.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .is_some_and(|s| s.allowed)
}

fn pod(name: &str, ns: &str, owner: Option<&FailoverClusterInstance>, label: bool) -> Pod {
    let mut p: Pod = serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": ns},
        "spec": {"containers": [{"name": "c", "image": "registry.example.com/app:1"}]}
    }))
    .unwrap();
    if let Some(fci) = owner {
        p.metadata.owner_references = Some(vec![fci.controller_owner_ref(&()).unwrap()]);
        if label {
            p.labels_mut()
                .insert("kube-failover.io/instance".into(), fci.name_any());
        }
    }
    p
}

/// The UIDs of the pods `api` lists.
async fn uids(api: &Api<Pod>) -> Vec<String> {
    api.list(&Default::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|p| p.uid().unwrap())
        .collect()
}

/// One row of the table: a write, RBAC's answer, and the API server's.
struct Row {
    what: &'static str,
    rbac: bool,
    result: Result<(), String>,
}

#[tokio::test]
async fn every_write_the_controller_does_not_need_is_refused() {
    let ns = TestNamespace::new("privileges");
    let ns = ns.await;
    let admin = ns.client.clone();
    let sa = Client::try_from(controller_config()).unwrap();
    let (cluster, nodes) = ns.cluster(1, json!({})).await;
    let fci = kube_failover_lab::demo::instance("db", &cluster, &nodes, None).unwrap();
    // Created by the admin and never reconciled (no controller runs here): a real owner for
    // the objects below.
    let fci = Api::<FailoverClusterInstance>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &fci)
        .await
        .unwrap();

    // The policies take effect once the API server has loaded them: wait for the first
    // refusal.
    let pods_sa: Api<Pod> = Api::namespaced(sa.clone(), &ns.name);
    let unlabelled = pod("stray", &ns.name, None, false);
    let deadline = tokio::time::Instant::now() + T;
    while pods_sa.create(&dry(), &unlabelled).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the admission policies never took effect"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let mut rows = Vec::new();
    let system_pods: Api<Pod> = Api::namespaced(sa.clone(), "kube-system");
    rows.push(Row {
        what: "create a pod in kube-system",
        rbac: can_i(&sa, "create", "", "pods", Some("kube-system")).await,
        result: outcome(
            system_pods
                .create(&dry(), &pod("p", "kube-system", Some(&fci), true))
                .await,
        ),
    });
    rows.push(Row {
        what: "create a pod without the instance label",
        rbac: can_i(&sa, "create", "", "pods", Some(&ns.name)).await,
        result: outcome(pods_sa.create(&dry(), &unlabelled).await),
    });
    rows.push(Row {
        what: "create a pod labelled for an instance it is not controlled by",
        rbac: can_i(&sa, "create", "", "pods", Some(&ns.name)).await,
        result: outcome({
            let mut p = pod("p", &ns.name, None, false);
            p.labels_mut()
                .insert("kube-failover.io/instance".into(), "db".into());
            pods_sa.create(&dry(), &p).await
        }),
    });
    // What it does: a pod of its instance (dry run).
    let allowed_pod = outcome(
        pods_sa
            .create(&dry(), &pod("db-1", &ns.name, Some(&fci), true))
            .await,
    );

    let user_pod = Api::<Pod>::namespaced(admin.clone(), &ns.name)
        .create(
            &PostParams::default(),
            &pod("users-pod", &ns.name, None, false),
        )
        .await
        .unwrap();
    rows.push(Row {
        what: "delete a pod that is not an instance's",
        rbac: can_i(&sa, "delete", "", "pods", Some(&ns.name)).await,
        result: outcome(pods_sa.delete(&user_pod.name_any(), &dry_delete()).await),
    });

    kube_failover_lab::demo::csi_claim(&admin, &ns.name, "users-data")
        .await
        .unwrap();
    let claims_sa: Api<PersistentVolumeClaim> = Api::namespaced(sa.clone(), &ns.name);
    rows.push(Row {
        what: "delete a user's claim",
        rbac: can_i(&sa, "delete", "", "persistentvolumeclaims", Some(&ns.name)).await,
        result: outcome(claims_sa.delete("users-data", &dry_delete()).await),
    });

    let service: Service = serde_json::from_value(json!({
        "metadata": {"name": "users-service"},
        "spec": {"ports": [{"port": 80}]}
    }))
    .unwrap();
    Api::<Service>::namespaced(admin.clone(), &ns.name)
        .create(&PostParams::default(), &service)
        .await
        .unwrap();
    let services_sa: Api<Service> = Api::namespaced(sa.clone(), &ns.name);
    rows.push(Row {
        what: "delete a Service it did not create",
        rbac: can_i(&sa, "delete", "", "services", Some(&ns.name)).await,
        result: outcome(services_sa.delete("users-service", &dry_delete()).await),
    });
    rows.push(Row {
        what: "patch a Service it did not create",
        rbac: can_i(&sa, "patch", "", "services", Some(&ns.name)).await,
        result: outcome(
            services_sa
                .patch(
                    "users-service",
                    &PatchParams {
                        dry_run: true,
                        ..Default::default()
                    },
                    &Patch::Merge(json!({"spec": {"ports": [{"port": 81}]}})),
                )
                .await,
        ),
    });
    let slice: EndpointSlice = serde_json::from_value(json!({
        "metadata": {"name": "users-slice", "labels": {"kubernetes.io/service-name": "users-service"}},
        "addressType": "IPv4", "endpoints": []
    }))
    .unwrap();
    rows.push(Row {
        what: "create an EndpointSlice for a Service not its own",
        rbac: can_i(
            &sa,
            "create",
            "discovery.k8s.io",
            "endpointslices",
            Some(&ns.name),
        )
        .await,
        result: outcome(
            Api::<EndpointSlice>::namespaced(sa.clone(), &ns.name)
                .create(&dry(), &slice)
                .await,
        ),
    });

    // IPAddresses: the kubernetes Service's ClusterIP is the API server's allocation; a
    // claim made as an instance's but without the label, or with a Service as its parent,
    // is not the controller's either.
    let addresses_sa: Api<IPAddress> = Api::all(sa.clone());
    let cluster_ip = Api::<Service>::namespaced(admin.clone(), "default")
        .get("kubernetes")
        .await
        .unwrap()
        .spec
        .unwrap()
        .cluster_ip
        .unwrap();
    rows.push(Row {
        what: "delete the IPAddress of a Service's ClusterIP",
        rbac: can_i(&sa, "delete", "networking.k8s.io", "ipaddresses", None).await,
        result: outcome(addresses_sa.delete(&cluster_ip, &dry_delete()).await),
    });
    let mut claim = kube_failover_controller::network::claim(&fci, "192.0.2.77");
    claim.spec.parent_ref.resource = "services".into();
    claim.spec.parent_ref.group = Some(String::new());
    rows.push(Row {
        what: "create an IPAddress whose parent is not an instance",
        rbac: can_i(&sa, "create", "networking.k8s.io", "ipaddresses", None).await,
        result: outcome(addresses_sa.create(&dry(), &claim).await),
    });

    let nodes_sa: Api<Node> = Api::all(sa.clone());
    let node = nodes_sa.get(&nodes[0]).await.unwrap();
    let changed = |f: &dyn Fn(&mut Node)| {
        let mut n = node.clone();
        f(&mut n);
        n
    };
    let node_rbac = can_i(&sa, "update", "", "nodes", None).await;
    let labelled = changed(&|n| {
        n.labels_mut().insert("team".into(), "tenant".into());
    });
    rows.push(Row {
        what: "change a Node's labels",
        rbac: node_rbac,
        result: outcome(nodes_sa.replace(&nodes[0], &dry(), &labelled).await),
    });
    let cordoned =
        changed(&|n| n.spec.get_or_insert_with(Default::default).unschedulable = Some(true));
    rows.push(Row {
        what: "cordon a Node",
        rbac: node_rbac,
        result: outcome(nodes_sa.replace(&nodes[0], &dry(), &cordoned).await),
    });
    let tainted = |key: &str, marked: bool| {
        changed(&|n| {
            n.spec.get_or_insert_with(Default::default).taints = Some(vec![
                serde_json::from_value(
                    json!({"key": key, "value": "nodeshutdown", "effect": "NoExecute"}),
                )
                .unwrap(),
            ]);
            if marked {
                n.annotations_mut().insert(
                    "kube-failover.io/fenced-at".into(),
                    "2026-01-01T00:00:00Z".into(),
                );
            }
        })
    };
    rows.push(Row {
        what: "add a taint other than out-of-service to a Node",
        rbac: node_rbac,
        result: outcome(
            nodes_sa
                .replace(&nodes[0], &dry(), &tainted("example.com/maintenance", true))
                .await,
        ),
    });
    rows.push(Row {
        what: "add the out-of-service taint without its fenced-at marker",
        rbac: node_rbac,
        result: outcome(
            nodes_sa
                .replace(&nodes[0], &dry(), &tainted(OOS, false))
                .await,
        ),
    });
    let fence = tainted(OOS, true);
    // What it does: fence (dry run).
    let allowed_fence = outcome(nodes_sa.replace(&nodes[0], &dry(), &fence).await);
    // Someone else's taint (no marker), which it must never lift.
    let admin_nodes: Api<Node> = Api::all(admin.clone());
    let mut fenced_by_someone = admin_nodes.get(&nodes[0]).await.unwrap();
    fenced_by_someone
        .spec
        .get_or_insert_with(Default::default)
        .taints = tainted(OOS, false).spec.and_then(|s| s.taints);
    let fenced_by_someone = admin_nodes
        .replace(&nodes[0], &PostParams::default(), &fenced_by_someone)
        .await
        .unwrap();
    let mut lifted = fenced_by_someone.clone();
    lifted.spec.as_mut().unwrap().taints = Some(vec![]);
    rows.push(Row {
        what: "remove an out-of-service taint someone else added",
        rbac: node_rbac,
        result: outcome(nodes_sa.replace(&nodes[0], &dry(), &lifted).await),
    });

    eprintln!(
        "\n| the controller's ServiceAccount tries to | RBAC alone (`kubectl auth can-i`) | with the admission policies |"
    );
    eprintln!("|---|---|---|");
    for r in &rows {
        let verdict = match &r.result {
            Ok(()) => "allowed".to_string(),
            Err(m) => format!("refused: {m}"),
        };
        eprintln!(
            "| {} | {} | {} |",
            r.what,
            if r.rbac { "yes" } else { "no" },
            verdict.replace('|', "/")
        );
    }
    eprintln!(
        "| create a pod of its instance (what it does) | yes | {} |",
        if allowed_pod.is_ok() {
            "allowed"
        } else {
            "refused"
        }
    );
    eprintln!(
        "| fence a node: the taint with its marker (what it does) | yes | {} |",
        if allowed_fence.is_ok() {
            "allowed"
        } else {
            "refused"
        }
    );

    assert_eq!(allowed_pod, Ok(()), "a pod of its instance is allowed");
    assert_eq!(allowed_fence, Ok(()), "fencing is allowed");
    let expected: &[(&str, &str)] = &[
        ("create a pod in kube-system", "a protected namespace"),
        (
            "create a pod without the instance label",
            "has no kube-failover.io/instance label",
        ),
        (
            "create a pod labelled for an instance it is not controlled by",
            "is not controlled by the FailoverClusterInstance db",
        ),
        (
            "delete a pod that is not an instance's",
            "has no kube-failover.io/instance label",
        ),
        (
            "delete a user's claim",
            "a claim you brought is never deleted",
        ),
        (
            "delete a Service it did not create",
            "users-service is not one",
        ),
        (
            "patch a Service it did not create",
            "users-service is not one",
        ),
        (
            "create an EndpointSlice for a Service not its own",
            "users-slice is not one",
        ),
        (
            "delete the IPAddress of a Service's ClusterIP",
            "is not one",
        ),
        (
            "create an IPAddress whose parent is not an instance",
            "192.0.2.77 is not one",
        ),
        ("change a Node's labels", "not its labels"),
        ("cordon a Node", "not whether it is schedulable"),
        (
            "add a taint other than out-of-service to a Node",
            "no other taint",
        ),
        (
            "add the out-of-service taint without its fenced-at marker",
            "together with the annotation kube-failover.io/fenced-at",
        ),
        (
            "remove an out-of-service taint someone else added",
            "removes only a taint it added",
        ),
    ];
    for (what, message) in expected {
        let row = rows.iter().find(|r| r.what == *what).unwrap();
        assert!(row.rbac, "RBAC alone allows: {what}");
        match &row.result {
            Err(m) => assert!(
                m.starts_with("403") && m.contains(message),
                "{what}: refused, saying {message:?}; got {m}"
            ),
            Ok(()) => panic!("{what}: allowed, must be refused"),
        }
    }
}

#[tokio::test]
async fn a_cluster_serves_only_the_namespaces_it_allows() {
    let allowed = TestNamespace::new("tenant-a").await;
    let other = TestNamespace::new("tenant-b").await;
    let admin = allowed.client.clone();
    let cluster = format!("{}-c", allowed.name);
    let nodes = nodes_and_cluster(
        &admin,
        &cluster,
        2,
        json!({"allowedNamespaces": {"names": [allowed.name]}}),
    )
    .await;
    let fci = kube_failover_lab::demo::instance("db", &cluster, &nodes, None).unwrap();

    // Refused at admission in a namespace the cluster does not list (the tenancy policy may
    // need a moment to see the new cluster).
    let foreign: Api<FailoverClusterInstance> = Api::namespaced(admin.clone(), &other.name);
    let deadline = tokio::time::Instant::now() + T;
    let message = loop {
        match foreign.create(&dry(), &fci).await {
            Err(kube::Error::Api(e)) => break e.message,
            Err(e) => panic!("{e}"),
            Ok(_) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "an instance in {} was admitted",
                    other.name
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    assert!(
        message.contains(&format!(
            "FailoverCluster {cluster} does not allow instances in namespace {}",
            other.name
        )) && message.contains("spec.allowedNamespaces"),
        "{message}"
    );

    // Admitted where it is allowed, and brought online by the controller.
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(admin.clone(), &allowed.name);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    let _replica = Replica::start(&allowed.name, "r", false);
    let online = wait_for(
        fcis.clone(),
        "db",
        T,
        "db online",
        |f: Option<&FailoverClusterInstance>| {
            f.and_then(|f| f.status.as_ref())
                .is_some_and(|s| s.served.as_ref().is_some_and(|v| v.endpoint.is_some()))
        },
    )
    .await;
    let owner = online.status.unwrap().owner_node.unwrap();
    let pods = Api::<Pod>::namespaced(admin.clone(), &allowed.name);
    let pod_before = uids(&pods).await;

    // The cluster withdraws the namespace: the instance is held with a condition and an
    // Event, and what runs is not disturbed, even when its owner fails.
    Api::<kube_failover_core::api::FailoverCluster>::all(admin.clone())
        .patch(
            &cluster,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"allowedNamespaces": {"names": ["somewhere-else"]}}})),
        )
        .await
        .unwrap();
    let held = wait_for(
        fcis.clone(),
        "db",
        T,
        "db held",
        |f: Option<&FailoverClusterInstance>| {
            f.and_then(|f| f.status.as_ref()).is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == condition::VALID
                        && c.status == "False"
                        && c.reason == reason::NAMESPACE_NOT_ALLOWED
                })
            })
        },
    )
    .await;
    assert_eq!(
        held.status.unwrap().owner_node.as_deref(),
        Some(owner.as_str())
    );
    // The cluster says which of its instances it holds.
    let clusters: Api<kube_failover_core::api::FailoverCluster> = Api::all(admin.clone());
    wait_for(
        clusters,
        &cluster,
        T,
        "the cluster's Tenancy condition names db",
        |c: Option<&kube_failover_core::api::FailoverCluster>| {
            c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                s.conditions.iter().any(|c| {
                    c.type_ == condition::TENANCY
                        && c.status == "False"
                        && c.reason == reason::NAMESPACE_NOT_ALLOWED
                        && c.message.contains(&format!("{}/db", allowed.name))
                })
            })
        },
    )
    .await;
    control_plane().nodes.kill(&owner).await.unwrap();
    // Twice the detection threshold (3 s) and more: no move starts.
    let moved = wait_for(fcis.clone(), "db", T, "a move", moving);
    assert!(
        tokio::time::timeout(Duration::from_secs(10), moved)
            .await
            .is_err(),
        "a held instance started a move"
    );
    let pod_after = uids(&pods).await;
    assert_eq!(pod_after, pod_before, "the pod is left as it was");
    let events =
        Api::<k8s_openapi::api::events::v1::Event>::namespaced(admin.clone(), &allowed.name)
            .list(&Default::default())
            .await
            .unwrap();
    assert!(
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some(reason::NAMESPACE_NOT_ALLOWED)),
        "an Event says why"
    );
}
