use std::net::SocketAddr;
use std::time::Duration;

use clap::{Parser, Subcommand};
use kube_failover_controller::{self as controller, LeaderConfig, RunOptions};

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
    /// Run the node agent on this node: virtual IPs, a one-second heartbeat, self-fencing.
    Agent(kube_failover_agent::AgentArgs),
    /// Renew a witness Lease (`kube-node-lease/kube-failover-witness-*`): the third vote of
    /// a FailoverCluster whose `quorum.witness.lease` names it.
    Witness(WitnessArgs),
    /// Print the version.
    Version,
    /// The operator's verbs, also the `kubectl failover` plugin.
    #[command(flatten)]
    Verb(kubectl_failover::Verb),
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
    /// This replica's identity in the leader Lease; defaults to the pod name, else the host
    /// name (a pod's host name is its name). Unique per replica.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Watch and act in this namespace only (all namespaces when unset).
    #[arg(long, env = "KUBE_FAILOVER_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Log as JSON lines.
    #[arg(long, env = "KUBE_FAILOVER_LOG_JSON", default_value_t = false)]
    log_json: bool,
    /// Instances reconciled at once, at most (never two rounds of one instance at once).
    /// Each round in flight holds what it observed of its cluster, so this bounds the
    /// controller's memory in a storm; the API server's throughput, not this, bounds how
    /// fast a storm is done.
    #[arg(long, env = "KUBE_FAILOVER_CONCURRENT_RECONCILES", default_value_t = controller::DEFAULT_CONCURRENT_RECONCILES, value_parser = clap::value_parser!(u16).range(1..))]
    concurrent_reconciles: u16,
}

#[derive(clap::Args)]
struct WitnessArgs {
    /// The Lease to renew in kube-node-lease, `kube-failover-witness-<name>`.
    #[arg(long, env = "KUBE_FAILOVER_WITNESS_LEASE")]
    lease: String,
    /// Milliseconds between renewals; the Lease's duration is three of them.
    #[arg(long, env = "KUBE_FAILOVER_WITNESS_RENEW_MS", default_value_t = 2000)]
    renew_ms: u64,
    /// Who renews it, as the Lease's holder; defaults to the pod name, else the host name.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
}

/// This replica's identity: the one given (`--identity` or `POD_NAME`), else the host name
/// (in a pod, the pod's name). Two replicas must never share one: both would believe they hold
/// the Lease. So with election on and neither known, there is none; with election off (a
/// single replica) it only names the reporter of Events.
fn choose_identity(
    given: Option<String>,
    hostname: Option<String>,
    leader_elect: bool,
) -> anyhow::Result<String> {
    let known = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    match (known(given), known(hostname)) {
        (Some(id), _) | (None, Some(id)) => Ok(id),
        (None, None) if !leader_elect => Ok("kube-failover".into()),
        (None, None) => anyhow::bail!(
            "no identity for leader election: set POD_NAME (the chart sets it to the pod's \
             name from the downward API) or --identity, unique per replica"
        ),
    }
}

/// The host name as the kernel has it (what gethostname(2) returns), else /etc/hostname.
fn hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            let name = std::fs::read_to_string(path).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
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
async fn main() -> anyhow::Result<std::process::ExitCode> {
    match Cli::parse().command {
        Command::Verb(verb) => {
            return Ok(verb.run().await.unwrap_or_else(|e| {
                eprintln!("error: {e:#}");
                std::process::ExitCode::FAILURE
            }));
        }
        Command::Crd { out_dir: None } => print!("{}", kube_failover_core::crd::render()?),
        Command::Crd { out_dir: Some(dir) } => write_crds(&dir)?,
        Command::Version => println!("kube-failover {}", env!("CARGO_PKG_VERSION")),
        Command::Agent(args) => {
            args.validate()?;
            init_tracing(false);
            let client = kube::Client::try_default().await?;
            // PID 1 of its container, the agent would ignore SIGTERM and wait for SIGKILL:
            // it exits at once instead. Nothing needs draining: its virtual IPs stay up (the
            // instance still serves through them) and its state file tells the next agent
            // on this node what it brought up; unless it is removed from the node for good,
            // when it takes them down and deletes its Lease first.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                done = kube_failover_agent::run(client.clone(), args.clone()) => done?,
                _ = term.recv() => {
                    let retire = kube_failover_agent::on_terminate(client, &args);
                    match tokio::time::timeout(std::time::Duration::from_secs(5), retire).await {
                        Ok(Ok(())) => {}
                        Ok(Err(e)) => tracing::warn!(
                            error = %format!("{e:#}"),
                            "SIGTERM: could not tell whether the agent is removed for good; \
                             everything is left as it is"
                        ),
                        Err(_) => tracing::warn!(
                            "SIGTERM: no answer within 5 s; everything is left as it is"
                        ),
                    }
                }
            }
        }
        Command::Witness(args) => {
            init_tracing(false);
            let config = controller::witness::WitnessConfig {
                identity: choose_identity(args.identity, hostname(), false)?,
                lease: args.lease,
                renew_every: Duration::from_millis(args.renew_ms),
            };
            config.validate()?;
            let client = kube::Client::try_default().await?;
            // PID 1 of its container: exits on SIGTERM rather than wait for SIGKILL. The
            // Lease is left to go stale: the vote ends when the controller stops hearing it.
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                done = controller::witness::run(client, config) => done?,
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Command::Run(args) => {
            init_tracing(args.log_json);
            let identity = choose_identity(args.identity, hostname(), args.leader_elect)?;
            let config = kube::Config::infer().await?;
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
                    concurrent_reconciles: args.concurrent_reconciles,
                },
            )
            .await?;
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// Writes each CRD to its file in `dir` (the repository keeps them in `crds/`).
fn write_crds(dir: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (file, crd) in kube_failover_core::crd::all() {
        std::fs::write(dir.join(file), kube_failover_core::crd::render_one(&crd)?)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::choose_identity;

    fn some(s: &str) -> Option<String> {
        Some(s.to_string())
    }

    #[test]
    fn the_identity_is_the_pod_name_else_the_host_name_else_none_when_electing() {
        assert_eq!(
            choose_identity(some("kf-5d8f-x2x7q"), some("host"), true).unwrap(),
            "kf-5d8f-x2x7q"
        );
        assert_eq!(
            choose_identity(None, some("kf-abc\n"), true).unwrap(),
            "kf-abc"
        );
        assert_eq!(
            choose_identity(some("  "), some("host"), true).unwrap(),
            "host"
        );
        let err = choose_identity(None, None, true).unwrap_err().to_string();
        assert!(err.contains("POD_NAME"), "{err}");
        assert!(choose_identity(some(""), some(" "), true).is_err());
        // A single replica without election needs no unique identity.
        assert_eq!(choose_identity(None, None, false).unwrap(), "kube-failover");
    }
}

/// jemalloc (see Cargo.toml): memory a burst took goes back to the system.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
