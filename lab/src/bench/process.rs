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
    let hwm_kib = status_kib(&status, "VmHWM:");
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

/// The process's resident memory now, in MiB.
pub(super) fn rss_now(pid: u32) -> Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    Ok(status_kib(&status, "VmRSS:") / 1024.0)
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(status: &str, field: &str) -> f64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// How many reconciles the controller has finished (`kube_failover_reconcile_duration_seconds_count`).
pub(super) fn reconciles(metrics: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("kube_failover_reconcile_duration_seconds_count "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

/// The controller's API requests so far, by verb (summed over resources).
pub(super) fn requests_by_verb(metrics: &str) -> BTreeMap<String, f64> {
    let mut by_verb = BTreeMap::new();
    for (verb, _, n) in requests(metrics) {
        *by_verb.entry(verb).or_insert(0.0) += n;
    }
    by_verb
}

/// The controller's API requests so far, by `verb resource` (`get pods`).
pub(super) fn requests_by_resource(metrics: &str) -> BTreeMap<String, f64> {
    requests(metrics)
        .map(|(verb, resource, n)| (format!("{verb} {resource}"), n))
        .collect()
}

/// Objects each of the controller's watches saw changed so far, by watch
/// (`kube_failover_watch_changes_total{watch="pods"} n`).
pub(super) fn watch_changes(metrics: &str) -> BTreeMap<String, f64> {
    metrics
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("kube_failover_watch_changes_total{watch=\"")?;
            let (watch, value) = rest.split_once("\"} ")?;
            Some((watch.to_string(), value.trim().parse().ok()?))
        })
        .collect()
}

/// `(verb, resource, count)` from `kube_failover_api_requests_total{verb="…",resource="…"} n`.
fn requests(metrics: &str) -> impl Iterator<Item = (String, String, f64)> + '_ {
    metrics.lines().filter_map(|l| {
        let labels = l.strip_prefix("kube_failover_api_requests_total{")?;
        let (labels, value) = labels.split_once("} ")?;
        let label = |name: &str| {
            labels.split(',').find_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                (k == name).then(|| v.trim_matches('"').to_string())
            })
        };
        Some((
            label("verb")?,
            label("resource").unwrap_or_default(),
            value.trim().parse().ok()?,
        ))
    })
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
    // Its log goes to stdout; both streams to the control plane's logs directory.
    let log = std::fs::File::create(cp.logs_dir().join("kube-failover.log"))?;
    let child = Command::new(bin)
        .args(["run", "--watch-namespace", NS, "--leader-elect", "false"])
        .args(["--metrics-addr", &addr.to_string()])
        .env("KUBECONFIG", cp.kubeconfig())
        // `KUBE_FAILOVER_BENCH_LOG` sets the controller's log filter (its log is in the
        // control plane's logs directory), e.g. `kube_failover_controller=trace` to see
        // what woke each reconcile.
        .env(
            "RUST_LOG",
            std::env::var("KUBE_FAILOVER_BENCH_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_by_verb_and_resource() {
        let m = "# TYPE kube_failover_api_requests counter\n\
                 kube_failover_api_requests_total{verb=\"get\",resource=\"pods\"} 3\n\
                 kube_failover_api_requests_total{verb=\"get\",resource=\"nodes\"} 2\n\
                 kube_failover_api_requests_total{verb=\"update\",resource=\"failoverclusterinstances/status\"} 5\n\
                 kube_failover_reconcile_errors_total{error=\"kube\"} 1\n";
        assert_eq!(
            requests_by_verb(m),
            BTreeMap::from([("get".into(), 5.0), ("update".into(), 5.0)])
        );
        assert_eq!(
            requests_by_resource(m).get("update failoverclusterinstances/status"),
            Some(&5.0)
        );
        assert_eq!(requests_by_resource(m).len(), 3);
    }
}
