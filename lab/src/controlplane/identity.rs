//! The controller's identity as users install it: the namespace, ServiceAccount, RBAC and
//! admission policies of `deploy/kube-failover.yaml` (the chart rendered with its defaults),
//! so that a controller run in the lab has exactly the permissions that ship.

use anyhow::{Context, Result};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use kube::api::{Api, PostParams};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// What users apply.
pub const MANIFEST: &str = include_str!("../../../deploy/kube-failover.yaml");
/// The controller's namespace and ServiceAccount, as [`MANIFEST`] makes them.
pub const CONTROLLER_NS: &str = "kube-failover";
pub const CONTROLLER_SA: &str = "kube-failover";
/// The name the API server knows the controller by.
pub const CONTROLLER_USER: &str = "system:serviceaccount:kube-failover:kube-failover";

/// Creates `obj` unless an object of its name exists.
pub async fn create_if_absent<K>(api: &Api<K>, obj: &K) -> Result<()>
where
    K: Resource + Clone + Serialize + DeserializeOwned + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

fn namespace_of(v: &serde_yaml::Value) -> String {
    v.get("metadata")
        .and_then(|m| m.get("namespace"))
        .and_then(|n| n.as_str())
        .unwrap_or(CONTROLLER_NS)
        .to_string()
}

/// Creates (where absent) the namespace, ServiceAccount, ClusterRole, Roles, their bindings
/// and the ValidatingAdmissionPolicies with their bindings, from [`MANIFEST`].
pub async fn install_controller_identity(client: &Client) -> Result<()> {
    install_identity(client, MANIFEST).await
}

/// The node agent's identity as the chart makes it with `agent.enabled=true`: its
/// ServiceAccount, RBAC and admission policy (not its DaemonSet), rendered by `helm`.
pub async fn install_agent_identity(client: &Client, helm: &std::path::Path) -> Result<()> {
    let manifest = render_template(helm, &["agent.enabled=true"], "templates/agent.yaml")?;
    install_identity(client, &manifest).await
}

/// One template of the chart (release `kube-failover` in the controller's namespace),
/// rendered by `helm` with `sets`.
fn render_template(helm: &std::path::Path, sets: &[&str], template: &str) -> Result<String> {
    let chart = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/kube-failover");
    let mut cmd = std::process::Command::new(helm);
    cmd.args(["template", "kube-failover"]).arg(&chart).args([
        "--namespace",
        CONTROLLER_NS,
        "--show-only",
        template,
    ]);
    for set in sets {
        cmd.args(["--set", set]);
    }
    let out = cmd
        .output()
        .with_context(|| format!("helm template ({template})"))?;
    anyhow::ensure!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The witness's identity as the chart makes it with `witness.enabled=true` and
/// `witness.lease=<lease>`: its ServiceAccount, Role and admission policy (not its
/// Deployment), rendered by `helm`, in the controller's namespace.
pub async fn install_witness_identity(
    client: &Client,
    helm: &std::path::Path,
    lease: &str,
) -> Result<()> {
    let lease = format!("witness.lease={lease}");
    let sets = ["witness.enabled=true", lease.as_str()];
    let manifest = render_template(helm, &sets, "templates/witness.yaml")?;
    install_identity(client, &manifest).await
}

/// The witness's ServiceAccount, as the chart names it (release `kube-failover`).
pub const WITNESS_SA: &str = "kube-failover-witness";

/// A token of the agent's ServiceAccount bound to `pod` (which runs on the agent's node), so
/// that it carries the node's name as a real agent's token does.
pub async fn agent_token(client: &Client, pod: &k8s_openapi::api::core::v1::Pod) -> Result<String> {
    use kube::ResourceExt;
    let spec = serde_json::json!({"expirationSeconds": 6 * 3600, "boundObjectRef": {
        "kind": "Pod", "apiVersion": "v1", "name": pod.name_any(), "uid": pod.uid(),
    }});
    service_account_token(client, AGENT_NS, AGENT_SA, spec).await
}

/// A token of the ServiceAccount `ns/name`, as TokenRequest `spec` asks.
async fn service_account_token(
    client: &Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) -> Result<String> {
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec,
    }))?;
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .with_context(|| format!("a token for the ServiceAccount {ns}/{name}"))?
        .status
        .and_then(|s| s.token)
        .context("TokenRequest returned no token")
}

/// The node agent's ServiceAccount, as the chart names it (release `kube-failover`).
pub const AGENT_SA: &str = "kube-failover-agent";
/// Its namespace (the chart's `agent.namespace`).
pub const AGENT_NS: &str = "kube-system";

async fn install_identity(client: &Client, manifest: &str) -> Result<()> {
    use serde::Deserialize;
    for doc in serde_yaml::Deserializer::from_str(manifest) {
        let v = serde_yaml::Value::deserialize(doc)?;
        let kind = v
            .get("kind")
            .and_then(|k| k.as_str())
            .unwrap_or_default()
            .to_string();
        let ns = namespace_of(&v);
        let c = client.clone();
        match kind.as_str() {
            "Namespace" => {
                create_if_absent(&Api::<Namespace>::all(c), &serde_yaml::from_value(v)?).await
            }
            "ServiceAccount" => {
                create_if_absent(
                    &Api::<ServiceAccount>::namespaced(c, &ns),
                    &serde_yaml::from_value(v)?,
                )
                .await
            }
            "ClusterRole" => {
                create_if_absent(&Api::<ClusterRole>::all(c), &serde_yaml::from_value(v)?).await
            }
            "ClusterRoleBinding" => {
                create_if_absent(
                    &Api::<ClusterRoleBinding>::all(c),
                    &serde_yaml::from_value(v)?,
                )
                .await
            }
            "Role" => {
                create_if_absent(
                    &Api::<Role>::namespaced(c, &ns),
                    &serde_yaml::from_value(v)?,
                )
                .await
            }
            "RoleBinding" => {
                create_if_absent(
                    &Api::<RoleBinding>::namespaced(c, &ns),
                    &serde_yaml::from_value(v)?,
                )
                .await
            }
            "Secret" => {
                create_if_absent(
                    &Api::<k8s_openapi::api::core::v1::Secret>::namespaced(c, &ns),
                    &serde_yaml::from_value(v)?,
                )
                .await
            }
            "ValidatingAdmissionPolicy" => {
                create_if_absent(
                    &Api::<ValidatingAdmissionPolicy>::all(c),
                    &serde_yaml::from_value(v)?,
                )
                .await
            }
            "ValidatingAdmissionPolicyBinding" => {
                create_if_absent(
                    &Api::<ValidatingAdmissionPolicyBinding>::all(c),
                    &serde_yaml::from_value(v)?,
                )
                .await
            }
            _ => Ok(()),
        }
        .with_context(|| format!("creating the {kind} of the manifest"))?;
    }
    Ok(())
}

/// A token of the controller's ServiceAccount, valid `seconds`.
pub async fn controller_token(client: &Client, seconds: i64) -> Result<String> {
    let spec = serde_json::json!({"expirationSeconds": seconds});
    service_account_token(client, CONTROLLER_NS, CONTROLLER_SA, spec).await
}
