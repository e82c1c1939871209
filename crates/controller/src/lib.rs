//! The failover controller: `observe` (reflector stores) → `decide` (pure) → `apply`.
//!
//! Every replica watches and keeps its caches warm; only the holder of the leader Lease
//! writes, and it checks that it still holds it before every write.

mod actions;
pub mod build;
mod cleanup;
mod client;
pub mod cluster_status;
mod deadlines;
mod error;
pub mod events;
mod fence;
mod foreign_pods;
pub mod heartbeats;
mod http_server;
mod index;
pub mod leader;
pub mod metrics;
pub mod network;
pub mod observe;
pub mod own_writes;
mod per_node;
mod reconcile;
pub mod vip_holders;
mod watches;
mod wiring;
pub mod witness;
mod written;

use std::sync::Arc;

use futures::StreamExt;
use kube::Client;

pub use error::{Error, Result};
pub use http_server::Health;
pub use leader::{LeaderConfig, Leadership};
use metrics::Metrics;
use observe::Stores;
pub use reconcile::{error_policy, reconcile};
pub use watches::wait_synced;
pub use wiring::build_controller;

/// The one field manager for every server-side apply of this controller.
pub const FIELD_MANAGER: &str = "kube-failover";

/// What every reconcile, the cluster status loop and the actions share.
pub struct Context {
    pub client: Client,
    /// The namespace this replica is limited to, if any.
    pub namespace: Option<String>,
    /// Notified when a Node, a cluster or a namespace changes, and when the cache shows an
    /// instance under another owner, cluster or namespace: the cluster status loop recomputes.
    pub cluster_changed: Arc<tokio::sync::Notify>,
    pub stores: Stores,
    pub events: events::Events,
    pub leader: Leadership,
    pub metrics: Arc<Metrics>,
    pub health: Health,
    /// Statuses written and not yet in the cache, for anti-affinity decisions.
    pub written: written::Written,
    /// Pods labelled for an instance but not controlled by it that this replica reported.
    pub foreign_pods: foreign_pods::Reported,
    /// Why the last write of each instance's Service failed (`namespace/name` → error,
    /// and whether it failed because the Service is another's), for its `NetworkName`
    /// condition.
    pub service_refused: std::sync::Mutex<std::collections::HashMap<String, (String, bool)>>,
    /// The out-of-service taints this replica wrote: one per failed node.
    pub fences: fence::Fences,
    /// Nodes read fresh before deletes without a grace period, shared by rounds.
    pub fresh_nodes: actions::FreshNodes,
    /// One timer per node for the settled instances it hosts.
    pub deadlines: deadlines::NodeDeadlines,
}

impl Context {
    /// Why the last write of `instance`'s Service failed, if it did.
    pub fn service_refused(&self, instance: &str) -> Option<String> {
        let refused = self
            .service_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        refused.get(instance).map(|(why, _)| why.clone())
    }

    /// Whether the last write of `instance`'s Service found a Service of that name that is
    /// another's: the instance's EndpointSlice is then attached to no Service.
    pub fn service_taken(&self, instance: &str) -> bool {
        let refused = self
            .service_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        refused.get(instance).is_some_and(|(_, taken)| *taken)
    }

    /// Notes how the last write of `instance`'s Service went: `why` it failed, and whether
    /// because the Service is another's.
    pub fn set_service_refused(&self, instance: &str, why: Option<(String, bool)>) {
        let mut refused = self
            .service_refused
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match why {
            Some(why) => refused.insert(instance.to_string(), why),
            None => refused.remove(instance),
        };
    }

    /// Every cache this controller reads has synced. Until then it decides nothing: an
    /// empty cache is not an empty cluster.
    pub fn synced(&self) -> bool {
        self.health
            .synced
            .load(std::sync::atomic::Ordering::Acquire)
    }

    fn ensure_leader(&self) -> Result<()> {
        if self.leader.is_leader() {
            Ok(())
        } else {
            Err(Error::NotLeader)
        }
    }
}

/// Options of `kube-failover run`.
#[derive(Clone, Debug)]
pub struct RunOptions {
    /// Watch and act in this namespace only; all namespaces when unset.
    pub namespace: Option<String>,
    /// Stop on SIGTERM / Ctrl-C (the binary); tests stop replicas by dropping them.
    pub handle_signals: bool,
    pub leader: Option<LeaderConfig>,
    pub metrics_addr: Option<std::net::SocketAddr>,
    pub identity: String,
    /// Instances reconciled at once, at most (see [`DEFAULT_CONCURRENT_RECONCILES`]).
    pub concurrent_reconciles: u16,
}

/// How many instances are reconciled at once by default. A round in flight holds what it
/// observed (at 1,000 members, its cluster's member verdicts alone are about 100 KiB), and
/// unbounded, a set-up or a storm had thousands in flight; 64 rounds, each mostly waiting
/// on one API request, keep a 2-core API server's queue full.
pub const DEFAULT_CONCURRENT_RECONCILES: u16 = 64;

/// Runs the controller with a client built from `config` (on HTTP/2, see `client`) that
/// counts its API requests by verb and resource (`kube_failover_api_requests_total`).
pub async fn run_with_config(config: kube::Config, opts: RunOptions) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let counter = metrics.api_requests.clone();
    let client = client::http2_client(config, move |req| {
        let verb = metrics::verb(req.method(), req.uri());
        counter
            .get_or_create(&metrics::VerbLabel {
                verb: verb.into(),
                resource: metrics::resource(req.uri()),
            })
            .inc();
    })?;
    run_inner(client, opts, metrics).await
}

/// Runs the controller until the process is asked to stop.
pub async fn run(client: Client, opts: RunOptions) -> anyhow::Result<()> {
    run_inner(client, opts, Arc::new(Metrics::default())).await
}

async fn run_inner(client: Client, opts: RunOptions, metrics: Arc<Metrics>) -> anyhow::Result<()> {
    let leader = match &opts.leader {
        Some(cfg) => leader::start(client.clone(), cfg.clone()),
        None => Leadership::always(),
    };
    let (controller, ctx) =
        build_controller(client.clone(), &opts, leader.clone(), metrics.clone());
    if let Some(addr) = opts.metrics_addr {
        tokio::spawn(http_server::serve_http(addr, ctx.clone()));
    }
    tokio::spawn(cluster_status::run(
        ctx.clone(),
        ctx.cluster_changed.clone(),
    ));
    let controller = if opts.handle_signals {
        controller.shutdown_on_signal()
    } else {
        controller
    };
    controller
        .run(reconcile, error_policy, ctx)
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(error = %e, "reconcile failed");
            }
        })
        .await;
    Ok(())
}
