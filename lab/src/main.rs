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
    /// Start a local control plane with simulated member nodes of one FailoverCluster and
    /// the controller, and keep it running until Ctrl-C: prints a kubeconfig to try
    /// kube-failover with kubectl.
    Playground(kube_failover_lab::playground::PlaygroundArgs),
    /// Kill, revive or list the simulated nodes of the running playground.
    Node(kube_failover_lab::playground::NodeArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo => kube_failover_lab::demo::run().await?,
        Command::Bench(args) => {
            kube_failover_lab::bench::run(args).await?;
        }
        Command::Playground(args) => kube_failover_lab::playground::run(args).await?,
        Command::Node(args) => {
            // A message for the person at the terminal, without a backtrace.
            if let Err(e) = kube_failover_lab::playground::node(args).await {
                eprintln!("error: {e:#}");
                std::process::exit(1);
            }
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
