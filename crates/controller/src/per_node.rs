//! One lock per node, for what must not run twice at once for the same node (its fence,
//! a fresh read of it), holding what the last run learned.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The slot of one node: its lock and what the last holder left in it.
pub type Slot<T> = Arc<tokio::sync::Mutex<Option<T>>>;

/// A slot per node, kept while the node exists or someone holds or waits on its slot: a
/// cluster whose nodes come and go (an autoscaler's) keeps one per node it has, not one per
/// node it ever had.
pub struct PerNode<T>(Mutex<HashMap<String, Slot<T>>>);

impl<T> Default for PerNode<T> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<T> PerNode<T> {
    /// The slot of `node`. A node without one first drops the slots of nodes that no longer
    /// exist (`exists` says) and that no one holds: what such a slot remembers (a taint
    /// written, a read's answer) says nothing of a node of the same name made later that a
    /// fresh run would not find out again.
    pub fn slot(&self, node: &str, exists: impl Fn(&str) -> bool) -> Slot<T> {
        let mut slots = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(slot) = slots.get(node) {
            return slot.clone();
        }
        slots.retain(|name, slot| Arc::strong_count(slot) > 1 || exists(name));
        slots.entry(node.to_string()).or_default().clone()
    }

    /// How many nodes have a slot.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_gone_node_loses_its_slot_once_no_one_holds_it_and_a_live_one_keeps_it() {
        let slots: PerNode<u32> = PerNode::default();
        let live = |n: &str| n.starts_with("live");
        *slots.slot("live-1", live).lock().await = Some(1);
        let held = slots.slot("gone-1", live);
        *held.lock().await = Some(2);
        *slots.slot("gone-2", live).lock().await = Some(3);
        assert_eq!(slots.len(), 3, "gone-1 is held: kept");
        // A new node sweeps: gone-2 is let go and dropped, gone-1 held, live-1 exists.
        let _ = slots.slot("live-2", live);
        assert_eq!(slots.len(), 3);
        // The slot is handed out while kept: the holder and a newcomer share it.
        assert_eq!(*slots.slot("gone-1", live).lock().await, Some(2));
        drop(held);
        let _ = slots.slot("live-3", live);
        assert_eq!(
            slots.len(),
            3,
            "gone-1 dropped once let go: live-1, 2 and 3 left"
        );
        assert_eq!(*slots.slot("live-1", live).lock().await, Some(1));
        // A gone node asked for again starts afresh.
        assert_eq!(*slots.slot("gone-2", live).lock().await, None);
    }
}
