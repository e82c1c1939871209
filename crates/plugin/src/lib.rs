//! The operator's verbs: `kubectl failover …` (the `kubectl-failover` plugin) and the same
//! as `kube-failover …` subcommands. They read and act through the API server only, with
//! the caller's kubeconfig and rights.
//!
//! This crate depends on the core (`kube-failover-core`) and kube only: no controller, no
//! node agent, no gRPC or netlink, so that the plugin builds for Linux, macOS and Windows.

mod dashboard;
mod drain;
mod history;
mod move_verb;
mod simulate;
mod start_stop;
mod status;
mod update_run;
mod validate;

use anyhow::Result;

pub use dashboard::DashboardArgs;
pub use drain::{DrainArgs, ResumeArgs};
pub use history::{HistoryArgs, timeline};
pub use kube_failover_core::validate::ValidateReport;
pub use move_verb::MoveArgs;
pub use simulate::{SimulateArgs, SimulateReport, Snapshot};
pub use start_stop::{FIELD_MANAGER, StartStopArgs};
pub use status::{StatusArgs, StatusReport};
pub use update_run::UpdateRunArgs;
pub use validate::ValidateArgs;

/// The verbs, shared by both binaries.
#[derive(Debug, clap::Subcommand)]
pub enum Verb {
    /// Member nodes (state, heartbeat age, instances, why not Up), each cluster's quorum and
    /// its margin, and the instances (owner, phase, VIP, endpoint, failovers, what they wait
    /// for).
    Status(StatusArgs),
    /// The moves of an instance (placements, failovers, planned moves), one line per step
    /// with its time.
    History(HistoryArgs),
    /// A live map in the browser, served on 127.0.0.1 with your kubeconfig: each cluster's
    /// members and quorum, each instance on its owner, moves step by step as they happen,
    /// and a timeline of the recent moves to scrub back through. Read-only unless
    /// `--allow-actions` (move, drain, resume).
    Dashboard(DashboardArgs),
    /// Bring an instance online: one left Failed (its failover count is reset), Offline, or
    /// NoAutoStart.
    Start(StartStopArgs),
    /// A planned move: the endpoint withdrawn, the pod stopped with its grace period, its
    /// volumes detached, then started on the target and published; nothing is fenced.
    /// Refused when the target cannot take it. Failback does not undo it.
    Move(MoveArgs),
    /// Pause a member node and move every instance it hosts off, higher priority first,
    /// with planned moves; nothing new is placed on it (it is cordoned). Refused if an
    /// instance would have nowhere to go.
    Drain(DrainArgs),
    /// Make a drained node eligible again; `--failback` moves back what the drain moved off.
    Resume(ResumeArgs),
    /// Take an instance offline: its endpoint withdrawn, its pod stopped with its grace
    /// period; its claims, Service and name kept.
    Stop(StartStopArgs),
    /// Rolling maintenance (Cluster-Aware Updating): one member at a time, drain it, run
    /// the hook (`--exec 'CMD {node}'`), wait until it is back, resume it; stops at the
    /// first failure, never costs the quorum, goes on where it stopped when run again.
    UpdateRun(UpdateRunArgs),
    /// Check that failover can work, as Test-Cluster does: the CRDs, the controller's leader
    /// and its RBAC, the Kubernetes version, the members' heartbeats and clocks, each
    /// cluster's quorum, and each instance's owners, claims and virtual IPs. Each check says
    /// PASS, WARN or FAIL and what to do; the exit status is 1 when any fails.
    Validate(ValidateArgs),
    /// What if: were these members to fail (`--fail NODE`) or be drained (`--drain NODE`),
    /// where each instance would go, or why it would be held (quorum, threshold,
    /// anti-affinity, no possible owner, a claim pinned to a node or zone), and how many
    /// would move: the controller's own decisions over the cluster as it is now. Changes
    /// nothing.
    Simulate(SimulateArgs),
}

/// How a report is printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Tables.
    #[default]
    Table,
    /// Tables with more columns.
    Wide,
    Json,
    Yaml,
}

impl Verb {
    /// Runs the verb with the client of the current kubeconfig (`KUBECONFIG`, its current
    /// context) or the pod's service account; returns the process's exit status.
    pub async fn run(self) -> Result<std::process::ExitCode> {
        let client = kube::Client::try_default().await?;
        match self {
            Verb::Status(args) => status::run(client, args).await,
            Verb::History(args) => history::run(client, args).await,
            Verb::Dashboard(args) => dashboard::run(client, args).await,
            Verb::Start(args) => start_stop::run(client, args, true).await,
            Verb::Move(args) => move_verb::run(client, args).await,
            Verb::Stop(args) => start_stop::run(client, args, false).await,
            Verb::Drain(args) => drain::drain(client, args).await,
            Verb::Resume(args) => drain::resume(client, args).await,
            Verb::UpdateRun(args) => update_run::run(client, args).await,
            Verb::Validate(args) => validate::run(client, args).await,
            Verb::Simulate(args) => simulate::run(client, args).await,
        }
    }
}

/// The namespace of the current kubeconfig context, else `default`.
async fn default_namespace() -> String {
    kube::Config::infer()
        .await
        .map(|c| c.default_namespace)
        .unwrap_or_else(|_| "default".into())
}

pub use kube_failover_core::validate::human_age;

/// Rows as a table: columns padded to their widest cell, three spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}   "));
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(header.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns() {
        let t = table(
            &["NAME", "STATE"],
            &[
                vec!["node-0".into(), "Up".into()],
                vec!["n1".into(), "Down".into()],
            ],
        );
        assert_eq!(t, "NAME     STATE\nnode-0   Up\nn1       Down\n");
    }
}
