//! Stopping the instance workloads on this node when the agent fences itself.

use std::time::Duration;

/// How the agent stops the instance workloads on its node when it fences itself.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct WorkloadArgs {
    /// A command run (by `sh -c`) to stop the instance workloads on this node, with
    /// `NODE_NAME` set: a wrapper around the container runtime, or a watchdog that reboots
    /// the node. Without it, the agent only takes its virtual IPs down.
    #[arg(long, env = "KUBE_FAILOVER_AGENT_STOP_COMMAND")]
    pub stop_command: Option<String>,
    /// Seconds the stop command may take before it is killed; counted in the self-fence time
    /// the agent announces.
    #[arg(
        long,
        env = "KUBE_FAILOVER_AGENT_STOP_TIMEOUT_SECONDS",
        default_value_t = 2.0
    )]
    pub stop_timeout_seconds: f64,
}

pub struct Workloads {
    args: WorkloadArgs,
    node: String,
}

impl Workloads {
    pub fn new(args: &WorkloadArgs, node: &str) -> Self {
        Self {
            args: args.clone(),
            node: node.into(),
        }
    }

    /// Stops every instance workload on this node, as configured; logs what it did.
    pub async fn stop_all(&self) {
        let Some(cmd) = &self.args.stop_command else {
            tracing::warn!(
                "no --stop-command: instance workloads on this node keep running; only the \
                 virtual IPs were taken down"
            );
            return;
        };
        let run = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("NODE_NAME", &self.node)
            .kill_on_drop(true)
            .status();
        let limit = Duration::from_secs_f64(self.args.stop_timeout_seconds);
        match tokio::time::timeout(limit, run).await {
            Ok(Ok(status)) if status.success() => {
                tracing::warn!("instance workloads stopped (stop command succeeded)");
            }
            Ok(Ok(status)) => tracing::error!(%status, "the stop command failed"),
            Ok(Err(e)) => tracing::error!(error = %e, "the stop command could not run"),
            Err(_) => tracing::error!(?limit, "the stop command did not finish in time"),
        }
    }
}
