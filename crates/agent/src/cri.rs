//! Stopping instance pods through the container runtime's CRI socket, as the kubelet does.
//!
//! The kubelet copies a pod's labels onto its sandbox, so the sandboxes of instance pods
//! carry `kube-failover.io/instance`. A fenced agent stops each such ready sandbox: first its
//! running containers, with the grace the stop timeout allows, then the sandbox itself (which
//! the runtime does at once, and which takes the pod's network namespace down). The kubelet,
//! cut off from the API server but still running, would start them again: the agent stops
//! them again for as long as it stays fenced (see `Workloads::stop_all`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use hyper_util::rt::TokioIo;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerFilter, ContainerState, ContainerStateValue, ListContainersRequest,
    ListPodSandboxRequest, PodSandbox, PodSandboxFilter, PodSandboxState, PodSandboxStateValue,
    StopContainerRequest, StopPodSandboxRequest,
};
use tonic::transport::{Channel, Endpoint, Uri};

use kube_failover_core::api::INSTANCE_LABEL;

/// A CRI runtime service reached over its unix socket.
pub struct Runtime {
    client: RuntimeServiceClient<Channel>,
}

/// An instance pod's sandbox as the runtime lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceSandbox {
    pub id: String,
    /// `namespace/name` of the pod, from the sandbox's metadata.
    pub pod: String,
    /// The pod's UID, from the sandbox's metadata (empty if it has none).
    pub uid: String,
    /// The instance, from the `kube-failover.io/instance` label.
    pub instance: String,
}

impl Runtime {
    /// Connects to the runtime service at `socket` (e.g. `/run/containerd/containerd.sock`).
    pub async fn connect(socket: &Path) -> Result<Self> {
        Ok(Self {
            client: RuntimeServiceClient::new(channel(socket).await?),
        })
    }

    /// Every ready sandbox of an instance pod on this node.
    pub async fn instance_sandboxes(&mut self) -> Result<Vec<InstanceSandbox>> {
        let filter = PodSandboxFilter {
            state: Some(PodSandboxStateValue {
                state: PodSandboxState::SandboxReady.into(),
            }),
            ..Default::default()
        };
        let items = self
            .client
            .list_pod_sandbox(ListPodSandboxRequest {
                filter: Some(filter),
            })
            .await
            .context("ListPodSandbox")?
            .into_inner()
            .items;
        Ok(items.iter().filter_map(instance_sandbox).collect())
    }

    /// Stops the running containers of `sandbox`, each given `grace` to exit after SIGTERM
    /// (whole seconds, as CRI counts them; 0 kills at once), then the sandbox.
    pub async fn stop(&mut self, sandbox: &InstanceSandbox, grace: Duration) -> Result<()> {
        let filter = ContainerFilter {
            pod_sandbox_id: sandbox.id.clone(),
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning.into(),
            }),
            ..Default::default()
        };
        let containers = self
            .client
            .list_containers(ListContainersRequest {
                filter: Some(filter),
            })
            .await
            .context("ListContainers")?
            .into_inner()
            .containers;
        let timeout = i64::try_from(grace.as_secs()).unwrap_or(i64::MAX);
        let stops = containers.iter().map(|c| {
            let mut client = self.client.clone();
            let container_id = c.id.clone();
            async move {
                client
                    .stop_container(StopContainerRequest {
                        container_id,
                        timeout,
                    })
                    .await
            }
        });
        for result in futures::future::join_all(stops).await {
            if let Err(e) = result {
                tracing::warn!(pod = %sandbox.pod, error = %e, "StopContainer failed; stopping the sandbox");
            }
        }
        self.client
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: sandbox.id.clone(),
            })
            .await
            .with_context(|| format!("StopPodSandbox of {}", sandbox.pod))?;
        Ok(())
    }
}

/// A gRPC channel to the CRI service listening on the unix socket `socket`.
pub async fn channel(socket: &Path) -> Result<Channel> {
    let path = PathBuf::from(socket);
    // tonic wants a URI; it is never resolved: every connection goes to the socket.
    Endpoint::try_from("http://[::1]:50051")?
        .connect_timeout(Duration::from_secs(2))
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await
        .with_context(|| format!("connecting to the CRI socket {}", socket.display()))
}

/// The sandbox of an instance pod, if `s` is one.
fn instance_sandbox(s: &PodSandbox) -> Option<InstanceSandbox> {
    let instance = s.labels.get(INSTANCE_LABEL)?;
    let pod = s
        .metadata
        .as_ref()
        .map(|m| format!("{}/{}", m.namespace, m.name))
        .unwrap_or_else(|| s.id.clone());
    Some(InstanceSandbox {
        id: s.id.clone(),
        pod,
        uid: s
            .metadata
            .as_ref()
            .map(|m| m.uid.clone())
            .unwrap_or_default(),
        instance: instance.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::PodSandboxMetadata;

    #[test]
    fn only_sandboxes_of_instance_pods_are_chosen() {
        let mut s = PodSandbox {
            id: "abc".into(),
            metadata: Some(PodSandboxMetadata {
                name: "db-1".into(),
                namespace: "prod".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            instance_sandbox(&s),
            None,
            "a pod of no instance is left alone"
        );
        s.labels.insert(INSTANCE_LABEL.into(), "db".into());
        assert_eq!(
            instance_sandbox(&s),
            Some(InstanceSandbox {
                id: "abc".into(),
                pod: "prod/db-1".into(),
                uid: String::new(),
                instance: "db".into()
            })
        );
    }
}
