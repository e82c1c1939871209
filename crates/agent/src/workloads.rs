//! Stopping the instance workloads on this node when the agent fences itself.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::cri::{InstanceSandbox, Runtime};

/// How the agent stops the instance workloads on its node when it fences itself.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct WorkloadArgs {
    /// The container runtime's CRI socket (containerd: /run/containerd/containerd.sock,
    /// CRI-O: /var/run/crio/crio.sock). When fenced, the agent stops every pod sandbox of an
    /// instance on this node through it (containers first, given the stop timeout less a
    /// second to exit), and again every second while it stays fenced, since the kubelet
    /// would restart them.
    #[arg(long, env = "KUBE_FAILOVER_AGENT_CRI_SOCKET")]
    pub cri_socket: Option<PathBuf>,
    /// A command run (by `sh -c`) when the agent fences itself, with `NODE_NAME` set: a
    /// watchdog that reboots the node, or another way to stop the instance workloads. Runs
    /// beside the CRI stop. With neither, the agent only takes its virtual IPs down.
    #[arg(long, env = "KUBE_FAILOVER_AGENT_STOP_COMMAND")]
    pub stop_command: Option<String>,
    /// Seconds (fractions allowed) the workloads are given to stop, through CRI and the stop
    /// command alike; what is still running then is killed (CRI) or given up on (command).
    /// Counted in the self-fence time the agent announces.
    #[arg(
        long,
        env = "KUBE_FAILOVER_AGENT_STOP_TIMEOUT_SECONDS",
        default_value_t = 2.0
    )]
    pub stop_timeout_seconds: f64,
}

impl WorkloadArgs {
    fn stop_timeout(&self) -> Duration {
        Duration::from_secs_f64(self.stop_timeout_seconds.max(0.0))
    }

    /// The grace each container gets after SIGTERM: the stop timeout less a second for the
    /// runtime to kill and tear down, in whole seconds as CRI counts them.
    pub(crate) fn grace(&self) -> Duration {
        Duration::from_secs(
            self.stop_timeout()
                .saturating_sub(Duration::from_secs(1))
                .as_secs(),
        )
    }
}

/// How often a fenced agent looks for instance pods restarted by the kubelet.
const KEEP_STOPPED_EVERY: Duration = Duration::from_secs(1);

pub struct Workloads {
    args: WorkloadArgs,
    node: String,
    last_sweep: Option<Instant>,
}

impl Workloads {
    pub fn new(args: &WorkloadArgs, node: &str) -> Self {
        Self {
            args: args.clone(),
            node: node.into(),
            last_sweep: None,
        }
    }

    /// At start: says how workloads will be stopped, and whether the runtime answers.
    pub async fn check(&self) {
        match &self.args.cri_socket {
            Some(socket) => match Runtime::connect(socket).await {
                Ok(mut rt) => match rt.instance_sandboxes().await {
                    Ok(found) => tracing::info!(
                        socket = %socket.display(),
                        instance_pods = found.len(),
                        "container runtime reachable: instance pods are stopped through it when fenced"
                    ),
                    Err(e) => tracing::error!(
                        socket = %socket.display(),
                        error = %format!("{e:#}"),
                        "the container runtime does not list pods: self-fencing could not stop them"
                    ),
                },
                Err(e) => tracing::error!(
                    error = %format!("{e:#}"),
                    "the container runtime is not reachable: self-fencing could not stop instance pods"
                ),
            },
            None if self.args.stop_command.is_none() => tracing::warn!(
                "neither --cri-socket nor --stop-command: when fenced, the agent only takes its \
                 virtual IPs down; instance workloads keep running"
            ),
            None => {}
        }
    }

    /// Stops every instance workload on this node, as configured, within the stop timeout;
    /// logs what it did. Returns whether they are known to be stopped: each configured way
    /// (CRI, the stop command) succeeded in time, and at least one is configured.
    pub async fn stop_all(&mut self) -> bool {
        let limit = self.args.stop_timeout();
        let work = futures::future::join(self.stop_through_cri(), self.run_stop_command());
        let done = match tokio::time::timeout(limit, work).await {
            Ok((cri, command)) => cri.unwrap_or(true) && command.unwrap_or(true),
            Err(_) => {
                tracing::error!(
                    ?limit,
                    "instance workloads not all stopped within the stop timeout"
                );
                false
            }
        };
        self.last_sweep = Some(Instant::now());
        done && (self.args.cri_socket.is_some() || self.args.stop_command.is_some())
    }

    /// While fenced: stops again, at most once a second, what the kubelet restarted.
    pub async fn keep_stopped(&mut self) {
        if self.args.cri_socket.is_none()
            || self
                .last_sweep
                .is_some_and(|t| t.elapsed() < KEEP_STOPPED_EVERY)
        {
            return;
        }
        self.last_sweep = Some(Instant::now());
        let limit = self.args.stop_timeout();
        if tokio::time::timeout(limit, self.stop_through_cri())
            .await
            .is_err()
        {
            tracing::error!(
                ?limit,
                "instance workloads not all stopped within the stop timeout"
            );
        }
    }

    /// `None` without a CRI socket; else whether every instance pod was stopped.
    async fn stop_through_cri(&self) -> Option<bool> {
        let Some(socket) = &self.args.cri_socket else {
            return None;
        };
        let stopped = async {
            let mut rt = Runtime::connect(socket).await?;
            let sandboxes = rt.instance_sandboxes().await?;
            let mut stopped: Vec<InstanceSandbox> = Vec::new();
            let mut failed = false;
            for s in sandboxes {
                match rt.stop(&s, self.args.grace()).await {
                    Ok(()) => stopped.push(s),
                    Err(e) => {
                        failed = true;
                        tracing::error!(pod = %s.pod, error = %format!("{e:#}"), "instance pod not stopped")
                    }
                }
            }
            anyhow::Ok((stopped, failed))
        };
        match stopped.await {
            Ok((s, _)) if s.is_empty() => Some(true),
            Ok((s, failed)) => {
                let pods: Vec<&str> = s.iter().map(|s| s.pod.as_str()).collect();
                tracing::warn!(?pods, "instance pods stopped through the container runtime");
                Some(!failed)
            }
            Err(e) => {
                tracing::error!(
                    error = %format!("{e:#}"),
                    "instance pods not stopped: the container runtime failed"
                );
                Some(false)
            }
        }
    }

    /// `None` without a stop command; else whether it succeeded.
    async fn run_stop_command(&self) -> Option<bool> {
        let Some(cmd) = &self.args.stop_command else {
            return None;
        };
        let status = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(cmd)
            .env("NODE_NAME", &self.node)
            .kill_on_drop(true)
            .status()
            .await;
        match status {
            Ok(status) if status.success() => {
                tracing::warn!("stop command succeeded");
                Some(true)
            }
            Ok(status) => {
                tracing::error!(%status, "the stop command failed");
                Some(false)
            }
            Err(e) => {
                tracing::error!(error = %e, "the stop command could not run");
                Some(false)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(stop: f64) -> WorkloadArgs {
        WorkloadArgs {
            stop_timeout_seconds: stop,
            ..Default::default()
        }
    }

    #[test]
    fn containers_get_the_stop_timeout_less_a_second() {
        assert_eq!(args(2.0).grace(), Duration::from_secs(1));
        assert_eq!(args(10.5).grace(), Duration::from_secs(9));
        // Less than a second: killed at once, there is no time for more.
        assert_eq!(args(0.5).grace(), Duration::ZERO);
        assert_eq!(args(-1.0).grace(), Duration::ZERO);
    }
}
