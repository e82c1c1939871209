//! Dependencies between instances on the real control plane with simulated nodes: an
//! application starts only once its database is Online, at placement and through a
//! failover of both; a cycle holds its instances and says so.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kube::api::{Api, PostParams};
use kube_failover_core::api::{FailoverClusterInstance, Move, reason};
use kube_failover_lab::demo::instance;
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, nodes_and_cluster, online_message, online_on,
    online_reason, status, wait_for,
};

const T: Duration = Duration::from_secs(90);

fn with_deps(
    name: &str,
    cluster: &str,
    nodes: &[String],
    deps: &[&str],
) -> FailoverClusterInstance {
    let mut fci = instance(name, cluster, nodes, None).unwrap();
    fci.spec.virtual_ips.clear();
    fci.spec.depends_on = deps.iter().map(|d| d.to_string()).collect();
    fci
}

fn reason_is(r: &'static str) -> impl Fn(Option<&FailoverClusterInstance>) -> bool {
    move |i| online_reason(i).as_deref() == Some(r)
}

/// The last move of an instance that brought it online on `node`.
fn move_to(i: &FailoverClusterInstance, node: &str) -> Move {
    status(i)
        .history
        .into_iter()
        .rev()
        .find(|m| m.to.as_deref() == Some(node))
        .unwrap()
}

#[tokio::test]
async fn an_application_starts_after_its_database_and_follows_it_through_a_failover() {
    let ns = TestNamespace::new("deps").await;
    let client = ns.client.clone();
    let cluster = format!("de{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&client, &cluster, 3, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "r1", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let pp = PostParams::default();

    // The application first: it waits for a database that does not exist yet.
    fcis.create(&pp, &with_deps("app", &cluster, &nodes, &["db"]))
        .await
        .unwrap();
    let waiting = wait_for(
        fcis.clone(),
        "app",
        T,
        "app waiting for db",
        reason_is(reason::WAITING_FOR_DEPENDENCY),
    )
    .await;
    let message = online_message(&waiting).unwrap();
    assert!(message.contains("db (no such instance)"), "{message}");

    // The database comes: it starts, then the application.
    fcis.create(&pp, &with_deps("db", &cluster, &nodes, &[]))
        .await
        .unwrap();
    let db = wait_for(
        fcis.clone(),
        "db",
        T,
        "db Online",
        online_on(nodes[0].clone()),
    )
    .await;
    let app = wait_for(
        fcis.clone(),
        "app",
        T,
        "app Online",
        online_on(nodes[0].clone()),
    )
    .await;
    let (db_online, app_created) = (
        move_to(&db, &nodes[0]).online.unwrap().0,
        move_to(&app, &nodes[0]).pod_created.unwrap().0,
    );
    assert!(
        app_created >= db_online,
        "app's pod created at {app_created}, before db was online at {db_online}"
    );

    // Their node dies: both fail over, and the application's pod is created only once the
    // database is Online again.
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let db = wait_for(
        fcis.clone(),
        "db",
        T,
        "db Online on node 1",
        online_on(nodes[1].clone()),
    )
    .await;
    let app = wait_for(
        fcis.clone(),
        "app",
        T,
        "app Online on node 1",
        online_on(nodes[1].clone()),
    )
    .await;
    let (db_online, app_created) = (
        move_to(&db, &nodes[1]).online.unwrap().0,
        move_to(&app, &nodes[1]).pod_created.unwrap().0,
    );
    eprintln!("failover: db online at {db_online}, app's pod created at {app_created}");
    assert!(
        app_created >= db_online,
        "app's pod created at {app_created}, before db was online again at {db_online}"
    );
}

#[tokio::test]
async fn a_dependency_cycle_holds_its_instances_and_says_so() {
    let ns = TestNamespace::new("deps-cycle").await;
    let client = ns.client.clone();
    let cluster = format!("dc{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&client, &cluster, 3, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "r1", false);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let pp = PostParams::default();
    fcis.create(&pp, &with_deps("x", &cluster, &nodes, &["y"]))
        .await
        .unwrap();
    fcis.create(&pp, &with_deps("y", &cluster, &nodes, &["x"]))
        .await
        .unwrap();
    for (name, path) in [("x", "x -> y -> x"), ("y", "y -> x -> y")] {
        let held = wait_for(
            fcis.clone(),
            name,
            T,
            "held by the cycle",
            reason_is(reason::DEPENDENCY_CYCLE),
        )
        .await;
        let message = online_message(&held).unwrap();
        assert!(message.contains(path), "{message}");
    }
    // Broken: y depends on nothing now; both start, y first.
    fcis.replace("y", &pp, &{
        let mut y = fcis.get("y").await.unwrap();
        y.spec.depends_on.clear();
        y
    })
    .await
    .unwrap();
    wait_for(
        fcis.clone(),
        "y",
        T,
        "y Online",
        online_on(nodes[0].clone()),
    )
    .await;
    wait_for(
        fcis.clone(),
        "x",
        T,
        "x Online",
        online_on(nodes[0].clone()),
    )
    .await;
}
