//! The failover controller: `observe` (reflector stores) → `decide` (pure) → `apply`.
//!
//! Every replica watches and keeps its caches warm; only the holder of the leader Lease
//! writes, and it checks that it still holds it before every write.

pub mod build;
pub mod cluster_status;
pub mod leader;
pub mod metrics;
pub mod observe;

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod, Service, Taint,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action as Requeue, Controller};
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tokio::sync::watch;

use crate::api::{FINALIZER, FailoverCluster, FailoverClusterInstance, INSTANCE_LABEL, Phase};
use crate::decide::{self, Action, health::OUT_OF_SERVICE_TAINT};
pub use leader::{LeaderConfig, Leadership};
use metrics::Metrics;
use observe::{NODE_LEASE_NAMESPACE, Stores};

/// The one field manager for every server-side apply of this controller.
pub const FIELD_MANAGER: &str = "kube-failover";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("not the leader: write dropped")]
    NotLeader,
    #[error("object has no {0}")]
    Missing(&'static str),
    #[error("serialization: {0}")]
    Serde(#[from] serde_json::Error),
}

impl Error {
    /// The metric label of a failed reconcile.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(e)) if e.code == 409 => "conflict",
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
            Error::NotLeader => "not_leader",
            Error::Missing(_) => "missing_field",
            Error::Serde(_) => "serialization",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

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
}

impl Context {
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

/// Readiness of this replica: caches synced, leadership known.
#[derive(Clone, Default)]
pub struct Health {
    pub synced: Arc<std::sync::atomic::AtomicBool>,
}

fn strip<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
    obj.meta_mut()
        .annotations
        .as_mut()
        .map(|a| a.remove("kubectl.kubernetes.io/last-applied-configuration"));
}

/// A reflector: returns the store and the stream of changed objects (which must be polled).
fn reflect<K>(
    api: Api<K>,
    config: watcher::Config,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(strip)
        .reflect(writer)
        .applied_objects();
    (reader, stream)
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
    let health = Health::default();
    let (controller, ctx) =
        build_controller(client.clone(), &opts, leader.clone(), metrics.clone());
    if let Some(addr) = opts.metrics_addr {
        tokio::spawn(serve_http(
            addr,
            metrics.clone(),
            ctx.stores.instances.clone(),
            health.clone(),
            leader.clone(),
        ));
    }
    tokio::spawn(cluster_status::run(
        ctx.clone(),
        ctx.cluster_changed.clone(),
    ));
    let stores = ctx.stores.clone();
    let synced = health.synced.clone();
    tokio::spawn(async move {
        wait_synced(&stores).await;
        synced.store(true, std::sync::atomic::Ordering::Release);
        tracing::info!("caches synced");
    });
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

pub async fn wait_synced(stores: &Stores) {
    /// `Store::wait_until_ready` wakes only the last of several concurrent waiters (its
    /// readiness is a oneshot channel shared by every clone of the store), and the
    /// Controller itself waits on the store of instances. Waiting again in short slices
    /// re-polls the channel, so this returns even when the wake-up went to the other waiter.
    async fn ready<K>(store: &Store<K>)
    where
        K: kube::Resource + Clone + 'static,
        K::DynamicType: std::hash::Hash + Eq + Clone,
    {
        while tokio::time::timeout(Duration::from_millis(200), store.wait_until_ready())
            .await
            .is_err()
        {}
    }
    tokio::join!(
        ready(&stores.instances),
        ready(&stores.clusters),
        ready(&stores.nodes),
        ready(&stores.leases),
        ready(&stores.pods),
        ready(&stores.claims),
        ready(&stores.volumes),
        ready(&stores.attachments),
        ready(&stores.services),
        ready(&stores.slices),
    );
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
    let (nodes, node_stream) =
        reflect(Api::<Node>::all(client.clone()), watcher::Config::default());
    let node_stream = node_stream.map(|r| {
        r.map(|mut n: Node| {
            // Images are the bulk of a Node and never read.
            if let Some(s) = n.status.as_mut() {
                s.images = None;
            }
            n
        })
    });
    let (leases, lease_stream) = reflect(
        Api::<Lease>::namespaced(client.clone(), NODE_LEASE_NAMESPACE),
        watcher::Config::default(),
    );
    let (pods, pod_stream) = reflect(scoped::<Pod>(&client, ns), labelled.clone());
    let (claims, claim_stream) = reflect(
        scoped::<PersistentVolumeClaim>(&client, ns),
        watcher::Config::default(),
    );
    let (volumes, volume_stream) = reflect(
        Api::<PersistentVolume>::all(client.clone()),
        watcher::Config::default(),
    );
    let (attachments, attachment_stream) = reflect(
        Api::<VolumeAttachment>::all(client.clone()),
        watcher::Config::default(),
    );
    let (services, service_stream) = reflect(scoped::<Service>(&client, ns), labelled.clone());
    let (slices, slice_stream) = reflect(scoped::<EndpointSlice>(&client, ns), labelled);
    let (clusters, cluster_stream) = reflect(
        Api::<FailoverCluster>::all(client.clone()),
        watcher::Config::default(),
    );

    let controller = Controller::new(
        scoped::<FailoverClusterInstance>(&client, ns),
        watcher::Config::default(),
    );
    let instances = controller.store();
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
    };

    // Lease renewals need no reconcile: thresholds are timers (each reconcile requeues for
    // the moment its owner's Lease would go stale). Revived nodes arrive through Node events.
    tokio::spawn(lease_stream.for_each(|_| async {}));
    tokio::spawn(claim_stream.for_each(|_| async {}));
    tokio::spawn(volume_stream.for_each(|_| async {}));

    let by_label = |obj_ns: Option<String>, labels: &std::collections::BTreeMap<String, String>| {
        labels.get(INSTANCE_LABEL).map(|n| {
            ObjectRef::<FailoverClusterInstance>::new(n).within(&obj_ns.unwrap_or_default())
        })
    };
    let on_node = instances.clone();
    let cluster_changed = Arc::new(tokio::sync::Notify::new());
    let node_changed = cluster_changed.clone();
    let on_attachment = instances.clone();
    let on_cluster = instances.clone();
    let (became_leader_tx, became_leader_rx) = watch::channel(());
    let mut leadership = leader.subscribe();
    tokio::spawn(async move {
        while leadership.changed().await.is_ok() {
            if *leadership.borrow() {
                let _ = became_leader_tx.send(());
            }
        }
    });
    let reconcile_all = tokio_stream_from_watch(became_leader_rx);

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
        .watches_stream(attachment_stream, move |_: VolumeAttachment| {
            on_attachment
                .state()
                .iter()
                .filter(|i| i.status.as_ref().is_some_and(|s| s.current_move.is_some()))
                .map(|i| ObjectRef::from(i.as_ref()))
                .collect::<Vec<_>>()
        })
        .watches_stream(cluster_stream, move |c: FailoverCluster| {
            let name = c.name_any();
            on_cluster
                .state()
                .iter()
                .filter(|i| i.spec.cluster_ref == name)
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
    });
    (controller, ctx)
}

fn tokio_stream_from_watch(rx: watch::Receiver<()>) -> impl Stream<Item = ()> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        Some(((), rx))
    })
}

/// A node event matters to instances it hosts, and to instances waiting for a node.
fn affected_by_node(fci: &FailoverClusterInstance, node: &str) -> bool {
    let Some(status) = fci.status.as_ref() else {
        return true;
    };
    status.owner_node.as_deref() == Some(node)
        || status.current_move.is_some()
        || matches!(status.phase, Phase::Pending | Phase::Offline)
}

pub async fn reconcile(fci: Arc<FailoverClusterInstance>, ctx: Arc<Context>) -> Result<Requeue> {
    if !ctx.leader.is_leader() {
        // Caches stay warm; everything is reconciled again on becoming leader.
        return Ok(Requeue::await_change());
    }
    let started = std::time::Instant::now();
    let ns = fci.namespace().ok_or(Error::Missing("namespace"))?;
    if !cluster_lists_owner(&fci, &ctx) {
        ctx.cluster_changed.notify_one();
    }
    let api: Api<FailoverClusterInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, fci, |event| async {
        match event {
            Finalizer::Apply(fci) => apply(&fci, &ctx).await,
            Finalizer::Cleanup(fci) => cleanup(&fci, &ctx).await,
        }
    })
    .await
    .map_err(|e| match e {
        kube::runtime::finalizer::Error::ApplyFailed(e)
        | kube::runtime::finalizer::Error::CleanupFailed(e) => e,
        other => Error::Finalizer(Box::new(other)),
    });
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    result
}

/// Whether the cluster's status already shows this instance under its current owner.
fn cluster_lists_owner(fci: &FailoverClusterInstance, ctx: &Context) -> bool {
    let Some(cluster) = ctx
        .stores
        .clusters
        .get(&ObjectRef::new(&fci.spec.cluster_ref))
    else {
        return true;
    };
    let key = format!("{}/{}", fci.namespace().unwrap_or_default(), fci.name_any());
    let owner = fci.status.as_ref().and_then(|s| s.owner_node.as_deref());
    let members = cluster
        .status
        .as_ref()
        .map(|s| s.members.as_slice())
        .unwrap_or_default();
    members
        .iter()
        .all(|m| (Some(m.name.as_str()) == owner) == m.instances.contains(&key))
}

pub fn error_policy(
    _fci: Arc<FailoverClusterInstance>,
    error: &Error,
    ctx: Arc<Context>,
) -> Requeue {
    ctx.metrics
        .reconcile_errors
        .get_or_create(&metrics::ErrorLabel {
            error: error.label().into(),
        })
        .inc();
    match error {
        // A newer version of the instance is on its way through the watch.
        Error::Kube(kube::Error::Api(e)) if e.code == 409 => {
            Requeue::requeue(Duration::from_millis(200))
        }
        Error::NotLeader => Requeue::await_change(),
        _ => {
            tracing::warn!(error = %error, "reconcile failed");
            Requeue::requeue(Duration::from_secs(2))
        }
    }
}

async fn apply(fci: &FailoverClusterInstance, ctx: &Context) -> Result<Requeue> {
    let name = fci.name_any();
    let ns = fci.namespace().ok_or(Error::Missing("namespace"))?;
    let now = jiff::Timestamp::now();
    let observed = observe::observe(fci, &ctx.stores, now);
    let decision = decide::decide(
        &name,
        fci.metadata.generation,
        &fci.spec,
        fci.status.as_ref(),
        &observed,
    );

    // Record the intent before acting. `replace_status` carries the resourceVersion this
    // decision was made from: if anything changed meanwhile (another leader, a user), the
    // write fails with a conflict and nothing below runs.
    if fci.status.as_ref() != Some(&decision.status) {
        ctx.ensure_leader()?;
        let mut updated = fci.clone();
        updated.status = Some(decision.status.clone());
        let api: Api<FailoverClusterInstance> = Api::namespaced(ctx.client.clone(), &ns);
        api.replace_status(
            &name,
            &PostParams {
                field_manager: Some(FIELD_MANAGER.into()),
                ..Default::default()
            },
            &updated,
        )
        .await?;
        record_finished_moves(fci, &decision.status, ctx);
    }
    // The Service comes first (it may create the EndpointSlice); the actions of one round
    // are otherwise independent by construction (see `decide`) and go out together, so a
    // round costs one API round trip, not one per action. Events do not hold the round up.
    let (ensure, rest): (Vec<&Action>, Vec<&Action>) = decision
        .actions
        .iter()
        .partition(|a| matches!(a, Action::EnsureService | Action::EnsureClaims));
    for action in ensure {
        ctx.ensure_leader()?;
        execute(fci, action, ctx).await?;
    }
    ctx.ensure_leader()?;
    let (events, writes): (Vec<&Action>, Vec<&Action>) = rest
        .into_iter()
        .partition(|a| matches!(a, Action::Event(_)));
    futures::future::try_join_all(writes.into_iter().map(|a| execute(fci, a, ctx))).await?;
    for ev in events {
        if let Action::Event(ev) = ev {
            publish_event(fci, ev, ctx.recorder.clone());
        }
    }
    Ok(match decision.recheck_at {
        Some(at) => {
            let wait = now.duration_until(at).unsigned_abs();
            Requeue::requeue(wait.min(Duration::from_secs(300)) + Duration::from_millis(50))
        }
        None if decision.status.current_move.is_some() => Requeue::requeue(Duration::from_secs(5)),
        None => Requeue::requeue(Duration::from_secs(300)),
    })
}

fn record_finished_moves(
    fci: &FailoverClusterInstance,
    new: &crate::api::FailoverClusterInstanceStatus,
    ctx: &Context,
) {
    let was_moving = fci
        .status
        .as_ref()
        .is_some_and(|s| s.current_move.is_some());
    // A move ends only by being appended to the history.
    if !was_moving || new.current_move.is_some() {
        return;
    }
    if let Some(m) = new.history.last()
        && m.from.is_some()
    {
        let reason = m.reason.split(':').next().unwrap_or("Unknown").to_string();
        ctx.metrics
            .failovers
            .get_or_create(&metrics::ReasonLabel { reason })
            .inc();
        if let Some(online) = &m.online {
            ctx.metrics
                .failover_duration
                .observe(online.0.duration_since(m.started.0).as_secs_f64());
        }
    }
}

async fn execute(fci: &FailoverClusterInstance, action: &Action, ctx: &Context) -> Result<()> {
    let ns = fci.namespace().ok_or(Error::Missing("namespace"))?;
    let name = fci.name_any();
    let ssa = PatchParams::apply(FIELD_MANAGER).force();
    match action {
        Action::EnsureService => {
            let svc = build::service(fci);
            let api: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
            api.patch(&fci.spec.network_name.name, &ssa, &Patch::Apply(&svc))
                .await?;
            let slice_ref = ObjectRef::new(&fci.spec.network_name.name).within(&ns);
            if ctx.stores.slices.get(&slice_ref).is_none() {
                set_endpoints(fci, &[], ctx).await?;
            }
        }
        Action::EnsureClaims => {
            let api: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
            for claim in build::claims(fci) {
                let claim_name = claim.name_any();
                if ctx
                    .stores
                    .claims
                    .get(&ObjectRef::new(&claim_name).within(&ns))
                    .is_none()
                {
                    match api.create(&PostParams::default(), &claim).await {
                        Ok(_) => {}
                        Err(kube::Error::Api(e)) if e.code == 409 => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Action::SetEndpoints(addresses) => set_endpoints(fci, addresses, ctx).await?,
        Action::Fence { node } => fence(node, ctx).await?,
        Action::DeletePod { name: pod, force } => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            let dp = if *force {
                DeleteParams::default().grace_period(0)
            } else {
                DeleteParams::default()
            };
            match api.delete(pod, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Action::DeleteAttachment { name: va } => {
            let api: Api<VolumeAttachment> = Api::all(ctx.client.clone());
            match api.delete(va, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Action::CreatePod { node, seq } => {
            let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
            let pod = build::pod(fci, node, *seq);
            let pod_name = pod.name_any();
            // The API server's word, not the cache's: no other pod of the instance may exist.
            let existing = api
                .list(&ListParams::default().labels(&format!("{INSTANCE_LABEL}={name}")))
                .await?;
            if let Some(other) = existing.items.iter().find(|p| p.name_any() != pod_name) {
                tracing::info!(instance = %name, other = %other.name_any(), "not creating the pod: another pod of the instance still exists");
                return Ok(());
            }
            match api
                .create(
                    &PostParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        ..Default::default()
                    },
                    &pod,
                )
                .await
            {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Action::Event(ev) => publish_event(fci, ev, ctx.recorder.clone()),
    }
    Ok(())
}

/// Publishes an Event in the background: a slow events API must not slow a failover.
fn publish_event(fci: &FailoverClusterInstance, ev: &decide::Event, recorder: Recorder) {
    let reference: ObjectReference = fci.object_ref(&());
    let event = KubeEvent {
        type_: if ev.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: ev.reason.clone(),
        note: Some(ev.message.chars().take(1000).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    tokio::spawn(async move {
        if let Err(e) = recorder.publish(&event, &reference).await {
            tracing::warn!(error = %e, "publishing an event failed");
        }
    });
}

async fn set_endpoints(
    fci: &FailoverClusterInstance,
    addresses: &[String],
    ctx: &Context,
) -> Result<()> {
    let ns = fci.namespace().ok_or(Error::Missing("namespace"))?;
    let pod = ctx.stores.pods.state().into_iter().find(|p| {
        p.namespace().as_deref() == Some(&ns)
            && p.status
                .as_ref()
                .and_then(|s| s.pod_ip.as_ref())
                .is_some_and(|ip| addresses.contains(ip))
    });
    let slice = build::endpoint_slice(fci, addresses, pod.as_deref());
    let api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    api.patch(
        &fci.spec.network_name.name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&slice),
    )
    .await?;
    Ok(())
}

/// Adds the out-of-service taint, conditioned on the Node's resourceVersion.
async fn fence(node: &str, ctx: &Context) -> Result<()> {
    let api: Api<Node> = Api::all(ctx.client.clone());
    let mut n = api.get(node).await?;
    let taints = n
        .spec
        .get_or_insert_with(Default::default)
        .taints
        .get_or_insert_with(Vec::new);
    if taints.iter().any(|t| t.key == OUT_OF_SERVICE_TAINT) {
        return Ok(());
    }
    taints.push(Taint {
        key: OUT_OF_SERVICE_TAINT.into(),
        value: Some("nodeshutdown".into()),
        effect: "NoExecute".into(),
        time_added: None,
    });
    api.replace(
        node,
        &PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &n,
    )
    .await?;
    tracing::info!(node, "fenced: out-of-service taint added");
    Ok(())
}

/// Deleting an instance removes what the controller created for it, and nothing else: the
/// pod, the Service and EndpointSlice of its network name, and claims made from its
/// templates. Claims the user brought stay.
async fn cleanup(fci: &FailoverClusterInstance, ctx: &Context) -> Result<Requeue> {
    ctx.ensure_leader()?;
    let ns = fci.namespace().ok_or(Error::Missing("namespace"))?;
    let name = fci.name_any();
    let owned = |meta: &kube::api::ObjectMeta| {
        meta.owner_references
            .iter()
            .flatten()
            .any(|o| Some(&o.uid) == fci.metadata.uid.as_ref())
    };
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = ListParams::default().labels(&format!("{INSTANCE_LABEL}={name}"));
    for p in pods
        .list(&selector)
        .await?
        .items
        .iter()
        .filter(|p| owned(&p.metadata))
    {
        ignore_missing(pods.delete(&p.name_any(), &DeleteParams::default()).await)?;
    }
    let net = &fci.spec.network_name.name;
    let slices: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(s) = slices.get_opt(net).await?
        && owned(&s.metadata)
    {
        ignore_missing(slices.delete(net, &DeleteParams::default()).await)?;
    }
    let services: Api<Service> = Api::namespaced(ctx.client.clone(), &ns);
    if let Some(s) = services.get_opt(net).await?
        && owned(&s.metadata)
    {
        ignore_missing(services.delete(net, &DeleteParams::default()).await)?;
    }
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &ns);
    for t in &fci.spec.storage.claim_templates {
        let claim = format!("{name}-{}", t.name);
        if let Some(c) = claims.get_opt(&claim).await?
            && owned(&c.metadata)
        {
            ignore_missing(claims.delete(&claim, &DeleteParams::default()).await)?;
        }
    }
    Ok(Requeue::await_change())
}

fn ignore_missing<T>(r: kube::Result<T>) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn serve_http(
    addr: std::net::SocketAddr,
    metrics: Arc<Metrics>,
    instances: Store<FailoverClusterInstance>,
    health: Health,
    leader: Leadership,
) {
    use axum::{Router, http::StatusCode, routing::get};
    let m = metrics.clone();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = m.clone();
                // Instances by phase, counted from the cache at scrape time.
                m.instances.clear();
                for i in instances.state() {
                    let phase = i.status.as_ref().map(|s| s.phase).unwrap_or_default();
                    m.instances
                        .get_or_create(&metrics::PhaseLabel {
                            phase: format!("{phase:?}"),
                        })
                        .inc();
                }
                async move { m.render() }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let synced = health.synced.load(std::sync::atomic::Ordering::Acquire);
                let role = if leader.is_leader() {
                    "leader"
                } else {
                    "standby"
                };
                async move {
                    if synced {
                        (StatusCode::OK, format!("ok: caches synced, {role}"))
                    } else {
                        (
                            StatusCode::SERVICE_UNAVAILABLE,
                            "caches not synced".to_string(),
                        )
                    }
                }
            }),
        );
    match tokio::net::TcpListener::bind(addr).await {
        Ok(listener) => {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "http server stopped");
            }
        }
        Err(e) => tracing::error!(error = %e, %addr, "cannot bind the metrics address"),
    }
}
