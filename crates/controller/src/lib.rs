//! The failover controller: `observe` (reflector stores) → `decide` (pure) → `apply`.
//!
//! Every replica watches and keeps its caches warm; only the holder of the leader Lease
//! writes, and it checks that it still holds it before every write.

mod actions;
pub mod build;
mod cleanup;
pub mod cluster_status;
mod error;
mod fence;
pub mod heartbeats;
mod http_server;
pub mod leader;
pub mod metrics;
pub mod observe;
mod reconcile;
mod watches;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::Api;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use tokio::sync::watch;

pub use error::{Error, Result};
use heartbeats::{Clock, Heartbeats};
pub use http_server::Health;
use kube_failover_core::api::NODE_LEASE_NAMESPACE;
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance, INSTANCE_LABEL};
pub use leader::{LeaderConfig, Leadership};
use metrics::Metrics;
use observe::Stores;
pub use reconcile::{error_policy, reconcile};
pub use watches::wait_synced;
use watches::{QuickBackoff, affected_by_node, by_label, reflect, stream_from_watch, uses_claim};

/// The one field manager for every server-side apply of this controller.
pub const FIELD_MANAGER: &str = "kube-failover";

/// What every reconcile, the cluster status loop and the actions share.
pub struct Context {
    pub client: Client,
    /// The namespace this replica is limited to, if any.
    pub namespace: Option<String>,
    /// Notified on every node or instance change: the cluster status loop recomputes.
    pub cluster_changed: Arc<tokio::sync::Notify>,
    pub stores: Stores,
    pub recorder: Recorder,
    pub leader: Leadership,
    pub metrics: Arc<Metrics>,
    pub health: Health,
    /// Statuses written and not yet in the cache, for anti-affinity decisions.
    pub written: observe::Written,
}

impl Context {
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
}

/// Runs the controller with a client built from `config` that counts its API requests by
/// verb (`kube_failover_api_requests_total`).
pub async fn run_with_config(config: kube::Config, opts: RunOptions) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::default());
    let counter = metrics.api_requests.clone();
    let layer = tower::util::MapRequestLayer::new(move |req: http::Request<kube::client::Body>| {
        let verb = metrics::verb(req.method(), req.uri());
        counter
            .get_or_create(&metrics::VerbLabel { verb: verb.into() })
            .inc();
        req
    });
    let client = kube::client::ClientBuilder::try_from(config)?
        .with_layer(&layer)
        .build();
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
        tokio::spawn(http_server::serve_http(
            addr,
            metrics.clone(),
            ctx.stores.instances.clone(),
            ctx.health.clone(),
            leader.clone(),
        ));
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

/// Wires the reflectors and triggers; returns the controller and its context.
pub fn build_controller(
    client: Client,
    opts: &RunOptions,
    leader: Leadership,
    metrics: Arc<Metrics>,
) -> (Controller<FailoverClusterInstance>, Arc<Context>) {
    let labelled = watcher::Config::default().labels(INSTANCE_LABEL);
    fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<K>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match ns {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        }
    }
    let ns = &opts.namespace;
    // Every reflector registers in `health.watches`: /healthz reports one that ended.
    let health = Health::default();
    let w = &health.watches;
    let (nodes, node_stream) = reflect(
        w,
        "nodes",
        Api::<Node>::all(client.clone()),
        watcher::Config::default(),
    );
    let heartbeats = Heartbeats::new(Clock::default());
    let seen = heartbeats.clone();
    let node_stream = node_stream.map(move |r| {
        r.map(|mut n: Node| {
            seen.observe_node(&n);
            // Images are the bulk of a Node and never read.
            if let Some(s) = n.status.as_mut() {
                s.images = None;
            }
            n
        })
    });
    let (leases, lease_stream) = reflect(
        w,
        "leases",
        Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        watcher::Config::default(),
    );
    let (pods, pod_stream) = reflect(w, "pods", scoped::<Pod>(&client, ns), labelled.clone());
    let (claims, claim_stream) = reflect(
        w,
        "claims",
        scoped::<PersistentVolumeClaim>(&client, ns),
        watcher::Config::default(),
    );
    let (volumes, volume_stream) = reflect(
        w,
        "volumes",
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    );
    let (attachments, attachment_stream) = reflect(
        w,
        "attachments",
        Api::<VolumeAttachment>::all(client.clone()),
        watcher::Config::default(),
    );
    let (services, service_stream) = reflect(
        w,
        "services",
        scoped::<Service>(&client, ns),
        labelled.clone(),
    );
    let (slices, slice_stream) =
        reflect(w, "slices", scoped::<EndpointSlice>(&client, ns), labelled);
    let (clusters, cluster_stream) = reflect(
        w,
        "clusters",
        Api::<FailoverCluster>::all(client.clone()),
        watcher::Config::default(),
    );
    // Namespaces, for their labels (a cluster's allowedNamespaces.selector): every one, or
    // only the watched one (what the chart's namespaced RBAC grants, by name).
    let namespace_config = match ns {
        Some(ns) => watcher::Config::default().fields(&format!("metadata.name={ns}")),
        None => watcher::Config::default(),
    };
    let (namespaces, namespace_stream) = reflect(
        w,
        "namespaces",
        Api::<Namespace>::all(client.clone()),
        namespace_config,
    );

    let (instances, instance_stream) = reflect(
        w,
        "instances",
        scoped::<FailoverClusterInstance>(&client, ns),
        watcher::Config::default(),
    );
    let controller = Controller::for_stream(instance_stream, instances.clone())
        .trigger_backoff(QuickBackoff::default());
    let stores = Stores {
        instances: instances.clone(),
        clusters,
        nodes,
        leases,
        pods,
        claims,
        volumes,
        attachments,
        services,
        slices,
        namespaces,
        heartbeats: heartbeats.clone(),
    };

    // Lease renewals need no reconcile: thresholds are timers (each reconcile requeues for
    // the moment its owner's Lease would go stale). Revived nodes arrive through Node events.
    // Each renewal is dated the moment it arrives, on this controller's clock.
    tokio::spawn(heartbeats::probe_api(client.clone(), heartbeats.clone()));
    // A node agent's Lease also says which instances' virtual IPs are up on its node: a move
    // waiting for the old owner to release them goes on when it changes.
    let seen = heartbeats.clone();
    let on_agent_lease = instances.clone();
    let lease_stream = lease_stream.inspect(move |l| match l {
        Ok(lease) => {
            seen.leases_seen();
            seen.observe_lease(lease);
        }
        Err(_) => seen.leases_unseen(),
    });
    tokio::spawn(volume_stream.for_each(|_| async {}));

    let on_node = instances.clone();
    let cluster_changed = Arc::new(tokio::sync::Notify::new());
    let node_changed = cluster_changed.clone();
    let spec_changed = cluster_changed.clone();
    let namespace_changed = cluster_changed.clone();
    let on_attachment = instances.clone();
    let on_cluster = instances.clone();
    let on_namespace = instances.clone();
    let on_claim = instances.clone();
    // Everything is reconciled again when the caches have synced (reconciles before that
    // decide nothing) and on becoming leader (standbys decide nothing).
    let (reconcile_all_tx, reconcile_all_rx) = watch::channel(());
    let mut leadership = leader.subscribe();
    // The cluster status too: its loop decides nothing before either, and would otherwise
    // wait for the next Node or cluster event (up to 30 s) to write the first status.
    let on_leadership = reconcile_all_tx.clone();
    let (leader_status, synced_status) = (cluster_changed.clone(), cluster_changed.clone());
    tokio::spawn(async move {
        while leadership.changed().await.is_ok() {
            if *leadership.borrow() {
                let _ = on_leadership.send(());
                leader_status.notify_one();
            }
        }
    });
    let (all_stores, synced) = (stores.clone(), health.synced.clone());
    tokio::spawn(async move {
        wait_synced(&all_stores).await;
        synced.store(true, std::sync::atomic::Ordering::Release);
        tracing::info!("caches synced");
        let _ = reconcile_all_tx.send(());
        synced_status.notify_one();
    });
    let reconcile_all = stream_from_watch(reconcile_all_rx);

    let controller = controller
        .watches_stream(pod_stream, move |p: Pod| {
            by_label(p.namespace(), p.labels())
        })
        .watches_stream(service_stream, move |s: Service| {
            by_label(s.namespace(), s.labels())
        })
        .watches_stream(slice_stream, move |s: EndpointSlice| {
            by_label(s.namespace(), s.labels())
        })
        .watches_stream(lease_stream, move |l: Lease| {
            if !l
                .name_any()
                .starts_with(kube_failover_core::api::AGENT_LEASE_PREFIX)
            {
                return Vec::new();
            }
            on_agent_lease
                .state()
                .iter()
                .filter(|i| i.spec.vip_mode == kube_failover_core::api::VipMode::Agent)
                .filter(|i| i.status.as_ref().is_some_and(|s| s.current_move.is_some()))
                .map(|i| ObjectRef::from(i.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(node_stream, move |n: Node| {
            node_changed.notify_one();
            let name = n.name_any();
            on_node
                .state()
                .iter()
                .filter(|i| affected_by_node(i, &name))
                .map(|i| ObjectRef::from(i.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(claim_stream, move |c: PersistentVolumeClaim| {
            let (ns, name) = (c.namespace(), c.name_any());
            on_claim
                .state()
                .iter()
                .filter(|i| uses_claim(i, ns.as_deref(), &name))
                .map(|i| ObjectRef::from(i.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(attachment_stream, move |_: VolumeAttachment| {
            on_attachment
                .state()
                .iter()
                .filter(|i| i.status.as_ref().is_some_and(|s| s.current_move.is_some()))
                .map(|i| ObjectRef::from(i.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(cluster_stream, move |c: FailoverCluster| {
            // Its spec may have changed what its status says (members, tenancy).
            spec_changed.notify_one();
            let name = c.name_any();
            on_cluster
                .state()
                .iter()
                .filter(|i| i.spec.cluster_ref == name)
                .map(|i| ObjectRef::from(i.as_ref()))
                .collect::<Vec<_>>()
        })
        // A namespace relabelled may gain or lose the right to use a cluster.
        .watches_stream(namespace_stream, move |n: Namespace| {
            namespace_changed.notify_one();
            let name = n.name_any();
            on_namespace
                .state()
                .iter()
                .filter(|i| i.namespace().as_deref() == Some(name.as_str()))
                .map(|i| ObjectRef::from(i.as_ref()))
                .collect::<Vec<_>>()
        })
        .reconcile_all_on(reconcile_all);

    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: FIELD_MANAGER.into(),
            instance: Some(opts.identity.clone()),
        },
    );
    let ctx = Arc::new(Context {
        client,
        namespace: opts.namespace.clone(),
        cluster_changed,
        stores,
        recorder,
        leader,
        metrics,
        health,
        written: Default::default(),
    });
    (controller, ctx)
}
