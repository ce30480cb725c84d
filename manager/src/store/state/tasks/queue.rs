//! The order the scheduler and the allocator serve waiting tasks in: oldest first, then by
//! slot, so a service's replicas fill in order; the ID breaks ties. Kept in the index itself,
//! so that a round takes the first few thousand of a hundred thousand waiting tasks without
//! collecting and sorting them all (every scheduler round did, while 100,000 tasks were
//! placed).

use std::collections::BTreeSet;

use shoal_proto::Task;

/// What orders a task in a [`Queue`] besides its ID. Neither changes over a task's life, but
/// a change is followed all the same.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Stamp {
    created_ms: i64,
    slot: u64,
}

impl Stamp {
    pub(super) fn of(t: &Task) -> Self {
        Stamp {
            created_ms: t.meta.as_ref().map_or(0, |m| m.created_at_ms),
            slot: t.slot,
        }
    }

    fn key(self, id: &str) -> (i64, u64, String) {
        (self.created_ms, self.slot, id.to_string())
    }
}

#[derive(Debug, Default, Clone)]
pub struct Queue(BTreeSet<(i64, u64, String)>);

impl Queue {
    pub(super) fn insert(&mut self, id: &str, stamp: Stamp) {
        self.0.insert(stamp.key(id));
    }

    pub(super) fn remove(&mut self, id: &str, stamp: Stamp) {
        self.0.remove(&stamp.key(id));
    }

    /// Keeps task `id` queued while it matches the queue's predicate: `was` (stamped
    /// `before`) before a change, `is` (stamped `after`) after it.
    pub(super) fn follow(&mut self, id: &str, before: Stamp, after: Stamp, was: bool, is: bool) {
        let moved = before != after;
        if was && (!is || moved) {
            self.remove(id, before);
        }
        if is && (!was || moved) {
            self.insert(id, after);
        }
    }

    /// The queued task IDs, in the order they are served.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|(_, _, id)| id.as_str())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}
