//! Asking the peers before fencing itself.
//!
//! An agent that cannot renew its Lease cannot tell whether its node is cut off or the API
//! server is down for everyone (a stall, an etcd hiccup, a restart). Fencing in the second
//! case stops every instance of the cluster at once, while the controller, which cannot
//! reach the API server either, moves nothing. So, before it fences itself, it asks the
//! agents of the other members of each FailoverCluster its node belongs to, over the node
//! network, whether they can reach the API server. It holds (keeps its workloads and
//! virtual IPs) only when, in **every** such cluster, so many members are cut off too
//! (itself included) that the cluster lacks its quorum: then no controller can fail
//! anything over there either. A peer that does not answer counts as reachable: a node cut
//! off from its peers and the API server alike fences itself, as before.
//!
//! Why the controller's wait covers it: a peer says it is cut off only when it has gone
//! longer than its Lease's duration, plus [`PEER_CUT_OFF_ALLOWANCE_MILLISECONDS`], without
//! a successful renewal, so the controller has seen a break in that peer's renewals. The
//! controller counts on this agent's self-fence only once, in one of the groups this agent
//! named on its Lease ([`PEER_GROUPS_ANNOTATION`], as its last successful renewal said),
//! enough members have renewed without a break for the whole self-fence time: every answer
//! this agent acted on in that time then said "reachable", and it fenced itself.
//!
//! The exchange is one UDP datagram each way, authenticated with HMAC-SHA256 under a key
//! every agent shares (a Secret the chart makes): an ask carries a fresh nonce, the answer
//! binds it, so that nobody on the node network can make an agent hold by forging or
//! replaying "cut off".

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Api, ResourceExt};
use ring::hmac;
use serde::{Deserialize, Serialize};

use super::{AgentArgs, Shared};
use kube_failover_core::api::{
    AGENT_LEASE_LABEL, FailoverCluster, NODE_LEASE_NAMESPACE, PEER_ADDRESS_ANNOTATION,
    PEER_CUT_OFF_ALLOWANCE_MILLISECONDS, PeerGroup,
};

/// How the agent reaches its peers (the `kube-failover agent` flags). Both or neither: with
/// neither, the agent fences itself whenever it cannot renew, asking no one.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct PeerArgs {
    /// Where this agent answers its peers (UDP), and what it tells them on its Lease: the
    /// node's address on the node network and a port (the chart: the host IP and 9811).
    #[arg(long, env = "KUBE_FAILOVER_AGENT_PEER_ADDRESS")]
    pub peer_address: Option<SocketAddr>,
    /// A file holding the key every agent shares, to authenticate asks and answers (at
    /// least 32 bytes).
    #[arg(
        long,
        env = "KUBE_FAILOVER_AGENT_PEER_KEY_FILE",
        conflicts_with = "peer_key_secret"
    )]
    pub peer_key_file: Option<PathBuf>,
    /// Or a Secret (`namespace/name`) whose `key` holds it. The first agent to find the
    /// Secret without one writes a random key (a conditional update, so that all agents end
    /// up with the same); the others read it. Read once, at start.
    #[arg(long, env = "KUBE_FAILOVER_AGENT_PEER_KEY_SECRET")]
    pub peer_key_secret: Option<String>,
}

impl PeerArgs {
    /// Whether the agent asks its peers.
    pub fn enabled(&self) -> bool {
        self.peer_address.is_some()
    }

    pub(super) fn has_key(&self) -> bool {
        self.peer_key_file.is_some() || self.peer_key_secret.is_some()
    }
}

/// The key of the Secret's data that holds the peer key.
const SECRET_KEY: &str = "key";

/// Reads the shared key from `namespace/name`, writing a random one first if it has none.
/// Its bytes, checked to make a key.
async fn key_from_secret(client: &kube::Client, secret: &str) -> Result<Vec<u8>> {
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    let (ns, name) = secret
        .split_once('/')
        .with_context(|| format!("--peer-key-secret {secret}: namespace/name expected"))?;
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut backoff = Duration::from_millis(250);
    loop {
        let attempt = async {
            let mut current = api.get(name).await?;
            if let Some(key) = current.data.as_ref().and_then(|d| d.get(SECRET_KEY)) {
                Key::new(&key.0)?;
                return anyhow::Ok(Some(key.0.clone()));
            }
            let mut bytes = [0u8; 48];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
                .map_err(|_| anyhow::anyhow!("no randomness for the peer key"))?;
            current
                .data
                .get_or_insert_with(Default::default)
                .insert(SECRET_KEY.into(), ByteString(bytes.to_vec()));
            // Conditional on the resourceVersion read: of two agents, one wins, the other
            // reads the winner's key on its next try.
            api.replace(name, &Default::default(), &current).await?;
            Ok(None)
        };
        match attempt.await {
            Ok(Some(key)) => return Ok(key),
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(%secret, error = %format!("{e:#}"), "peer key not read yet; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
            }
        }
    }
}

/// Wire format version, bound into every MAC.
const DOMAIN: &str = "kube-failover-peer-v1";

/// The smallest key accepted.
const MIN_KEY_BYTES: usize = 32;

/// An ask: "can you reach the API server?".
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ask {
    pub from: String,
    pub to: String,
    pub nonce: String,
    pub mac: String,
}

/// An answer: how long ago this peer's last successful renewal was, and its Lease's
/// duration.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    pub node: String,
    pub to: String,
    pub nonce: String,
    pub age_ms: u64,
    pub duration_ms: u64,
    pub mac: String,
}

impl Answer {
    /// The peer has gone so long without a renewal that the controller has seen a break in
    /// its renewals.
    pub fn cut_off(&self) -> bool {
        self.age_ms > self.duration_ms + PEER_CUT_OFF_ALLOWANCE_MILLISECONDS
    }
}

/// The shared key.
#[derive(Clone)]
pub struct Key(hmac::Key);

impl Key {
    pub fn new(secret: &[u8]) -> Result<Self> {
        if secret.len() < MIN_KEY_BYTES {
            bail!(
                "the peer key has {} bytes; at least {MIN_KEY_BYTES} are needed",
                secret.len()
            );
        }
        Ok(Self(hmac::Key::new(hmac::HMAC_SHA256, secret)))
    }

    pub fn read(path: &std::path::Path) -> Result<Self> {
        let bytes = std::fs::read(path)
            .with_context(|| format!("reading the peer key {}", path.display()))?;
        Self::new(bytes.trim_ascii())
    }

    fn sign(&self, fields: &[&str]) -> String {
        let tag = hmac::sign(&self.0, message(fields).as_bytes());
        hex(tag.as_ref())
    }

    fn verify(&self, fields: &[&str], mac: &str) -> bool {
        unhex(mac).is_some_and(|m| hmac::verify(&self.0, message(fields).as_bytes(), &m).is_ok())
    }

    pub fn ask(&self, from: &str, to: &str, nonce: &str) -> Ask {
        Ask {
            from: from.into(),
            to: to.into(),
            nonce: nonce.into(),
            mac: self.sign(&["ask", from, to, nonce]),
        }
    }

    pub fn valid_ask(&self, a: &Ask) -> bool {
        self.verify(&["ask", &a.from, &a.to, &a.nonce], &a.mac)
    }

    pub fn answer(&self, ask: &Ask, age_ms: u64, duration_ms: u64) -> Answer {
        let (age, duration) = (age_ms.to_string(), duration_ms.to_string());
        Answer {
            node: ask.to.clone(),
            to: ask.from.clone(),
            nonce: ask.nonce.clone(),
            age_ms,
            duration_ms,
            mac: self.sign(&["answer", &ask.to, &ask.from, &ask.nonce, &age, &duration]),
        }
    }

    /// Whether `a` answers `ask` (the same nonce, from the node asked, to the asker) and is
    /// authentic.
    pub fn valid_answer(&self, ask: &Ask, a: &Answer) -> bool {
        a.node == ask.to
            && a.to == ask.from
            && a.nonce == ask.nonce
            && self.verify(
                &[
                    "answer",
                    &a.node,
                    &a.to,
                    &a.nonce,
                    &a.age_ms.to_string(),
                    &a.duration_ms.to_string(),
                ],
                &a.mac,
            )
    }
}

/// Fields joined unambiguously: each is prefixed by its length.
fn message(fields: &[&str]) -> String {
    let mut m = String::from(DOMAIN);
    for f in fields {
        m.push_str(&format!("\n{}:{f}", f.len()));
    }
    m
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Whether an agent cut off from the API server holds: only when, in every group, itself
/// and the peers whose answers say they are cut off too are more than the group can lose
/// and keep its quorum. No groups: it never holds. Pure, for tests.
pub fn hold(node: &str, groups: &[PeerGroup], answers: &BTreeMap<String, Answer>) -> bool {
    !groups.is_empty()
        && groups.iter().all(|g| {
            let cut = g
                .members
                .iter()
                .filter(|m| *m == node || answers.get(*m).is_some_and(Answer::cut_off))
                .count();
            // The witness cannot be asked: counted as reachable.
            let votes = g.members.len() + g.witnesses as usize;
            cut > votes.saturating_sub(g.required as usize)
        })
}

/// The groups of `node`: each FailoverCluster whose status lists it as a voting member, with
/// the voting members, the witness and the quorum the status gives. A cluster whose status
/// gives no quorum yet is left out, and so is one where the node does not vote (its agent
/// fences itself when cut off, whatever its peers say). Pure, for tests.
pub fn groups_of(node: &str, clusters: &[Arc<FailoverCluster>]) -> Vec<PeerGroup> {
    let mut groups: Vec<PeerGroup> = clusters
        .iter()
        .filter_map(|c| {
            let status = c.status.as_ref()?;
            let quorum = status.quorum.as_ref()?;
            let members: Vec<String> = status
                .members
                .iter()
                .filter(|m| !m.non_voting)
                .map(|m| m.name.clone())
                .collect();
            members.iter().any(|m| m == node).then(|| PeerGroup {
                cluster: c.name_any(),
                members,
                required: quorum.required,
                witnesses: u32::from(quorum.witness.is_some()),
            })
        })
        .collect();
    groups.sort_by(|a, b| a.cluster.cmp(&b.cluster));
    groups
}

/// What the agent keeps on the node (in its state directory, a tmpfs) of the peer exchange,
/// so that an agent restarted while the API server is out of reach can still ask: the key,
/// the peers' addresses, and the peer groups its Lease may name.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Saved {
    /// The key, hex.
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub addresses: BTreeMap<String, SocketAddr>,
    /// Every set of groups the Lease may name now: the last one written, and one being
    /// written. The agent holds only if it would with each.
    #[serde(default)]
    pub group_sets: Vec<Vec<PeerGroup>>,
}

/// [`Saved`] in a file of the state directory, written whole (write and rename), readable
/// by root alone.
pub(super) struct SavedFile {
    path: PathBuf,
    current: std::sync::Mutex<Saved>,
}

impl SavedFile {
    pub fn open(dir: &std::path::Path, node: &str) -> Self {
        let path = dir.join(format!("peers-{node}.json"));
        let current = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Self {
            path,
            current: std::sync::Mutex::new(current),
        }
    }

    pub fn get(&self) -> Saved {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes what is kept; written only when it changed.
    pub fn update(&self, f: impl FnOnce(&mut Saved)) {
        let mut current = self.current.lock().unwrap_or_else(|e| e.into_inner());
        let before = current.clone();
        f(&mut current);
        if *current == before {
            return;
        }
        let write = || -> Result<()> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let tmp = self.path.with_extension("tmp");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            file.write_all(&serde_json::to_vec(&*current)?)?;
            std::fs::rename(&tmp, &self.path)?;
            Ok(())
        };
        if let Err(e) = write() {
            tracing::warn!(path = %self.path.display(), error = %format!("{e:#}"), "peer state not kept");
        }
    }
}

/// Whether to hold with every set of groups the Lease may name: only if each says so.
pub fn hold_all(node: &str, sets: &[Vec<PeerGroup>], answers: &BTreeMap<String, Answer>) -> bool {
    !sets.is_empty() && sets.iter().all(|groups| hold(node, groups, answers))
}

/// The verdict of the last round of asks.
#[derive(Clone, Debug)]
pub(super) struct Verdict {
    /// When the round's asks were sent.
    pub asked: Instant,
    pub hold: bool,
    /// The peers that said they are cut off too.
    pub cut_off: BTreeSet<String>,
}

/// How long a round waits for answers.
pub(super) fn answer_timeout(args: &AgentArgs) -> Duration {
    (args.renew_every() / 2).min(Duration::from_millis(500))
}

/// How old the verdict a fence decision rests on may be: a round every renewal interval,
/// its answers, and a little slack for the loop.
pub(super) fn verdict_valid_for(args: &AgentArgs) -> Duration {
    args.renew_every() + answer_timeout(args) + Duration::from_millis(200)
}

/// Runs the peer exchange: answers peers, keeps the groups and the peers' addresses up to
/// date while the API server is reachable, and, while this agent cannot renew, asks its
/// peers every renewal interval and records the verdict in `shared`.
pub(super) async fn run(client: kube::Client, args: AgentArgs, shared: Arc<Shared>) {
    let Some(address) = args.peers.peer_address else {
        return;
    };
    let key = match (&args.peers.peer_key_file, &args.peers.peer_key_secret) {
        (Some(path), _) => Key::read(path),
        (None, Some(secret)) => {
            // The Secret's, and kept on the node: an agent restarted while the API server is
            // out of reach uses the key kept by the one before it, soon enough to ask its
            // peers within its self-fence time.
            let read = key_from_secret(&client, secret);
            let wait =
                Duration::from_secs_f64(args.self_fence_seconds / 4.0).min(Duration::from_secs(1));
            let bytes = match unhex(&shared.saved.get().key) {
                Some(kept) => tokio::time::timeout(wait, read).await.unwrap_or(Ok(kept)),
                None => read.await,
            };
            bytes.and_then(|b| {
                let key = Key::new(&b)?;
                shared.saved.update(|s| s.key = hex(&b));
                Ok(key)
            })
        }
        (None, None) => Err(anyhow::anyhow!("no peer key")),
    };
    let key = match key {
        Ok(k) => {
            tracing::info!(%address, "peer key read: answering and asking peers");
            k
        }
        Err(e) => {
            tracing::error!(
                error = %format!("{e:#}"),
                "asking no peers: this agent fences itself whenever it cannot renew"
            );
            return;
        }
    };
    let socket = match tokio::net::UdpSocket::bind(address).await {
        Ok(s) => Arc::new(s),
        Err(e) => {
            tracing::error!(
                %address,
                error = %e,
                "cannot listen for peers: this agent fences itself whenever it cannot renew"
            );
            return;
        }
    };
    // Asks go out from a socket of their own, so that answers and peers' asks never meet.
    let asker = match tokio::net::UdpSocket::bind((address.ip(), 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(%address, error = %e, "cannot ask peers: this agent fences itself whenever it cannot renew");
            return;
        }
    };
    tokio::spawn(watch_groups(
        client.clone(),
        args.node.clone(),
        shared.clone(),
    ));
    let addresses = watch_addresses(client);
    tokio::spawn(keep_addresses(addresses.clone(), shared.clone()));
    tokio::spawn(serve(socket, key.clone(), args.clone(), shared.clone()));
    ask_loop(asker, key, args, shared, addresses).await;
}

/// Keeps the groups this node belongs to in `shared` (what the renewer writes on the
/// Lease), from the FailoverClusters' status.
async fn watch_groups(client: kube::Client, node: String, shared: Arc<Shared>) {
    let api: Api<FailoverCluster> = Api::all(client);
    let (store, writer) = reflector::store();
    // Every event, not only applied objects: the store takes in a (re)list only at its end.
    let stream = watcher(api, watcher::Config::default())
        .default_backoff()
        .reflect(writer);
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        // Not before the first listing is complete: until then the Lease keeps naming the
        // groups it named (see `lease::says`), not none.
        let listed = futures::FutureExt::now_or_never(store.wait_until_ready()).is_some();
        if event.is_err() || !listed {
            continue;
        }
        let groups = Some(groups_of(&node, &store.state()));
        let mut current = shared.groups.lock().unwrap_or_else(|e| e.into_inner());
        if *current != groups {
            tracing::info!(
                groups = %serde_json::to_string(&groups).unwrap_or_default(),
                "peer groups"
            );
            *current = groups;
            shared.poke.notify_one();
        }
    }
}

/// The peers' addresses, from their Leases ([`PEER_ADDRESS_ANNOTATION`]), as last seen.
fn watch_addresses(client: kube::Client) -> reflector::Store<Lease> {
    let api: Api<Lease> = Api::namespaced(client, NODE_LEASE_NAMESPACE);
    let (store, writer) = reflector::store();
    let config = watcher::Config::default()
        .labels(&format!("{}={}", AGENT_LEASE_LABEL.0, AGENT_LEASE_LABEL.1));
    tokio::spawn(
        watcher(api, config)
            .default_backoff()
            .reflect(writer)
            .for_each(|_| futures::future::ready(())),
    );
    store
}

/// Answers every authentic ask addressed to this node with the age of its last successful
/// renewal (counted from the agent's start when it has not renewed since).
async fn serve(socket: Arc<tokio::net::UdpSocket>, key: Key, args: AgentArgs, shared: Arc<Shared>) {
    let mut buf = vec![0u8; 2048];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(ask) = serde_json::from_slice::<Ask>(&buf[..n]) else {
            continue;
        };
        if ask.to != args.node || !key.valid_ask(&ask) {
            tracing::debug!(%from, "an ask that is not authentic or not for this node: ignored");
            continue;
        }
        let answered = *shared.answered.lock().unwrap_or_else(|e| e.into_inner());
        let age_ms = u64::try_from(answered.elapsed().as_millis()).unwrap_or(u64::MAX);
        let answer = key.answer(&ask, age_ms, args.lease_duration_ms());
        if let Ok(bytes) = serde_json::to_vec(&answer) {
            let _ = socket.send_to(&bytes, from).await;
        }
    }
}

/// While this agent has not renewed for its Lease's duration, asks the peers of its groups
/// (as its last successful renewal published them) every renewal interval.
async fn ask_loop(
    socket: tokio::net::UdpSocket,
    key: Key,
    args: AgentArgs,
    shared: Arc<Shared>,
    addresses: reflector::Store<Lease>,
) {
    let every = args.renew_every();
    let duration = Duration::from_millis(args.lease_duration_ms());
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // What this cut-off spell's last verdict was, to log each change once.
    let mut holding: Option<bool> = None;
    loop {
        tick.tick().await;
        let renewed = *shared.renewed.lock().unwrap_or_else(|e| e.into_inner());
        if renewed.is_some_and(|t| t.elapsed() < duration) {
            *shared.verdict.lock().unwrap_or_else(|e| e.into_inner()) = None;
            holding = None;
            continue;
        }
        let sets = shared.saved.get().group_sets;
        let kept = shared.saved.get().addresses;
        let peers: BTreeMap<String, SocketAddr> = sets
            .iter()
            .flatten()
            .flat_map(|g| g.members.iter())
            .filter(|m| **m != args.node)
            .filter_map(|m| {
                let address = peer_address(&addresses, m).or_else(|| kept.get(m).copied());
                Some((m.clone(), address?))
            })
            .collect();
        let asked = Instant::now();
        let answers = ask_round(&socket, &key, &args, &peers).await;
        let cut_off: BTreeSet<String> = answers
            .iter()
            .filter(|(_, a)| a.cut_off())
            .map(|(n, _)| n.clone())
            .collect();
        let verdict = Verdict {
            asked,
            hold: hold_all(&args.node, &sets, &answers),
            cut_off,
        };
        tracing::debug!(
            asked = peers.len(),
            answered = answers.len(),
            cut_off = ?verdict.cut_off,
            hold = verdict.hold,
            "asked the peers"
        );
        if holding != Some(verdict.hold) {
            holding = Some(verdict.hold);
            if verdict.hold {
                tracing::warn!(
                    cut_off = ?verdict.cut_off,
                    "cannot renew, and so many peers cannot reach the API server either that \
                     no cluster of this node has its quorum: holding, not fencing"
                );
            } else {
                tracing::warn!(
                    answered = answers.len(),
                    cut_off = ?verdict.cut_off,
                    "cannot renew, and enough peers can reach the API server: not holding"
                );
            }
        }
        *shared.verdict.lock().unwrap_or_else(|e| e.into_inner()) = Some(verdict);
    }
}

/// Keeps the peers' addresses on the node as the Leases give them, every few seconds.
async fn keep_addresses(leases: reflector::Store<Lease>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tick.tick().await;
        let found: BTreeMap<String, SocketAddr> = leases
            .state()
            .iter()
            .filter_map(|l| {
                let node = l
                    .name_any()
                    .strip_prefix(kube_failover_core::api::AGENT_LEASE_PREFIX)?
                    .to_string();
                let address = l.annotations().get(PEER_ADDRESS_ANNOTATION)?.parse().ok()?;
                Some((node, address))
            })
            .collect();
        if !found.is_empty() {
            shared.saved.update(|s| s.addresses.extend(found));
        }
    }
}

fn peer_address(leases: &reflector::Store<Lease>, node: &str) -> Option<SocketAddr> {
    leases
        .get(
            &reflector::ObjectRef::new(&kube_failover_core::api::agent_lease_name(node))
                .within(NODE_LEASE_NAMESPACE),
        )?
        .annotations()
        .get(PEER_ADDRESS_ANNOTATION)?
        .parse()
        .ok()
}

/// Sends one ask to each peer and collects the authentic answers that arrive within
/// [`answer_timeout`].
async fn ask_round(
    socket: &tokio::net::UdpSocket,
    key: &Key,
    args: &AgentArgs,
    peers: &BTreeMap<String, SocketAddr>,
) -> BTreeMap<String, Answer> {
    let mut answers = BTreeMap::new();
    if peers.is_empty() {
        return answers;
    }
    let mut nonce = [0u8; 16];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce).is_err() {
        return answers;
    }
    let nonce = hex(&nonce);
    let asks: BTreeMap<String, Ask> = peers
        .keys()
        .map(|p| (p.clone(), key.ask(&args.node, p, &nonce)))
        .collect();
    for (peer, ask) in &asks {
        if let Ok(bytes) = serde_json::to_vec(ask) {
            let _ = socket.send_to(&bytes, peers[peer]).await;
        }
    }
    let deadline = tokio::time::Instant::now() + answer_timeout(args);
    let mut buf = vec![0u8; 2048];
    while answers.len() < asks.len() {
        let Ok(Ok((n, _))) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await
        else {
            break;
        };
        let Ok(answer) = serde_json::from_slice::<Answer>(&buf[..n]) else {
            continue;
        };
        if let Some(ask) = asks.get(&answer.node)
            && key.valid_answer(ask, &answer)
        {
            answers.insert(answer.node.clone(), answer);
        }
    }
    answers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> Key {
        Key::new(&[7u8; 32]).unwrap()
    }

    fn group(members: &[&str], required: u32) -> PeerGroup {
        PeerGroup {
            cluster: "c".into(),
            members: members.iter().map(|s| s.to_string()).collect(),
            required,
            witnesses: 0,
        }
    }

    fn answers(k: &Key, cut: &[&str], reachable: &[&str]) -> BTreeMap<String, Answer> {
        let mut out = BTreeMap::new();
        for (nodes, age) in [(cut, 2501), (reachable, 2500)] {
            for n in nodes {
                let ask = k.ask("a", n, "00");
                out.insert(n.to_string(), k.answer(&ask, age, 2000));
            }
        }
        out
    }

    #[test]
    fn a_peer_is_cut_off_only_past_its_lease_duration_and_the_allowance() {
        let k = key();
        let ask = k.ask("a", "b", "n");
        assert!(!k.answer(&ask, 2500, 2000).cut_off());
        assert!(k.answer(&ask, 2501, 2000).cut_off());
    }

    #[test]
    fn it_holds_only_when_every_group_lacks_its_quorum() {
        let k = key();
        let three = group(&["a", "b", "c"], 2);
        // Alone cut off: the others can fail over without it; it fences.
        assert!(!hold(
            "a",
            std::slice::from_ref(&three),
            &answers(&k, &[], &["b", "c"])
        ));
        // No answer at all (cut off from its peers too): fences.
        assert!(!hold("a", std::slice::from_ref(&three), &BTreeMap::new()));
        // One peer cut off too: 2 of 3 cut off, 1 left < 2 required: holds.
        assert!(hold(
            "a",
            std::slice::from_ref(&three),
            &answers(&k, &["b"], &["c"])
        ));
        // In a second cluster the quorum holds: fences.
        let five = PeerGroup {
            cluster: "d".into(),
            ..group(&["a", "b", "x", "y", "z"], 3)
        };
        assert!(!hold(
            "a",
            &[three.clone(), five.clone()],
            &answers(&k, &["b"], &["c", "x", "y", "z"])
        ));
        assert!(hold(
            "a",
            &[three, five],
            &answers(&k, &["b", "x"], &["c", "y", "z"])
        ));
        // No groups (no cluster status read yet): never holds.
        assert!(!hold("a", &[], &answers(&k, &["b", "c"], &[])));
        // A group that needs no quorum can never lack it.
        assert!(!hold(
            "a",
            &[group(&["a", "b"], 0)],
            &answers(&k, &["b"], &[])
        ));
    }

    #[test]
    fn in_a_two_node_cluster_with_a_witness_it_holds_only_when_its_peer_is_cut_off_too() {
        let k = key();
        let two = PeerGroup {
            witnesses: 1,
            ..group(&["a", "b"], 2)
        };
        // Alone cut off: b and the witness are two votes of three; it fences.
        assert!(!hold(
            "a",
            std::slice::from_ref(&two),
            &answers(&k, &[], &["b"])
        ));
        // Both cut off (the API server stalls): the witness alone is no quorum; it holds.
        assert!(hold(
            "a",
            std::slice::from_ref(&two),
            &answers(&k, &["b"], &[])
        ));
        // Without the witness, the same cluster would hold even when a alone is cut off.
        assert!(hold(
            "a",
            &[group(&["a", "b"], 2)],
            &answers(&k, &[], &["b"])
        ));
    }

    #[test]
    fn its_groups_count_only_voting_members_and_the_witness() {
        use kube_failover_core::api::{
            FailoverClusterSpec, FailoverClusterStatus, MemberState, MemberStatus, QuorumStatus,
            WitnessStatus,
        };
        let member = |name: &str, non_voting: bool| MemberStatus {
            name: name.into(),
            state: MemberState::Up,
            last_heartbeat: None,
            reason: None,
            instance_count: 0,
            agent: None,
            non_voting,
            site: None,
            failures: Vec::new(),
            quarantine: None,
        };
        let spec: FailoverClusterSpec = serde_json::from_str("{}").unwrap();
        let mut c = FailoverCluster::new("c", spec);
        c.status = Some(FailoverClusterStatus {
            members: vec![member("a", false), member("b", false), member("x", true)],
            quorum: Some(QuorumStatus {
                total: 3,
                healthy: 3,
                required: 2,
                witness: Some(WitnessStatus {
                    name: "Lease kube-failover-witness-c".into(),
                    heard: true,
                    reason: None,
                }),
            }),
            ..Default::default()
        });
        let clusters = [Arc::new(c)];
        assert_eq!(
            groups_of("a", &clusters),
            vec![PeerGroup {
                witnesses: 1,
                ..group(&["a", "b"], 2)
            }]
        );
        // A member that does not vote asks no one: it fences itself when cut off.
        assert!(groups_of("x", &clusters).is_empty());
    }

    #[test]
    fn answers_are_bound_to_the_ask_and_the_key() {
        let k = key();
        let ask = k.ask("a", "b", "nonce-1");
        assert!(k.valid_ask(&ask));
        let answer = k.answer(&ask, 5000, 2000);
        assert!(k.valid_answer(&ask, &answer));
        // Another key.
        let other = Key::new(&[8u8; 32]).unwrap();
        assert!(!other.valid_ask(&ask));
        assert!(!other.valid_answer(&ask, &answer));
        // A replayed answer to an earlier ask.
        let later = k.ask("a", "b", "nonce-2");
        assert!(!k.valid_answer(&later, &answer));
        // Tampered: a reachable peer made to look cut off, or another node's answer.
        let mut forged = k.answer(&ask, 100, 2000);
        forged.age_ms = 99_999;
        assert!(!k.valid_answer(&ask, &forged));
        let mut renamed = answer.clone();
        renamed.node = "c".into();
        assert!(!k.valid_answer(&k.ask("a", "c", "nonce-1"), &renamed));
        // A forged ask is not answered.
        let mut bad = k.ask("a", "b", "n");
        bad.from = "evil".into();
        assert!(!k.valid_ask(&bad));
    }

    #[test]
    fn with_two_sets_of_groups_it_holds_only_if_each_says_so() {
        let k = key();
        let old = vec![group(&["a", "b", "c"], 2)];
        // a and b cut off: of three members (two required) one is left, so it holds; of
        // five (three required) three are left, the quorum: it must not hold with both sets
        // possible on its Lease.
        let new = vec![group(&["a", "b", "c", "d", "e"], 3)];
        let answers = answers(&k, &["b"], &["c", "d", "e"]);
        assert!(hold_all("a", std::slice::from_ref(&old), &answers));
        assert!(!hold_all("a", &[old.clone(), new], &answers));
        assert!(
            !hold_all("a", &[], &answers),
            "no groups known: never holds"
        );
    }

    #[test]
    fn what_is_kept_survives_a_restart_and_is_root_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("kf-peers-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let kept = SavedFile::open(&dir, "n1");
        assert_eq!(kept.get(), Saved::default());
        kept.update(|s| {
            s.key = hex(&[1; 32]);
            s.addresses
                .insert("n2".into(), "10.0.0.2:9811".parse().unwrap());
            s.group_sets = vec![vec![group(&["n1", "n2"], 2)]];
        });
        let again = SavedFile::open(&dir, "n1");
        assert_eq!(again.get(), kept.get());
        let mode = std::fs::metadata(dir.join("peers-n1.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_short_key_is_refused() {
        assert!(Key::new(&[1u8; 31]).is_err());
        assert!(Key::new(&[1u8; 32]).is_ok());
    }

    #[test]
    fn fields_cannot_be_shifted_between_each_other() {
        assert_ne!(message(&["ab", "c"]), message(&["a", "bc"]));
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])), Some(vec![0, 1, 254, 255]));
        assert_eq!(unhex("0"), None);
        assert_eq!(unhex("zz"), None);
    }
}
