//! The control plane: the CRDs, the controller's leader, the Kubernetes version.

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::version::Info;
use kube::ResourceExt;
use serde::Serialize;

use super::Check;
use super::time::{ago, renewal_age, secs, surely_past};

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

/// Kubernetes 1.33 or later: the `ServiceCIDR` and `IPAddress` APIs (`networking.k8s.io/v1`)
/// that keep each virtual IP to one instance and off the Service ranges are GA since 1.33
/// (and the out-of-service taint fencing uses since 1.28).
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
        (Some(major), Some(minor)) if (major, minor) >= (1, 33) => Check::pass(
            "version",
            subject,
            format!(
                "{} (the IPAddress and ServiceCIDR APIs that keep virtual IPs apart are GA since 1.33)",
                info.git_version
            ),
        ),
        (Some(_), Some(_)) => Check::fail(
            "version",
            subject,
            format!(
                "{}: virtual IPs are claimed with networking.k8s.io/v1 IPAddress and checked against ServiceCIDR, GA since 1.33; without them the controller's caches never sync",
                info.git_version
            ),
            "upgrade the cluster to 1.33 or later",
        ),
        _ => Check::warn(
            "version",
            subject,
            format!(
                "cannot read the version {}.{} ({})",
                info.major, info.minor, info.git_version
            ),
            "check that the API server is 1.33 or later",
        ),
    }
}
