//! What `decide` is told of an instance's pods and storage, made from the API's objects by
//! whoever looked them up: the controller from its caches, `kubectl failover simulate` from
//! lists it read. One function each, so that both see the same.

use std::collections::BTreeMap;
use std::ops::Deref;

use k8s_openapi::api::core::v1::{Node, PersistentVolumeClaim};
use kube::ResourceExt;

use super::{AttachmentFacts, Observed, PodFacts};
use crate::api::{FailoverClusterInstance, InstanceClaim};
use crate::kinds::{AttachmentView, PodView, VolumeView};
use crate::rules::{describe_affinity, pinned_node, volume_reaches};

/// A pod as `decide` sees it (as the API gives it or as cached: `kinds`).
pub fn pod_facts<P: PodView + ?Sized>(pod: &P) -> PodFacts {
    let meta = pod.meta();
    PodFacts {
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        restarts: pod.restarts(),
        node: pod.node_name().map(String::from),
        ready: pod.ready(),
        ip: pod.pod_ip().map(String::from),
        terminating: meta.deletion_timestamp.is_some(),
        failed: pod.phase() == Some("Failed"),
    }
}

/// The instance's claims (missing ones, ones pinned to a node, members their volumes
/// cannot reach) and the attachments of their volumes, into `obs` (whose `members` are
/// already known). `claim` looks a claim up in the instance's namespace, `volume` a
/// PersistentVolume, `node` a Node; `attachments` gives the VolumeAttachments of a
/// PersistentVolume (each as the API gives it or as cached: `kinds`).
pub fn observe_storage<C, V, N, A>(
    obs: &mut Observed,
    fci: &FailoverClusterInstance,
    claim: impl Fn(&str) -> Option<C>,
    volume: impl Fn(&str) -> Option<V>,
    node: impl Fn(&str) -> Option<N>,
    attachments: impl Fn(&str) -> Vec<A>,
) where
    C: Deref<Target = PersistentVolumeClaim>,
    V: Deref<Target: VolumeView>,
    N: Deref<Target = Node>,
    A: Deref<Target: AttachmentView>,
{
    // Volume name → whether several nodes may use it at once.
    let mut volumes: std::collections::BTreeMap<String, bool> = Default::default();
    for InstanceClaim {
        claim: name,
        from_template,
        ..
    } in fci.claims()
    {
        let Some(pvc) = claim(&name) else {
            // Claims made from templates are created by the controller as it goes.
            if !from_template {
                obs.missing_claims.push(name);
            }
            continue;
        };
        let Some(volume_name) = pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) else {
            continue;
        };
        let pv = volume(&volume_name);
        if let Some(pv) = pv.as_deref() {
            for member in obs.members.keys() {
                let reaches = node(member).is_some_and(|n| volume_reaches(pv, member, n.labels()));
                if !reaches && !obs.unreachable.contains_key(member) {
                    obs.unreachable.insert(
                        member.clone(),
                        format!(
                            "the volume of claim {name} cannot be used there (its node affinity: {})",
                            describe_affinity(pv)
                        ),
                    );
                }
            }
        }
        if let Some(pinned) = pv.as_deref().and_then(pinned_node) {
            obs.pinned_claims.insert(name, pinned);
        }
        let modes = pv
            .as_deref()
            .map(|pv| pv.access_modes())
            .unwrap_or_default();
        let shared = modes
            .iter()
            .any(|m| m == "ReadWriteMany" || m == "ReadOnlyMany");
        volumes.insert(volume_name, shared);
    }
    obs.attachments = volumes
        .keys()
        .flat_map(|v| attachments(v))
        .filter_map(|a| {
            let meta = a.meta();
            Some(AttachmentFacts {
                name: meta.name.clone().unwrap_or_default(),
                uid: meta.uid.clone().unwrap_or_default(),
                node: a.node_name().to_string(),
                shared: *volumes.get(a.volume_name()?)?,
                terminating: meta.deletion_timestamp.is_some(),
            })
        })
        .collect();
}

/// What an operator asked for through the instance's annotations.
pub fn requests(annotations: &BTreeMap<String, String>) -> super::Requests {
    super::Requests {
        offline: annotations
            .get(crate::api::OFFLINE_ANNOTATION)
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("true")),
        start: annotations
            .get(crate::api::START_ANNOTATION)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty()),
        moves: annotations
            .get(crate::api::MOVE_ANNOTATION)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
            .map(|id| {
                let to = annotations
                    .get(crate::api::MOVE_TO_ANNOTATION)
                    .map(|v| v.trim().to_string())
                    .filter(|v| !v.is_empty());
                (id, to)
            }),
    }
}

/// What keeps `fci` from starting among the instances it depends on (`spec.dependsOn`, in
/// its namespace, which `get` looks up by name): a cycle back to it, else those not Online;
/// `None` when none does.
pub fn dependencies_pending<R>(
    fci: &FailoverClusterInstance,
    get: impl Fn(&str) -> Option<R>,
) -> Option<super::Dependencies>
where
    R: Deref<Target = FailoverClusterInstance>,
{
    use crate::api::Phase;
    use crate::decide::Dependencies;
    if fci.spec.depends_on.is_empty() {
        return None;
    }
    let me = fci.name_any();
    let depends_on = |name: &str| {
        if name == me {
            return fci.spec.depends_on.clone();
        }
        get(name)
            .map(|i| i.spec.depends_on.clone())
            .unwrap_or_default()
    };
    if let Some(path) = crate::rules::dependency_cycle(&me, depends_on) {
        return Some(Dependencies::Cycle(path));
    }
    let waiting: Vec<(String, String)> = fci
        .spec
        .depends_on
        .iter()
        .filter_map(|d| {
            let Some(i) = get(d) else {
                return Some((d.clone(), "no such instance".to_string()));
            };
            let status = i.status.as_ref();
            let online =
                status.is_some_and(|s| s.phase == Phase::Online && s.current_move.is_none());
            (!online).then(|| {
                let what =
                    status.map_or("not placed yet".to_string(), |s| format!("{:?}", s.phase));
                (d.clone(), what)
            })
        })
        .collect();
    (!waiting.is_empty()).then_some(Dependencies::Waiting(waiting))
}
