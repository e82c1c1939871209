//! Unit tests of the judgement, on observations made up in order.

use super::moves::move_source_in_note;
use super::*;

const CONTROLLER: &str = "system:serviceaccount:kube-failover:kube-failover";

struct Feed {
    c: Checker,
    t0: Instant,
    wall0: jiff::Timestamp,
}

impl Feed {
    fn new() -> Self {
        let t0 = Instant::now();
        Self {
            c: Checker::new(CheckerConfig::new(CONTROLLER), t0),
            t0,
            wall0: jiff::Timestamp::now(),
        }
    }

    fn at(&mut self, secs: f64, what: Observed) -> Vec<Violation> {
        let d = Duration::from_secs_f64(secs);
        self.c.observe(Observation {
            at: self.t0 + d,
            wall: self.wall0 + jiff::SignedDuration::try_from(d).unwrap(),
            fresh: true,
            what,
        })
    }

    fn wall(&self, secs: f64) -> jiff::Timestamp {
        self.wall0 + jiff::SignedDuration::from_secs_f64(secs)
    }
}

fn node(name: &str, fenced: bool) -> Node {
    let taints = if fenced {
        serde_json::json!([{"key": OUT_OF_SERVICE_TAINT, "value": "nodeshutdown", "effect": "NoExecute"}])
    } else {
        serde_json::json!([])
    };
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {"taints": taints}
    }))
    .unwrap()
}

fn pod(name: &str, instance: &str, node: &str, deleting: bool) -> Pod {
    let mut meta = serde_json::json!({
        "name": name, "namespace": "chaos", "uid": format!("uid-{name}"),
        "labels": {INSTANCE_LABEL: instance}
    });
    if deleting {
        meta["deletionTimestamp"] = serde_json::json!("2026-01-01T00:00:00Z");
    }
    serde_json::from_value(serde_json::json!({
        "metadata": meta,
        "spec": {"nodeName": node, "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running"}
    }))
    .unwrap()
}

fn nodes(f: &mut Feed, fenced: &[&str]) {
    for n in ["a", "b", "c"] {
        f.at(
            0.0,
            Observed::Node(Change::Applied(node(n, fenced.contains(&n)))),
        );
    }
}

#[test]
fn two_pods_of_one_instance_on_two_unfenced_nodes_is_a_violation() {
    let mut f = Feed::new();
    nodes(&mut f, &[]);
    assert!(
        f.at(
            1.0,
            Observed::Pod(Change::Applied(pod("db-1", "db", "a", false)))
        )
        .is_empty()
    );
    let v = f.at(
        2.0,
        Observed::Pod(Change::Applied(pod("db-2", "db", "b", false))),
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].invariant, "two pods of one instance on two nodes");
    assert!(
        v[0].message.contains("db-1 on a") && v[0].message.contains("db-2 on b"),
        "{}",
        v[0].message
    );
    // Still the same state: reported once.
    assert!(
        f.at(
            3.0,
            Observed::Pod(Change::Applied(pod("db-2", "db", "b", false)))
        )
        .is_empty()
    );
}

#[test]
fn a_pod_being_removed_from_a_fenced_node_is_excused_and_only_that() {
    let mut f = Feed::new();
    nodes(&mut f, &["a"]);
    f.at(
        1.0,
        Observed::Pod(Change::Applied(pod("db-1", "db", "a", true))),
    );
    assert!(
        f.at(
            2.0,
            Observed::Pod(Change::Applied(pod("db-2", "db", "b", false)))
        )
        .is_empty()
    );
    // Fenced but not being removed: no excuse.
    let mut f = Feed::new();
    nodes(&mut f, &["a"]);
    f.at(
        1.0,
        Observed::Pod(Change::Applied(pod("db-1", "db", "a", false))),
    );
    assert_eq!(
        f.at(
            2.0,
            Observed::Pod(Change::Applied(pod("db-2", "db", "b", false)))
        )
        .len(),
        1
    );
    // Being removed but not fenced: no excuse.
    let mut f = Feed::new();
    nodes(&mut f, &[]);
    f.at(
        1.0,
        Observed::Pod(Change::Applied(pod("db-1", "db", "a", true))),
    );
    assert_eq!(
        f.at(
            2.0,
            Observed::Pod(Change::Applied(pod("db-2", "db", "b", false)))
        )
        .len(),
        1
    );
    // Two instances on two nodes are fine.
    let mut f = Feed::new();
    nodes(&mut f, &[]);
    f.at(
        1.0,
        Observed::Pod(Change::Applied(pod("db-1", "db", "a", false))),
    );
    assert!(
        f.at(
            2.0,
            Observed::Pod(Change::Applied(pod("web-1", "web", "b", false)))
        )
        .is_empty()
    );
}

#[test]
fn an_endpoint_slice_with_two_addresses_is_a_violation() {
    let mut f = Feed::new();
    let slice = |addrs: &[&str]| -> EndpointSlice {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db", "namespace": "chaos", "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "endpoints": addrs.iter().map(|a| serde_json::json!({"addresses": [a]})).collect::<Vec<_>>()
        }))
        .unwrap()
    };
    assert!(
        f.at(1.0, Observed::Slice(Change::Applied(slice(&["10.0.0.1"]))))
            .is_empty()
    );
    assert!(
        f.at(2.0, Observed::Slice(Change::Applied(slice(&[]))))
            .is_empty()
    );
    let v = f.at(
        3.0,
        Observed::Slice(Change::Applied(slice(&["10.0.0.1", "10.0.0.2"]))),
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].invariant, "an EndpointSlice lists two addresses");
}

#[test]
fn a_volume_attached_to_two_nodes_is_a_violation() {
    let mut f = Feed::new();
    let va = |name: &str, node: &str, attached: bool| -> VolumeAttachment {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "spec": {"attacher": "x", "nodeName": node, "source": {"persistentVolumeName": "pv-1"}},
            "status": {"attached": attached}
        }))
        .unwrap()
    };
    f.at(
        1.0,
        Observed::Attachment(Change::Applied(va("va-a", "a", true))),
    );
    assert!(
        f.at(
            2.0,
            Observed::Attachment(Change::Applied(va("va-b", "b", false)))
        )
        .is_empty()
    );
    let v = f.at(
        3.0,
        Observed::Attachment(Change::Applied(va("va-b", "b", true))),
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        f.at(
            4.0,
            Observed::Attachment(Change::Deleted(va("va-a", "a", true)))
        )
        .is_empty()
    );
}

fn node_write(f: &Feed, node: &str, at: f64, fenced: bool) -> Observed {
    Observed::Audit(AuditRecord {
        verb: "update".into(),
        resource: "nodes".into(),
        name: Some(node.into()),
        user: CONTROLLER.into(),
        code: Some(200),
        received: f.wall(at),
        stored_node_fenced: Some(fenced),
        ..Default::default()
    })
}

fn force_delete(f: &Feed, pod: &str, at: f64, user: &str) -> Observed {
    Observed::Audit(AuditRecord {
        verb: "delete".into(),
        resource: "pods".into(),
        namespace: Some("chaos".into()),
        name: Some(pod.into()),
        user: user.into(),
        code: Some(200),
        received: f.wall(at),
        grace_period: Some(0),
        precondition_uid: Some(format!("uid-{pod}")),
        ..Default::default()
    })
}

#[test]
fn a_force_delete_by_the_controller_on_an_unfenced_node_is_a_violation() {
    let mut f = Feed::new();
    nodes(&mut f, &[]);
    f.at(
        1.0,
        Observed::Pod(Change::Applied(pod("db-1", "db", "a", false))),
    );
    f.at(
        1.0,
        Observed::Pod(Change::Applied(pod("db-2", "db", "b", false))),
    );
    let fenced_a = node_write(&f, "a", 2.0, true);
    f.at(2.1, fenced_a);
    // On the fenced node: fine; by someone else on an unfenced one: not ours to judge.
    let d1 = force_delete(&f, "db-1", 3.0, CONTROLLER);
    let d2 = force_delete(&f, "db-2", 3.0, "kube-failover-admin");
    f.at(3.1, d1);
    f.at(3.1, d2);
    assert!(f.at(10.0, Observed::Note("later".into())).is_empty());
    // By the controller on the unfenced node b: judged once the log has settled.
    let d3 = force_delete(&f, "db-2", 11.0, CONTROLLER);
    assert!(
        f.at(11.1, d3).is_empty(),
        "not judged before the log settles"
    );
    let v = f.at(15.0, Observed::Note("later".into()));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].invariant, "a force delete on a node not fenced");
    // Unfenced again, then deleted: a violation too.
    let unfenced_a = node_write(&f, "a", 16.0, false);
    f.at(16.1, unfenced_a);
    let d4 = force_delete(&f, "db-1", 17.0, CONTROLLER);
    f.at(17.1, d4);
    assert_eq!(f.c.finish().len(), 1);
}

#[test]
fn a_taint_right_after_a_renewal_is_a_violation_and_after_a_silence_is_not() {
    let lease = |node: &str, renew: &str| -> Lease {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": node, "namespace": "kube-node-lease"},
            "spec": {"renewTime": renew, "leaseDurationSeconds": 4}
        }))
        .unwrap()
    };
    let mut f = Feed::new();
    nodes(&mut f, &[]);
    // The renewTime is minutes behind (a skewed clock): what counts is that it changed.
    f.at(
        1.0,
        Observed::Lease(Change::Applied(lease("a", "2020-01-01T00:00:00.000000Z"))),
    );
    f.at(
        2.0,
        Observed::Lease(Change::Applied(lease("a", "2020-01-01T00:00:01.000000Z"))),
    );
    assert!(
        f.at(3.0, Observed::Node(Change::Applied(node("a", true))))
            .is_empty(),
        "judged once the watches settled"
    );
    let v = f.at(6.0, Observed::Note("later".into()));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].invariant, "a live node fenced");
    // Node b: last renewal long before the taint.
    f.at(
        7.0,
        Observed::Lease(Change::Applied(lease("b", "2026-01-01T00:00:00.000000Z"))),
    );
    f.at(15.0, Observed::Node(Change::Applied(node("b", true))));
    assert!(f.c.finish().is_empty());
}

fn fci(owner: &str, mv: Option<serde_json::Value>, online: bool) -> FailoverClusterInstance {
    let mut status = serde_json::json!({
        "phase": if online { "Online" } else { "Moving" },
        "ownerNode": owner,
        "served": {"dnsName": "db.chaos.svc", "endpoint": "10.0.0.1"},
    });
    if let Some(m) = mv {
        status["move"] = m;
    }
    serde_json::from_value(serde_json::json!({
        "apiVersion": "kube-failover.io/v1alpha1", "kind": "FailoverClusterInstance",
        "metadata": {"name": "db", "namespace": "chaos"},
        "spec": {"clusterRef": "c", "networkName": {"name": "db", "ports": [{"name": "p", "port": 1}]},
                 "template": {}},
        "status": status
    }))
    .unwrap()
}

fn mv(from: &str, planned: bool, started: &str) -> serde_json::Value {
    serde_json::json!({"from": from, "to": "b", "reason": "NodeDown: LeaseStale", "planned": planned, "started": started})
}

fn fault(id: u64, kind: FaultKind, node: &str) -> Observed {
    Observed::FaultStarted(FaultRecord {
        id,
        kind,
        node: Some(node.into()),
        detail: String::new(),
    })
}

#[test]
fn a_move_needs_a_node_fault_of_the_right_kind_since_the_instance_was_online_there() {
    // No fault at all: a leader change, a restart or an API server restart alone.
    let mut f = Feed::new();
    f.at(
        1.0,
        Observed::Instance(Change::Applied(fci("a", None, true))),
    );
    f.at(
        2.0,
        Observed::FaultStarted(FaultRecord {
            id: 1,
            kind: FaultKind::ApiServerRestart,
            node: None,
            detail: String::new(),
        }),
    );
    let v = f.at(
        3.0,
        Observed::Instance(Change::Applied(fci(
            "a",
            Some(mv("a", false, "2026-01-01T00:00:00.000000Z")),
            false,
        ))),
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].invariant, "a move without a node fault");

    // A kill justifies a failover.
    let mut f = Feed::new();
    f.at(
        1.0,
        Observed::Instance(Change::Applied(fci("a", None, true))),
    );
    f.at(2.0, fault(1, FaultKind::NodeKill, "a"));
    assert!(
        f.at(
            9.0,
            Observed::Instance(Change::Applied(fci(
                "a",
                Some(mv("a", false, "2026-01-01T00:00:00.000000Z")),
                false
            )))
        )
        .is_empty()
    );

    // A skewed clock justifies nothing; NotReady justifies a planned move only.
    let mut f = Feed::new();
    f.at(
        1.0,
        Observed::Instance(Change::Applied(fci("a", None, true))),
    );
    f.at(2.0, fault(1, FaultKind::NodeSkew, "a"));
    assert_eq!(
        f.at(
            9.0,
            Observed::Instance(Change::Applied(fci(
                "a",
                Some(mv("a", false, "2026-01-01T00:00:00.000000Z")),
                false
            )))
        )
        .len(),
        1
    );
    let mut f = Feed::new();
    f.at(
        1.0,
        Observed::Instance(Change::Applied(fci("a", None, true))),
    );
    f.at(2.0, fault(1, FaultKind::NodeNotReady, "a"));
    assert!(
        f.at(
            9.0,
            Observed::Instance(Change::Applied(fci(
                "a",
                Some(mv("a", true, "2026-01-01T00:00:00.000000Z")),
                false
            )))
        )
        .is_empty()
    );
    // ... and the same move escalated to a failover (the node went silent) is not.
    assert_eq!(
        f.at(
            10.0,
            Observed::Instance(Change::Applied(fci(
                "a",
                Some(mv("a", false, "2026-01-01T00:00:00.000000Z")),
                false
            )))
        )
        .len(),
        1
    );

    // A fault healed long before the instance was last online there does not count.
    let mut f = Feed::new();
    f.at(1.0, fault(1, FaultKind::NodeKill, "a"));
    f.at(
        5.0,
        Observed::FaultEnded {
            id: 1,
            detail: String::new(),
        },
    );
    f.at(
        60.0,
        Observed::Instance(Change::Applied(fci("a", None, true))),
    );
    assert_eq!(
        f.at(
            70.0,
            Observed::Instance(Change::Applied(fci(
                "a",
                Some(mv("a", false, "2026-01-01T00:01:00.000000Z")),
                false
            )))
        )
        .len(),
        1
    );
}

#[test]
fn a_failover_event_from_a_node_without_a_fault_is_a_violation() {
    let event = |reason_: &str, note: &str, count: Option<i32>| -> Event {
        let mut e = serde_json::json!({
            "metadata": {"name": "db.1", "namespace": "chaos", "uid": "e1"},
            "eventTime": "2026-01-01T00:00:00.000000Z",
            "reason": reason_, "note": note,
            "regarding": {"kind": "FailoverClusterInstance", "namespace": "chaos", "name": "db"},
        });
        if let Some(c) = count {
            e["series"] =
                serde_json::json!({"count": c, "lastObservedTime": "2026-01-01T00:00:01.000000Z"});
        }
        serde_json::from_value(e).unwrap()
    };
    let mut f = Feed::new();
    f.at(
        1.0,
        Observed::Instance(Change::Applied(fci("a", None, true))),
    );
    f.at(2.0, fault(1, FaultKind::NodeCordon, "a"));
    assert!(
        f.at(
            3.0,
            Observed::Event(Change::Applied(event(
                reason::PLANNED_MOVE,
                "moving from a (Unschedulable) to b",
                None
            )))
        )
        .is_empty()
    );
    // A repeat of the same Event keeps its first note: counted, judged from the status.
    let v = f.at(
        4.0,
        Observed::Event(Change::Applied(event(
            reason::PLANNED_MOVE,
            "moving from c (Unschedulable) to b",
            Some(2),
        ))),
    );
    assert!(v.is_empty(), "{v:?}");
    let mut e = event(
        reason::FAILOVER_STARTED,
        "owner c is down (LeaseStale); failing over",
        None,
    );
    e.metadata.uid = Some("e2".into());
    let v = f.at(5.0, Observed::Event(Change::Applied(e)));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(f.c.tally.events.get(reason::FAILOVER_STARTED), Some(&1));
    assert_eq!(f.c.tally.events.get(reason::PLANNED_MOVE), Some(&2));
    assert_eq!(
        move_source_in_note("node-3 went silent during a graceful move; failing over, fenced")
            .as_deref(),
        Some("node-3")
    );
}

fn copy(pod: &str, node: &str) -> crate::simruntime::RunningCopy {
    crate::simruntime::RunningCopy {
        node: node.into(),
        pod: format!("chaos/{pod}"),
        uid: format!("uid-{pod}"),
        sandbox: format!("s-{pod}-{node}"),
    }
}

#[test]
fn two_copies_running_at_the_runtimes_are_a_violation_whatever_the_pods_say() {
    let mut f = Feed::new();
    nodes(&mut f, &["a"]);
    // The pod on a is being removed from a fenced node (excused as a pod object), but its
    // container still runs there: two copies run.
    f.at(
        1.0,
        Observed::Pod(Change::Applied(pod("db-1", "db", "a", true))),
    );
    f.at(
        1.0,
        Observed::Pod(Change::Applied(pod("db-2", "db", "b", false))),
    );
    let one = Copies::from([("chaos/db".to_string(), vec![copy("db-1", "a")])]);
    assert!(f.at(2.0, Observed::Copies(one)).is_empty());
    let two = Copies::from([(
        "chaos/db".to_string(),
        vec![copy("db-1", "a"), copy("db-2", "b")],
    )]);
    let v = f.at(3.0, Observed::Copies(two.clone()));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].invariant, "two copies of an instance running");
    assert!(
        v[0].message.contains("chaos/db-1 (uid-db-1) on a")
            && v[0].message.contains("node fenced: true"),
        "{}",
        v[0].message
    );
    // The same state, seen again (every second): one violation.
    assert!(f.at(4.0, Observed::Copies(two)).is_empty());
    assert_eq!(f.c.tally.most_copies_at_once, 2);
    assert_eq!(f.c.tally.copy_checks, 3);
    // Two instances, one copy each: fine.
    let mut f = Feed::new();
    let apart = Copies::from([
        ("chaos/db".to_string(), vec![copy("db-1", "a")]),
        ("chaos/web".to_string(), vec![copy("web-1", "a")]),
    ]);
    assert!(f.at(1.0, Observed::Copies(apart)).is_empty());
}

/// A Lease renewed `renew` (an instant of the feed's wall clock), of resourceVersion
/// `version`, saying the agent's word `word` if any.
fn lease_at(name: &str, renew: jiff::Timestamp, version: u64, word: Option<&str>) -> Lease {
    let mut l: Lease = serde_json::from_value(serde_json::json!({
        "metadata": {"name": name, "namespace": "kube-node-lease",
                     "resourceVersion": version.to_string()},
        "spec": {"renewTime": renew.to_string(), "leaseDurationSeconds": 4}
    }))
    .unwrap();
    if let Some(w) = word {
        l.annotations_mut()
            .insert(WORKLOADS_STOPPED_ANNOTATION.into(), w.into());
    }
    l
}

fn tainted(name: &str, version: u64) -> Observed {
    let mut n = node(name, true);
    n.metadata.resource_version = Some(version.to_string());
    Observed::Node(Change::Applied(n))
}

#[test]
fn a_taint_within_the_heartbeat_threshold_of_a_kubelet_renewal_is_a_violation() {
    let mut f = Feed::new();
    nodes(&mut f, &[]);
    let renewal = Observed::Lease(Change::Applied(lease_at("a", f.wall(2.0), 10, None)));
    f.at(2.0, renewal);
    // 5 s after: past the Lease's 4 s, within the 6 s threshold.
    assert!(f.at(7.0, tainted("a", 20)).is_empty());
    let v = f.at(10.0, Observed::Note("later".into()));
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].invariant, "a live node fenced");
    // 7 s after: fine.
    let mut f = Feed::new();
    nodes(&mut f, &[]);
    let renewal = Observed::Lease(Change::Applied(lease_at("a", f.wall(2.0), 10, None)));
    f.at(2.0, renewal);
    f.at(9.0, tainted("a", 20));
    assert!(f.c.finish().is_empty());
}

#[test]
fn a_renewal_written_after_the_taint_does_not_count_against_it_though_seen_first() {
    let mut f = Feed::new();
    nodes(&mut f, &[]);
    let old = Observed::Lease(Change::Applied(lease_at("a", f.wall(1.0), 10, None)));
    f.at(1.0, old);
    // The node is revived right after its taint, and the watcher's Lease watch is ahead of
    // its Node watch.
    let revived = Observed::Lease(Change::Applied(lease_at("a", f.wall(9.9), 30, None)));
    f.at(9.95, revived);
    f.at(10.0, tainted("a", 20));
    assert!(f.c.finish().is_empty());
}

#[test]
fn a_taint_while_the_agent_renews_needs_its_word_about_the_kubelets_last_renewal() {
    let agent = format!("{AGENT_LEASE_PREFIX}a");
    // The kubelet renews last at 1 s (version 5); its agent renews every second from 8 s,
    // its word (if any, about the kubelet renewal at `word_about` s) at 10 s in version
    // 12; the taint is written in version `taint_version`, seen at 11 s; judged once the
    // watches settled.
    let feed = |word_about: Option<f64>, taint_version: u64| {
        let mut f = Feed::new();
        nodes(&mut f, &[]);
        let kubelet = Observed::Lease(Change::Applied(lease_at("a", f.wall(1.0), 5, None)));
        f.at(1.0, kubelet);
        for (t, version) in [(8.0, 10), (9.0, 11), (10.0, 12)] {
            let word = word_about
                .filter(|_| version == 12)
                .map(|about| f.wall(about).to_string());
            let l = lease_at(&agent, f.wall(t), version, word.as_deref());
            f.at(t, Observed::Lease(Change::Applied(l)));
        }
        // The agent's next renewal drops the word (it was restarted, say): the word seen
        // still counts.
        let next = lease_at(&agent, f.wall(10.5), 13, None);
        f.at(10.5, Observed::Lease(Change::Applied(next)));
        let mut v = f.at(11.0, tainted("a", taint_version));
        assert!(v.is_empty(), "judged only once the watches settled: {v:?}");
        v.extend(f.at(15.0, Observed::Note("later".into())));
        v
    };
    let v = feed(None, 20);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        v[0].invariant,
        "a node fenced while its agent renews without its word"
    );
    // A word about the kubelet's last renewal: fine.
    assert!(feed(Some(1.0), 20).is_empty());
    // About an older one, it is no word.
    assert_eq!(feed(Some(0.5), 20).len(), 1);
    // Nor is one written after the taint, whichever the watcher saw first.
    assert_eq!(feed(Some(1.0), 12).len(), 1);
    // An agent silent for the threshold has fenced itself (or is counted on to have).
    let mut f = Feed::new();
    nodes(&mut f, &[]);
    let silent = Observed::Lease(Change::Applied(lease_at(&agent, f.wall(1.0), 3, None)));
    f.at(1.0, silent);
    f.at(8.0, tainted("a", 20));
    assert!(f.c.finish().is_empty());
}

#[test]
fn a_taint_on_a_silent_node_whose_containers_still_run_is_a_violation() {
    let feed = |stopped_before_taint: bool, healed_before_taint: bool| {
        let mut f = Feed::new();
        nodes(&mut f, &[]);
        let running = Copies::from([("chaos/db".to_string(), vec![copy("db-1", "a")])]);
        f.at(1.0, Observed::Copies(running.clone()));
        f.at(2.0, fault(1, FaultKind::KubeletDead, "a"));
        if stopped_before_taint {
            f.at(9.0, Observed::Copies(Copies::new()));
        }
        if healed_before_taint {
            let healed = Observed::FaultEnded {
                id: 1,
                detail: String::new(),
            };
            f.at(9.5, healed);
        }
        f.at(10.0, Observed::Node(Change::Applied(node("a", true))))
    };
    let v = feed(false, false);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(
        v[0].invariant,
        "a node fenced with instance containers running"
    );
    assert!(feed(true, false).is_empty(), "stopped by its agent first");
    assert!(
        feed(false, true).is_empty(),
        "a kubelet back may have started them since: not judged"
    );
}
