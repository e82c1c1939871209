//! Virtual IPs: the Service of each `vipMode` on the real control plane, and the node agent
//! moving a virtual IP between network namespaces (real veths, a real bridge, ARP), with a
//! client connecting all the while. The namespace test needs root and iproute2.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use kube_failover_core::api::{FailoverClusterInstance, Phase};
use kube_failover_lab::controlplane::install_agent_identity;
use kube_failover_lab::demo::instance;
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, in_phase, nodes_and_cluster, wait_for,
};
use kube_failover_lab::netlab::{self, NetLab, VIP};

const T: Duration = Duration::from_secs(60);

fn online_on(i: Option<&FailoverClusterInstance>) -> Option<String> {
    let s = i?.status.as_ref()?;
    (s.phase == Phase::Online && s.current_move.is_none())
        .then(|| s.served.as_ref()?.vip_node.clone())
        .flatten()
}

/// `vipMode: LoadBalancer`: the Service an announcer (MetalLB, kube-vip) acts on asks for the
/// VIP, keeps traffic on the node of its endpoint, and that endpoint is the owner's pod
/// alone; switching the mode back turns it into a plain Service again.
#[tokio::test]
async fn load_balancer_mode_asks_for_the_vip_from_the_owner_only() {
    let ns = TestNamespace::new("vip-lb").await;
    let client = ns.client.clone();
    let nodes = nodes_and_cluster(&client, "vip-lb", 3, serde_json::json!({})).await;
    let _replica = Replica::start(&ns.name, "vip-lb", false);
    let mut fci = instance("db", "vip-lb", &nodes[1..2], None).unwrap();
    fci.spec.vip_mode = kube_failover_core::api::VipMode::LoadBalancer;
    fci.spec.virtual_ips = vec!["192.0.2.10".into()];
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    let services: Api<Service> = Api::namespaced(client.clone(), &ns.name);
    let svc = wait_for(
        services.clone(),
        "db",
        T,
        "LoadBalancer Service",
        |s: Option<&Service>| {
            s.and_then(|s| s.spec.as_ref()?.type_.clone()).as_deref() == Some("LoadBalancer")
        },
    )
    .await;
    let spec = svc.spec.clone().unwrap();
    assert_eq!(spec.load_balancer_ip.as_deref(), Some("192.0.2.10"));
    assert_eq!(spec.external_traffic_policy.as_deref(), Some("Local"));
    assert_eq!(
        spec.external_ips, None,
        "no externalIPs in LoadBalancer mode"
    );
    assert!(
        spec.health_check_node_port.is_some(),
        "the API server allocated the health check port"
    );
    for key in kube_failover_controller::build::LOAD_BALANCER_IP_ANNOTATIONS {
        assert_eq!(
            svc.annotations().get(key).map(String::as_str),
            Some("192.0.2.10"),
            "{key}"
        );
    }
    // The endpoint announcers look at: the owner's pod, alone, on the owner node.
    wait_for(fcis.clone(), "db", T, "online", in_phase(Phase::Online)).await;
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &ns.name);
    let slice = slices.get("db").await.unwrap();
    let eps = slice.endpoints.clone().unwrap_or_default();
    assert_eq!(eps.len(), 1, "{eps:?}");
    assert_eq!(eps[0].node_name.as_deref(), Some(nodes[1].as_str()));
    // Back to ExternalIPs: the API server drops the LoadBalancer's node ports.
    fcis.patch(
        "db",
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(serde_json::json!({"spec": {"vipMode": "ExternalIPs"}})),
    )
    .await
    .unwrap();
    let svc = wait_for(
        services,
        "db",
        T,
        "ClusterIP Service",
        |s: Option<&Service>| {
            s.and_then(|s| s.spec.as_ref()).is_some_and(|s| {
                s.type_.as_deref() == Some("ClusterIP") && s.external_ips.is_some()
            })
        },
    )
    .await;
    assert!(
        svc.annotations()
            .keys()
            .all(|k| !k.contains("loadbalancerIPs") && !k.contains("loadBalancerIPs"))
    );
}

/// One probe line of `lab/net/probe.py`.
#[derive(serde::Deserialize, Debug, Clone)]
struct Probe {
    t: i64,
    answer: Option<String>,
    macs: Vec<String>,
}

fn probes(path: &PathBuf) -> Vec<Probe> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

fn now_ns() -> i64 {
    jiff::Timestamp::now().as_nanosecond() as i64
}

#[derive(Debug)]
#[allow(dead_code)] // printed
struct Round {
    kind: &'static str,
    from: String,
    to: String,
    /// Fault to the first answer from the new owner, seconds (client-observed).
    client_seconds: f64,
    /// Old owner's workload stopped (partition) → new pod created, seconds (must be > 0).
    stop_margin: Option<f64>,
    /// Old owner's VIP gone → new owner's VIP up (seen on the interfaces), seconds.
    vip_gap: f64,
}

/// The node agent moves the virtual IP with the instance: over `VIP_ROUNDS` failovers
/// (default 30: two partitions for every power cut) a client in its own namespace connects
/// to the VIP every 50 ms and asks by ARP who has it. Checked every time: no ARP request is
/// answered by two MACs; the VIP is never on two nodes' interfaces at once (sampled every
/// 20 ms); a partitioned owner took the VIP down and stopped its workload before the new
/// owner's pod was created; between failovers every probe is answered. Prints the
/// client-observed failover times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_moves_the_vip_and_a_cut_off_owner_fences_itself() {
    let env = |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.into());
    let rounds: usize = env("VIP_ROUNDS", "30").parse().unwrap();
    // The agent's timings: a 1 s heartbeat by default (VIP_RENEW_MS), a self-fence time of
    // twice that, and what the stop command may take.
    let renew_ms: u64 = env("VIP_RENEW_MS", "1000").parse().unwrap();
    let self_fence = env(
        "VIP_SELF_FENCE_SECONDS",
        &format!("{}", (2 * renew_ms) as f64 / 1000.0),
    );
    let stop_timeout = env("VIP_STOP_TIMEOUT_SECONDS", "0.5");
    let lease_stale: u32 = env(
        "VIP_LEASE_STALE_SECONDS",
        &(renew_ms * 2).div_ceil(1000).to_string(),
    )
    .parse()
    .unwrap();
    eprintln!(
        "agent: renew every {renew_ms} ms, self-fence {self_fence} s, stop timeout {stop_timeout} s; \
         lease stale after {lease_stale} s"
    );
    let ns = TestNamespace::new("vip-agent").await;
    let client = ns.client.clone();
    let cp = control_plane();
    let nodes = nodes_and_cluster(
        &client,
        "vip-agent",
        3,
        serde_json::json!({
            // The kubelets' Leases (KWOK renews every second) detect the failure; the agents'
            // say when a silent agent has fenced itself.
            "heartbeat": {"leaseStaleSeconds": lease_stale, "notReadySeconds": 60},
            "fencing": {"unfenceAfterSeconds": 1},
        }),
    )
    .await;
    let mut lab = NetLab::create(3, cp.api_addr().unwrap()).await.unwrap();
    install_agent_identity(&client, &cp.tools_bin().join("helm"))
        .await
        .unwrap();
    // Kept with the control plane's logs: agents', workloads' and the client's output.
    let dir = cp.logs_dir().join(&ns.name);
    std::fs::create_dir_all(&dir).unwrap();
    let agent_bin = PathBuf::from(env!("CARGO_BIN_EXE_kube-failover"));

    // Per node: a kubeconfig through the relay (its token bound to a pod on the node), the
    // workload stand-in, and the agent.
    let mut kubeconfigs = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let path = dir.join(format!("kubeconfig-{i}"));
        lab.agent_kubeconfig(cp, &client, node, &path)
            .await
            .unwrap();
        kubeconfigs.push(path);
    }
    let serve = |lab: &mut NetLab, i: usize| -> u32 {
        let stopped = dir.join(format!("stopped-{i}"));
        let _ = std::fs::remove_file(&stopped);
        let pid = lab
            .spawn(
                Some(i),
                std::path::Path::new("python3"),
                &[
                    netlab::script("serve.py").to_str().unwrap(),
                    &nodes[i],
                    "8080",
                    stopped.to_str().unwrap(),
                ],
                &dir.join(format!("serve-{i}.log")),
            )
            .unwrap();
        std::fs::write(dir.join(format!("serve-{i}.pid")), pid.to_string()).unwrap();
        pid
    };
    let agent = |lab: &mut NetLab, i: usize| -> u32 {
        let stop = format!(
            "kill -TERM $(cat {})",
            dir.join(format!("serve-{i}.pid")).display()
        );
        let kubeconfig = kubeconfigs[i].display().to_string();
        let state = dir.join(format!("state-{i}")).display().to_string();
        lab.spawn(
            Some(i),
            std::path::Path::new("env"),
            &[
                &format!("KUBECONFIG={kubeconfig}"),
                "RUST_LOG=info",
                agent_bin.to_str().unwrap(),
                "agent",
                "--node",
                &nodes[i],
                "--interface",
                "eth0",
                "--renew-ms",
                &renew_ms.to_string(),
                "--self-fence-seconds",
                &self_fence,
                "--stop-timeout-seconds",
                &stop_timeout,
                "--state-dir",
                &state,
                "--stop-command",
                &stop,
            ],
            &dir.join(format!("agent-{i}.log")),
        )
        .unwrap()
    };
    let mut serve_pids = BTreeMap::new();
    let mut agent_pids = BTreeMap::new();
    for i in 0..3 {
        agent_pids.insert(i, agent(&mut lab, i));
    }
    // The workloads start once their agents heartbeat (an agent that cannot renew within
    // its self-fence time of starting stops them).
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-node-lease");
    for node in &nodes {
        let name = kube_failover_core::api::agent_lease_name(node);
        wait_for(
            leases.clone(),
            &name,
            T,
            "agent Lease",
            |l: Option<&k8s_openapi::api::coordination::v1::Lease>| l.is_some(),
        )
        .await;
    }
    for i in 0..3 {
        serve_pids.insert(i, serve(&mut lab, i));
    }
    let probe_log = dir.join("probe.jsonl");
    lab.spawn(
        None,
        std::path::Path::new("python3"),
        &[
            netlab::script("probe.py").to_str().unwrap(),
            "eth0",
            &VIP.to_string(),
            "8080",
            "0.05",
        ],
        &probe_log,
    )
    .unwrap();
    // Interfaces sampled every 20 ms: which nodes have the VIP up.
    let samples = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(i64, Vec<usize>)>::new()));
    let sampler = {
        let samples = samples.clone();
        tokio::task::spawn_blocking(move || {
            let probe = |i: usize| {
                netlab::ip(&[
                    "-n",
                    &format!("kfvip-n{i}"),
                    "-o",
                    "addr",
                    "show",
                    "dev",
                    "eth0",
                ])
                .map(|o| o.contains(&format!(" {VIP}/")))
                .unwrap_or(false)
            };
            while std::sync::Arc::strong_count(&samples) > 1 {
                let t = now_ns();
                let on: Vec<usize> = (0..3).filter(|i| probe(*i)).collect();
                samples.lock().unwrap().push((t, on));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let _replica = Replica::start(&ns.name, "vip-agent", false);
    let mut fci = instance("db", "vip-agent", &nodes[..1], None).unwrap();
    fci.spec.vip_mode = kube_failover_core::api::VipMode::Agent;
    fci.spec.virtual_ips = vec![VIP.to_string()];
    fci.spec.network_name.ports[0].port = 8080;
    fci.spec.failover.threshold = Some(1000);
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &ns.name);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    let first = wait_for(
        fcis.clone(),
        "db",
        T,
        "online with the VIP granted",
        |i: Option<&FailoverClusterInstance>| online_on(i).is_some(),
    )
    .await;
    let mut owner = online_on(Some(&first)).unwrap();
    let index = |n: &str| nodes.iter().position(|x| x == n).unwrap();
    let answered_by = |who: &str, after: i64| {
        probes(&probe_log)
            .into_iter()
            .find(|p| p.t >= after && p.answer.as_deref() == Some(who))
    };
    let deadline = Instant::now() + T;
    while answered_by(&owner, 0).is_none() {
        assert!(
            Instant::now() < deadline,
            "the VIP never answered from {owner}; see {}",
            dir.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // From the first answer of each owner to the next fault: the client must be answered
    // throughout (these windows' starts; each ends at the next round's fault).
    let mut steady_from = vec![answered_by(&owner, 0).unwrap().t];
    let mut faults = Vec::new();

    let mut results = Vec::new();
    for round in 0..rounds {
        let kind = if round % 3 == 2 {
            "power cut"
        } else {
            "partition"
        };
        let o = index(&owner);
        let t0 = now_ns();
        faults.push(t0);
        if kind == "partition" {
            lab.partition(o, true).unwrap();
        } else {
            lab.kill(agent_pids[&o]);
            lab.kill(serve_pids[&o]);
            lab.power(o, false).unwrap();
            // A rebooted node's /run is empty.
            let _ = std::fs::remove_dir_all(dir.join(format!("state-{o}")));
        }
        cp.nodes.kill(&owner).await.unwrap();
        let moved = wait_for(
            fcis.clone(),
            "db",
            T,
            "online elsewhere",
            |i: Option<&FailoverClusterInstance>| online_on(i).is_some_and(|n| n != owner),
        )
        .await;
        let to = online_on(Some(&moved)).unwrap();
        let deadline = Instant::now() + T;
        let answer = loop {
            if let Some(p) = answered_by(&to, t0) {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: the VIP never answered from {to}; see {}",
                dir.display()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        steady_from.push(answer.t);
        let m = moved
            .status
            .as_ref()
            .unwrap()
            .history
            .last()
            .cloned()
            .unwrap();
        let created = m.pod_created.as_ref().unwrap().0.as_nanosecond() as i64;
        let stop_margin = (kind == "partition").then(|| {
            let stopped: i64 = std::fs::read_to_string(dir.join(format!("stopped-{o}")))
                .unwrap_or_else(|_| panic!("round {round}: {owner}'s workload never stopped"))
                .trim()
                .parse()
                .unwrap();
            (created - stopped) as f64 / 1e9
        });
        let (old_gone, new_up) = {
            let s = samples.lock().unwrap();
            let old_gone = s
                .iter()
                .find(|(t, on)| *t >= t0 && !on.contains(&o))
                .map(|x| x.0);
            let new_up = s
                .iter()
                .find(|(t, on)| *t >= t0 && on.contains(&index(&to)))
                .map(|x| x.0);
            (old_gone.unwrap_or(t0), new_up.unwrap())
        };
        let r = Round {
            kind,
            from: owner.clone(),
            to: to.clone(),
            client_seconds: (answer.t - t0) as f64 / 1e9,
            stop_margin,
            vip_gap: (new_up - old_gone) as f64 / 1e9,
        };
        eprintln!("round {round:2}: {r:?}");
        if let Some(margin) = r.stop_margin {
            assert!(
                margin > 0.0,
                "round {round}: the new pod was created before the cut-off owner stopped its workload: {r:?}"
            );
        }
        assert!(r.vip_gap >= 0.0, "round {round}: {r:?}");
        results.push(r);
        // Heal the old owner: back on the network, its kubelet and workload running again.
        if kind == "partition" {
            lab.partition(o, false).unwrap();
        } else {
            lab.power(o, true).unwrap();
            agent_pids.insert(o, agent(&mut lab, o));
        }
        serve_pids.insert(o, serve(&mut lab, o));
        cp.nodes.revive(&owner).await.unwrap();
        // Wait until the healed node is a healthy member again (unfenced) before the next.
        let clusters: Api<kube_failover_core::api::FailoverCluster> = Api::all(client.clone());
        let healed = owner.clone();
        wait_for(
            clusters,
            "vip-agent",
            T,
            "all members up",
            move |c: Option<&kube_failover_core::api::FailoverCluster>| {
                c.and_then(|c| c.status.as_ref()).is_some_and(|s| {
                    s.members
                        .iter()
                        .all(|m| m.state == kube_failover_core::api::MemberState::Up)
                        && s.members.iter().any(|m| m.name == healed)
                })
            },
        )
        .await;
        owner = to;
    }
    let samples_all = std::mem::take(&mut *samples.lock().unwrap());
    drop(samples);
    let _ = sampler.await;

    // No instant with two holders, on the wire or on the interfaces.
    let two: Vec<_> = samples_all
        .iter()
        .filter(|(_, on)| on.len() > 1)
        .take(5)
        .collect();
    assert!(
        two.is_empty(),
        "the VIP was up on two nodes at once: {two:?}"
    );
    let all = probes(&probe_log);
    let double: Vec<&Probe> = all.iter().filter(|p| p.macs.len() > 1).collect();
    assert!(
        double.is_empty(),
        "ARP answered from two MACs at once: {double:?}"
    );
    // Between failovers the VIP answers: every probe from an owner's first answer until the
    // next fault (less a probe's 0.2 s timeout and some slack) was answered. How much of the
    // whole run was answered depends on how quickly the test heals a node and cuts the next,
    // not on the product: it is printed, not judged.
    faults.push(now_ns());
    let margin = 300_000_000;
    let unanswered: Vec<(usize, &Probe)> = steady_from
        .iter()
        .zip(&faults)
        .enumerate()
        .flat_map(|(round, (from, to))| {
            all.iter()
                .filter(move |p| p.t >= *from && p.t < to - margin && p.answer.is_none())
                .map(move |p| (round, p))
        })
        .take(5)
        .collect();
    assert!(
        unanswered.is_empty(),
        "the VIP went unanswered between failovers (window, probe): {unanswered:?}; see {}",
        dir.display()
    );
    let answered = all.iter().filter(|p| p.answer.is_some()).count();

    let mut secs: Vec<f64> = results.iter().map(|r| r.client_seconds).collect();
    secs.sort_by(f64::total_cmp);
    let p50 = secs[secs.len() / 2];
    let max = secs[secs.len() - 1];
    let partitions = results.iter().filter(|r| r.stop_margin.is_some()).count();
    let min_margin = results
        .iter()
        .filter_map(|r| r.stop_margin)
        .fold(f64::INFINITY, f64::min);
    eprintln!(
        "client-observed VIP failover over {} failovers ({partitions} partitions): p50 {p50:.2} s, max {max:.2} s, min {:.2} s; \
         partitioned owner stopped its workload at least {min_margin:.2} s before the new pod was created; \
         {} probes ({answered} answered, every one between failovers), none answered by two MACs",
        results.len(),
        secs[0],
        all.len()
    );
}
