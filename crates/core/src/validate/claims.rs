//! Storage: whether each claim can follow its instance to another node.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use kube::ResourceExt;

use super::{Check, Verdict};
use crate::api::FailoverClusterInstance;
use crate::rules::pinned_node;

/// CSI drivers known to attach their volumes through VolumeAttachments (attachRequired):
/// block storage that one node at a time mounts.
pub const KNOWN_ATTACHING_DRIVERS: &[&str] = &[
    "ebs.csi.aws.com",
    "pd.csi.storage.gke.io",
    "disk.csi.azure.com",
    "cinder.csi.openstack.org",
    "csi.vsphere.vmware.com",
    "driver.longhorn.io",
    "rbd.csi.ceph.com",
    "dobs.csi.digitalocean.com",
    "csi.hetzner.cloud",
];

/// What one claim of an instance is made of, as read.
#[derive(Clone, Debug, Default)]
pub struct ClaimFacts {
    pub claim: String,
    pub from_template: bool,
    pub pvc: Option<PersistentVolumeClaim>,
    /// The template's claim spec, for a claim not made yet.
    pub template: Option<PersistentVolumeClaimSpec>,
    /// The StorageClass it uses, if any (`storageClassName`, else the default class for a
    /// claim not made yet), and whether it exists.
    pub class_name: Option<String>,
    pub class: Option<StorageClass>,
    pub pv: Option<PersistentVolume>,
    /// The CSIDriver object of its driver, when it has one.
    pub csi_driver: Option<CSIDriver>,
}

impl ClaimFacts {
    fn spec(&self) -> Option<&PersistentVolumeClaimSpec> {
        self.pvc
            .as_ref()
            .and_then(|p| p.spec.as_ref())
            .or(self.template.as_ref())
    }

    /// The CSI driver of the volume: the bound PV's, else the class's provisioner.
    pub fn driver(&self) -> Option<String> {
        if let Some(pv) = &self.pv {
            return pv
                .spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .map(|c| c.driver.clone());
        }
        self.class.as_ref().map(|c| c.provisioner.clone())
    }
}

/// The one hostname a list of `kubernetes.io/hostname` values pins to.
fn one_host<'a>(values: impl Iterator<Item = &'a String>) -> Option<String> {
    let v: BTreeSet<&String> = values.collect();
    (v.len() == 1)
        .then(|| v.into_iter().next().cloned())
        .flatten()
}

/// The node a StorageClass's allowedTopologies restricts its volumes to.
fn class_pinned(class: &StorageClass) -> Option<String> {
    one_host(
        class
            .allowed_topologies
            .iter()
            .flatten()
            .flat_map(|t| t.match_label_expressions.iter().flatten())
            .filter(|e| e.key == "kubernetes.io/hostname")
            .flat_map(|e| e.values.iter()),
    )
}

/// Whether a claim can follow the instance to another of its `owners` nodes.
pub fn judge_claim(fci: &FailoverClusterInstance, f: &ClaimFacts, owners: usize) -> Vec<Check> {
    let subject = format!("instance {} claim {}", fci.key(), f.claim);
    let mut out = Vec::new();
    if f.pvc.is_none() && !f.from_template {
        return vec![Check::fail(
            "storage",
            subject,
            "the PersistentVolumeClaim does not exist",
            "create it, or remove it from spec.storage.claims",
        )];
    }
    let spec = f.spec();
    let modes: Vec<String> = spec
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    let shared = modes
        .iter()
        .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany");
    let bound = f.pv.is_some();
    if let Some(name) = &f.class_name
        && f.class.is_none()
    {
        let (message, verdict) = if bound {
            (
                format!("StorageClass {name} does not exist (the volume is bound already)"),
                Verdict::Warn,
            )
        } else {
            (
                format!("StorageClass {name} does not exist: the claim cannot be provisioned"),
                Verdict::Fail,
            )
        };
        out.push(Check {
            verdict,
            ..Check::fail(
                "storage",
                subject.clone(),
                message,
                "create the StorageClass or change the claim's storageClassName",
            )
        });
    }
    let movable = owners > 1;
    let wffc = f
        .class
        .as_ref()
        .and_then(|c| c.volume_binding_mode.as_deref())
        == Some("WaitForFirstConsumer");
    if movable {
        if let Some(node) = f.pv.as_ref().and_then(pinned_node) {
            out.push(Check::fail(
                "storage",
                subject.clone(),
                format!(
                    "its volume {} is pinned to node {node} (PV nodeAffinity): it cannot follow \
                     the instance to its other {} possible owners",
                    f.pv.as_ref().map(|p| p.name_any()).unwrap_or_default(),
                    owners - 1
                ),
                format!(
                    "use storage every possible owner can attach, or make {node} the only \
                     possible owner"
                ),
            ));
        } else if let Some(pv) = f.pv.as_ref().and_then(|p| p.spec.as_ref())
            && (pv.local.is_some() || pv.host_path.is_some())
        {
            out.push(Check::fail(
                "storage",
                subject.clone(),
                "its volume is a node's local disk (local/hostPath): it cannot follow the \
                 instance to another node",
                "use network storage that every possible owner can attach",
            ));
        }
        if let Some(class) = &f.class {
            let name = class.name_any();
            if let Some(node) = class_pinned(class) {
                let binding = if wffc {
                    "; with volumeBindingMode WaitForFirstConsumer the claim waits for a pod, \
                     and a pod placed on any other owner stays Pending"
                } else {
                    ""
                };
                out.push(Check::fail(
                    "storage",
                    subject.clone(),
                    format!(
                        "StorageClass {name} provisions volumes on node {node} only \
                         (allowedTopologies){binding}: the claim cannot follow the instance"
                    ),
                    format!(
                        "use a class whose allowedTopologies cover every possible owner, or \
                         make {node} the only possible owner"
                    ),
                ));
            } else if class.provisioner == "kubernetes.io/no-provisioner" {
                out.push(Check::fail(
                    "storage",
                    subject.clone(),
                    format!(
                        "StorageClass {name} is for local volumes (kubernetes.io/no-provisioner): \
                         each is bound to one node"
                    ),
                    "use network storage that every possible owner can attach",
                ));
            }
        }
    }
    match (f.driver(), &f.csi_driver) {
        (Some(driver), Some(d)) if d.spec.attach_required == Some(false) => {
            let message = format!(
                "CSIDriver {driver} has attachRequired=false: no VolumeAttachment shows \
                 where the volume is attached, so a failover cannot wait for it to be \
                 detached from the failed node"
            );
            if shared {
                out.push(Check::warn(
                    "storage",
                    subject.clone(),
                    format!(
                        "{message} (a shared {} claim: safe if the storage is made for it)",
                        modes.join(",")
                    ),
                    "make sure two nodes may mount it at once",
                ));
            } else {
                out.push(Check::fail(
                    "storage",
                    subject.clone(),
                    message,
                    "use a driver that attaches (attachRequired: true), or shared storage with a ReadWriteMany claim",
                ));
            }
        }
        (Some(driver), None)
            if !driver.starts_with("kubernetes.io/")
                && !KNOWN_ATTACHING_DRIVERS.contains(&driver.as_str()) =>
        {
            out.push(Check::warn(
                "storage",
                subject.clone(),
                format!(
                    "no CSIDriver object for {driver}: Kubernetes then treats it as attaching, \
                     but a missing object usually means the driver is not installed"
                ),
                format!("install the CSI driver {driver}, or check its name"),
            ));
        }
        _ => {}
    }
    if out.is_empty() {
        let class = f
            .class_name
            .as_deref()
            .map(|c| format!("StorageClass {c}"))
            .unwrap_or_else(|| "no StorageClass".into());
        let driver = match (f.driver(), &f.csi_driver) {
            (Some(d), Some(_)) => format!(", CSI driver {d} attaches its volumes"),
            (Some(d), None) => format!(", driver {d}"),
            (None, _) => String::new(),
        };
        out.push(Check::pass(
            "storage",
            subject,
            format!("{class}{driver}; not bound to one node"),
        ));
    }
    out
}
