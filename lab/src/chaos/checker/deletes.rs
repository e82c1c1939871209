//! Invariant on deletes, judged from the audit log: no force delete on a node not fenced.

use super::*;

impl Checker {
    /// Invariant 4, from the audit log: no force delete of a pod and no VolumeAttachment
    /// delete by the controller on a node that was not fenced when the API server received
    /// it.
    pub(super) fn on_audit(&mut self, r: AuditRecord, at: Instant) {
        self.tally.audit_lines += 1;
        if !r.succeeded() || r.subresource.is_some() {
            return;
        }
        match (r.resource.as_str(), r.verb.as_str()) {
            ("nodes", "delete") => {
                if let Some(name) = r.name {
                    self.audited_node_deleted.insert(name, r.received);
                }
            }
            ("nodes", _) => {
                if let (Some(name), Some(fenced)) = (r.name, r.stored_node_fenced) {
                    let writes = self.audited_fencing.entry(name).or_default();
                    writes.push((r.received, fenced));
                    writes.sort_by_key(|(t, _)| *t);
                }
            }
            ("pods", "delete") if r.user == self.cfg.controller_user => {
                if r.grace_period != Some(0) {
                    return;
                }
                let key = format!(
                    "{}/{}",
                    r.namespace.clone().unwrap_or_default(),
                    r.name.clone().unwrap_or_default()
                );
                let node = r
                    .precondition_uid
                    .as_ref()
                    .and_then(|u| self.pod_node_by_uid.get(u))
                    .or_else(|| self.pod_node_by_name.get(&key))
                    .cloned();
                self.tally.audited_force_pod_deletes += 1;
                self.pending.push(PendingDelete {
                    what: format!("force delete (grace 0) of pod {key}"),
                    node,
                    received: r.received,
                    at,
                });
            }
            ("volumeattachments", "delete") if r.user == self.cfg.controller_user => {
                let name = r.name.clone().unwrap_or_default();
                self.tally.audited_attachment_deletes += 1;
                self.pending.push(PendingDelete {
                    what: format!("delete of VolumeAttachment {name}"),
                    node: self.attachment_node.get(&name).cloned(),
                    received: r.received,
                    at,
                });
            }
            _ => {}
        }
    }

    /// Whether the audit log shows `node` fenced (tainted, or deleted) at `t`.
    pub(super) fn fenced_at(&self, node: &str, t: jiff::Timestamp) -> bool {
        if self.audited_node_deleted.get(node).is_some_and(|d| *d <= t) {
            return true;
        }
        self.audited_fencing
            .get(node)
            .and_then(|writes| writes.iter().rev().find(|(w, _)| *w <= t))
            .is_some_and(|(_, fenced)| *fenced)
    }

    pub(super) fn judge_settled_deletes(&mut self, wall: jiff::Timestamp) {
        let settle = jiff::SignedDuration::try_from(self.cfg.audit_settle).unwrap_or_default();
        let (due, later): (Vec<PendingDelete>, Vec<PendingDelete>) = self
            .pending
            .drain(..)
            .partition(|d| d.received.checked_add(settle).is_ok_and(|t| t <= wall));
        self.pending = later;
        for d in due {
            match &d.node {
                None => self.tally.unverified_deletes += 1,
                Some(node) if !self.fenced_at(node, d.received) => {
                    let msg = format!(
                        "{} on node {node} by {}, received {}: the audit log shows {node} not tainted out of service then (its Node writes: {:?})",
                        d.what,
                        self.cfg.controller_user,
                        d.received,
                        self.audited_fencing
                            .get(node.as_str())
                            .cloned()
                            .unwrap_or_default()
                    );
                    self.violate(d.at, "a force delete on a node not fenced", msg);
                }
                Some(_) => {}
            }
        }
    }
}
