use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kube_failover::controller::{self, LeaderConfig, RunOptions};

/// Failover cluster instances for Kubernetes.
#[derive(Parser)]
#[command(name = "kube-failover", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions as YAML, or write them to a directory.
    Crd {
        /// Write one file per CRD into this directory (the repository keeps them in crds/).
        #[arg(long)]
        out_dir: Option<std::path::PathBuf>,
    },
    /// Run the controller against the cluster of the current kubeconfig or service account.
    Run(RunArgs),
    /// Print the version.
    Version,
}

#[derive(clap::Args)]
struct RunArgs {
    /// Address for /metrics, /healthz and /readyz.
    #[arg(
        long,
        env = "KUBE_FAILOVER_METRICS_ADDR",
        default_value = "0.0.0.0:8080"
    )]
    metrics_addr: SocketAddr,
    /// Elect a leader on a Lease (off only for a single replica).
    #[arg(long, env = "KUBE_FAILOVER_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,
    /// Namespace of the leader Lease; defaults to the pod's namespace.
    #[arg(long, env = "POD_NAMESPACE", default_value = "kube-failover")]
    leader_namespace: String,
    #[arg(
        long,
        env = "KUBE_FAILOVER_LEASE_NAME",
        default_value = "kube-failover-leader"
    )]
    lease_name: String,
    /// Seconds a leader's Lease is valid without renewal. Short: instances on the node of a
    /// dead leader wait for it as well.
    #[arg(long, env = "KUBE_FAILOVER_LEASE_SECONDS", default_value_t = 6)]
    lease_seconds: u64,
    /// This replica's identity; defaults to the pod name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Watch and act in this namespace only (all namespaces when unset).
    #[arg(long, env = "KUBE_FAILOVER_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "KUBE_FAILOVER_LOG_JSON", default_value_t = false)]
    log_json: bool,
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,kube_client=warn,kube_runtime=warn")
    });
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd { out_dir: None } => print!("{}", kube_failover::crd::render()?),
        Command::Crd { out_dir: Some(dir) } => kube_failover::crd::write_dir(&dir)?,
        Command::Version => println!("kube-failover {}", env!("CARGO_PKG_VERSION")),
        Command::Run(args) => {
            init_tracing(args.log_json);
            let config = kube::Config::infer().await?;
            let identity = args
                .identity
                .unwrap_or_else(|| format!("kube-failover-{}", std::process::id()));
            let leader = args.leader_elect.then(|| LeaderConfig {
                namespace: args.leader_namespace.clone(),
                lease_name: args.lease_name.clone(),
                identity: identity.clone(),
                lease_duration: Duration::from_secs(args.lease_seconds.max(2)),
                renew_every: Duration::from_secs(args.lease_seconds.max(2)) / 3,
            });
            // The controller stops gracefully on SIGTERM; if it cannot (say the API server
            // is unreachable and a request hangs), do not make the kubelet wait for SIGKILL.
            tokio::spawn(async {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                        .expect("SIGTERM handler");
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
                tracing::warn!("graceful shutdown took over 5 s; exiting");
                std::process::exit(0);
            });
            controller::run_with_config(
                config,
                RunOptions {
                    namespace: args.watch_namespace,
                    handle_signals: true,
                    leader,
                    metrics_addr: Some(args.metrics_addr),
                    identity,
                },
            )
            .await?;
        }
    }
    Ok(())
}
