//! The recent history the watcher prints with a violation.

use super::*;

impl Checker {
    /// Records a line for the history (one per change of what is shown of an object).
    pub(super) fn remember(&mut self, obs: &Observation) {
        let entry = match &obs.what {
            Observed::Pod(c) => line("pod", c, show_pod),
            Observed::Slice(c) => line("endpointslice", c, show_slice),
            Observed::Attachment(c) => line("volumeattachment", c, show_attachment),
            Observed::Node(c) => line("node", c, show_node),
            // Renewals every second would drown the history; the last one of each node is
            // printed with it.
            Observed::Lease(_) => None,
            Observed::Instance(c) => line("fci", c, show_instance),
            Observed::Event(c) => line("event", c, show_event),
            Observed::Audit(r) => {
                let interesting = r.resource != "nodes" || r.stored_node_fenced.is_some();
                interesting.then(|| {
                    (
                        format!("audit {}", r.received),
                        format!(
                            "audit {} {} {}/{} by {} ({}) code={} grace={:?} uid={:?} fenced-after={:?} received={}",
                            r.verb,
                            r.resource,
                            r.namespace.clone().unwrap_or_default(),
                            r.name.clone().unwrap_or_default(),
                            r.user,
                            r.user_agent.clone().unwrap_or_default().split(' ').next().unwrap_or_default(),
                            r.code.unwrap_or(0),
                            r.grace_period,
                            r.precondition_uid,
                            r.stored_node_fenced,
                            r.received
                        ),
                    )
                })
            }
            Observed::FaultStarted(f) => {
                self.push_fault(obs.at, format!("FAULT {f}"));
                None
            }
            Observed::FaultEnded { id, detail } => {
                let what = self
                    .faults
                    .iter()
                    .find(|f| f.rec.id == *id)
                    .map(|f| {
                        format!(
                            "{} {}",
                            f.rec.kind.name(),
                            f.rec.node.clone().unwrap_or_default()
                        )
                    })
                    .unwrap_or_default();
                self.push_fault(obs.at, format!("HEALED #{id} {what} {detail}"));
                None
            }
            Observed::Copies(next) => {
                for text in self.copies_lines(next) {
                    self.push_line(obs.at, true, text);
                }
                None
            }
            Observed::External { invariant, message } => {
                Some((String::new(), format!("{invariant}: {message}")))
            }
            Observed::Note(n) => Some((String::new(), n.clone())),
        };
        let Some((key, text)) = entry else { return };
        if !key.is_empty() && self.last_line.get(&key) == Some(&text) {
            return;
        }
        if !key.is_empty() {
            self.last_line.insert(key, text.clone());
        }
        self.push_line(obs.at, obs.fresh, text);
    }

    pub(super) fn push_line(&mut self, at: Instant, fresh: bool, text: String) {
        let text = if fresh {
            text
        } else {
            format!("{text} [relisted/late]")
        };
        if self.echo {
            println!("  {:>+9.3} s  {text}", self.secs(at));
        }
        self.recent.push_back((at, text));
        while self.recent.len() > self.cfg.history {
            self.recent.pop_front();
        }
    }

    pub(super) fn push_fault(&mut self, at: Instant, text: String) {
        self.recent_faults.push_back((at, text));
        while self.recent_faults.len() > self.cfg.history {
            self.recent_faults.pop_front();
        }
    }

    /// The recent history: the last watcher events and faults, in time order, then the last
    /// Lease renewal the watcher saw of each node's kubelet and agent.
    pub fn history(&self) -> String {
        let mut all: Vec<&(Instant, String)> = self
            .recent
            .iter()
            .chain(self.recent_faults.iter())
            .collect();
        all.sort_by_key(|(t, _)| *t);
        let mut out = String::new();
        for (t, line) in all {
            let _ = writeln!(out, "  {:>+9.3} s  {line}", self.secs(*t));
        }
        let _ = writeln!(out, "  last Lease renewal seen (watcher's clock):");
        let kubelets = self
            .renewals
            .keys()
            .filter(|name| leases::agent_node(name).is_none());
        for node in kubelets {
            let at = |name: &str| {
                self.last_seen_renewal(name)
                    .map_or_else(|| "never".into(), |t| format!("{:+.3} s", self.secs(t)))
            };
            let agent = at(&kube_failover_core::api::agent_lease_name(node));
            let _ = writeln!(out, "    {node}: {}, its agent {agent}", at(node));
        }
        out
    }
}

/// The key and the history line of a change of one object, if it is shown.
fn line<K: Resource>(
    kind: &str,
    c: &Change<K>,
    show: impl Fn(&K) -> String,
) -> Option<(String, String)> {
    let key = |o: &K| {
        format!(
            "{kind} {}{}",
            o.meta()
                .namespace
                .as_ref()
                .map(|n| format!("{n}/"))
                .unwrap_or_default(),
            o.meta().name.clone().unwrap_or_default()
        )
    };
    match c {
        Change::Applied(o) | Change::Relisted(o) => {
            Some((key(o), format!("{} {}", key(o), show(o))))
        }
        Change::Deleted(o) => Some((key(o), format!("{} deleted", key(o)))),
        Change::Relist => Some((format!("{kind} relist"), format!("{kind} watch relisting"))),
        Change::RelistDone => None,
        Change::Error(e) => Some((format!("{kind} error"), format!("{kind} watch error: {e}"))),
    }
}

fn show_pod(p: &Pod) -> String {
    format!(
        "node={} phase={} ready={} deleting={}",
        pod_node(p).unwrap_or_default(),
        p.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .unwrap_or_default(),
        pod_ready(p),
        p.metadata.deletion_timestamp.is_some()
    )
}

fn show_slice(s: &EndpointSlice) -> String {
    let addrs: Vec<&String> = s
        .endpoints
        .iter()
        .flatten()
        .flat_map(|e| e.addresses.iter())
        .collect();
    format!("addresses={addrs:?}")
}

fn show_attachment(a: &VolumeAttachment) -> String {
    format!(
        "pv={} node={} attached={}",
        a.spec
            .source
            .persistent_volume_name
            .clone()
            .unwrap_or_default(),
        a.spec.node_name,
        a.status.as_ref().is_some_and(|s| s.attached)
    )
}

fn show_node(n: &Node) -> String {
    let taints: Vec<String> = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|ts| {
            ts.iter()
                .map(|t| t.key.trim_start_matches("node.kubernetes.io/").to_string())
                .collect()
        })
        .unwrap_or_default();
    let labels: Vec<String> = n
        .labels()
        .iter()
        .filter(|(k, _)| k.contains("member") || k.contains("alive"))
        .map(|(k, v)| format!("{}={v}", k.rsplit('/').next().unwrap_or(k)))
        .collect();
    format!(
        "ready={} taints={taints:?} unschedulable={} {}",
        node_ready(n),
        n.spec
            .as_ref()
            .and_then(|s| s.unschedulable)
            .unwrap_or(false),
        labels.join(",")
    )
}

fn show_instance(i: &FailoverClusterInstance) -> String {
    let s = i.status.clone().unwrap_or_default();
    let mv = s
        .current_move
        .as_ref()
        .map(|m| {
            format!(
                " move {}->{} planned={} ({}) fenced={} oldPodGone={} detached={} podCreated={}",
                m.from.clone().unwrap_or_default(),
                m.to.clone().unwrap_or_default(),
                m.planned,
                m.reason,
                m.fenced.is_some(),
                m.old_pod_gone.is_some(),
                m.volumes_detached.is_some(),
                m.pod_created.is_some()
            )
        })
        .unwrap_or_default();
    let cond = s
        .conditions
        .iter()
        .find(|c| c.type_ == "Online")
        .map(|c| c.reason.clone())
        .unwrap_or_default();
    format!(
        "phase={:?} owner={} endpoint={} online-reason={cond}{mv}",
        s.phase,
        s.owner_node.unwrap_or_default(),
        s.served.and_then(|v| v.endpoint).unwrap_or_default()
    )
}

fn show_event(e: &Event) -> String {
    format!(
        "{} {} x{}: {}",
        e.reason.clone().unwrap_or_default(),
        e.regarding
            .as_ref()
            .and_then(|r| r.name.clone())
            .unwrap_or_default(),
        e.series.as_ref().map(|s| s.count).unwrap_or(1),
        e.note.clone().unwrap_or_default()
    )
}
