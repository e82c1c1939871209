//! What a replica's /healthz (liveness) answers, on the real control plane: 200 while its
//! watches are alive and, as leader, its Lease renewed; a standby needs no renewal, so a
//! leader that lost its Lease stays healthy as a standby.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{Api, Patch, PatchParams};
use kube_failover_lab::harness::{Replica, TestNamespace, free_addr, http_get, wait_for};
use tokio::time::Instant;

const T: Duration = Duration::from_secs(90);
const LEASE: &str = "kube-failover-leader";

fn holder_is(who: &'static str) -> impl Fn(Option<&Lease>) -> bool {
    move |l| l.and_then(|l| l.spec.as_ref()?.holder_identity.as_deref()) == Some(who)
}

/// Polls `path` until `ok` holds of its answer (HTTP endpoints have no watch), bounded.
async fn await_http(
    addr: SocketAddr,
    path: &str,
    what: &str,
    ok: impl Fn(u16, &str) -> bool,
) -> (u16, String) {
    let deadline = Instant::now() + T;
    let mut last = None;
    loop {
        if let Ok((code, body)) = http_get(addr, path).await {
            if ok(code, &body) {
                return (code, body);
            }
            last = Some((code, body));
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {T:?}; {path} last answered {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn healthz_is_ok_for_the_leader_and_stays_ok_once_it_lost_the_lease() {
    let ns = TestNamespace::new("health").await;
    let addr = free_addr();
    let _a = Replica::start_serving(&ns.name, "a", true, Some(addr));
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    wait_for(leases.clone(), LEASE, T, "a leads", holder_is("a")).await;
    await_http(addr, "/readyz", "a ready as leader", |code, body| {
        code == 200 && body.contains("leader")
    })
    .await;
    let (code, body) = http_get(addr, "/healthz").await.unwrap();
    assert!(
        code == 200 && body.starts_with("ok: leader,"),
        "{code} {body}"
    );

    // The Lease taken away: another holder, renewed just now, for an hour. The replica's
    // next round finds it held (a renewal racing this patch fails on the resourceVersion).
    let now = MicroTime(jiff::Timestamp::now());
    let spec = LeaseSpec {
        holder_identity: Some("intruder".into()),
        lease_duration_seconds: Some(3600),
        acquire_time: Some(now.clone()),
        renew_time: Some(now),
        ..Default::default()
    };
    leases
        .patch(
            LEASE,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "spec": spec })),
        )
        .await
        .unwrap();
    await_http(addr, "/readyz", "a reports standby", |code, body| {
        code == 200 && body.contains("standby")
    })
    .await;
    let (code, body) = http_get(addr, "/healthz").await.unwrap();
    assert!(
        code == 200 && body.starts_with("ok: standby,"),
        "{code} {body}"
    );

    // Past a whole lease duration (3 s) since its last renewal, still healthy: a standby is
    // not held to renewing. Sampled over that span, as a probe would.
    let until = Instant::now() + Duration::from_secs(4);
    while Instant::now() < until {
        let (code, body) = http_get(addr, "/healthz").await.unwrap();
        assert!(
            code == 200 && body.starts_with("ok: standby,"),
            "{code} {body}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let lease = leases.get(LEASE).await.unwrap();
    assert!(holder_is("intruder")(Some(&lease)), "a took nothing back");
}
