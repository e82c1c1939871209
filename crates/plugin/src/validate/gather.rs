//! Reading what `validate` judges, with the caller's kubeconfig and rights. Nothing here
//! judges: a read that fails is kept as its error for the core to report as a check it could
//! not make; only when the API server cannot be reached, or the instances and clusters
//! cannot be listed, is there nothing to judge.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{Context, Result};
use futures::StreamExt;
use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    Namespace, Node, PersistentVolume, PersistentVolumeClaim, Pod, Service,
};
use k8s_openapi::api::networking::v1::{IPAddress, ServiceCIDR};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, ResourceExt};
use kube_failover_core::api::{
    FailoverCluster, FailoverClusterInstance, NODE_LEASE_NAMESPACE, VipMode, agent_lease_name,
};
use kube_failover_core::validate::{
    Access, ClaimFacts, ClusterFacts, Facts, InstanceFacts, Read, VipFacts, eligible_owners,
    members_of, needed_access, parse_http_date, parse_service_account, renewal_age, surely_past,
};

use super::ValidateArgs;
use crate::default_namespace;

/// Reads everything the checks need.
pub async fn gather(client: &Client, args: &ValidateArgs) -> Result<Facts> {
    let now = server_time(client).await?;
    let crds = read_crds(client).await;
    let crds_absent = crds.iter().any(|(_, stored)| matches!(stored, Ok(None)));
    let leader = get_opt(
        &Api::<Lease>::namespaced(client.clone(), &args.controller_namespace),
        &args.lease_name,
    )
    .await
    .context("reading the leader Lease");
    let leader = read(leader);
    let (instances, clusters) = if crds_absent {
        (vec![], vec![])
    } else {
        in_scope(client, args).await?
    };
    let mut namespaces: BTreeSet<String> = instances.iter().filter_map(|i| i.namespace()).collect();
    if namespaces.is_empty()
        && let Some(ns) = &args.namespace
    {
        namespaces.insert(ns.clone());
    }
    let (service_account, reviews) = read_rbac(
        client,
        args,
        leader.as_ref().ok().and_then(Option::as_ref),
        &namespaces,
    )
    .await;
    let version = client
        .apiserver_version()
        .await
        .context("reading the API server's version");
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(brief)
        .context("listing Nodes")
        .map(|l| l.items);
    let nodes = read(nodes);
    let service_cidrs = list_all::<ServiceCIDR>(client, "listing ServiceCIDRs").await;
    // Who holds each virtual IP: read only when an instance in scope has one.
    let ip_addresses = if instances.iter().any(|i| !i.spec.virtual_ips.is_empty()) {
        list_all::<IPAddress>(client, "listing IPAddresses").await
    } else {
        Ok(vec![])
    };
    let clusters = read_clusters(client, clusters, nodes.as_deref().ok()).await;
    let instances = read_instances(client, instances, &clusters, &nodes, &namespaces, now).await;
    Ok(Facts {
        now,
        crds,
        controller_namespace: args.controller_namespace.clone(),
        lease_name: args.lease_name.clone(),
        leader,
        service_account,
        reviews,
        version: read(version),
        nodes,
        service_cidrs,
        ip_addresses,
        clusters,
        instances,
    })
}

/// Every object of a cluster-scoped kind, or why they could not be listed.
async fn list_all<K>(client: &Client, what: &'static str) -> Read<Vec<K>>
where
    K: kube::Resource<Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned,
    K::DynamicType: Default,
{
    let list = Api::<K>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(brief)
        .context(what)
        .map(|l| l.items);
    read(list)
}

/// A read's result as the report says it: the error with its context (`reading …: why`).
fn read<T>(r: Result<T>) -> Read<T> {
    r.map_err(|e| format!("{e:#}"))
}

/// The API server's clock: the `Date` header of its answer to `GET /version`.
async fn server_time(client: &Client) -> Result<Timestamp> {
    let request = http::Request::get("/version")
        .body(kube::client::Body::from(Vec::new()))
        .context("a GET /version request")?;
    let response = client.send(request).await.context("GET /version")?;
    let date = response
        .headers()
        .get(http::header::DATE)
        .and_then(|d| d.to_str().ok())
        .context("the API server's answer has no Date header")?;
    parse_http_date(date).map_err(anyhow::Error::msg)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// An API error as the API server put it (`nodes is forbidden: User … cannot list …`).
fn brief(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow::anyhow!("{}", s.message),
        e => e.into(),
    }
}

async fn get_opt<K>(api: &Api<K>, name: &str) -> Result<Option<K>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned,
{
    match api.get(name).await {
        Ok(o) => Ok(Some(o)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(brief(e)),
    }
}

/// Each CRD this release generates, with the one stored.
async fn read_crds(
    client: &Client,
) -> Vec<(
    CustomResourceDefinition,
    Read<Option<CustomResourceDefinition>>,
)> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let mut out = Vec::new();
    for (_, generated) in kube_failover_core::crd::all() {
        let stored = get_opt(&api, &generated.name_any())
            .await
            .context("reading CustomResourceDefinitions");
        out.push((generated, read(stored)));
    }
    out
}

/// The instances in scope (one namespace, or all) and the clusters they use (all with
/// `--all-namespaces`).
async fn in_scope(
    client: &Client,
    args: &ValidateArgs,
) -> Result<(Vec<FailoverClusterInstance>, Vec<FailoverCluster>)> {
    let fcis: Api<FailoverClusterInstance> = if args.all_namespaces {
        Api::all(client.clone())
    } else {
        let ns = match &args.namespace {
            Some(ns) => ns.clone(),
            None => default_namespace().await,
        };
        Api::namespaced(client.clone(), &ns)
    };
    let instances = fcis
        .list(&ListParams::default())
        .await
        .map_err(brief)
        .context("listing FailoverClusterInstances")?
        .items;
    let used: BTreeSet<&str> = instances
        .iter()
        .map(|i| i.spec.cluster_ref.as_str())
        .collect();
    let clusters: Vec<FailoverCluster> = Api::<FailoverCluster>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(brief)
        .context("listing FailoverClusters")?
        .items
        .into_iter()
        .filter(|c| args.all_namespaces || used.contains(c.name_any().as_str()))
        .collect();
    Ok((instances, clusters))
}

/// The kubelet Lease of each member of each cluster.
async fn read_clusters(
    client: &Client,
    clusters: Vec<FailoverCluster>,
    nodes: Option<&[Node]>,
) -> Vec<ClusterFacts> {
    let node_leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
    let mut out = Vec::new();
    for cluster in clusters {
        let mut member_leases = Vec::new();
        let mut agent_leases = Vec::new();
        for node in nodes.iter().flat_map(|nodes| members_of(&cluster, nodes)) {
            let lease = get_opt(&node_leases, &node)
                .await
                .context("reading node Leases");
            member_leases.push((node.clone(), read(lease)));
            let agent = get_opt(&node_leases, &agent_lease_name(&node))
                .await
                .context("reading node agent Leases");
            agent_leases.push((node, read(agent)));
        }
        out.push(ClusterFacts {
            cluster,
            member_leases,
            agent_leases,
        });
    }
    out
}

/// What each instance's checks need: its namespace's labels, its claims, its VIPs' needs.
async fn read_instances(
    client: &Client,
    instances: Vec<FailoverClusterInstance>,
    clusters: &[ClusterFacts],
    nodes: &Read<Vec<Node>>,
    namespaces: &BTreeSet<String>,
    now: Timestamp,
) -> Vec<InstanceFacts> {
    let Ok(nodes) = nodes else {
        return vec![];
    };
    let classes = Api::<StorageClass>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(brief)
        .context("listing StorageClasses")
        .map(|l| l.items);
    let namespace_api: Api<Namespace> = Api::all(client.clone());
    let mut namespace_labels = BTreeMap::new();
    for ns in namespaces {
        let labels = match get_opt(&namespace_api, ns).await {
            Ok(Some(n)) => Ok(n.labels().clone()),
            Ok(None) => Err(format!("namespace {ns} not found")),
            Err(e) => Err(format!("reading namespace {ns}: {e:#}")),
        };
        namespace_labels.insert(ns.clone(), labels);
    }
    let mut out = Vec::new();
    for fci in instances {
        let cluster = clusters
            .iter()
            .map(|c| &c.cluster)
            .find(|c| c.name_any() == fci.spec.cluster_ref);
        let eligible = cluster
            .map(|c| eligible_owners(&fci, c, nodes))
            .unwrap_or_default();
        let claims = match &classes {
            Ok(classes) => claim_facts(client, &fci, classes).await,
            Err(e) => Err(anyhow::anyhow!("{e:#}")),
        };
        let vips = vip_facts(client, &fci, &eligible, now).await;
        out.push(InstanceFacts {
            namespace_labels: fci
                .namespace()
                .and_then(|ns| namespace_labels.get(&ns).cloned())
                .unwrap_or_else(|| Err("its namespace was not read".into())),
            claims: read(claims),
            vips: read(vips),
            instance: fci,
        });
    }
    out
}

/// The controller's ServiceAccount: the one named, else the leader pod's, else that of the
/// controller Deployment in its namespace.
async fn find_service_account(
    client: &Client,
    args: &ValidateArgs,
    leader: Option<&Lease>,
) -> Result<String, String> {
    if let Some(sa) = &args.controller_service_account {
        return parse_service_account(sa)
            .map(|(ns, name)| format!("{ns}/{name}"))
            .ok_or_else(|| format!("--controller-service-account {sa:?} is not NS/NAME"));
    }
    let ns = &args.controller_namespace;
    let holder = leader
        .and_then(|l| l.spec.as_ref()?.holder_identity.clone())
        .filter(|h| !h.is_empty());
    if let Some(holder) = &holder
        && let Ok(Some(pod)) = get_opt(&Api::<Pod>::namespaced(client.clone(), ns), holder).await
    {
        let sa = pod
            .spec
            .and_then(|s| s.service_account_name)
            .unwrap_or_else(|| "default".into());
        return Ok(format!("{ns}/{sa}"));
    }
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let selector = "app.kubernetes.io/part-of=kube-failover,app.kubernetes.io/component=controller";
    match deployments
        .list(&ListParams::default().labels(selector))
        .await
    {
        Ok(list) => list
            .items
            .into_iter()
            .find_map(|d| d.spec?.template.spec?.service_account_name)
            .map(|sa| format!("{ns}/{sa}"))
            .ok_or_else(|| {
                format!("no leader pod and no Deployment labelled {selector} in namespace {ns}")
            }),
        Err(e) => Err(format!("listing Deployments in {ns}: {}", brief(e))),
    }
}

async fn review(client: &Client, user: &str, a: &Access) -> Result<bool, kube::Error> {
    let sar = SubjectAccessReview {
        metadata: ObjectMeta::default(),
        spec: SubjectAccessReviewSpec {
            user: Some(user.into()),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!(
                    "system:serviceaccounts:{}",
                    user.split(':').nth(2).unwrap_or_default()
                ),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                group: Some(a.group.clone()),
                resource: Some(a.resource.clone()),
                subresource: a.subresource.clone(),
                verb: Some(a.verb.clone()),
                namespace: a.namespace.clone(),
                name: a.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        status: None,
    };
    let answer = Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &sar)
        .await?;
    Ok(answer.status.is_some_and(|s| s.allowed))
}

/// The controller's ServiceAccount and, for each access it needs, whether it is allowed.
async fn read_rbac(
    client: &Client,
    args: &ValidateArgs,
    leader: Option<&Lease>,
    namespaces: &BTreeSet<String>,
) -> (Result<String, String>, Read<Vec<(Access, bool)>>) {
    let sa = match find_service_account(client, args, leader).await {
        Ok(sa) => sa,
        Err(why) => return (Err(why), Ok(vec![])),
    };
    let Some((ns, name)) = parse_service_account(&sa) else {
        return (Err("not NS/NAME".into()), Ok(vec![]));
    };
    let user = format!("system:serviceaccount:{ns}:{name}");
    let needed = needed_access(namespaces, &args.controller_namespace, &args.lease_name);
    let answers: Vec<(Access, Result<bool, kube::Error>)> =
        futures::stream::iter(needed.into_iter().map(|a| {
            let user = user.clone();
            async move {
                let r = review(client, &user, &a).await;
                (a, r)
            }
        }))
        .buffered(8)
        .collect()
        .await;
    let mut done = Vec::new();
    for (a, r) in answers {
        match r {
            Ok(allowed) => done.push((a, allowed)),
            Err(e) => return (Ok(sa), Err(brief(e).to_string())),
        }
    }
    (Ok(sa), Ok(done))
}

/// The class a claim uses: its `storageClassName`, else (for a claim not made yet) the
/// default class.
fn class_of(
    spec: Option<&k8s_openapi::api::core::v1::PersistentVolumeClaimSpec>,
    made: bool,
    classes: &[StorageClass],
) -> Option<String> {
    let default_class = || {
        classes
            .iter()
            .find(|c| {
                c.annotations()
                    .get("storageclass.kubernetes.io/is-default-class")
                    .is_some_and(|v| v == "true")
            })
            .map(|c| c.name_any())
    };
    match spec.and_then(|s| s.storage_class_name.clone()) {
        Some(n) if n.is_empty() => None,
        Some(n) => Some(n),
        None if !made => default_class(),
        None => None,
    }
}

async fn claim_facts(
    client: &Client,
    fci: &FailoverClusterInstance,
    classes: &[StorageClass],
) -> Result<Vec<ClaimFacts>> {
    let ns = fci.namespace().unwrap_or_default();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let drivers: Api<CSIDriver> = Api::all(client.clone());
    let mut out = Vec::new();
    for c in fci.claims() {
        let pvc = get_opt(&pvcs, &c.claim)
            .await
            .with_context(|| format!("reading claim {}", c.claim))?;
        let template = c
            .from_template
            .then(|| {
                fci.spec
                    .storage
                    .claim_templates
                    .iter()
                    .find(|t| t.name == c.volume)
                    .map(|t| t.spec.clone())
            })
            .flatten();
        let spec = pvc
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .or(template.as_ref());
        let class_name = class_of(spec, pvc.is_some(), classes);
        let class = class_name
            .as_ref()
            .and_then(|n| classes.iter().find(|c| &c.name_any() == n).cloned());
        let pv = match spec
            .and_then(|s| s.volume_name.clone())
            .filter(|v| !v.is_empty())
        {
            Some(v) => get_opt(&pvs, &v)
                .await
                .with_context(|| format!("reading PersistentVolume {v}"))?,
            None => None,
        };
        let mut facts = ClaimFacts {
            claim: c.claim,
            from_template: c.from_template,
            pvc,
            template,
            class_name,
            class,
            pv,
            csi_driver: None,
        };
        if let Some(driver) = facts.driver() {
            facts.csi_driver = get_opt(&drivers, &driver)
                .await
                .with_context(|| format!("reading CSIDriver {driver}"))?;
        }
        out.push(facts);
    }
    Ok(out)
}

async fn vip_facts(
    client: &Client,
    fci: &FailoverClusterInstance,
    eligible: &BTreeSet<String>,
    now: Timestamp,
) -> Result<VipFacts> {
    let ns = fci.namespace().unwrap_or_default();
    let mut facts = VipFacts::default();
    if fci.spec.virtual_ips.is_empty() {
        return Ok(facts);
    }
    match fci.spec.vip_mode {
        VipMode::ExternalIPs => {
            facts.external_ips = Some(dry_run_external_ips(client, fci, &ns).await?);
        }
        VipMode::LoadBalancer => {
            let services: Api<Service> = Api::namespaced(client.clone(), &ns);
            facts.service = get_opt(&services, &fci.spec.network_name.name)
                .await
                .context("reading the instance's Service")?;
        }
        VipMode::Agent => {
            let leases: Api<Lease> = Api::namespaced(client.clone(), NODE_LEASE_NAMESPACE);
            for node in eligible {
                let lease = get_opt(&leases, &agent_lease_name(node))
                    .await
                    .context("reading the node agents' Leases")?;
                let fresh = lease.map(|l| {
                    let duration = l
                        .spec
                        .as_ref()
                        .and_then(|s| s.lease_duration_seconds)
                        .unwrap_or(10);
                    renewal_age(&l, now).is_some_and(|(age, _)| {
                        !surely_past(age, SignedDuration::from_secs(duration.into()))
                    })
                });
                facts.agents.insert(node.clone(), fresh);
            }
        }
    }
    Ok(facts)
}

/// Whether the API server admits a Service with the VIPs as `externalIPs` in the instance's
/// namespace (a dry run): `Err((refused, message))` where `refused` is an admission refusal
/// (else the caller may not ask).
async fn dry_run_external_ips(
    client: &Client,
    fci: &FailoverClusterInstance,
    ns: &str,
) -> Result<Result<(), (bool, String)>> {
    let svc: Service = serde_json::from_value(serde_json::json!({
        "metadata": {"generateName": "kube-failover-validate-"},
        "spec": {
            "ports": [{"port": 1}],
            "externalIPs": fci.spec.virtual_ips,
        }
    }))?;
    let pp = PostParams {
        dry_run: true,
        field_manager: Some(crate::FIELD_MANAGER.into()),
    };
    let answer = Api::<Service>::namespaced(client.clone(), ns)
        .create(&pp, &svc)
        .await;
    Ok(match answer {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 403 && s.reason == "Forbidden" => {
            // RBAC and admission both answer 403; only RBAC says the verb.
            let rbac = s.message.contains("cannot create resource");
            Err((!rbac, s.message))
        }
        Err(kube::Error::Api(s)) => Err((s.code == 422 || s.code == 400, s.message)),
        Err(e) => Err((false, e.to_string())),
    })
}
