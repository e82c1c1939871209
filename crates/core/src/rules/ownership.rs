//! Which objects are an instance's own.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use crate::api::FailoverClusterInstance;

/// Whether the object of `meta` is controlled by the instance `fci`: it has an owner
/// reference with `controller: true`, of kind FailoverClusterInstance, whose UID is the
/// instance's. The instance label alone proves nothing: whoever may create pods in the
/// namespace may set it, and a pod counted on its label could be deleted in a failover,
/// adopted as the instance's new pod, or waited for without end. The controller sets this
/// reference on every pod it creates, and a UID is never reused, so a pod made for an
/// earlier instance of the same name does not count either. An instance with no UID yet (one
/// never stored by the API server) controls nothing.
pub fn controlled_by(meta: &ObjectMeta, fci: &FailoverClusterInstance) -> bool {
    let Some(uid) = fci.meta().uid.as_deref().filter(|u| !u.is_empty()) else {
        return false;
    };
    let kind = FailoverClusterInstance::kind(&());
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true) && o.kind == kind && o.uid == uid)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    fn instance(uid: Option<&str>) -> FailoverClusterInstance {
        let mut fci: FailoverClusterInstance = serde_json::from_value(serde_json::json!({
            "apiVersion": "kube-failover.io/v1alpha1",
            "kind": "FailoverClusterInstance",
            "metadata": {"name": "db", "namespace": "a"},
            "spec": {
                "clusterRef": "c",
                "networkName": {"name": "db", "ports": [{"name": "sql", "port": 1433}]},
                "template": {"spec": {"containers": [{"name": "db", "image": "db"}]}},
            },
        }))
        .expect("an instance");
        fci.metadata.uid = uid.map(str::to_string);
        fci
    }

    fn owned(refs: Vec<OwnerReference>) -> ObjectMeta {
        ObjectMeta {
            name: Some("db-1".into()),
            owner_references: Some(refs),
            ..Default::default()
        }
    }

    fn reference(kind: &str, uid: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "kube-failover.io/v1alpha1".into(),
            kind: kind.into(),
            name: "db".into(),
            uid: uid.into(),
            controller,
            block_owner_deletion: None,
        }
    }

    #[test]
    fn only_a_controller_reference_to_the_instances_uid_makes_an_object_its_own() {
        let fci = instance(Some("u-1"));
        let fci_kind = "FailoverClusterInstance";
        // What the controller sets on the pods it creates.
        let made = fci.controller_owner_ref(&()).expect("an owner reference");
        assert!(controlled_by(&owned(vec![made]), &fci));
        assert!(controlled_by(
            &owned(vec![
                reference("ConfigMap", "u-9", None),
                reference(fci_kind, "u-1", Some(true)),
            ]),
            &fci
        ));
        // The label alone, or no owner at all.
        assert!(!controlled_by(&ObjectMeta::default(), &fci));
        assert!(!controlled_by(&owned(vec![]), &fci));
        // An owner reference that is not the controller's.
        assert!(!controlled_by(
            &owned(vec![reference(fci_kind, "u-1", None)]),
            &fci
        ));
        assert!(!controlled_by(
            &owned(vec![reference(fci_kind, "u-1", Some(false))]),
            &fci
        ));
        // Another UID: another instance, or an earlier one of the same name.
        assert!(!controlled_by(
            &owned(vec![reference(fci_kind, "u-2", Some(true))]),
            &fci
        ));
        // The instance's UID under another kind.
        assert!(!controlled_by(
            &owned(vec![reference("ReplicaSet", "u-1", Some(true))]),
            &fci
        ));
        // An instance the API server never stored has no UID: nothing is its own, not even
        // an object whose reference has an empty UID.
        for uid in [None, Some("")] {
            let unstored = instance(uid);
            assert!(!controlled_by(
                &owned(vec![reference(fci_kind, "", Some(true))]),
                &unstored
            ));
        }
    }
}
