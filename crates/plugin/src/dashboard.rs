//! `kubectl failover dashboard`: a live map of the failover clusters, in a browser.
//!
//! It serves one read-only page on loopback (`127.0.0.1:8087` by default) with the caller's
//! own kubeconfig and rights: nothing runs in the cluster and no credential is made. The
//! page shows each FailoverCluster with its members (state, heartbeat age, why not Up) and
//! its quorum and margin, each instance on its owner (phase, virtual IPs, endpoint,
//! failovers), every move in progress step by step as the controller records it, and a
//! timeline of the recent moves (the instances' `status.history` and `status.move`) with a
//! slider that shows where each instance was at any recorded step.
//!
//! The server watches FailoverClusters and FailoverClusterInstances (reflectors of
//! `kube::runtime`); every change makes a new [`View`], sent to each page as a server-sent
//! event. The page (HTML, JavaScript and CSS in `dashboard/`) is embedded in the binary:
//! nothing is fetched from anywhere else.
//!
//! Actions (move, drain, resume) are off unless `--allow-actions`: without it their POST
//! endpoints answer 403 and the page shows no buttons. They run the code of the `move`,
//! `drain` and `resume` verbs (without waiting), and need the token embedded in the page,
//! so that another site open in the same browser cannot post to them. Requests that name
//! another host than the one served are refused (a DNS rebinding would otherwise let a
//! remote page read the dashboard as if it were its own origin).

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::{Stream, StreamExt};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, reflector, watcher};
use kube::{Client, ResourceExt};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::default_namespace;
use super::status::{ClusterReport, InstanceReport, report};
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance, Move};

/// Where the dashboard listens unless told otherwise.
pub const DEFAULT_ADDRESS: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(Ipv4Addr::LOCALHOST), 8087);

/// How many moves (all instances together, newest kept) the timeline holds.
const MOVES_SHOWN: usize = 100;

const INDEX_HTML: &str = include_str!("dashboard/index.html");
const APP_JS: &str = include_str!("dashboard/app.js");
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// The header that carries the page's token on the action endpoints.
const TOKEN_HEADER: &str = "x-dashboard-token";

#[derive(Debug, clap::Args)]
pub struct DashboardArgs {
    /// Where to listen [default: 127.0.0.1:8087]; `127.0.0.1:0` picks a free port. A
    /// loopback address unless `--listen-any` is given too.
    #[arg(long, value_name = "IP:PORT")]
    pub address: Option<SocketAddr>,
    /// Let `--address` be one that other machines can reach. Whoever reaches it sees your
    /// clusters with your credentials (and, with `--allow-actions`, moves instances and
    /// drains nodes with them).
    #[arg(long, requires = "address")]
    pub listen_any: bool,
    /// Offer Move, Drain and Resume on the page. Without it the page shows no buttons and
    /// their endpoints answer 403.
    #[arg(long)]
    pub allow_actions: bool,
    /// Instances of this namespace (default: the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Instances of every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
}

/// The address to listen on: the default one, or the one given if it is a loopback
/// address, or, with `listen_any`, any address given explicitly.
pub fn listen_address(given: Option<SocketAddr>, listen_any: bool) -> Result<SocketAddr> {
    match given {
        None if listen_any => bail!("--listen-any needs --address: the address to listen on"),
        None => Ok(DEFAULT_ADDRESS),
        Some(addr) if addr.ip().is_loopback() || listen_any => Ok(addr),
        Some(addr) => bail!(
            "{addr} is not a loopback address: whoever can reach it would see your clusters \
             with your credentials. Add --listen-any if that is what you want"
        ),
    }
}

// ---------------------------------------------------------------------------------------
// What the page is given.

/// One snapshot of what the page shows. The server fills in `seq`, `actions`, `scope`,
/// `loaded` and `error`; the rest is [`view`]'s.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    /// Increases with each snapshot the server sends.
    pub seq: u64,
    /// When it was made (the heartbeat ages are as of then).
    pub at: String,
    /// Both watches have listed everything once: until then the lists below are empty.
    pub loaded: bool,
    /// The action endpoints are on (`--allow-actions`).
    pub actions: bool,
    /// `namespace NAME` or `all namespaces`: which instances are shown.
    pub scope: String,
    /// What a watch last failed with, while it retries.
    pub error: Option<String>,
    pub clusters: Vec<ClusterView>,
    pub instances: Vec<InstanceView>,
    /// The recent moves of every instance shown, oldest first.
    pub moves: Vec<MoveView>,
    /// Every recorded step of those moves in the order they were done: the positions of
    /// the timeline's slider.
    pub steps: Vec<StepView>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterView {
    /// Name, members (state, heartbeat age, reason, instances…), quorum and its margin, as
    /// `status` reports them.
    #[serde(flatten)]
    pub report: ClusterReport,
    /// The quorum as `status` says it: `3 of 3 members up, 2 required: 1 more may fail`.
    pub quorum_text: String,
    /// Too few votes heard: nothing fails over.
    pub quorum_lost: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceView {
    /// `namespace/name`.
    pub key: String,
    /// Owner, phase, virtual IPs, endpoint, failovers, what it waits for, as `status`
    /// reports them.
    #[serde(flatten)]
    pub report: InstanceReport,
    /// The move in progress, by its `id` in `moves`.
    pub moving: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MoveView {
    /// `namespace/name@start time`: unique, and the same in every snapshot.
    pub id: String,
    pub instance: String,
    /// `placement`, `planned move` or `failover`.
    pub kind: &'static str,
    /// As `history` heads it: `failover from node-0 to node-1 (NodeDown: LeaseStale), 2.8 s`.
    pub heading: String,
    pub from: Option<String>,
    pub to: Option<String>,
    pub reason: String,
    pub in_progress: bool,
    /// Its steps done, in the order they were done.
    pub steps: Vec<DoneStep>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DoneStep {
    /// Its position in `View::steps`.
    pub index: usize,
    pub step: &'static str,
    pub label: &'static str,
    /// `17:16:17.099` (UTC).
    pub time: String,
    /// Milliseconds since the move started.
    pub since_ms: i64,
}

/// One position of the timeline: a step of a move, and where that left its instance.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StepView {
    pub index: usize,
    pub instance: String,
    pub move_id: String,
    pub step: &'static str,
    pub label: &'static str,
    /// RFC 3339, UTC.
    pub at: String,
    /// `17:16:17.099` (UTC).
    pub time: String,
    pub heading: String,
    pub state: InstanceAt,
}

/// Where an instance was once a step was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceAt {
    /// The node it is shown on: the old owner until the new pod is created, then the new
    /// owner; none during a first placement until its pod is created.
    pub node: Option<String>,
    /// `Moving`, `Online` (the move's last step), or `Ended` (the last step recorded of a
    /// move that ended without bringing it online: abandoned, or no node to go to).
    pub phase: &'static str,
}

fn clock(t: &MicroTime) -> String {
    t.0.strftime("%H:%M:%S%.3f").to_string()
}

/// What the page shows of `clusters` and `instances` at `now`: the clusters and instances
/// as `status` reports them, and their recent moves step by step.
pub fn view(
    clusters: &[FailoverCluster],
    instances: &[FailoverClusterInstance],
    now: Timestamp,
) -> View {
    let mut clusters = clusters.to_vec();
    clusters.sort_by_key(|c| c.name_any());
    let mut instances = instances.to_vec();
    instances.sort_by_key(|i| i.key());
    let status = report(&clusters, &instances, now);
    let (moves, steps) = moves_and_steps(&instances);
    let moving = |key: &str| {
        moves
            .iter()
            .find(|m| m.in_progress && m.instance == key)
            .map(|m| m.id.clone())
    };
    View {
        at: now.to_string(),
        loaded: true,
        clusters: status
            .clusters
            .into_iter()
            .map(|c| {
                let (quorum_text, quorum_lost) = c.quorum_text();
                ClusterView {
                    report: c,
                    quorum_text,
                    quorum_lost,
                }
            })
            .collect(),
        instances: status
            .instances
            .into_iter()
            .map(|i| {
                let key = format!("{}/{}", i.namespace, i.name);
                InstanceView {
                    moving: moving(&key),
                    key,
                    report: i,
                }
            })
            .collect(),
        moves,
        steps,
        ..View::default()
    }
}

/// One recorded move of an instance.
struct Recorded<'a> {
    key: String,
    m: &'a Move,
    in_progress: bool,
}

/// The recent moves of `instances` (`MOVES_SHOWN` at most, oldest first) and all their
/// steps in the order they were done, each with where it left its instance.
fn moves_and_steps(instances: &[FailoverClusterInstance]) -> (Vec<MoveView>, Vec<StepView>) {
    let mut recorded: Vec<Recorded> = Vec::new();
    for i in instances {
        let Some(s) = i.status.as_ref() else { continue };
        let key = i.key();
        let done = s.history.iter().map(|m| (m, false));
        for (m, in_progress) in done.chain(s.current_move.iter().map(|m| (m, true))) {
            recorded.push(Recorded {
                key: key.clone(),
                m,
                in_progress,
            });
        }
    }
    recorded.sort_by(|a, b| (a.m.started.0, &a.key).cmp(&(b.m.started.0, &b.key)));
    let recorded = &recorded[recorded.len().saturating_sub(MOVES_SHOWN)..];

    // Each move's steps, replayed in the order they were done; then all of them in time
    // order (the steps of one move keep their order when recorded at the same time).
    let mut steps: Vec<(Timestamp, usize, usize, i64, StepView)> = Vec::new();
    let mut moves: Vec<MoveView> = Vec::new();
    for (n, r) in recorded.iter().enumerate() {
        let id = format!("{}@{}", r.key, r.m.started.0);
        let heading = r.m.heading(r.in_progress);
        let all = r.m.steps();
        let mut done: Vec<(&MicroTime, usize)> = all
            .iter()
            .enumerate()
            .filter_map(|(order, (_, _, time))| Some(((*time)?, order)))
            .collect();
        done.sort_by_key(|(t, order)| (t.0, *order));
        let mut node = r.m.from.clone();
        let last = done.len().saturating_sub(1);
        for (j, (t, order)) in done.iter().enumerate() {
            let (step, label, _) = all[*order];
            if matches!(step, "podCreated" | "online") {
                node = r.m.to.clone();
            }
            let phase = match step {
                "online" => "Online",
                _ if j == last && !r.in_progress => "Ended",
                _ => "Moving",
            };
            let view = StepView {
                index: 0,
                instance: r.key.clone(),
                move_id: id.clone(),
                step,
                label,
                at: t.0.to_string(),
                time: clock(t),
                heading: heading.clone(),
                state: InstanceAt {
                    node: node.clone(),
                    phase,
                },
            };
            let since_ms = t.0.duration_since(r.m.started.0).as_millis() as i64;
            steps.push((t.0, n, j, since_ms, view));
        }
        moves.push(MoveView {
            id,
            instance: r.key.clone(),
            kind: r.m.kind(),
            heading,
            from: r.m.from.clone(),
            to: r.m.to.clone(),
            reason: r.m.reason.clone(),
            in_progress: r.in_progress,
            steps: Vec::new(),
        });
    }
    steps.sort_by_key(|(t, n, j, _, _)| (*t, *n, *j));
    let steps: Vec<StepView> = steps
        .into_iter()
        .enumerate()
        .map(|(index, (_, n, _, since_ms, mut s))| {
            moves[n].steps.push(DoneStep {
                index,
                step: s.step,
                label: s.label,
                time: s.time.clone(),
                since_ms,
            });
            s.index = index;
            s
        })
        .collect();
    (moves, steps)
}

// ---------------------------------------------------------------------------------------
// The server.

/// The latest snapshot, and every new one as it is made.
struct Hub {
    latest: Mutex<Option<Arc<str>>>,
    updates: broadcast::Sender<Arc<str>>,
}

impl Hub {
    fn new() -> Self {
        Self {
            latest: Mutex::new(None),
            updates: broadcast::channel(1024).0,
        }
    }

    fn publish(&self, snapshot: String) {
        let snapshot: Arc<str> = snapshot.into();
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        *latest = Some(snapshot.clone());
        // Sent under the lock: a subscriber gets the latest, then everything after it.
        let _ = self.updates.send(snapshot);
    }

    fn latest(&self) -> Option<Arc<str>> {
        self.latest
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn subscribe(&self) -> (Option<Arc<str>>, broadcast::Receiver<Arc<str>>) {
        let latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        (latest.clone(), self.updates.subscribe())
    }
}

struct Dashboard {
    hub: Hub,
    client: Client,
    actions: bool,
    /// What the action endpoints require in `X-Dashboard-Token` (the page carries it).
    token: String,
    /// The `Host` headers accepted; any with `--listen-any` on a non-loopback address.
    hosts: Option<Vec<String>>,
    /// `index.html` with the token and whether actions are on.
    page: String,
}

type Shared = Arc<Dashboard>;

impl Dashboard {
    fn new(client: Client, actions: bool, token: String, hosts: Option<Vec<String>>) -> Self {
        let page = INDEX_HTML
            .replace("{{ACTIONS}}", if actions { "true" } else { "false" })
            .replace("{{TOKEN}}", if actions { &token } else { "" });
        Self {
            hub: Hub::new(),
            client,
            actions,
            token,
            hosts,
            page,
        }
    }
}

/// The `Host` headers a browser sends for `local`: its address and `localhost` with its
/// port (and without the port when it is 80). None, any, for a non-loopback address.
fn allowed_hosts(local: SocketAddr) -> Option<Vec<String>> {
    if !local.ip().is_loopback() {
        return None;
    }
    let port = local.port();
    let ip = match local {
        SocketAddr::V4(a) => a.ip().to_string(),
        SocketAddr::V6(a) => format!("[{}]", a.ip()),
    };
    let mut hosts = vec![format!("{ip}:{port}"), format!("localhost:{port}")];
    if port == 80 {
        hosts.extend([ip, "localhost".into()]);
    }
    Some(hosts)
}

fn host_allowed(hosts: Option<&[String]>, host: Option<&str>) -> bool {
    match (hosts, host) {
        (None, _) => true,
        (Some(hosts), Some(host)) => hosts.iter().any(|h| h.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
    }
}

/// A token no other page can guess: 128 bits from the operating system's random source.
fn random_token() -> Result<String> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness for the token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn router(dashboard: Shared) -> Router {
    Router::new()
        .route("/", get(page))
        .route(
            "/app.js",
            get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }),
        )
        .route(
            "/style.css",
            get(|| async { asset("text/css; charset=utf-8", STYLE_CSS) }),
        )
        .route("/api/state", get(state))
        .route("/api/events", get(events))
        .route("/api/move", post(move_instance))
        .route("/api/drain", post(drain_node))
        .route("/api/resume", post(resume_node))
        .layer(middleware::from_fn_with_state(dashboard.clone(), guard))
        .with_state(dashboard)
}

/// Refuses a request for another host; marks every answer as not to be framed, sniffed or
/// cached, and the page as allowed to load only what this server serves.
async fn guard(State(d): State<Shared>, request: Request, next: Next) -> Response {
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok());
    if !host_allowed(d.hosts.as_deref(), host) {
        return (
            StatusCode::MISDIRECTED_REQUEST,
            "this dashboard answers only to the address it serves\n",
        )
            .into_response();
    }
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
             img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::CACHE_CONTROL, "no-store"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    response
}

async fn page(State(d): State<Shared>) -> Response {
    asset("text/html; charset=utf-8", d.page.clone())
}

fn asset(content_type: &'static str, body: impl IntoResponse) -> Response {
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn json(status: StatusCode, body: serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// The latest snapshot, as the page gets it.
async fn state(State(d): State<Shared>) -> Response {
    match d.hub.latest() {
        Some(s) => asset("application/json", s.to_string()),
        None => json(
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"error": "not loaded yet"}),
        ),
    }
}

/// The latest snapshot, then each new one, as server-sent events.
async fn events(State(d): State<Shared>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (first, updates) = d.hub.subscribe();
    let stream = futures::stream::unfold((first, updates), |(first, mut updates)| async move {
        if let Some(s) = first {
            return Some((Ok(Event::default().data(&*s)), (None, updates)));
        }
        loop {
            match updates.recv().await {
                Ok(s) => return Some((Ok(Event::default().data(&*s)), (None, updates))),
                // Too slow for every snapshot: the next one is as good.
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// Why an action is refused before anything is done: actions off, or the page's token
/// missing (another site posting from the same browser).
fn refuse_action(d: &Dashboard, headers: &HeaderMap) -> Option<Response> {
    let refuse = |why: &str| json(StatusCode::FORBIDDEN, serde_json::json!({"error": why}));
    if !d.actions {
        return Some(refuse(
            "actions are off: start the dashboard with --allow-actions to move, drain and resume",
        ));
    }
    let given = headers.get(TOKEN_HEADER).map(HeaderValue::as_bytes);
    let same = given.is_some_and(|g| {
        g.len() == d.token.len()
            && g.iter()
                .zip(d.token.as_bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    });
    (!same).then(|| refuse("missing or wrong X-Dashboard-Token: use the dashboard's page"))
}

/// Runs an action after `refuse_action`, with its JSON body: 200 with what the verb would
/// print, 400 for a body that does not parse, 409 with the verb's error.
async fn act<B, F>(d: Shared, headers: HeaderMap, body: Bytes, action: F) -> Response
where
    B: serde::de::DeserializeOwned,
    F: AsyncFnOnce(Client, B) -> Result<Vec<String>>,
{
    if let Some(refused) = refuse_action(&d, &headers) {
        return refused;
    }
    let body: B = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return json(
                StatusCode::BAD_REQUEST,
                serde_json::json!({"error": format!("{e}")}),
            );
        }
    };
    match action(d.client.clone(), body).await {
        Ok(lines) => json(
            StatusCode::OK,
            serde_json::json!({"message": lines.join("\n")}),
        ),
        Err(e) => json(
            StatusCode::CONFLICT,
            serde_json::json!({"error": format!("{e:#}")}),
        ),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MoveBody {
    namespace: String,
    instance: String,
    /// The target; none or empty: the next eligible owner.
    #[serde(default)]
    to: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct NodeBody {
    node: String,
    /// Resume only: move back what the drain moved off.
    #[serde(default)]
    failback: bool,
}

/// `move INSTANCE -n NAMESPACE [--to NODE]`, without waiting.
async fn move_instance(State(d): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    act(d, headers, body, async |client, b: MoveBody| {
        let to = b.to.filter(|t| !t.is_empty());
        let requested =
            super::move_verb::request_move(&client, &b.namespace, &b.instance, to.as_deref())
                .await?;
        Ok(vec![requested.message()])
    })
    .await
}

/// `drain NODE --wait=false`.
async fn drain_node(State(d): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    act(d, headers, body, async |client, b: NodeBody| {
        let mut lines = Vec::new();
        super::drain::start_drain(&client, &b.node, false, &mut |l| lines.push(l)).await?;
        Ok(lines)
    })
    .await
}

/// `resume NODE [--failback] --wait=false`.
async fn resume_node(State(d): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    act(d, headers, body, async |client, b: NodeBody| {
        let mut lines = Vec::new();
        super::drain::start_resume(&client, &b.node, false, b.failback, &mut |l| lines.push(l))
            .await?;
        Ok(lines)
    })
    .await
}

/// Watches the clusters and the instances, and publishes a snapshot after each change.
async fn follow(d: Shared, namespace: Option<String>, scope: String) {
    let (clusters, cluster_writer) = reflector::store::<FailoverCluster>();
    let (instances, instance_writer) = reflector::store::<FailoverClusterInstance>();
    let instance_api = match &namespace {
        Some(ns) => Api::namespaced(d.client.clone(), ns),
        None => Api::all(d.client.clone()),
    };
    let config = watcher::Config::default();
    /// What a watch event says: `Some(true)` once listed, `Some(false)` for an object
    /// received, `None` when a (re)list starts, which says nothing of a failure before it.
    fn listed<K>(
        e: Result<watcher::Event<K>, watcher::Error>,
    ) -> Result<Option<bool>, watcher::Error> {
        e.map(|e| match e {
            watcher::Event::Init => None,
            watcher::Event::InitDone => Some(true),
            _ => Some(false),
        })
    }
    let cluster_events = reflector(
        cluster_writer,
        watcher(Api::all(d.client.clone()), config.clone()),
    )
    .default_backoff()
    .map(|e| (0, listed(e)));
    let instance_events = reflector(instance_writer, watcher(instance_api, config))
        .default_backoff()
        .map(|e| (1, listed(e)));
    let mut changes = futures::stream::select(cluster_events.boxed(), instance_events.boxed());
    let what = ["FailoverClusters", "FailoverClusterInstances"];
    let mut done = [false, false];
    let mut errors: [Option<String>; 2] = [None, None];
    let mut seq = 0;
    while let Some((which, change)) = changes.next().await {
        match change {
            Ok(None) => {}
            Ok(Some(listed)) => {
                done[which] |= listed;
                errors[which] = None;
            }
            Err(e) => {
                let error = format!("watching {}: {e}", what[which]);
                if errors[which].as_ref() != Some(&error) {
                    eprintln!("{error}");
                }
                errors[which] = Some(error);
            }
        }
        let loaded = done == [true, true];
        let error = errors.iter().flatten().next().cloned();
        if !loaded && error.is_none() {
            continue;
        }
        let mut v = if loaded {
            fn owned<K: Clone>(s: Vec<Arc<K>>) -> Vec<K> {
                s.iter().map(|k| (**k).clone()).collect()
            }
            view(
                &owned(clusters.state()),
                &owned(instances.state()),
                Timestamp::now(),
            )
        } else {
            View::default()
        };
        seq += 1;
        v.seq = seq;
        v.loaded = loaded;
        v.error = error;
        v.actions = d.actions;
        v.scope = scope.clone();
        match serde_json::to_string(&v) {
            Ok(s) => d.hub.publish(s),
            Err(e) => eprintln!("dashboard: {e}"),
        }
    }
}

pub async fn run(client: Client, args: DashboardArgs) -> Result<ExitCode> {
    let addr = listen_address(args.address, args.listen_any)?;
    let namespace = match (args.all_namespaces, args.namespace) {
        (true, _) => None,
        (false, Some(ns)) => Some(ns),
        (false, None) => Some(default_namespace().await),
    };
    let scope = match &namespace {
        Some(ns) => format!("namespace {ns}"),
        None => "all namespaces".into(),
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    let token = if args.allow_actions {
        random_token()?
    } else {
        String::new()
    };
    let dashboard = Arc::new(Dashboard::new(
        client,
        args.allow_actions,
        token,
        allowed_hosts(local),
    ));
    tokio::spawn(follow(dashboard.clone(), namespace, scope));
    if !local.ip().is_loopback() {
        eprintln!(
            "warning: listening on {local}: whoever reaches it sees your clusters with your \
             credentials{}",
            if args.allow_actions {
                ", and can move instances and drain nodes with them"
            } else {
                ""
            }
        );
    }
    println!("serving on http://{local}/");
    use std::io::Write;
    std::io::stdout().flush()?;
    let serve = axum::serve(listener, router(dashboard));
    tokio::select! {
        served = serve.into_future() => served.context("serving the dashboard")?,
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use kube_failover_core::api::{
        FailoverClusterInstanceStatus, FailoverClusterStatus, MemberState, MemberStatus, Phase,
        QuorumStatus,
    };

    /// A whole second: 11:06:40 UTC.
    const T0: i64 = 1_795_000_000_000;

    fn at(ms: i64) -> MicroTime {
        MicroTime(Timestamp::from_millisecond(T0 + ms).unwrap())
    }

    fn member(name: &str, state: MemberState, heartbeat: i64, why: Option<&str>) -> MemberStatus {
        MemberStatus {
            name: name.into(),
            state,
            last_heartbeat: Some(Time(at(heartbeat).0)),
            reason: why.map(Into::into),
            instance_count: 0,
            agent: None,
            non_voting: false,
            site: None,
            failures: vec![],
            quarantine: None,
        }
    }

    fn cluster(members: Vec<MemberStatus>, healthy: u32) -> FailoverCluster {
        let mut c: FailoverCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1",
            "kind": "FailoverCluster",
            "metadata": {"name": "c"},
            "spec": {},
        }))
        .unwrap();
        c.status = Some(FailoverClusterStatus {
            quorum: Some(QuorumStatus {
                total: members.len() as u32,
                healthy,
                required: 2,
                witness: None,
            }),
            members,
            ..Default::default()
        });
        c
    }

    /// A move from `from` (none: a placement) to `to`, started at `started`, with no step
    /// done after that.
    fn moved(from: Option<&str>, to: &str, why: &str, started: i64) -> Move {
        serde_json::from_value(serde_json::json!({
            "from": from, "to": to, "reason": why, "planned": from.is_none(),
            "started": at(started),
        }))
        .unwrap()
    }

    fn instance(name: &str, status: FailoverClusterInstanceStatus) -> FailoverClusterInstance {
        let mut i: FailoverClusterInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1",
            "kind": "FailoverClusterInstance",
            "metadata": {"name": name, "namespace": "db"},
            "spec": {
                "clusterRef": "c",
                "networkName": {"name": name, "ports": [{"name": "sql", "port": 1433}]},
                "virtualIPs": ["192.0.2.44"],
                "template": {"spec": {"containers": [{"name": "w", "image": "w"}]}},
            },
        }))
        .unwrap();
        i.status = Some(status);
        i
    }

    /// `a`: placed on n0, failed over to n1. `b`: placed on n2, a failover abandoned (n2
    /// came back), and a planned move to n1 in progress.
    fn scene() -> (FailoverCluster, Vec<FailoverClusterInstance>) {
        let c = cluster(
            vec![
                member("n2", MemberState::Up, 9_800, None),
                member("n0", MemberState::Fenced, 1_000, Some("LeaseStale")),
                member("n1", MemberState::Up, 9_500, None),
            ],
            2,
        );
        let placed = Move {
            endpoint_withdrawn: Some(at(10)),
            old_pod_gone: Some(at(10)),
            volumes_detached: Some(at(10)),
            pod_created: Some(at(20)),
            online: Some(at(900)),
            ..moved(None, "n0", "Placement", 0)
        };
        let failover = Move {
            endpoint_withdrawn: Some(at(5_021)),
            fenced: Some(at(5_043)),
            old_pod_gone: Some(at(5_081)),
            volumes_detached: Some(at(5_096)),
            pod_created: Some(at(5_133)),
            online: Some(at(7_800)),
            ..moved(Some("n0"), "n1", "NodeDown: LeaseStale", 5_000)
        };
        let a = instance(
            "a",
            FailoverClusterInstanceStatus {
                phase: Phase::Online,
                owner_node: Some("n1".into()),
                history: vec![placed, failover],
                failover_count: 1,
                ..Default::default()
            },
        );
        let abandoned = Move {
            endpoint_withdrawn: Some(at(3_010)),
            ..moved(
                Some("n2"),
                "n1",
                "NodeDown: LeaseStale (abandoned: n2 recovered before it was fenced)",
                3_000,
            )
        };
        let planned = Move {
            planned: true,
            endpoint_withdrawn: Some(at(6_100)),
            ..moved(Some("n2"), "n1", "MoveRequested", 6_000)
        };
        let b = instance(
            "b",
            FailoverClusterInstanceStatus {
                phase: Phase::Moving,
                owner_node: Some("n2".into()),
                history: vec![
                    Move {
                        pod_created: Some(at(100)),
                        online: Some(at(350)),
                        ..moved(None, "n2", "Placement", 50)
                    },
                    abandoned,
                ],
                current_move: Some(planned),
                ..Default::default()
            },
        );
        (c, vec![b, a])
    }

    #[test]
    fn the_page_is_given_members_quorum_instances_and_moves_step_by_step() {
        let (c, instances) = scene();
        let v = view(&[c], &instances, at(10_000).0);

        let cluster = &v.clusters[0];
        assert_eq!(
            cluster.quorum_text,
            "2 of 3 members up, 2 required: 0 more may fail"
        );
        assert!(!cluster.quorum_lost);
        let members: Vec<(&str, MemberState, Option<i64>)> = cluster
            .report
            .members
            .iter()
            .map(|m| (m.name.as_str(), m.state, m.heartbeat_age_ms))
            .collect();
        assert_eq!(
            members,
            [
                ("n0", MemberState::Fenced, Some(9_000)),
                ("n1", MemberState::Up, Some(500)),
                ("n2", MemberState::Up, Some(200)),
            ]
        );

        let keys: Vec<&str> = v.instances.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["db/a", "db/b"]);
        let (a, b) = (&v.instances[0], &v.instances[1]);
        assert_eq!(a.report.owner.as_deref(), Some("n1"));
        assert_eq!((a.report.phase.as_str(), a.report.failovers), ("Online", 1));
        assert_eq!(a.moving, None);
        assert_eq!(b.moving.as_deref(), Some(v.moves[4].id.as_str()));

        // The moves, oldest first; the one in progress says so.
        let headings: Vec<&str> = v.moves.iter().map(|m| m.heading.as_str()).collect();
        assert_eq!(
            headings,
            [
                "placement on n0 (Placement), 0.9 s",
                "placement on n2 (Placement), 0.3 s",
                "failover from n2 to n1 (NodeDown: LeaseStale (abandoned: n2 recovered before it was fenced))",
                "failover from n0 to n1 (NodeDown: LeaseStale), 2.8 s",
                "planned move from n2 to n1 (MoveRequested), in progress",
            ]
        );
        assert!(v.moves[4].in_progress && !v.moves[3].in_progress);

        // Every step in the order it was done, across instances.
        let order: Vec<(&str, &str)> = v
            .steps
            .iter()
            .map(|s| (s.instance.as_str(), s.step))
            .collect();
        assert_eq!(
            order,
            [
                ("db/a", "started"),
                ("db/a", "endpointWithdrawn"),
                ("db/a", "oldPodGone"),
                ("db/a", "volumesDetached"),
                ("db/a", "podCreated"),
                ("db/b", "started"),
                ("db/b", "podCreated"),
                ("db/b", "online"),
                ("db/a", "online"),
                ("db/b", "started"),
                ("db/b", "endpointWithdrawn"),
                ("db/a", "started"),
                ("db/a", "endpointWithdrawn"),
                ("db/a", "fenced"),
                ("db/a", "oldPodGone"),
                ("db/a", "volumesDetached"),
                ("db/a", "podCreated"),
                ("db/b", "started"),
                ("db/b", "endpointWithdrawn"),
                ("db/a", "online"),
            ]
        );
        assert!(v.steps.iter().enumerate().all(|(n, s)| s.index == n));
        assert_eq!(v.steps[0].time, "11:06:40.000");
        assert_eq!(v.steps[13].label, "old owner fenced");

        // Where each step left its instance: on the old owner until the new pod is
        // created, then on the new one; online at the last step.
        let state = |n: usize| {
            let s = &v.steps[n].state;
            (s.node.as_deref(), s.phase)
        };
        assert_eq!(state(0), (None, "Moving"), "a placement starts nowhere");
        assert_eq!(state(4), (Some("n0"), "Moving"));
        assert_eq!(state(8), (Some("n0"), "Online"));
        assert_eq!(state(13), (Some("n0"), "Moving"), "fenced, not yet moved");
        assert_eq!(state(16), (Some("n1"), "Moving"), "its pod created on n1");
        assert_eq!(state(19), (Some("n1"), "Online"));
        assert_eq!(
            state(10),
            (Some("n2"), "Ended"),
            "abandoned: it stayed on n2"
        );
        assert_eq!(state(18), (Some("n2"), "Moving"), "still in progress");

        // Each move lists its steps with their position on the timeline.
        let failover = &v.moves[3];
        let listed: Vec<(&str, usize, i64)> = failover
            .steps
            .iter()
            .map(|s| (s.step, s.index, s.since_ms))
            .collect();
        assert_eq!(
            listed,
            [
                ("started", 11, 0),
                ("endpointWithdrawn", 12, 21),
                ("fenced", 13, 43),
                ("oldPodGone", 14, 81),
                ("volumesDetached", 15, 96),
                ("podCreated", 16, 133),
                ("online", 19, 2_800),
            ]
        );

        // The names the page reads.
        let json = serde_json::to_value(&v).unwrap();
        assert_eq!(json["clusters"][0]["name"], "c");
        assert_eq!(json["clusters"][0]["quorumMargin"], 0);
        assert_eq!(json["clusters"][0]["members"][0]["heartbeatAgeMs"], 9_000);
        assert_eq!(json["clusters"][0]["members"][0]["state"], "Fenced");
        assert_eq!(json["clusters"][0]["members"][0]["reason"], "LeaseStale");
        assert_eq!(json["instances"][0]["key"], "db/a");
        assert_eq!(json["instances"][0]["owner"], "n1");
        assert_eq!(json["instances"][0]["virtualIps"][0], "192.0.2.44");
        assert_eq!(json["instances"][1]["moving"], v.moves[4].id.as_str());
        assert_eq!(json["steps"][13]["moveId"], failover.id.as_str());
        assert_eq!(json["steps"][16]["state"]["node"], "n1");
        assert_eq!(json["moves"][3]["inProgress"], false);
        assert_eq!(json["moves"][4]["inProgress"], true);
    }

    #[test]
    fn the_quorum_reads_as_status_says_it() {
        let mut c = cluster(
            vec![
                member("n0", MemberState::Down, 0, Some("LeaseStale")),
                member("n1", MemberState::Down, 0, Some("LeaseStale")),
                member("n2", MemberState::Up, 0, None),
            ],
            1,
        );
        let v = view(std::slice::from_ref(&c), &[], at(0).0);
        assert_eq!(
            v.clusters[0].quorum_text,
            "LOST: 1 of 3 members up, 2 required (1 short): nothing fails over"
        );
        assert!(v.clusters[0].quorum_lost);
        c.status = None;
        let v = view(&[c], &[], at(0).0);
        assert_eq!(v.clusters[0].quorum_text, "not yet computed");
        assert!(v.moves.is_empty() && v.steps.is_empty());
    }

    #[test]
    fn only_loopback_addresses_unless_listen_any_with_an_explicit_address() {
        let addr = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert_eq!(listen_address(None, false).unwrap(), addr("127.0.0.1:8087"));
        for ok in ["127.0.0.1:0", "127.3.2.1:9000", "[::1]:8087"] {
            assert_eq!(listen_address(Some(addr(ok)), false).unwrap(), addr(ok));
        }
        for refused in [
            "0.0.0.0:8087",
            "192.0.2.7:8087",
            "[::]:8087",
            "[2001:db8::1]:80",
        ] {
            let err = listen_address(Some(addr(refused)), false)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("not a loopback address") && err.contains("--listen-any"),
                "{err}"
            );
            assert_eq!(
                listen_address(Some(addr(refused)), true).unwrap(),
                addr(refused)
            );
        }
        assert!(listen_address(None, true).is_err());

        // And as the command line has them: --listen-any alone is refused.
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            args: DashboardArgs,
        }
        use clap::Parser;
        assert!(Cli::try_parse_from(["d", "--listen-any"]).is_err());
        let cli = Cli::try_parse_from(["d", "--address", "0.0.0.0:9", "--listen-any"]).unwrap();
        assert_eq!(cli.args.address, Some(addr("0.0.0.0:9")));
        let cli = Cli::try_parse_from(["d"]).unwrap();
        assert!(cli.args.address.is_none() && !cli.args.allow_actions);
    }

    #[test]
    fn requests_must_name_the_address_served() {
        let hosts = allowed_hosts("127.0.0.1:8087".parse().unwrap()).unwrap();
        assert!(host_allowed(Some(&hosts), Some("127.0.0.1:8087")));
        assert!(host_allowed(Some(&hosts), Some("LOCALHOST:8087")));
        assert!(!host_allowed(Some(&hosts), Some("rebound.example:8087")));
        assert!(!host_allowed(Some(&hosts), Some("127.0.0.1:8088")));
        assert!(!host_allowed(Some(&hosts), None));
        let v6 = allowed_hosts("[::1]:80".parse().unwrap()).unwrap();
        assert!(host_allowed(Some(&v6), Some("[::1]")));
        assert!(allowed_hosts("0.0.0.0:8087".parse().unwrap()).is_none());
        assert!(host_allowed(None, Some("anything")));
    }

    #[test]
    fn the_page_fetches_nothing_from_elsewhere() {
        for (name, text) in [
            ("index.html", INDEX_HTML),
            ("app.js", APP_JS),
            ("style.css", STYLE_CSS),
        ] {
            for remote in ["http:", "https:", "//cdn", "@import", "url("] {
                assert!(!text.contains(remote), "{name} refers to {remote}");
            }
        }
        assert!(INDEX_HTML.contains(r#"src="/app.js""#));
        assert!(INDEX_HTML.contains(r#"href="/style.css""#));
        let a = random_token().unwrap();
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()), "{a}");
        assert_ne!(a, random_token().unwrap());
    }

    async fn call(
        d: &Shared,
        method: &str,
        uri: &str,
        host: &str,
        token: Option<&str>,
        body: &str,
    ) -> (StatusCode, HeaderMap, String) {
        use tower::ServiceExt;
        let mut request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(t) = token {
            request = request.header(TOKEN_HEADER, t);
        }
        let request = request
            .body(axum::body::Body::from(body.to_string()))
            .unwrap();
        let response = router(d.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, headers, String::from_utf8(body.to_vec()).unwrap())
    }

    /// A client of no API server: the requests tested here must never reach one.
    fn nowhere() -> Client {
        Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap()
    }

    #[tokio::test]
    async fn actions_are_refused_without_the_flag_and_without_the_pages_token() {
        let host = "127.0.0.1:8087";
        let hosts = allowed_hosts(DEFAULT_ADDRESS);
        let off: Shared = Arc::new(Dashboard::new(
            nowhere(),
            false,
            String::new(),
            hosts.clone(),
        ));
        let body = r#"{"namespace": "db", "instance": "a", "node": "n0"}"#;
        for action in ["/api/move", "/api/drain", "/api/resume"] {
            let (status, _, text) = call(&off, "POST", action, host, Some(""), body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{action}: {text}");
            assert!(text.contains("--allow-actions"), "{text}");
        }
        let (status, headers, page) = call(&off, "GET", "/", host, None, "").await;
        assert_eq!(status, StatusCode::OK);
        assert!(page.contains(r#"data-actions="false""#), "{page}");
        assert!(!page.contains("{{"), "every placeholder is filled");
        assert!(
            headers[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("connect-src 'self'")
        );

        let on: Shared = Arc::new(Dashboard::new(nowhere(), true, "s3cret".into(), hosts));
        let (_, _, page) = call(&on, "GET", "/", host, None, "").await;
        assert!(page.contains(r#"data-actions="true""#) && page.contains("s3cret"));
        for token in [None, Some("guess"), Some("s3cre")] {
            let (status, _, text) = call(&on, "POST", "/api/drain", host, token, body).await;
            assert_eq!(status, StatusCode::FORBIDDEN, "{token:?}: {text}");
            assert!(text.contains("X-Dashboard-Token"), "{text}");
        }
        // With the token the action goes on: this body is refused for what it is.
        let (status, _, text) = call(
            &on,
            "POST",
            "/api/move",
            host,
            Some("s3cret"),
            r#"{"node": 1}"#,
        )
        .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");

        // Another host name for this address (a DNS rebinding): refused, reads too.
        let (status, _, _) = call(&on, "GET", "/api/state", "rebound.example:8087", None, "").await;
        assert_eq!(status, StatusCode::MISDIRECTED_REQUEST);

        let (status, _, _) = call(&on, "GET", "/api/state", host, None, "").await;
        assert_eq!(
            status,
            StatusCode::SERVICE_UNAVAILABLE,
            "nothing listed yet"
        );
        on.hub.publish(r#"{"seq":1}"#.into());
        let (status, _, text) = call(&on, "GET", "/api/state", host, None, "").await;
        assert_eq!((status, text.as_str()), (StatusCode::OK, r#"{"seq":1}"#));
    }
}
