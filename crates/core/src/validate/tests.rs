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
fn the_kubernetes_version_must_be_1_28_or_later() {
    let info = |major: &str, minor: &str| Info {
        major: major.into(),
        minor: minor.into(),
        git_version: format!("v{major}.{minor}.0"),
        ..Default::default()
    };
    assert_eq!(judge_version(&info("1", "28")).verdict, Verdict::Pass);
    assert_eq!(judge_version(&info("1", "30+")).verdict, Verdict::Pass);
    assert_eq!(judge_version(&info("1", "27")).verdict, Verdict::Fail);
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
