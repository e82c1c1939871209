//! Invariants on what the API server stores now: one pod, one endpoint and one
//! attachment per instance, and no live node fenced.

use super::*;

impl Checker {
    /// Invariant 1: never two pods of one instance on two different nodes, unless one of
    /// those nodes is fenced (out-of-service taint, or the Node gone) and that pod is being
    /// removed.
    pub(super) fn check_pods(&mut self, at: Instant) {
        let mut by_instance: BTreeMap<String, Vec<&Pod>> = BTreeMap::new();
        for p in self.pods.live.values() {
            let terminal = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .is_some_and(|ph| ph == "Succeeded" || ph == "Failed");
            if terminal || pod_node(p).is_none() {
                continue;
            }
            if let Some(inst) = p.labels().get(INSTANCE_LABEL) {
                let ns = p.namespace().unwrap_or_default();
                by_instance
                    .entry(format!("{ns}/{inst}"))
                    .or_default()
                    .push(p);
            }
        }
        let mut found = Vec::new();
        for (inst, pods) in by_instance {
            let nodes: BTreeSet<String> = pods.iter().filter_map(|p| pod_node(p)).collect();
            if nodes.len() < 2 {
                continue;
            }
            let excused = |p: &Pod| {
                let node = pod_node(p).unwrap_or_default();
                let fenced = self.fenced.contains(&node) || !self.nodes.live.contains_key(&node);
                fenced && p.metadata.deletion_timestamp.is_some()
            };
            let live_nodes: BTreeSet<String> = pods
                .iter()
                .filter(|p| !excused(p))
                .filter_map(|p| pod_node(p))
                .collect();
            if live_nodes.len() >= 2 {
                let desc: Vec<String> = pods
                    .iter()
                    .map(|p| {
                        let node = pod_node(p).unwrap_or_default();
                        format!(
                            "{} on {node} (node fenced: {}, deleting: {}, ready: {})",
                            p.name_any(),
                            self.fenced.contains(&node),
                            p.metadata.deletion_timestamp.is_some(),
                            pod_ready(p)
                        )
                    })
                    .collect();
                let key = format!(
                    "pods {inst} {:?}",
                    pods.iter().map(|p| p.name_any()).collect::<Vec<_>>()
                );
                found.push((
                    key,
                    format!(
                        "instance {inst} has pods on {} nodes, not fenced and removed: {}",
                        live_nodes.len(),
                        desc.join("; ")
                    ),
                ));
            }
        }
        for (key, msg) in found {
            self.violate_once(key, at, "two pods of one instance on two nodes", msg);
        }
    }

    /// Invariant 2: an instance's EndpointSlice never lists two addresses.
    pub(super) fn check_slices(&mut self, at: Instant) {
        let mut by_service: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for s in self.slices.live.values() {
            let Some(svc) = s.labels().get("kubernetes.io/service-name") else {
                continue;
            };
            let ns = s.namespace().unwrap_or_default();
            let addrs = by_service.entry(format!("{ns}/{svc}")).or_default();
            for e in s.endpoints.iter().flatten() {
                addrs.extend(e.addresses.iter().cloned());
            }
        }
        let found: Vec<(String, BTreeSet<String>)> = by_service
            .into_iter()
            .filter(|(_, a)| a.len() > 1)
            .collect();
        for (svc, addrs) in found {
            self.violate_once(
                format!("slice {svc} {addrs:?}"),
                at,
                "an EndpointSlice lists two addresses",
                format!("the EndpointSlices of {svc} list {addrs:?}"),
            );
        }
    }

    /// Invariant 3: no ReadWriteOnce volume attached to two nodes.
    pub(super) fn check_attachments(&mut self, at: Instant) {
        let mut by_volume: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for a in self.attachments.live.values() {
            let attached = a.status.as_ref().is_some_and(|s| s.attached);
            if let (true, Some(pv)) = (attached, a.spec.source.persistent_volume_name.as_ref()) {
                by_volume
                    .entry(pv.clone())
                    .or_default()
                    .insert(a.spec.node_name.clone());
            }
        }
        let found: Vec<(String, BTreeSet<String>)> =
            by_volume.into_iter().filter(|(_, n)| n.len() > 1).collect();
        for (pv, nodes) in found {
            self.violate_once(
                format!("va {pv} {nodes:?}"),
                at,
                "a ReadWriteOnce volume attached to two nodes",
                format!("volume {pv} is attached (attached=true) to {nodes:?}"),
            );
        }
    }

    /// Keeps the Nodes and which carry the out-of-service taint; a taint seen added as it
    /// happened is judged once the watches settled (invariant 5, `taints`).
    pub(super) fn on_node(
        &mut self,
        c: Change<Node>,
        at: Instant,
        wall: jiff::Timestamp,
        fresh: bool,
    ) {
        self.nodes.apply(&c);
        let now_fenced: BTreeSet<String> = self
            .nodes
            .live
            .values()
            .filter(|n| node_fenced(n))
            .map(|n| n.name_any())
            .collect();
        if let Change::Applied(n) = &c {
            let name = n.name_any();
            if node_fenced(n) && !self.fenced.contains(&name) {
                self.tally.taints_seen += 1;
                self.check_fenced_copies(&name, at);
                // Only as it happened: the version is then the write that added it.
                if fresh {
                    self.note_taint(&name, leases::resource_version(n), at, wall);
                }
            }
        }
        self.fenced = now_fenced;
        self.check_pods(at);
    }
}
