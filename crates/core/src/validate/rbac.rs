//! The controller's RBAC: every access it needs, as SubjectAccessReviews to make.

use std::collections::BTreeSet;

use super::Check;

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
        "networking.k8s.io",
        "servicecidrs",
        &["get", "list", "watch"],
        Scope::Cluster,
    ),
    (
        "networking.k8s.io",
        "ipaddresses",
        &["get", "list", "watch", "create", "delete"],
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
            Scope::NodeLeases => vec![(Some(crate::api::NODE_LEASE_NAMESPACE.into()), None)],
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
