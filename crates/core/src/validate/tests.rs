//! The judgements, each on facts made up as a broken or healthy cluster would give them.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Service};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::version::Info;
use kube::ResourceExt;
use serde::Deserialize;

use super::*;
use crate::api::{FailoverCluster, FailoverClusterInstance, Phase};

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn lease(renew: &str, written: Option<&str>, duration: i32, holder: Option<&str>) -> Lease {
    serde_json::from_value(serde_json::json!({
        "metadata": {
            "name": "l",
            "managedFields": written.map(|w| vec![
                serde_json::json!({"manager": "other", "operation": "Update",
                    "time": "2026-01-01T00:00:00Z",
                    "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {}}}}),
                serde_json::json!({"manager": "kubelet", "operation": "Update", "time": w,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:renewTime": {}, "f:holderIdentity": {}}}}),
            ]).unwrap_or_default(),
        },
        "spec": {"renewTime": renew, "leaseDurationSeconds": duration, "holderIdentity": holder},
    }))
    .unwrap()
}

fn cluster(name: &str, spec: serde_json::Value, status: serde_json::Value) -> FailoverCluster {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverCluster",
        "metadata": {"name": name}, "spec": spec, "status": status,
    }))
    .unwrap()
}

fn node(name: &str, labels: serde_json::Value) -> Node {
    serde_json::from_value(serde_json::json!({"metadata": {"name": name, "labels": labels}}))
        .unwrap()
}

fn instance(spec: serde_json::Value) -> FailoverClusterInstance {
    let mut base = serde_json::json!({
        "clusterRef": "c1",
        "networkName": {"name": "db", "ports": [{"name": "sql", "port": 1433}]},
        "template": {"spec": {"containers": [{"name": "db", "image": "db"}]}},
    });
    for (k, v) in spec.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverClusterInstance",
        "metadata": {"name": "db", "namespace": "shop"}, "spec": base,
    }))
    .unwrap()
}

fn verdicts(checks: &[Check]) -> Vec<Verdict> {
    checks.iter().map(|c| c.verdict).collect()
}

#[test]
fn the_date_header_reads_as_a_timestamp() {
    assert_eq!(
        parse_http_date("Fri, 04 Dec 2026 16:40:17 GMT").unwrap(),
        ts("2026-12-04T16:40:17Z")
    );
}

#[test]
fn a_missing_crd_fails_and_a_changed_schema_warns() {
    let (_, generated) = crate::crd::all()
        .into_iter()
        .find(|(_, c)| c.name_any() == "failoverclusters.kube-failover.io")
        .unwrap();
    let c = judge_crd(&generated, None);
    assert_eq!(c.verdict, Verdict::Fail);
    assert!(
        c.fix
            .unwrap()
            .contains("kubectl apply --server-side -f crds/")
    );
    assert_eq!(
        judge_crd(&generated, Some(&generated)).verdict,
        Verdict::Pass
    );
    // The API server stores `nullable: false` as nothing.
    let mut stored = serde_json::to_value(&generated).unwrap();
    let text = stored.to_string().replace(r#""nullable":false,"#, "");
    assert!(
        text.len() < stored.to_string().len(),
        "the schema has a nullable: false"
    );
    stored = serde_json::from_str(&text).unwrap();
    let stored: CustomResourceDefinition = serde_json::from_value(stored).unwrap();
    assert_eq!(judge_crd(&generated, Some(&stored)).verdict, Verdict::Pass);
    let mut older = generated.clone();
    older.spec.versions[0].schema = None;
    let c = judge_crd(&generated, Some(&older));
    assert_eq!(c.verdict, Verdict::Warn);
    assert!(c.message.contains("schema"), "{}", c.message);
    let mut other = generated.clone();
    other.spec.versions[0].name = "v0".into();
    assert_eq!(judge_crd(&generated, Some(&other)).verdict, Verdict::Fail);
}

#[test]
fn the_leader_lease_must_be_held_and_renewed_within_its_duration() {
    let now = ts("2026-12-04T10:00:10Z");
    assert_eq!(judge_leader("kf", "l", None, now).verdict, Verdict::Fail);
    let fresh = lease(
        "2026-12-04T10:00:09.5Z",
        Some("2026-12-04T10:00:09Z"),
        6,
        Some("kf-0"),
    );
    let c = judge_leader("kf", "l", Some(&fresh), now);
    assert_eq!(c.verdict, Verdict::Pass, "{c:?}");
    assert!(c.message.contains("held by kf-0"));
    let expired = lease(
        "2026-12-04T10:00:01Z",
        Some("2026-12-04T10:00:01Z"),
        6,
        Some("kf-0"),
    );
    let c = judge_leader("kf", "l", Some(&expired), now);
    assert_eq!(c.verdict, Verdict::Fail);
    assert!(c.message.starts_with("expired"), "{}", c.message);
    let unheld = lease(
        "2026-12-04T10:00:09Z",
        Some("2026-12-04T10:00:09Z"),
        6,
        None,
    );
    assert_eq!(
        judge_leader("kf", "l", Some(&unheld), now).verdict,
        Verdict::Fail
    );
}

#[test]
fn ages_are_measured_on_the_servers_clock_and_skew_from_one_renewal() {
    // Written at 10:00:05 (server), the node said 10:00:05.3: no skew to speak of.
    let l = lease(
        "2026-12-04T10:00:05.3Z",
        Some("2026-12-04T10:00:05Z"),
        40,
        None,
    );
    assert_eq!(clock_offset(&l), None);
    let (age, server) = renewal_age(&l, ts("2026-12-04T10:00:08Z")).unwrap();
    assert!(server);
    assert_eq!(age, SignedDuration::from_secs(3));
    // The node's clock 3.5 s ahead: it wrote 10:00:08.8 at server time 10:00:05.x.
    let ahead = lease(
        "2026-12-04T10:00:08.8Z",
        Some("2026-12-04T10:00:05Z"),
        40,
        None,
    );
    assert_eq!(
        clock_offset(&ahead),
        Some(SignedDuration::from_millis(2_800))
    );
    // Behind by 4 s.
    let behind = lease(
        "2026-12-04T10:00:01.2Z",
        Some("2026-12-04T10:00:05Z"),
        40,
        None,
    );
    assert_eq!(
        clock_offset(&behind),
        Some(SignedDuration::from_millis(-3_800))
    );
    // Without managedFields, the renewer's own time is all there is.
    let bare = lease("2026-12-04T10:00:05Z", None, 40, None);
    assert_eq!(clock_offset(&bare), None);
    assert_eq!(
        renewal_age(&bare, ts("2026-12-04T10:00:08Z")).unwrap(),
        (SignedDuration::from_secs(3), false)
    );
}

#[test]
fn a_stale_member_lease_fails_and_a_skewed_clock_warns() {
    let c = cluster(
        "c1",
        serde_json::json!({"heartbeat": {"leaseStaleSeconds": 20}}),
        serde_json::json!({}),
    );
    let now = ts("2026-12-04T10:01:00Z");
    let fresh = lease(
        "2026-12-04T10:00:55.2Z",
        Some("2026-12-04T10:00:55Z"),
        40,
        None,
    );
    assert_eq!(
        verdicts(&judge_member_lease("n1", &c, Some(&fresh), now)),
        [Verdict::Pass]
    );
    let stale = lease(
        "2026-12-04T10:00:20Z",
        Some("2026-12-04T10:00:20Z"),
        40,
        None,
    );
    let checks = judge_member_lease("n1", &c, Some(&stale), now);
    assert_eq!(verdicts(&checks), [Verdict::Fail]);
    assert!(checks[0].message.contains("stale"), "{}", checks[0].message);
    assert_eq!(
        verdicts(&judge_member_lease("n1", &c, None, now)),
        [Verdict::Fail]
    );
    let skewed = lease(
        "2026-12-04T10:00:59.5Z",
        Some("2026-12-04T10:00:55Z"),
        40,
        None,
    );
    let checks = judge_member_lease("n1", &c, Some(&skewed), now);
    assert_eq!(verdicts(&checks), [Verdict::Pass, Verdict::Warn]);
    assert!(checks[1].message.contains("ahead"), "{}", checks[1].message);
    // An agent-sourced cluster judges the kubelet's Lease with at least 20 s.
    let agent = cluster(
        "c2",
        serde_json::json!({"heartbeat": {"leaseStaleSeconds": 3, "source": "Agent"}}),
        serde_json::json!({}),
    );
    let ten = lease(
        "2026-12-04T10:00:50Z",
        Some("2026-12-04T10:00:50Z"),
        40,
        None,
    );
    assert_eq!(
        verdicts(&judge_member_lease("n1", &agent, Some(&ten), now)),
        [Verdict::Pass]
    );
}

#[test]
fn quorum_below_fails_at_zero_margin_warns() {
    let q = |healthy, required| {
        cluster(
            "c1",
            serde_json::json!({}),
            serde_json::json!({"quorum": {"total": 3, "healthy": healthy, "required": required}}),
        )
    };
    assert_eq!(judge_quorum(&q(3, 2)).verdict, Verdict::Pass);
    assert_eq!(judge_quorum(&q(2, 2)).verdict, Verdict::Warn);
    let lost = judge_quorum(&q(1, 2));
    assert_eq!(lost.verdict, Verdict::Fail);
    assert!(lost.message.contains("1 short"), "{}", lost.message);
    let none = cluster("c1", serde_json::json!({}), serde_json::json!({}));
    assert_eq!(judge_quorum(&none).verdict, Verdict::Warn);
    // Two nodes and a witness not heard: no margin, and the witness is what to mend.
    let witness_gone = cluster(
        "c1",
        serde_json::json!({"quorum": {"witness": {"lease": "kube-failover-witness-c1"}}}),
        serde_json::json!({"quorum": {"total": 3, "healthy": 2, "required": 2, "witness": {
            "name": "Lease kube-failover-witness-c1", "heard": false,
            "reason": "Lease kube-failover-witness-c1 not renewed for 30s"}}}),
    );
    let c = judge_quorum(&witness_gone);
    assert_eq!(c.verdict, Verdict::Warn);
    assert!(
        c.message
            .contains("2 of 3 votes heard (witness Lease kube-failover-witness-c1: Lease kube-failover-witness-c1 not renewed for 30s)"),
        "{}",
        c.message
    );
    assert!(
        c.fix.as_deref().is_some_and(|r| r.contains("witness")),
        "{c:?}"
    );
}

#[test]
fn owners_must_exist_and_be_members() {
    let c = cluster(
        "c1",
        serde_json::json!({"nodeSelector": {"pool": "db"}, "allowedNamespaces": {"names": ["shop"]}}),
        serde_json::json!({}),
    );
    let nodes = vec![
        node("n1", serde_json::json!({"pool": "db"})),
        node("n2", serde_json::json!({"pool": "db"})),
        node("n3", serde_json::json!({"pool": "web"})),
    ];
    let labels = BTreeMap::new();
    let ok = instance(serde_json::json!({"owners": {"preferred": ["n1", "n2"]}}));
    assert_eq!(
        verdicts(&judge_owners(&ok, Some(&c), &nodes, Some(&labels))),
        [Verdict::Pass]
    );
    let bad = instance(serde_json::json!({"owners": {"preferred": ["n3", "n9"]}}));
    let checks = judge_owners(&bad, Some(&c), &nodes, Some(&labels));
    assert_eq!(verdicts(&checks), [Verdict::Fail, Verdict::Fail]);
    assert_eq!(
        render(&ValidateReport::new(checks[..1].to_vec()))
            .lines()
            .next()
            .unwrap(),
        "FAIL  instance shop/db: preferred owner n3 is not a member of cluster c1 — add it to \
         the cluster's nodes (labels matching its spec.nodeSelector) or fix spec.owners.preferred"
    );
    assert!(checks[1].message.contains("n9 does not exist"));
    let one = instance(serde_json::json!({"owners": {"possible": ["n1"]}}));
    assert_eq!(
        verdicts(&judge_owners(&one, Some(&c), &nodes, Some(&labels))),
        [Verdict::Warn]
    );
    assert_eq!(
        verdicts(&judge_owners(&ok, None, &nodes, None)),
        [Verdict::Fail]
    );
    let closed = cluster(
        "c1",
        serde_json::json!({"nodeSelector": {"pool": "db"}}),
        serde_json::json!({}),
    );
    let checks = judge_owners(&ok, Some(&closed), &nodes, Some(&labels));
    assert_eq!(verdicts(&checks), [Verdict::Fail]);
    assert!(checks[0].message.contains("does not allow namespace shop"));
}

fn class(spec: serde_json::Value) -> StorageClass {
    let mut base =
        serde_json::json!({"metadata": {"name": "sc"}, "provisioner": "ebs.csi.aws.com"});
    for (k, v) in spec.as_object().unwrap() {
        base[k] = v.clone();
    }
    serde_json::from_value(base).unwrap()
}

fn claim(mode: &str) -> PersistentVolumeClaim {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": "data"},
        "spec": {"accessModes": [mode], "storageClassName": "sc"},
    }))
    .unwrap()
}

#[test]
fn claims_must_be_able_to_follow_the_instance() {
    let fci = instance(serde_json::json!({"storage": {"claims": ["data"]}}));
    let base = ClaimFacts {
        claim: "data".into(),
        pvc: Some(claim("ReadWriteOnce")),
        class_name: Some("sc".into()),
        class: Some(class(serde_json::json!({}))),
        ..Default::default()
    };
    assert_eq!(verdicts(&judge_claim(&fci, &base, 3)), [Verdict::Pass]);
    // Missing claim.
    let missing = ClaimFacts {
        pvc: None,
        ..base.clone()
    };
    assert_eq!(verdicts(&judge_claim(&fci, &missing, 3)), [Verdict::Fail]);
    // Missing class.
    let no_class = ClaimFacts {
        class: None,
        ..base.clone()
    };
    assert_eq!(verdicts(&judge_claim(&fci, &no_class, 3)), [Verdict::Fail]);
    // A class pinned to one node, binding on first consumer.
    let pinned = ClaimFacts {
        class: Some(class(serde_json::json!({
            "volumeBindingMode": "WaitForFirstConsumer",
            "allowedTopologies": [{"matchLabelExpressions": [
                {"key": "kubernetes.io/hostname", "values": ["n1"]}]}],
        }))),
        ..base.clone()
    };
    let checks = judge_claim(&fci, &pinned, 3);
    assert_eq!(verdicts(&checks), [Verdict::Fail]);
    assert!(
        checks[0].message.contains("node n1 only"),
        "{}",
        checks[0].message
    );
    assert!(checks[0].message.contains("WaitForFirstConsumer"));
    // …is fine when that node is the only owner.
    assert_eq!(verdicts(&judge_claim(&fci, &pinned, 1)), [Verdict::Pass]);
    // A PV pinned to one node.
    let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pv1"},
        "spec": {"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "h"},
            "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n2"]}]}]}}},
    }))
    .unwrap();
    let checks = judge_claim(
        &fci,
        &ClaimFacts {
            pv: Some(pv),
            ..base.clone()
        },
        3,
    );
    assert_eq!(verdicts(&checks), [Verdict::Fail]);
    assert!(checks[0].message.contains("pinned to node n2"));
    // A driver that does not attach: fails a RWO claim, warns for a RWX one.
    let noattach: CSIDriver = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "ebs.csi.aws.com"}, "spec": {"attachRequired": false},
    }))
    .unwrap();
    let f = ClaimFacts {
        csi_driver: Some(noattach.clone()),
        ..base.clone()
    };
    let checks = judge_claim(&fci, &f, 3);
    assert_eq!(verdicts(&checks), [Verdict::Fail]);
    assert!(checks[0].message.contains("attachRequired=false"));
    let rwx = ClaimFacts {
        pvc: Some(claim("ReadWriteMany")),
        ..f
    };
    assert_eq!(verdicts(&judge_claim(&fci, &rwx, 3)), [Verdict::Warn]);
    // An unknown driver without a CSIDriver object.
    let unknown = ClaimFacts {
        class: Some(class(serde_json::json!({"provisioner": "x.example.com"}))),
        ..base.clone()
    };
    assert_eq!(verdicts(&judge_claim(&fci, &unknown, 3)), [Verdict::Warn]);
    // Local volumes.
    let local = ClaimFacts {
        class: Some(class(
            serde_json::json!({"provisioner": "kubernetes.io/no-provisioner"}),
        )),
        ..base
    };
    assert_eq!(verdicts(&judge_claim(&fci, &local, 3)), [Verdict::Fail]);
}

#[test]
fn virtual_ips_need_what_their_mode_needs() {
    let ext = instance(serde_json::json!({"virtualIPs": ["192.0.2.1"]}));
    let ok = VipFacts {
        external_ips: Some(Ok(())),
        ..Default::default()
    };
    assert_eq!(verdicts(&judge_vips(&ext, &ok)), [Verdict::Pass]);
    let refused = VipFacts {
        external_ips: Some(Err((true, "externalIPs not allowed".into()))),
        ..Default::default()
    };
    assert_eq!(verdicts(&judge_vips(&ext, &refused)), [Verdict::Fail]);
    let forbidden = VipFacts {
        external_ips: Some(Err((false, "cannot create resource".into()))),
        ..Default::default()
    };
    assert_eq!(verdicts(&judge_vips(&ext, &forbidden)), [Verdict::Warn]);
    assert!(judge_vips(&instance(serde_json::json!({})), &ok).is_empty());

    let agent = instance(serde_json::json!({"virtualIPs": ["192.0.2.1"], "vipMode": "Agent"}));
    let agents = |a: &[(&str, Option<bool>)]| VipFacts {
        agents: a.iter().map(|(n, f)| (n.to_string(), *f)).collect(),
        ..Default::default()
    };
    assert_eq!(
        verdicts(&judge_vips(
            &agent,
            &agents(&[("n1", Some(true)), ("n2", Some(true))])
        )),
        [Verdict::Pass]
    );
    assert_eq!(
        verdicts(&judge_vips(
            &agent,
            &agents(&[("n1", Some(true)), ("n2", None)])
        )),
        [Verdict::Warn]
    );
    assert_eq!(
        verdicts(&judge_vips(
            &agent,
            &agents(&[("n1", Some(false)), ("n2", None)])
        )),
        [Verdict::Fail]
    );

    let lb = instance(serde_json::json!({"virtualIPs": ["192.0.2.1"], "vipMode": "LoadBalancer"}));
    assert_eq!(
        verdicts(&judge_vips(&lb, &VipFacts::default())),
        [Verdict::Warn]
    );
    let svc = |ip: Option<&str>| -> Service {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db"}, "spec": {"type": "LoadBalancer"},
            "status": {"loadBalancer": {"ingress": ip.map(|i| vec![serde_json::json!({"ip": i})]).unwrap_or_default()}},
        }))
        .unwrap()
    };
    let with = |ip| VipFacts {
        service: Some(svc(ip)),
        ..Default::default()
    };
    assert_eq!(
        verdicts(&judge_vips(&lb, &with(Some("192.0.2.1")))),
        [Verdict::Pass]
    );
    assert_eq!(verdicts(&judge_vips(&lb, &with(None))), [Verdict::Warn]);
    let mut online = lb.clone();
    online.status = Some(crate::api::FailoverClusterInstanceStatus {
        phase: Phase::Online,
        ..Default::default()
    });
    assert_eq!(verdicts(&judge_vips(&online, &with(None))), [Verdict::Fail]);
}

#[test]
fn the_kubernetes_version_must_be_1_33_or_later() {
    let info = |major: &str, minor: &str| Info {
        major: major.into(),
        minor: minor.into(),
        git_version: format!("v{major}.{minor}.0"),
        ..Default::default()
    };
    assert_eq!(judge_version(&info("1", "33")).verdict, Verdict::Pass);
    assert_eq!(judge_version(&info("1", "34+")).verdict, Verdict::Pass);
    assert_eq!(judge_version(&info("1", "32")).verdict, Verdict::Fail);
    assert_eq!(judge_version(&info("1", "28")).verdict, Verdict::Fail);
    assert_eq!(judge_version(&info("", "")).verdict, Verdict::Warn);
}

#[test]
fn rbac_denials_are_named_and_an_unknown_account_warns_with_the_flag() {
    let ns = BTreeSet::from(["shop".to_string()]);
    let needed = needed_access(&ns, "kube-failover", "kube-failover-leader");
    let mut answers: Vec<(Access, bool)> = needed.into_iter().map(|a| (a, true)).collect();
    assert_eq!(judge_rbac(Ok("kf/kf"), Ok(&answers)).verdict, Verdict::Pass);
    let i = answers
        .iter()
        .position(|(a, _)| a.resource == "pods" && a.verb == "delete")
        .unwrap();
    answers[i].1 = false;
    let c = judge_rbac(Ok("kf/kf"), Ok(&answers));
    assert_eq!(c.verdict, Verdict::Fail);
    assert_eq!(c.message, "denied: delete pods in shop");
    let c = judge_rbac(Err("not found"), Ok(&[]));
    assert_eq!(c.verdict, Verdict::Warn);
    assert!(c.fix.unwrap().contains("--controller-service-account"));
    assert_eq!(
        judge_rbac(Ok("kf/kf"), Err("forbidden")).verdict,
        Verdict::Warn
    );
    assert_eq!(parse_service_account("kf/kf"), Some(("kf", "kf")));
    assert_eq!(parse_service_account("kf"), None);
}

/// The accesses checked are those the shipped RBAC grants the controller, no more, no
/// fewer.
#[test]
fn the_checked_accesses_are_the_shipped_rbac() {
    let manifest = include_str!("../../../../deploy/kube-failover.yaml");
    let mut shipped = BTreeSet::new();
    for doc in serde_yaml::Deserializer::from_str(manifest) {
        let v = serde_json::Value::deserialize(doc).unwrap();
        if !matches!(v["kind"].as_str(), Some("ClusterRole" | "Role")) {
            continue;
        }
        for rule in v["rules"].as_array().unwrap() {
            // A non-resource rule (/readyz) is no access to an object.
            let Some(groups) = rule["apiGroups"].as_array() else {
                continue;
            };
            for g in groups {
                for r in rule["resources"].as_array().unwrap() {
                    for verb in rule["verbs"].as_array().unwrap() {
                        shipped.insert(format!(
                            "{} {} {}",
                            g.as_str().unwrap(),
                            r.as_str().unwrap(),
                            verb.as_str().unwrap()
                        ));
                    }
                }
            }
        }
    }
    let checked: BTreeSet<String> = CONTROLLER_PERMISSIONS
        .iter()
        .flat_map(|(g, r, verbs, _)| verbs.iter().map(move |v| format!("{g} {r} {v}")))
        .collect();
    assert_eq!(checked, shipped);
}

/// A cluster `c1` with two pools (one for namespace `shop` only) and two zones (one for
/// namespaces labelled `team=db` only).
fn granting_cluster() -> FailoverCluster {
    cluster(
        "c1",
        serde_json::json!({
            "allowedNamespaces": {"selector": {}},
            "addressPools": [
                {"name": "shop-only", "cidrs": ["192.0.2.0/28"], "namespaces": {"names": ["shop"]}},
                {"name": "shared", "cidrs": ["198.51.100.0/24"]},
                {"name": "billing", "cidrs": ["203.0.113.0/24"], "namespaces": {"names": ["billing"]}},
            ],
            "dnsZones": [
                {"zone": "db.example.com", "namespaces": {"selector": {"matchLabels": {"team": "db"}}}},
                {"zone": "shared.example.com"},
            ],
        }),
        serde_json::json!({}),
    )
}

fn reserved_addresses() -> crate::rules::Reserved {
    crate::rules::Reserved {
        node_addresses: [("198.51.100.7".parse().unwrap(), "n1".to_string())].into(),
        service_cidrs: vec![("10.96.0.0/16".parse().unwrap(), "kubernetes".into())],
        pod_cidrs: vec![("10.244.1.0/24".parse().unwrap(), "n1".into())],
    }
}

/// The IPAddress claim on `address` whose parent is `parent` (`(group, resource, ns, name)`).
fn ip_claim(
    address: &str,
    parent: (&str, &str, &str, &str),
) -> k8s_openapi::api::networking::v1::IPAddress {
    let (group, resource, namespace, name) = parent;
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": address},
        "spec": {"parentRef": {"group": group, "resource": resource,
                               "namespace": namespace, "name": name}},
    }))
    .unwrap()
}

const FCI: &str = "failoverclusterinstances";

#[test]
fn the_clusters_own_addresses_are_read_from_nodes_and_service_cidrs() {
    let nodes: Vec<Node> = serde_json::from_value(serde_json::json!([
        {"metadata": {"name": "n1"},
         "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24", "fd00:1::/64"]},
         "status": {"addresses": [
             {"type": "InternalIP", "address": "10.0.0.1"},
             {"type": "Hostname", "address": "n1"},
             {"type": "InternalIP", "address": "fd00::1"}]}},
        // Only the older single field.
        {"metadata": {"name": "n2"}, "spec": {"podCIDR": "10.244.2.0/24"}},
    ]))
    .unwrap();
    let cidrs: Vec<k8s_openapi::api::networking::v1::ServiceCIDR> =
        serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["10.96.0.0/16", "fd00:96::/108"]}},
            {"metadata": {"name": "extra"}, "spec": {"cidrs": ["10.97.0.0/16"]}},
        ]))
        .unwrap();
    let r = crate::rules::reserved_from(&nodes, &cidrs);
    let node_addresses: Vec<(String, &str)> = r
        .node_addresses
        .iter()
        .map(|(ip, n)| (ip.to_string(), n.as_str()))
        .collect();
    assert_eq!(
        node_addresses,
        [("10.0.0.1".into(), "n1"), ("fd00::1".into(), "n1")],
        "the hostname is no address"
    );
    let pods: Vec<(String, &str)> = r
        .pod_cidrs
        .iter()
        .map(|(net, n)| (net.to_string(), n.as_str()))
        .collect();
    assert_eq!(
        pods,
        [
            ("10.244.1.0/24".into(), "n1"),
            ("fd00:1::/64".into(), "n1"),
            ("10.244.2.0/24".into(), "n2"),
        ]
    );
    let services: Vec<(String, &str)> = r
        .service_cidrs
        .iter()
        .map(|(net, n)| (net.to_string(), n.as_str()))
        .collect();
    assert_eq!(
        services,
        [
            ("10.96.0.0/16".into(), "kubernetes"),
            ("fd00:96::/108".into(), "kubernetes"),
            ("10.97.0.0/16".into(), "extra"),
        ]
    );
}

#[test]
fn a_pool_overlapping_the_clusters_own_addresses_warns_naming_both() {
    let r = reserved_addresses();
    let c = granting_cluster();
    // 198.51.100.7 is n1's address, inside pool shared.
    let check = judge_pools(&c, &r);
    assert_eq!(check.verdict, Verdict::Warn, "{check:?}");
    assert_eq!(check.check, "addressPools");
    assert_eq!(check.subject, "cluster c1 address pools");
    assert!(
        check
            .message
            .starts_with("pool shared overlaps address 198.51.100.7 of node n1:"),
        "{}",
        check.message
    );
    assert!(!check.message.contains("shop-only"), "{}", check.message);
    assert!(check.fix.unwrap().contains("spec.addressPools"));
    let services = cluster(
        "c2",
        serde_json::json!({"addressPools": [{"name": "wide", "cidrs": ["10.0.0.0/8"]}]}),
        serde_json::json!({}),
    );
    let check = judge_pools(&services, &r);
    assert_eq!(check.verdict, Verdict::Warn);
    assert!(
        check
            .message
            .contains("Service range 10.96.0.0/16 (ServiceCIDR kubernetes)"),
        "{}",
        check.message
    );
    assert!(
        check.message.contains("pod range 10.244.1.0/24 of node n1"),
        "{}",
        check.message
    );
    // Clear of them all.
    let clear = cluster(
        "c3",
        serde_json::json!({"addressPools": [{"name": "docs", "cidrs": ["192.0.2.0/24"]}]}),
        serde_json::json!({}),
    );
    let check = judge_pools(&clear, &r);
    assert_eq!(check.verdict, Verdict::Pass, "{check:?}");
    assert!(check.message.contains("none of its 1 pools"));
    let none = cluster("c4", serde_json::json!({}), serde_json::json!({}));
    let check = judge_pools(&none, &r);
    assert_eq!(check.verdict, Verdict::Pass);
    assert!(
        check.message.contains("no address pools"),
        "{}",
        check.message
    );
}

#[test]
fn a_virtual_ip_in_a_pool_of_its_namespace_passes_claimed_or_not() {
    let c = granting_cluster();
    let r = reserved_addresses();
    let labels = BTreeMap::new();
    let fci = instance(serde_json::json!({"virtualIPs": ["192.0.2.5", "198.51.100.20"]}));
    let own = ip_claim("192.0.2.5", ("kube-failover.io", FCI, "shop", "db"));
    let checks = judge_network_name(&fci, &c, &labels, &r, Ok(&[own]));
    assert_eq!(verdicts(&checks), [Verdict::Pass], "{checks:?}");
    assert_eq!(checks[0].check, "networkName");
    assert_eq!(
        checks[0].message,
        "granted to namespace shop by cluster c1: virtual IPs 192.0.2.5 (pool shop-only, \
         claimed for it), 198.51.100.20 (pool shared, not claimed yet: the controller claims \
         it as it serves it)"
    );
    // Nothing declared, nothing to say.
    assert!(
        judge_network_name(&instance(serde_json::json!({})), &c, &labels, &r, Ok(&[])).is_empty()
    );
}

#[test]
fn a_virtual_ip_outside_the_pools_its_namespace_may_use_fails_naming_them() {
    let c = granting_cluster();
    let r = reserved_addresses();
    let labels = BTreeMap::new();
    // billing's pool, and a range no pool holds.
    let fci =
        instance(serde_json::json!({"virtualIPs": ["203.0.113.9", "100.64.0.1", "192.0.2.1"]}));
    let checks = judge_network_name(&fci, &c, &labels, &r, Ok(&[]));
    assert_eq!(
        verdicts(&checks),
        [Verdict::Fail, Verdict::Fail],
        "{checks:?}"
    );
    assert_eq!(
        render(&ValidateReport::new(checks[..1].to_vec()))
            .lines()
            .next()
            .unwrap(),
        "FAIL  instance shop/db network name: virtual IP 203.0.113.9 lies in no address pool \
         of cluster c1 that namespace shop may use (it may use pools shop-only, shared); the \
         controller withholds it (condition NetworkName=False); the instance runs and fails \
         over without it — use an address from pools shop-only, shared, or have a cluster \
         administrator grant shop a pool that holds it (spec.addressPools)"
    );
    assert!(checks[1].message.starts_with("virtual IP 100.64.0.1 "));
    // A namespace granted no pool at all is told who can add one.
    let other = cluster(
        "c1",
        serde_json::json!({"addressPools": [
            {"name": "billing", "cidrs": ["203.0.113.0/24"], "namespaces": {"names": ["billing"]}}]}),
        serde_json::json!({}),
    );
    let checks = judge_network_name(&fci, &other, &labels, &r, Ok(&[]));
    assert_eq!(verdicts(&checks), [Verdict::Fail; 3]);
    assert!(
        checks[0].message.contains("the cluster grants it none"),
        "{}",
        checks[0].message
    );
    assert!(
        checks[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("a cluster administrator can add a pool granted to shop to the FailoverCluster's spec.addressPools")
    );
}

#[test]
fn a_reserved_or_malformed_virtual_ip_fails_saying_why() {
    let c = cluster(
        "c1",
        serde_json::json!({"addressPools": [{"name": "all", "cidrs": ["0.0.0.0/0"]}]}),
        serde_json::json!({}),
    );
    let r = reserved_addresses();
    let labels = BTreeMap::new();
    for (vip, why) in [
        ("198.51.100.7", "198.51.100.7 is an address of node n1"),
        (
            "10.96.0.10",
            "Service range 10.96.0.0/16 (ServiceCIDR kubernetes)",
        ),
        ("10.244.1.3", "pod range 10.244.1.0/24 of node n1"),
        ("127.0.0.1", "loopback"),
        ("db.local", "is not an IP address"),
    ] {
        let fci = instance(serde_json::json!({"virtualIPs": [vip]}));
        let checks = judge_network_name(&fci, &c, &labels, &r, Ok(&[]));
        assert_eq!(verdicts(&checks), [Verdict::Fail], "{vip}: {checks:?}");
        assert!(
            checks[0].message.contains(why),
            "{vip}: {}",
            checks[0].message
        );
        assert!(checks[0].message.starts_with(&format!("virtual IP {vip} ")));
    }
}

#[test]
fn a_virtual_ip_another_holds_warns_naming_the_holder() {
    let c = granting_cluster();
    let r = reserved_addresses();
    let labels = BTreeMap::new();
    let fci = instance(serde_json::json!({"virtualIPs": ["192.0.2.5", "2001:db8::0:10"]}));
    let c6 = cluster(
        "c1",
        serde_json::json!({"addressPools": [
            {"name": "v4", "cidrs": ["192.0.2.0/24"]}, {"name": "v6", "cidrs": ["2001:db8::/64"]}]}),
        serde_json::json!({}),
    );
    // Another instance's claim, and a Service's; the claim's name is the canonical text.
    let claims = [
        ip_claim("192.0.2.5", ("kube-failover.io", FCI, "billing", "db")),
        ip_claim("2001:db8::10", ("", "services", "web", "front")),
    ];
    let checks = judge_network_name(&fci, &c6, &labels, &r, Ok(&claims));
    assert_eq!(
        verdicts(&checks),
        [Verdict::Warn, Verdict::Warn],
        "{checks:?}"
    );
    assert!(
        checks[0].message.starts_with(
            "virtual IP 192.0.2.5 is held by instance billing/db (IPAddress 192.0.2.5)"
        ),
        "{}",
        checks[0].message
    );
    assert!(
        checks[1]
            .message
            .starts_with("virtual IP 2001:db8::0:10 is held by services web/front"),
        "{}",
        checks[1].message
    );
    // Same name in the same namespace of another resource is not this instance's claim.
    let lookalike = [ip_claim("192.0.2.5", ("other.io", FCI, "shop", "db"))];
    let fci4 = instance(serde_json::json!({"virtualIPs": ["192.0.2.5"]}));
    assert_eq!(
        verdicts(&judge_network_name(&fci4, &c, &labels, &r, Ok(&lookalike))),
        [Verdict::Warn]
    );
    // Unread claims: the rest is judged, who holds them is not.
    let checks = judge_network_name(
        &fci4,
        &c,
        &labels,
        &r,
        Err("listing IPAddresses: forbidden"),
    );
    assert_eq!(verdicts(&checks), [Verdict::Warn]);
    assert_eq!(
        checks[0].message,
        "not checked whether another holds 192.0.2.5: listing IPAddresses: forbidden"
    );
}

#[test]
fn an_external_hostname_outside_the_zones_its_namespace_may_use_fails_naming_them() {
    let c = granting_cluster();
    let r = reserved_addresses();
    let host = |h: &str| {
        instance(
            serde_json::json!({"networkName": {"name": "db", "externalHostname": h,
            "ports": [{"name": "sql", "port": 1433}]}}),
        )
    };
    let plain = BTreeMap::new();
    let team = BTreeMap::from([("team".to_string(), "db".to_string())]);
    // db.example.com is granted by label only.
    let checks = judge_network_name(&host("sql.db.example.com"), &c, &plain, &r, Ok(&[]));
    assert_eq!(verdicts(&checks), [Verdict::Fail], "{checks:?}");
    assert_eq!(
        checks[0].message,
        "external hostname sql.db.example.com lies in no DNS zone of cluster c1 that namespace \
         shop may use (it may use zone shared.example.com); the controller withholds it (condition \
         NetworkName=False); the instance runs and fails over without it"
    );
    assert!(
        checks[0]
            .fix
            .as_deref()
            .unwrap()
            .contains("shared.example.com")
    );
    let checks = judge_network_name(&host("sql.db.example.com"), &c, &team, &r, Ok(&[]));
    assert_eq!(verdicts(&checks), [Verdict::Pass], "{checks:?}");
    assert_eq!(
        checks[0].message,
        "granted to namespace shop by cluster c1: external hostname sql.db.example.com (zone \
         db.example.com)"
    );
    // No zone at all.
    let bare = cluster("c1", serde_json::json!({}), serde_json::json!({}));
    let checks = judge_network_name(&host("db.example.org"), &bare, &team, &r, Ok(&[]));
    assert_eq!(verdicts(&checks), [Verdict::Fail]);
    assert!(checks[0].message.contains("the cluster grants it none"));
    assert!(checks[0].fix.as_deref().unwrap().contains("spec.dnsZones"));
}

/// Facts of one cluster and one instance, as `validate` would gather them with every read
/// allowed.
fn facts_of(cluster: FailoverCluster, fci: FailoverClusterInstance) -> Facts {
    Facts {
        now: ts("2026-12-04T10:00:00Z"),
        crds: vec![],
        controller_namespace: "kf".into(),
        lease_name: "l".into(),
        leader: Ok(None),
        service_account: Err("not looked for".into()),
        reviews: Ok(vec![]),
        version: Err("not read".into()),
        nodes: Ok(vec![node("n1", serde_json::json!({}))]),
        service_cidrs: Ok(serde_json::from_value(serde_json::json!([
            {"metadata": {"name": "kubernetes"}, "spec": {"cidrs": ["192.0.2.0/28"]}}
        ]))
        .unwrap()),
        ip_addresses: Ok(vec![]),
        clusters: vec![ClusterFacts {
            cluster,
            member_leases: vec![],
            agent_leases: vec![],
        }],
        instances: vec![InstanceFacts {
            instance: fci,
            namespace_labels: Ok(BTreeMap::new()),
            claims: Ok(vec![]),
            vips: Ok(VipFacts::default()),
        }],
    }
}

fn of<'a>(checks: &'a [Check], check: &str) -> Vec<&'a Check> {
    checks.iter().filter(|c| c.check == check).collect()
}

#[test]
fn judge_reports_grants_with_the_service_ranges_and_says_what_it_could_not_read() {
    let c = granting_cluster();
    let fci = instance(serde_json::json!({"virtualIPs": ["192.0.2.5"]}));
    // The ServiceCIDR read makes 192.0.2.5 reserved and the pool shop-only overlap it.
    let checks = judge(&facts_of(c.clone(), fci.clone()));
    let pools = of(&checks, "addressPools");
    assert_eq!(pools.len(), 1);
    assert_eq!(pools[0].verdict, Verdict::Warn, "{pools:?}");
    assert!(
        pools[0]
            .message
            .contains("pool shop-only overlaps Service range 192.0.2.0/28")
    );
    let grant = of(&checks, "networkName");
    assert_eq!(grant.len(), 1);
    assert_eq!(grant[0].verdict, Verdict::Fail, "{grant:?}");
    assert!(
        grant[0].message.contains("ServiceCIDR kubernetes"),
        "{}",
        grant[0].message
    );

    // ServiceCIDRs unreadable: neither is judged, both say why.
    let mut f = facts_of(c.clone(), fci.clone());
    f.service_cidrs = Err("listing ServiceCIDRs: forbidden".into());
    let checks = judge(&f);
    for (check, subject) in [
        ("addressPools", "cluster c1 address pools"),
        ("networkName", "instance shop/db network name"),
    ] {
        let found = of(&checks, check);
        assert_eq!(found.len(), 1, "{check}: {found:?}");
        assert_eq!(found[0].verdict, Verdict::Warn);
        assert_eq!(found[0].subject, subject);
        assert_eq!(
            found[0].message,
            "not checked: listing ServiceCIDRs: forbidden"
        );
    }
    // …but a hostname needs none of the cluster's addresses.
    let named = instance(serde_json::json!({"networkName": {"name": "db",
        "externalHostname": "db.shared.example.com", "ports": [{"name": "sql", "port": 1433}]}}));
    let mut f = facts_of(c.clone(), named);
    f.service_cidrs = Err("listing ServiceCIDRs: forbidden".into());
    let grant = judge(&f);
    assert_eq!(
        of(&grant, "networkName")
            .iter()
            .map(|c| c.verdict)
            .collect::<Vec<_>>(),
        [Verdict::Pass]
    );

    // The namespace unreadable: its grants cannot be told.
    let mut f = facts_of(c, fci);
    f.instances[0].namespace_labels = Err("reading namespace shop: forbidden".into());
    let checks = judge(&f);
    let grant = of(&checks, "networkName");
    assert_eq!(grant.len(), 1);
    assert_eq!(grant[0].verdict, Verdict::Warn);
    assert_eq!(
        grant[0].message,
        "not checked: reading namespace shop: forbidden"
    );
}

#[test]
fn members_without_an_agent_warn_where_the_cluster_fences_by_itself() {
    use crate::validate::members::judge_agents;
    let now = ts("2026-12-04T10:01:00Z");
    let fresh = lease(
        "2026-12-04T10:00:59Z",
        Some("2026-12-04T10:00:59Z"),
        3,
        None,
    );
    let stale = lease(
        "2026-12-04T09:00:00Z",
        Some("2026-12-04T09:00:00Z"),
        3,
        None,
    );
    let auto = cluster("c1", serde_json::json!({}), serde_json::json!({}));
    let all = [
        ("n1".to_string(), Ok(Some(fresh.clone()))),
        ("n2".to_string(), Ok(Some(fresh.clone()))),
    ];
    assert_eq!(judge_agents(&auto, &all, now).verdict, Verdict::Pass);
    let one_missing = [
        ("n1".to_string(), Ok(Some(fresh.clone()))),
        ("n2".to_string(), Ok(None)),
    ];
    let c = judge_agents(&auto, &one_missing, now);
    assert_eq!(c.verdict, Verdict::Warn);
    assert!(
        c.message.contains("n2") && c.message.contains("powered off"),
        "{}",
        c.message
    );
    // An external fencer powers nodes off: no agent needed.
    let external = cluster(
        "c2",
        serde_json::json!({"fencing": {"mode": "External"}}),
        serde_json::json!({}),
    );
    assert_eq!(
        judge_agents(&external, &one_missing, now).verdict,
        Verdict::Pass
    );
    // A stale agent Lease is named.
    let down = [("n1".to_string(), Ok(Some(stale)))];
    let c = judge_agents(&auto, &down, now);
    assert_eq!(c.verdict, Verdict::Warn);
    assert!(c.message.contains("AgentDown"), "{}", c.message);
}

#[test]
fn a_claim_whose_volume_reaches_only_one_zone_is_reported_with_the_owners_it_cannot_follow_to() {
    let fci = instance(serde_json::json!({"storage": {"claims": ["data"]}}));
    let zoned: PersistentVolume = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pv-data"},
        "spec": {"nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": "topology.kubernetes.io/zone", "operator": "In", "values": ["b"]}]}]}}},
    }))
    .unwrap();
    let f = ClaimFacts {
        claim: "data".into(),
        pvc: Some(claim("ReadWriteOnce")),
        pv: Some(zoned),
        ..Default::default()
    };
    let node = |name: &str, zone: &str| -> Node {
        serde_json::from_value(serde_json::json!({"metadata": {"name": name,
            "labels": {"topology.kubernetes.io/zone": zone}}}))
        .unwrap()
    };
    let (a0, b0, b1) = (node("a0", "a"), node("b0", "b"), node("b1", "b"));
    let c = claims::judge_claim_reach(&fci, &f, &[&a0, &b0, &b1]).unwrap();
    assert_eq!(c.verdict, Verdict::Warn);
    assert!(
        c.message
            .contains("cannot be used on a0 (node affinity: topology.kubernetes.io/zone In [b])")
            && c.message.contains("among the 2 other"),
        "{}",
        c.message
    );
    let none = claims::judge_claim_reach(&fci, &f, &[&a0, &node("a1", "a")]).unwrap();
    assert_eq!(none.verdict, Verdict::Fail);
    assert!(claims::judge_claim_reach(&fci, &f, &[&b0, &b1]).is_none());
}

#[test]
fn resilience_is_the_controllers_word_warned_when_false_or_missing() {
    let with = |status: &str, message: &str| {
        cluster(
            "c1",
            serde_json::json!({}),
            serde_json::json!({"conditions": [{"type": "Resilient", "status": status,
                "reason": "x", "message": message, "lastTransitionTime": "2026-12-04T10:00:00Z"}]}),
        )
    };
    let ok = judge_resilience(&with("True", "every instance would have a place"));
    assert_eq!(ok.verdict, Verdict::Pass);
    let not = judge_resilience(&with("False", "if n1 fails, a/db is held"));
    assert_eq!(not.verdict, Verdict::Warn);
    assert!(not.message.contains("if n1 fails, a/db is held"));
    assert!(not.fix.as_deref().unwrap_or_default().contains("simulate"));
    let none = cluster("c1", serde_json::json!({}), serde_json::json!({}));
    assert_eq!(judge_resilience(&none).verdict, Verdict::Warn);
}
