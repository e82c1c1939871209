//! The fault injector of the chaos run: faults drawn from a seed, injected and healed.
//!
//! What each fault does to a node's kubelet, container runtime and agent, and how it is
//! healed, is tabled in `super::containers`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Node;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tokio::sync::mpsc::UnboundedSender;

use super::agents::{Agents, RENEW_WITHIN};
use super::checker::{FaultKind, FaultRecord, Observation, Observed};
use super::containers::Kubelets;
use super::kubelet::{StandIn, not_ready_kubelet, skewed_kubelet};
pub use super::replicas::Controllers;
use crate::controlplane::ControlPlane;
use crate::simruntime::Runtimes;

/// How long kube-apiserver stays stopped in an [`FaultKind::ApiServerStall`].
const STALL: Duration = Duration::from_secs(10);

/// What runs on each simulated node beside KWOK's heartbeats, for the faults to act on:
/// the node agents, the container runtimes, and which kubelets are alive.
pub struct Machines {
    pub agents: Agents,
    pub runtimes: Runtimes,
    pub kubelets: Kubelets,
}

/// A fault in progress and how to end it.
struct Active {
    id: u64,
    kind: FaultKind,
    node: Option<String>,
    process: Option<String>,
    heal_at: Instant,
    /// The stand-in kubelet of a NotReady or skewed node; stopped when healed.
    kubelet: Option<StandIn>,
}

/// The random draws of one step, drawn whatever is then chosen, so that one seed gives the
/// same sequence of draws however the cluster's state shapes the choices.
struct Draws {
    kind: f64,
    node: f64,
    duration: f64,
    extra: f64,
    beyond: f64,
    gap: f64,
}

/// The next fault's kind, and what injecting it needs.
struct Choice {
    kind: FaultKind,
    free: Vec<String>,
    beyond: bool,
    leader: Option<String>,
}

/// Injects faults at random, from a seed, for a while; heals each after a random duration.
pub struct Injector<'a> {
    cp: &'a ControlPlane,
    client: Client,
    namespace: String,
    nodes: Vec<String>,
    member_label: String,
    tx: UnboundedSender<Observation>,
    pub controllers: Controllers,
    pub machines: Machines,
    rng: StdRng,
    next_id: u64,
    active: Vec<Active>,
    /// Node faults at once that leave quorum (51 %) and an eligible node.
    max_faulty: usize,
    pub counts: BTreeMap<FaultKind, usize>,
    /// Node faults injected beyond `max_faulty`: the controller must wait, not misbehave.
    pub beyond_bound: usize,
    pub most_faulty_at_once: usize,
    pub apiserver_restart_seconds: Vec<f64>,
}

fn between(u: f64, lo: f64, hi: f64) -> Duration {
    Duration::from_secs_f64(lo + u * (hi - lo))
}

impl<'a> Injector<'a> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        cp: &'a ControlPlane,
        client: Client,
        namespace: &str,
        nodes: Vec<String>,
        member_label: &str,
        tx: UnboundedSender<Observation>,
        controllers: Controllers,
        machines: Machines,
        seed: u64,
    ) -> Self {
        let n = nodes.len();
        let quorum = (n * 51).div_ceil(100);
        Self {
            cp,
            client,
            namespace: namespace.into(),
            nodes,
            member_label: member_label.into(),
            tx,
            controllers,
            machines,
            rng: StdRng::seed_from_u64(seed),
            next_id: 1,
            active: Vec::new(),
            max_faulty: n.saturating_sub(quorum).max(1),
            counts: BTreeMap::new(),
            beyond_bound: 0,
            most_faulty_at_once: 0,
            apiserver_restart_seconds: Vec::new(),
        }
    }

    pub fn max_faulty(&self) -> usize {
        self.max_faulty
    }

    fn send(&self, what: Observed) {
        let _ = self.tx.send(Observation {
            at: Instant::now(),
            wall: jiff::Timestamp::now(),
            fresh: true,
            what,
        });
    }

    fn draws(&mut self) -> Draws {
        let mut u = || self.rng.random_range(0.0..1.0);
        Draws {
            kind: u(),
            node: u(),
            duration: u(),
            extra: u(),
            beyond: u(),
            gap: u(),
        }
    }

    /// Injects and heals faults until `until`, or until `stop` says so; then heals all.
    pub async fn run(
        &mut self,
        until: Instant,
        stop: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Result<()> {
        let mut next_inject = Instant::now();
        loop {
            let now = Instant::now();
            if now >= until || *stop.borrow() {
                break;
            }
            self.report_exits();
            let due: Vec<u64> = self
                .active
                .iter()
                .filter(|a| a.heal_at <= now)
                .map(|a| a.id)
                .collect();
            for id in due {
                self.heal(id).await?;
            }
            if now >= next_inject {
                let gap = self.inject().await?;
                next_inject = Instant::now() + between(gap, 2.0, 8.0);
            }
            let wake = self
                .active
                .iter()
                .map(|a| a.heal_at)
                .chain([next_inject, until])
                .min()
                .unwrap_or(until);
            tokio::select! {
                () = tokio::time::sleep_until(tokio::time::Instant::from_std(wake)) => {}
                _ = stop.changed() => {}
            }
        }
        self.heal_all().await
    }

    /// Tells the watcher of every controller replica and agent that exited by itself.
    fn report_exits(&mut self) {
        for gone in self.controllers.exited() {
            self.send(Observed::External {
                invariant: "a controller replica exited",
                message: gone,
            });
        }
        for gone in self.machines.agents.exited() {
            self.send(Observed::External {
                invariant: "a node agent exited",
                message: gone,
            });
        }
    }

    /// Heals every fault in progress and makes sure two replicas and every agent run.
    pub async fn heal_all(&mut self) -> Result<()> {
        let ids: Vec<u64> = self.active.iter().map(|a| a.id).collect();
        for id in ids {
            self.heal(id).await?;
        }
        while self.controllers.running() < 2 {
            let id = self.controllers.spawn()?;
            self.send(Observed::Note(format!("replica {id} started")));
        }
        self.report_exits();
        for node in self.nodes.clone() {
            if !self.machines.agents.running(&node) {
                self.machines.agents.restart(&node)?;
                self.send(Observed::Note(format!("the agent of {node} started again")));
            }
        }
        Ok(())
    }

    /// One fault, chosen at random among those that may be injected now. Returns the draw
    /// for the gap until the next.
    async fn inject(&mut self) -> Result<f64> {
        let d = self.draws();
        let Some(choice) = self.choose(&d).await else {
            return Ok(d.gap);
        };
        let id = self.next_id;
        self.next_id += 1;
        match (choice.kind, choice.leader) {
            (kind, _) if kind.is_node_fault() => {
                self.inject_on_node(kind, id, &d, &choice.free, choice.beyond)
                    .await?
            }
            (kind @ (FaultKind::LeaderKill | FaultKind::LeaderPause), Some(leader)) => {
                self.inject_on_leader(kind, id, &d, leader).await?
            }
            (FaultKind::LeaderKill | FaultKind::LeaderPause, None) => {}
            (FaultKind::AgentRollout, _) => self.roll_out_agents(id).await?,
            (FaultKind::ApiServerStall, _) => self.stall_apiserver(id).await?,
            (kind, _) => self.restart_apiserver(kind, id, &d).await?,
        }
        Ok(d.gap)
    }

    /// The kind of the next fault among those that may be injected now, and what it needs:
    /// the nodes free of faults, whether one more node fault goes beyond the bound, the
    /// leader. `None`: nothing may be injected now.
    async fn choose(&mut self, d: &Draws) -> Option<Choice> {
        let faulty: Vec<String> = self.active.iter().filter_map(|a| a.node.clone()).collect();
        let free: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| !faulty.contains(n))
            .cloned()
            .collect();
        let beyond = faulty.len() >= self.max_faulty;
        let node_ok = !free.is_empty()
            && (faulty.len() < self.max_faulty
                || (faulty.len() == self.max_faulty && d.beyond < 0.15));
        let global_busy = self.active.iter().any(|a| a.node.is_none());
        let leader = if global_busy {
            None
        } else {
            self.controllers.leader(&self.client).await
        };
        // An API server stall is injected with every agent running; until the first, the
        // faults that take an agent away wait, or a short run might never see one.
        let agents_all_up = self.active.iter().all(|a| !a.kind.downs_agent())
            && self.nodes.iter().all(|n| self.machines.agents.running(n));
        let stall_pending = !self.counts.contains_key(&FaultKind::ApiServerStall);
        let eligible: Vec<FaultKind> = FaultKind::ALL
            .into_iter()
            .filter(|k| match k {
                k if k.is_node_fault() => node_ok && !(stall_pending && k.downs_agent()),
                FaultKind::LeaderKill | FaultKind::LeaderPause => leader.is_some(),
                FaultKind::ApiServerStall => !global_busy && agents_all_up,
                _ => !global_busy,
            })
            .collect();
        // Kinds not injected yet go first, whatever the timing lets in at each draw, so that
        // a short run sees every kind; then node kills (what failovers are about) and
        // NotReady kubelets weigh more.
        let fresh: Vec<FaultKind> = eligible
            .iter()
            .filter(|k| !self.counts.contains_key(k))
            .copied()
            .collect();
        let eligible = if fresh.is_empty() { eligible } else { fresh };
        let weight = |k: &FaultKind| match k {
            FaultKind::NodeKill => 3.0,
            FaultKind::NodeNotReady => 2.0,
            _ => 1.0,
        };
        let total: f64 = eligible.iter().map(weight).sum();
        let mut pick = d.kind * total;
        let kind = eligible
            .iter()
            .find(|k| {
                pick -= weight(k);
                pick < 0.0
            })
            .or(eligible.last())
            .copied()?;
        Some(Choice {
            kind,
            free,
            beyond,
            leader,
        })
    }

    /// A fault of `kind` on one of the `free` nodes, for a random time.
    async fn inject_on_node(
        &mut self,
        kind: FaultKind,
        id: u64,
        d: &Draws,
        free: &[String],
        beyond: bool,
    ) -> Result<()> {
        let now = Instant::now();
        *self.counts.entry(kind).or_default() += 1;
        if beyond {
            self.beyond_bound += 1;
        }
        let idx = ((d.node * free.len() as f64) as usize).min(free.len() - 1);
        let node = free[idx].clone();
        let (lo, hi): (f64, f64) = match kind {
            FaultKind::NodeKill => (3.0, 40.0),
            FaultKind::NodeNotReady => (6.0, 45.0),
            FaultKind::NodeSkew => (10.0, 40.0),
            FaultKind::AgentKill => (3.0, 20.0),
            FaultKind::KubeletDead | FaultKind::NodeCutOff => (8.0, 40.0),
            _ => (5.0, 40.0),
        };
        // While some kinds of node fault have not been injected yet, node faults are kept
        // short: a short run frees its nodes for every kind in time.
        let hi = if self.node_kinds_pending() {
            hi.min(lo + 12.0)
        } else {
            hi
        };
        let lasts = between(d.duration, lo, hi);
        let skew = jiff::SignedDuration::from_secs(120 + (d.extra * 780.0) as i64);
        let detail = match kind {
            FaultKind::NodeSkew => format!(
                "clock {} min behind, for {:.1} s",
                skew.as_secs() / 60,
                lasts.as_secs_f64()
            ),
            _ => format!("for {:.1} s", lasts.as_secs_f64()),
        } + if beyond { ", beyond the bound" } else { "" };
        self.send(Observed::FaultStarted(FaultRecord {
            id,
            kind,
            node: Some(node.clone()),
            detail,
        }));
        let kubelet = self.start_node_fault(kind, &node, skew, id).await?;
        self.active.push(Active {
            id,
            kind,
            node: Some(node),
            process: None,
            heal_at: now + lasts,
            kubelet,
        });
        let count = self.active.iter().filter(|a| a.node.is_some()).count();
        self.most_faulty_at_once = self.most_faulty_at_once.max(count);
        Ok(())
    }

    /// Whether some kind of node fault has not been injected yet.
    fn node_kinds_pending(&self) -> bool {
        FaultKind::ALL
            .into_iter()
            .any(|k| k.is_node_fault() && !self.counts.contains_key(&k))
    }

    /// The leader replica killed (a new one started later) or paused past its Lease.
    async fn inject_on_leader(
        &mut self,
        kind: FaultKind,
        id: u64,
        d: &Draws,
        leader: String,
    ) -> Result<()> {
        let now = Instant::now();
        *self.counts.entry(kind).or_default() += 1;
        let (verb, lasts) = if kind == FaultKind::LeaderKill {
            ("SIGKILL; a new replica in", between(d.duration, 1.0, 8.0))
        } else {
            ("SIGSTOP for", between(d.duration, 3.0, 12.0))
        };
        self.send(Observed::FaultStarted(FaultRecord {
            id,
            kind,
            node: None,
            detail: format!("{leader}: {verb} {:.1} s", lasts.as_secs_f64()),
        }));
        if kind == FaultKind::LeaderKill {
            self.controllers.kill(&leader).await?;
        } else {
            self.controllers.pause(&leader)?;
        }
        self.active.push(Active {
            id,
            kind,
            node: None,
            process: Some(leader),
            heal_at: now + lasts,
            kubelet: None,
        });
        Ok(())
    }

    /// The API server restarted in place, by SIGKILL or SIGTERM; healed when it is ready.
    async fn restart_apiserver(&mut self, kind: FaultKind, id: u64, d: &Draws) -> Result<()> {
        *self.counts.entry(kind).or_default() += 1;
        let kill = d.extra < 0.5;
        self.send(Observed::FaultStarted(FaultRecord {
            id,
            kind,
            node: None,
            detail: if kill { "SIGKILL" } else { "SIGTERM" }.into(),
        }));
        let started = Instant::now();
        if kill {
            self.cp.kill_apiserver().await?;
        } else {
            self.cp.restart_apiserver().await?;
        }
        let took = started.elapsed().as_secs_f64();
        self.apiserver_restart_seconds.push(took);
        self.send(Observed::FaultEnded {
            id,
            detail: format!("ready again after {took:.1} s"),
        });
        Ok(())
    }

    async fn start_node_fault(
        &mut self,
        kind: FaultKind,
        node: &str,
        skew: jiff::SignedDuration,
        id: u64,
    ) -> Result<Option<StandIn>> {
        let seed = self.rng.random_range(0..u64::MAX) ^ id;
        Ok(match kind {
            FaultKind::NodeKill => {
                self.power_off(node).await?;
                retry(|| self.cp.nodes.kill(node)).await?;
                None
            }
            FaultKind::AgentKill => {
                self.machines.agents.kill(node).await?;
                None
            }
            FaultKind::KubeletDead => {
                self.machines.kubelets.set_alive(node, false);
                retry(|| self.cp.nodes.kill(node)).await?;
                None
            }
            FaultKind::NodeCutOff => {
                self.machines.kubelets.set_alive(node, false);
                self.machines.agents.cut_off(node);
                retry(|| self.cp.nodes.kill(node)).await?;
                None
            }
            FaultKind::NodeNotReady => {
                retry(|| self.cp.nodes.kill(node)).await?;
                Some(not_ready_kubelet(
                    self.client.clone(),
                    &self.namespace,
                    node,
                    seed,
                ))
            }
            FaultKind::NodeSkew => {
                retry(|| self.cp.nodes.kill(node)).await?;
                Some(skewed_kubelet(
                    self.client.clone(),
                    &self.namespace,
                    node,
                    skew,
                    seed,
                ))
            }
            FaultKind::NodeRelabel => {
                let patch =
                    serde_json::json!({"metadata": {"labels": {self.member_label.clone(): null}}});
                retry(|| self.patch_node(node, &patch)).await?;
                None
            }
            FaultKind::NodeCordon => {
                let patch = serde_json::json!({"spec": {"unschedulable": true}});
                retry(|| self.patch_node(node, &patch)).await?;
                None
            }
            _ => bail!("{kind:?} is not a node fault"),
        })
    }

    /// A power cut of `node`: its kubelet and agent die with it, its runtime is emptied and
    /// its agent's tmpfs lost. (KWOK's heartbeats are the caller's to stop.)
    async fn power_off(&mut self, node: &str) -> Result<()> {
        self.machines.kubelets.set_alive(node, false);
        self.machines.runtimes.power_off(node);
        self.machines.agents.kill(node).await?;
        self.machines.agents.wipe_state(node)
    }

    /// Restarts every agent that runs and can reach the API server, one node at a time,
    /// each once the one before has renewed again, as a DaemonSet's rolling update with
    /// maxUnavailable 1 does (the agent's readiness is its renewal). An agent that does not
    /// renew within [`RENEW_WITHIN`] stops the rollout, as it would stop the DaemonSet's,
    /// and is reported.
    async fn roll_out_agents(&mut self, id: u64) -> Result<()> {
        let kind = FaultKind::AgentRollout;
        *self.counts.entry(kind).or_default() += 1;
        let away: Vec<String> = self
            .active
            .iter()
            .filter(|a| a.kind.downs_agent())
            .filter_map(|a| a.node.clone())
            .collect();
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .filter(|n| self.machines.agents.running(n) && !away.contains(n))
            .cloned()
            .collect();
        self.send(Observed::FaultStarted(FaultRecord {
            id,
            kind,
            node: None,
            detail: format!("{} agents, one at a time", nodes.len()),
        }));
        let started = Instant::now();
        let mut rolled = 0;
        for node in &nodes {
            self.machines.agents.terminate(node).await?;
            let since = self.machines.agents.restart(node)?;
            if let Err(e) = self
                .machines
                .agents
                .await_renewed(node, since, RENEW_WITHIN)
                .await
            {
                self.send(Observed::External {
                    invariant: "a restarted agent renews",
                    message: format!("{e:#}: the rollout stops there"),
                });
                break;
            }
            rolled += 1;
        }
        self.send(Observed::FaultEnded {
            id,
            detail: format!(
                "{rolled} agents restarted and renewing again in {:.1} s",
                started.elapsed().as_secs_f64()
            ),
        });
        Ok(())
    }

    /// kube-apiserver stopped (SIGSTOP) for [`STALL`], then continued; healed when it
    /// answers again. Every client, the agents' too, hangs meanwhile.
    async fn stall_apiserver(&mut self, id: u64) -> Result<()> {
        let kind = FaultKind::ApiServerStall;
        *self.counts.entry(kind).or_default() += 1;
        let pid = apiserver_pid(self.cp)?;
        self.send(Observed::FaultStarted(FaultRecord {
            id,
            kind,
            node: None,
            detail: format!("SIGSTOP for {} s", STALL.as_secs()),
        }));
        nix::sys::signal::kill(pid, Signal::SIGSTOP).context("SIGSTOP to kube-apiserver")?;
        tokio::time::sleep(STALL).await;
        nix::sys::signal::kill(pid, Signal::SIGCONT).context("SIGCONT to kube-apiserver")?;
        let continued = Instant::now();
        tokio::time::timeout(Duration::from_secs(60), self.client.apiserver_version())
            .await
            .context("kube-apiserver does not answer 60 s after SIGCONT")??;
        self.send(Observed::FaultEnded {
            id,
            detail: format!(
                "SIGCONT; answering again after {:.1} s",
                continued.elapsed().as_secs_f64()
            ),
        });
        Ok(())
    }

    async fn patch_node(&self, node: &str, patch: &serde_json::Value) -> Result<()> {
        Api::<Node>::all(self.client.clone())
            .patch(node, &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        Ok(())
    }

    async fn heal(&mut self, id: u64) -> Result<()> {
        let Some(i) = self.active.iter().position(|a| a.id == id) else {
            return Ok(());
        };
        let mut a = self.active.remove(i);
        let mut detail = String::new();
        if let Some(kubelet) = a.kubelet.take() {
            // The stand-in kubelet stops first (no write of it in flight), then KWOK takes
            // the node back, heartbeats and Ready.
            kubelet.stop().await;
        }
        if let Some(node) = &a.node {
            match a.kind {
                FaultKind::NodeKill => {
                    self.machines.runtimes.power_on(node);
                    retry(|| self.cp.nodes.revive(node)).await?;
                    self.machines.kubelets.set_alive(node, true);
                    self.machines.agents.restart(node)?;
                    detail = "powered on: kubelet and agent started".into();
                }
                FaultKind::NodeNotReady | FaultKind::NodeSkew => {
                    retry(|| self.cp.nodes.revive(node)).await?;
                }
                FaultKind::AgentKill => {
                    self.machines.agents.restart(node)?;
                    detail = "agent started again".into();
                }
                FaultKind::KubeletDead => {
                    retry(|| self.cp.nodes.revive(node)).await?;
                    self.machines.kubelets.set_alive(node, true);
                    detail = "kubelet started again".into();
                }
                FaultKind::NodeCutOff => {
                    self.machines.agents.reconnect(node);
                    retry(|| self.cp.nodes.revive(node)).await?;
                    self.machines.kubelets.set_alive(node, true);
                    detail = "reconnected".into();
                }
                FaultKind::NodeRelabel => {
                    let patch = serde_json::json!({"metadata": {"labels": {self.member_label.clone(): "true"}}});
                    retry(|| self.patch_node(node, &patch)).await?;
                }
                FaultKind::NodeCordon => {
                    let patch = serde_json::json!({"spec": {"unschedulable": null}});
                    retry(|| self.patch_node(node, &patch)).await?;
                }
                _ => {}
            }
        } else if let Some(process) = &a.process {
            if a.kind == FaultKind::LeaderKill {
                let new = self.controllers.spawn()?;
                detail = format!("replica {new} started in place of {process}");
            } else {
                self.controllers.resume(process)?;
                detail = format!("SIGCONT to {process}");
            }
        }
        self.send(Observed::FaultEnded { id, detail });
        Ok(())
    }
}

/// Retries a write a few times: the API server may be briefly unavailable.
async fn retry<F, Fut>(mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    let mut attempt = 0;
    loop {
        match f().await {
            Ok(()) => return Ok(()),
            Err(e) if attempt >= 20 => return Err(e),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// The process of kube-apiserver (it changes with each restart).
fn apiserver_pid(cp: &ControlPlane) -> Result<Pid> {
    let pid = cp
        .pids()
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "kube-apiserver")
        })
        .context("no kube-apiserver process")?;
    Ok(Pid::from_raw(i32::try_from(pid)?))
}

/// A seed from the clock and the process, for runs not given one.
pub fn fresh_seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one((std::process::id(), Instant::now())) % 1_000_000
}
