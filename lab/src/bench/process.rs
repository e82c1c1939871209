//! The controller as a separate process, and what /proc and its /metrics say of it.

use crate::controlplane::{ControlPlane, http_get};
use anyhow::{Context, Result, bail};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::NS;

/// The controller binary: given, or `kube-failover` in the directory of this binary.
pub fn controller_bin(given: Option<&Path>) -> Result<PathBuf> {
    let bin = match given {
        Some(bin) => bin.to_path_buf(),
        None => std::env::current_exe()?
            .parent()
            .context("this binary has no directory")?
            .join("kube-failover"),
    };
    if !bin.is_file() {
        bail!(
            "controller binary {} not found: build it with `cargo build --release -p kube-failover` or pass --controller-bin",
            bin.display()
        );
    }
    Ok(bin)
}

pub(super) fn proc_stat(pid: u32) -> Result<(f64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let hwm_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15 of stat; after the ')' they are at 11 and 12.
    let ticks: f64 = fields
        .get(11)
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0);
    Ok((hwm_kib / 1024.0, ticks / 100.0))
}

pub(super) fn requests_by_verb(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| l.strip_prefix("kube_failover_api_requests_total{verb=\""))
        .filter_map(|rest| {
            let (verb, value) = rest.split_once("\"} ")?;
            Some((verb.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

pub(super) struct ControllerProcess {
    pub(super) child: Child,
    pub(super) addr: std::net::SocketAddr,
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(super) async fn spawn_controller(
    cp: &ControlPlane,
    bin: &Path,
) -> Result<(ControllerProcess, f64)> {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let started = Instant::now();
    let child = Command::new(bin)
        .args(["run", "--watch-namespace", NS, "--leader-elect", "false"])
        .args(["--metrics-addr", &addr.to_string()])
        .env("KUBECONFIG", cp.kubeconfig())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(
            cp.logs_dir().join("kube-failover.log"),
        )?)
        .spawn()?;
    let proc = ControllerProcess { child, addr };
    loop {
        if let Ok((200, _)) = http_get(addr, "/readyz").await {
            break;
        }
        if started.elapsed() > Duration::from_secs(300) {
            bail!("controller not ready after 300 s");
        }
        // Nothing to watch before the process listens.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok((proc, started.elapsed().as_secs_f64()))
}
