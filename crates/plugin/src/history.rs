//! `kubectl failover history INSTANCE`: the moves of an instance, one line per step.

use std::process::ExitCode;

use anyhow::{Context, Result};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::Api;

use super::default_namespace;
use kube_failover_core::api::{FailoverClusterInstance, Move};

#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The instance.
    pub instance: String,
    /// Its namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
}

/// The steps of `m` that were done, in the order of the failover sequence.
fn steps(m: &Move) -> Vec<(&'static str, &MicroTime)> {
    m.steps()
        .into_iter()
        .filter_map(|(_, label, t)| Some((label, t?)))
        .collect()
}

/// The timeline of `moves` (oldest first; `current`, in progress, last): a heading per move,
/// then one line per step with its time (UTC) and the time since the move started.
pub fn timeline(moves: &[Move], current: Option<&Move>) -> String {
    let mut out = String::new();
    let all = moves
        .iter()
        .map(|m| (m, false))
        .chain(current.map(|m| (m, true)));
    for (n, (m, in_progress)) in all.enumerate() {
        if n > 0 {
            out.push('\n');
        }
        out.push_str(&m.heading(in_progress));
        out.push('\n');
        for (step, t) in steps(m) {
            let since = t.0.duration_since(m.started.0).as_secs_f64();
            out.push_str(&format!(
                "  {}  +{since:>7.3} s  {step}\n",
                t.0.strftime("%Y-%m-%d %H:%M:%S%.3f")
            ));
        }
    }
    if out.is_empty() {
        out.push_str("No moves yet.\n");
    }
    out
}

pub async fn run(client: Client, args: HistoryArgs) -> Result<ExitCode> {
    let ns = match args.namespace {
        Some(ns) => ns,
        None => default_namespace().await,
    };
    let api: Api<FailoverClusterInstance> = Api::namespaced(client, &ns);
    let fci = api
        .get_opt(&args.instance)
        .await
        .context("reading the instance")?
        .with_context(|| {
            format!(
                "no FailoverClusterInstance {} in namespace {ns}",
                args.instance
            )
        })?;
    let status = fci.status.unwrap_or_default();
    print!(
        "{}",
        timeline(&status.history, status.current_move.as_ref())
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> MicroTime {
        MicroTime(jiff::Timestamp::from_millisecond(1_795_000_000_000 + ms).unwrap())
    }

    /// A move started at `started` with no step done yet.
    fn started(from: Option<&str>, reason: &str, planned: bool, started: i64) -> Move {
        Move::started(from.map(Into::into), None, reason, planned, at(started))
    }

    #[test]
    fn a_failover_reads_one_step_per_line() {
        let placed = Move {
            to: Some("a".into()),
            pod_created: Some(at(20)),
            online: Some(at(900)),
            ..started(None, "Placement", true, 0)
        };
        let failover = Move {
            to: Some("b".into()),
            endpoint_withdrawn: Some(at(60_021)),
            fenced: Some(at(60_043)),
            old_pod_gone: Some(at(60_081)),
            volumes_detached: Some(at(60_096)),
            pod_created: Some(at(60_133)),
            online: Some(at(62_783)),
            ..started(Some("a"), "NodeDown: LeaseStale", false, 60_000)
        };
        let t = timeline(&[placed, failover], None);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "placement on a (Placement), 0.9 s");
        assert!(lines[1].ends_with("+  0.000 s  started"), "{t}");
        assert_eq!(lines[4], "", "moves are set apart: {t}");
        assert_eq!(
            lines[5],
            "failover from a to b (NodeDown: LeaseStale), 2.8 s"
        );
        assert!(lines[7].ends_with("+  0.021 s  endpoint withdrawn"), "{t}");
        assert!(lines[8].contains("old owner fenced"), "{t}");
        assert!(
            lines[12].ends_with("+  2.783 s  online, endpoint published"),
            "{t}"
        );
        assert_eq!(lines.len(), 13, "{t}");
    }

    #[test]
    fn a_move_in_progress_says_so() {
        let m = started(Some("a"), "Failback", true, 0);
        let t = timeline(&[], Some(&m));
        assert!(
            t.starts_with("planned move from a (Failback), in progress\n"),
            "{t}"
        );
        assert_eq!(timeline(&[], None), "No moves yet.\n");
    }
}
