//! What the control plane is given once it runs: namespaces and CRDs.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::wait::{await_condition, conditions};

use super::*;

impl ControlPlane {
    /// Creates a namespace and waits until its `default` ServiceAccount exists, so that
    /// pods can be created in it at once.
    pub async fn create_namespace(&self, client: &Client, name: &str) -> Result<()> {
        Self::create_namespace_with(client, name).await
    }

    /// As `create_namespace`, for callers without the control plane at hand.
    pub async fn create_namespace_with(client: &Client, name: &str) -> Result<()> {
        let ns: Api<Namespace> = Api::all(client.clone());
        ns.create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?,
        )
        .await?;
        let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        tokio::time::timeout(
            Duration::from_secs(30),
            await_condition(sa, "default", |sa: Option<&ServiceAccount>| sa.is_some()),
        )
        .await
        .context("the default ServiceAccount did not appear in 30 s")??;
        Ok(())
    }

    /// Applies every CRD in `dir` (YAML files) and waits until each is Established.
    pub async fn install_crds(&self, client: &Client, dir: &Path) -> Result<Vec<String>> {
        let mut files: Vec<_> = std::fs::read_dir(dir)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
            .collect();
        files.sort();
        let mut crds = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file)?;
            for doc in serde_yaml::Deserializer::from_str(&text) {
                let value = serde_yaml::Value::deserialize(doc)?;
                if value.is_null() {
                    continue;
                }
                crds.push(
                    serde_yaml::from_value::<CustomResourceDefinition>(value)
                        .with_context(|| format!("parsing {}", file.display()))?,
                );
            }
        }
        self.install_crd_objects(client, crds).await
    }

    /// Applies the controller's CRDs (as the binary renders them) and waits until each is
    /// Established.
    pub async fn install_kube_failover_crds(&self, client: &Client) -> Result<Vec<String>> {
        let crds = kube_failover_core::crd::all()
            .into_iter()
            .map(|(_, c)| c)
            .collect();
        self.install_crd_objects(client, crds).await
    }

    /// Applies the CRDs and waits until each is Established.
    pub async fn install_crd_objects(
        &self,
        client: &Client,
        crds: Vec<CustomResourceDefinition>,
    ) -> Result<Vec<String>> {
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut names = Vec::new();
        for crd in crds {
            let name = crd.metadata.name.clone().context("CRD without a name")?;
            api.patch(
                &name,
                &PatchParams::apply("kube-failover-tests").force(),
                &Patch::Apply(&crd),
            )
            .await
            .with_context(|| format!("applying CRD {name}"))?;
            names.push(name);
        }
        for name in &names {
            tokio::time::timeout(
                Duration::from_secs(30),
                await_condition(api.clone(), name, conditions::is_crd_established()),
            )
            .await
            .with_context(|| format!("CRD {name} not Established in 30 s"))??;
        }
        Ok(names)
    }
}
