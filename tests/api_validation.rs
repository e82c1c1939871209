//! The CRDs refuse invalid objects at admission, against the real API server: each invalid
//! object differs from one valid instance (or cluster) in a single field, is refused with
//! 422 Invalid, and the message names that field and says what is wrong with it.

#![allow(clippy::unwrap_used)]

use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, PostParams, Resource,
};
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance};
use kube_failover_lab::harness::TestNamespace;
use serde_json::{Value, json};

fn instances(ns: &TestNamespace) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kube-failover.io", "v1alpha1", "FailoverClusterInstance"),
        "failoverclusterinstances",
    );
    Api::namespaced_with(ns.client.clone(), &ns.name, &ar)
}

fn clusters(ns: &TestNamespace) -> Api<DynamicObject> {
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("kube-failover.io", "v1alpha1", "FailoverCluster"),
        "failoverclusters",
    );
    Api::all_with(ns.client.clone(), &ar)
}

/// The valid instance every case starts from.
fn valid_instance(name: &str) -> Value {
    json!({
        "apiVersion": "kube-failover.io/v1alpha1",
        "kind": "FailoverClusterInstance",
        "metadata": {"name": name},
        "spec": {
            "clusterRef": "prod",
            "networkName": {"name": "sql", "ports": [{"name": "tds", "port": 1433}]},
            "virtualIPs": ["192.0.2.10"],
            "template": {"spec": {"containers": [{"name": "db", "image": "postgres:18"}]}},
            "owners": {"preferred": ["node-a", "node-b"], "possible": ["node-a", "node-b", "node-c"]}
        }
    })
}

/// The valid cluster every cluster case starts from.
fn valid_cluster(name: &str) -> Value {
    json!({
        "apiVersion": "kube-failover.io/v1alpha1",
        "kind": "FailoverCluster",
        "metadata": {"name": name},
        "spec": {
            "nodeSelector": {"kube-failover.io/member": "true"},
            "allowedNamespaces": {"names": ["databases"], "selector": {"matchLabels": {"team": "db"}}},
            "heartbeat": {"leaseStaleSeconds": 20, "notReadySeconds": 10},
            "quorum": {"minHealthy": "51%"}
        }
    })
}

/// `base` with the value at the JSON pointer `path` set to `value`; the parent must exist.
fn with(mut base: Value, path: &str, value: Value) -> Value {
    let (parent, key) = path.rsplit_once('/').unwrap();
    base.pointer_mut(parent)
        .unwrap_or_else(|| panic!("{parent} is not in the base object"))
        .as_object_mut()
        .unwrap()
        .insert(key.to_owned(), value);
    base
}

async fn create(api: &Api<DynamicObject>, obj: &Value) -> Result<DynamicObject, kube::Error> {
    api.create(
        &PostParams::default(),
        &serde_json::from_value(obj.clone()).unwrap(),
    )
    .await
}

/// Checks that `result` is a 422 Invalid whose message contains every one of `needles`;
/// returns the message, or why the check failed.
fn refused<T: std::fmt::Debug>(
    result: Result<T, kube::Error>,
    needles: &[&str],
) -> Result<String, String> {
    match result {
        Ok(obj) => Err(format!("accepted: {obj:?}")),
        Err(kube::Error::Api(s)) if s.code == 422 && s.reason == "Invalid" => {
            let missing: Vec<&str> = needles
                .iter()
                .copied()
                .filter(|n| !s.message.contains(n))
                .collect();
            if missing.is_empty() {
                Ok(s.message)
            } else {
                Err(format!(
                    "message lacks {missing:?}: {:?}",
                    s.message.as_str()
                ))
            }
        }
        Err(e) => Err(format!("refused, but not as 422 Invalid: {e}")),
    }
}

/// Deletes the cluster-scoped objects `names`, those that exist.
async fn delete_clusters(api: &Api<DynamicObject>, names: &[String]) {
    for name in names {
        match api.delete(name, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => panic!("delete {name}: {e}"),
        }
    }
}

/// One invalid variant of a valid object.
struct Case {
    what: &'static str,
    obj: Value,
    /// What the message must contain: the field path and the gist of the rule.
    needles: &'static [&'static str],
}

/// Creates every case, which must each be refused; reports all the cases that were not.
async fn assert_all_refused(api: &Api<DynamicObject>, cases: Vec<Case>) {
    let mut failures = Vec::new();
    for case in cases {
        match refused(create(api, &case.obj).await, case.needles) {
            Ok(message) => eprintln!("{}: refused with {message:?}", case.what),
            Err(why) => failures.push(format!("{}: {why}", case.what)),
        }
    }
    assert!(
        failures.is_empty(),
        "cases not refused as expected:\n{}",
        failures.join("\n")
    );
}

/// Creates `obj`, which must be accepted.
async fn assert_accepted(api: &Api<DynamicObject>, what: &str, obj: &Value) -> DynamicObject {
    match create(api, obj).await {
        Ok(created) => created,
        Err(e) => panic!("{what} must be accepted, but: {e}"),
    }
}

#[tokio::test]
async fn virtual_ips_must_be_ip_addresses() {
    let ns = TestNamespace::new("val-vip").await;
    let api = instances(&ns);
    assert_accepted(&api, "the valid instance", &valid_instance("valid")).await;
    let accepted = assert_accepted(
        &api,
        "IPv4 and IPv6 virtual IPs",
        &with(
            valid_instance("dual-stack"),
            "/spec/virtualIPs",
            json!(["192.0.2.10", "2001:db8::10"]),
        ),
    )
    .await;
    assert_eq!(
        accepted.data["spec"]["virtualIPs"],
        json!(["192.0.2.10", "2001:db8::10"])
    );
    let needles = &["spec.virtualIPs", "must be a unicast IPv4 or IPv6 address"];
    assert_all_refused(
        &api,
        vec![
            Case {
                what: "octet out of range",
                obj: with(
                    valid_instance("octet"),
                    "/spec/virtualIPs",
                    json!(["10.0.0.300"]),
                ),
                needles,
            },
            Case {
                what: "not an IP at all",
                obj: with(
                    valid_instance("word"),
                    "/spec/virtualIPs",
                    json!(["not-an-ip"]),
                ),
                needles,
            },
            Case {
                what: "one bad IP after a good one",
                obj: with(
                    valid_instance("mixed"),
                    "/spec/virtualIPs",
                    json!(["2001:db8::10", "10.0.0.300"]),
                ),
                needles,
            },
        ]
        .into_iter()
        .chain(
            [
                ("loopback", "127.0.0.1"),
                ("link-local", "169.254.169.254"),
                ("multicast", "ff02::1"),
                ("unspecified", "0.0.0.0"),
                ("broadcast", "255.255.255.255"),
                ("upper-case", "2001:DB8::10"),
            ]
            .into_iter()
            .map(|(what, ip)| Case {
                what,
                obj: with(valid_instance(what), "/spec/virtualIPs", json!([ip])),
                needles,
            }),
        )
        .collect(),
    )
    .await;
}

#[tokio::test]
async fn network_name_must_be_a_dns_label() {
    let ns = TestNamespace::new("val-netname").await;
    let api = instances(&ns);
    assert_accepted(&api, "the valid instance", &valid_instance("valid")).await;
    let longest = "a".repeat(63);
    assert_accepted(
        &api,
        "a 63-character network name",
        &with(
            valid_instance("longest"),
            "/spec/networkName/name",
            json!(longest),
        ),
    )
    .await;
    let pattern = &["spec.networkName.name", "should match"];
    assert_all_refused(
        &api,
        vec![
            Case {
                what: "upper case and underscore",
                obj: with(
                    valid_instance("underscore"),
                    "/spec/networkName/name",
                    json!("Bad_Name"),
                ),
                needles: pattern,
            },
            Case {
                what: "leading hyphen",
                obj: with(
                    valid_instance("hyphen"),
                    "/spec/networkName/name",
                    json!("-x"),
                ),
                needles: pattern,
            },
            Case {
                what: "64 characters",
                obj: with(
                    valid_instance("too-long"),
                    "/spec/networkName/name",
                    json!("a".repeat(64)),
                ),
                needles: &["spec.networkName.name", "63"],
            },
        ],
    )
    .await;
}

#[tokio::test]
async fn thresholds_must_be_at_least_one() {
    let ns = TestNamespace::new("val-threshold").await;
    let api = instances(&ns);
    assert_accepted(&api, "the valid instance", &valid_instance("valid")).await;
    assert_accepted(
        &api,
        "thresholds of 1",
        &with(
            with(
                valid_instance("one"),
                "/spec/failover",
                json!({"threshold": 1}),
            ),
            "/spec/restart",
            json!({"threshold": 1}),
        ),
    )
    .await;
    assert_all_refused(
        &api,
        vec![
            Case {
                what: "failover.threshold 0",
                obj: with(
                    valid_instance("failover-zero"),
                    "/spec/failover",
                    json!({"threshold": 0}),
                ),
                needles: &["spec.failover.threshold", "greater than or equal to 1"],
            },
            Case {
                what: "restart.threshold 0",
                obj: with(
                    valid_instance("restart-zero"),
                    "/spec/restart",
                    json!({"threshold": 0}),
                ),
                needles: &["spec.restart.threshold", "greater than or equal to 1"],
            },
        ],
    )
    .await;

    let clusters = clusters(&ns);
    let name = format!("{}-valid", ns.name);
    assert_accepted(&clusters, "the valid cluster", &valid_cluster(&name)).await;
    let lease_one = format!("{}-lease-one", ns.name);
    assert_accepted(
        &clusters,
        "leaseStaleSeconds 1",
        &with(
            valid_cluster(&lease_one),
            "/spec/heartbeat/leaseStaleSeconds",
            json!(1),
        ),
    )
    .await;
    let lease_zero = format!("{}-lease-zero", ns.name);
    let refused_zero = refused(
        create(
            &clusters,
            &with(
                valid_cluster(&lease_zero),
                "/spec/heartbeat/leaseStaleSeconds",
                json!(0),
            ),
        )
        .await,
        &[
            "spec.heartbeat.leaseStaleSeconds",
            "greater than or equal to 1",
        ],
    );
    delete_clusters(&clusters, &[name, lease_one, lease_zero]).await;
    match refused_zero {
        Ok(message) => eprintln!("heartbeat.leaseStaleSeconds 0: refused with {message:?}"),
        Err(why) => panic!("heartbeat.leaseStaleSeconds 0: {why}"),
    }
}

#[tokio::test]
async fn owners_must_be_unique_and_preferred_must_be_possible() {
    let ns = TestNamespace::new("val-owners").await;
    let api = instances(&ns);
    assert_accepted(&api, "the valid instance", &valid_instance("valid")).await;
    assert_accepted(
        &api,
        "preferred owners with no possible list",
        &with(
            valid_instance("any-possible"),
            "/spec/owners",
            json!({"preferred": ["node-x", "node-y"]}),
        ),
    )
    .await;
    assert_all_refused(
        &api,
        vec![
            Case {
                what: "duplicate preferred owner",
                obj: with(
                    valid_instance("dup-preferred"),
                    "/spec/owners/preferred",
                    json!(["node-a", "node-b", "node-a"]),
                ),
                needles: &["spec.owners.preferred[2]", "Duplicate value", "node-a"],
            },
            Case {
                what: "duplicate possible owner",
                obj: with(
                    valid_instance("dup-possible"),
                    "/spec/owners/possible",
                    json!(["node-a", "node-b", "node-b", "node-c"]),
                ),
                needles: &["spec.owners.possible[2]", "Duplicate value", "node-b"],
            },
            Case {
                what: "preferred owner not among the possible ones",
                obj: with(
                    valid_instance("not-possible"),
                    "/spec/owners/preferred",
                    json!(["node-a", "node-z"]),
                ),
                needles: &[
                    "spec",
                    "every owners.preferred node must also be listed in owners.possible",
                ],
            },
        ],
    )
    .await;
}

#[tokio::test]
async fn cluster_ref_and_network_name_are_immutable() {
    let ns = TestNamespace::new("val-immutable").await;
    let api = instances(&ns);
    let typed: Api<FailoverClusterInstance> = Api::namespaced(ns.client.clone(), &ns.name);
    assert_accepted(&api, "the valid instance", &valid_instance("fci")).await;
    let original = typed.get("fci").await.unwrap();
    let mut failures = Vec::new();

    let mut moved = original.clone();
    moved.spec.cluster_ref = "other".into();
    match refused(
        typed.replace("fci", &PostParams::default(), &moved).await,
        &["spec", "clusterRef is immutable"],
    ) {
        Ok(message) => eprintln!("clusterRef changed: refused with {message:?}"),
        Err(why) => failures.push(format!("clusterRef changed: {why}")),
    }

    let mut renamed = original.clone();
    renamed.spec.network_name.name = "sql2".into();
    match refused(
        typed.replace("fci", &PostParams::default(), &renamed).await,
        &["spec", "networkName.name is immutable"],
    ) {
        Ok(message) => eprintln!("networkName.name changed: refused with {message:?}"),
        Err(why) => failures.push(format!("networkName.name changed: {why}")),
    }
    assert!(
        failures.is_empty(),
        "immutable fields changed without refusal:\n{}",
        failures.join("\n")
    );

    // Both refusals left the object as it was, so the original's resourceVersion still
    // holds: a change of a mutable field on it is accepted and stored.
    let mut reordered = original.clone();
    reordered.spec.owners.preferred.reverse();
    let replaced = typed
        .replace("fci", &PostParams::default(), &reordered)
        .await
        .expect("reordering owners.preferred is accepted");
    assert_eq!(replaced.spec.owners.preferred, ["node-b", "node-a"]);
    assert_eq!(replaced.spec.cluster_ref, "prod");
    assert_eq!(replaced.spec.network_name.name, "sql");
    assert!(
        replaced.meta().generation > original.meta().generation,
        "the spec change bumps the generation"
    );
}

#[tokio::test]
async fn failback_window_needs_hours() {
    let ns = TestNamespace::new("val-failback").await;
    let api = instances(&ns);
    assert_accepted(&api, "the valid instance", &valid_instance("valid")).await;
    assert_accepted(
        &api,
        "mode Window with both hours",
        &with(
            valid_instance("window"),
            "/spec/failback",
            json!({"mode": "Window", "windowStartHour": 1, "windowEndHour": 5}),
        ),
    )
    .await;
    let needles = &[
        "spec.failback",
        "windowStartHour and windowEndHour are required with mode Window",
    ];
    assert_all_refused(
        &api,
        vec![
            Case {
                what: "mode Window without hours",
                obj: with(
                    valid_instance("no-hours"),
                    "/spec/failback",
                    json!({"mode": "Window"}),
                ),
                needles,
            },
            Case {
                what: "mode Window without end hour",
                obj: with(
                    valid_instance("no-end"),
                    "/spec/failback",
                    json!({"mode": "Window", "windowStartHour": 1}),
                ),
                needles,
            },
            Case {
                what: "hours with mode Immediate",
                obj: with(
                    valid_instance("immediate-hours"),
                    "/spec/failback",
                    json!({"mode": "Immediate", "windowStartHour": 1, "windowEndHour": 5}),
                ),
                needles,
            },
        ],
    )
    .await;
}

#[tokio::test]
async fn quorum_min_healthy_is_a_count_or_a_percentage() {
    let ns = TestNamespace::new("val-quorum").await;
    let api = clusters(&ns);
    let typed: Api<FailoverCluster> = Api::all(ns.client.clone());
    let name = |case: &str| format!("{}-{case}", ns.name);
    let mut names = Vec::new();
    for (case, min_healthy) in [("count", json!(2)), ("percent", json!("51%"))] {
        let obj = with(
            valid_cluster(&name(case)),
            "/spec/quorum/minHealthy",
            min_healthy.clone(),
        );
        names.push(name(case));
        assert_accepted(&api, &format!("minHealthy {min_healthy}"), &obj).await;
        // The stored value reads back into the Rust type as sent.
        let stored = typed.get(&name(case)).await.unwrap();
        assert_eq!(
            serde_json::to_value(&stored.spec.quorum.min_healthy).unwrap(),
            min_healthy
        );
    }
    // A null is not stored (the controller could not read it) but replaced by the default.
    names.push(name("null"));
    assert_accepted(
        &api,
        "minHealthy null",
        &with(
            valid_cluster(&name("null")),
            "/spec/quorum/minHealthy",
            Value::Null,
        ),
    )
    .await;
    let stored = typed
        .get(&name("null"))
        .await
        .expect("a cluster created with minHealthy null reads back");
    assert_eq!(
        serde_json::to_value(&stored.spec.quorum.min_healthy).unwrap(),
        json!("51%")
    );

    let needles = &[
        "spec.quorum.minHealthy",
        "a count >= 0 or a percentage from 0% to 100%",
    ];
    let mut failures = Vec::new();
    for (case, min_healthy) in [
        ("over-100", json!("150%")),
        ("word", json!("abc")),
        ("negative", json!(-1)),
    ] {
        let obj = with(
            valid_cluster(&name(case)),
            "/spec/quorum/minHealthy",
            min_healthy.clone(),
        );
        names.push(name(case));
        match refused(create(&api, &obj).await, needles) {
            Ok(message) => eprintln!("minHealthy {min_healthy}: refused with {message:?}"),
            Err(why) => failures.push(format!("minHealthy {min_healthy}: {why}")),
        }
    }
    delete_clusters(&api, &names).await;
    assert!(
        failures.is_empty(),
        "cases not refused as expected:\n{}",
        failures.join("\n")
    );
}

#[tokio::test]
async fn a_witness_names_exactly_one_thing_a_lease_by_its_prefix_and_sites_are_whole() {
    let ns = TestNamespace::new("val-witness").await;
    let api = clusters(&ns);
    let name = |case: &str| format!("{}-{case}", ns.name);
    let witness =
        |case: &str, w: Value| with(valid_cluster(&name(case)), "/spec/quorum/witness", w);
    let mut names = Vec::new();
    for (case, w) in [
        ("node", json!({"node": "cp-1"})),
        ("lease", json!({"lease": "kube-failover-witness-zone-c"})),
        ("api", json!({"apiServer": true})),
    ] {
        names.push(name(case));
        assert_accepted(&api, &format!("witness {w}"), &witness(case, w.clone())).await;
    }
    names.push(name("non-voting"));
    assert_accepted(
        &api,
        "nonVotingNodes",
        &with(
            valid_cluster(&name("non-voting")),
            "/spec/quorum/nonVotingNodes",
            json!(["node-3"]),
        ),
    )
    .await;
    let one = &["spec.quorum.witness", "name exactly one of node"];
    let mut cases = vec![
        Case {
            what: "node and lease",
            obj: witness(
                "two",
                json!({"node": "cp-1", "lease": "kube-failover-witness-a"}),
            ),
            needles: one,
        },
        Case {
            what: "nothing named",
            obj: witness("none", json!({})),
            needles: one,
        },
        Case {
            what: "apiServer false alone",
            obj: witness("false", json!({"apiServer": false})),
            needles: one,
        },
        Case {
            what: "a node's Lease as the witness Lease",
            obj: witness("kubelet", json!({"lease": "node-1"})),
            needles: &["spec.quorum.witness.lease", "kube-failover-witness-"],
        },
        Case {
            what: "an agent's Lease as the witness Lease",
            obj: witness("agent", json!({"lease": "kube-failover-agent-node-1"})),
            needles: &["spec.quorum.witness.lease", "kube-failover-witness-"],
        },
        Case {
            what: "a non-voting node that is not a node name",
            obj: with(
                valid_cluster(&name("bad-non-voting")),
                "/spec/quorum/nonVotingNodes",
                json!(["Node 3"]),
            ),
            needles: &["spec.quorum.nonVotingNodes"],
        },
    ];
    cases.push(Case {
        what: "a cross-site threshold without the control plane's site",
        obj: with(
            valid_cluster(&name("cross")),
            "/spec/sites",
            json!({"crossSiteLeaseStaleSeconds": 40}),
        ),
        needles: &["spec.sites", "name the control plane's site too"],
    });
    names.push(name("sites"));
    assert_accepted(
        &api,
        "sites",
        &with(
            valid_cluster(&name("sites")),
            "/spec/sites",
            json!({"controlPlaneSite": "a", "crossSiteLeaseStaleSeconds": 40}),
        ),
    )
    .await;
    names.extend(
        [
            "two",
            "none",
            "false",
            "kubelet",
            "agent",
            "bad-non-voting",
            "cross",
        ]
        .map(name),
    );
    assert_all_refused(&api, cases).await;
    delete_clusters(&api, &names).await;
}

#[tokio::test]
async fn allowed_namespaces_must_be_namespace_names_and_a_well_formed_selector() {
    let ns = TestNamespace::new("val-tenants").await;
    let clusters = clusters(&ns);
    let bad_name = format!("{}-bad-name", ns.name);
    let bad_name_refused = refused(
        create(
            &clusters,
            &with(
                valid_cluster(&bad_name),
                "/spec/allowedNamespaces/names",
                json!(["Databases"]),
            ),
        )
        .await,
        &["spec.allowedNamespaces.names[0]", "should match"],
    );
    let bad_operator = format!("{}-bad-operator", ns.name);
    let bad_operator_refused = refused(
        create(
            &clusters,
            &with(
                valid_cluster(&bad_operator),
                "/spec/allowedNamespaces/selector",
                json!({"matchExpressions": [{"key": "team", "operator": "Equals", "values": ["db"]}]}),
            ),
        )
        .await,
        &["operator must be In, NotIn, Exists or DoesNotExist"],
    );
    let no_values = format!("{}-no-values", ns.name);
    let no_values_refused = refused(
        create(
            &clusters,
            &with(
                valid_cluster(&no_values),
                "/spec/allowedNamespaces/selector",
                json!({"matchExpressions": [{"key": "team", "operator": "In"}]}),
            ),
        )
        .await,
        &["In and NotIn need values"],
    );
    let every = format!("{}-every", ns.name);
    assert_accepted(
        &clusters,
        "selector {} (every namespace)",
        &with(
            valid_cluster(&every),
            "/spec/allowedNamespaces",
            json!({"selector": {}}),
        ),
    )
    .await;
    delete_clusters(&clusters, &[bad_name, bad_operator, no_values, every]).await;
    for (what, r) in [
        ("a namespace name in capitals", bad_name_refused),
        ("an unknown selector operator", bad_operator_refused),
        ("In without values", no_values_refused),
    ] {
        match r {
            Ok(message) => eprintln!("allowedNamespaces, {what}: refused with {message:?}"),
            Err(why) => panic!("allowedNamespaces, {what}: {why}"),
        }
    }
}
