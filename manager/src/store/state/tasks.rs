//! The store's tasks and the indexes the writer roles read instead of walking every task.
//!
//! With a hundred thousand tasks, a role round that reads every task (the orchestrator grouping
//! them by service, the scheduler and the allocator looking for the few not placed yet, the
//! scheduler counting what every node runs) costs tens of milliseconds, and the roles ran such
//! rounds back to back while tasks started. [`Tasks`] keeps, next to the tasks by ID:
//!
//! * the task IDs of each service (the orchestrator plans one service from its own tasks);
//! * the tasks not placed yet and still wanted (the scheduler's work list), and among them
//!   those still waiting for their network addresses (the allocator's);
//! * what the tasks placed on each node occupy there, as the scheduler counts it;
//! * how many tasks of each service run and are meant to (`service ls`'s REPLICAS).
//!
//! Every change goes through [`Tasks::insert`], [`Tasks::remove`] or [`Tasks::modify`], which
//! update the indexes by the difference the change made; reads go through the map's read
//! methods only, so the indexes cannot drift from the tasks.
//!
//! The map holds each task boxed: a `Task` is ~1.3 KB inline (its container spec is not
//! boxed by prost), so a map of a hundred thousand of them held ~170 MB of buckets, a good part
//! of them empty, and every growth of the map moved every task (~75 MB at the last one). Boxed,
//! a bucket is a pointer and a growth moves pointers.

use std::collections::BTreeSet;

use shoal_proto::{Task, TaskState};

pub use queue::Queue;
use queue::Stamp;

use crate::ids::IdMap;

mod queue;

#[derive(Debug, Default, Clone)]
pub struct Tasks {
    map: IdMap<Box<Task>>,
    by_service: IdMap<BTreeSet<String>>,
    unplaced: Queue,
    unallocated: Queue,
    occupancy: Occupancy,
    running: IdMap<u64>,
}

/// What the tasks placed on each node occupy there ([`occupies`]): how many, per node and per
/// service, and which of them reserve resources or publish ports (the scheduler reads those
/// whole; the others only count).
#[derive(Debug, Default, Clone)]
pub struct Occupancy {
    per_node: IdMap<u64>,
    per_service: IdMap<IdMap<u64>>,
    heavy: BTreeSet<String>,
}

impl Occupancy {
    /// Live tasks placed on `node`.
    pub fn of_node(&self, node: &str) -> u64 {
        self.per_node.get(node).copied().unwrap_or(0)
    }

    /// Live tasks of `service` placed on `node`.
    pub fn of_service(&self, node: &str, service: &str) -> u64 {
        self.per_service
            .get(node)
            .and_then(|s| s.get(service))
            .copied()
            .unwrap_or(0)
    }

    /// IDs of the placed live tasks that reserve resources or publish a port.
    pub fn heavy(&self) -> &BTreeSet<String> {
        &self.heavy
    }

    fn add(&mut self, t: &Task, delta: i64) {
        bump(&mut self.per_node, &t.node_id, delta);
        match self.per_service.get_mut(&t.node_id) {
            Some(services) => bump(services, &t.service_id, delta),
            None => {
                let mut services = IdMap::default();
                bump(&mut services, &t.service_id, delta);
                self.per_service.insert(t.node_id.clone(), services);
            }
        }
        if is_heavy(t) {
            if delta > 0 {
                self.heavy.insert(t.id.clone());
            } else {
                self.heavy.remove(&t.id);
            }
        }
    }
}

/// Adds `delta` to the count of `key`. A count that drops to zero stays (as zero): a task's
/// status change uncounts and recounts it, and the key is copied only the first time.
fn bump(counts: &mut IdMap<u64>, key: &str, delta: i64) {
    match counts.get_mut(key) {
        Some(n) => *n = n.saturating_add_signed(delta),
        None => {
            counts.insert(key.to_string(), delta.max(0) as u64);
        }
    }
}

/// Placed on a node and still wanted there: it occupies the node.
pub fn occupies(t: &Task) -> bool {
    !t.node_id.is_empty()
        && t.state() >= TaskState::Assigned
        && t.desired() <= TaskState::Running
        && !t.state().is_terminal()
}

/// Not placed yet and still wanted: the allocator's and the scheduler's work.
pub fn unplaced(t: &Task) -> bool {
    t.state() <= TaskState::Pending && t.desired() <= TaskState::Running
}

/// NEW, still wanted, and attached to a network without an address yet: the allocator's work
/// (a subset of [`unplaced`]).
pub fn unallocated(t: &Task) -> bool {
    t.state() == TaskState::New
        && t.desired() <= TaskState::Running
        && t.networks.iter().any(|a| a.address.is_empty())
}

/// Running and meant to: it counts in its service's REPLICAS.
pub fn running(t: &Task) -> bool {
    t.desired() == TaskState::Running && t.state() == TaskState::Running
}

/// Reserves resources or publishes a port: the scheduler needs more of it than a count.
fn is_heavy(t: &Task) -> bool {
    let reserves = t
        .spec
        .as_ref()
        .and_then(|c| c.resources.as_ref())
        .and_then(|r| r.reservations)
        .is_some_and(|r| r.nano_cpus != 0 || r.memory_bytes != 0);
    reserves || t.endpoint.as_ref().is_some_and(|e| !e.ports.is_empty())
}

/// The map's reads, each task as a `&Task`: the map holds them boxed (see [`Tasks`]).
impl Tasks {
    pub fn get(&self, id: &str) -> Option<&Task> {
        self.map.get(id).map(|t| &**t)
    }

    pub fn contains_key(&self, id: &str) -> bool {
        self.map.contains_key(id)
    }

    pub fn values(&self) -> impl Iterator<Item = &Task> + '_ {
        self.map.values().map(|t| &**t)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Task)> + '_ {
        self.map.iter().map(|(id, t)| (id, &**t))
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// `tasks["id"]`, as for a map: panics if there is no such task.
impl std::ops::Index<&str> for Tasks {
    type Output = Task;

    fn index(&self, id: &str) -> &Task {
        &self.map[id]
    }
}

impl PartialEq for Tasks {
    /// The indexes follow from the tasks.
    fn eq(&self, other: &Self) -> bool {
        self.map == other.map
    }
}

impl FromIterator<(String, Task)> for Tasks {
    fn from_iter<I: IntoIterator<Item = (String, Task)>>(iter: I) -> Self {
        let mut tasks = Tasks::default();
        for (id, t) in iter {
            tasks.insert(id, t);
        }
        tasks
    }
}

impl Tasks {
    /// Stores `task` under `id`, returning the task it replaces.
    pub fn insert(&mut self, id: String, task: impl Into<Box<Task>>) -> Option<Box<Task>> {
        let task = task.into();
        let old = self.remove(&id);
        self.index(&id, &task, 1);
        self.map.insert(id, task);
        old
    }

    pub fn remove(&mut self, id: &str) -> Option<Box<Task>> {
        let old = self.map.remove(id)?;
        self.index(id, &old, -1);
        Some(old)
    }

    /// Changes task `id` in place with `f` (if it exists) and re-indexes it. `f` must not
    /// change the task's service (no entry does).
    pub fn modify<R>(&mut self, id: &str, f: impl FnOnce(&mut Task) -> R) -> Option<R> {
        let task = self.map.get_mut(id)?;
        let was_unplaced = unplaced(task);
        let was_unallocated = unallocated(task);
        let before = Stamp::of(task);
        let occupied = occupies(task);
        if occupied {
            self.occupancy.add(task, -1);
        }
        let was_running = running(task);
        let r = f(task);
        if was_running != running(task) {
            bump(
                &mut self.running,
                &task.service_id,
                if was_running { -1 } else { 1 },
            );
        }
        debug_assert!(self
            .by_service
            .get(&task.service_id)
            .is_some_and(|ids| ids.contains(id)));
        if occupies(task) {
            self.occupancy.add(task, 1);
        }
        let after = Stamp::of(task);
        self.unplaced
            .follow(id, before, after, was_unplaced, unplaced(task));
        self.unallocated
            .follow(id, before, after, was_unallocated, unallocated(task));
        Some(r)
    }

    /// The IDs of the tasks of `service_id`, in ID order.
    pub fn ids_of_service(&self, service_id: &str) -> impl Iterator<Item = &str> {
        self.by_service
            .get(service_id)
            .into_iter()
            .flat_map(|ids| ids.iter().map(String::as_str))
    }

    /// How many tasks `service_id` has.
    pub fn count_of_service(&self, service_id: &str) -> usize {
        self.by_service.get(service_id).map_or(0, BTreeSet::len)
    }

    /// The service IDs that have tasks (some may name services already deleted).
    pub fn service_ids(&self) -> impl Iterator<Item = &str> {
        self.by_service.keys().map(String::as_str)
    }

    /// The tasks waiting for network addresses ([`unallocated`]), oldest first.
    pub fn unallocated_ids(&self) -> &Queue {
        &self.unallocated
    }

    /// The tasks not placed yet and still wanted ([`unplaced`]), oldest first.
    pub fn unplaced_ids(&self) -> &Queue {
        &self.unplaced
    }

    pub fn occupancy(&self) -> &Occupancy {
        &self.occupancy
    }

    /// How many tasks of `service_id` are [`running`].
    pub fn running_of_service(&self, service_id: &str) -> u64 {
        self.running.get(service_id).copied().unwrap_or(0)
    }

    /// Adds (`delta` 1) or removes (-1) `t`'s entries in the indexes.
    fn index(&mut self, id: &str, t: &Task, delta: i64) {
        if delta > 0 {
            self.by_service
                .entry(t.service_id.clone())
                .or_default()
                .insert(id.to_string());
            if unplaced(t) {
                self.unplaced.insert(id, Stamp::of(t));
            }
            if unallocated(t) {
                self.unallocated.insert(id, Stamp::of(t));
            }
        } else {
            if let Some(ids) = self.by_service.get_mut(&t.service_id) {
                ids.remove(id);
                if ids.is_empty() {
                    self.by_service.remove(&t.service_id);
                }
            }
            if unplaced(t) {
                self.unplaced.remove(id, Stamp::of(t));
            }
            if unallocated(t) {
                self.unallocated.remove(id, Stamp::of(t));
            }
        }
        if occupies(t) {
            self.occupancy.add(t, delta);
        }
        if running(t) {
            bump(&mut self.running, &t.service_id, delta);
        }
    }
}

#[cfg(test)]
mod tests;
