//! The watcher's side of a run: its watches, stamped and forwarded, and its judging loop.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::storage::v1::VolumeAttachment;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::{oneshot, watch};

use crate::controlplane::AbortOnDrop;
use kube_failover_core::api::FailoverClusterInstance;

use super::*;

/// A watch backoff that retries within a second: the watcher must see the API server
/// again soon after a restart.
pub(super) struct QuickBackoff(pub(super) Duration);

impl Iterator for QuickBackoff {
    type Item = Duration;
    fn next(&mut self) -> Option<Duration> {
        let d = self.0;
        self.0 = (self.0 * 2).min(Duration::from_secs(1));
        Some(d)
    }
}

impl kube::runtime::utils::Backoff for QuickBackoff {
    fn reset(&mut self) {
        self.0 = Duration::from_millis(100);
    }
}

/// Forwards every event of a watch to the watcher, stamped when it arrived. An event is
/// fresh unless the watch failed or relisted in the last 2 s (then it may be old news).
pub(super) fn forward<K>(
    api: Api<K>,
    tx: UnboundedSender<Observation>,
    wrap: fn(Change<K>) -> Observed,
) -> AbortOnDrop
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    AbortOnDrop(tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .backoff(QuickBackoff(Duration::from_millis(100)))
            .boxed();
        let mut disturbed: Option<Instant> = None;
        while let Some(event) = events.next().await {
            let at = Instant::now();
            let quiet = disturbed.is_none_or(|d| at.duration_since(d) > Duration::from_secs(2));
            let (change, fresh) = match event {
                Ok(watcher::Event::Apply(o)) => (Change::Applied(o), quiet),
                Ok(watcher::Event::Delete(o)) => (Change::Deleted(o), quiet),
                Ok(watcher::Event::Init) => {
                    disturbed = Some(at);
                    (Change::Relist, false)
                }
                Ok(watcher::Event::InitApply(o)) => (Change::Relisted(o), false),
                Ok(watcher::Event::InitDone) => {
                    disturbed = Some(at);
                    (Change::RelistDone, false)
                }
                Err(e) => {
                    disturbed = Some(at);
                    (Change::Error(e.to_string()), false)
                }
            };
            let obs = Observation {
                at,
                wall: jiff::Timestamp::now(),
                fresh,
                what: wrap(change),
            };
            if tx.send(obs).is_err() {
                return;
            }
        }
    }))
}

/// Runs the watcher's judgement until `done`; prints faults as they come and each
/// violation with the recent history. Asks the injector to stop at the first violation
/// unless `keep_going`.
pub(super) async fn judge(
    mut checker: Checker,
    mut rx: UnboundedReceiver<Observation>,
    mut done: oneshot::Receiver<()>,
    stop: watch::Sender<bool>,
    keep_going: bool,
    start: Instant,
) -> Checker {
    let report = |c: &Checker, found: Vec<Violation>| {
        for v in found {
            let n = c.violations.len();
            println!(
                "\n!!! VIOLATION at {:+.3} s: {}: {}",
                v.at_seconds, v.invariant, v.message
            );
            if n <= 10 {
                println!(
                    "recent history (watcher's events and faults):\n{}",
                    c.history()
                );
            }
            if !keep_going {
                stop.send_replace(true);
            }
        }
    };
    let show = |o: &Observation| {
        let t = o.at.saturating_duration_since(start).as_secs_f64();
        match &o.what {
            Observed::FaultStarted(f) => println!("[{t:>7.1} s] fault {f}"),
            Observed::FaultEnded { id, detail } => {
                println!("[{t:>7.1} s] healed #{id} {detail}")
            }
            Observed::Note(n) => println!("[{t:>7.1} s] {n}"),
            _ => {}
        }
    };
    loop {
        tokio::select! {
            biased;
            obs = rx.recv() => match obs {
                Some(o) => {
                    show(&o);
                    let found = checker.observe(o);
                    report(&checker, found);
                }
                None => break,
            },
            _ = &mut done => {
                while let Ok(o) = rx.try_recv() {
                    show(&o);
                    let found = checker.observe(o);
                    report(&checker, found);
                }
                break;
            }
        }
    }
    let found = checker.finish();
    report(&checker, found);
    checker
}

/// The watcher's watches (pods, EndpointSlices, VolumeAttachments, Nodes, node Leases,
/// instances, Events) and its reader of the audit log at `audit_log`.
pub(super) fn start_watches(
    c: &Client,
    audit_log: PathBuf,
    tx: &UnboundedSender<Observation>,
) -> [AbortOnDrop; 8] {
    [
        forward(
            Api::<Pod>::namespaced(c.clone(), NS),
            tx.clone(),
            Observed::Pod,
        ),
        forward(
            Api::<EndpointSlice>::namespaced(c.clone(), NS),
            tx.clone(),
            Observed::Slice,
        ),
        forward(
            Api::<VolumeAttachment>::all(c.clone()),
            tx.clone(),
            Observed::Attachment,
        ),
        forward(Api::<Node>::all(c.clone()), tx.clone(), Observed::Node),
        forward(
            Api::<Lease>::namespaced(c.clone(), "kube-node-lease"),
            tx.clone(),
            Observed::Lease,
        ),
        forward(
            Api::<FailoverClusterInstance>::namespaced(c.clone(), NS),
            tx.clone(),
            Observed::Instance,
        ),
        forward(
            Api::<Event>::namespaced(c.clone(), NS),
            tx.clone(),
            Observed::Event,
        ),
        AbortOnDrop(tokio::spawn({
            let (path, tx) = (audit_log, tx.clone());
            async move {
                if let Err(e) = audit::follow(path, tx).await {
                    eprintln!("[chaos] reading the audit log failed: {e:#}");
                }
            }
        })),
    ]
}
