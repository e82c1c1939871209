//! Tenant boundaries on the real control plane: two tenants, `s` and `t`, in two namespaces
//! on one FailoverCluster. What `t` declares beyond what the cluster's administrator granted
//! it (an address of `s`'s pool, an address `s` holds, the `kubernetes` Service's ClusterIP,
//! a node's own address, a hostname in `s`'s zone) is held with a named reason and reaches
//! no Service; a Service that is not an instance's own withholds only its network name; and
//! `s`'s instance, whose owner node is killed during the attack, fails over as usual. When
//! the holder of an address lets it go, the instance that waited for it gets it.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::IPAddress;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_failover_core::api::{
    AntiAffinityMode, FailoverCluster, FailoverClusterInstance, condition, reason,
};
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, controller_config, create_instance, is_online,
    node_addresses, online_on, owner, wait_for, wait_gone,
};

const T: Duration = Duration::from_secs(90);
const EXTERNAL_DNS: &str = "external-dns.alpha.kubernetes.io/hostname";

/// The instance's `NetworkName` condition: (status, reason, message).
fn network(i: &FailoverClusterInstance) -> Option<(String, String, String)> {
    let c = i
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == condition::NETWORK_NAME)?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn network_reason(want: &'static str) -> impl Fn(Option<&FailoverClusterInstance>) -> bool {
    move |i| i.and_then(network).is_some_and(|(_, r, _)| r == want)
}

/// What a Service publishes of an instance: its external IPs and its external-dns name.
async fn published(client: &Client, ns: &str, name: &str) -> (Vec<String>, Option<String>) {
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .unwrap();
    let Some(svc) = svc else {
        return (Vec::new(), None);
    };
    let ips = svc.spec.and_then(|s| s.external_ips).unwrap_or_default();
    let host = svc
        .metadata
        .annotations
        .and_then(|a| a.get(EXTERNAL_DNS).cloned());
    (ips, host)
}

/// Creates instance `name` in `ns` with these virtual IPs and external hostname.
async fn instance(
    client: &Client,
    ns: &str,
    name: &str,
    cluster: &str,
    nodes: &[String],
    vips: &[&str],
    hostname: Option<&str>,
) -> kube::Result<FailoverClusterInstance> {
    let mut fci = kube_failover_lab::demo::instance(name, cluster, nodes, None).unwrap();
    fci.spec.virtual_ips = vips.iter().map(|v| v.to_string()).collect();
    fci.spec.network_name.external_hostname = hostname.map(str::to_string);
    Api::<FailoverClusterInstance>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &fci)
        .await
}

/// The network of `ip`, `bits` long, as CIDR text (host bits cleared).
fn covering(ip: &str, bits: u8) -> String {
    let net: ipnet::IpNet = format!("{ip}/{bits}").parse().unwrap();
    net.trunc().to_string()
}

#[tokio::test]
async fn a_tenant_reaches_no_address_name_or_service_beyond_its_grant() {
    let s = TestNamespace::new("tenant-s").await;
    let t = TestNamespace::new("tenant-t").await;
    let client = s.client.clone();
    // The `kubernetes` Service's ClusterIP and a node's address, put in a pool `t` may use
    // (an administrator's slip): they are never served all the same.
    let api_ip = Api::<Service>::namespaced(client.clone(), "default")
        .get("kubernetes")
        .await
        .unwrap()
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap();
    let spec = serde_json::json!({
        "addressPools": [
            {"name": "s-only", "cidrs": ["192.0.2.0/28"], "namespaces": {"names": [s.name]}},
            {"name": "shared", "cidrs": ["198.51.100.0/24"]},
            {"name": "t-sloppy", "cidrs": [covering(&api_ip, 24)], "namespaces": {"names": [t.name]}},
        ],
        "dnsZones": [{"zone": "s.example.com", "namespaces": {"names": [s.name]}}],
    });
    let (cluster, nodes) = s.cluster(3, spec).await;
    // One replica over every namespace, as the chart installs it by default.
    let _replica = Replica::start_with_client_config(controller_config(), None, "r1", None, None);
    let fcis_s: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &s.name);
    let fcis_t: Api<FailoverClusterInstance> = Api::namespaced(client.clone(), &t.name);

    // The victim: `s`'s database, with an address of its own pool, one of the shared pool
    // and a hostname in its zone.
    instance(
        &client,
        &s.name,
        "db",
        &cluster,
        &nodes,
        &["192.0.2.5", "198.51.100.5"],
        Some("db.s.example.com"),
    )
    .await
    .unwrap();
    wait_for(
        fcis_s.clone(),
        "db",
        T,
        "the victim Online with its network name served",
        |i: Option<&FailoverClusterInstance>| {
            online_on(nodes[0].clone())(i) && network_reason(reason::NETWORK_NAME_SERVED)(i)
        },
    )
    .await;
    // The administrator's slip is on the cluster's status, naming the pool and the range.
    let overlap = wait_for(
        Api::<FailoverCluster>::all(client.clone()),
        &cluster,
        T,
        "the cluster's AddressPools condition False",
        |c: Option<&FailoverCluster>| {
            c.and_then(|c| c.status.as_ref())
                .and_then(|s| {
                    s.conditions
                        .iter()
                        .find(|c| c.type_ == condition::ADDRESS_POOLS)
                })
                .is_some_and(|c| c.status == "False")
        },
    )
    .await;
    let message = overlap
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == condition::ADDRESS_POOLS)
        .unwrap();
    assert_eq!(message.reason, reason::POOL_OVERLAPS_CLUSTER);
    assert!(
        message
            .message
            .contains("pool t-sloppy overlaps Service range")
            && !message.message.contains("pool s-only")
            && !message.message.contains("pool shared"),
        "{}",
        message.message
    );
    let (ips, host) = published(&client, &s.name, "db").await;
    assert_eq!(ips, ["192.0.2.5", "198.51.100.5"]);
    assert_eq!(host.as_deref(), Some("db.s.example.com"));
    let claim = Api::<IPAddress>::all(client.clone())
        .get("198.51.100.5")
        .await
        .unwrap();
    assert_eq!(claim.spec.parent_ref.name, "db");
    assert_eq!(
        claim.spec.parent_ref.namespace.as_deref(),
        Some(s.name.as_str())
    );

    // The attacks, each an instance of `t` placed away from the victim's owner.
    let node_ip = node_addresses(&client, &nodes[2])
        .await
        .into_iter()
        .find(|a| a.parse::<std::net::IpAddr>().is_ok());
    let mut attacks: Vec<(&str, Vec<String>, Option<&str>, &'static str)> = vec![
        (
            "steal",
            vec!["198.51.100.5".into()],
            None,
            reason::VIRTUAL_IP_IN_USE,
        ),
        (
            "poach",
            vec!["192.0.2.6".into()],
            None,
            reason::VIRTUAL_IP_NOT_ALLOWED,
        ),
        (
            "apiserver",
            vec![api_ip.clone()],
            None,
            reason::VIRTUAL_IP_RESERVED,
        ),
        (
            "dns",
            vec![],
            Some("db.s.example.com"),
            reason::HOSTNAME_NOT_ALLOWED,
        ),
    ];
    if let Some(ip) = &node_ip {
        attacks.push(("node", vec![ip.clone()], None, reason::VIRTUAL_IP_RESERVED));
    }
    let away: Vec<String> = nodes[1..].to_vec();
    let mut refused = Vec::new();
    for (name, vips, host, _) in &attacks {
        let vips: Vec<&str> = vips.iter().map(String::as_str).collect();
        match instance(&client, &t.name, name, &cluster, &away, &vips, *host).await {
            Ok(_) => {}
            // A node address that is not unicast (the lab's simulated nodes may have a
            // loopback one) never gets past admission.
            Err(kube::Error::Api(e)) if *name == "node" && e.code == 422 => {
                assert!(e.message.contains("unicast"), "{}", e.message);
                refused.push(*name);
            }
            Err(e) => panic!("creating {name}: {e}"),
        }
    }
    attacks.retain(|(name, ..)| !refused.contains(name));
    for (name, _, _, why) in &attacks {
        let held = wait_for(
            fcis_t.clone(),
            name,
            T,
            "the attacker held with its reason",
            network_reason(why),
        )
        .await;
        let (status, _, message) = network(&held).unwrap();
        assert_eq!(status, "False", "{name}: {message}");
        assert!(
            held.status
                .as_ref()
                .and_then(|s| s.served.as_ref())
                .is_none_or(|s| s.virtual_ips.is_empty()),
            "{name}: no address in status (what agents read)"
        );
        let (ips, host) = published(&client, &t.name, name).await;
        assert!(ips.is_empty(), "{name}: its Service carries {ips:?}");
        assert!(host.is_none(), "{name}: its Service names {host:?}");
    }
    let steal = fcis_t.get("steal").await.unwrap();
    let message = network(&steal).unwrap().2;
    assert!(
        message.contains(&format!("instance {}/db", s.name)),
        "the loser is told who holds the address: {message}"
    );

    // Anti-affinity: `t` names the victim's class, Strict and of a higher priority. Classes
    // stay in their namespace (this cluster shares none): it pushes nobody off, shares the
    // victim's node, and its status names nothing of `s`.
    fcis_s
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {
                "antiAffinityClasses": ["sql"], "antiAffinityMode": "Strict"}})),
        )
        .await
        .unwrap();
    let mut crowd =
        kube_failover_lab::demo::instance("crowd", &cluster, &nodes[..2], None).unwrap();
    crowd.spec.virtual_ips = Vec::new();
    crowd.spec.anti_affinity_classes = vec!["sql".into()];
    crowd.spec.anti_affinity_mode = AntiAffinityMode::Strict;
    crowd.spec.priority = serde_json::from_value(serde_json::json!("High")).unwrap();
    fcis_t.create(&PostParams::default(), &crowd).await.unwrap();
    let crowd = wait_for(
        fcis_t.clone(),
        "crowd",
        T,
        "the crowding instance Online on the victim's node",
        online_on(nodes[0].clone()),
    )
    .await;
    let said = serde_json::to_string(&crowd.status).unwrap();
    // (The nodes are named after `s`'s namespace: look for an instance's `namespace/name`.)
    assert!(
        !said.contains(&format!("{}/", s.name)) && !said.contains("sql"),
        "its status names nothing of s: {said}"
    );
    let db = fcis_s.get("db").await.unwrap();
    assert!(
        online_on(nodes[0].clone())(Some(&db))
            && db
                .status
                .as_ref()
                .is_some_and(|st| st.current_move.is_none()),
        "the victim stays where it is"
    );
    fcis_t
        .delete("crowd", &DeleteParams::default())
        .await
        .unwrap();

    // A Service named as `s`'s new instance, made by someone else: its network name is
    // withheld, and only that.
    let foreign: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {"ports": [{"port": 80}]},
    }))
    .unwrap();
    Api::<Service>::namespaced(client.clone(), &s.name)
        .create(&PostParams::default(), &foreign)
        .await
        .unwrap();
    create_instance(&client, &s.name, "web", &cluster, &nodes, None).await;
    let web = wait_for(
        fcis_s.clone(),
        "web",
        T,
        "placed, its network name withheld",
        |i: Option<&FailoverClusterInstance>| {
            // Seen in the cache as another's, or refused at the write that would take it.
            is_online(i)
                && (network_reason(reason::NETWORK_NAME_TAKEN)(i)
                    || network_reason(reason::SERVICE_NOT_WRITTEN)(i))
        },
    )
    .await;
    let message = network(&web).unwrap().2;
    assert!(message.contains("did not create"), "{message}");
    // Its endpoint is published, attached to no Service: the foreign one never reaches
    // the instance's pod.
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), &s.name);
    let slice = wait_for(
        slices.clone(),
        "web",
        T,
        "the instance's endpoint published",
        |e: Option<&EndpointSlice>| {
            e.is_some_and(|e| {
                e.endpoints
                    .iter()
                    .flatten()
                    .any(|p| !p.addresses.is_empty())
            })
        },
    )
    .await;
    assert!(
        !slice.labels().contains_key("kubernetes.io/service-name"),
        "attached to the foreign Service: {:?}",
        slice.labels()
    );
    let attached = slices
        .list(&ListParams::default().labels("kubernetes.io/service-name=web"))
        .await
        .unwrap();
    assert!(
        attached.items.is_empty(),
        "no slice serves the foreign Service"
    );
    assert_eq!(owner(&web).as_deref(), Some(nodes[0].as_str()));

    // During the attack the victim's owner dies: the victim and `web` fail over as usual.
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let killed = Instant::now();
    let moved_off = |i: Option<&FailoverClusterInstance>| {
        is_online(i) && i.and_then(owner).is_some_and(|o| o != nodes[0])
    };
    let db = wait_for(fcis_s.clone(), "db", T, "the victim failed over", moved_off).await;
    eprintln!(
        "victim failed over to {} {:.1} s after its owner's heartbeats stopped",
        owner(&db).unwrap_or_default(),
        killed.elapsed().as_secs_f64()
    );
    assert_eq!(network(&db).unwrap().1, reason::NETWORK_NAME_SERVED);
    let (ips, host) = published(&client, &s.name, "db").await;
    assert_eq!(
        ips,
        ["192.0.2.5", "198.51.100.5"],
        "the victim keeps its addresses"
    );
    assert_eq!(host.as_deref(), Some("db.s.example.com"));
    wait_for(fcis_s.clone(), "web", T, "web failed over too", moved_off).await;
    let web_svc = Api::<Service>::namespaced(client.clone(), &s.name)
        .get("web")
        .await
        .unwrap();
    assert!(
        web_svc.metadata.owner_references.is_none(),
        "the foreign Service was never taken over"
    );

    // The holder lets its address go (the victim is deleted): the loser gets it.
    fcis_s.delete("db", &DeleteParams::default()).await.unwrap();
    wait_gone(fcis_s.clone(), "db", T, "the victim deleted").await;
    wait_for(
        fcis_t.clone(),
        "steal",
        T,
        "the loser serves the address once it is free",
        network_reason(reason::NETWORK_NAME_SERVED),
    )
    .await;
    let (ips, _) = published(&client, &t.name, "steal").await;
    assert_eq!(ips, ["198.51.100.5"]);
    let claim = Api::<IPAddress>::all(client.clone())
        .get("198.51.100.5")
        .await
        .unwrap();
    assert_eq!(
        claim.spec.parent_ref.namespace.as_deref(),
        Some(t.name.as_str())
    );
    assert!(
        Api::<IPAddress>::all(client.clone())
            .get_opt("192.0.2.5")
            .await
            .unwrap()
            .is_none(),
        "the deleted instance's claims are let go"
    );
}
