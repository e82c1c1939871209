//! The agent's probe endpoints, on `--probe-addr`:
//!
//! - `/healthz` (liveness): 200 while the agent's main loop (the one that brings virtual IPs
//!   up and down and fences the node) has completed a pass within the stall limit; 503 with
//!   the reason otherwise, and a restart is the remedy. It never depends on reaching the API
//!   server: an agent cut off from it must keep running to keep its node fenced, and a
//!   restart then would be survivable but useless.
//! - `/readyz` (readiness): 200 once the agent has renewed its heartbeat Lease within its
//!   self-fence time, its interface exists and is up (with carrier), and its main loop runs;
//!   503 with a one-line reason otherwise. The DaemonSet's rolling update waits for it before
//!   it takes the next node's agent down.
//!
//! The agent is on the host network: the port is the node's. The default, 9810, is taken by
//! none of the usual node components (kubelet 10248/10250, kube-proxy 10249/10256, node
//! exporter 9100, Calico 9099, Cilium 9876/9879/9890-9891/9962-9964, MetalLB 7472/7946).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkFlags;

use super::{AgentArgs, Shared};

/// Where and how the agent answers its probes (flags of `kube-failover agent`).
#[derive(Clone, Debug, clap::Args)]
pub struct ProbeArgs {
    /// Address of `/healthz` and `/readyz`. On the host network the port is the node's:
    /// choose one no other node component listens on.
    #[arg(
        long,
        env = "KUBE_FAILOVER_AGENT_PROBE_ADDR",
        default_value = DEFAULT_PROBE_ADDR
    )]
    pub probe_addr: SocketAddr,
    /// Seconds (fractions allowed) the main loop may go without completing a pass before
    /// `/healthz` fails. Never less than the stop timeout plus 5 s: one pass may spend the
    /// stop timeout stopping the instance workloads.
    #[arg(
        long,
        env = "KUBE_FAILOVER_AGENT_PROBE_STALL_SECONDS",
        default_value_t = 10.0
    )]
    pub probe_stall_seconds: f64,
}

/// The default `--probe-addr`.
pub const DEFAULT_PROBE_ADDR: &str = "0.0.0.0:9810";

impl Default for ProbeArgs {
    fn default() -> Self {
        Self {
            probe_addr: SocketAddr::from(([0, 0, 0, 0], 9810)),
            probe_stall_seconds: 10.0,
        }
    }
}

/// How often the interface's state is read again.
const LINK_EVERY: Duration = Duration::from_secs(1);

/// What the interface looked like when last read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Link {
    /// Not read yet.
    Unknown,
    /// Up, with carrier.
    Up,
    /// Administratively down.
    Down,
    /// Up, but without carrier (the cable, the peer of a veth, the switch port).
    NoCarrier,
    /// Not found, or not readable: the error.
    Missing(String),
    /// Deleted and created again under the same name since the agent started (its index
    /// changed): the agent still addresses the old one, and a restart is needed.
    Replaced { was: u32, now: u32 },
}

impl Link {
    /// The interface's state from its flags.
    pub fn from_flags(flags: LinkFlags) -> Self {
        if !flags.contains(LinkFlags::Up) {
            Link::Down
        } else if !flags.contains(LinkFlags::LowerUp) {
            Link::NoCarrier
        } else {
            Link::Up
        }
    }
}

/// What the probes read, shared with the main loop (cheap to clone).
#[derive(Clone)]
pub struct ProbeState(Arc<Inner>);

struct Inner {
    started: Instant,
    /// When the main loop last completed a pass.
    tick: Mutex<Option<Instant>>,
    link: Mutex<Link>,
}

impl Default for ProbeState {
    fn default() -> Self {
        Self::new()
    }
}

impl ProbeState {
    pub fn new() -> Self {
        Self(Arc::new(Inner {
            started: Instant::now(),
            tick: Mutex::new(None),
            link: Mutex::new(Link::Unknown),
        }))
    }

    /// The main loop completed a pass.
    pub fn tick(&self) {
        *self.0.tick.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
    }

    fn set_link(&self, link: Link) {
        *self.0.link.lock().unwrap_or_else(|e| e.into_inner()) = link;
    }

    fn seen(&self, now: Instant, last_renewal: Option<Instant>) -> Seen {
        Seen {
            now,
            // Before the first pass, counted from the start.
            last_pass: self
                .0
                .tick
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .unwrap_or(self.0.started),
            last_renewal,
            link: self
                .0
                .link
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }
}

/// What the probes see at one instant.
#[derive(Clone, Debug)]
pub struct Seen {
    pub now: Instant,
    /// The main loop's last completed pass (the agent's start before the first).
    pub last_pass: Instant,
    /// When the last successful renewal of the heartbeat Lease was sent; `None` before the
    /// first.
    pub last_renewal: Option<Instant>,
    pub link: Link,
}

/// The limits the probes judge by.
#[derive(Clone, Debug)]
pub struct Limits {
    /// The longest the main loop may go without a pass.
    pub stall: Duration,
    /// The agent's self-fence time: a renewal older than this and the node is fenced.
    pub self_fence: Duration,
    /// The interface's name, for the reasons.
    pub interface: String,
}

impl Limits {
    pub fn of(args: &AgentArgs) -> Self {
        let stall = args
            .probes
            .probe_stall_seconds
            .max(args.workloads.stop_timeout_seconds + 5.0);
        Self {
            stall: Duration::try_from_secs_f64(stall).unwrap_or(Duration::MAX),
            self_fence: Duration::from_secs_f64(args.self_fence_seconds),
            interface: args.interface.clone(),
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

/// `/healthz`: `Ok` while the main loop has completed a pass within the stall limit, else
/// `Err` with the reason. Pure, for tests.
pub fn liveness(seen: &Seen, limits: &Limits) -> Result<String, String> {
    let age = seen.now.saturating_duration_since(seen.last_pass);
    if age > limits.stall {
        Err(format!(
            "main loop stalled: last pass {} ago (limit {})",
            secs(age),
            secs(limits.stall)
        ))
    } else {
        Ok(format!("ok: main loop ran {} ago", secs(age)))
    }
}

/// `/readyz`: `Ok` once the Lease was renewed within the self-fence time, the interface is
/// up and the main loop runs, else `Err` with every reason on one line. Pure, for tests.
pub fn readiness(seen: &Seen, limits: &Limits) -> Result<String, String> {
    let mut failed = Vec::new();
    let renewed = match seen.last_renewal {
        None => {
            failed.push("heartbeat Lease not renewed yet".to_string());
            None
        }
        Some(at) => {
            let age = seen.now.saturating_duration_since(at);
            if age >= limits.self_fence {
                failed.push(format!(
                    "heartbeat Lease last renewed {} ago (self-fence after {}): fenced",
                    secs(age),
                    secs(limits.self_fence)
                ));
            }
            Some(age)
        }
    };
    let name = &limits.interface;
    match &seen.link {
        Link::Up => {}
        Link::Unknown => failed.push(format!("interface {name} not read yet")),
        Link::Down => failed.push(format!("interface {name} is down")),
        Link::NoCarrier => failed.push(format!("interface {name} has no carrier")),
        Link::Missing(e) => failed.push(format!("interface {name} not found: {e}")),
        Link::Replaced { was, now } => failed.push(format!(
            "interface {name} was replaced (index {was}, now {now}): restart the agent"
        )),
    }
    if let Err(stalled) = liveness(seen, limits) {
        failed.push(stalled);
    }
    match (failed.is_empty(), renewed) {
        (true, Some(age)) => Ok(format!(
            "ok: heartbeat Lease renewed {} ago, interface {name} up",
            secs(age)
        )),
        _ => Err(failed.join("; ")),
    }
}

/// Serves `/healthz` and `/readyz` until the process stops, and reads the interface's state
/// every second. A probe address that cannot be bound is retried every second (logged
/// once): the agent goes on without it meanwhile, and the kubelet, whose probes fail, says so.
pub(super) async fn serve(args: AgentArgs, state: ProbeState, shared: Arc<Shared>) {
    use axum::{Router, http::StatusCode, routing::get};
    tokio::spawn(watch_link(args.interface.clone(), state.clone()));
    let limits = Arc::new(Limits::of(&args));
    fn answer(verdict: Result<String, String>) -> (StatusCode, String) {
        match verdict {
            Ok(body) => (StatusCode::OK, body),
            Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why),
        }
    }
    let live = {
        let (state, limits) = (state.clone(), limits.clone());
        move || {
            let verdict = liveness(&state.seen(Instant::now(), None), &limits);
            async move { answer(verdict) }
        }
    };
    let ready = move || {
        // The send time of the last successful renewal, as the renewer recorded it.
        let renewed = shared.last.borrow().as_ref().map(|(sent, _)| *sent);
        let verdict = readiness(&state.seen(Instant::now(), renewed), &limits);
        async move { answer(verdict) }
    };
    let app = Router::new()
        .route("/healthz", get(live))
        .route("/readyz", get(ready));
    let addr = args.probes.probe_addr;
    let mut warned = false;
    let listener = loop {
        match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => break l,
            Err(e) => {
                if !warned {
                    tracing::error!(
                        error = %e,
                        %addr,
                        "cannot bind the probe address (--probe-addr); retrying"
                    );
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    if warned {
        tracing::info!(%addr, "probe address bound");
    }
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "probe server stopped");
    }
}

/// Reads the interface's state every second, on a netlink connection of its own. The first
/// index seen is the interface's: one found later under another index was replaced.
async fn watch_link(name: String, state: ProbeState) {
    let handle = match rtnetlink::new_connection() {
        Ok((connection, handle, _)) => {
            tokio::spawn(connection);
            handle
        }
        Err(e) => {
            state.set_link(Link::Missing(format!("no netlink socket: {e}")));
            return;
        }
    };
    let mut index = None;
    loop {
        let found = handle
            .link()
            .get()
            .match_name(name.clone())
            .execute()
            .try_next()
            .await;
        let link = match found {
            Ok(Some(msg)) => match *index.get_or_insert(msg.header.index) {
                was if was != msg.header.index => Link::Replaced {
                    was,
                    now: msg.header.index,
                },
                _ => Link::from_flags(msg.header.flags),
            },
            Ok(None) => Link::Missing("no such interface".into()),
            Err(rtnetlink::Error::NetlinkError(m)) => Link::Missing(m.to_io().to_string()),
            Err(e) => Link::Missing(e.to_string()),
        };
        state.set_link(link);
        tokio::time::sleep(LINK_EVERY).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn limits() -> Limits {
        Limits {
            stall: 10 * S,
            self_fence: 3 * S,
            interface: "eth0".into(),
        }
    }

    /// At `t0 + 100 s`: a pass 0.1 s ago, a renewal `renewed` seconds ago, the link `link`.
    fn seen(renewed: Option<f64>, link: Link) -> Seen {
        let t0 = Instant::now();
        let now = t0 + 100 * S;
        Seen {
            now,
            last_pass: now - Duration::from_millis(100),
            last_renewal: renewed.map(|s| now - Duration::from_secs_f64(s)),
            link,
        }
    }

    #[test]
    fn a_renewing_agent_with_its_interface_up_is_ready_and_alive() {
        let s = seen(Some(0.4), Link::Up);
        assert_eq!(
            readiness(&s, &limits()),
            Ok("ok: heartbeat Lease renewed 0.4 s ago, interface eth0 up".into())
        );
        assert_eq!(
            liveness(&s, &limits()),
            Ok("ok: main loop ran 0.1 s ago".into())
        );
    }

    #[test]
    fn an_agent_cut_off_from_the_api_server_is_alive_but_not_ready() {
        // Never renewed (started cut off), or not within the self-fence time: the loop
        // that keeps the node fenced runs on, and must not be restarted.
        for s in [
            seen(None, Link::Up),
            seen(Some(3.0), Link::Up),
            seen(Some(600.0), Link::Up),
        ] {
            assert!(liveness(&s, &limits()).is_ok(), "{s:?}");
            assert!(readiness(&s, &limits()).is_err(), "{s:?}");
        }
        assert_eq!(
            readiness(&seen(None, Link::Up), &limits()),
            Err("heartbeat Lease not renewed yet".into())
        );
        assert_eq!(
            readiness(&seen(Some(4.3), Link::Up), &limits()),
            Err("heartbeat Lease last renewed 4.3 s ago (self-fence after 3.0 s): fenced".into())
        );
        // Just within the self-fence time: ready.
        assert!(readiness(&seen(Some(2.9), Link::Up), &limits()).is_ok());
    }

    #[test]
    fn an_interface_that_is_not_up_is_not_ready_and_says_why() {
        let why = |link| readiness(&seen(Some(0.5), link), &limits()).unwrap_err();
        assert_eq!(why(Link::Unknown), "interface eth0 not read yet");
        assert_eq!(why(Link::Down), "interface eth0 is down");
        assert_eq!(why(Link::NoCarrier), "interface eth0 has no carrier");
        assert_eq!(
            why(Link::Missing("No such device (os error 19)".into())),
            "interface eth0 not found: No such device (os error 19)"
        );
        assert_eq!(
            why(Link::Replaced { was: 2, now: 7 }),
            "interface eth0 was replaced (index 2, now 7): restart the agent"
        );
        // The interface is no matter of liveness.
        assert!(liveness(&seen(Some(0.5), Link::Down), &limits()).is_ok());
    }

    #[test]
    fn a_stalled_main_loop_is_neither_alive_nor_ready() {
        let mut s = seen(Some(0.5), Link::Up);
        s.last_pass = s.now - 10 * S;
        assert!(liveness(&s, &limits()).is_ok(), "at the limit");
        s.last_pass = s.now - 11 * S;
        let stalled = "main loop stalled: last pass 11.0 s ago (limit 10.0 s)";
        assert_eq!(liveness(&s, &limits()), Err(stalled.into()));
        assert_eq!(readiness(&s, &limits()), Err(stalled.into()));
    }

    #[test]
    fn every_reason_is_on_one_line() {
        let mut s = seen(None, Link::Down);
        s.last_pass = s.now - 20 * S;
        let why = readiness(&s, &limits()).unwrap_err();
        assert_eq!(
            why,
            "heartbeat Lease not renewed yet; interface eth0 is down; \
             main loop stalled: last pass 20.0 s ago (limit 10.0 s)"
        );
        assert!(!why.contains('\n'));
    }

    #[test]
    fn the_interface_is_up_only_with_carrier() {
        assert_eq!(Link::from_flags(LinkFlags::empty()), Link::Down);
        assert_eq!(Link::from_flags(LinkFlags::LowerUp), Link::Down);
        assert_eq!(Link::from_flags(LinkFlags::Up), Link::NoCarrier);
        assert_eq!(
            Link::from_flags(LinkFlags::Up | LinkFlags::LowerUp | LinkFlags::Broadcast),
            Link::Up
        );
    }

    #[test]
    fn the_stall_limit_covers_a_pass_that_stops_the_workloads() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            agent: AgentArgs,
        }
        let args = |flags: &[&str]| {
            let base = ["agent", "--node", "n1", "--interface", "eth0"];
            Cli::parse_from(base.iter().chain(flags)).agent
        };
        let a = args(&[]);
        assert_eq!(a.probes.probe_addr, DEFAULT_PROBE_ADDR.parse().unwrap());
        assert_eq!(a.probes.probe_addr, ProbeArgs::default().probe_addr);
        assert_eq!(Limits::of(&a).stall, 10 * S);
        assert_eq!(Limits::of(&a).self_fence, 4 * S);
        assert_eq!(
            Limits::of(&args(&["--stop-timeout-seconds", "30"])).stall,
            35 * S
        );
        assert_eq!(
            Limits::of(&args(&["--probe-stall-seconds", "60"])).stall,
            60 * S
        );
    }
}
