use clap::{Parser, Subcommand};

/// The kube-failover lab: a local control plane with simulated nodes, for trying and
/// measuring the controller without a cluster.
#[derive(Parser)]
#[command(name = "kube-failover-lab", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Start a local control plane with three simulated nodes, bring a sample instance
    /// online, kill its node and print the failover timeline.
    Demo,
    /// Measure failover latency, scale and cost on a local control plane, beside the floor
    /// and the Kubernetes baselines. Runs the `kube-failover` binary that ships.
    Bench(kube_failover_lab::bench::BenchArgs),
    /// Inject faults at random (seeded) on a local control plane for some minutes while an
    /// independent watcher checks the safety invariants; exits non-zero on a violation.
    Chaos(kube_failover_lab::chaos::ChaosArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo => kube_failover_lab::demo::run().await?,
        Command::Bench(args) => {
            kube_failover_lab::bench::run(args).await?;
        }
        Command::Chaos(args) => {
            let summary = kube_failover_lab::chaos::run(args).await?;
            anyhow::ensure!(
                summary.violations.is_empty(),
                "{} violation(s); reproduce with --seed {}",
                summary.violations.len(),
                summary.seed
            );
        }
    }
    Ok(())
}
