//! `kubectl failover start|stop INSTANCE`: Start-ClusterGroup and Stop-ClusterGroup.
//!
//! Both only annotate the instance (`kube-failover.io/offline`,
//! `kube-failover.io/start-requested`, see `api`), with their own field manager: the request
//! is audited, survives a controller restart, and a GitOps tool applying the instance's
//! manifest neither sees it as drift nor undoes it. The controller does the rest.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::wait::await_condition;

use super::default_namespace;
use kube_failover_core::api::{
    FailoverClusterInstance, OFFLINE_ANNOTATION, Phase, START_ANNOTATION,
};

/// The field manager of the verbs' writes.
pub const FIELD_MANAGER: &str = "kubectl-failover";

/// The instance a verb acts on, and whether to wait for the outcome.
#[derive(Debug, clap::Args)]
pub struct StartStopArgs {
    /// The instance.
    pub instance: String,
    /// Its namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Wait for the outcome: online (start, move), or offline with its pod gone (stop).
    #[arg(long)]
    pub wait: bool,
    /// How long `--wait` waits, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

fn online(i: Option<&FailoverClusterInstance>) -> bool {
    i.and_then(|i| i.status.as_ref())
        .is_some_and(|s| s.phase == Phase::Online && s.current_move.is_none())
}

fn stopped(i: Option<&FailoverClusterInstance>) -> bool {
    i.and_then(|i| i.status.as_ref())
        .is_some_and(|s| s.phase == Phase::Offline && s.owner_node.is_none())
}

/// Sets (or, with `null`, removes) annotations of instance `name`, as this tool.
pub(super) async fn annotate(
    api: &Api<FailoverClusterInstance>,
    name: &str,
    annotations: serde_json::Value,
) -> Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": annotations}});
    api.patch(
        name,
        &PatchParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..Default::default()
        },
        &Patch::Merge(&patch),
    )
    .await
    .with_context(|| format!("annotating {name}"))?;
    Ok(())
}

pub async fn run(client: Client, args: StartStopArgs, start: bool) -> Result<ExitCode> {
    let ns = match &args.namespace {
        Some(ns) => ns.clone(),
        None => default_namespace().await,
    };
    let api: Api<FailoverClusterInstance> = Api::namespaced(client, &ns);
    if api.get_opt(&args.instance).await?.is_none() {
        bail!(
            "no FailoverClusterInstance {} in namespace {ns}",
            args.instance
        );
    }
    let annotations = if start {
        serde_json::json!({
            OFFLINE_ANNOTATION: null,
            START_ANNOTATION: jiff::Timestamp::now().to_string(),
        })
    } else {
        serde_json::json!({ OFFLINE_ANNOTATION: "true" })
    };
    annotate(&api, &args.instance, annotations).await?;
    let (verb, done) = if start {
        ("start", "online")
    } else {
        ("stop", "offline")
    };
    println!("{ns}/{}: {verb} requested", args.instance);
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }
    let cond = if start { online } else { stopped };
    let wait = await_condition(api.clone(), &args.instance, cond);
    match tokio::time::timeout(Duration::from_secs(args.timeout), wait).await {
        Ok(Ok(_)) => {
            println!("{ns}/{}: {done}", args.instance);
            Ok(ExitCode::SUCCESS)
        }
        Ok(Err(e)) => Err(e).context("watching the instance"),
        Err(_) => {
            let why = api
                .get_opt(&args.instance)
                .await
                .ok()
                .flatten()
                .and_then(|i| i.status)
                .and_then(|s| s.conditions.into_iter().find(|c| c.type_ == "Online"))
                .map(|c| format!("{}: {}", c.reason, c.message))
                .unwrap_or_default();
            eprintln!(
                "{ns}/{}: not {done} after {} s; {why}",
                args.instance, args.timeout
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
