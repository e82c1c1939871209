//! One reconcile of one instance: observe the caches, decide, record the decision in the
//! status (guarded by the resourceVersion it was made from), then act.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;

use super::actions::{self, execute, publish_event};
use super::cleanup::cleanup;
use super::error::{Error, Result};
use super::fence::Begun;
use super::metrics;
use super::{Context, FIELD_MANAGER};
use super::{foreign_pods, network, observe, vip_holders, written};
use kube_failover_core::api::NODE_LEASE_NAMESPACE;
use kube_failover_core::api::{AGENT_LEASE_LABEL, FINALIZER, FailoverClusterInstance};
use kube_failover_core::decide::{self, Action};

/// How long a status write may hold the anti-affinity lock.
const ANTI_AFFINITY_WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// How many rounds one reconcile may go through. A round whose writes the API server took
/// is followed at once by the next, decided on the answers (`own_writes`), not a watch
/// event later: a failover's steps that need nothing but this controller's own writes
/// (withdraw, fence, delete, create) go out back to back.
const ROUNDS_PER_RECONCILE: usize = 8;

pub async fn reconcile(fci: Arc<FailoverClusterInstance>, ctx: Arc<Context>) -> Result<Requeue> {
    // Inside the runtime's span, which names what woke the instance (`object.reason`).
    tracing::trace!("reconcile");
    if !ctx.leader.is_leader() {
        // Caches stay warm; everything is reconciled again on becoming leader.
        return Ok(Requeue::await_change());
    }
    if !ctx.synced() {
        // An empty cache is not an empty cluster: nothing is decided before every cache
        // has synced, and everything is reconciled again then.
        return Ok(Requeue::await_change());
    }
    if ctx.stores.own.instance_behind(
        &fci.key(),
        fci.resource_version().as_deref().unwrap_or_default(),
    ) {
        // This replica has written the instance since the version cached, and went on
        // from there: the watch event that brings its write is on its way, and wakes the
        // instance again. Deciding on the older version would repeat what was done.
        return Ok(Requeue::await_change());
    }
    let started = std::time::Instant::now();
    let ns = fci.namespace().ok_or(Error::Missing("namespace"))?;
    let api: Api<FailoverClusterInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, fci, |event| async {
        match event {
            Finalizer::Apply(fci) => match apply(&fci, &ctx).await {
                // The cached instance is older than the API's. The watch normally catches up
                // at once; after an API server restart it has been seen to lag for minutes,
                // so the round is decided again, once, on the instance read from the API.
                Err(Error::Kube(kube::Error::Api(e))) if e.code == 409 => {
                    match api.get_opt(&fci.name_any()).await? {
                        Some(fresh) if fresh.resource_version() != fci.resource_version() => {
                            tracing::debug!(instance = %fci.name_any(), "stale cache: deciding on the instance read from the API");
                            apply(&fresh, &ctx).await
                        }
                        _ => Err(Error::Kube(kube::Error::Api(e))),
                    }
                }
                other => other,
            },
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

/// Whether this round may hand an instance's virtual IPs to a node (`vipMode: Agent`, during
/// a move).
fn hands_over_vips(fci: &FailoverClusterInstance) -> bool {
    fci.spec.vip_mode == kube_failover_core::api::VipMode::Agent
        && !fci.spec.virtual_ips.is_empty()
        && fci
            .status
            .as_ref()
            .is_some_and(|s| s.current_move.is_some())
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
        e if e.is_stale_write() => {
            tracing::debug!(error = %e, "write from a stale version; retrying");
            Requeue::requeue(Duration::from_millis(200))
        }
        Error::NotLeader => Requeue::await_change(),
        _ => {
            tracing::warn!(error = %error, "reconcile failed");
            Requeue::requeue(Duration::from_secs(2))
        }
    }
}

/// Rounds, one after the other while each acts and the API server takes its writes: the
/// next round decides on the instance as the last status write returned it, or as the round
/// before carried it without writing (`decide::may_act_before_recording`). The last round
/// always writes what it carries.
async fn apply(fci: &FailoverClusterInstance, ctx: &Context) -> Result<Requeue> {
    let mut carried: Option<Carried> = None;
    let mut n = 1;
    loop {
        let last = n == ROUNDS_PER_RECONCILE;
        let (requeue, next) = round(fci, carried.as_ref(), !last, ctx).await?;
        match next {
            Some(next) if !last => carried = Some(next),
            _ => return Ok(requeue),
        }
        n += 1;
    }
}

/// The instance a round hands to the next one: as its status write returned it, or with the
/// status it decided and did not write (`unwritten`).
struct Carried {
    instance: FailoverClusterInstance,
    unwritten: bool,
}

/// One round: observe, decide, record the decision, act, and say when to look again; and,
/// when it acted and every write was taken, the instance for the next round. It decides on
/// `carried` when the round before handed it on, else on `cached`. With `may_defer`, a
/// round whose decision may go out before it is written (`may_act_before_recording`) on a
/// status this replica wrote last acts first, and hands its status on unwritten.
async fn round(
    cached: &FailoverClusterInstance,
    carried: Option<&Carried>,
    may_defer: bool,
    ctx: &Context,
) -> Result<(Requeue, Option<Carried>)> {
    let fci = carried.map_or(cached, |c| &c.instance);
    let unwritten = carried.is_some_and(|c| c.unwritten);
    let input = fci;
    // An instance with anti-affinity classes is decided one at a time, on its classmates'
    // statuses as last written (see `written::Written`).
    let mut written = if fci.spec.anti_affinity_classes.is_empty() {
        None
    } else {
        Some(ctx.written.lock().await)
    };
    let now = ctx.stores.heartbeats.clock().now();
    // Reads made from here on are newer than what the round decides on (see `FreshNodes`).
    let observed_at = std::time::Instant::now();
    // From here on, the instance is what it may serve: what its namespace was not granted of
    // its network name reaches no Service, no status and no agent.
    let cluster = ctx
        .stores
        .clusters
        .get(&ObjectRef::new(&fci.spec.cluster_ref));
    let mut admitted = network::admit(fci, cluster.as_deref(), &ctx.stores, &[]);
    if !admitted.to_claim.is_empty() {
        // Claimed now, so that an address is served in the round that claims it.
        ctx.ensure_leader()?;
        let answers = network::claim_now(fci, &admitted.to_claim, &ctx.client).await?;
        admitted = network::admit(fci, cluster.as_deref(), &ctx.stores, &answers);
    }
    let fci = &admitted.instance;
    let mut observed = observe_round(fci, ctx, written.as_deref(), now).await?;
    observed.network_withheld = admitted.withheld.clone();
    observed.addresses_to_claim = admitted.to_claim.clone();
    observed.addresses_to_release = admitted.to_release.clone();
    observed.service_refused = ctx.service_refused(&fci.key());
    // The EndpointSlice is attached to the Service of its name unless that is another's: one
    // attached otherwise counts as unpublished, and is written again.
    if let Some(slice) = ctx.stores.slice(
        &fci.namespace().unwrap_or_default(),
        &fci.spec.network_name.name,
    ) && slice
        .labels()
        .contains_key(super::build::SERVICE_NAME_LABEL)
        == ctx.service_taken(&fci.key())
    {
        observed.endpoints.clear();
    }
    // `observe` left out the pods labelled for the instance that it does not control.
    foreign_pods::report(fci, ctx);
    let decision = decide::decide(
        &fci.name_any(),
        fci.metadata.generation,
        &fci.spec,
        fci.status.as_ref(),
        &observed,
    );
    let changed = fci.status.as_ref() != Some(&decision.status);
    // Acting first needs the instance's version to be this replica's own last write (no
    // one else has written it since, as far as this replica can know), and a next round to
    // write what this one leaves unwritten: it follows only a round that changed something.
    let defer = may_defer
        && changed
        && written.is_none()
        && ctx.stores.own.wrote_last(
            &fci.key(),
            input.resource_version().as_deref().unwrap_or_default(),
            ctx.leader.term(),
        )
        && decide::may_act_before_recording(fci.status.as_ref(), &decision);
    let creates_pod = decision
        .actions
        .iter()
        .any(|a| matches!(a, Action::CreatePod { .. }));
    // A fence's reads go out with the status write that records it (`fence::Begun`).
    let mut begun = if defer {
        None
    } else {
        decision.actions.iter().find_map(|a| match a {
            Action::Fence { node, basis } => Begun::claim(node, basis, ctx),
            _ => None,
        })
    };
    let mut reads = actions::Reads {
        observed: observed_at,
        pods: None,
        fence: Default::default(),
    };
    let stored = if defer {
        None
    } else {
        // The list that a pod's creation waits on (no other pod of the instance) goes out
        // with the status write that records the creation: one round trip, not two. The
        // pod goes out only once both are answered, and not at all if the write is refused.
        let pods = async {
            if creates_pod {
                Some(actions::list_pods(fci, ctx).await)
            } else {
                None
            }
        };
        let fence_reads = async {
            if let Some(b) = begun.as_mut() {
                b.read(ctx).await;
            }
        };
        let (stored, pods, ()) = tokio::join!(
            record(fci, &decision, unwritten, ctx, written.as_deref_mut()),
            pods,
            fence_reads,
        );
        let stored = stored?;
        reads.pods = pods.transpose()?;
        stored
    };
    reads.fence = std::sync::Mutex::new(begun);
    drop(written);
    act(fci, &decision, ctx, &reads).await?;
    let requeue = match decision.recheck_at {
        Some(at) if hands_deadline(fci, &decision, &observed, at, ctx) => {
            // Its owner's timer wakes it when the verdict changes; this is a last resort.
            Requeue::requeue(Duration::from_secs(300))
        }
        Some(at) => {
            let wait = now.duration_until(at).unsigned_abs();
            Requeue::requeue(wait.min(Duration::from_secs(300)) + Duration::from_millis(50))
        }
        None if decision.status.current_move.is_some() => Requeue::requeue(Duration::from_secs(5)),
        None => Requeue::requeue(Duration::from_secs(300)),
    };
    // The next round follows at once only from a round that got somewhere (its status
    // changed) and wrote, or acted before writing: one that repeats what it asked before
    // waits for the world.
    let go_on = acts(&decision) && changed;
    let next = if defer {
        let mut instance = input.clone();
        instance.status = Some(decision.status);
        Some(Carried {
            instance,
            unwritten: true,
        })
    } else {
        stored.map(|instance| Carried {
            instance,
            unwritten: false,
        })
    };
    Ok((requeue, next.filter(|_| go_on)))
}

/// Hands a settled instance's next look to its owner's timer (see `deadlines`), when its
/// decision looks again for nothing else; whether it did.
fn hands_deadline(
    fci: &FailoverClusterInstance,
    decision: &decide::Decision,
    observed: &decide::Observed,
    at: jiff::Timestamp,
    ctx: &Context,
) -> bool {
    let Some(owner) = decision.status.owner_node.as_deref() else {
        return false;
    };
    let Some(health) = observed.node(owner) else {
        return false;
    };
    // Virtual IPs withheld from their owner wait on other agents' Leases, whose self-fence
    // times run out with no event: such an instance keeps its own timer.
    let vips_withheld = fci.spec.vip_mode == kube_failover_core::api::VipMode::Agent
        && !fci.spec.virtual_ips.is_empty()
        && decision
            .status
            .served
            .as_ref()
            .is_none_or(|s| s.vip_node.is_none());
    decision.recheck_for_owner
        && !vips_withheld
        && decision.status.current_move.is_none()
        && health.recheck_at == Some(at)
        && ctx.deadlines.hand(
            ObjectRef::from(fci),
            &fci.spec.cluster_ref,
            owner,
            health,
            at,
        )
}

/// Whether the decision writes anything but Events.
fn acts(decision: &decide::Decision) -> bool {
    decision
        .actions
        .iter()
        .any(|a| !matches!(a, Action::Event(_)))
}

/// What `decide` needs: the caches, with anti-affinity neighbours as last written and, while
/// virtual IPs are handed over, the agents' Leases read fresh.
async fn observe_round(
    fci: &FailoverClusterInstance,
    ctx: &Context,
    written: Option<&BTreeMap<String, written::Recorded>>,
    now: jiff::Timestamp,
) -> Result<decide::Observed> {
    let mut observed = observe::observe(fci, &ctx.stores, now);
    if let Some(written) = written {
        let instances = written::instances_as_written(&ctx.stores, written);
        let cluster = ctx
            .stores
            .clusters
            .get(&ObjectRef::new(&fci.spec.cluster_ref));
        observed.neighbours = observe::neighbours(
            fci,
            instances.iter().map(|i| i.as_ref()),
            cluster.as_deref(),
            |ns| observe::namespace_labels(&ctx.stores, ns),
        );
    }
    if hands_over_vips(fci) {
        // Who may hold the virtual IPs decides when they go to the new owner: read the agent
        // Leases fresh (the cache may lag), on top of what the cache says.
        let leases: Api<Lease> = Api::namespaced(ctx.client.clone(), NODE_LEASE_NAMESPACE);
        let selector = format!("{}={}", AGENT_LEASE_LABEL.0, AGENT_LEASE_LABEL.1);
        let live = leases
            .list(&ListParams::default().labels(&selector))
            .await?;
        let cluster = ctx
            .stores
            .clusters
            .get(&ObjectRef::new(&fci.spec.cluster_ref));
        observed.vip_holders.extend(vip_holders::vip_holders_among(
            &fci.key(),
            &live.items,
            &ctx.stores,
            cluster.as_deref(),
            now,
        ));
    }
    Ok(observed)
}

/// Records the intent before acting. `replace_status` carries the resourceVersion this
/// decision was made from: if anything changed meanwhile (another leader, a user), the
/// write fails with a conflict and nothing is done. A round that would act writes even an
/// unchanged status (the API server then stores nothing, but still checks the
/// resourceVersion): a leader that was paused past its Lease cannot act on a stale view.
/// `unwritten`: the status decided on was carried from a round that acted before writing it,
/// and is written now even if this round changes nothing. Returns the instance as the API
/// server stored it, if written.
async fn record(
    fci: &FailoverClusterInstance,
    decision: &decide::Decision,
    unwritten: bool,
    ctx: &Context,
    written: Option<&mut BTreeMap<String, written::Recorded>>,
) -> Result<Option<FailoverClusterInstance>> {
    if !unwritten && !acts(decision) && fci.status.as_ref() == Some(&decision.status) {
        return Ok(None);
    }
    let term = ctx.leader.term();
    ctx.ensure_leader()?;
    let ns = fci.namespace().ok_or(Error::Missing("namespace"))?;
    let mut updated = fci.clone();
    updated.status = Some(decision.status.clone());
    let api: Api<FailoverClusterInstance> = Api::namespaced(ctx.client.clone(), &ns);
    let params = PostParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    };
    let name = fci.name_any();
    let write = api.replace_status(&name, &params, &updated);
    let stored = if let Some(written) = written {
        // The lock waits for this write: it must not hold the other instances of the
        // class (and their failovers) for the client's whole read timeout.
        let stored = tokio::time::timeout(ANTI_AFFINITY_WRITE_TIMEOUT, write)
            .await
            .map_err(|_| {
                Error::Timeout("status write of an instance with anti-affinity classes")
            })??;
        written::record_written(written, stored.clone(), &ctx.stores);
        stored
    } else {
        write.await?
    };
    ctx.stores.own.wrote_instance(
        &fci.key(),
        stored.resource_version().unwrap_or_default(),
        term,
    );
    ctx.metrics
        .record_finished_moves(&fci.spec.cluster_ref, fci.status.as_ref(), &decision.status);
    Ok(Some(stored))
}

/// The Service comes first (it may create the EndpointSlice); the actions of one round are
/// otherwise independent by construction (see `decide`) and go out together, so a round
/// costs one API round trip, not one per action. Events do not hold the round up.
async fn act(
    fci: &FailoverClusterInstance,
    decision: &decide::Decision,
    ctx: &Context,
    reads: &actions::Reads,
) -> Result<()> {
    let (ensure, rest): (Vec<&Action>, Vec<&Action>) = decision
        .actions
        .iter()
        .partition(|a| matches!(a, Action::EnsureService | Action::EnsureClaims));
    for action in ensure {
        ctx.ensure_leader()?;
        let done = execute(fci, action, ctx, reads).await;
        if matches!(action, Action::EnsureService) {
            // A Service that cannot be written (refused by a policy, or another's) withholds
            // the network name only: said in `NetworkName` next round, and the round's other
            // writes (withdraw, fence, pod, claims) go on.
            match done {
                Ok(()) => ctx.set_service_refused(&fci.key(), None),
                Err(e) => {
                    tracing::warn!(instance = %fci.key(), error = %e, "the network name's Service was not written");
                    let taken = matches!(e, Error::NetworkNameTaken(_));
                    ctx.set_service_refused(&fci.key(), Some((e.to_string(), taken)));
                }
            }
            continue;
        }
        done?;
    }
    ctx.ensure_leader()?;
    let (events, writes): (Vec<&Action>, Vec<&Action>) = rest
        .into_iter()
        .partition(|a| matches!(a, Action::Event(_)));
    let written =
        futures::future::try_join_all(writes.into_iter().map(|a| execute(fci, a, ctx, reads)))
            .await;
    // The round's intent is recorded in the status: its Events tell of it even when a write
    // of the round failed (a Fence refused, say), or they would never be told at all.
    for ev in events {
        if let Action::Event(ev) = ev {
            publish_event(fci, ev, ctx.events.clone());
        }
    }
    written?;
    Ok(())
}
