//! Invariant on moves: each one justified by a fault of the right kind on the node it
//! leaves.

use super::*;

/// The node an Event's note says a move leaves (the controller's wording; used for new
/// Events only: a repeated Event keeps the note of its first occurrence).
pub(super) fn move_source_in_note(note: &str) -> Option<String> {
    let word = |rest: &str| rest.split_whitespace().next().map(str::to_string);
    if let Some(rest) = note.strip_prefix("owner ") {
        return word(rest);
    }
    if let Some(rest) = note.strip_prefix("moving from ") {
        return word(rest);
    }
    if note.contains(" went silent") {
        return word(note);
    }
    None
}

impl Checker {
    pub(super) fn on_instance(&mut self, i: &FailoverClusterInstance, at: Instant) {
        let key = Mirror::key(i);
        let Some(s) = i.status.as_ref() else { return };
        if instance_online(i)
            && let Some(owner) = &s.owner_node
        {
            self.online_on.insert((key.clone(), owner.clone()), at);
        }
        if let Some(m) = &s.current_move {
            if let Some(to) = &m.to {
                let seen = (key.clone(), m.started.0.to_string(), m.planned);
                if !self.moves_checked.contains(&seen) {
                    self.move_to_seen.insert((key.clone(), to.clone()), at);
                }
            }
            self.check_move(&key, m, at);
        }
        for m in &s.history {
            self.check_move(&key, m, at);
            if self
                .moves_counted
                .insert((key.clone(), m.started.0.to_string()))
            {
                if m.reason.to_lowercase().contains("abandoned") {
                    self.tally.abandoned += 1;
                } else if m.from.is_none() {
                    self.tally.placements += 1;
                } else if m.planned {
                    self.tally.planned_moves += 1;
                } else {
                    self.tally.failovers += 1;
                }
            }
        }
    }

    /// Invariants 6 and 7: a move off a node starts only for a fault of that node.
    pub(super) fn check_move(&mut self, instance: &str, m: &Move, at: Instant) {
        let Some(from) = &m.from else { return };
        if !self
            .moves_checked
            .insert((instance.to_string(), m.started.0.to_string(), m.planned))
        {
            return;
        }
        self.tally.move_starts_checked += 1;
        if let Err(msg) = self.justified(instance, from, m.planned, at) {
            let what = if m.planned {
                "planned move"
            } else {
                "failover"
            };
            if !self.flag_move(instance, from) {
                return;
            }
            let msg = format!(
                "instance {instance}: {what} from {from} (reason {:?}, started {}) {msg}",
                m.reason, m.started.0
            );
            self.violate(at, "a move without a node fault", msg);
        }
    }

    /// Since when a move of `instance` off `from` needs a reason: when it was last seen
    /// online there, or else when a move to there was first seen, or else the start.
    pub(super) fn window(&self, instance: &str, from: &str) -> (Instant, &'static str) {
        let key = (instance.to_string(), from.to_string());
        match (self.online_on.get(&key), self.move_to_seen.get(&key)) {
            (Some(t), _) => (*t, "it was last seen online there"),
            (None, Some(t)) => (*t, "a move to it was first seen"),
            (None, None) => (self.start, "the start of the run"),
        }
    }

    /// Marks the move of `instance` off `from` reported; false if it already was.
    pub(super) fn flag_move(&mut self, instance: &str, from: &str) -> bool {
        let since = self.window(instance, from).0;
        self.flagged_moves.insert((
            instance.to_string(),
            from.to_string(),
            since.saturating_duration_since(self.start).as_millis(),
        ))
    }

    pub(super) fn justified(
        &self,
        instance: &str,
        from: &str,
        planned: bool,
        at: Instant,
    ) -> Result<(), String> {
        let (since, since_what) = self.window(instance, from);
        let window_start = since.checked_sub(self.cfg.slack).unwrap_or(self.start);
        let ok = self.faults.iter().any(|f| {
            f.rec.node.as_deref() == Some(from)
                && f.rec.kind.justifies(planned)
                && f.start <= at
                && f.end.is_none_or(|e| e >= window_start)
        });
        if ok {
            return Ok(());
        }
        let on_node: Vec<String> = self
            .faults
            .iter()
            .filter(|f| f.rec.node.as_deref() == Some(from))
            .map(|f| {
                format!(
                    "{} {:+.1}..{}",
                    f.rec.kind.name(),
                    self.secs(f.start),
                    f.end
                        .map(|e| format!("{:+.1}", self.secs(e)))
                        .unwrap_or_else(|| "now".into())
                )
            })
            .collect();
        let needed = if planned {
            "a kill, NotReady, relabel or cordon"
        } else {
            "a kill, a dead kubelet or a cut-off (heartbeats stopped)"
        };
        Err(format!(
            "seen at {:+.1} s, but {from} had no fault that justifies it ({needed}) since {since_what} ({:+.1} s); faults injected on {from}: {on_node:?}",
            self.secs(at),
            self.secs(since)
        ))
    }

    pub(super) fn on_event(&mut self, e: &Event, at: Instant) {
        let Some(why) = e.reason.clone() else { return };
        let uid = e.uid().unwrap_or_else(|| Mirror::key(e));
        let count = e.series.as_ref().map(|s| s.count).unwrap_or(1);
        let before = self.event_counts.get(&uid).copied().unwrap_or(0);
        if count <= before {
            return;
        }
        self.event_counts.insert(uid, count);
        *self.tally.events.entry(why.clone()).or_default() +=
            usize::try_from(count - before).unwrap_or(0);
        let planned = match why.as_str() {
            reason::FAILOVER_STARTED => false,
            reason::PLANNED_MOVE => true,
            _ => return,
        };
        if before > 0 {
            // A repeat: its note is the first occurrence's; the move it announces is
            // judged from the instance's status (`check_move`).
            return;
        }
        let Some(regarding) = e.regarding.as_ref() else {
            return;
        };
        let instance = format!(
            "{}/{}",
            regarding.namespace.clone().unwrap_or_default(),
            regarding.name.clone().unwrap_or_default()
        );
        let note = e.note.clone().unwrap_or_default();
        let Some(from) = move_source_in_note(&note) else {
            self.violate(
                at,
                "a move without a node fault",
                format!("{why} Event on {instance} names no node: {note:?}"),
            );
            return;
        };
        if let Err(msg) = self.justified(&instance, &from, planned, at) {
            if !self.flag_move(&instance, &from) {
                return;
            }
            self.violate(
                at,
                "a move without a node fault",
                format!("{why} Event on {instance} ({note:?}) {msg}"),
            );
        }
    }
}
