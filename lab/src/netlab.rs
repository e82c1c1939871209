//! Real networking for the virtual IP tests: a network namespace per simulated node and one
//! for a client, each with a veth on one bridge in the root namespace, the control plane
//! reachable from all of them through a TCP relay on the bridge's address, which can keep
//! one node from the API server while the node network still joins it to its peers.
//!
//! ```text
//!   kfvip-c (client .100)   kfvip-n0 (.10)   kfvip-n1 (.11)   kfvip-n2 (.12)
//!          eth0                  eth0             eth0             eth0
//!           |                     |                |                |
//!   ------------------------ kfvip0 bridge, 10.213.0.1/24 ------------------------
//!                      relay 10.213.0.1:P -> kube-apiserver 127.0.0.1
//! ```
//!
//! Needs root and `ip` (iproute2). Everything is named `kfvip*` and removed on drop (and
//! before creation, should an earlier run have died without cleaning up).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};

pub const BRIDGE: &str = "kfvip0";
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 100);
/// The virtual IP the tests move.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 200);
pub const CLIENT_NS: &str = "kfvip-c";

/// `ip ARGS`, failing with its stderr.
pub fn ip(args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .context("running ip (iproute2)")?;
    if !out.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn node_ns(i: usize) -> String {
    format!("kfvip-n{i}")
}

/// The root side of node `i`'s veth: cut it and the node is partitioned.
fn node_port(i: usize) -> String {
    format!("kfvip-p{i}")
}

pub fn node_ip(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(10, 213, 0, 10 + i as u8)
}

/// The network of one test.
pub struct NetLab {
    pub nodes: usize,
    /// `GATEWAY:port`, relayed to the API server.
    pub api_relay: SocketAddr,
    relay: tokio::task::JoinHandle<()>,
    cuts: Arc<Cuts>,
    children: Vec<Child>,
}

/// Which nodes the relay keeps from the API server, and the connections it relays.
#[derive(Default)]
struct Cuts {
    cut: Mutex<BTreeSet<IpAddr>>,
    live: Mutex<Vec<(IpAddr, tokio::task::AbortHandle)>>,
}

impl Cuts {
    fn is_cut(&self, ip: IpAddr) -> bool {
        self.cut
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&ip)
    }

    fn track(&self, ip: IpAddr, handle: tokio::task::AbortHandle) {
        let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|(_, h)| !h.is_finished());
        live.push((ip, handle));
    }

    /// Cuts `ip` off (its relayed connections dropped at once, new ones refused), or lets
    /// it through again.
    fn set(&self, ip: IpAddr, cut: bool) {
        let mut set = self.cut.lock().unwrap_or_else(|e| e.into_inner());
        if !cut {
            set.remove(&ip);
            return;
        }
        set.insert(ip);
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        for (_, h) in live.iter().filter(|(from, _)| *from == ip) {
            h.abort();
        }
    }
}

impl NetLab {
    /// Creates the bridge, the namespaces of `nodes` nodes and the client, and the relay to
    /// the API server at `api` (on loopback).
    pub async fn create(nodes: usize, api: SocketAddr) -> Result<Self> {
        if !nix::unistd::Uid::effective().is_root() {
            bail!("the virtual IP tests need root (network namespaces, veth, raw sockets)");
        }
        cleanup(nodes);
        ip(&["link", "add", BRIDGE, "type", "bridge"])?;
        ip(&["addr", "add", &format!("{GATEWAY}/24"), "dev", BRIDGE])?;
        ip(&["link", "set", BRIDGE, "up"])?;
        let mut hosts: Vec<(String, String, Ipv4Addr)> = (0..nodes)
            .map(|i| (node_ns(i), node_port(i), node_ip(i)))
            .collect();
        hosts.push((CLIENT_NS.into(), "kfvip-pc".into(), CLIENT_IP));
        for (ns, port, addr) in &hosts {
            ip(&["netns", "add", ns])?;
            ip(&[
                "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", ns,
            ])?;
            ip(&["link", "set", port, "master", BRIDGE])?;
            ip(&["link", "set", port, "up"])?;
            ip(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", ns, "link", "set", "lo", "up"])?;
            ip(&[
                "-n",
                ns,
                "route",
                "add",
                "default",
                "via",
                &GATEWAY.to_string(),
            ])?;
        }
        let listener = tokio::net::TcpListener::bind((GATEWAY, 0))
            .await
            .context("relay listener on the bridge")?;
        let api_relay = listener.local_addr()?;
        let cuts = Arc::new(Cuts::default());
        let relay = tokio::spawn({
            let cuts = cuts.clone();
            async move {
                while let Ok((mut inbound, from)) = listener.accept().await {
                    if cuts.is_cut(from.ip()) {
                        continue;
                    }
                    let task = tokio::spawn(async move {
                        if let Ok(mut out) = tokio::net::TcpStream::connect(api).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                        }
                    });
                    cuts.track(from.ip(), task.abort_handle());
                }
            }
        });
        Ok(Self {
            nodes,
            api_relay,
            relay,
            cuts,
            children: Vec::new(),
        })
    }

    /// Writes to `path` a kubeconfig for the agent of `node` that reaches the API server
    /// through the relay: the agent's ServiceAccount token, bound to a pod of its own on
    /// that node, as the kubelet gives a DaemonSet's pod (the agent's identity must be
    /// installed, [`crate::controlplane::install_agent_identity`]).
    pub async fn agent_kubeconfig(
        &self,
        cp: &crate::controlplane::ControlPlane,
        client: &kube::Client,
        node: &str,
        path: &Path,
    ) -> Result<()> {
        use crate::controlplane::AGENT_NS;
        let pods: kube::Api<k8s_openapi::api::core::v1::Pod> =
            kube::Api::namespaced(client.clone(), AGENT_NS);
        let pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("agent-{node}")},
            "spec": {"nodeName": node, "serviceAccountName": "kube-failover-agent",
                     "containers": [{"name": "agent", "image": "agent"}],
                     "tolerations": [{"operator": "Exists"}]},
        }))?;
        let pod = pods
            .create(&kube::api::PostParams::default(), &pod)
            .await
            .with_context(|| format!("the agent pod of {node}"))?;
        self.agent_kubeconfig_of(cp, client, &pod, path).await
    }

    /// Writes to `path` a kubeconfig through the relay with a token bound to `pod`, an
    /// agent pod that exists (one a DaemonSet made, say).
    pub async fn agent_kubeconfig_of(
        &self,
        cp: &crate::controlplane::ControlPlane,
        client: &kube::Client,
        pod: &k8s_openapi::api::core::v1::Pod,
        path: &Path,
    ) -> Result<()> {
        use crate::controlplane::agent_token;
        let node = pod
            .spec
            .as_ref()
            .and_then(|s| s.node_name.clone())
            .unwrap_or_default();
        let token = agent_token(client, pod).await?;
        let direct = cp.kubeconfig_with_token(&format!("agent-{node}"), &token)?;
        let api = cp.api_addr()?;
        let text = std::fs::read_to_string(&direct)?.replace(
            &format!("server: https://{api}"),
            &format!(
                "server: https://{}\n    tls-server-name: kubernetes",
                self.api_relay
            ),
        );
        std::fs::write(path, text)?;
        Ok(())
    }

    pub fn node_ns(&self, i: usize) -> String {
        node_ns(i)
    }

    /// Starts `program args` inside node `i`'s namespace (`None`: the client's), its
    /// output to `log`. The process is killed when the lab is dropped, unless taken back
    /// with [`Self::kill`] first.
    pub fn spawn(
        &mut self,
        node: Option<usize>,
        program: &Path,
        args: &[&str],
        log: &Path,
    ) -> Result<u32> {
        let ns = node.map(node_ns).unwrap_or_else(|| CLIENT_NS.into());
        let out = std::fs::File::create(log)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &ns])
            .arg(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {} in {ns}", program.display()))?;
        let pid = child.id();
        self.children.push(child);
        Ok(pid)
    }

    /// Kills a process started by [`Self::spawn`] at once (SIGKILL), as a power cut does.
    pub fn kill(&mut self, pid: u32) {
        if let Some(pos) = self.children.iter().position(|c| c.id() == pid) {
            let mut child = self.children.remove(pos);
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops a process started by [`Self::spawn`] as the kubelet stops a container
    /// (SIGTERM), and waits up to `within` for it to exit; whether it did.
    pub fn terminate(&mut self, pid: u32, within: std::time::Duration) -> bool {
        let Some(pos) = self.children.iter().position(|c| c.id() == pid) else {
            return false;
        };
        let target = nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX));
        let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGTERM);
        let deadline = std::time::Instant::now() + within;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.children[pos].try_wait() {
                // Reaped by try_wait already; wait returns its status at once.
                let _ = self.children.remove(pos).wait();
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        false
    }

    /// Cuts node `i` off the API server alone (the relay drops its connections and refuses
    /// new ones), or lets it through again; its peers and clients still reach it.
    pub fn cut_api(&self, i: usize, cut: bool) {
        self.cuts.set(IpAddr::V4(node_ip(i)), cut);
    }

    /// Cuts node `i` off the network (its side keeps running) or joins it again.
    pub fn partition(&self, i: usize, cut: bool) -> Result<()> {
        ip(&[
            "link",
            "set",
            &node_port(i),
            if cut { "down" } else { "up" },
        ])?;
        Ok(())
    }

    /// A power cut of node `i` (`on = false`; its processes are the caller's to kill): its
    /// interface goes down and loses every address, as a machine that reboots comes back
    /// with none of the addresses it had brought up. `on = true` boots it: its own address,
    /// the link and the default route.
    pub fn power(&self, i: usize, on: bool) -> Result<()> {
        let ns = node_ns(i);
        if !on {
            ip(&["-n", &ns, "link", "set", "eth0", "down"])?;
            ip(&["-n", &ns, "addr", "flush", "dev", "eth0"])?;
            return Ok(());
        }
        ip(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{}/24", node_ip(i)),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
        ip(&[
            "-n",
            &ns,
            "route",
            "replace",
            "default",
            "via",
            &GATEWAY.to_string(),
        ])?;
        Ok(())
    }

    /// Whether `addr` is on node `i`'s interface.
    pub fn has_address(&self, i: usize, addr: Ipv4Addr) -> Result<bool> {
        let out = ip(&["-n", &node_ns(i), "-o", "addr", "show", "dev", "eth0"])?;
        let needle = format!(" {addr}/");
        Ok(out.contains(&needle))
    }

    /// The MAC address of node `i`'s interface.
    pub fn mac(&self, i: usize) -> Result<String> {
        let out = ip(&["-n", &node_ns(i), "-o", "link", "show", "dev", "eth0"])?;
        out.split_whitespace()
            .skip_while(|w| *w != "link/ether")
            .nth(1)
            .map(str::to_string)
            .context("no MAC on eth0")
    }
}

impl Drop for NetLab {
    fn drop(&mut self) {
        self.relay.abort();
        for mut child in self.children.drain(..) {
            let _ = child.kill();
            let _ = child.wait();
        }
        cleanup(self.nodes);
    }
}

fn cleanup(nodes: usize) {
    for i in 0..nodes.max(8) {
        let _ = ip(&["netns", "del", &node_ns(i)]);
        let _ = ip(&["link", "del", &node_port(i)]);
    }
    let _ = ip(&["netns", "del", CLIENT_NS]);
    let _ = ip(&["link", "del", "kfvip-pc"]);
    let _ = ip(&["link", "del", BRIDGE]);
}

/// The lab's network helper scripts (`lab/net/`).
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("net")
        .join(name)
}
