//! Storage: whether each claim can follow its instance to another node.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    PersistentVolume, PersistentVolumeClaim, PersistentVolumeClaimSpec,
};
use k8s_openapi::api::storage::v1::{CSIDriver, StorageClass};
use kube::ResourceExt;

use super::{Check, Verdict};
use crate::api::FailoverClusterInstance;
use crate::rules::{describe_affinity, pinned_node, volume_reaches};

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
    if f.pvc.is_none() && !f.from_template {
        return vec![Check::fail(
            "storage",
            subject,
            "the PersistentVolumeClaim does not exist",
            "create it, or remove it from spec.storage.claims",
        )];
    }
    let mut out: Vec<Check> = missing_class(f, &subject).into_iter().collect();
    if owners > 1 {
        out.extend(volume_bound_to_a_node(f, &subject, owners));
        out.extend(class_bound_to_a_node(f, &subject));
    }
    out.extend(driver_cannot_show_attachments(f, &subject));
    if out.is_empty() {
        out.push(movable(f, subject));
    }
    out
}

/// The bound volume reaches only some of the possible owners (its node affinity names a
/// zone, say): the instance fails over among those alone, by the rule the controller
/// places by ([`volume_reaches`]). A volume pinned to one node is reported apart.
pub fn judge_claim_reach(
    fci: &FailoverClusterInstance,
    f: &ClaimFacts,
    owners: &[&k8s_openapi::api::core::v1::Node],
) -> Option<Check> {
    let pv = f.pv.as_ref()?;
    if owners.len() < 2 || pinned_node(pv).is_some() {
        return None;
    }
    let unreached: Vec<String> = owners
        .iter()
        .filter(|n| !volume_reaches(pv, &n.name_any(), n.labels()))
        .map(|n| n.name_any())
        .collect();
    if unreached.is_empty() {
        return None;
    }
    let subject = format!("instance {} claim {}", fci.key(), f.claim);
    let affinity = describe_affinity(pv);
    let reached = owners.len() - unreached.len();
    let names = unreached.join(", ");
    Some(if reached == 0 {
        Check::fail(
            "storage",
            subject,
            format!(
                "its volume {} reaches none of the possible owners (node affinity: \
                 {affinity}): the instance cannot run anywhere",
                pv.name_any()
            ),
            "use storage the possible owners can attach, or owners where it reaches",
        )
    } else {
        Check::warn(
            "storage",
            subject,
            format!(
                "its volume {} cannot be used on {names} (node affinity: {affinity}): the \
                 instance fails over only among the {reached} other possible owner(s)",
                pv.name_any()
            ),
            "use storage every possible owner can attach (replicated across zones), or \
             leave those nodes out of the possible owners",
        )
    })
}

/// The claim names a StorageClass that does not exist: it cannot be provisioned (a bound
/// one goes on working).
fn missing_class(f: &ClaimFacts, subject: &str) -> Option<Check> {
    let name = f.class_name.as_ref().filter(|_| f.class.is_none())?;
    let (message, verdict) = if f.pv.is_some() {
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
    Some(Check {
        verdict,
        ..Check::fail(
            "storage",
            subject,
            message,
            "create the StorageClass or change the claim's storageClassName",
        )
    })
}

/// The bound volume can only be reached from one node: pinned by its node affinity (the
/// rule the controller places by, [`pinned_node`]) or a node's local disk.
fn volume_bound_to_a_node(f: &ClaimFacts, subject: &str, owners: usize) -> Option<Check> {
    let pv = f.pv.as_ref()?;
    if let Some(node) = pinned_node(pv) {
        return Some(Check::fail(
            "storage",
            subject,
            format!(
                "its volume {} is pinned to node {node} (PV nodeAffinity): it cannot follow \
                 the instance to its other {} possible owners",
                pv.name_any(),
                owners - 1
            ),
            format!(
                "use storage every possible owner can attach, or make {node} the only \
                 possible owner"
            ),
        ));
    }
    let spec = pv.spec.as_ref()?;
    (spec.local.is_some() || spec.host_path.is_some()).then(|| {
        Check::fail(
            "storage",
            subject,
            "its volume is a node's local disk (local/hostPath): it cannot follow the \
             instance to another node",
            "use network storage that every possible owner can attach",
        )
    })
}

/// The StorageClass provisions on one node only: by its allowedTopologies, or because it is
/// for local volumes.
fn class_bound_to_a_node(f: &ClaimFacts, subject: &str) -> Option<Check> {
    let class = f.class.as_ref()?;
    let name = class.name_any();
    if let Some(node) = class_pinned(class) {
        let wffc = class.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
        let binding = if wffc {
            "; with volumeBindingMode WaitForFirstConsumer the claim waits for a pod, \
             and a pod placed on any other owner stays Pending"
        } else {
            ""
        };
        return Some(Check::fail(
            "storage",
            subject,
            format!(
                "StorageClass {name} provisions volumes on node {node} only \
                 (allowedTopologies){binding}: the claim cannot follow the instance"
            ),
            format!(
                "use a class whose allowedTopologies cover every possible owner, or \
                 make {node} the only possible owner"
            ),
        ));
    }
    (class.provisioner == "kubernetes.io/no-provisioner").then(|| {
        Check::fail(
            "storage",
            subject,
            format!(
                "StorageClass {name} is for local volumes (kubernetes.io/no-provisioner): \
                 each is bound to one node"
            ),
            "use network storage that every possible owner can attach",
        )
    })
}

/// The volume's driver shows no VolumeAttachment (attachRequired=false), or seems not to be
/// installed: a failover could not wait for the volume to leave the failed node.
fn driver_cannot_show_attachments(f: &ClaimFacts, subject: &str) -> Option<Check> {
    let modes: Vec<String> = f
        .spec()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    let shared = modes
        .iter()
        .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany");
    match (f.driver(), &f.csi_driver) {
        (Some(driver), Some(d)) if d.spec.attach_required == Some(false) => {
            let message = format!(
                "CSIDriver {driver} has attachRequired=false: no VolumeAttachment shows \
                 where the volume is attached, so a failover cannot wait for it to be \
                 detached from the failed node"
            );
            Some(if shared {
                Check::warn(
                    "storage",
                    subject,
                    format!(
                        "{message} (a shared {} claim: safe if the storage is made for it)",
                        modes.join(",")
                    ),
                    "make sure two nodes may mount it at once",
                )
            } else {
                Check::fail(
                    "storage",
                    subject,
                    message,
                    "use a driver that attaches (attachRequired: true), or shared storage with a ReadWriteMany claim",
                )
            })
        }
        (Some(driver), None)
            if !driver.starts_with("kubernetes.io/")
                && !KNOWN_ATTACHING_DRIVERS.contains(&driver.as_str()) =>
        {
            Some(Check::warn(
                "storage",
                subject,
                format!(
                    "no CSIDriver object for {driver}: Kubernetes then treats it as attaching, \
                     but a missing object usually means the driver is not installed"
                ),
                format!("install the CSI driver {driver}, or check its name"),
            ))
        }
        _ => None,
    }
}

/// Nothing keeps the claim on one node: what it is made of.
fn movable(f: &ClaimFacts, subject: String) -> Check {
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
    Check::pass(
        "storage",
        subject,
        format!("{class}{driver}; not bound to one node"),
    )
}
