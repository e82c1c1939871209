//! The playground's controller: in this process, or the given binary as a process.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use kube_failover_controller::{self as controller, RunOptions};

/// The controller, in this process or as a process of its own.
pub(super) struct Controller {
    /// In this process: a runtime of its own, whose shutdown ends every task of the
    /// controller at once.
    runtime: Option<tokio::runtime::Runtime>,
    /// A process: asks the task that waits for it to stop it, and that task.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    waiter: Option<tokio::task::JoinHandle<()>>,
    /// Receives why the controller stopped, should it stop by itself.
    pub(super) exited: tokio::sync::oneshot::Receiver<Result<()>>,
}

pub(super) fn stopped(
    exited: Result<Result<()>, tokio::sync::oneshot::error::RecvError>,
    log: &Path,
) -> anyhow::Error {
    let log = format!("the controller stopped (its log: {})", log.display());
    match exited {
        Ok(Err(e)) => e.context(log),
        _ => anyhow::anyhow!(log),
    }
}

impl Controller {
    /// Waits until the controller's caches have synced (its /readyz answers 200), or fails
    /// when it stops first or takes more than 120 s. Nothing tells before it listens: polled.
    pub(super) async fn ready(&mut self, addr: std::net::SocketAddr, log: &Path) -> Result<()> {
        let started = std::time::Instant::now();
        loop {
            if let Ok((200, _)) = crate::controlplane::http_get(addr, "/readyz").await {
                return Ok(());
            }
            match self.exited.try_recv() {
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
                Ok(result) => return Err(stopped(Ok(result), log)),
                Err(_) => {
                    return Err(anyhow::anyhow!(
                        "the controller stopped (its log: {})",
                        log.display()
                    ));
                }
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!(
                    "the controller was not ready within 120 s (its log: {})",
                    log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub(super) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.await;
        }
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        // A runtime may not be dropped (which blocks) on an async thread.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// `bin run` as a process in the control plane's process group (its watchdog kills it
/// with the rest however this process ends), logging to `log`. Stopped with SIGTERM, then
/// SIGKILL after 10 s.
pub(super) fn spawn_controller(
    bin: &Path,
    kubeconfig: &Path,
    process_group: i32,
    log: &Path,
    metrics_addr: std::net::SocketAddr,
) -> Result<Controller> {
    let file = std::fs::File::create(log)?;
    let mut child = tokio::process::Command::new(bin)
        .args(["run", "--leader-elect", "false", "--identity", "playground"])
        .args(["--metrics-addr", &metrics_addr.to_string()])
        .env("KUBECONFIG", kubeconfig)
        .env("NO_COLOR", "1")
        .env(
            "RUST_LOG",
            std::env::var("RUST_LOG")
                .unwrap_or_else(|_| "info,kube_client=warn,kube_runtime=warn".into()),
        )
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        .process_group(process_group)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let (tx, exited) = tokio::sync::oneshot::channel();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let name = bin.display().to_string();
    let waiter = tokio::spawn(async move {
        tokio::select! {
            status = child.wait() => {
                let _ = tx.send(Err(match status {
                    Ok(status) => anyhow::anyhow!("{name} exited: {status}"),
                    Err(e) => anyhow::Error::from(e).context(format!("waiting for {name}")),
                }));
            }
            _ = stop_rx => {
                if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGTERM,
                    );
                }
                if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_err() {
                    let _ = child.kill().await;
                }
            }
        }
    });
    Ok(Controller {
        runtime: None,
        stop: Some(stop),
        waiter: Some(waiter),
        exited,
    })
}

/// The controller, as `kube-failover run` runs it (the same `controller::run_with_config`,
/// built from the same sources as this binary), watching every namespace, logging to
/// `log`.
pub(super) fn start_controller(
    admin: kube::Config,
    token_file: &Path,
    log: &Path,
    metrics_addr: std::net::SocketAddr,
) -> Result<Controller> {
    let file = std::fs::File::create(log)?;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,kube_client=warn,kube_runtime=warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(std::sync::Mutex::new(file))
        .try_init();
    let mut config = admin;
    config.auth_info = kube::config::AuthInfo {
        token_file: Some(token_file.display().to_string()),
        ..Default::default()
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("controller")
        .enable_all()
        .build()?;
    let (tx, exited) = tokio::sync::oneshot::channel();
    runtime.spawn(async move {
        let result = controller::run_with_config(
            config,
            RunOptions {
                namespace: None,
                handle_signals: false,
                leader: None,
                metrics_addr: Some(metrics_addr),
                identity: "playground".into(),
                concurrent_reconciles: controller::DEFAULT_CONCURRENT_RECONCILES,
            },
        )
        .await;
        let _ = tx.send(result);
    });
    Ok(Controller {
        runtime: Some(runtime),
        stop: None,
        waiter: None,
        exited,
    })
}
