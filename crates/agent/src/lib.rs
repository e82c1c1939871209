//! The node agent (`kube-failover agent`), one per node (a DaemonSet, off unless enabled).
//!
//! On its node it:
//! - renews a heartbeat Lease, `kube-node-lease/kube-failover-agent-<node>`, every second,
//!   which a FailoverCluster may judge its members by (`heartbeat.source: Agent`);
//! - brings up the virtual IPs of each instance with `vipMode: Agent` that the controller
//!   grants this node (`status.served.vipNode`), as the controller admitted them
//!   (`status.served.virtualIPs`), announces them, and takes them down the moment the grant
//!   goes; its Lease lists the instances whose addresses are up
//!   (`kube-failover.io/holds-virtual-ips`), and the controller grants an instance to a new
//!   owner only once no other live agent lists it;
//! - fences itself: once it has not renewed its Lease for `--self-fence-seconds`, it takes
//!   every virtual IP down and stops the instance workloads on its node, so that a node cut
//!   off from the API server has stopped before the controller, which waits that long plus a
//!   margin after the Lease went stale, lets another node start a second copy.
//!
//! The addresses it brought up are kept in a state file on the node (`--state-dir`, tmpfs),
//! so that an agent restarted while cut off still knows what to take down, and carry a
//! marker on the interface for an agent whose state file was lost (`addresses::MARK`). It
//! takes down nothing else, and never brings up or takes down one of the node's own
//! addresses (its Node's `status.addresses`, or any address on the interface it did not
//! bring up): a virtual IP equal to a node's address must not take the node off the network
//! (`held`).

mod addresses;
pub mod announce;
pub mod cri;
mod guard;
mod held;
mod lease;
pub mod peers;
mod probes;
mod retire;
mod workloads;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use tokio::sync::Notify;

use kube_failover_core::api::{FailoverClusterInstance, GRANT_CONFIRM_MILLISECONDS, VipMode};
pub use retire::on_terminate;
pub use workloads::Workloads;

/// How the agent runs (the `kube-failover agent` flags).
#[derive(Clone, Debug, clap::Args)]
pub struct AgentArgs {
    /// This node's name (the chart sets it from the downward API).
    #[arg(long, env = "NODE_NAME")]
    pub node: String,
    /// The interface the virtual IPs are brought up on.
    #[arg(long, env = "KUBE_FAILOVER_AGENT_INTERFACE")]
    pub interface: String,
    /// Milliseconds between renewals of the heartbeat Lease.
    #[arg(long, env = "KUBE_FAILOVER_AGENT_RENEW_MS", default_value_t = 1000)]
    pub renew_ms: u64,
    /// Seconds (fractions allowed) without a successful renewal after which the agent takes
    /// its virtual IPs down and stops the instance workloads on its node, unless its peers
    /// hold it (`peers`). At least twice the renewal interval, so that one lost renewal does
    /// not fence a healthy node. Announced on its Lease; the controller fences the node only
    /// after this plus the stop timeout plus a margin have passed since the last renewal it
    /// saw.
    #[arg(
        long,
        env = "KUBE_FAILOVER_AGENT_SELF_FENCE_SECONDS",
        default_value_t = 4.0
    )]
    pub self_fence_seconds: f64,
    /// Announcements (gratuitous ARP / unsolicited NA) sent when an address comes up.
    #[arg(long, default_value_t = 3)]
    pub announcements: u32,
    /// Where the agent records the addresses it brought up (a tmpfs: /run).
    #[arg(
        long,
        env = "KUBE_FAILOVER_AGENT_STATE_DIR",
        default_value = "/run/kube-failover"
    )]
    pub state_dir: PathBuf,
    #[command(flatten)]
    pub workloads: workloads::WorkloadArgs,
    #[command(flatten)]
    pub probes: probes::ProbeArgs,
    #[command(flatten)]
    pub peers: peers::PeerArgs,
    /// This agent's pod (the chart sets it from the downward API): on SIGTERM, whether its
    /// DaemonSet still runs an agent on this node (`retire`).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    #[arg(long, env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,
}

impl AgentArgs {
    fn renew_every(&self) -> Duration {
        Duration::from_millis(self.renew_ms.max(100))
    }

    /// What the agent promises on its Lease: within this many seconds of its last renewal,
    /// its virtual IPs are down and its instance workloads stopped, or the stop timeout
    /// spent trying (millisecond precision).
    pub fn announced_self_fence(&self) -> f64 {
        let ms = ((self.self_fence_seconds + self.workloads.stop_timeout_seconds) * 1000.0).ceil();
        ms / 1000.0
    }

    /// The duration written on the Lease: two renewal intervals, in whole seconds. The
    /// controller counts two renewals it saw further apart than this as a break.
    pub fn lease_duration_seconds(&self) -> i32 {
        let ms = 2 * self.renew_every().as_millis();
        i32::try_from(ms.div_ceil(1000)).unwrap_or(i32::MAX).max(1)
    }

    fn lease_duration_ms(&self) -> u64 {
        u64::try_from(self.lease_duration_seconds()).unwrap_or(1) * 1000
    }

    /// The shortest self-fence time with which peers can still hold this agent through an
    /// API server stall that cuts every agent off at once: a peer says it is cut off only
    /// past its Lease's duration and the allowance, and this agent must hear so (a round of
    /// asks every renewal interval, and the answers' wait) before its own time runs out.
    pub fn self_fence_for_peers(&self) -> f64 {
        (self.lease_duration_ms() + kube_failover_core::api::PEER_CUT_OFF_ALLOWANCE_MILLISECONDS)
            as f64
            / 1000.0
            + (self.renew_every() + peers::answer_timeout(self)).as_secs_f64()
    }

    fn self_fence_after(&self) -> Duration {
        Duration::from_secs_f64(self.self_fence_seconds)
    }

    /// Refuses settings under which the agent would fence a healthy node, or promise what it
    /// cannot keep.
    pub fn validate(&self) -> Result<()> {
        let renew = self.renew_every().as_secs_f64();
        let finite = |v: f64| v.is_finite() && v >= 0.0;
        if !finite(self.self_fence_seconds) || !finite(self.workloads.stop_timeout_seconds) {
            anyhow::bail!(
                "--self-fence-seconds and --stop-timeout-seconds must be non-negative numbers"
            );
        }
        if self.self_fence_seconds < 2.0 * renew {
            anyhow::bail!(
                "--self-fence-seconds {} is less than twice the renewal interval ({renew} s): one \
                 late renewal would fence a healthy node; raise it to at least {} or renew more \
                 often (--renew-ms)",
                self.self_fence_seconds,
                2.0 * renew
            );
        }
        if self.peers.enabled() != self.peers.has_key() {
            anyhow::bail!(
                "--peer-address goes with --peer-key-file or --peer-key-secret: with both the \
                 agent asks its peers before it fences itself, with neither it asks no one"
            );
        }
        if self.peers.enabled() && self.self_fence_seconds < self.self_fence_for_peers() {
            tracing::warn!(
                self_fence_seconds = self.self_fence_seconds,
                "too short for the peers to hold this agent through an API server stall: every \
                 agent would fence itself; raise --self-fence-seconds to at least {}",
                self.self_fence_for_peers()
            );
        }
        Ok(())
    }
}

/// What the renewer and the address loop share.
struct Shared {
    /// When the last successful renewal was sent (its request's start).
    renewed: Mutex<Option<Instant>>,
    /// Instances (`namespace/name`) whose virtual IPs are up here, or about to be: what the
    /// Lease should say.
    holds: Mutex<BTreeSet<String>>,
    /// Renew now: what the Lease says changed.
    poke: Notify,
    /// The last successful renewal: when it was sent and the instances it listed.
    last: tokio::sync::watch::Sender<Option<(Instant, BTreeSet<String>)>>,
    /// The kubelet Lease `renewTime` since which the instance workloads of this node are
    /// stopped at the controller's request (`guard`), which the Lease attests.
    workloads_stopped: Mutex<Option<String>>,
    /// When the last successful renewal's answer came back (from start, until one has):
    /// what this agent tells its peers.
    answered: Mutex<Instant>,
    /// The peer groups of this node, as the clusters' status says now: what the Lease
    /// should say.
    /// `None` until the clusters are listed.
    groups: Mutex<Option<Vec<kube_failover_core::api::PeerGroup>>>,
    /// What the peer exchange keeps on the node, the groups the Lease may name among it
    /// (what the last successful renewal wrote, and what one under way writes): the ones
    /// asked.
    saved: peers::SavedFile,
    /// The last round of asks to the peers, while this agent cannot renew.
    verdict: Mutex<Option<peers::Verdict>>,
}

impl Shared {
    fn new(saved: peers::SavedFile) -> Self {
        Self {
            // Counted from start: an agent restarted on a node cut off fences itself all the same.
            renewed: Mutex::new(Some(Instant::now())),
            holds: Mutex::default(),
            poke: Notify::new(),
            last: tokio::sync::watch::Sender::new(None),
            workloads_stopped: Mutex::default(),
            answered: Mutex::new(Instant::now()),
            groups: Mutex::default(),
            saved,
            verdict: Mutex::default(),
        }
    }
}

/// Runs the agent until the process is stopped.
pub async fn run(client: kube::Client, args: AgentArgs) -> Result<()> {
    let interface = addresses::Interface::open(&args.interface).await?;
    let state = StateFile::new(&args.state_dir, &args.node)?;
    let workloads = Workloads::new(&args.workloads, &args.node);
    workloads.check().await;
    let shared = Arc::new(Shared::new(peers::SavedFile::open(
        &args.state_dir,
        &args.node,
    )));
    let probe = probes::ProbeState::new();
    tokio::spawn(probes::serve(args.clone(), probe.clone(), shared.clone()));
    tracing::info!(
        node = %args.node,
        interface = %args.interface,
        renew_ms = args.renew_ms,
        self_fence_seconds = args.self_fence_seconds,
        "node agent starting"
    );

    tokio::spawn(lease::renew(client.clone(), args.clone(), shared.clone()));
    tokio::spawn(guard::run(client.clone(), args.clone(), shared.clone()));
    tokio::spawn(peers::run(client.clone(), args.clone(), shared.clone()));
    let (node_tx, node_addresses) = tokio::sync::watch::channel(None);
    tokio::spawn(read_node_addresses(
        client.clone(),
        args.node.clone(),
        node_tx,
    ));

    let api: Api<FailoverClusterInstance> = Api::all(client.clone());
    let (store, writer) = reflector::store();
    let changed = Arc::new(Notify::new());
    let watch = {
        let changed = changed.clone();
        watcher(api, watcher::Config::default())
            .default_backoff()
            .reflect(writer)
            .applied_objects()
            .for_each(move |_| {
                changed.notify_one();
                futures::future::ready(())
            })
    };
    tokio::spawn(watch);

    let mut agent = Addresses {
        client,
        confirm_failing: false,
        interface,
        state,
        args: args.clone(),
        shared,
        workloads,
        fenced: false,
        node_addresses,
        refused: BTreeSet::new(),
    };
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = changed.notified() => {}
        }
        let ready = store.wait_until_ready();
        let synced = futures::FutureExt::now_or_never(ready).is_some();
        let instances = store.state();
        if let Err(e) = agent.sync(synced.then_some(instances.as_slice())).await {
            tracing::warn!(error = %format!("{e:#}"), "virtual IPs not in order; retrying");
        }
        probe.tick();
    }
}

/// How often the agent reads its Node's addresses again once it has them (until then, every
/// second). A node's addresses seldom change; a read that fails keeps the last ones.
const NODE_ADDRESSES_EVERY: Duration = Duration::from_secs(10);

/// Keeps `tx` up to date with this node's own addresses ([`node_addresses`]); `None` until
/// the first successful read, and until then no virtual IP comes up.
async fn read_node_addresses(
    client: kube::Client,
    node: String,
    tx: tokio::sync::watch::Sender<Option<BTreeSet<IpAddr>>>,
) {
    let api: Api<Node> = Api::all(client);
    let mut failing = false;
    loop {
        match api.get(&node).await {
            Ok(n) => {
                failing = false;
                let addresses = Some(node_addresses(&n));
                tx.send_if_modified(|current| {
                    let changed = *current != addresses;
                    *current = addresses;
                    changed
                });
            }
            Err(e) if !failing => {
                tracing::warn!(
                    node = %node,
                    error = %format!("{e:#}"),
                    "cannot read this node's addresses; retrying"
                );
                failing = true;
            }
            Err(_) => {}
        }
        let known = tx.borrow().is_some();
        tokio::time::sleep(if known {
            NODE_ADDRESSES_EVERY
        } else {
            Duration::from_secs(1)
        })
        .await;
    }
}

/// A node's own addresses: the IP addresses of its `status.addresses` (not its host names).
/// Pure, for tests.
pub fn node_addresses(node: &Node) -> BTreeSet<IpAddr> {
    node.status
        .iter()
        .flat_map(|s| s.addresses.iter().flatten())
        .filter_map(|a| a.address.parse().ok())
        .collect()
}

/// The virtual IPs of an instance as the controller admitted them, parsed:
/// `status.served.virtualIPs`, never `spec.virtualIPs`. The spec is the tenant's word; the
/// status carries only the addresses the cluster's address pools allow the instance.
fn vips(fci: &FailoverClusterInstance) -> Vec<IpAddr> {
    fci.status
        .iter()
        .filter_map(|s| s.served.as_ref())
        .flat_map(|s| s.virtual_ips.iter())
        .filter_map(|v| v.parse().ok())
        .collect()
}

/// The addresses this node should have up: the virtual IPs in the status of every
/// `vipMode: Agent` instance granted to it. Pure, for tests.
pub fn granted(node: &str, instances: &[Arc<FailoverClusterInstance>]) -> BTreeMap<IpAddr, String> {
    instances
        .iter()
        .filter(|f| f.spec.vip_mode == VipMode::Agent)
        .filter(|f| {
            f.status
                .as_ref()
                .and_then(|s| s.served.as_ref())
                .and_then(|s| s.vip_node.as_deref())
                == Some(node)
        })
        .flat_map(|f| vips(f).into_iter().map(move |ip| (ip, f.key())))
        .collect()
}

struct Addresses {
    client: kube::Client,
    /// The last attempt to confirm a grant failed (logged once until one succeeds).
    confirm_failing: bool,
    interface: addresses::Interface,
    state: StateFile,
    args: AgentArgs,
    shared: Arc<Shared>,
    workloads: Workloads,
    fenced: bool,
    /// This node's own addresses, as last read from its Node (`None` until the first read).
    node_addresses: tokio::sync::watch::Receiver<Option<BTreeSet<IpAddr>>>,
    /// Granted addresses left down because they are the node's own (warned about once).
    refused: BTreeSet<IpAddr>,
}

impl Addresses {
    /// Brings the interface in line with the grants (`None` until the watch has listed them:
    /// then nothing new comes up), or takes everything down when fenced.
    async fn sync(&mut self, instances: Option<&[Arc<FailoverClusterInstance>]>) -> Result<()> {
        let renewed = *self
            .shared
            .renewed
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let cut_off = renewed.is_none_or(|t| t.elapsed() >= self.args.self_fence_after());
        // Cut off, unless its peers are too, so many that no cluster of this node has its
        // quorum (`peers`): then the API server is down, not the node. Once fenced, it stays
        // so until it renews.
        let fence = cut_off && (self.fenced || !self.peers_hold());
        if fence && !self.fenced {
            tracing::warn!(
                seconds = self.args.self_fence_seconds,
                "no Lease renewal for the self-fence time: taking every virtual IP down and \
                 stopping the instance workloads on this node"
            );
        }
        if instances.is_none() && !fence {
            // Not listed yet (a restarted agent): what an earlier agent brought up stays up,
            // and the Lease says so, until the grants are known. Taking it down here made
            // every agent restart flap the instances' addresses.
            let recorded = self.state.load();
            self.set_holds(recorded.into_values().filter(|k| !k.is_empty()).collect());
            return Ok(());
        }
        // Fenced, nothing may be up: the controller may already have given it to another
        // node. Held, what is up stays up (nothing new comes up without a confirmed grant).
        let want: BTreeMap<IpAddr, String> = match instances {
            Some(list) if !fence => granted(&self.args.node, list),
            _ => BTreeMap::new(),
        };
        let node = self.node_addresses.borrow().clone();
        let (mut held, own) = self.release(&want, node.as_ref()).await?;
        if fence && !self.fenced {
            self.workloads.stop_all().await;
            self.fenced = true;
        } else if fence {
            self.workloads.keep_stopped().await;
        }
        if !cut_off && self.fenced {
            tracing::info!("Lease renewed again: no longer fenced");
            self.fenced = false;
        }
        // Until the node's addresses are known, nothing new comes up.
        let up = match node {
            Some(_) => self.bring_up_which(&want, &held, &own),
            None => BTreeMap::new(),
        };
        let new: BTreeSet<String> = up.values().cloned().collect();
        let confirmed = if new.is_empty() {
            BTreeSet::new()
        } else {
            match self.confirm(&new, &held).await {
                Ok(c) => {
                    self.confirm_failing = false;
                    c
                }
                Err(e) => {
                    if !self.confirm_failing {
                        tracing::warn!(
                            error = %format!("{e:#}"),
                            "a granted virtual IP stays down until the grant is confirmed; retrying"
                        );
                        self.confirm_failing = true;
                    }
                    BTreeSet::new()
                }
            }
        };
        for (ip, instance) in &up {
            if !confirmed.contains(instance) {
                continue;
            }
            // Recorded first: an agent that dies between the two still knows to take it down.
            // Forgotten again if it could not be added (someone else's appeared meanwhile).
            held.insert(*ip, instance.clone());
            self.state.save(&held)?;
            if let Err(e) = self.interface.add(*ip).await {
                held.remove(ip);
                self.state.save(&held)?;
                return Err(e);
            }
            tracing::info!(%ip, %instance, "virtual IP up");
            let (name, ip, count) = (self.interface.name.clone(), *ip, self.args.announcements);
            tokio::spawn(async move {
                if let Err(e) = announce::announce(&name, ip, count).await {
                    tracing::warn!(%ip, error = %format!("{e:#}"), "virtual IP not announced");
                }
            });
        }
        // An earlier agent's address granted to no instance here names none.
        self.set_holds(held.into_values().filter(|k| !k.is_empty()).collect());
        Ok(())
    }

    /// Whether the last round of asks, recent enough, said to hold (see `peers`).
    fn peers_hold(&self) -> bool {
        self.shared
            .verdict
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .is_some_and(|v| v.hold && v.asked.elapsed() <= peers::verdict_valid_for(&self.args))
    }

    /// Takes down the addresses this agent (or an earlier one, by its marker) brought up
    /// that are no longer in `want`, never one of the node's own (`node`: its Node's, as
    /// last read). Returns the addresses it still holds and the node's own.
    async fn release(
        &mut self,
        want: &BTreeMap<IpAddr, String>,
        node: Option<&BTreeSet<IpAddr>>,
    ) -> Result<(BTreeMap<IpAddr, String>, BTreeSet<IpAddr>)> {
        let recorded = self.state.load();
        let on_link = self.interface.addresses().await?;
        let sorted = held::sort(&recorded, &on_link, node.unwrap_or(&BTreeSet::new()), want);
        for ip in &sorted.forgotten {
            tracing::warn!(
                %ip,
                "an address recorded as brought up by this agent is one of the node's own: \
                 forgotten, and left up"
            );
        }
        let mut held = sorted.held;
        if held != recorded {
            self.state.save(&held)?;
        }
        for ip in held::to_take_down(&held, want) {
            self.interface.remove(ip).await?;
            held.remove(&ip);
            self.state.save(&held)?;
            tracing::info!(%ip, "virtual IP taken down");
        }
        Ok((held, sorted.own))
    }

    /// The granted addresses to bring up; a granted address that is one of the node's own
    /// stays as it is, with a warning when it is first seen.
    fn bring_up_which(
        &mut self,
        want: &BTreeMap<IpAddr, String>,
        held: &BTreeMap<IpAddr, String>,
        own: &BTreeSet<IpAddr>,
    ) -> BTreeMap<IpAddr, String> {
        let (up, refused) = held::to_bring_up(want, held, own);
        for ip in refused.difference(&self.refused) {
            tracing::warn!(
                %ip,
                instance = %want.get(ip).map_or("", String::as_str),
                "a granted virtual IP is one of this node's own addresses: left as it is"
            );
        }
        self.refused = refused;
        up
    }

    /// What the Lease should list; a change is written at once.
    fn set_holds(&self, holds: BTreeSet<String>) {
        let mut shared = self.shared.holds.lock().unwrap_or_else(|e| e.into_inner());
        if *shared != holds {
            *shared = holds;
            self.shared.poke.notify_one();
        }
    }

    /// Of the instances `new` granted here by the watch's view, those whose grant a
    /// consistent read confirms and which a Lease write has listed as held, all within
    /// [`GRANT_CONFIRM_MILLISECONDS`] of starting (the watch may be stale: a node back from a
    /// partition must not bring up what was meanwhile granted elsewhere). Only these may
    /// come up.
    async fn confirm(
        &self,
        new: &BTreeSet<String>,
        held: &BTreeMap<IpAddr, String>,
    ) -> Result<BTreeSet<String>> {
        let window = Duration::from_millis(GRANT_CONFIRM_MILLISECONDS);
        let attempt = async {
            let reads = new.iter().map(|key| {
                let (ns, name) = key.split_once('/').unwrap_or_default();
                let api: Api<FailoverClusterInstance> = Api::namespaced(self.client.clone(), ns);
                async move { anyhow::Ok((key, api.get_opt(name).await?)) }
            });
            let mut confirmed = BTreeSet::new();
            for (key, fci) in futures::future::try_join_all(reads).await? {
                if fci.is_some_and(|f| !granted(&self.args.node, &[Arc::new(f)]).is_empty()) {
                    confirmed.insert(key.clone());
                }
            }
            if confirmed.is_empty() {
                return Ok(confirmed);
            }
            let mut rx = self.shared.last.subscribe();
            let listed = Instant::now();
            let mut holds: BTreeSet<String> = held.values().cloned().collect();
            holds.extend(confirmed.iter().cloned());
            self.set_holds(holds);
            rx.wait_for(|last| {
                last.as_ref()
                    .is_some_and(|(sent, h)| *sent >= listed && confirmed.is_subset(h))
            })
            .await
            .context("the Lease renewer stopped")?;
            Ok(confirmed)
        };
        tokio::time::timeout(window, attempt)
            .await
            .with_context(|| format!("grant not confirmed within {window:?}"))?
    }
}

/// The addresses this agent brought up, on the node's tmpfs.
struct StateFile {
    path: PathBuf,
}

impl StateFile {
    fn new(dir: &std::path::Path, node: &str) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        Ok(Self {
            path: dir.join(format!("agent-{node}.json")),
        })
    }

    fn load(&self) -> BTreeMap<IpAddr, String> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    fn save(&self, held: &BTreeMap<IpAddr, String>) -> Result<()> {
        let tmp = self.path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(held)?)
            .with_context(|| format!("writing {}", tmp.display()))?;
        std::fs::rename(&tmp, &self.path)
            .with_context(|| format!("writing {}", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn instance(
        name: &str,
        mode: VipMode,
        spec_vips: &[&str],
        status: Option<serde_json::Value>,
    ) -> Arc<FailoverClusterInstance> {
        let mut fci: FailoverClusterInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1",
            "kind": "FailoverClusterInstance",
            "metadata": {"name": name, "namespace": "ns"},
            "spec": {
                "clusterRef": "c",
                "networkName": {"name": name, "ports": [{"name": "sql", "port": 5432}]},
                "virtualIPs": spec_vips,
                "template": {},
            },
        }))
        .unwrap();
        fci.spec.vip_mode = mode;
        fci.status = status.map(|s| serde_json::from_value(s).unwrap());
        Arc::new(fci)
    }

    fn served(vips: &[&str], vip_node: Option<&str>) -> Option<serde_json::Value> {
        Some(serde_json::json!({
            "served": {"dnsName": "db.ns.svc", "virtualIPs": vips, "vipNode": vip_node},
        }))
    }

    #[test]
    fn granted_takes_the_vips_from_the_status_not_the_spec() {
        // The tenant asked for two addresses; the controller admitted one.
        let fci = instance(
            "db",
            VipMode::Agent,
            &["10.0.0.11", "192.0.2.10"],
            served(&["192.0.2.10"], Some("n1")),
        );
        assert_eq!(
            granted("n1", &[fci]),
            BTreeMap::from([(ip("192.0.2.10"), "ns/db".to_string())])
        );
    }

    #[test]
    fn nothing_is_granted_without_admitted_vips() {
        // Asked for in the spec, but none admitted, or no status yet.
        let none = instance(
            "a",
            VipMode::Agent,
            &["192.0.2.10"],
            served(&[], Some("n1")),
        );
        let no_status = instance("b", VipMode::Agent, &["192.0.2.11"], None);
        assert!(granted("n1", &[none, no_status]).is_empty());
    }

    #[test]
    fn granted_is_only_this_nodes_and_only_agent_mode() {
        let here = instance(
            "a",
            VipMode::Agent,
            &[],
            served(&["192.0.2.10"], Some("n1")),
        );
        let there = instance(
            "b",
            VipMode::Agent,
            &[],
            served(&["192.0.2.11"], Some("n2")),
        );
        let moving = instance("c", VipMode::Agent, &[], served(&["192.0.2.12"], None));
        let external = instance(
            "d",
            VipMode::ExternalIPs,
            &[],
            served(&["192.0.2.13"], Some("n1")),
        );
        let all = [here, there, moving, external];
        assert_eq!(
            granted("n1", &all),
            BTreeMap::from([(ip("192.0.2.10"), "ns/a".to_string())])
        );
        assert_eq!(
            granted("n2", &all),
            BTreeMap::from([(ip("192.0.2.11"), "ns/b".to_string())])
        );
    }

    #[test]
    fn a_nodes_own_addresses_are_its_ip_addresses() {
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n1"},
            "status": {"addresses": [
                {"type": "InternalIP", "address": "10.0.0.11"},
                {"type": "ExternalIP", "address": "198.51.100.7"},
                {"type": "InternalIP", "address": "fd00::11"},
                {"type": "Hostname", "address": "n1"},
                {"type": "InternalDNS", "address": "n1.example.internal"},
            ]},
        }))
        .unwrap();
        assert_eq!(
            node_addresses(&node),
            BTreeSet::from([ip("10.0.0.11"), ip("198.51.100.7"), ip("fd00::11")])
        );
        assert!(node_addresses(&Node::default()).is_empty());
    }
}
