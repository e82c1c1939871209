//! Kubernetes kinds as the controller caches them: only the fields it reads, under the names
//! and in the shapes of the API's own types (k8s-openapi's), so that code reads either alike.
//! Those types hold every field inline, set or not: a PersistentVolume is about 3.4 KiB before
//! any of its content, and a VolumeAttachment 3.5 KiB (it carries a PersistentVolumeSpec, with
//! a field for each of some thirty volume sources). A cache of thousands of volumes and
//! attachments held several KiB per instance of nothing; so did pods (2.4 KiB inline, and
//! 2.1 KiB for each container's status). Each kind is read through a trait
//! that both its cached and its API type implement, for the code (`validate`, the plugin's
//! simulation) that reads the API's.

use k8s_openapi::api::core::v1::{
    ObjectReference, PersistentVolume, Pod, PodCondition, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::VolumeAttachment;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};

/// A PersistentVolume: where it can be used, by how many nodes at once, and its claim.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Volume {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<VolumeSpec>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_modes: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claim_ref: Option<ObjectReference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_affinity: Option<VolumeNodeAffinity>,
}

/// A VolumeAttachment: which volume, on which node.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Attachment {
    pub metadata: ObjectMeta,
    pub spec: AttachmentSpec,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentSpec {
    pub node_name: String,
    #[serde(default)]
    pub source: AttachmentSource,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub persistent_volume_name: Option<String>,
}

/// A Pod: its metadata (owner, labels, deletion), its node, and its phase, readiness,
/// address and restarts.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<CachedPodSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CachedPodStatus>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_name: Option<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CachedPodStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(rename = "podIP", default, skip_serializing_if = "Option::is_none")]
    pub pod_ip: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditions: Option<Vec<PodCondition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_statuses: Option<Vec<ContainerRestarts>>,
}

/// Of a container's status, its name, readiness and restarts.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerRestarts {
    pub name: String,
    #[serde(default)]
    pub ready: bool,
    #[serde(default)]
    pub restart_count: i32,
}

impl From<&Pod> for CachedPod {
    fn from(pod: &Pod) -> Self {
        Self {
            metadata: pod.metadata.clone(),
            spec: pod.spec.as_ref().map(|s| CachedPodSpec {
                node_name: s.node_name.clone(),
            }),
            status: pod.status.as_ref().map(|s| CachedPodStatus {
                phase: s.phase.clone(),
                pod_ip: s.pod_ip.clone(),
                conditions: s.conditions.clone(),
                container_statuses: s.container_statuses.as_ref().map(|cs| {
                    cs.iter()
                        .map(|c| ContainerRestarts {
                            name: c.name.clone(),
                            ready: c.ready,
                            restart_count: c.restart_count,
                        })
                        .collect()
                }),
            }),
        }
    }
}

macro_rules! cached_kind {
    ($ty:ty, $api:ty, $list:literal) => {
        impl k8s_openapi::Resource for $ty {
            const API_VERSION: &'static str = <$api as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$api as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$api as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$api as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str =
                <$api as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$api as k8s_openapi::Resource>::Scope;
        }

        impl k8s_openapi::ListableResource for $ty {
            const LIST_KIND: &'static str = $list;
        }

        impl k8s_openapi::Metadata for $ty {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

cached_kind!(Volume, PersistentVolume, "PersistentVolumeList");
cached_kind!(Attachment, VolumeAttachment, "VolumeAttachmentList");
cached_kind!(CachedPod, Pod, "PodList");

/// What is read of a Pod.
pub trait PodView {
    fn meta(&self) -> &ObjectMeta;
    fn node_name(&self) -> Option<&str>;
    fn phase(&self) -> Option<&str>;
    fn pod_ip(&self) -> Option<&str>;
    fn ready(&self) -> bool;
    /// Restarts of all its containers.
    fn restarts(&self) -> u32;
}

// As for volumes.
macro_rules! pod_views {
    ($($ty:ty),*) => {$(
        impl PodView for $ty {
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn node_name(&self) -> Option<&str> {
                self.spec.as_ref()?.node_name.as_deref()
            }

            fn phase(&self) -> Option<&str> {
                self.status.as_ref()?.phase.as_deref()
            }

            fn pod_ip(&self) -> Option<&str> {
                self.status.as_ref()?.pod_ip.as_deref()
            }

            fn ready(&self) -> bool {
                self.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            }

            fn restarts(&self) -> u32 {
                self.status
                    .as_ref()
                    .and_then(|s| s.container_statuses.as_ref())
                    .map(|cs| cs.iter().map(|c| c.restart_count.max(0) as u32).sum())
                    .unwrap_or(0)
            }
        }
    )*};
}

pod_views!(CachedPod, Pod);

/// What is read of a PersistentVolume.
pub trait VolumeView {
    fn access_modes(&self) -> &[String];
    fn node_affinity(&self) -> Option<&VolumeNodeAffinity>;
}

// The API type and the cached kind have what is read in the same shape: one body each.
macro_rules! views {
    ($($ty:ty),*) => {$(
        impl VolumeView for $ty {
            fn access_modes(&self) -> &[String] {
                self.spec
                    .as_ref()
                    .and_then(|s| s.access_modes.as_deref())
                    .unwrap_or_default()
            }

            fn node_affinity(&self) -> Option<&VolumeNodeAffinity> {
                self.spec.as_ref()?.node_affinity.as_ref()
            }
        }
    )*};
}

views!(Volume, PersistentVolume);

/// What is read of a VolumeAttachment.
pub trait AttachmentView {
    fn meta(&self) -> &ObjectMeta;
    fn node_name(&self) -> &str;
    fn volume_name(&self) -> Option<&str>;
}

// As for volumes.
macro_rules! attachment_views {
    ($($ty:ty),*) => {$(
        impl AttachmentView for $ty {
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn node_name(&self) -> &str {
                &self.spec.node_name
            }

            fn volume_name(&self) -> Option<&str> {
                self.spec.source.persistent_volume_name.as_deref()
            }
        }
    )*};
}

attachment_views!(Attachment, VolumeAttachment);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cached_kinds_read_what_the_api_types_read_and_are_a_fraction_of_their_size() {
        let pv = serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": "pv-1", "uid": "u1"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "capacity": {"storage": "1Gi"},
                "claimRef": {"namespace": "ns", "name": "data"},
                "csi": {"driver": "d", "volumeHandle": "h"},
                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                    {"key": "kubernetes.io/hostname", "operator": "In", "values": ["n1"]}]}]}}
            }
        });
        let api: PersistentVolume = serde_json::from_value(pv.clone()).unwrap();
        let cached: Volume = serde_json::from_value(pv).unwrap();
        assert_eq!(cached.access_modes(), api.access_modes());
        assert_eq!(cached.access_modes(), ["ReadWriteOnce"]);
        assert_eq!(cached.node_affinity(), api.node_affinity());
        assert!(cached.node_affinity().is_some());
        let claim = cached.spec.as_ref().and_then(|s| s.claim_ref.as_ref());
        assert_eq!(claim.and_then(|c| c.name.as_deref()), Some("data"));

        let va = serde_json::json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "VolumeAttachment",
            "metadata": {"name": "csi-1", "uid": "u2"},
            "spec": {"attacher": "d", "nodeName": "n1", "source": {"persistentVolumeName": "pv-1"}},
            "status": {"attached": true}
        });
        let api: VolumeAttachment = serde_json::from_value(va.clone()).unwrap();
        let cached: Attachment = serde_json::from_value(va).unwrap();
        assert_eq!(cached.node_name(), api.node_name());
        assert_eq!(cached.volume_name(), Some("pv-1"));
        assert_eq!(cached.volume_name(), api.volume_name());
        assert_eq!(cached.meta(), api.meta());

        let pod = serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "db-1", "namespace": "ns", "uid": "u3",
                         "labels": {"kube-failover.io/instance": "db"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "db", "image": "i"}]},
            "status": {
                "phase": "Running", "podIP": "10.0.0.7",
                "conditions": [{"type": "Ready", "status": "True"}],
                "containerStatuses": [
                    {"name": "db", "image": "i", "imageID": "", "ready": true, "restartCount": 3},
                    {"name": "log", "image": "i", "imageID": "", "ready": false, "restartCount": 1}
                ]
            }
        });
        let api: Pod = serde_json::from_value(pod.clone()).unwrap();
        let cached: CachedPod = serde_json::from_value(pod).unwrap();
        assert_eq!(CachedPod::from(&api), cached);
        for p in [&api as &dyn PodView, &cached] {
            assert_eq!(p.meta().name.as_deref(), Some("db-1"));
            assert_eq!(p.node_name(), Some("n1"));
            assert_eq!(p.phase(), Some("Running"));
            assert_eq!(p.pod_ip(), Some("10.0.0.7"));
            assert!(p.ready());
            assert_eq!(p.restarts(), 4);
        }
        let mut not_ready = cached.clone();
        not_ready.status.as_mut().unwrap().conditions = None;
        assert!(!not_ready.ready());

        assert!(size_of::<CachedPod>() * 4 < size_of::<Pod>());
        assert!(size_of::<Volume>() * 4 < size_of::<PersistentVolume>());
        assert!(size_of::<Attachment>() * 4 < size_of::<VolumeAttachment>());
    }
}
