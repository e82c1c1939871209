//! The control socket: the playground's side, which kills and revives nodes, and the
//! `node` command's side.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};

use crate::controlplane::{NODE_ALIVE_LABEL, SimulatedNodes};
use kube_failover_core::api::FailoverCluster;

use super::*;

/// Answers `node` requests on the control socket: one line in (`kill NODE`, `revive NODE`,
/// `list`), then `ok` or `error` on a line and the text to show.
pub(super) async fn serve(
    listener: UnixListener,
    sim: SimulatedNodes,
    client: Client,
    nodes: Vec<String>,
) {
    let nodes = std::sync::Arc::new(nodes);
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let (sim, client, nodes) = (sim.clone(), client.clone(), nodes.clone());
        // Each request on its own: a client that never sends its line holds up no other.
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut line = String::new();
            let mut reader = BufReader::new(read.take(4096));
            let read_line = reader.read_line(&mut line);
            if !matches!(
                tokio::time::timeout(Duration::from_secs(10), read_line).await,
                Ok(Ok(_))
            ) {
                return;
            }
            let reply = match handle(line.trim(), &sim, &client, &nodes).await {
                Ok(text) => format!("ok\n{text}"),
                Err(e) => format!("error\n{e:#}"),
            };
            let _ = write.write_all(reply.as_bytes()).await;
            let _ = write.shutdown().await;
        });
    }
}

async fn handle(
    request: &str,
    sim: &SimulatedNodes,
    client: &Client,
    nodes: &[String],
) -> Result<String> {
    let (verb, node) = request.split_once(' ').unwrap_or((request, ""));
    let api: Api<Node> = Api::all(client.clone());
    match verb {
        "kill" | "revive" => {
            if !nodes.iter().any(|n| n == node) {
                bail!(
                    "no node {node:?} in the playground; its nodes are {}",
                    nodes.join(", ")
                );
            }
            let alive = api
                .get(node)
                .await?
                .labels()
                .get(NODE_ALIVE_LABEL)
                .is_some_and(|v| v == "true");
            match (verb, alive) {
                ("kill", false) => Ok(format!("{node} is already killed")),
                ("revive", true) => Ok(format!("{node} is already running")),
                ("kill", true) => {
                    sim.kill(node).await?;
                    Ok(format!(
                        "{node} killed: its heartbeats and its kubelet have stopped"
                    ))
                }
                _ => {
                    sim.revive(node).await?;
                    Ok(format!(
                        "{node} revived: its heartbeats and its kubelet start again"
                    ))
                }
            }
        }
        "list" => {
            let cluster = Api::<FailoverCluster>::all(client.clone())
                .get_opt(CLUSTER)
                .await?;
            let members: BTreeMap<String, String> = cluster
                .and_then(|c| c.status)
                .map(|s| {
                    s.members
                        .into_iter()
                        .map(|m| (m.name, format!("{:?}", m.state)))
                        .collect()
                })
                .unwrap_or_default();
            let mut out = format!("{:<10} {:<8} {:<8} MEMBER\n", "NODE", "POWER", "READY");
            for name in nodes {
                let node = api.get_opt(name).await?;
                let power = match &node {
                    Some(n)
                        if n.labels()
                            .get(NODE_ALIVE_LABEL)
                            .is_some_and(|v| v == "true") =>
                    {
                        "on"
                    }
                    Some(_) => "killed",
                    None => "deleted",
                };
                let ready = node
                    .as_ref()
                    .and_then(|n| n.status.as_ref()?.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
                    .map_or("-".to_string(), |c| c.status.clone());
                let member = members.get(name).map_or("-", String::as_str);
                out.push_str(&format!("{name:<10} {power:<8} {ready:<8} {member}\n"));
            }
            Ok(out.trim_end().to_string())
        }
        _ => bail!("unknown request {request:?}"),
    }
}

/// `kube-failover-lab node …`: asks the running playground; fails when none runs, the node
/// does not exist or the request failed.
pub async fn node(args: NodeArgs) -> Result<()> {
    let dir = state_dir(args.dir.as_deref())?;
    let socket = dir.join(SOCKET);
    let request = match &args.action {
        NodeAction::Kill { node } => format!("kill {node}\n"),
        NodeAction::Revive { node } => format!("revive {node}\n"),
        NodeAction::List => "list\n".to_string(),
    };
    let mut stream = UnixStream::connect(&socket).await.map_err(|e| {
        anyhow::anyhow!(
            "no playground is running with the state directory {} ({e}): start one with `kube-failover-lab playground`{}",
            dir.display(),
            if args.dir.is_some() {
                format!(" --dir {}", dir.display())
            } else {
                String::new()
            }
        )
    })?;
    stream.write_all(request.as_bytes()).await?;
    let mut reply = String::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_string(&mut reply))
        .await
        .context("the playground did not answer within 60 s")??;
    match reply.split_once('\n') {
        Some(("ok", text)) => {
            println!("{text}");
            Ok(())
        }
        Some(("error", text)) => bail!("{text}"),
        _ => bail!("the playground's answer makes no sense: {reply:?}"),
    }
}
