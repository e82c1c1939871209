//! Prometheus metrics of the controller.

use prometheus_client::encoding::{EncodeLabelSet, text::encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabel {
    pub phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabel {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    pub verb: String,
}

pub struct Metrics {
    registry: Registry,
    /// Requests this replica sent to the API server, by verb (get, list, watch, create,
    /// update, patch, delete).
    pub api_requests: Family<VerbLabel, Counter>,
    pub failovers: Family<ReasonLabel, Counter>,
    pub failover_duration: Histogram,
    pub instances: Family<PhaseLabel, Gauge>,
    pub reconcile_errors: Family<ErrorLabel, Counter>,
    pub reconcile_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kube_failover");
        let failovers = Family::<ReasonLabel, Counter>::default();
        registry.register("failovers", "Moves finished, by reason", failovers.clone());
        let failover_duration = Histogram::new([
            0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
        ]);
        registry.register(
            "failover_duration_seconds",
            "Time from the start of a failover to the instance online again",
            failover_duration.clone(),
        );
        let instances = Family::<PhaseLabel, Gauge>::default();
        registry.register("instances", "Instances by phase", instances.clone());
        let reconcile_errors = Family::<ErrorLabel, Counter>::default();
        registry.register(
            "reconcile_errors",
            "Failed reconciles, by error",
            reconcile_errors.clone(),
        );
        let reconcile_duration = Histogram::new([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]);
        registry.register(
            "reconcile_duration_seconds",
            "Time spent in one reconcile",
            reconcile_duration.clone(),
        );
        let api_requests = Family::<VerbLabel, Counter>::default();
        registry.register(
            "api_requests",
            "Requests sent to the Kubernetes API server, by verb",
            api_requests.clone(),
        );
        Self {
            registry,
            api_requests,
            failovers,
            failover_duration,
            instances,
            reconcile_errors,
            reconcile_duration,
        }
    }
}

impl Metrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        out
    }
}

/// The Kubernetes verb of an API request.
pub fn verb(method: &http::Method, uri: &http::Uri) -> &'static str {
    let query = uri.query().unwrap_or_default();
    match *method {
        http::Method::GET
            if query
                .split('&')
                .any(|p| p == "watch=true" || p == "watch=1") =>
        {
            "watch"
        }
        http::Method::GET if is_collection(uri.path()) => "list",
        http::Method::GET => "get",
        http::Method::POST => "create",
        http::Method::PUT => "update",
        http::Method::PATCH => "patch",
        http::Method::DELETE => "delete",
        _ => "other",
    }
}

/// Whether a path names a collection (`…/pods`) rather than one object (`…/pods/name`).
fn is_collection(path: &str) -> bool {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let rest = match segs.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        _ => return false,
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    rest.len() == 1
}

#[cfg(test)]
mod tests {
    use super::verb;

    #[test]
    fn verbs_from_requests() {
        let v = |m: http::Method, u: &str| verb(&m, &u.parse().unwrap());
        assert_eq!(
            v(
                http::Method::GET,
                "/api/v1/namespaces/a/pods?labelSelector=x"
            ),
            "list"
        );
        assert_eq!(v(http::Method::GET, "/api/v1/namespaces/a/pods/p"), "get");
        assert_eq!(v(http::Method::GET, "/api/v1/nodes"), "list");
        assert_eq!(v(http::Method::GET, "/api/v1/nodes/n"), "get");
        assert_eq!(v(http::Method::GET, "/api/v1/namespaces/a"), "get");
        assert_eq!(
            v(
                http::Method::GET,
                "/apis/kube-failover.io/v1alpha1/failoverclusterinstances?watch=true&resourceVersion=1"
            ),
            "watch"
        );
        assert_eq!(
            v(
                http::Method::PUT,
                "/apis/kube-failover.io/v1alpha1/namespaces/a/failoverclusterinstances/x/status"
            ),
            "update"
        );
        assert_eq!(
            v(http::Method::DELETE, "/api/v1/namespaces/a/pods/p"),
            "delete"
        );
    }
}
