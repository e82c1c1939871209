//! Kubernetes kinds as the controller caches them: only the fields it reads, under the names
//! and in the shapes of the API's own types (k8s-openapi's), so that code reads either alike.
//! Those types hold every field inline, set or not: a PersistentVolume is about 3.4 KiB before
//! any of its content, and a VolumeAttachment 3.5 KiB (it carries a PersistentVolumeSpec, with
//! a field for each of some thirty volume sources). A cache of thousands of volumes and
//! attachments held several KiB per instance of nothing. Each kind is read through a trait
//! that both its cached and its API type implement, for the code (`validate`, the plugin's
//! simulation) that reads the API's.

use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolume, VolumeNodeAffinity};
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

        assert!(size_of::<Volume>() * 4 < size_of::<PersistentVolume>());
        assert!(size_of::<Attachment>() * 4 < size_of::<VolumeAttachment>());
    }
}
