//! Installing kube-failover the ways Kubernetes users do, proven on the real control plane:
//! the Helm chart (strict lint, byte-identical renders, a values schema that refuses typos,
//! `helm install` whose RBAC is enough for a failover and no more), the plain manifests in
//! deploy/ (no drift from the chart, server-side apply and a re-apply that changes nothing,
//! the controller binary run with their ServiceAccount and environment), the examples, and a
//! GitOps re-apply of the user's manifests after a failover that finds no drift.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, Node, PersistentVolumeClaim, Pod, Secret, ServiceAccount,
};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use kube_failover_core::api::{FailoverCluster, FailoverClusterInstance};
use kube_failover_lab::controlplane::play_csi_attacher;
use kube_failover_lab::demo::{SIM_CSI_DRIVER, csi_claim};
use kube_failover_lab::harness::{
    Replica, TestNamespace, control_plane, free_addr, http_get, is_online, nodes_and_cluster,
    service_account_config, service_account_token, status, wait_for, wait_gone,
};
use serde::Deserialize;
use serde_json::{Value, json};

use common::{Run, helm_env, repo, tempdir, tools};

const T: Duration = Duration::from_secs(90);
/// The leader Lease the chart's Role names (values.yaml `leaderElection.leaseName`).
const LEASE: &str = "kube-failover-leader";
/// The field manager of the user's GitOps tool (Flux's kustomize-controller applies with
/// this one).
const GITOPS: &str = "kustomize-controller";

/// One controller at a time in this test binary. The tests run their controllers on all
/// namespaces, as deployed; two at once would both act on the same instances, which one
/// release in a real cluster never does.
static ONE_CONTROLLER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn chart_dir() -> String {
    repo().join("charts/kube-failover").display().to_string()
}

async fn run(program: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let out = tokio::process::Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", program.display()));
    Run::new(program, args, out)
}

/// The pinned helm, with its configuration, cache and data in a directory of the tests
/// rather than the user's.
async fn helm(args: &[&str]) -> Run {
    let env = helm_env("helm-home");
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    run(&tools().join("helm"), args, &env).await
}

/// helm against the control plane of this test binary.
async fn helm_cluster(args: &[&str]) -> Run {
    let kubeconfig = control_plane().kubeconfig().display().to_string();
    helm(&[args, &["--kubeconfig", &kubeconfig]].concat()).await
}

/// kubectl, without a cluster (e.g. `kubectl kustomize`).
async fn kubectl_local(args: &[&str]) -> Run {
    run(&tools().join("kubectl"), args, &[]).await
}

/// kubectl against the control plane of this test binary, as its admin.
async fn kubectl(args: &[&str]) -> Run {
    let cp = control_plane();
    let kubeconfig = cp.kubeconfig().display().to_string();
    run(
        &cp.tools_bin().join("kubectl"),
        &[&["--kubeconfig", &kubeconfig], args].concat(),
        &[],
    )
    .await
}

/// Runs charts/render.sh into a fresh directory: deploy/ as it would be for `namespace` and
/// `release`, with `extra` arguments for `helm template`. The chart is left as it is.
async fn render(namespace: &str, release: &str, extra: &[&str]) -> tempfile::TempDir {
    let dir = tempdir("render-");
    let helm_bin = tools().join("helm").display().to_string();
    let out = dir.path().display().to_string();
    let script = repo().join("charts/render.sh").display().to_string();
    let r = run(
        Path::new("bash"),
        &[&[script.as_str()], extra].concat(),
        &[
            ("HELM", &helm_bin),
            ("NAMESPACE", namespace),
            ("RELEASE", release),
            ("OUT_DIR", &out),
            ("SYNC_CRDS", "0"),
        ],
    )
    .await;
    assert!(r.ok, "charts/render.sh failed:\n{r}");
    dir
}

/// The documents of a YAML stream, as JSON values (empty documents skipped).
fn docs(text: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(text)
        .map(|d| serde_yaml::Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

fn of_kind<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one_of_kind<'a>(docs: &'a [Value], kind: &str) -> &'a Value {
    match of_kind(docs, kind).as_slice() {
        [one] => one,
        other => panic!("expected one {kind}, found {}", other.len()),
    }
}

/// `Kind namespace/name` of an object.
fn key(obj: &Value) -> String {
    let m = &obj["metadata"];
    format!(
        "{} {}/{}",
        obj["kind"].as_str().unwrap_or_default(),
        m["namespace"].as_str().unwrap_or_default(),
        m["name"].as_str().unwrap_or_default()
    )
}

/// Numbers compared by value: YAML `23.0` and `23` are the same number to the API server.
fn normalized(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::from(n.as_f64().unwrap()),
        Value::Array(a) => a.iter().map(normalized).collect(),
        Value::Object(o) => o.iter().map(|(k, v)| (k.clone(), normalized(v))).collect(),
        other => other.clone(),
    }
}

fn forbidden<T>(result: kube::Result<T>, what: &str) {
    match result {
        Err(kube::Error::Api(e)) if e.code == 403 => {}
        Err(e) => panic!("the chart's ServiceAccount must not {what}: expected 403, got {e}"),
        Ok(_) => panic!("the chart's ServiceAccount must not {what}, yet it could"),
    }
}

/// The annotations the chart adds to the CRDs (crds.keep), as lines of YAML.
const KEEP_ANNOTATIONS: &str = "    helm.sh/resource-policy: keep
    kustomize.toolkit.fluxcd.io/prune: disabled
    argocd.argoproj.io/sync-options: Prune=false
";

/// Optional parts of the chart switched on, with the values they need.
const OPTIONAL_ON: &[&str] = &[
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "networkPolicy.enabled=true",
    "--set",
    "networkPolicy.apiServer.cidrs={192.0.2.1/32}",
    "--set",
    "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=monitoring",
];

#[tokio::test]
async fn chart_lints_strictly_and_renders_identically_twice() {
    let chart = chart_dir();
    for (values, optional) in [(&[][..], false), (OPTIONAL_ON, true)] {
        let lint = helm(&[&["lint", "--strict", &chart], values].concat()).await;
        assert!(
            lint.ok && lint.stdout.contains("1 chart(s) linted, 0 chart(s) failed"),
            "{lint}"
        );
        let args = [
            &[
                "template",
                "kube-failover",
                &chart,
                "--namespace",
                "kube-failover",
            ],
            values,
        ]
        .concat();
        let first = helm(&args).await;
        let second = helm(&args).await;
        assert!(first.ok, "{first}");
        assert!(
            first.stdout == second.stdout,
            "two renders differ: a GitOps tool would see drift on every sync"
        );
        let rendered = docs(&first.stdout);
        for kind in ["ServiceMonitor", "NetworkPolicy"] {
            assert_eq!(
                of_kind(&rendered, kind).len(),
                usize::from(optional),
                "{kind} only when switched on"
            );
        }
    }
    // Renders are deterministic only if no template asks for randomness, the clock or the
    // cluster (`lookup` renders differently under `helm template` and `helm install`).
    let templates = repo().join("charts/kube-failover/templates");
    for entry in std::fs::read_dir(&templates).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        // The words inside template actions, `{{ ... }}`.
        let words: Vec<&str> = text
            .split("{{")
            .skip(1)
            .filter_map(|s| s.split_once("}}").map(|(action, _)| action))
            .flat_map(|action| action.split(|c: char| !c.is_alphanumeric()))
            .collect();
        assert!(!words.is_empty(), "{} has template actions", path.display());
        for f in ["uuidv4", "now", "date", "genCA", "lookup"] {
            assert!(!words.contains(&f), "{} calls {f}", path.display());
        }
        for f in ["rand", "genSelfSigned", "genPrivateKey", "genSigned"] {
            assert!(
                !words.iter().any(|w| w.starts_with(f)),
                "{} calls {f}…",
                path.display()
            );
        }
    }
}

#[tokio::test]
async fn committed_deploy_manifests_match_a_fresh_render_of_the_chart() {
    // The chart carries the generated CRDs byte for byte.
    let crds = repo().join("crds");
    let chart_crds = repo().join("charts/kube-failover/files/crds");
    let names = |dir: &Path| -> BTreeSet<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".yaml"))
            .collect()
    };
    assert_eq!(
        names(&crds),
        names(&chart_crds),
        "charts/kube-failover/files/crds/ is stale: run charts/render.sh"
    );
    for name in names(&crds) {
        assert!(
            std::fs::read(crds.join(&name)).unwrap()
                == std::fs::read(chart_crds.join(&name)).unwrap(),
            "charts/kube-failover/files/crds/{name} differs from crds/{name}: run charts/render.sh"
        );
    }

    // deploy/ is what charts/render.sh writes today.
    let fresh = render("kube-failover", "kube-failover", &[]).await;
    for file in ["kube-failover.yaml", "kustomization.yaml"] {
        let committed = std::fs::read_to_string(repo().join("deploy").join(file)).unwrap();
        let now = std::fs::read_to_string(fresh.path().join(file)).unwrap();
        assert!(
            committed == now,
            "deploy/{file} is stale: run charts/render.sh and commit the result"
        );
    }

    // The rendered CRDs are the generated files byte for byte, plus the keep annotations.
    let bundle_text = std::fs::read_to_string(repo().join("deploy/kube-failover.yaml")).unwrap();
    let bundle = docs(&bundle_text);
    let rendered = of_kind(&bundle, "CustomResourceDefinition");
    assert_eq!(rendered.len(), names(&crds).len(), "every CRD rendered");
    for name in names(&crds) {
        let generated = std::fs::read_to_string(crds.join(&name)).unwrap();
        let annotated = generated.replacen(
            "\nmetadata:\n",
            &format!("\nmetadata:\n  annotations:\n{KEEP_ANNOTATIONS}"),
            1,
        );
        assert_ne!(annotated, generated, "crds/{name} has a top-level metadata");
        assert!(
            bundle_text.contains(annotated.trim_end()),
            "the chart's CRD from crds/{name} is not crds/{name} plus the keep annotations"
        );
        // And the same as objects: nothing but the annotations added.
        let want = docs(&generated).remove(0);
        let mut have = (*rendered
            .iter()
            .find(|c| c["metadata"]["name"] == want["metadata"]["name"])
            .unwrap_or_else(|| panic!("crds/{name} not rendered")))
        .clone();
        let meta = have["metadata"].as_object_mut().unwrap();
        assert_eq!(
            meta.remove("annotations"),
            Some(json!({
                "helm.sh/resource-policy": "keep",
                "kustomize.toolkit.fluxcd.io/prune": "disabled",
                "argocd.argoproj.io/sync-options": "Prune=false",
            })),
            "CRDs survive helm uninstall and GitOps prunes"
        );
        assert!(
            have == want,
            "the chart's CRD from crds/{name} differs in content"
        );
    }
    // Switched off, there are none; without keep, no annotation.
    let chart = chart_dir();
    let off = helm(&["template", "x", &chart, "--set", "crds.install=false"]).await;
    assert!(off.ok, "{off}");
    assert!(of_kind(&docs(&off.stdout), "CustomResourceDefinition").is_empty());
    let not_kept = helm(&["template", "x", &chart, "--set", "crds.keep=false"]).await;
    assert!(not_kept.ok, "{not_kept}");
    let not_kept = docs(&not_kept.stdout);
    let crds_not_kept = of_kind(&not_kept, "CustomResourceDefinition");
    assert_eq!(crds_not_kept.len(), names(&crds).len());
    assert!(
        crds_not_kept
            .iter()
            .all(|c| c["metadata"]["annotations"].is_null())
    );

    // The kustomization builds exactly the objects of the manifest.
    let built = kubectl_local(&["kustomize", &repo().join("deploy").display().to_string()]).await;
    assert!(built.ok, "{built}");
    let canonical = |docs: Vec<Value>| -> BTreeSet<String> {
        docs.iter().map(|d| normalized(d).to_string()).collect()
    };
    assert!(
        canonical(docs(&built.stdout)) == canonical(bundle.clone()),
        "kubectl kustomize deploy/ differs from deploy/kube-failover.yaml"
    );
    assert_eq!(
        one_of_kind(&bundle, "Namespace")["metadata"]["name"],
        "kube-failover"
    );
}

#[tokio::test]
async fn values_schema_refuses_wrong_types_and_unknown_keys() {
    let chart = chart_dir();
    let dir = tempdir("values-");
    let template = |values: &str, n: usize| {
        let file = dir.path().join(format!("values-{n}.yaml"));
        std::fs::write(&file, values).unwrap();
        let chart = chart.clone();
        async move { helm(&["template", "x", &chart, "-f", &file.display().to_string()]).await }
    };
    let refused = [
        (
            "replicaCount: \"two\"\n",
            "at '/replicaCount': got string, want integer",
        ),
        (
            "replicas: 2\n",
            "additional properties 'replicas' not allowed",
        ),
        (
            "metrics:\n  servicemonitor:\n    enabled: true\n",
            "at '/metrics': additional properties 'servicemonitor' not allowed",
        ),
        (
            "crds:\n  install: \"false\"\n",
            "at '/crds/install': got string, want boolean",
        ),
        (
            "leaderElection:\n  leaseDurationSeconds: 6s\n",
            "at '/leaderElection/leaseDurationSeconds': got string, want integer",
        ),
    ];
    for (n, (values, message)) in refused.iter().enumerate() {
        let r = template(values, n).await;
        assert!(!r.ok, "accepted {values:?}:\n{r}");
        assert!(
            r.stderr
                .contains("values don't meet the specifications of the schema")
                && r.stderr.contains(message),
            "for {values:?} expected an error with {message:?}:\n{r}"
        );
    }
    // The same keys, well typed and well spelled, are accepted.
    let accepted = [
        "replicaCount: 3\n",
        "metrics:\n  serviceMonitor:\n    enabled: true\n",
        "crds:\n  install: false\n",
        "leaderElection:\n  leaseDurationSeconds: 6\n",
    ];
    for (n, values) in accepted.iter().enumerate() {
        let r = template(values, 100 + n).await;
        assert!(r.ok, "refused {values:?}:\n{r}");
    }
    // Values that are well typed but unsafe together are refused by the chart itself.
    let r = template("replicaCount: 2\nleaderElection:\n  enabled: false\n", 200).await;
    assert!(
        !r.ok
            && r.stderr
                .contains("replicaCount > 1 requires leaderElection.enabled"),
        "{r}"
    );
    let r = template(
        "agent:\n  enabled: true\n  renewMilliseconds: 1000\n  selfFenceSeconds: 1.5\n",
        201,
    )
    .await;
    assert!(
        !r.ok
            && r.stderr
                .contains("agent.selfFenceSeconds must be at least twice agent.renewMilliseconds"),
        "{r}"
    );
    let r = template(
        "agent:\n  enabled: true\n  renewMilliseconds: 250\n  selfFenceSeconds: 0.5\n",
        202,
    )
    .await;
    assert!(r.ok, "{r}");
    // The agent reaches the container runtime through the node's CRI socket, mounted where
    // it is on the node and required to be a socket, and runs as root to use it.
    let r = template(
        "agent:\n  enabled: true\n  criSocket: /run/k3s/containerd/containerd.sock\n",
        203,
    )
    .await;
    assert!(r.ok, "{r}");
    let rendered = docs(&r.stdout);
    let ds = &of_kind(&rendered, "DaemonSet")[0];
    let pod = &ds["spec"]["template"]["spec"];
    let path = "/run/k3s/containerd/containerd.sock";
    let volume = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "cri-socket")
        .unwrap_or_else(|| panic!("no cri-socket volume: {pod}"));
    assert_eq!(volume["hostPath"]["path"], path);
    assert_eq!(volume["hostPath"]["type"], "Socket");
    let container = &pod["containers"][0];
    assert!(
        container["volumeMounts"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "cri-socket" && m["mountPath"] == path),
        "{container}"
    );
    assert!(
        container["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "KUBE_FAILOVER_AGENT_CRI_SOCKET" && e["value"] == path),
        "{container}"
    );
    assert_eq!(container["securityContext"]["runAsUser"], 0);
    // Without a socket, nothing of it.
    let r = template("agent:\n  enabled: true\n  criSocket: \"\"\n", 204).await;
    assert!(r.ok, "{r}");
    assert!(!r.stdout.contains("cri-socket"), "{r}");
    let r = template("agent:\n  enabled: true\n  criSocket: run/crio.sock\n", 205).await;
    assert!(!r.ok && r.stderr.contains("criSocket"), "{r}");
}

/// Every rule of the ClusterRole, as (group, resource, verbs): exactly what the controller
/// uses (see the comments in templates/rbac.yaml).
const CLUSTER_RULES: &[(&str, &str, &[&str])] = &[
    (
        "kube-failover.io",
        "failoverclusterinstances",
        &["get", "list", "watch", "patch"],
    ),
    (
        "kube-failover.io",
        "failoverclusterinstances/status",
        &["update"],
    ),
    (
        "kube-failover.io",
        "failoverclusterinstances/finalizers",
        &["update"],
    ),
    (
        "kube-failover.io",
        "failoverclusters",
        &["get", "list", "watch"],
    ),
    ("kube-failover.io", "failoverclusters/status", &["update"]),
    ("", "nodes", &["get", "list", "watch", "update"]),
    ("", "pods", &["get", "list", "watch", "create", "delete"]),
    (
        "",
        "services",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "",
        "persistentvolumeclaims",
        &["get", "list", "watch", "create", "delete"],
    ),
    ("", "persistentvolumes", &["get", "list", "watch"]),
    (
        "discovery.k8s.io",
        "endpointslices",
        &["get", "list", "watch", "create", "patch", "delete"],
    ),
    (
        "storage.k8s.io",
        "volumeattachments",
        &["get", "list", "watch", "delete"],
    ),
    (
        "networking.k8s.io",
        "servicecidrs",
        &["get", "list", "watch"],
    ),
    (
        "networking.k8s.io",
        "ipaddresses",
        &["get", "list", "watch", "create", "delete"],
    ),
    ("", "namespaces", &["get", "list", "watch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

/// The rules that concern instances: in the ClusterRole, or, with `watchNamespace`, in a
/// Role of that namespace.
const NAMESPACED_RESOURCES: &[&str] = &[
    "failoverclusterinstances",
    "failoverclusterinstances/status",
    "failoverclusterinstances/finalizers",
    "pods",
    "services",
    "persistentvolumeclaims",
    "endpointslices",
];

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .unwrap_or_default()
}

/// A role's rules as (group, resource, resourceNames) → verbs.
fn rules(role: &Value) -> BTreeMap<(String, String, Vec<String>), BTreeSet<String>> {
    let mut out = BTreeMap::new();
    for rule in role["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                let names = strings(&rule["resourceNames"]);
                let verbs: &mut BTreeSet<String> =
                    out.entry((group.clone(), resource, names)).or_default();
                verbs.extend(strings(&rule["verbs"]));
            }
        }
    }
    out
}

/// The chart rendered as release `kube-failover` in namespace `kube-failover` (what
/// `deploy/` holds), with `extra` arguments for `helm template`, as documents.
async fn template_default(extra: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut args = vec![
        "template",
        "kube-failover",
        &chart,
        "--namespace",
        "kube-failover",
    ];
    args.extend_from_slice(extra);
    let r = helm(&args).await;
    assert!(r.ok, "{r}");
    docs(&r.stdout)
}

#[tokio::test]
async fn chart_defaults_are_hardened_and_rbac_is_least_privilege() {
    let all = template_default(&[]).await;

    let cluster_role = one_of_kind(&all, "ClusterRole");
    let want: BTreeMap<_, BTreeSet<String>> = CLUSTER_RULES
        .iter()
        .map(|(g, r, verbs)| {
            (
                (g.to_string(), r.to_string(), Vec::new()),
                verbs.iter().map(|v| v.to_string()).collect(),
            )
        })
        .collect();
    assert_eq!(rules(cluster_role), want, "ClusterRole rules");
    let role_in = |ns: &str| {
        *of_kind(&all, "Role")
            .iter()
            .find(|r| r["metadata"]["namespace"] == ns)
            .unwrap_or_else(|| panic!("a Role in {ns}"))
    };
    assert_eq!(
        rules(role_in("kube-node-lease")),
        BTreeMap::from([(
            (
                "coordination.k8s.io".to_string(),
                "leases".to_string(),
                Vec::new()
            ),
            ["get", "list", "watch"]
                .iter()
                .map(|s| s.to_string())
                .collect::<BTreeSet<_>>()
        )]),
        "node Leases: read, in kube-node-lease only"
    );
    let role = role_in("kube-failover");
    let lease = |names: &[&str], verbs: &[&str]| {
        (
            (
                "coordination.k8s.io".to_string(),
                "leases".to_string(),
                names.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            ),
            verbs.iter().map(|s| s.to_string()).collect::<BTreeSet<_>>(),
        )
    };
    assert_eq!(
        rules(role),
        BTreeMap::from([lease(&[LEASE], &["get", "update"]), lease(&[], &["create"])]),
        "the leader Role: its one Lease by name, create apart"
    );
    let bindings = of_kind(&all, "RoleBinding");
    assert_eq!(bindings.len(), 2, "leader election and node Leases");
    for binding in bindings
        .into_iter()
        .chain([one_of_kind(&all, "ClusterRoleBinding")])
    {
        assert_eq!(
            binding["subjects"],
            json!([{"kind": "ServiceAccount", "name": "kube-failover", "namespace": "kube-failover"}])
        );
    }

    let deployment = one_of_kind(&all, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 2);
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "kube-failover");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        anti["podAffinityTerm"]["labelSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(c["ports"][0]["name"], "http-metrics");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "http-metrics");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "http-metrics");
    for kind in ["requests", "limits"] {
        for resource in ["cpu", "memory"] {
            assert!(
                c["resources"][kind][resource].is_string(),
                "resources.{kind}.{resource} set"
            );
        }
    }
    let field = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone())
    };
    assert_eq!(field("POD_NAME"), Some(json!("metadata.name")));
    assert_eq!(field("POD_NAMESPACE"), Some(json!("metadata.namespace")));

    let pdb = one_of_kind(&all, "PodDisruptionBudget");
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    assert_eq!(
        pdb["spec"]["selector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let service = one_of_kind(&all, "Service");
    assert_eq!(service["spec"]["ports"][0]["targetPort"], "http-metrics");
    let kinds: BTreeSet<&str> = all.iter().map(|d| d["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]),
        "what a default install creates"
    );
}

/// The node agent's rights, as (group, resource) → verbs: what it uses, and no more (see
/// the comment at the top of templates/agent.yaml).
const AGENT_CLUSTER_RULES: &[(&str, &str, &[&str])] = &[
    (
        "kube-failover.io",
        "failoverclusterinstances",
        &["get", "list", "watch"],
    ),
    (
        "kube-failover.io",
        "failoverclusters",
        &["get", "list", "watch"],
    ),
    ("", "nodes", &["get", "list", "watch"]),
    ("", "pods", &["get"]),
];
const AGENT_LEASE_VERBS: &[&str] = &["get", "list", "watch", "create", "update", "delete"];

#[tokio::test]
async fn the_agent_daemonset_is_probed_rolled_out_node_by_node_and_least_privileged() {
    let all = template_default(&[
        "--set",
        "agent.enabled=true",
        "--set",
        "agent.probePort=9811",
        "--set",
        "agent.peerPort=9812",
    ])
    .await;
    let agent = |kind: &str| -> Vec<&Value> {
        of_kind(&all, kind)
            .into_iter()
            .filter(|o| o["metadata"]["labels"]["app.kubernetes.io/component"] == "agent")
            .collect()
    };
    let set = |verbs: &[&str]| verbs.iter().map(|v| v.to_string()).collect::<BTreeSet<_>>();

    // Rights.
    let want: BTreeMap<_, _> = AGENT_CLUSTER_RULES
        .iter()
        .map(|(g, r, verbs)| ((g.to_string(), r.to_string(), Vec::new()), set(verbs)))
        .collect();
    let cluster_roles = agent("ClusterRole");
    assert_eq!(cluster_roles.len(), 1);
    assert_eq!(rules(cluster_roles[0]), want, "the agent's ClusterRole");
    let roles = agent("Role");
    assert_eq!(roles.len(), 2, "Leases, and the peer key's Secret");
    let lease_role = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "kube-node-lease")
        .unwrap();
    assert_eq!(
        rules(lease_role),
        BTreeMap::from([(
            (
                "coordination.k8s.io".to_string(),
                "leases".to_string(),
                Vec::new()
            ),
            set(AGENT_LEASE_VERBS)
        )]),
        "the agent's Role: Leases in kube-node-lease only"
    );
    let secret_role = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "kube-system")
        .unwrap();
    assert_eq!(
        rules(secret_role),
        BTreeMap::from([
            (
                (
                    String::new(),
                    "secrets".to_string(),
                    vec!["kube-failover-agent-peers".to_string()]
                ),
                set(&["get", "update"])
            ),
            (
                (
                    "apps".to_string(),
                    "daemonsets".to_string(),
                    vec!["kube-failover-agent".to_string()]
                ),
                set(&["get"])
            ),
        ]),
        "the agent's Role in its namespace: its DaemonSet and the peer key's Secret alone"
    );
    let secrets = agent("Secret");
    assert_eq!(secrets.len(), 1);
    assert!(
        secrets[0].get("data").is_none_or(Value::is_null),
        "the chart renders no key: the first agent writes one"
    );

    // The rollout: one node at a time, never two agents on one node, each new one Ready
    // for a while before the next.
    let ds = agent("DaemonSet")[0];
    let update = &ds["spec"]["updateStrategy"];
    assert_eq!(update["type"], "RollingUpdate");
    assert_eq!(update["rollingUpdate"]["maxUnavailable"], 1);
    assert_eq!(update["rollingUpdate"]["maxSurge"], 0);
    assert!(ds["spec"]["minReadySeconds"].as_u64().unwrap() > 0);

    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostNetwork"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() <= 30);
    let c = &pod["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["capabilities"]["add"], json!(["NET_ADMIN", "NET_RAW"]));
    for (kind, resources) in [
        ("requests", &["cpu", "memory", "ephemeral-storage"][..]),
        ("limits", &["memory", "ephemeral-storage"][..]),
    ] {
        for resource in resources {
            assert!(
                c["resources"][kind][resource].is_string(),
                "agent resources.{kind}.{resource} set"
            );
        }
    }

    // The probes, on the port from the values, which is the one the agent listens on.
    // The peers ask each other on the host IP, on the port from the values (UDP).
    assert_eq!(
        c["ports"],
        json!([
            {"name": "probes", "containerPort": 9811, "protocol": "TCP"},
            {"name": "peers", "containerPort": 9812, "protocol": "UDP"},
        ])
    );
    let env = |name: &str| {
        c["env"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    assert_eq!(
        env("HOST_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.hostIP"
    );
    assert_eq!(
        env("KUBE_FAILOVER_AGENT_PEER_ADDRESS")["value"],
        "$(HOST_IP):9812"
    );
    assert_eq!(
        env("KUBE_FAILOVER_AGENT_PEER_KEY_SECRET")["value"],
        "kube-system/kube-failover-agent-peers"
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], "probes");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], "probes");
    let env = c["env"].as_array().unwrap();
    let value = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
    let probe_addr: std::net::SocketAddr =
        value("KUBE_FAILOVER_AGENT_PROBE_ADDR").unwrap()["value"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
    assert_eq!(probe_addr.port(), 9811);
    for (name, field) in [
        ("NODE_NAME", "spec.nodeName"),
        ("POD_NAME", "metadata.name"),
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_UID", "metadata.uid"),
    ] {
        assert_eq!(
            value(name).map(|e| e["valueFrom"]["fieldRef"]["fieldPath"].clone()),
            Some(json!(field)),
            "{name} from the downward API"
        );
    }
    // Every setting the chart passes is one `kube-failover agent` reads (the pod's own
    // UID is there for later use; HOST_IP is spelled into the peer address).
    let help = run(
        Path::new(env!("CARGO_BIN_EXE_kube-failover")),
        &["agent", "--help"],
        &[],
    )
    .await;
    assert!(help.ok, "{help}");
    for e in env {
        let name = e["name"].as_str().unwrap();
        if ["POD_UID", "HOST_IP"].contains(&name) {
            continue;
        }
        assert!(
            help.stdout.contains(&format!("[env: {name}=")),
            "the chart sets {name}, which `kube-failover agent` does not read:\n{}",
            help.stdout
        );
    }
}

#[tokio::test]
async fn namespaced_mode_grants_instance_rights_in_that_namespace_only() {
    let all = template_default(&["--set", "watchNamespace=apps"]).await;
    let cluster_rules = rules(one_of_kind(&all, "ClusterRole"));
    for (_, resource, names) in cluster_rules.keys() {
        assert!(
            !NAMESPACED_RESOURCES.contains(&resource.as_str()),
            "{resource} granted cluster-wide in namespaced mode"
        );
        if resource == "namespaces" {
            assert_eq!(names, &["apps".to_string()], "only the watched Namespace");
        }
    }
    assert!(
        !cluster_rules.keys().any(|(_, r, _)| r == "events"),
        "Events are granted per namespace"
    );
    let roles = of_kind(&all, "Role");
    let apps = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "apps")
        .expect("a Role in the watched namespace");
    let granted: BTreeSet<String> = rules(apps).keys().map(|(_, r, _)| r.clone()).collect();
    for resource in NAMESPACED_RESOURCES {
        assert!(
            granted.contains(*resource),
            "{resource} in the Role of apps"
        );
    }
    let default = roles
        .iter()
        .find(|r| r["metadata"]["namespace"] == "default")
        .expect("a Role for cluster Events in default");
    assert_eq!(
        rules(default)
            .keys()
            .map(|(_, r, _)| r.as_str())
            .collect::<Vec<_>>(),
        ["events"]
    );
    let bound: BTreeSet<String> = of_kind(&all, "RoleBinding")
        .iter()
        .map(|b| b["metadata"]["namespace"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        bound,
        ["apps", "default", "kube-failover", "kube-node-lease"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

#[tokio::test]
async fn admission_policies_render_on_by_default_and_can_be_turned_off() {
    async fn render(extra: &[&str]) -> (BTreeSet<String>, BTreeSet<String>) {
        let all = template_default(extra).await;
        let names = |kind: &str| -> BTreeSet<String> {
            of_kind(&all, kind)
                .iter()
                .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        (
            names("ValidatingAdmissionPolicy"),
            names("ValidatingAdmissionPolicyBinding"),
        )
    }
    let all: BTreeSet<String> = ["addresses", "claims", "network", "nodes", "pods", "tenancy"]
        .iter()
        .map(|p| format!("kube-failover-{p}"))
        .collect();
    let (policies, bindings) = render(&[]).await;
    assert_eq!(policies, all);
    assert_eq!(bindings, all, "each policy bound");
    let (policies, _) = render(&["--set", "admissionPolicy.enabled=false"]).await;
    assert_eq!(
        policies,
        BTreeSet::from(["kube-failover-tenancy".to_string()])
    );
    let (policies, _) = render(&[
        "--set",
        "admissionPolicy.enabled=false",
        "--set",
        "admissionPolicy.tenancy=false",
    ])
    .await;
    assert!(policies.is_empty());
}

/// `Kind namespace/name` → what changes when the object is written: its generation where it
/// has one (status writes by controllers do not count), else its resourceVersion.
async fn versions(dir: &Path) -> BTreeMap<String, String> {
    let r = kubectl(&["get", "-k", &dir.display().to_string(), "-o", "json"]).await;
    assert!(r.ok, "{r}");
    let list: Value = serde_json::from_str(&r.stdout).unwrap();
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| {
            let m = &o["metadata"];
            let version = match m.get("generation") {
                Some(g) => format!("generation {g}"),
                None => format!("resourceVersion {}", m["resourceVersion"]),
            };
            (key(o), version)
        })
        .collect()
}

#[tokio::test]
async fn plain_manifests_apply_server_side_reapply_unchanged_and_run_the_controller() {
    let ns = TestNamespace::new("kubectl").await;
    let release = ns.name.clone();
    let dir = render(&ns.name, &release, &[]).await;
    let kustomization = dir.path().display().to_string();
    let bundle = docs(&std::fs::read_to_string(dir.path().join("kube-failover.yaml")).unwrap());

    // The API server's validation is what the dry run runs: a render it must refuse is
    // refused.
    let bad = render(
        &ns.name,
        &release,
        &["--set", "podLabels.team=not a label value"],
    )
    .await;
    let r = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-k",
        &bad.path().display().to_string(),
    ])
    .await;
    assert!(!r.ok && r.stderr.contains("not a label value"), "{r}");

    // The harness applied the same CRDs with another field manager and from typed Rust
    // objects, which send `maximum: 23.0` where kubectl sends `23`: server-side apply calls
    // that a conflict on the atomic `.spec.versions`. The first apply takes them over (the
    // drift test proves the content the same); the second needs no force.
    let dry = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "--dry-run=server",
        "-k",
        &kustomization,
    ])
    .await;
    assert!(dry.ok, "{dry}");
    assert_eq!(
        dry.stdout.matches("(server dry run)").count(),
        bundle.len(),
        "every object accepted:\n{dry}"
    );

    let first = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-k",
        &kustomization,
    ])
    .await;
    assert!(first.ok, "{first}");
    assert!(!first.stderr.contains("Warning"), "{first}");
    assert_eq!(
        first.stdout.matches("serverside-applied").count(),
        bundle.len()
    );
    // The namespace enforces the restricted Pod Security Standard: the controller's pods
    // are admitted under it.
    let deployments: Api<Deployment> = Api::namespaced(ns.client.clone(), &ns.name);
    let deployment_name = one_of_kind(&bundle, "Deployment")["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    wait_for(
        deployments,
        &deployment_name,
        T,
        "both controller pods created",
        |d: Option<&Deployment>| d.and_then(|d| d.status.as_ref()?.replicas) == Some(2),
    )
    .await;
    let labels = Api::<Namespace>::all(ns.client.clone())
        .get(&ns.name)
        .await
        .unwrap()
        .labels()
        .clone();
    assert_eq!(
        labels
            .get("pod-security.kubernetes.io/enforce")
            .map(String::as_str),
        Some("restricted")
    );

    let before = versions(dir.path()).await;
    assert_eq!(before.len(), bundle.len());
    let second = kubectl(&["apply", "--server-side", "-k", &kustomization]).await;
    assert!(second.ok, "{second}");
    assert_eq!(
        versions(dir.path()).await,
        before,
        "the second apply changed objects"
    );
    // `kubectl diff` reads each live object, then dry-runs the apply: a status that a
    // controller writes in between (the disruption controller on the PDB, as pods come up)
    // shows as a difference that no re-apply caused. Such churn settles; drift does not.
    let mut diff = None;
    for _ in 0..5 {
        let d = kubectl(&[
            "diff",
            "--server-side",
            "--field-manager=kubectl",
            "-k",
            &kustomization,
        ])
        .await;
        let clean = d.ok && d.stdout.is_empty();
        diff = Some(d);
        if clean {
            break;
        }
    }
    let diff = diff.unwrap();
    assert!(
        diff.ok && diff.stdout.is_empty(),
        "drift after apply (five times):\n{diff}"
    );

    // The controller binary, run as the chart's ServiceAccount with the environment of
    // the chart's Deployment: every variable the chart sets is one the binary reads, and
    // with them it elects itself, syncs its caches (RBAC lets it list and watch everything
    // it needs) and serves its probes.
    let _one = ONE_CONTROLLER.lock().await;
    let pod = &one_of_kind(&bundle, "Deployment")["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let bin = Path::new(env!("CARGO_BIN_EXE_kube-failover"));
    let help = run(bin, &["run", "--help"], &[]).await;
    assert!(help.ok, "{help}");
    let pod_name = format!("{deployment_name}-5d8f7c9b4-x2x7q");
    let addr = free_addr();
    let mut env: Vec<(String, String)> = Vec::new();
    for var in container["env"].as_array().unwrap() {
        let name = var["name"].as_str().unwrap();
        // RUST_LOG is read by the log filter, not by a flag.
        assert!(
            name == "RUST_LOG" || help.stdout.contains(&format!("[env: {name}=")),
            "the chart sets {name}, which `kube-failover run` does not read:\n{}",
            help.stdout
        );
        let value = match var["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
            Some("metadata.name") => pod_name.clone(),
            Some("metadata.namespace") => ns.name.clone(),
            Some(other) => panic!("unexpected field {other}"),
            None => var["value"].as_str().unwrap().to_string(),
        };
        let value = if name == "KUBE_FAILOVER_METRICS_ADDR" {
            let chart_addr: std::net::SocketAddr = value.parse().unwrap();
            assert_eq!(
                Some(u64::from(chart_addr.port())),
                container["ports"][0]["containerPort"].as_u64(),
                "the probes' port is the one the binary serves"
            );
            addr.to_string()
        } else {
            value
        };
        env.push((name.to_string(), value));
    }
    let sa = pod["serviceAccountName"].as_str().unwrap();
    let token = service_account_token(&ns.name, sa).await;
    let cp = control_plane();
    let admin_kubeconfig = std::fs::read_to_string(cp.kubeconfig()).unwrap();
    assert!(admin_kubeconfig.contains(cp.admin_token()));
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        admin_kubeconfig.replace(cp.admin_token(), &token),
    )
    .unwrap();
    let args = strings(&container["args"]);
    let mut child = tokio::process::Command::new(bin)
        .args(&args)
        .env_clear()
        .env("KUBECONFIG", &kubeconfig)
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let leases: Api<Lease> = Api::namespaced(ns.client.clone(), &ns.name);
    wait_for(
        leases,
        LEASE,
        T,
        "the binary holds the chart's Lease",
        |l: Option<&Lease>| {
            l.and_then(|l| l.spec.as_ref()?.holder_identity.as_deref()) == Some(pod_name.as_str())
        },
    )
    .await;
    // HTTP endpoints have no watch: poll, and stop at once if the process exits.
    let ready = tokio::time::timeout(T, async {
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return Err(status);
            }
            if let Ok((200, body)) = http_get(addr, "/readyz").await {
                return Ok(body);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .expect("/readyz not 200 within the timeout");
    let ready = match ready {
        Ok(body) => body,
        Err(status) => {
            let out = child.wait_with_output().await.unwrap();
            panic!(
                "the controller exited ({status}):\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    assert!(ready.contains("caches synced"), "{ready}");
    assert_eq!(http_get(addr, "/healthz").await.unwrap().0, 200);
    let (code, metrics) = http_get(addr, "/metrics").await.unwrap();
    assert!(
        code == 200 && metrics.contains("kube_failover_"),
        "{metrics}"
    );
    // Kubernetes stops a pod with SIGTERM, and SIGKILL after its grace period (30 s).
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    let asked = std::time::Instant::now();
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(25), child.wait_with_output())
        .await
        .expect("the controller did not stop within 25 s of SIGTERM")
        .unwrap();
    eprintln!(
        "stopped {:?} after SIGTERM: {}",
        asked.elapsed(),
        out.status
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<Value> = stdout
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|_| {
                panic!("KUBE_FAILOVER_LOG_JSON is true, yet a log line is not JSON: {l}")
            })
        })
        .collect();
    // With the chart's log filter the controller's own progress is visible.
    assert!(
        lines.iter().any(|l| l["level"] == "INFO"
            && l["target"]
                .as_str()
                .is_some_and(|t| t.starts_with("kube_failover"))),
        "no INFO line of the controller:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn examples_are_accepted_by_the_api_server() {
    let ns = TestNamespace::new("examples").await;
    let examples = repo().join("examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&examples)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "app-after-database.yaml",
            "cluster.yaml",
            "database.yaml",
            "file-server.yaml",
            "playground.yaml",
            "two-node-witness.yaml",
            "two-sites.yaml"
        ]
    );
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        assert!(
            text.starts_with("# "),
            "{} starts with comments",
            file.display()
        );
        let r = apply_dry_run(&ns.name, file).await;
        assert!(r.ok, "{r}");
        assert_eq!(
            r.stdout.matches("(server dry run)").count(),
            docs(&text).len(),
            "{r}"
        );
    }
    // The dry run runs the CRD's validation: a broken copy of an example is refused.
    let broken = tempdir("broken-");
    let file = broken.path().join("database.yaml");
    let text = std::fs::read_to_string(examples.join("database.yaml")).unwrap();
    assert!(text.contains("- 192.0.2.10"));
    std::fs::write(&file, text.replace("- 192.0.2.10", "- 192.0.2.300")).unwrap();
    let r = apply_dry_run(&ns.name, &file).await;
    assert!(
        !r.ok
            && r.stderr
                .contains("each virtualIPs entry must be a unicast IPv4 or IPv6 address"),
        "{r}"
    );
}

/// A server-side dry run of `kubectl apply -f file` in `namespace`: the API server's own
/// validation, nothing written.
async fn apply_dry_run(namespace: &str, file: &Path) -> Run {
    let file = file.display().to_string();
    let args = [
        "apply",
        "--server-side",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        &file,
    ];
    // The chart's admission policy reads FailoverClusters as its parameters. While another
    // test of this control plane has just installed it (or the CRDs), the API server refuses
    // every request it governs until its informer for them has synced: it says so, and that
    // is no verdict on the manifest. Asked again until it gives one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let mut wait = std::time::Duration::from_millis(100);
    loop {
        let r = kubectl(&args).await;
        if r.ok
            || !r.stderr.contains("not yet synced to use for admission")
            || std::time::Instant::now() > deadline
        {
            return r;
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(2));
    }
}

/// The FailoverClusterInstance of an example, pointed at this test's cluster and nodes: the
/// user's manifest as it would be in their GitOps repository.
fn example_instance(file: &str, cluster: &str, preferred: &[String]) -> Value {
    let text = std::fs::read_to_string(repo().join("examples").join(file)).unwrap();
    let all = docs(&text);
    let mut fci = one_of_kind(&all, "FailoverClusterInstance").clone();
    fci["spec"]["clusterRef"] = json!(cluster);
    fci["spec"]["owners"]["preferred"] = json!(preferred);
    fci
}

#[tokio::test]
async fn helm_install_rbac_suffices_for_a_failover_and_a_gitops_reapply_finds_no_drift() {
    let release_ns = TestNamespace::new("helm").await;
    let app = TestNamespace::new("helm-app").await;
    let admin = release_ns.client.clone();
    let release = format!("fo{:x}", std::process::id() & 0xffff);
    let chart = chart_dir();
    // The harness installed the CRDs already.
    let install = helm_cluster(&[
        "install",
        &release,
        &chart,
        "--namespace",
        &release_ns.name,
        "--set",
        "crds.install=false",
    ])
    .await;
    assert!(install.ok, "{install}");
    assert!(
        install.stdout.contains(&format!(
            "is installed in namespace {} as release {release}",
            release_ns.name
        )) && install.stdout.contains("crds.install is false"),
        "NOTES.txt shown:\n{install}"
    );
    let upgrade = helm_cluster(&[
        "upgrade",
        &release,
        &chart,
        "--namespace",
        &release_ns.name,
        "--reuse-values",
    ])
    .await;
    assert!(
        upgrade.ok && upgrade.stdout.contains("REVISION: 2"),
        "{upgrade}"
    );
    let sa = format!("{release}-kube-failover");
    Api::<ServiceAccount>::namespaced(admin.clone(), &release_ns.name)
        .get(&sa)
        .await
        .unwrap();
    let config = service_account_config(&release_ns.name, &sa).await;
    let as_sa = Client::try_from(config.clone()).unwrap();

    // What the chart's ServiceAccount must not be able to do.
    let lp = ListParams::default();
    forbidden(
        Api::<Secret>::namespaced(as_sa.clone(), &release_ns.name)
            .list(&lp)
            .await,
        "list Secrets in its own namespace",
    );
    forbidden(
        Api::<Secret>::namespaced(as_sa.clone(), &release_ns.name)
            .get(&format!("sh.helm.release.v1.{release}.v1"))
            .await,
        "read Helm's release record",
    );
    forbidden(
        Api::<Secret>::all(as_sa.clone()).list(&lp).await,
        "list Secrets",
    );
    forbidden(
        Api::<ConfigMap>::all(as_sa.clone()).list(&lp).await,
        "list ConfigMaps",
    );
    forbidden(
        Api::<Deployment>::all(as_sa.clone()).list(&lp).await,
        "list Deployments",
    );
    forbidden(
        Api::<Node>::all(as_sa.clone())
            .delete("no-such-node", &DeleteParams::default())
            .await,
        "delete Nodes",
    );
    forbidden(
        Api::<Pod>::namespaced(as_sa.clone(), &app.name)
            .patch(
                "no-such-pod",
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
            )
            .await,
        "patch Pods",
    );
    forbidden(
        Api::<Namespace>::all(as_sa.clone())
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": "by-the-controller"}}))
                    .unwrap(),
            )
            .await,
        "create Namespaces",
    );
    forbidden(
        Api::<FailoverCluster>::all(as_sa.clone())
            .create(
                &PostParams::default(),
                &kube_failover_lab::demo::cluster("by-the-controller", "x", "default", 3).unwrap(),
            )
            .await,
        "create FailoverClusters",
    );
    // The leader Role names one Lease: another in the namespace cannot be taken over.
    let leases: Api<Lease> = Api::namespaced(admin.clone(), &release_ns.name);
    let other: Lease = serde_json::from_value(json!({
        "metadata": {"name": "someone-else"},
        "spec": {"holderIdentity": "someone-else"}
    }))
    .unwrap();
    let mut taken = leases.create(&PostParams::default(), &other).await.unwrap();
    // Node Leases are read through a Role in kube-node-lease: no other Lease can be read.
    forbidden(
        Api::<Lease>::namespaced(as_sa.clone(), &release_ns.name)
            .get("someone-else")
            .await,
        "read a Lease other than its own",
    );
    taken.spec.as_mut().unwrap().holder_identity = Some("kube-failover".into());
    forbidden(
        Api::<Lease>::namespaced(as_sa.clone(), &release_ns.name)
            .replace("someone-else", &PostParams::default(), &taken)
            .await,
        "update a Lease other than its own",
    );

    // The controller, as that ServiceAccount, on all namespaces, elected on the Lease the
    // chart's Role grants.
    let _one = ONE_CONTROLLER.lock().await;
    let metrics = free_addr();
    let replica = Replica::start_with_client_config(
        config,
        None,
        "helm-r1",
        Some(&release_ns.name),
        Some(metrics),
    );
    wait_for(
        leases.clone(),
        LEASE,
        T,
        "helm-r1 leads",
        |l: Option<&Lease>| {
            l.and_then(|l| l.spec.as_ref()?.holder_identity.as_deref()) == Some("helm-r1")
        },
    )
    .await;

    let cluster = format!("hi{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&admin, &cluster, 3, json!({})).await;
    csi_claim(&admin, &app.name, "db-data").await.unwrap();
    let attacher = tokio::spawn(play_csi_attacher(admin.clone(), SIM_CSI_DRIVER.into()));
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(admin.clone(), &app.name);
    claims
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "files-exports"},
                "spec": {"accessModes": ["ReadWriteOnce"], "storageClassName": "",
                         "resources": {"requests": {"storage": "1Gi"}}}
            }))
            .unwrap(),
        )
        .await
        .unwrap();

    // The user's GitOps repository: both examples, applied by the GitOps tool.
    let gitops = tempdir("gitops-");
    for (file, preferred) in [
        ("database.yaml", &nodes[..]),
        ("file-server.yaml", &nodes[1..]),
    ] {
        let fci = example_instance(file, &cluster, preferred);
        std::fs::write(
            gitops.path().join(file),
            serde_yaml::to_string(&fci).unwrap(),
        )
        .unwrap();
    }
    let gitops_dir = gitops.path().display().to_string();
    let apply = [
        "apply",
        "--server-side",
        "--field-manager",
        GITOPS,
        "-n",
        &app.name,
        "-f",
        &gitops_dir,
    ];
    let r = kubectl(&apply).await;
    assert!(r.ok, "{r}");

    let fcis: Api<FailoverClusterInstance> = Api::namespaced(admin.clone(), &app.name);
    let db = wait_for(fcis.clone(), "db", T, "db Online", is_online).await;
    assert_eq!(status(&db).owner_node.as_deref(), Some(nodes[0].as_str()));
    let files = wait_for(fcis.clone(), "files", T, "files Online", is_online).await;
    assert_eq!(
        status(&files).owner_node.as_deref(),
        Some(nodes[1].as_str())
    );
    let state = claims.get("files-state").await.unwrap();
    assert!(
        state
            .owner_references()
            .iter()
            .any(|o| o.kind == "FailoverClusterInstance" && o.name == "files"),
        "the claim from the template is the instance's"
    );

    // The owner of db dies: the controller fences it and moves db, with the chart's RBAC.
    control_plane().nodes.kill(&nodes[0]).await.unwrap();
    let moved = wait_for(
        fcis.clone(),
        "db",
        T,
        "db failed over and Online",
        |i: Option<&FailoverClusterInstance>| {
            is_online(i) && i.is_some_and(|i| status(i).failover_count == 1)
        },
    )
    .await;
    let st = status(&moved);
    assert_eq!(st.owner_node.as_deref(), Some(nodes[1].as_str()));
    let m = st.history.last().unwrap();
    assert_eq!(m.from.as_deref(), Some(nodes[0].as_str()));
    assert!(m.fenced.is_some() && m.online.is_some(), "{m:?}");
    let dead = Api::<Node>::all(admin.clone())
        .get(&nodes[0])
        .await
        .unwrap();
    assert!(
        dead.spec
            .and_then(|s| s.taints)
            .unwrap_or_default()
            .iter()
            .any(|t| t.key == "node.kubernetes.io/out-of-service"),
        "the dead node is fenced"
    );
    let pods: Vec<Pod> = Api::<Pod>::namespaced(admin.clone(), &app.name)
        .list(&ListParams::default().labels("kube-failover.io/instance=db"))
        .await
        .unwrap()
        .items;
    assert_eq!(
        pods.iter().map(|p| p.name_any()).collect::<Vec<_>>(),
        ["db-2"],
        "the old pod deleted, one new one"
    );
    assert_eq!(
        pods[0].spec.as_ref().unwrap().node_name.as_deref(),
        Some(nodes[1].as_str())
    );
    let ip = pods[0].status.as_ref().unwrap().pod_ip.clone().unwrap();
    let slice = Api::<EndpointSlice>::namespaced(admin.clone(), &app.name)
        .get("db")
        .await
        .unwrap();
    let addresses: Vec<String> = slice
        .endpoints
        .iter()
        .flatten()
        .flat_map(|e| e.addresses.clone())
        .collect();
    assert_eq!(addresses, [ip], "the endpoint moved to the new pod");
    let events = Api::<Event>::namespaced(admin.clone(), &app.name)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items;
    assert!(
        events.iter().any(|e| {
            e.reporting_controller.as_deref() == Some("kube-failover")
                && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("db")
        }),
        "the controller recorded Events"
    );
    // No API call of the controller failed (a missing permission would count as "kube").
    let (code, text) = http_get(metrics, "/metrics").await.unwrap();
    assert_eq!(code, 200);
    assert!(
        !text
            .lines()
            .any(|l| l.starts_with("kube_failover_reconcile_errors_total{error=\"kube\"}")),
        "{text}"
    );

    // The GitOps tool re-applies the repository: no conflict (the controller owns no field
    // of the spec), nothing changes, nothing differs.
    let before: Vec<FailoverClusterInstance> = vec![
        fcis.get("db").await.unwrap(),
        fcis.get("files").await.unwrap(),
    ];
    let r = kubectl(&apply).await;
    assert!(r.ok && !r.stderr.to_lowercase().contains("conflict"), "{r}");
    for old in &before {
        let new = fcis.get(&old.name_any()).await.unwrap();
        assert_eq!(new.metadata.generation, old.metadata.generation);
        assert_eq!(new.spec, old.spec);
        for entry in new.metadata.managed_fields.iter().flatten() {
            let fields = entry
                .fields_v1
                .as_ref()
                .map(|f| f.0.clone())
                .unwrap_or_default();
            let owns_spec = fields.get("f:spec").is_some();
            let manager = entry.manager.as_deref().unwrap_or_default();
            assert_eq!(
                owns_spec,
                manager == GITOPS,
                "only the GitOps tool owns the spec of {}: {entry:?}",
                old.name_any()
            );
        }
    }
    let diff = kubectl(&[
        "diff",
        "--server-side",
        "--field-manager",
        GITOPS,
        "-n",
        &app.name,
        "-f",
        &gitops_dir,
    ])
    .await;
    assert!(diff.ok && diff.stdout.is_empty(), "drift:\n{diff}");

    replica.kill();
    attacher.abort();
    let uninstall = helm_cluster(&["uninstall", &release, "--namespace", &release_ns.name]).await;
    assert!(uninstall.ok, "{uninstall}");
    wait_gone(
        Api::<ClusterRole>::all(admin.clone()),
        &sa,
        T,
        "ClusterRole removed by helm uninstall",
    )
    .await;
    assert!(
        Api::<FailoverClusterInstance>::all(admin.clone())
            .list(&ListParams::default())
            .await
            .is_ok(),
        "the CRDs stay"
    );
}

#[tokio::test]
async fn namespaced_mode_rbac_suffices_for_a_failover() {
    let release_ns = TestNamespace::new("helm-nm").await;
    let app = TestNamespace::new("helm-nm-app").await;
    let admin = release_ns.client.clone();
    let release = format!("nm{:x}", std::process::id() & 0xffff);
    let watch = format!("watchNamespace={}", app.name);
    let install = helm_cluster(&[
        "install",
        &release,
        &chart_dir(),
        "--namespace",
        &release_ns.name,
        "--set",
        "crds.install=false",
        "--set",
        &watch,
    ])
    .await;
    assert!(install.ok, "{install}");
    let sa = format!("{release}-kube-failover");
    let config = service_account_config(&release_ns.name, &sa).await;
    let as_sa = Client::try_from(config.clone()).unwrap();
    // Outside the watched namespace, what concerns instances is refused.
    forbidden(
        Api::<Pod>::namespaced(as_sa.clone(), &release_ns.name)
            .list(&ListParams::default())
            .await,
        "list pods outside the watched namespace",
    );
    forbidden(
        Api::<FailoverClusterInstance>::all(as_sa.clone())
            .list(&ListParams::default())
            .await,
        "list instances in every namespace",
    );
    forbidden(
        Api::<Namespace>::all(as_sa.clone())
            .get(&release_ns.name)
            .await,
        "read a Namespace other than the watched one",
    );

    // The controller, as that ServiceAccount, on the watched namespace only.
    let _one = ONE_CONTROLLER.lock().await;
    let _replica = Replica::start_with_client_config(
        config,
        Some(&app.name),
        "nm-r1",
        Some(&release_ns.name),
        None,
    );
    let cluster = format!("nm{:x}", std::process::id() & 0xfff);
    let nodes = nodes_and_cluster(&admin, &cluster, 3, json!({})).await;
    let fci = kube_failover_lab::demo::instance("db", &cluster, &nodes, None).unwrap();
    let fcis: Api<FailoverClusterInstance> = Api::namespaced(admin.clone(), &app.name);
    fcis.create(&PostParams::default(), &fci).await.unwrap();
    let db = wait_for(fcis.clone(), "db", T, "db Online", is_online).await;
    let owner = status(&db).owner_node.unwrap();
    control_plane().nodes.kill(&owner).await.unwrap();
    let moved = wait_for(
        fcis.clone(),
        "db",
        T,
        "db failed over",
        |f: Option<&FailoverClusterInstance>| {
            is_online(f) && f.map(status).and_then(|s| s.owner_node) != Some(owner.clone())
        },
    )
    .await;
    assert_eq!(status(&moved).failover_count, 1);
    let uninstall = helm_cluster(&["uninstall", &release, "--namespace", &release_ns.name]).await;
    assert!(uninstall.ok, "{uninstall}");
}

/// The committed CRDs apply without a single warning from the API server (it used to warn
/// `unrecognized format "uint32"` on every apply, for each unsigned field). The API server
/// warns only about what an update adds, so the CRDs are applied (dry run) under another
/// group, as new.
#[tokio::test]
async fn the_crds_apply_without_warnings() {
    let dir = tempfile::tempdir().unwrap();
    for file in ["failoverclusters.yaml", "failoverclusterinstances.yaml"] {
        let text = std::fs::read_to_string(repo().join("crds").join(file)).unwrap();
        let renamed = text.replace("kube-failover.io", "format-check.kube-failover.io");
        std::fs::write(dir.path().join(file), renamed).unwrap();
    }
    let r = kubectl(&[
        "apply",
        "--server-side",
        "--dry-run=server",
        "-f",
        &dir.path().display().to_string(),
    ])
    .await;
    assert!(r.ok, "{r}");
    assert_eq!(r.stdout.matches("(server dry run)").count(), 2, "{r}");
    assert!(!r.stderr.contains("Warning"), "{r}");
}
