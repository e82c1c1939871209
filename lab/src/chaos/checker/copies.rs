//! Invariant 1 where it matters: never two copies of an instance's workload running, counted
//! at the container runtimes of the nodes (containers, not pod objects: a node whose
//! kubelet died or that was cut off runs its containers on whatever the API says). And what
//! makes the out-of-service taint safe: a node is tainted only once the instance containers
//! there are stopped, or gone with its power.

use super::*;

impl Checker {
    /// Judges the running copies of every instance, as the runtimes reported them.
    pub(super) fn check_copies(&mut self, copies: Copies, at: Instant) {
        self.tally.copy_checks += 1;
        let most = copies.values().map(Vec::len).max().unwrap_or(0);
        self.tally.most_copies_at_once = self.tally.most_copies_at_once.max(most);
        let found: Vec<(String, String)> = copies
            .iter()
            .filter(|(_, running)| running.len() > 1)
            .map(|(instance, running)| {
                let sandboxes: Vec<&str> = running.iter().map(|c| c.sandbox.as_str()).collect();
                let desc: Vec<String> = running.iter().map(|c| self.describe_copy(c)).collect();
                (
                    format!("copies {instance} {sandboxes:?}"),
                    format!(
                        "instance {instance} runs {} copies at the container runtimes: {}",
                        running.len(),
                        desc.join("; ")
                    ),
                )
            })
            .collect();
        self.copies = copies;
        for (key, msg) in found {
            self.violate_once(key, at, "two copies of an instance running", msg);
        }
    }

    /// The sandboxes of instance pods running on `node` now, as last reported.
    pub(super) fn sandboxes_running_on(&self, node: Option<&str>) -> BTreeSet<String> {
        self.copies
            .values()
            .flatten()
            .filter(|c| Some(c.node.as_str()) == node)
            .map(|c| c.sandbox.clone())
            .collect()
    }

    /// No out-of-service taint on a node while instance containers run there. Judged only
    /// for the containers that have run there since before a fault that silenced its
    /// kubelet, a fault not healed yet: nothing can have started them again in between, so
    /// running when the watcher sees the taint, they ran when it was written.
    pub(super) fn check_fenced_copies(&mut self, node: &str, at: Instant) {
        let now = self.sandboxes_running_on(Some(node));
        let still: BTreeSet<&String> = self
            .faults
            .iter()
            .filter(|f| f.end.is_none() && f.rec.kind.silences_kubelet())
            .filter(|f| f.rec.node.as_deref() == Some(node))
            .flat_map(|f| f.running_at_start.intersection(&now))
            .collect();
        if still.is_empty() {
            return;
        }
        let desc: Vec<String> = self
            .copies
            .values()
            .flatten()
            .filter(|c| still.contains(&c.sandbox))
            .map(ToString::to_string)
            .collect();
        let msg = format!(
            "node {node} got the out-of-service taint while instance containers it ran before its kubelet went silent still run there: {}",
            desc.join("; ")
        );
        self.violate(at, "a node fenced with instance containers running", msg);
    }

    /// A running copy, and what the watcher knows of its node and pod.
    fn describe_copy(&self, c: &crate::simruntime::RunningCopy) -> String {
        let pod = self.pods.live.get(&c.pod);
        let pod_state = match pod {
            Some(p) if p.uid().as_deref() == Some(c.uid.as_str()) => {
                format!("pod deleting: {}", p.metadata.deletion_timestamp.is_some())
            }
            Some(_) => "its pod replaced by another of the same name".into(),
            None => "its pod gone from the API".into(),
        };
        let faults: Vec<String> = self
            .faults
            .iter()
            .filter(|f| f.end.is_none() && f.rec.node.as_deref() == Some(c.node.as_str()))
            .map(|f| f.rec.kind.name().to_string())
            .collect();
        format!(
            "{c} ({pod_state}; node fenced: {}; faults on the node now: {faults:?})",
            self.fenced.contains(&c.node)
        )
    }

    /// History lines for the instances whose running copies differ in `next` from the last
    /// seen.
    pub(super) fn copies_lines(&self, next: &Copies) -> Vec<String> {
        let instances: BTreeSet<&String> = self.copies.keys().chain(next.keys()).collect();
        instances
            .into_iter()
            .filter(|i| self.copies.get(*i) != next.get(*i))
            .map(|i| {
                let running: Vec<String> = next
                    .get(i)
                    .into_iter()
                    .flatten()
                    .map(|c| format!("{} on {}", c.pod, c.node))
                    .collect();
                if running.is_empty() {
                    format!("runtime {i}: no copy running")
                } else {
                    format!("runtime {i}: running {}", running.join(", "))
                }
            })
            .collect()
    }
}
