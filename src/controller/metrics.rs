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

pub struct Metrics {
    registry: Registry,
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
        Self {
            registry,
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
