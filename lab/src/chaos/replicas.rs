//! The controller replicas of the chaos run: processes of the binary that ships, each
//! electing a leader, which the injector kills and pauses.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, Result};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Client;
use kube::api::Api;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Leader election of the replicas: the Lease, its namespace, and its duration (short, as in
/// the safety tests).
pub const LEADER_LEASE: &str = "kube-failover-leader";
pub const LEADER_LEASE_SECONDS: u64 = 2;

/// Processes of the controller binary that ships, each a replica electing a leader.
pub struct Controllers {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    pub process_group: i32,
    pub logs: PathBuf,
    pub watch_namespace: String,
    pub lease_namespace: String,
    /// RUST_LOG of the replicas.
    pub log_filter: String,
    next: u32,
    running: BTreeMap<String, tokio::process::Child>,
    paused: BTreeSet<String>,
}

impl Controllers {
    pub fn new(
        bin: PathBuf,
        kubeconfig: PathBuf,
        process_group: i32,
        logs: PathBuf,
        watch_namespace: &str,
        lease_namespace: &str,
    ) -> Self {
        Self {
            bin,
            kubeconfig,
            process_group,
            logs,
            watch_namespace: watch_namespace.into(),
            lease_namespace: lease_namespace.into(),
            log_filter: "info,kube_client=warn,kube_runtime=warn".into(),
            next: 1,
            running: BTreeMap::new(),
            paused: BTreeSet::new(),
        }
    }

    /// Starts a new replica `ctl-N`, in the control plane's process group (so that it dies
    /// with it however this process ends), logging to `kube-failover-ctl-N.log` in the
    /// control plane's logs directory.
    pub fn spawn(&mut self) -> Result<String> {
        let id = format!("ctl-{}", self.next);
        self.next += 1;
        let addr: SocketAddr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let log = std::fs::File::create(self.logs.join(format!("kube-failover-{id}.log")))?;
        let child = tokio::process::Command::new(&self.bin)
            .args(["run", "--watch-namespace", &self.watch_namespace])
            .args(["--leader-namespace", &self.lease_namespace])
            .args(["--lease-name", LEADER_LEASE])
            .args(["--lease-seconds", &LEADER_LEASE_SECONDS.to_string()])
            .args(["--identity", &id, "--metrics-addr", &addr.to_string()])
            .env("KUBECONFIG", &self.kubeconfig)
            .env("RUST_LOG", &self.log_filter)
            .stdin(std::process::Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .process_group(self.process_group)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        self.running.insert(id.clone(), child);
        Ok(id)
    }

    fn pid(&self, id: &str) -> Result<Pid> {
        let child = self.running.get(id).context("no such replica")?;
        Ok(Pid::from_raw(i32::try_from(
            child.id().context("replica already reaped")?,
        )?))
    }

    /// The replica holding the leader Lease, if it is one of ours, running and not paused.
    pub async fn leader(&self, client: &Client) -> Option<String> {
        let lease = Api::<Lease>::namespaced(client.clone(), &self.lease_namespace)
            .get_opt(LEADER_LEASE)
            .await
            .ok()??;
        let holder = lease.spec?.holder_identity?;
        (self.running.contains_key(&holder) && !self.paused.contains(&holder)).then_some(holder)
    }

    pub async fn kill(&mut self, id: &str) -> Result<()> {
        nix::sys::signal::kill(self.pid(id)?, Signal::SIGKILL)?;
        if let Some(mut child) = self.running.remove(id) {
            child.wait().await?;
        }
        self.paused.remove(id);
        Ok(())
    }

    pub fn pause(&mut self, id: &str) -> Result<()> {
        nix::sys::signal::kill(self.pid(id)?, Signal::SIGSTOP)?;
        self.paused.insert(id.to_string());
        Ok(())
    }

    pub fn resume(&mut self, id: &str) -> Result<()> {
        nix::sys::signal::kill(self.pid(id)?, Signal::SIGCONT)?;
        self.paused.remove(id);
        Ok(())
    }

    pub fn running(&self) -> usize {
        self.running.len()
    }

    /// Replicas that exited without being killed, with how (each told once).
    pub fn exited(&mut self) -> Vec<String> {
        let mut gone = Vec::new();
        for (id, child) in &mut self.running {
            if let Ok(Some(status)) = child.try_wait() {
                gone.push((id.clone(), format!("{id} exited by itself: {status}")));
            }
        }
        for (id, _) in &gone {
            self.running.remove(id);
            self.paused.remove(id);
        }
        gone.into_iter().map(|(_, why)| why).collect()
    }

    pub async fn stop_all(&mut self) {
        for id in self.paused.clone() {
            let _ = self.resume(&id);
        }
        for (_, mut child) in std::mem::take(&mut self.running) {
            let _ = child.kill().await;
        }
    }
}
