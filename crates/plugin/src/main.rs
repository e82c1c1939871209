//! `kubectl failover`: the operator's verbs as a kubectl plugin (kubectl runs an executable
//! named `kubectl-failover` found on PATH). The same verbs are `kube-failover` subcommands.

use clap::Parser;

/// Operate failover cluster instances: status, history, move, start, stop, drain, resume,
/// update-run, validate, simulate, dashboard.
#[derive(Parser)]
#[command(
    name = "kubectl failover",
    bin_name = "kubectl failover",
    version,
    about
)]
struct Plugin {
    #[command(subcommand)]
    verb: kubectl_failover::Verb,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match Plugin::parse().verb.run().await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
