//! `kubectl failover validate`: what Test-Cluster checks before WSFC hosts a role, for
//! kube-failover: the CRDs, the controller and its rights, the Kubernetes version, the
//! members' heartbeats and clocks, each cluster's quorum, and whether each instance's owners,
//! claims and virtual IPs can follow it to another node.
//!
//! Everything is read first (`gather`), then judged by pure functions (`judge_*`), each
//! returning checks that say PASS, WARN or FAIL and what to do about it.

use std::collections::{BTreeMap, BTreeSet};
use std::process::ExitCode;

use anyhow::{Context, Result};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec, Pod,
    Service,
};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::version::Info;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use serde::Serialize;

use super::{Output, default_namespace, human_age};
use crate::api::{
    FailoverCluster, FailoverClusterInstance, HeartbeatSource, KUBELET_LEASE_STALE_FLOOR, Phase,
    VipMode, agent_lease_name,
};
use crate::controller::observe::{is_member, pinned_node};

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Instances of this namespace, and the clusters they use (default: the kubeconfig
    /// context's namespace).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Instances of every namespace, and every cluster.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// `json` prints the checks for scripts (`yaml` too); `table` and `wide` print one line
    /// per check.
    #[arg(short = 'o', long, value_enum, default_value_t)]
    pub output: Output,
    /// The namespace of the controller's leader Lease: its release namespace (the chart's
    /// `--namespace`; the controller's `POD_NAMESPACE`).
    #[arg(long, default_value = "kube-failover")]
    pub controller_namespace: String,
    /// The name of the leader Lease (the chart's `leaderElection.leaseName`).
    #[arg(long, default_value = "kube-failover-leader")]
    pub lease_name: String,
    /// The controller's ServiceAccount as `namespace/name`, whose rights are checked. By
    /// default found from the leader's pod, else from the controller's Deployment in
    /// `--controller-namespace`.
    #[arg(long, value_name = "NS/NAME")]
    pub controller_service_account: Option<String>,
}

/// PASS, WARN or FAIL; ordered by gravity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Verdict {
    Pass,
    Warn,
    Fail,
}

/// One finding: what was checked, the verdict, why, and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Which check: `crds`, `leader`, `rbac`, `version`, `heartbeats`, `quorum`, `owners`,
    /// `storage`, `virtualIPs`.
    pub check: &'static str,
    pub verdict: Verdict,
    /// What it is about: `instance shop/db`, `node n1 (cluster c1)`…
    pub subject: String,
    pub message: String,
    /// What to do, when it is not a pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

impl Check {
    fn new(check: &'static str, verdict: Verdict, subject: impl Into<String>) -> Self {
        Self {
            check,
            verdict,
            subject: subject.into(),
            message: String::new(),
            fix: None,
        }
    }
    fn pass(check: &'static str, subject: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            ..Self::new(check, Verdict::Pass, subject)
        }
    }
    fn warn(
        check: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            message: message.into(),
            fix: Some(fix.into()),
            ..Self::new(check, Verdict::Warn, subject)
        }
    }
    fn fail(
        check: &'static str,
        subject: impl Into<String>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            verdict: Verdict::Fail,
            ..Self::warn(check, subject, message, fix)
        }
    }
}

/// What `validate` reports, as `-o json|yaml` prints it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ValidateReport {
    pub checks: Vec<Check>,
    pub passed: usize,
    pub warnings: usize,
    pub failures: usize,
}

impl ValidateReport {
    pub fn new(checks: Vec<Check>) -> Self {
        let count = |v| checks.iter().filter(|c| c.verdict == v).count();
        Self {
            passed: count(Verdict::Pass),
            warnings: count(Verdict::Warn),
            failures: count(Verdict::Fail),
            checks,
        }
    }
}

/// One line per check, then the counts.
pub fn render(r: &ValidateReport) -> String {
    let mut out = String::new();
    for c in &r.checks {
        let verdict = match c.verdict {
            Verdict::Pass => "PASS",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        };
        out.push_str(&format!("{verdict}  {}: {}", c.subject, c.message));
        if let Some(fix) = &c.fix {
            out.push_str(&format!(" — {fix}"));
        }
        out.push('\n');
    }
    out.push_str(&format!(
        "\n{} passed, {} warnings, {} failed\n",
        r.passed, r.warnings, r.failures
    ));
    out
}

// ---------------------------------------------------------------------------------------
// Time: the API server's clock only.

/// Time resolution of what the API server tells of its clock: the `Date` header and
/// `managedFields[].time` are whole seconds, truncated.
const SECOND: SignedDuration = SignedDuration::from_secs(1);

/// The API server's time of the last write that changed the Lease's `spec.renewTime`: the
/// `time` of the managedFields entry that owns that field (whole seconds). `None` when no
/// entry owns it.
pub fn renewal_written(lease: &Lease) -> Option<Timestamp> {
    lease
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:spec")?.get("f:renewTime"))
                .is_some()
        })
        .filter_map(|m| m.time.as_ref().map(|t| t.0))
        .max()
}

/// How long ago the Lease was last renewed, on the API server's clock (`now` is its `Date`),
/// to within a second either way (both times are whole seconds, truncated); and whether
/// that is measured on the server's clock (else on the renewer's `renewTime`, for a Lease
/// whose managedFields say nothing).
fn renewal_age(lease: &Lease, now: Timestamp) -> Option<(SignedDuration, bool)> {
    if let Some(written) = renewal_written(lease) {
        return Some((now.duration_since(written).max(SignedDuration::ZERO), true));
    }
    let renewed = lease.spec.as_ref()?.renew_time.as_ref()?.0;
    Some((now.duration_since(renewed).max(SignedDuration::ZERO), false))
}

/// Whether an age measured by [`renewal_age`] is surely past `limit`: by more than the
/// second it may be off.
fn surely_past(age: SignedDuration, limit: SignedDuration) -> bool {
    age - SECOND > limit
}

/// The renewer's clock against the API server's, from one renewal: `renewTime` (the
/// renewer's clock, just before it wrote) against the server's time of that write (whole
/// seconds). `Some(d)`: ahead by at least `d` (negative: behind by about `-d`); `None`:
/// within the second the server's time resolves.
pub fn clock_offset(lease: &Lease) -> Option<SignedDuration> {
    let written = renewal_written(lease)?;
    let renewed = lease.spec.as_ref()?.renew_time.as_ref()?.0;
    let ahead = renewed.duration_since(written + SECOND);
    let behind = written.duration_since(renewed);
    if ahead > SignedDuration::ZERO {
        Some(ahead)
    } else if behind > SignedDuration::ZERO {
        Some(-behind)
    } else {
        None
    }
}

/// An age measured by [`renewal_age`], as people read it.
fn ago(age: SignedDuration) -> String {
    if age < SECOND {
        "less than a second ago".into()
    } else {
        format!("{} ago", human_age(age))
    }
}

fn secs(d: SignedDuration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------
// 1. CRDs

/// The stored CRD against the one this binary generates: every version it serves, with the
/// same schema, subresources and printer columns.
pub fn judge_crd(
    generated: &CustomResourceDefinition,
    stored: Option<&CustomResourceDefinition>,
) -> Check {
    let name = generated.name_any();
    let subject = format!("CRD {name}");
    let fix = "kubectl apply --server-side -f crds/ (from this release), or upgrade the chart";
    let Some(stored) = stored else {
        return Check::fail("crds", subject, "not installed", fix);
    };
    for want in &generated.spec.versions {
        let Some(have) = stored.spec.versions.iter().find(|v| v.name == want.name) else {
            return Check::fail(
                "crds",
                subject,
                format!("version {} is not served (an older CRD)", want.name),
                fix,
            );
        };
        if !have.served {
            return Check::fail(
                "crds",
                subject,
                format!("version {} is not served", want.name),
                fix,
            );
        }
        let differs = [
            (json(&have.schema) != json(&want.schema), "schema"),
            (
                json(&have.subresources) != json(&want.subresources),
                "subresources",
            ),
            (
                json(&have.additional_printer_columns) != json(&want.additional_printer_columns),
                "printer columns",
            ),
        ]
        .into_iter()
        .filter_map(|(d, what)| d.then_some(what))
        .collect::<Vec<_>>();
        if !differs.is_empty() {
            return Check::warn(
                "crds",
                subject,
                format!(
                    "the {} of version {} {} from what this plugin's release generates (an \
                     older or newer CRD)",
                    differs.join(", "),
                    want.name,
                    if differs.len() == 1 {
                        "differs"
                    } else {
                        "differ"
                    }
                ),
                format!("if the cluster's is older: {fix}"),
            );
        }
    }
    Check::pass("crds", subject, "installed, and current")
}

/// A value as JSON, to compare what the API server stored with what is generated: without
/// what the API server leaves out when it stores a CRD (Go's `omitempty`): a `false` flag
/// such as `nullable: false`, an empty list, a null.
fn json<T: Serialize>(v: &T) -> serde_json::Value {
    const FLAGS: [&str; 7] = [
        "nullable",
        "uniqueItems",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-int-or-string",
        "x-kubernetes-embedded-resource",
    ];
    fn tidy(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                map.retain(|k, v| {
                    !(v.is_null()
                        || v.as_array().is_some_and(Vec::is_empty)
                        || (FLAGS.contains(&k.as_str()) && v == &serde_json::Value::Bool(false)))
                });
                map.values_mut().for_each(tidy);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(tidy),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(v).unwrap_or_default();
    tidy(&mut v);
    v
}

// ---------------------------------------------------------------------------------------
// 2. Leader

pub fn judge_leader(namespace: &str, name: &str, lease: Option<&Lease>, now: Timestamp) -> Check {
    let subject = format!("controller leader Lease {namespace}/{name}");
    let start = &format!(
        "is the controller running? kubectl -n {namespace} get pods (or look elsewhere: \
         --controller-namespace, --lease-name)"
    );
    let Some(lease) = lease else {
        return Check::fail(
            "leader",
            subject,
            "absent: no controller replica has been elected",
            start,
        );
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let Some(holder) = spec.holder_identity.filter(|h| !h.is_empty()) else {
        return Check::fail("leader", subject, "held by no one: no leader", start);
    };
    let duration = SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(15).into());
    match renewal_age(lease, now) {
        Some((age, _)) if !surely_past(age, duration) => Check::pass(
            "leader",
            subject,
            format!(
                "held by {holder}, renewed {} (lease {})",
                ago(age),
                secs(duration)
            ),
        ),
        Some((age, _)) => Check::fail(
            "leader",
            subject,
            format!(
                "expired: {holder} last renewed it {} (lease {}); no leader acts",
                ago(age),
                secs(duration)
            ),
            format!("find out why {holder} stopped renewing (its logs); {start}"),
        ),
        None => Check::fail(
            "leader",
            subject,
            format!("held by {holder} but never renewed"),
            start,
        ),
    }
}

// ---------------------------------------------------------------------------------------
// 3. RBAC

/// Where a permission of the controller is needed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    /// In each namespace of instances.
    Instances,
    /// The namespace of each instance, by name (`namespaces` itself).
    InstanceNamespace,
    /// In `kube-node-lease`.
    NodeLeases,
    /// The leader Lease, by name, in the controller's namespace.
    LeaderLease,
    /// In the controller's namespace.
    Controller,
    /// In `default`, where Kubernetes keeps the Events of cluster-scoped objects.
    ClusterEvents,
}

/// What the controller needs: the rules of the chart's ClusterRole and Roles
/// (`charts/kube-failover/templates/rbac.yaml`, as rendered in `deploy/`).
pub const CONTROLLER_PERMISSIONS: &[(&str, &str, &[&str], Scope)] = &[
    (
        "kube-failover.io",
        "failoverclusters",
        &["get", "list", "watch"],
        Scope::Cluster,
    ),
    (
        "kube-failover.io",
        "failoverclusters/status",
        &["update"],
        Scope::Cluster,
    ),
    (
        "",
        "nodes",
        &["get", "list", "watch", "update"],
        Scope::Cluster,
    ),
    (
        "",
        "persistentvolumes",
        &["get", "list", "watch"],
        Scope::Cluster,
    ),
    (
        "storage.k8s.io",
        "volumeattachments",
        &["get", "list", "watch", "delete"],
        Scope::Cluster,
    ),
    (
        "",
        "namespaces",
        &["get", "list", "watch"],
        Scope::InstanceNamespace,
    ),
    (
        "kube-failover.io",
        "failoverclusterinstances",
        &["get", "list", "watch", "patch"],
        Scope::Instances,
    ),
    (
        "kube-failover.io",
        "failoverclusterinstances/status",
        &["update"],
        Scope::Instances,
    ),
    (
        "kube-failover.io",
        "failoverclusterinstances/finalizers",
        &["update"],
        Scope::Instances,
    ),
    (
        "",
        "pods",
        &["get", "list", "watch", "create", "delete"],
        Scope::Instances,
    ),
    (
        "",
        "services",
        &["get", "list", "watch", "create", "patch", "delete"],
        Scope::Instances,
    ),
    (
        "",
        "persistentvolumeclaims",
        &["get", "list", "watch", "create", "delete"],
        Scope::Instances,
    ),
    (
        "discovery.k8s.io",
        "endpointslices",
        &["get", "list", "watch", "create", "patch", "delete"],
        Scope::Instances,
    ),
    (
        "events.k8s.io",
        "events",
        &["create", "patch"],
        Scope::Instances,
    ),
    (
        "events.k8s.io",
        "events",
        &["create", "patch"],
        Scope::ClusterEvents,
    ),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "list", "watch"],
        Scope::NodeLeases,
    ),
    (
        "coordination.k8s.io",
        "leases",
        &["get", "update"],
        Scope::LeaderLease,
    ),
    (
        "coordination.k8s.io",
        "leases",
        &["create"],
        Scope::Controller,
    ),
];

/// One access review to make: the attributes, and how to name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub group: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub verb: String,
    pub namespace: Option<String>,
    pub name: Option<String>,
}

impl Access {
    fn describe(&self) -> String {
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(".{}", self.group)
        };
        let sub = self
            .subresource
            .as_ref()
            .map(|s| format!("/{s}"))
            .unwrap_or_default();
        let name = self
            .name
            .as_ref()
            .map(|n| format!(" {n}"))
            .unwrap_or_default();
        let place = match &self.namespace {
            Some(ns) => format!(" in {ns}"),
            None => String::new(),
        };
        format!("{} {}{group}{sub}{name}{place}", self.verb, self.resource)
    }
}

/// Every access the controller needs, for instances in `namespaces`.
pub fn needed_access(
    namespaces: &BTreeSet<String>,
    controller_namespace: &str,
    lease_name: &str,
) -> Vec<Access> {
    let mut out = Vec::new();
    for (group, resource, verbs, scope) in CONTROLLER_PERMISSIONS {
        let (resource, subresource) = match resource.split_once('/') {
            Some((r, s)) => (r, Some(s.to_string())),
            None => (*resource, None),
        };
        let places: Vec<(Option<String>, Option<String>)> = match scope {
            Scope::Cluster => vec![(None, None)],
            Scope::Instances => namespaces.iter().map(|n| (Some(n.clone()), None)).collect(),
            Scope::InstanceNamespace => namespaces
                .iter()
                .map(|n| (Some(n.clone()), Some(n.clone())))
                .collect(),
            Scope::NodeLeases => vec![(Some("kube-node-lease".into()), None)],
            Scope::LeaderLease => {
                vec![(Some(controller_namespace.into()), Some(lease_name.into()))]
            }
            Scope::Controller => vec![(Some(controller_namespace.into()), None)],
            Scope::ClusterEvents => vec![(Some("default".into()), None)],
        };
        for (namespace, name) in places {
            for verb in *verbs {
                out.push(Access {
                    group: group.to_string(),
                    resource: resource.to_string(),
                    subresource: subresource.clone(),
                    verb: verb.to_string(),
                    namespace: namespace.clone(),
                    name: name.clone(),
                });
            }
        }
    }
    out
}

/// What the reviews said: `Ok(allowed)` each, or the error of the first review the caller
/// could not make.
pub fn judge_rbac(
    service_account: Result<&str, &str>,
    reviews: Result<&[(Access, bool)], &str>,
) -> Check {
    let sa = match service_account {
        Ok(sa) => sa,
        Err(why) => {
            return Check::warn(
                "rbac",
                "controller RBAC",
                format!("not checked: the controller's ServiceAccount was not found ({why})"),
                "name it: --controller-service-account NS/NAME",
            );
        }
    };
    let subject = format!("controller RBAC of ServiceAccount {sa}");
    let reviews = match reviews {
        Ok(r) => r,
        Err(why) => {
            return Check::warn(
                "rbac",
                subject,
                format!("not checked: you may not create SubjectAccessReviews ({why})"),
                "run validate as someone who may create subjectaccessreviews.authorization.k8s.io",
            );
        }
    };
    let denied: Vec<String> = reviews
        .iter()
        .filter(|(_, allowed)| !allowed)
        .map(|(a, _)| a.describe())
        .collect();
    if denied.is_empty() {
        return Check::pass(
            "rbac",
            subject,
            format!(
                "all {} accesses the controller needs are allowed",
                reviews.len()
            ),
        );
    }
    Check::fail(
        "rbac",
        subject,
        format!("denied: {}", denied.join(", ")),
        "apply the chart's RBAC (charts/kube-failover/templates/rbac.yaml or deploy/kube-failover.yaml) for this ServiceAccount",
    )
}

/// `namespace/name` of a ServiceAccount.
pub fn parse_service_account(s: &str) -> Option<(&str, &str)> {
    let (ns, name) = s.split_once('/')?;
    (!ns.is_empty() && !name.is_empty() && !name.contains('/')).then_some((ns, name))
}

// ---------------------------------------------------------------------------------------
// 4. Version

/// The out-of-service taint (non-graceful node shutdown) is GA from 1.28.
pub fn judge_version(info: &Info) -> Check {
    let subject = "Kubernetes version";
    let number = |s: &str| {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
            .ok()
    };
    match (number(&info.major), number(&info.minor)) {
        (Some(major), Some(minor)) if (major, minor) >= (1, 28) => Check::pass(
            "version",
            subject,
            format!(
                "{} (the out-of-service taint that fencing uses is GA since 1.28)",
                info.git_version
            ),
        ),
        (Some(_), Some(_)) => Check::fail(
            "version",
            subject,
            format!(
                "{}: fencing needs the node.kubernetes.io/out-of-service taint, GA since 1.28",
                info.git_version
            ),
            "upgrade the cluster to 1.28 or later",
        ),
        _ => Check::warn(
            "version",
            subject,
            format!(
                "cannot read the version {}.{} ({})",
                info.major, info.minor, info.git_version
            ),
            "check that the API server is 1.28 or later",
        ),
    }
}

// ---------------------------------------------------------------------------------------
// 5. Heartbeats and clocks

/// The Lease of member `node` of `cluster`: renewed within the cluster's threshold (on the
/// API server's clock), and the node's clock within a second of the server's.
pub fn judge_member_lease(
    node: &str,
    cluster: &FailoverCluster,
    lease: Option<&Lease>,
    now: Timestamp,
) -> Vec<Check> {
    let subject = format!("member {node} (cluster {})", cluster.name_any());
    let hb = &cluster.spec.heartbeat;
    let threshold = match hb.source {
        HeartbeatSource::Kubelet => hb.lease_stale_seconds,
        HeartbeatSource::Agent => hb.lease_stale_seconds.max(KUBELET_LEASE_STALE_FLOOR),
    };
    let threshold = SignedDuration::from_secs(threshold.into());
    let Some(lease) = lease else {
        return vec![Check::fail(
            "heartbeats",
            subject,
            format!("no Lease kube-node-lease/{node}: its kubelet has never heartbeated"),
            "check the node's kubelet (systemctl status kubelet) or take the node out of the cluster",
        )];
    };
    let mut out = Vec::new();
    match renewal_age(lease, now) {
        Some((age, _)) if surely_past(age, threshold) => out.push(Check::fail(
            "heartbeats",
            subject.clone(),
            format!(
                "Lease kube-node-lease/{node} stale: last renewed {} (the cluster counts a \
                 member down after {})",
                ago(age),
                secs(threshold)
            ),
            "bring the node's kubelet back, or drain it / take it out of the cluster",
        )),
        Some((age, server)) => out.push(Check::pass(
            "heartbeats",
            subject.clone(),
            format!(
                "Lease renewed {}{}",
                ago(age),
                if server {
                    ""
                } else {
                    " (by its own renewTime)"
                }
            ),
        )),
        None => out.push(Check::fail(
            "heartbeats",
            subject.clone(),
            format!("Lease kube-node-lease/{node} never renewed"),
            "check the node's kubelet",
        )),
    }
    if let Some(offset) = clock_offset(lease).filter(|d| d.abs() > SECOND) {
        let side = if offset.is_positive() {
            format!("at least {} ahead of", secs(offset))
        } else {
            format!("about {} behind", secs(offset.abs()))
        };
        out.push(Check::warn(
            "heartbeats",
            format!("clock of {node}"),
            format!(
                "{side} the API server's (its Lease's renewTime against the server's time of \
                 that write); kube-failover never compares clocks, but logs, certificates and \
                 the workloads do"
            ),
            "synchronise the node's clock (chrony/NTP)",
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// 6. Quorum

pub fn judge_quorum(cluster: &FailoverCluster) -> Check {
    let subject = format!("cluster {}", cluster.name_any());
    let Some(q) = cluster.status.as_ref().and_then(|s| s.quorum.as_ref()) else {
        return Check::warn(
            "quorum",
            subject,
            "no quorum in its status: the controller has not computed it",
            "check that the controller runs (see the leader check)",
        );
    };
    let margin = i64::from(q.healthy) - i64::from(q.required);
    let counts = format!(
        "{} of {} members up, {} required",
        q.healthy, q.total, q.required
    );
    match margin {
        m if m < 0 => Check::fail(
            "quorum",
            subject,
            format!("quorum lost: {counts} ({} short): nothing fails over", -m),
            "bring members back up, or lower spec.quorum.minHealthy if fewer nodes are intended",
        ),
        0 => Check::warn(
            "quorum",
            subject,
            format!("{counts}: one more failure stops automatic failover"),
            "bring the down members back or add members",
        ),
        m => Check::pass("quorum", subject, format!("{counts}: {m} more may fail")),
    }
}

// ---------------------------------------------------------------------------------------
// 7. Owners

fn instance_key(i: &FailoverClusterInstance) -> String {
    format!("{}/{}", i.namespace().unwrap_or_default(), i.name_any())
}

/// The nodes that may own the instance: its possible owners, else every member.
fn eligible_owners(fci: &FailoverClusterInstance, members: &BTreeSet<String>) -> BTreeSet<String> {
    let possible = &fci.spec.owners.possible;
    if possible.is_empty() {
        members.clone()
    } else {
        possible
            .iter()
            .filter(|n| members.contains(*n))
            .cloned()
            .collect()
    }
}

/// Members of `cluster` among `nodes`.
pub fn members_of(cluster: &FailoverCluster, nodes: &[Node]) -> BTreeSet<String> {
    nodes
        .iter()
        .filter(|n| is_member(&cluster.spec.node_selector, n.labels()))
        .map(|n| n.name_any())
        .collect()
}

/// Each preferred and possible owner exists and is a member of the instance's cluster; the
/// cluster exists and allows the instance's namespace; more than one node may own it.
pub fn judge_owners(
    fci: &FailoverClusterInstance,
    cluster: Option<&FailoverCluster>,
    nodes: &[Node],
    namespace_labels: Option<&BTreeMap<String, String>>,
) -> Vec<Check> {
    let subject = format!("instance {}", instance_key(fci));
    let cref = &fci.spec.cluster_ref;
    let Some(cluster) = cluster else {
        return vec![Check::fail(
            "owners",
            subject,
            format!("its cluster {cref} does not exist"),
            "create the FailoverCluster or fix spec.clusterRef",
        )];
    };
    let mut out = Vec::new();
    let ns = fci.namespace().unwrap_or_default();
    if let Some(labels) = namespace_labels
        && !cluster.spec.allowed_namespaces.allows(&ns, labels)
    {
        out.push(Check::fail(
            "owners",
            subject.clone(),
            format!("cluster {cref} does not allow namespace {ns}"),
            format!("add {ns} to the cluster's spec.allowedNamespaces"),
        ));
    }
    let members = members_of(cluster, nodes);
    let exists: BTreeSet<String> = nodes.iter().map(|n| n.name_any()).collect();
    let owners = &fci.spec.owners;
    let lists = [
        ("preferred", &owners.preferred, "spec.owners.preferred"),
        ("possible", &owners.possible, "spec.owners.possible"),
    ];
    for (what, list, field) in lists {
        for node in list {
            if !exists.contains(node) {
                out.push(Check::fail(
                    "owners",
                    subject.clone(),
                    format!("{what} owner {node} does not exist (no such Node)"),
                    format!("join the node or fix {field}"),
                ));
            } else if !members.contains(node) {
                out.push(Check::fail(
                    "owners",
                    subject.clone(),
                    format!("{what} owner {node} is not a member of cluster {cref}"),
                    format!(
                        "add it to the cluster's nodes (labels matching its spec.nodeSelector) \
                         or fix {field}"
                    ),
                ));
            }
        }
    }
    let eligible = eligible_owners(fci, &members);
    match eligible.len() {
        0 => out.push(Check::fail(
            "owners",
            subject,
            format!("no member of cluster {cref} may own it: it can never run"),
            "fix spec.owners.possible or the cluster's nodes",
        )),
        1 => out.push(Check::warn(
            "owners",
            subject,
            format!(
                "only {} may own it: it has nowhere to fail over to",
                eligible.iter().next().map(String::as_str).unwrap_or("")
            ),
            "add possible owners (spec.owners.possible) or members to the cluster",
        )),
        n if out.is_empty() => out.push(Check::pass(
            "owners",
            subject,
            format!("its owners are members of cluster {cref}; {n} nodes may own it"),
        )),
        _ => {}
    }
    out
}

// ---------------------------------------------------------------------------------------
// 8. Storage

/// CSI drivers known to attach their volumes through VolumeAttachments (attachRequired):
/// block storage that one node at a time mounts.
pub const KNOWN_ATTACHING_DRIVERS: &[&str] = &[
    "ebs.csi.aws.com",
    "pd.csi.storage.gke.io",
    "disk.csi.azure.com",
    "cinder.csi.openstack.org",
    "csi.vsphere.vmware.com",
    "driver.longhorn.io",
    "rbd.csi.ceph.com",
    "dobs.csi.digitalocean.com",
    "csi.hetzner.cloud",
];

/// What one claim of an instance is made of, as read.
#[derive(Clone, Debug, Default)]
pub struct ClaimFacts {
    pub claim: String,
    pub from_template: bool,
    pub pvc: Option<PersistentVolumeClaim>,
    /// The template's claim spec, for a claim not made yet.
    pub template: Option<PersistentVolumeClaimSpec>,
    /// The StorageClass it uses, if any (`storageClassName`, else the default class for a
    /// claim not made yet), and whether it exists.
    pub class_name: Option<String>,
    pub class: Option<StorageClass>,
    pub pv: Option<PersistentVolume>,
    /// The CSIDriver object of its driver, when it has one.
    pub csi_driver: Option<CSIDriver>,
}

impl ClaimFacts {
    fn spec(&self) -> Option<&PersistentVolumeClaimSpec> {
        self.pvc
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .or(self.template.as_ref())
    }

    /// The CSI driver of the volume: the bound PV's, else the class's provisioner.
    pub fn driver(&self) -> Option<String> {
        if let Some(pv) = &self.pv {
            return pv
                .spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .map(|c| c.driver.clone());
        }
        self.class.as_ref().map(|c| c.provisioner.clone())
    }
}

/// The one hostname a list of `kubernetes.io/hostname` values pins to.
fn one_host<'a>(values: impl Iterator<Item = &'a String>) -> Option<String> {
    let v: BTreeSet<&String> = values.collect();
    (v.len() == 1)
        .then(|| v.into_iter().next().cloned())
        .flatten()
}

/// The node a StorageClass's allowedTopologies restricts its volumes to.
fn class_pinned(class: &StorageClass) -> Option<String> {
    one_host(
        class
            .allowed_topologies
            .iter()
            .flatten()
            .flat_map(|t| t.match_label_expressions.iter().flatten())
            .filter(|e| e.key == "kubernetes.io/hostname")
            .flat_map(|e| e.values.iter()),
    )
}

/// Whether a claim can follow the instance to another of its `owners` nodes.
pub fn judge_claim(fci: &FailoverClusterInstance, f: &ClaimFacts, owners: usize) -> Vec<Check> {
    let subject = format!("instance {} claim {}", instance_key(fci), f.claim);
    let mut out = Vec::new();
    if f.pvc.is_none() && !f.from_template {
        return vec![Check::fail(
            "storage",
            subject,
            "the PersistentVolumeClaim does not exist",
            "create it, or remove it from spec.storage.claims",
        )];
    }
    let spec = f.spec();
    let modes: Vec<String> = spec
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    let shared = modes
        .iter()
        .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany");
    let bound = f.pv.is_some();
    if let Some(name) = &f.class_name
        && f.class.is_none()
    {
        let (message, verdict) = if bound {
            (
                format!("StorageClass {name} does not exist (the volume is bound already)"),
                Verdict::Warn,
            )
        } else {
            (
                format!("StorageClass {name} does not exist: the claim cannot be provisioned"),
                Verdict::Fail,
            )
        };
        out.push(Check {
            verdict,
            ..Check::fail(
                "storage",
                subject.clone(),
                message,
                "create the StorageClass or change the claim's storageClassName",
            )
        });
    }
    let movable = owners > 1;
    let wffc = f
        .class
        .as_ref()
        .and_then(|c| c.volume_binding_mode.as_deref())
        == Some("WaitForFirstConsumer");
    if movable {
        if let Some(node) = f.pv.as_ref().and_then(pinned_node) {
            out.push(Check::fail(
                "storage",
                subject.clone(),
                format!(
                    "its volume {} is pinned to node {node} (PV nodeAffinity): it cannot follow \
                     the instance to its other {} possible owners",
                    f.pv.as_ref().map(|p| p.name_any()).unwrap_or_default(),
                    owners - 1
                ),
                format!(
                    "use storage every possible owner can attach, or make {node} the only \
                     possible owner"
                ),
            ));
        } else if let Some(pv) = f.pv.as_ref().and_then(|p| p.spec.as_ref())
            && (pv.local.is_some() || pv.host_path.is_some())
        {
            out.push(Check::fail(
                "storage",
                subject.clone(),
                "its volume is a node's local disk (local/hostPath): it cannot follow the \
                 instance to another node",
                "use network storage that every possible owner can attach",
            ));
        }
        if let Some(class) = &f.class {
            let name = class.name_any();
            if let Some(node) = class_pinned(class) {
                let binding = if wffc {
                    "; with volumeBindingMode WaitForFirstConsumer the claim waits for a pod, \
                     and a pod placed on any other owner stays Pending"
                } else {
                    ""
                };
                out.push(Check::fail(
                    "storage",
                    subject.clone(),
                    format!(
                        "StorageClass {name} provisions volumes on node {node} only \
                         (allowedTopologies){binding}: the claim cannot follow the instance"
                    ),
                    format!(
                        "use a class whose allowedTopologies cover every possible owner, or \
                         make {node} the only possible owner"
                    ),
                ));
            } else if class.provisioner == "kubernetes.io/no-provisioner" {
                out.push(Check::fail(
                    "storage",
                    subject.clone(),
                    format!(
                        "StorageClass {name} is for local volumes (kubernetes.io/no-provisioner): \
                         each is bound to one node"
                    ),
                    "use network storage that every possible owner can attach",
                ));
            }
        }
    }
    match (f.driver(), &f.csi_driver) {
        (Some(driver), Some(d)) if d.spec.attach_required == Some(false) => {
            let message = format!(
                "CSIDriver {driver} has attachRequired=false: no VolumeAttachment shows \
                 where the volume is attached, so a failover cannot wait for it to be \
                 detached from the failed node"
            );
            if shared {
                out.push(Check::warn(
                    "storage",
                    subject.clone(),
                    format!(
                        "{message} (a shared {} claim: safe if the storage is made for it)",
                        modes.join(",")
                    ),
                    "make sure two nodes may mount it at once",
                ));
            } else {
                out.push(Check::fail(
                    "storage",
                    subject.clone(),
                    message,
                    "use a driver that attaches (attachRequired: true), or shared storage with a ReadWriteMany claim",
                ));
            }
        }
        (Some(driver), None)
            if !driver.starts_with("kubernetes.io/")
                && !KNOWN_ATTACHING_DRIVERS.contains(&driver.as_str()) =>
        {
            out.push(Check::warn(
                "storage",
                subject.clone(),
                format!(
                    "no CSIDriver object for {driver}: Kubernetes then treats it as attaching, \
                     but a missing object usually means the driver is not installed"
                ),
                format!("install the CSI driver {driver}, or check its name"),
            ));
        }
        _ => {}
    }
    if out.is_empty() {
        let class = f
            .class_name
            .as_deref()
            .map(|c| format!("StorageClass {c}"))
            .unwrap_or_else(|| "no StorageClass".into());
        let driver = match (f.driver(), &f.csi_driver) {
            (Some(d), Some(_)) => format!(", CSI driver {d} attaches its volumes"),
            (Some(d), None) => format!(", driver {d}"),
            (None, _) => String::new(),
        };
        out.push(Check::pass(
            "storage",
            subject,
            format!("{class}{driver}; not bound to one node"),
        ));
    }
    out
}

// ---------------------------------------------------------------------------------------
// 9. Virtual IPs

/// What was read for an instance's virtual IPs.
#[derive(Clone, Debug, Default)]
pub struct VipFacts {
    /// `ExternalIPs`: the answer to a dry-run create of a Service with the VIPs as
    /// `externalIPs` in the instance's namespace: `Ok`, `Err((refused, message))` where
    /// `refused` is an admission refusal (else the caller may not ask).
    pub external_ips: Option<Result<(), (bool, String)>>,
    /// `LoadBalancer`: the instance's Service.
    pub service: Option<Service>,
    /// `Agent`: each eligible owner and whether its agent Lease is fresh (`None`: absent).
    pub agents: BTreeMap<String, Option<bool>>,
}

pub fn judge_vips(fci: &FailoverClusterInstance, f: &VipFacts) -> Vec<Check> {
    let subject = format!("instance {} virtual IPs", instance_key(fci));
    let vips = &fci.spec.virtual_ips;
    if vips.is_empty() {
        return vec![];
    }
    let list = vips.join(", ");
    match fci.spec.vip_mode {
        VipMode::ExternalIPs => match &f.external_ips {
            Some(Ok(())) => vec![Check::pass(
                "virtualIPs",
                subject,
                format!(
                    "mode ExternalIPs: a Service with externalIPs {list} is admitted (dry run); \
                     nothing in the cluster announces them, your network routes them to the owner"
                ),
            )],
            Some(Err((true, why))) => vec![Check::fail(
                "virtualIPs",
                subject,
                format!(
                    "mode ExternalIPs: the API server refuses a Service with externalIPs {list}: {why}"
                ),
                "use vipMode LoadBalancer (MetalLB, kube-vip) or Agent, or allow externalIPs (DenyServiceExternalIPs)",
            )],
            Some(Err((false, why))) => vec![Check::warn(
                "virtualIPs",
                subject,
                format!("mode ExternalIPs: not checked, a dry-run Service create failed: {why}"),
                "run validate as someone who may create Services in the instance's namespace",
            )],
            None => vec![],
        },
        VipMode::LoadBalancer => {
            let Some(svc) = &f.service else {
                return vec![Check::warn(
                    "virtualIPs",
                    subject,
                    "mode LoadBalancer: its Service does not exist yet",
                    "check that the controller runs and the instance is placed",
                )];
            };
            let ingress: BTreeSet<String> = svc
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|l| l.ingress.as_ref())
                .into_iter()
                .flatten()
                .filter_map(|i| i.ip.clone())
                .collect();
            let missing: Vec<&String> = vips.iter().filter(|v| !ingress.contains(*v)).collect();
            if missing.is_empty() {
                return vec![Check::pass(
                    "virtualIPs",
                    subject,
                    format!(
                        "mode LoadBalancer: {list} assigned to Service {}",
                        svc.name_any()
                    ),
                )];
            }
            let online = fci
                .status
                .as_ref()
                .is_some_and(|s| s.phase == Phase::Online);
            let message = format!(
                "mode LoadBalancer: no load balancer has assigned {} to Service {} \
                 (status.loadBalancer)",
                missing
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
                svc.name_any()
            );
            let fix = "run an announcer (MetalLB L2 or kube-vip) whose address pool holds the \
                       VIPs, or use vipMode Agent";
            vec![if online {
                Check::fail(
                    "virtualIPs",
                    subject,
                    format!("{message}: clients cannot reach it"),
                    fix,
                )
            } else {
                Check::warn("virtualIPs", subject, message, fix)
            }]
        }
        VipMode::Agent => {
            let without: Vec<&str> = f
                .agents
                .iter()
                .filter(|(_, fresh)| **fresh != Some(true))
                .map(|(n, _)| n.as_str())
                .collect();
            let fix = "run the node agent on every possible owner (helm --set agent.enabled=true, \
                       see docs/virtual-ips.md)";
            if f.agents.is_empty() || without.len() == f.agents.len() {
                vec![Check::fail(
                    "virtualIPs",
                    subject,
                    "mode Agent: no node agent heartbeats on any of its possible owners (no fresh \
                     kube-failover-agent-<node> Lease): the VIPs would never come up",
                    fix,
                )]
            } else if !without.is_empty() {
                vec![Check::warn(
                    "virtualIPs",
                    subject,
                    format!(
                        "mode Agent: no node agent heartbeats on {}: owned there, its VIPs would \
                         not come up",
                        without.join(", ")
                    ),
                    fix,
                )]
            } else {
                vec![Check::pass(
                    "virtualIPs",
                    subject,
                    format!(
                        "mode Agent: the node agent heartbeats on all {} possible owners",
                        f.agents.len()
                    ),
                )]
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// I/O: reading, then judging.

/// The API server's clock: the `Date` header of its answer to `GET /version`.
async fn server_time(client: &Client) -> Result<Timestamp> {
    let request = http::Request::get("/version")
        .body(kube::client::Body::from(Vec::new()))
        .context("a GET /version request")?;
    let response = client.send(request).await.context("GET /version")?;
    let date = response
        .headers()
        .get(http::header::DATE)
        .and_then(|d| d.to_str().ok())
        .context("the API server's answer has no Date header")?;
    parse_http_date(date)
}

/// An HTTP `Date` (`Fri, 04 Dec 2026 16:40:17 GMT`).
pub fn parse_http_date(date: &str) -> Result<Timestamp> {
    jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(date)
        .with_context(|| format!("reading the Date {date:?}"))
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// An API error as the API server put it (`nodes is forbidden: User … cannot list …`).
fn brief(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow::anyhow!("{}", s.message),
        e => e.into(),
    }
}

async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    match api.get(name).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(brief(e)),
    }
}

/// The controller's ServiceAccount: the one named, else the leader pod's, else that of the
/// controller Deployment in its namespace.
async fn find_service_account(
    client: &Client,
    args: &ValidateArgs,
    leader: Option<&Lease>,
) -> Result<String, String> {
    if let Some(sa) = &args.controller_service_account {
        return parse_service_account(sa)
            .map(|(ns, name)| format!("{ns}/{name}"))
            .ok_or_else(|| format!("--controller-service-account {sa:?} is not NS/NAME"));
    }
    let ns = &args.controller_namespace;
    let holder = leader
        .and_then(|l| l.spec.as_ref()?.holder_identity.clone())
        .filter(|h| !h.is_empty());
    if let Some(holder) = &holder
        && let Ok(Some(pod)) = get_opt(&Api::<Pod>::namespaced(client.clone(), ns), holder).await
    {
        let sa = pod
            .spec
            .and_then(|s| s.service_account_name)
            .unwrap_or_else(|| "default".into());
        return Ok(format!("{ns}/{sa}"));
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let selector = "app.kubernetes.io/part-of=kube-failover,app.kubernetes.io/component=controller";
    match deployments
        .list(&ListParams::default().labels(selector))
        .await
    {
        Ok(list) => list
            .items
            .into_iter()
            .find_map(|d| d.spec?.template.spec?.service_account_name)
            .map(|sa| format!("{ns}/{sa}"))
            .ok_or_else(|| {
                format!("no leader pod and no Deployment labelled {selector} in namespace {ns}")
            }),
        Err(e) => Err(format!("listing Deployments in {ns}: {}", brief(e))),
    }
}

async fn review(client: &Client, user: &str, a: &Access) -> Result<bool, kube::Error> {
    let sar = SubjectAccessReview {
        metadata: ObjectMeta::default(),
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!(
                    "system:serviceaccounts:{}",
                    user.split(':').nth(2).unwrap_or_default()
                ),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(a.group.clone()),
                resource: Some(a.resource.clone()),
                subresource: a.subresource.clone(),
                verb: Some(a.verb.clone()),
                namespace: a.namespace.clone(),
                name: a.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        status: None,
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &sar)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

async fn check_rbac(
    client: &Client,
    args: &ValidateArgs,
    leader: Option<&Lease>,
    namespaces: &BTreeSet<String>,
) -> Check {
    let sa = find_service_account(client, args, leader).await;
    let sa = match &sa {
        Ok(sa) => sa.as_str(),
        Err(why) => return judge_rbac(Err(why), Ok(&[])),
    };
    let Some((ns, name)) = parse_service_account(sa) else {
        return judge_rbac(Err("not NS/NAME"), Ok(&[]));
    };
    let user = format!("system:serviceaccount:{ns}:{name}");
    let needed = needed_access(namespaces, &args.controller_namespace, &args.lease_name);
    let answers: Vec<(Access, Result<bool, kube::Error>)> =
        futures::stream::iter(needed.into_iter().map(|a| {
            let user = user.clone();
            async move {
                let r = review(client, &user, &a).await;
                (a, r)
            }
        }))
        .buffered(8)
        .collect()
        .await;
    let mut done = Vec::new();
    for (a, r) in answers {
        match r {
            Ok(allowed) => done.push((a, allowed)),
            Err(e) => return judge_rbac(Ok(sa), Err(&brief(e).to_string())),
        }
    }
    judge_rbac(Ok(sa), Ok(&done))
}

async fn claim_facts(
    client: &Client,
    fci: &FailoverClusterInstance,
    classes: &[StorageClass],
) -> Result<Vec<ClaimFacts>> {
    let ns = fci.namespace().unwrap_or_default();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let drivers: Api<CSIDriver> = Api::all(client.clone());
    let mut out = Vec::new();
    for c in fci.claims() {
        let pvc = get_opt(&pvcs, &c.claim)
            .await
            .with_context(|| format!("reading claim {}", c.claim))?;
        let template = c
            .from_template
            .then(|| {
                fci.spec
                    .storage
                    .claim_templates
                    .iter()
                    .find(|t| t.name == c.volume)
                    .map(|t| t.spec.clone())
            })
            .flatten();
        let spec = pvc
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .or(template.as_ref());
        let default_class = || {
            classes
                .iter()
                .find(|c| {
                    c.annotations()
                        .get("storageclass.kubernetes.io/is-default-class")
                        .is_some_and(|v| v == "true")
                })
                .map(|c| c.name_any())
        };
        let class_name = match spec.and_then(|s| s.storage_class_name.clone()) {
            Some(n) if n.is_empty() => None,
            Some(n) => Some(n),
            None if pvc.is_none() => default_class(),
            None => None,
        };
        let class = class_name
            .as_ref()
            .and_then(|n| classes.iter().find(|c| &c.name_any() == n).cloned());
        let pv = match spec
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty())
        {
            Some(v) => get_opt(&pvs, &v)
                .await
                .with_context(|| format!("reading PersistentVolume {v}"))?,
            None => None,
        };
        let mut facts = ClaimFacts {
            claim: c.claim,
            from_template: c.from_template,
            pvc,
            template,
            class_name,
            class,
            pv,
            csi_driver: None,
        };
        if let Some(driver) = facts.driver() {
            facts.csi_driver = get_opt(&drivers, &driver)
                .await
                .with_context(|| format!("reading CSIDriver {driver}"))?;
        }
        out.push(facts);
    }
    Ok(out)
}

async fn vip_facts(
    client: &Client,
    fci: &FailoverClusterInstance,
    eligible: &BTreeSet<String>,
    now: Timestamp,
) -> Result<VipFacts> {
    let ns = fci.namespace().unwrap_or_default();
    let mut facts = VipFacts::default();
    if fci.spec.virtual_ips.is_empty() {
        return Ok(facts);
    }
    match fci.spec.vip_mode {
        VipMode::ExternalIPs => {
            let svc: Service = serde_json::from_value(serde_json::json!({
                "metadata": {"generateName": "kube-failover-validate-"},
                "spec": {
                    "ports": [{"port": 1}],
                    "externalIPs": fci.spec.virtual_ips,
                }
            }))?;
            let pp = PostParams {
                dry_run: true,
                field_manager: Some(super::FIELD_MANAGER.into()),
            };
            let answer = Api::<Service>::namespaced(client.clone(), &ns)
                .create(&pp, &svc)
                .await;
            facts.external_ips = Some(match answer {
                Ok(_) => Ok(()),
                Err(kube::Error::Api(s)) if s.code == 403 && s.reason == "Forbidden" => {
                    // RBAC and admission both answer 403; only RBAC says the verb.
                    let rbac = s.message.contains("cannot create resource");
                    Err((!rbac, s.message))
                }
                Err(kube::Error::Api(s)) => Err((s.code == 422 || s.code == 400, s.message)),
                Err(e) => Err((false, e.to_string())),
            });
        }
        VipMode::LoadBalancer => {
            let services: Api<Service> = Api::namespaced(client.clone(), &ns);
            facts.service = get_opt(&services, &fci.spec.network_name.name)
                .await
                .context("reading the instance's Service")?;
        }
        VipMode::Agent => {
            let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
            for node in eligible {
                let lease = get_opt(&leases, &agent_lease_name(node))
                    .await
                    .context("reading the node agents' Leases")?;
                let fresh = lease.map(|l| {
                    let duration = l
                        .spec
                        .as_ref()
                        .and_then(|s| s.lease_duration_seconds)
                        .unwrap_or(10);
                    renewal_age(&l, now).is_some_and(|(age, _)| {
                        !surely_past(age, SignedDuration::from_secs(duration.into()))
                    })
                });
                facts.agents.insert(node.clone(), fresh);
            }
        }
    }
    Ok(facts)
}

/// A check that could not be made: reading what it needs failed (often the caller's RBAC).
fn unchecked(check: &'static str, subject: impl Into<String>, error: &anyhow::Error) -> Check {
    Check::warn(
        check,
        subject,
        format!("not checked: {error:#}"),
        "run validate as someone who may read it (see docs/operations.md)",
    )
}

/// Reads what the checks need and judges it. A read that fails leaves its check unmade, as a
/// warning saying why; only when the API server cannot be reached, or the instances and
/// clusters cannot be listed, is there no report.
pub async fn gather(client: &Client, args: &ValidateArgs) -> Result<Vec<Check>> {
    let mut checks = Vec::new();
    let now = server_time(client).await?;

    // 1. CRDs.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut crds_absent = false;
    for (_, generated) in crate::crd::all() {
        let name = generated.name_any();
        match get_opt(&crds, &name)
            .await
            .context("reading CustomResourceDefinitions")
        {
            Ok(stored) => {
                crds_absent |= stored.is_none();
                checks.push(judge_crd(&generated, stored.as_ref()));
            }
            Err(e) => checks.push(unchecked("crds", format!("CRD {name}"), &e)),
        }
    }

    // 2. Leader.
    let leader = match get_opt(
        &Api::<Lease>::namespaced(client.clone(), &args.controller_namespace),
        &args.lease_name,
    )
    .await
    .context("reading the leader Lease")
    {
        Ok(leader) => {
            checks.push(judge_leader(
                &args.controller_namespace,
                &args.lease_name,
                leader.as_ref(),
                now,
            ));
            leader
        }
        Err(e) => {
            let subject = format!(
                "controller leader Lease {}/{}",
                args.controller_namespace, args.lease_name
            );
            checks.push(unchecked("leader", subject, &e));
            None
        }
    };

    // What the rest is about: the instances in scope and their clusters.
    let (instances, clusters) = if crds_absent {
        (vec![], vec![])
    } else {
        let fcis: Api<FailoverClusterInstance> = if args.all_namespaces {
            Api::all(client.clone())
        } else {
            let ns = match &args.namespace {
                Some(ns) => ns.clone(),
                None => default_namespace().await,
            };
            Api::namespaced(client.clone(), &ns)
        };
        let instances = fcis
            .list(&ListParams::default())
            .await
            .map_err(brief)
            .context("listing FailoverClusterInstances")?
            .items;
        let used: BTreeSet<&str> = instances
            .iter()
            .map(|i| i.spec.cluster_ref.as_str())
            .collect();
        let clusters: Vec<FailoverCluster> = Api::<FailoverCluster>::all(client.clone())
            .list(&ListParams::default())
            .await
            .map_err(brief)
            .context("listing FailoverClusters")?
            .items
            .into_iter()
            .filter(|c| args.all_namespaces || used.contains(c.name_any().as_str()))
            .collect();
        (instances, clusters)
    };
    let mut namespaces: BTreeSet<String> = instances.iter().filter_map(|i| i.namespace()).collect();
    if namespaces.is_empty()
        && let Some(ns) = &args.namespace
    {
        namespaces.insert(ns.clone());
    }

    // 3. RBAC.
    checks.push(check_rbac(client, args, leader.as_ref(), &namespaces).await);

    // 4. Version.
    match client
        .apiserver_version()
        .await
        .context("reading the API server's version")
    {
        Ok(info) => checks.push(judge_version(&info)),
        Err(e) => checks.push(unchecked("version", "Kubernetes version", &e)),
    }

    // 5. and 6. Heartbeats, clocks, quorum.
    let nodes = match Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(brief)
        .context("listing Nodes")
    {
        Ok(list) => Some(list.items),
        Err(e) => {
            checks.push(unchecked("heartbeats", "members and owners", &e));
            None
        }
    };
    let node_leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    for cluster in &clusters {
        for node in nodes.iter().flat_map(|nodes| members_of(cluster, nodes)) {
            match get_opt(&node_leases, &node)
                .await
                .context("reading node Leases")
            {
                Ok(lease) => checks.extend(judge_member_lease(&node, cluster, lease.as_ref(), now)),
                Err(e) => checks.push(unchecked(
                    "heartbeats",
                    format!("member {node} (cluster {})", cluster.name_any()),
                    &e,
                )),
            }
        }
        checks.push(judge_quorum(cluster));
    }

    // 7., 8. and 9. Each instance.
    let classes = Api::<StorageClass>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(brief)
        .context("listing StorageClasses");
    let namespace_api: Api<Namespace> = Api::all(client.clone());
    let mut namespace_labels = BTreeMap::new();
    for ns in &namespaces {
        if let Ok(Some(n)) = get_opt(&namespace_api, ns).await {
            namespace_labels.insert(ns.clone(), n.labels().clone());
        }
    }
    for fci in &instances {
        let key = instance_key(fci);
        let cluster = clusters
            .iter()
            .find(|c| c.name_any() == fci.spec.cluster_ref);
        let labels = fci.namespace().and_then(|ns| namespace_labels.get(&ns));
        let Some(nodes) = &nodes else { continue };
        checks.extend(judge_owners(fci, cluster, nodes, labels));
        let members = cluster.map(|c| members_of(c, nodes)).unwrap_or_default();
        let eligible = eligible_owners(fci, &members);
        let claims = match &classes {
            Ok(classes) => claim_facts(client, fci, &classes.items).await,
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        };
        match claims {
            Ok(claims) => {
                for claim in claims {
                    checks.extend(judge_claim(fci, &claim, eligible.len()));
                }
            }
            Err(e) => checks.push(unchecked("storage", format!("instance {key} claims"), &e)),
        }
        match vip_facts(client, fci, &eligible, now).await {
            Ok(facts) => checks.extend(judge_vips(fci, &facts)),
            Err(e) => checks.push(unchecked(
                "virtualIPs",
                format!("instance {key} virtual IPs"),
                &e,
            )),
        }
    }
    Ok(checks)
}

pub async fn run(client: Client, args: ValidateArgs) -> Result<ExitCode> {
    let report = ValidateReport::new(gather(&client, &args).await?);
    match args.output {
        Output::Table | Output::Wide => print!("{}", render(&report)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Yaml => print!("{}", serde_yaml::to_string(&report)?),
    }
    Ok(if report.failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use serde::Deserialize;

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

        let lb =
            instance(serde_json::json!({"virtualIPs": ["192.0.2.1"], "vipMode": "LoadBalancer"}));
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
        let manifest = include_str!("../../deploy/kube-failover.yaml");
        let mut shipped = BTreeSet::new();
        for doc in serde_yaml::Deserializer::from_str(manifest) {
            let v = serde_json::Value::deserialize(doc).unwrap();
            if !matches!(v["kind"].as_str(), Some("ClusterRole" | "Role")) {
                continue;
            }
            for rule in v["rules"].as_array().unwrap() {
                for g in rule["apiGroups"].as_array().unwrap() {
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
}
