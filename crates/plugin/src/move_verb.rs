//! `kubectl failover move INSTANCE [--to NODE]`: Move-ClusterGroup, a planned move.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use kube::Client;
use kube::api::Api;
use kube::runtime::wait::await_condition;

use super::default_namespace;
use super::start_stop::{StartStopArgs, annotate};
use kube_failover_core::api::{
    FailoverCluster, FailoverClusterInstance, MOVE_ANNOTATION, MOVE_TO_ANNOTATION, MemberState,
    Phase,
};

#[derive(Debug, clap::Args)]
pub struct MoveArgs {
    #[command(flatten)]
    pub target: StartStopArgs,
    /// The node to move it to (a member that is Up); default: the next eligible owner in
    /// its order of preference.
    #[arg(long)]
    pub to: Option<String>,
}

/// Why `to` cannot take `fci` now, as far as its cluster's status tells (the controller
/// checks again).
fn refusal(
    fci: &FailoverClusterInstance,
    cluster: Option<&FailoverCluster>,
    to: &str,
) -> Option<String> {
    let status = fci.status.as_ref();
    let phase = status.map(|s| s.phase).unwrap_or_default();
    if !matches!(phase, Phase::Online | Phase::Degraded) {
        return Some(format!(
            "it is {phase:?}: only an instance on its owner can be moved (start it first)"
        ));
    }
    if status.and_then(|s| s.owner_node.as_deref()) == Some(to) {
        return Some(format!("{to} already owns it"));
    }
    let possible = &fci.spec.owners.possible;
    if !possible.is_empty() && !possible.iter().any(|p| p == to) {
        return Some(format!(
            "{to} is not one of its possible owners ({})",
            possible.join(", ")
        ));
    }
    let member = cluster
        .and_then(|c| c.status.as_ref())
        .and_then(|s| s.members.iter().find(|m| m.name == to));
    match member {
        None => Some(format!(
            "{to} is not a member of cluster {}",
            fci.spec.cluster_ref
        )),
        Some(m) if m.state != MemberState::Up => Some(format!(
            "{to} is {:?}{}",
            m.state,
            m.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        )),
        Some(_) => None,
    }
}

/// A planned move asked of the controller: the instance, where from and to, and the
/// request's id (the value of its annotation).
#[derive(Debug)]
pub(crate) struct MoveRequested {
    pub ns: String,
    pub instance: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub id: String,
}

impl MoveRequested {
    /// `ns/db: move from node-0 to node-2 requested`.
    pub fn message(&self) -> String {
        format!(
            "{}/{}: move from {} to {} requested",
            self.ns,
            self.instance,
            self.from.as_deref().unwrap_or("-"),
            self.to.as_deref().unwrap_or("the next eligible owner")
        )
    }
}

/// Asks for a planned move of `ns/instance` to `to` (default: the next eligible owner), as
/// `move` does: an error says why when the instance cannot be moved there; else the
/// instance is annotated and the controller does the rest.
pub(crate) async fn request_move(
    client: &Client,
    ns: &str,
    instance: &str,
    to: Option<&str>,
) -> Result<MoveRequested> {
    let api: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), ns);
    let fci = api
        .get_opt(instance)
        .await?
        .with_context(|| format!("no FailoverClusterInstance {instance} in namespace {ns}"))?;
    let from = fci.status.as_ref().and_then(|s| s.owner_node.clone());
    if let Some(to) = to {
        let cluster = Api::<FailoverCluster>::all(client.clone())
            .get_opt(&fci.spec.cluster_ref)
            .await?;
        if let Some(why) = refusal(&fci, cluster.as_ref(), to) {
            bail!("cannot move {ns}/{instance} to {to}: {why}");
        }
    } else if let Some(why) = refusal(&fci, None, "").filter(|w| w.starts_with("it is")) {
        bail!("cannot move {ns}/{instance}: {why}");
    }
    let id = jiff::Timestamp::now().to_string();
    annotate(
        &api,
        instance,
        serde_json::json!({ MOVE_ANNOTATION: id, MOVE_TO_ANNOTATION: to }),
    )
    .await?;
    Ok(MoveRequested {
        ns: ns.to_string(),
        instance: instance.to_string(),
        from,
        to: to.map(str::to_string),
        id,
    })
}

pub async fn run(client: Client, args: MoveArgs) -> Result<ExitCode> {
    let MoveArgs { target: args, to } = args;
    let ns = match &args.namespace {
        Some(ns) => ns.clone(),
        None => default_namespace().await,
    };
    let requested = request_move(&client, &ns, &args.instance, to.as_deref()).await?;
    println!("{}", requested.message());
    if !args.wait {
        return Ok(ExitCode::SUCCESS);
    }

    let MoveRequested { id, from, .. } = requested;
    let api: Api<FailoverClusterInstance> = Api::namespaced(client, &ns);
    let moved = move |i: Option<&FailoverClusterInstance>| {
        i.and_then(|i| i.status.as_ref()).is_some_and(|s| {
            s.move_request.as_deref() == Some(id.as_str())
                && s.phase == Phase::Online
                && s.current_move.is_none()
                && s.owner_node != from
                && (to.is_none() || s.owner_node == to)
        })
    };
    let wait = await_condition(api.clone(), &args.instance, moved);
    match tokio::time::timeout(Duration::from_secs(args.timeout), wait).await {
        Ok(Ok(Some(i))) => {
            let owner = i.status.and_then(|s| s.owner_node).unwrap_or_default();
            println!("{ns}/{}: online on {owner}", args.instance);
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok(None)) => bail!("{ns}/{} was deleted", args.instance),
        Ok(Err(e)) => Err(e).context("watching the instance"),
        Err(_) => {
            eprintln!(
                "{ns}/{}: not moved after {} s (see kubectl describe fci {} for a MoveRefused event)",
                args.instance, args.timeout, args.instance
            );
            Ok(ExitCode::FAILURE)
        }
    }
}
