//! The node agent and a node's own addresses, in network namespaces against the real control
//! plane: a virtual IP that is one of a node's addresses never takes that node off the
//! network. The test needs root and iproute2.
//!
//! No controller runs here: the test writes each instance's `status.served` itself, as the
//! controller would publish it, so that what is checked is the agent's behaviour whatever the
//! controller admits.

#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube_failover_core::api::{FailoverClusterInstance, VipMode, agent_lease_name};
use kube_failover_lab::controlplane::install_agent_identity;
use kube_failover_lab::demo::instance;
use kube_failover_lab::harness::{
    TestNamespace, control_plane, node_addresses, nodes_and_cluster, wait_for,
};
use kube_failover_lab::netlab::{self, NetLab, VIP};

const T: Duration = Duration::from_secs(60);
/// How long a node's addresses are watched to stay as they are.
const WINDOW: Duration = Duration::from_secs(10);
/// The agent's self-fence time (its default): a Lease older than this means it fenced.
const SELF_FENCE: Duration = Duration::from_secs(3);

/// Node 1's address on its interface (a /24, as the lab gives it): its InternalIP.
fn own() -> Ipv4Addr {
    netlab::node_ip(1)
}
/// Node 1's ExternalIP: in its Node's status, on no interface of it.
const EXTERNAL: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 210);
/// A host address an operator added to node 1's interface by hand.
const BY_HAND: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 203);
/// In the instance's spec only: the controller did not admit it.
const SPEC_ONLY: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 201);
/// The virtual IP of a second instance, granted to node 1 throughout.
const OTHER_VIP: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 202);

/// Publishes `vips` as the instance's served virtual IPs, granted to `vip_node`, as the
/// controller would.
async fn publish(
    fcis: &Api<FailoverClusterInstance>,
    name: &str,
    vips: &[Ipv4Addr],
    vip_node: &str,
) {
    let vips: Vec<String> = vips.iter().map(ToString::to_string).collect();
    fcis.patch_status(
        name,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"status": {"served": {
            "dnsName": format!("{name}.example.svc"),
            "virtualIPs": vips,
            "vipNode": vip_node,
        }}})),
    )
    .await
    .unwrap();
}

/// Node 1 (its network namespace), its agent's Lease, and the file its agent's stop command
/// writes when it fences.
struct Watched<'a> {
    netns: String,
    leases: Api<Lease>,
    lease: String,
    fenced: PathBuf,
    logs: &'a Path,
}

impl Watched<'_> {
    fn has(&self, ip: Ipv4Addr) -> bool {
        netlab::ip(&["-n", &self.netns, "-o", "addr", "show", "dev", "eth0"])
            .unwrap()
            .contains(&format!(" {ip}/"))
    }

    /// Awaits `up` (or its absence) of `ip` on node 1's interface, looking every 50 ms; node
    /// 1's own address stays up all the while.
    async fn until(&self, ip: Ipv4Addr, up: bool, what: &str) {
        let deadline = Instant::now() + T;
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        while self.has(ip) != up {
            assert!(
                self.has(own()),
                "{what}: node 1's own address {} was taken off it; logs in {}",
                own(),
                self.logs.display()
            );
            assert!(
                Instant::now() < deadline,
                "{what}: {ip} not {} on node 1 within {T:?}; logs in {}",
                if up { "up" } else { "down" },
                self.logs.display()
            );
            tick.tick().await;
        }
    }

    /// Watches node 1 for `window`, every 200 ms: `kept` stay on its interface, `absent`
    /// never appear, its agent's Lease is never older than the self-fence time and is
    /// renewed all along, and the agent never fences itself.
    async fn steady(&self, window: Duration, kept: &[Ipv4Addr], absent: &[Ipv4Addr], what: &str) {
        let end = Instant::now() + window;
        let mut renewals = std::collections::BTreeSet::new();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        while Instant::now() < end {
            tick.tick().await;
            for ip in kept {
                assert!(
                    self.has(*ip),
                    "{what}: {ip} was taken off node 1; logs in {}",
                    self.logs.display()
                );
            }
            for ip in absent {
                assert!(
                    !self.has(*ip),
                    "{what}: {ip} was brought up on node 1; logs in {}",
                    self.logs.display()
                );
            }
            let lease = self.leases.get(&self.lease).await.unwrap();
            let renewed = lease.spec.unwrap().renew_time.unwrap().0;
            let age = jiff::Timestamp::now().duration_since(renewed);
            assert!(
                age < jiff::SignedDuration::try_from(SELF_FENCE).unwrap(),
                "{what}: node 1's agent last renewed its Lease {age:?} ago; logs in {}",
                self.logs.display()
            );
            renewals.insert(renewed);
            assert!(
                !self.fenced.exists(),
                "{what}: node 1's agent fenced itself"
            );
        }
        // Renewed every second: at least one renewal in every two seconds of the window.
        let expected = (window.as_secs() / 2).max(1) as usize;
        assert!(
            renewals.len() >= expected,
            "{what}: node 1's agent renewed its Lease {} times in {window:?}",
            renewals.len()
        );
    }
}

/// A tenant names node 1's own addresses as virtual IPs of its instance: its InternalIP (on
/// the interface), its ExternalIP (in its Node only), and an address an operator added by
/// hand; the instance is owned by node 0. Node 1's agent never takes any of them down and
/// never brings one up, whether the instance is granted to node 0 or to node 1 itself, and
/// node 1 stays on the network, its agent's Lease renewed, all along. What the agent does
/// bring up, it takes from the status (never the spec), takes down when the grant goes, and
/// takes down after a restart that lost its state file, by the marker it leaves on the
/// addresses it adds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vip_that_is_a_nodes_own_address_never_takes_the_node_off_the_network() {
    let ns = TestNamespace::new("agent-addr").await;
    let client = ns.client.clone();
    let cp = control_plane();
    let nodes = nodes_and_cluster(&client, "agent-addr", 2, serde_json::json!({})).await;
    let mut lab = NetLab::create(2, cp.api_addr().unwrap()).await.unwrap();
    install_agent_identity(&client, &cp.tools_bin().join("helm"))
        .await
        .unwrap();
    let dir = cp.logs_dir().join(&ns.name);
    std::fs::create_dir_all(&dir).unwrap();

    // Node 1's Node lists its addresses, as a kubelet reports them.
    let node_api: Api<Node> = Api::all(client.clone());
    node_api
        .patch_status(
            &nodes[1],
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"status": {"addresses": [
                {"type": "InternalIP", "address": own().to_string()},
                {"type": "ExternalIP", "address": EXTERNAL.to_string()},
                {"type": "Hostname", "address": nodes[1]},
            ]}})),
        )
        .await
        .unwrap();
    netlab::ip(&[
        "-n",
        &lab.node_ns(1),
        "addr",
        "add",
        &format!("{BY_HAND}/32"),
        "dev",
        "eth0",
    ])
    .unwrap();

    // The instance, owned by node 0: the tenant asks for node 1's three addresses, the
    // lab's VIP and one more; its status serves all but the last.
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    let served = [own(), EXTERNAL, BY_HAND, VIP];
    let mut fci = instance("db", "agent-addr", &nodes[..1], None).unwrap();
    fci.spec.vip_mode = VipMode::Agent;
    fci.spec.virtual_ips = served
        .iter()
        .chain([&SPEC_ONLY])
        .map(ToString::to_string)
        .collect();
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    publish(&fcis, "db", &served, &nodes[0]).await;

    // Node 1's agent (node 0's is not needed: nothing is checked there).
    let kubeconfig = dir.join("kubeconfig-1");
    lab.agent_kubeconfig(cp, &client, &nodes[1], &kubeconfig)
        .await
        .unwrap();
    let state = dir.join("state-1");
    let fenced = dir.join("fenced-1");
    let agent_bin = PathBuf::from(env!("CARGO_BIN_EXE_kube-failover"));
    let stop = format!("date +%s%N > {}", fenced.display());
    let start_agent = |lab: &mut NetLab| -> u32 {
        lab.spawn(
            Some(1),
            Path::new("env"),
            &[
                &format!("KUBECONFIG={}", kubeconfig.display()),
                "RUST_LOG=info",
                agent_bin.to_str().unwrap(),
                "agent",
                "--node",
                &nodes[1],
                "--interface",
                "eth0",
                "--state-dir",
                state.to_str().unwrap(),
                "--stop-timeout-seconds",
                "0.5",
                "--stop-command",
                &stop,
            ],
            &dir.join(format!(
                "agent-1-{}.log",
                jiff::Timestamp::now().as_millisecond()
            )),
        )
        .unwrap()
    };
    let pid = start_agent(&mut lab);
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = agent_lease_name(&nodes[1]);
    wait_for(
        leases.clone(),
        &lease,
        T,
        "agent Lease",
        |l: Option<&Lease>| l.is_some(),
    )
    .await;
    let node1 = Watched {
        netns: lab.node_ns(1),
        leases,
        lease,
        fenced,
        logs: &dir,
    };

    // A second instance, granted to node 1 and created after the first: once its VIP is up,
    // the agent has read the first one's status too.
    let mut other = instance("web", "agent-addr", &nodes[1..2], None).unwrap();
    other.spec.vip_mode = VipMode::Agent;
    other.spec.virtual_ips = vec![OTHER_VIP.to_string()];
    fcis.create(&PostParams::default(), &other).await.unwrap();
    publish(&fcis, "web", &[OTHER_VIP], &nodes[1]).await;
    node1
        .until(OTHER_VIP, true, "the other instance's VIP")
        .await;

    let kept = [own(), BY_HAND, OTHER_VIP];
    let absent = [EXTERNAL, SPEC_ONLY, VIP];
    node1
        .steady(WINDOW, &kept, &absent, "granted to node 0")
        .await;

    // Granted to node 1 itself: the lab's VIP comes up, node 1's own addresses stay as they
    // are (the ExternalIP is not brought up), the address only in the spec never comes up.
    publish(&fcis, "db", &served, &nodes[1]).await;
    node1.until(VIP, true, "granted to node 1").await;
    let with_vip = [own(), BY_HAND, OTHER_VIP, VIP];
    node1
        .steady(
            Duration::from_secs(3),
            &with_vip,
            &[EXTERNAL, SPEC_ONLY],
            "granted to node 1",
        )
        .await;

    // Back to node 0: the agent takes down what it brought up, and only that.
    publish(&fcis, "db", &served, &nodes[0]).await;
    node1.until(VIP, false, "granted to node 0 again").await;
    node1
        .steady(WINDOW, &kept, &absent, "granted to node 0 again")
        .await;

    // The agent restarts having lost its state file while the VIP is up, and the grant has
    // meanwhile gone to node 0: it recognises the VIP by its marker and takes it down, and
    // still leaves node 1's own addresses alone.
    publish(&fcis, "db", &served, &nodes[1]).await;
    node1
        .until(VIP, true, "granted to node 1 before the restart")
        .await;
    lab.kill(pid);
    std::fs::remove_dir_all(&state).unwrap();
    publish(&fcis, "db", &served, &nodes[0]).await;
    assert!(node1.has(VIP), "the VIP stayed up while the agent was down");
    let _pid = start_agent(&mut lab);
    node1
        .until(VIP, false, "after a restart without its state file")
        .await;
    node1
        .until(
            OTHER_VIP,
            true,
            "the other instance's VIP after the restart",
        )
        .await;
    node1
        .steady(WINDOW / 2, &kept, &absent, "after the restart")
        .await;

    // What node 1's agent read of its Node held throughout.
    let addresses = node_addresses(&client, &nodes[1]).await;
    assert!(
        addresses.contains(&own().to_string()) && addresses.contains(&EXTERNAL.to_string()),
        "node 1's Node lost the addresses the test gave it: {addresses:?}"
    );
}
